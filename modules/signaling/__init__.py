"""signaling: one send_reply() over tm and sl (OpenSIPS's signaling module).

``send_reply(code, reason)`` answers statefully when the request has a
transaction (tm), statelessly through sl otherwise.  mod_init binds sl's API
with ``opensipy.modloader.load_api("sl", needed_by="signaling")`` and tm's
only when tm is loaded.  Neither loaded is a start-up error naming sl.

The tm hook (what tm's ``load_api()`` must return for signaling to use it):

* ``t_gett(msg)``: the transaction of ``msg``, or None when there is none;
* ``t_reply(msg, code, reason) -> int``: a stateful reply (> 0 sent); it
  sends the headers queued in ``msg.reply_hdrs`` as sl does;
* ``t_gen_totag(msg) -> str``: the To tag of the transaction's replies.

Other modules may bind this module's API (``load_api("signaling")``):
:class:`SigApi`.
"""
from __future__ import annotations

from opensipy import log, modloader
from opensipy.parser import check_reason
from opensipy.sr_module import (CMD_PARAM_INT, CMD_PARAM_NO_CRLF,
                                CMD_PARAM_STR, DEP_SILENT,
                                ERROR_ROUTE, FAILURE_ROUTE, REQUEST_ROUTE,
                                CmdExport, CmdParam, DepExport, ModuleDep,
                                ModuleExports, ModuleError, PVExport)

sl_api = None
tm_api = None


def _transaction(msg):
    if tm_api is None:
        return None
    return tm_api.t_gett(msg)


def send_reply(msg, code: int, reason: str, headers=()) -> int:
    """Stateful when ``msg`` has a transaction, else stateless (1 / -1)."""
    if reason is None:
        log.LM_ERR("send_reply: empty reason parameter")
        return -1
    t = tm_api.t_gett(msg) if tm_api is not None else None  # _transaction
    if t is not None:
        # tm's t_reply sends what is queued on the request (OpenSIPS's
        # add_lump_rpl): the extra headers join that queue for this reply
        saved = getattr(msg, "reply_hdrs", None)
        if headers:
            if isinstance(headers, (str, bytes)):
                headers = [headers]
            lines = [h if isinstance(h, str) else h.decode()
                     for h in headers]
            msg.reply_hdrs = list(saved or ()) + [
                h if h.endswith("\r\n") else h + "\r\n" for h in lines]
        try:
            rc = tm_api.t_reply(msg, code, reason)
        finally:
            if headers:
                msg.reply_hdrs = saved
        if rc < 0:
            log.LM_ERR("send_reply: failed to send the reply with tm")
            return -1
        return 1
    if sl_api is None:
        log.LM_ERR("send_reply: no transaction for the message and sl is "
                   "not loaded: cannot send the reply")
        return -1
    if sl_api.send_reply(msg, code, reason, headers) < 0:
        log.LM_ERR("send_reply: failed to send the reply with sl")
        return -1
    return 1


def gen_totag(msg):
    """The To tag replies to ``msg`` get (tm's when it has a transaction)."""
    if _transaction(msg) is not None:
        return tm_api.t_gen_totag(msg)
    if sl_api is None:
        log.LM_ERR("no transaction for the message and sl is not loaded: "
                   "cannot make a To tag")
        return None
    return sl_api.get_totag(msg)


class SigApi:
    """``load_api("signaling")``: ``reply(msg, code, reason, headers=())``
    and ``gen_totag(msg)``."""
    reply = staticmethod(send_reply)
    gen_totag = staticmethod(gen_totag)


def load_api() -> SigApi:
    return SigApi()


def w_send_reply(msg, code, reason) -> int:
    return send_reply(msg, code, reason)


def fixup_code(code):
    if not 100 <= code <= 699:
        raise ValueError(f"wrong code: {code}, allowed values: 1xx - 6xx "
                         f"only")
    return code


def fixup_reason(reason):
    """A reason phrase holding CR, LF, NUL or another control is refused:
    a constant when the script is fixed up, a variable's value on each
    call (-1, logged)."""
    why = check_reason(reason)
    if why is not None:
        raise ValueError(why)
    return reason


def pv_get_local_totag(msg, param):
    """``$sig_local_totag``: the To tag of the local replies to a request."""
    if not msg.is_request:
        log.LM_ERR("$sig_local_totag: the message is not a request")
        return None
    return gen_totag(msg)


def mod_init() -> int:
    global sl_api, tm_api
    reg = modloader.registry
    tm_api = None
    if reg is not None and reg.is_loaded("tm"):
        tm_api = modloader.load_api("tm", needed_by="signaling")
    sl_api = None
    if tm_api is None or (reg is not None and reg.is_loaded("sl")):
        try:
            sl_api = modloader.load_api("sl", needed_by="signaling")
        except ModuleError:
            if tm_api is None:
                raise
    return 0


exports = ModuleExports(
    name="signaling",
    deps=DepExport(md=[ModuleDep("tm", DEP_SILENT),
                       ModuleDep("sl", DEP_SILENT)]),
    cmds=[
        CmdExport("send_reply", w_send_reply,
                  [CmdParam(CMD_PARAM_INT, fixup=fixup_code),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_NO_CRLF,
                            fixup=fixup_reason)],
                  REQUEST_ROUTE | ERROR_ROUTE | FAILURE_ROUTE),
    ],
    items=[PVExport("sig_local_totag", pv_get_local_totag)],
    init_f=mod_init,
)
