"""maxfwd: the Max-Forwards header (OpenSIPS's maxfwd module).

``mf_process_maxfwd_header(max)``: no header -> ``Max-Forwards: max`` is
added (2); value 0 -> -1 (the script answers 483); value n > 0 -> n - 1,
capped at ``max_limit`` (1); a value that is not a number -> -2 (error, and
``E_BAD_REQ`` is recorded on the message for ``sl_reply_error()``).
``is_maxfwd_lt(n)``: 1 when the value (the one set by
mf_process_maxfwd_header when it ran) is below n, -1 when not, -2 when
there is no header, -3 on a bad value.

The value after processing is kept on the message as ``msg.maxfwd_value``
(OpenSIPS keeps it in the parsed header), so ``is_maxfwd_lt`` sees the
decremented or added value.  A second mf_process_maxfwd_header on the same
message changes nothing and returns what the first one returned (the change
is a lump, which cannot be changed again; OpenSIPS would decrement twice, or
add a second header).
"""
from __future__ import annotations

from opensipy import error, log
from opensipy.sr_module import (BRANCH_ROUTE, CMD_PARAM_INT, FAILURE_ROUTE,
                                INT_PARAM, REQUEST_ROUTE, CmdExport, CmdParam,
                                ModuleExports, ParamExport)

MAXFWD_UPPER_LIMIT = 256
max_limit = MAXFWD_UPPER_LIMIT

NOT_FOUND = -1
BAD_VALUE = -2


def _str2s(text: str):
    """OpenSIPS str2s: an unsigned 16-bit decimal, nothing else."""
    t = text.strip()
    if not t or not t.isascii() or not t.isdigit() or len(t) > 5:
        return None
    v = int(t)
    return v if v <= 65535 else None


def is_maxfwd_present(msg) -> int:
    """The current value, -1 when there is no header, -2 when it is bad."""
    v = getattr(msg, "maxfwd_value", None)
    if v is not None:
        return v
    body = msg.hdr("Max-Forwards")
    if body is None:
        return NOT_FOUND
    v = _str2s(body)
    if v is None:
        log.LM_ERR(f"maxfwd: unable to parse the Max-Forwards value "
                   f"{body!r}")
        return BAD_VALUE
    msg.maxfwd_value = v
    return v


def _decrement(msg, value: int) -> bool:
    """Rewrite the header body with value - 1 (a replace lump)."""
    try:
        msg.set_hdr_body("Max-Forwards", str(value - 1))
    except (KeyError, ValueError) as e:
        log.LM_ERR(f"maxfwd: cannot change Max-Forwards: {e}")
        return False
    msg.maxfwd_value = value - 1
    return True


def _add(msg, value: int) -> bool:
    try:
        # after a Via that forward() adds on top, like Record-Route
        msg.insert_after(msg.hdrs_start, f"Max-Forwards: {value}\r\n")
    except ValueError as e:
        log.LM_ERR(f"maxfwd: cannot add Max-Forwards: {e}")
        return False
    msg.maxfwd_value = value
    return True


def w_process_maxfwd_header(msg, max_value: int) -> int:
    rc = getattr(msg, "maxfwd_rc", None)
    if rc is not None:
        # the header was already changed: a lump cannot change it again
        return rc
    if getattr(msg, "maxfwd_value", None) is None:
        # the common case inline (the parser read one to five digits,
        # 1..max_limit): what is_maxfwd_present, _process and _decrement
        # do for it
        span = msg.max_forwards_span()
        if span is not None:
            val, s, n = span
            if 0 < val <= max_limit and 0 < n < 6:
                try:
                    msg.replace(s, n, b"%d" % (val - 1))
                except ValueError as e:
                    log.LM_ERR(f"maxfwd: cannot change Max-Forwards: {e}")
                    return -2
                msg.maxfwd_value = val - 1
                msg.maxfwd_rc = 1
                return 1
    rc = _process(msg, max_value)
    if rc in (1, 2):
        msg.maxfwd_rc = rc
    return rc


def _process(msg, max_value: int) -> int:
    val = is_maxfwd_present(msg)
    if val == NOT_FOUND:
        return 2 if _add(msg, max_value) else -2
    if val == BAD_VALUE:
        error.set_error(msg, error.E_BAD_REQ)
        return -2
    if val == 0:
        return -1
    if val > max_limit:
        log.LM_DBG(f"maxfwd: value {val} decreased to {max_limit}")
        val = max_limit + 1
    return 1 if _decrement(msg, val) else -2


def w_is_maxfwd_lt(msg, limit: int) -> int:
    val = is_maxfwd_present(msg)
    log.LM_DBG(f"maxfwd: value = {val}")
    if val < 0:
        return val - 1
    return -1 if val >= limit else 1


def fixup_maxfwd(value):
    if not 1 <= value <= MAXFWD_UPPER_LIMIT:
        raise ValueError(f"invalid MAXFWD number <{value}> "
                         f"[1,{MAXFWD_UPPER_LIMIT}]")
    if value > max_limit:
        raise ValueError(f"default value <{value}> bigger than max limit "
                         f"({max_limit})")
    return value


def mod_init() -> int:
    if not 1 <= max_limit <= MAXFWD_UPPER_LIMIT:
        log.LM_ERR(f"maxfwd: invalid max limit ({max_limit}) "
                   f"[1,{MAXFWD_UPPER_LIMIT}]")
        return -1
    return 0


exports = ModuleExports(
    name="maxfwd",
    cmds=[
        CmdExport("mf_process_maxfwd_header", w_process_maxfwd_header,
                  [CmdParam(CMD_PARAM_INT, fixup=fixup_maxfwd)],
                  REQUEST_ROUTE),
        CmdExport("is_maxfwd_lt", w_is_maxfwd_lt,
                  [CmdParam(CMD_PARAM_INT, fixup=fixup_maxfwd)],
                  REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE),
    ],
    params=[ParamExport("max_limit", INT_PARAM, "max_limit")],
    init_f=mod_init,
)
