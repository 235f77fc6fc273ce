"""sl: stateless replies (OpenSIPS's sl module).

``sl_send_reply(code, reason)`` and ``sl_reply_error()`` answer the current
request without keeping state; replies > 100 to a request whose To has no
tag get the sl To-tag, which lets the module absorb the ACKs to its own
replies before the script runs (see :mod:`.sl_funcs`).  Replies carry the
headers the script queued with ``append_to_reply`` (``msg.reply_hdrs``).

API for other modules (``opensipy.modloader.load_api("sl")``): see
:class:`SlApi`.
"""
from __future__ import annotations

from opensipy import config, receive
from opensipy.parser import check_reason
from opensipy.sr_module import (CMD_PARAM_INT, CMD_PARAM_NO_CRLF,
                                CMD_PARAM_STR, ERROR_ROUTE,
                                INT_PARAM, REQUEST_ROUTE, CmdExport, CmdParam,
                                ModuleExports, ParamExport, StatExport)

from . import sl_funcs

enable_stats = 1

# statistics, bound by the core (stat_pointer names)
tx_1xx_rpls = tx_2xx_rpls = tx_3xx_rpls = None
tx_4xx_rpls = tx_5xx_rpls = tx_6xx_rpls = None
sent_rpls = sent_err_rpls = rcv_acks = None


class SlApi:
    """What ``load_api("sl")`` returns (OpenSIPS's ``sl_binds``).

    * ``send_reply(msg, code, reason=None, headers=()) -> int``: a stateless
      reply to request ``msg`` (1 sent, -1 error); ``headers`` are extra
      header lines sent after those in ``msg.reply_hdrs``;
    * ``reply_error(msg) -> int``: ``sl_reply_error()``;
    * ``get_totag(msg) -> str``: the To tag sl gives its replies to ``msg``.
    """
    send_reply = staticmethod(sl_funcs.send_reply)
    reply_error = staticmethod(sl_funcs.reply_error)
    get_totag = staticmethod(sl_funcs.totag)


def load_api() -> SlApi:
    return SlApi()


def w_sl_send_reply(msg, code, reason) -> int:
    return sl_funcs.send_reply(msg, code, reason)


def w_sl_reply_error(msg) -> int:
    return sl_funcs.reply_error(msg)


def fixup_code(code):
    """A constant code is checked once; a variable's value on each call."""
    if not 100 <= code <= 699:
        raise ValueError(f"bad reply code {code} (100..699)")
    return code


def fixup_reason(reason):
    """A reason phrase may not hold CR, LF, NUL or another control: a
    constant is refused when the script is fixed up (file:line:col), a
    variable's value on each call (-1, logged, nothing sent)."""
    why = check_reason(reason)
    if why is not None:
        raise ValueError(why)
    return reason


def _bind_stats() -> None:
    s = sl_funcs.stats
    s.enabled = bool(enable_stats)
    s.by_class = [tx_1xx_rpls, tx_2xx_rpls, tx_3xx_rpls, tx_4xx_rpls,
                  tx_5xx_rpls, tx_6xx_rpls]
    s.sent_replies = sent_rpls
    s.sent_err_replies = sent_err_rpls
    s.received_ACKs = rcv_acks


def mod_init() -> int:
    _bind_stats()
    sl_funcs.init_tags(config.settings.sockets)
    sl_funcs.init_timeout()
    receive.register_pre_script_cb(sl_funcs.filter_ack)
    return 0


exports = ModuleExports(
    name="sl",
    cmds=[
        CmdExport("sl_send_reply", w_sl_send_reply,
                  [CmdParam(CMD_PARAM_INT, fixup=fixup_code),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_NO_CRLF,
                            fixup=fixup_reason)],
                  REQUEST_ROUTE | ERROR_ROUTE),
        CmdExport("sl_reply_error", w_sl_reply_error, [], REQUEST_ROUTE),
    ],
    params=[ParamExport("enable_stats", INT_PARAM, "enable_stats")],
    stats=[
        StatExport("1xx_replies", 0, "tx_1xx_rpls"),
        StatExport("2xx_replies", 0, "tx_2xx_rpls"),
        StatExport("3xx_replies", 0, "tx_3xx_rpls"),
        StatExport("4xx_replies", 0, "tx_4xx_rpls"),
        StatExport("5xx_replies", 0, "tx_5xx_rpls"),
        StatExport("6xx_replies", 0, "tx_6xx_rpls"),
        StatExport("sent_replies", 0, "sent_rpls"),
        StatExport("sent_err_replies", 0, "sent_err_rpls"),
        StatExport("received_ACKs", 0, "rcv_acks"),
    ],
    init_f=mod_init,
)
