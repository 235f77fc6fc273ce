"""mi_script: run MI commands from the script (OpenSIPS 3.x's mi_script).

``mi(command[, ret_var[, params_avp[, vals_avp]]])`` runs the command in
the calling process through the MI core's dispatcher (the same command
table the MI transports serve), so it answers from the same shared state.

* ``command``: the command name, optionally followed by space-separated
  values passed as positional parameters;
* ``ret_var``: receives the result as JSON text (``pretty_printing`` 1
  indents it), or the error message when the command fails;
* ``params_avp`` alone: its values (in the order they were added) are the
  positional parameters, replacing those of ``command``; with
  ``vals_avp``: names and values of named parameters (the same count);
  a value written ``__array(a b c)`` is passed as the array
  ``["a", "b", "c"]``.

Return codes: 1 on success; the command's JSON-RPC error code as a
negative number when it fails (``-404``, ``-32601`` for an unknown
command, ``-32602`` for bad parameters); -2 when the AVPs do not pair up.
The async form (``async(mi(...), route)``) runs the command at once and
resumes the route straight away: MI commands here answer synchronously.
"""
from __future__ import annotations

import json
import re

from opensipy import log, mi
from opensipy.pvar import PVError
from opensipy.sr_module import (ALL_ROUTES, CMD_PARAM_OPT, CMD_PARAM_STR,
                                CMD_PARAM_VAR, INT_PARAM, CmdExport,
                                CmdParam, ModuleExports, ParamExport)

pretty_printing = 0

_ARRAY = re.compile(r"\s*__array\((.*)\)\s*\Z", re.S)


def _avp_values(spec, msg) -> list:
    """An AVP's values in the order the script added them."""
    if spec.name != "avp":
        raise ValueError(f"{spec.text} is not an $avp")
    avps = getattr(msg, "avps", None) or {}
    return list(reversed(avps.get((spec.arg or "").strip(), ())))


def _value(v):
    if isinstance(v, str):
        m = _ARRAY.match(v)
        if m:
            return m.group(1).split()
    return v


def _params(msg, command, names, vals):
    parts = command.split()
    if not parts:
        raise ValueError("empty MI command")
    cmd, params = parts[0], parts[1:] or None
    if names is not None:
        keys = _avp_values(names, msg)
        if vals is None:
            params = [_value(v) for v in keys]
        else:
            values = _avp_values(vals, msg)
            if len(values) != len(keys):
                raise ValueError(f"{len(keys)} parameter names but "
                                 f"{len(values)} values")
            params = {str(k): _value(v) for k, v in zip(keys, values)}
    return cmd, params


def _store(msg, ret, text) -> None:
    if ret is None:
        return
    try:
        ret.set(msg, text)
    except PVError as e:
        log.LM_ERR(f"mi: cannot store the result in {ret.text}: {e}")


def w_mi(msg, command, ret=None, names=None, vals=None) -> int:
    try:
        cmd, params = _params(msg, command, names, vals)
    except ValueError as e:
        log.LM_ERR(f"mi: {e}")
        return -2
    d = mi.dispatcher()
    try:
        result = d.call(cmd, params)
    except mi.MIError as e:
        log.LM_DBG(f"mi: {cmd} failed: {e.code} {e.message}")
        _store(msg, ret, e.message)
        return -abs(e.code) or -1
    finally:
        d.run_after_reply()
    if ret is not None:
        text = json.dumps(result, default=str,
                          indent=4 if pretty_printing else None,
                          separators=None if pretty_printing else (",", ":"))
        _store(msg, ret, text)
    return 1


def a_mi(msg, actx, command, ret=None, names=None, vals=None) -> int:
    """async(mi(...), route): the command answers at once (no resume_f:
    the resume route runs straight away with this result)."""
    return w_mi(msg, command, ret, names, vals)


_PARAMS = [CmdParam(CMD_PARAM_STR),
           CmdParam(CMD_PARAM_VAR | CMD_PARAM_OPT),
           CmdParam(CMD_PARAM_VAR | CMD_PARAM_OPT),
           CmdParam(CMD_PARAM_VAR | CMD_PARAM_OPT)]

exports = ModuleExports(
    name="mi_script",
    cmds=[CmdExport("mi", w_mi, _PARAMS, ALL_ROUTES)],
    acmds=[CmdExport("mi", a_mi, _PARAMS, ALL_ROUTES)],
    params=[ParamExport("pretty_printing", INT_PARAM, "pretty_printing")],
)
