"""Function-parameter fixups (OpenSIPS 3.x ``fix_cmd``/``get_cmd_fixups``).

How the script compiler (LANG) calls a module function
------------------------------------------------------
For every call ``f(a1, a2, ...)`` resolved to a :class:`CmdExport` ``cmd``:

1. ``-c`` / check time, no side effects: for each declared parameter ``p``
   and given argument ``a`` (``None`` for an omitted one),
   ``check_param(p, a, registry) -> str | None`` (the error text).
2. fixup time (after every ``mod_init``): ``prep = [prepare_param(p, a,
   registry) for ...]``; it raises :class:`FixupError` (a ``ModuleError``)
   with the reason; LANG prefixes "function f, parameter N: " and the
   location.  Module ``fixup`` functions run here, once, on constants.
3. compile: ``call = bind_call(cmd, prep)`` gives ``call(msg) -> int``.
   It evaluates every parameter (``Prepared.get(msg)``), calls
   ``cmd.function(msg, *values)``, then ``Prepared.free(value)`` for every
   parameter (runs the module's ``free_fixup`` on values fixed up at run
   time, never on constants).  If a parameter cannot be evaluated (a
   variable that is not an int for CMD_PARAM_INT, NULL for CMD_PARAM_STR, a
   bad run-time regex) it logs the error and returns -1 without calling the
   function -- OpenSIPS's get_cmd_fixups failure.  LANG may instead do the
   three steps itself; :class:`ParamError` is what ``Prepared.get`` raises.

``arg`` is one of: ``int`` (a number literal), ``str`` (the decoded
contents of a string literal; it may hold variables), a ``pvar.PVSpec`` (a
bare variable argument), or ``None`` (omitted).

Semantics per kind (OpenSIPS 3.x, mod_fix.c)
--------------------------------------------
* CMD_PARAM_INT: an int constant, a numeric string literal (converted at
  fixup), or a variable whose run-time value must be an int (a numeric
  string converts); any other string literal is an error.  The module
  fixup runs on the constant at fixup time, or on each run-time value.
* CMD_PARAM_STR: a string, formatted with its variables on each call
  unless CMD_PARAM_NO_EXPAND; an int constant becomes its decimal text; a
  bare variable gives its value as text (an int is printed; NULL is an
  error, as OpenSIPS's "Variable in param [N] is not a string").
* CMD_PARAM_VAR: must be a bare variable; the function receives the
  PVSpec (or what the module fixup made of it, once at fixup time).
* CMD_PARAM_REGEX: a constant string is compiled once; a string with
  variables or a bare variable is compiled on each call.  Flags: OpenSIPS
  compiles with ``REG_EXTENDED|REG_ICASE|REG_NEWLINE`` (fixup_regcomp), so
  matching is case-insensitive and ``^``/``$`` match at line breaks: here
  ``re.IGNORECASE | re.MULTILINE`` (Python's ``.`` already stops at a
  newline, the other half of REG_NEWLINE).  Python's ``re`` syntax is a
  superset of POSIX ERE for every pattern scripts use in practice.
* CMD_PARAM_STATIC: constants only (no variable, no formatted string).
* CMD_PARAM_NO_CRLF (opensipy's, with CMD_PARAM_STR): in a string that
  mixes literal text and variables, a variable whose value holds CR, LF or
  NUL makes the call fail (ParamError: logged, -1, the function is not
  called), so a template like ``"X-User: $fU\r\n"`` cannot be made to add
  a header by the value.  The literal text may hold CRLF; a bare variable
  (or a string that is one variable) is left to the module's fixup, which
  sees the whole value.  Such a fixup must only validate (no side
  effects): ``check_param`` (``opensipy -c``) runs it on constant text, so
  a bad constant is reported with its file:line:col without starting.
* CMD_PARAM_OPT: may be omitted; the function then receives None, unless
  CMD_PARAM_FIX_NULL, in which case the module fixup runs on None at fixup
  time and the function receives its result.

Manual helpers (for module authors, mostly for modparams that name a
variable or a format; in the 3.x model a script function just declares a
CMD_PARAM kind):

==========================  =================================================
OpenSIPS                    here
==========================  =================================================
``fixup_igp``               ``fixup_igp(text_or_int) -> Prepared`` (INT)
``fixup_spve``              ``fixup_spve(text) -> Prepared`` (STR, expanded)
``fixup_pvar``              ``fixup_pvar(text) -> PVSpec``
``fixup_regexp``            ``fixup_regexp(text) -> re.Pattern`` (ICASE)
``fixup_uint``              ``fixup_uint(value) -> int`` (>= 0; usable as a
                            CmdParam ``fixup``)
``fixup_get_ivalue``        ``fixup_get_ivalue(msg, gp) -> int``
``fixup_get_svalue``        ``fixup_get_svalue(msg, gp) -> str``
``fixup_free_*``            not needed (garbage collection); a CmdParam's
                            ``free_fixup`` is still honoured for run-time
                            values
==========================  =================================================
"""
from __future__ import annotations

import re
from typing import Callable, Optional

from . import log
from .pvar import NULL_TEXT, Format, PVError, PVSpec, parse_format, parse_pv
from .sr_module import (CMD_PARAM_FIX_NULL, CMD_PARAM_INT, CMD_PARAM_NO_CRLF,
                        CMD_PARAM_NO_EXPAND,
                        CMD_PARAM_OPT, CMD_PARAM_REGEX, CMD_PARAM_STATIC,
                        CMD_PARAM_STR, CMD_PARAM_VAR, CmdExport, CmdParam,
                        ModuleError)

__all__ = ["FixupError", "ParamError", "Prepared", "check_param",
           "prepare_param", "bind_call", "REGEX_FLAGS", "compile_regex",
           "fixup_igp", "fixup_spve", "fixup_pvar", "fixup_regexp",
           "fixup_uint", "fixup_get_ivalue", "fixup_get_svalue"]

# see the module docstring: REG_EXTENDED|REG_ICASE|REG_NEWLINE
REGEX_FLAGS = re.IGNORECASE | re.MULTILINE


class FixupError(ModuleError):
    """A parameter is wrong at check/fixup time."""


class ParamError(Exception):
    """A parameter cannot be evaluated at run time."""


def compile_regex(text: str) -> "re.Pattern":
    """Compile with OpenSIPS's flags; raise ValueError with the reason."""
    try:
        return re.compile(text, REGEX_FLAGS)
    except re.error as e:
        raise ValueError(f"bad regular expression {text!r}: {e}") from None


def _parse_int_literal(s: str) -> Optional[int]:
    t = s.strip()
    body = t[1:] if t[:1] in "+-" else t
    if not body.isdigit():
        return None
    return int(t)


def _value_to_int(v, where) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        n = _parse_int_literal(v)
        if n is not None:
            return n
    raise ParamError(f"{where} is not an integer (value {v!r})")


class Prepared:
    """A fixed-up parameter.

    ``const``: the value is known at fixup time (``value``);
    ``get(msg)``: the value for this call (== ``value`` when const; raises
    ParamError); ``needs_free``: ``free(value)`` must run after the call
    (a module ``free_fixup`` on a value fixed up at run time);
    ``free(value)``: run it (a no-op when not needed)."""
    __slots__ = ("const", "value", "get", "needs_free", "free", "spec",
                 "format")

    def __init__(self, const, value=None, get=None, free=None, spec=None,
                 fmt=None):
        self.const = const
        self.value = value
        if const:
            self.get = lambda msg: value
        else:
            self.get = get
        self.needs_free = free is not None
        self.free = free if free is not None else _no_free
        self.spec = spec
        self.format = fmt

    def __repr__(self):
        if self.const:
            return f"Prepared(const={self.value!r})"
        return f"Prepared(runtime {self.spec or self.format!r})"


def _no_free(value):
    return None


def _run_fixup(cmdparam: CmdParam, value):
    try:
        return cmdparam.fixup(value)
    except (ModuleError, ValueError, TypeError, KeyError, PVError) as e:
        raise FixupError(f"fixup failed: {e}") from None


def _as_format(arg: str, registry) -> Format:
    try:
        return parse_format(arg, registry)
    except PVError as e:
        raise FixupError(str(e)) from None


def _kind_name(flags):
    for f, n in ((CMD_PARAM_INT, "integer"), (CMD_PARAM_STR, "string"),
                 (CMD_PARAM_VAR, "variable"), (CMD_PARAM_REGEX, "regex")):
        if flags & f:
            return n
    return "?"


def _describe(arg) -> str:
    if isinstance(arg, PVSpec):
        return f"the variable {arg.text}"
    if isinstance(arg, str):
        return f"the string {arg!r}"
    return repr(arg)


_CRLF_NUL = re.compile(r"[\r\n\x00]")


def _no_crlf_eval(fmt: Format) -> Callable:
    """fmt.eval refusing a variable value with CR, LF or NUL (ParamError)."""
    parts = [(None, p) if isinstance(p, str) else (p, None)
             for p in fmt.parts]
    bad = _CRLF_NUL.search

    def ev(msg):
        out = []
        for spec, lit in parts:
            if spec is None:
                out.append(lit)
                continue
            x = spec.get(msg)
            if x is None:
                x = NULL_TEXT
            elif not isinstance(x, str):
                x = str(x)
            if bad(x) is not None:
                raise ParamError(f"the value of {spec.text} holds CR, LF or "
                                 f"NUL: refused ({x!r})")
            out.append(x)
        return "".join(out)
    return ev


def _analyze(cmdparam: CmdParam, arg, registry, run_fixups: bool) -> Prepared:
    flags = cmdparam.flags
    # the fixup of a CMD_PARAM_NO_CRLF parameter only validates: -c runs it
    fixup = cmdparam.fixup if run_fixups or flags & CMD_PARAM_NO_CRLF \
        else None
    static = bool(flags & CMD_PARAM_STATIC)

    if isinstance(arg, bool):
        arg = int(arg)
    if arg is not None and not isinstance(arg, (int, str, PVSpec)):
        raise FixupError(f"unsupported argument {arg!r}")

    # --- omitted -----------------------------------------------------------
    if arg is None:
        if not flags & CMD_PARAM_OPT:
            raise FixupError("the parameter is mandatory")
        if flags & CMD_PARAM_FIX_NULL and fixup is not None:
            return Prepared(True, _run_fixup(cmdparam, None))
        return Prepared(True, None)

    if static and isinstance(arg, PVSpec):
        raise FixupError(f"expected a constant, got {_describe(arg)}")

    def const(v):
        if fixup is not None:
            v = _run_fixup(cmdparam, v)
        return Prepared(True, v)

    def runtime(raw_get, spec=None, fmt=None):
        """Wrap a run-time getter with the module fixup/free_fixup."""
        if not run_fixups or cmdparam.fixup is None:
            return Prepared(False, get=raw_get, spec=spec, fmt=fmt)
        fx = cmdparam.fixup

        def get(msg):
            v = raw_get(msg)
            try:
                return fx(v)
            except (ModuleError, ValueError, TypeError, KeyError,
                    PVError) as e:
                raise ParamError(f"fixup failed for value {v!r}: {e}") \
                    from None
        return Prepared(False, get=get, free=cmdparam.free_fixup, spec=spec,
                        fmt=fmt)

    # --- INT ---------------------------------------------------------------
    if flags & CMD_PARAM_INT:
        if isinstance(arg, int):
            return const(arg)
        if isinstance(arg, str):
            n = _parse_int_literal(arg)
            if n is None:
                raise FixupError(f"expected an integer or a variable, got "
                                 f"{_describe(arg)}")
            return const(n)
        spec = arg
        where = f"variable {spec.text}"
        sget = spec.get

        def iget(msg):
            v = sget(msg)
            if v is None:
                raise ParamError(f"{where} is NULL, an integer is expected")
            return _value_to_int(v, where)
        return runtime(iget, spec=spec)

    # --- STR ---------------------------------------------------------------
    if flags & CMD_PARAM_STR:
        if isinstance(arg, int):
            return const(str(arg))
        if isinstance(arg, str):
            if flags & CMD_PARAM_NO_EXPAND:
                return const(arg)
            fmt = _as_format(arg, registry)
            if fmt.is_constant:
                return const(fmt.value)
            if static:
                raise FixupError(f"expected a constant string, got "
                                 f"{_describe(arg)} (it holds variables)")
            if flags & CMD_PARAM_NO_CRLF and len(fmt.parts) > 1:
                return runtime(_no_crlf_eval(fmt), fmt=fmt)
            return runtime(fmt.eval, fmt=fmt)
        spec = arg
        where = f"variable {spec.text}"
        sget = spec.get

        def sgetter(msg):
            v = sget(msg)
            if v is None:
                raise ParamError(f"{where} is NULL, a string is expected")
            return v if isinstance(v, str) else str(v)
        return runtime(sgetter, spec=spec)

    # --- VAR ---------------------------------------------------------------
    if flags & CMD_PARAM_VAR:
        if not isinstance(arg, PVSpec):
            raise FixupError(f"expected a variable, got {_describe(arg)}")
        return const(arg) if fixup is not None else Prepared(True, arg,
                                                             spec=arg)

    # --- REGEX -------------------------------------------------------------
    if flags & CMD_PARAM_REGEX:
        if isinstance(arg, int):
            raise FixupError(f"expected a regular expression (string) or a "
                             f"variable, got {arg!r}")
        if isinstance(arg, str):
            if flags & CMD_PARAM_NO_EXPAND:
                text = arg
                fmt = None
            else:
                fmt = _as_format(arg, registry)
                text = fmt.value if fmt.is_constant else None
            if text is not None:
                try:
                    rx = compile_regex(text)
                except ValueError as e:
                    raise FixupError(str(e)) from None
                return const(rx)
            if static:
                raise FixupError(f"expected a constant regex, got "
                                 f"{_describe(arg)} (it holds variables)")
            feval = fmt.eval

            def rget(msg):
                try:
                    return compile_regex(feval(msg))
                except ValueError as e:
                    raise ParamError(str(e)) from None
            return runtime(rget, fmt=fmt)
        spec = arg
        where = f"variable {spec.text}"
        sget = spec.get

        def rgetv(msg):
            v = sget(msg)
            if v is None:
                raise ParamError(f"{where} is NULL, a regex is expected")
            try:
                return compile_regex(v if isinstance(v, str) else str(v))
            except ValueError as e:
                raise ParamError(f"{where}: {e}") from None
        return runtime(rgetv, spec=spec)

    raise FixupError(f"bad parameter declaration (flags {flags:#x}): one of "
                     f"CMD_PARAM_INT/STR/VAR/REGEX is needed")


def check_param(cmdparam: CmdParam, arg, registry=None) -> Optional[str]:
    """The error text for ``arg`` given to ``cmdparam``, or None.  Runs no
    module fixup (no side effects)."""
    try:
        _analyze(cmdparam, arg, registry, run_fixups=False)
    except FixupError as e:
        return str(e)
    return None


def prepare_param(cmdparam: CmdParam, arg, registry=None) -> Prepared:
    """Fix up one argument; raise FixupError with the reason."""
    return _analyze(cmdparam, arg, registry, run_fixups=True)


def bind_call(cmd: CmdExport, prepared, where: str = "") -> Callable:
    """``call(msg) -> int`` for ``cmd`` with its fixed-up parameters (see
    the module docstring).  ``where`` (e.g. "file:line") prefixes the log
    line of a run-time parameter error."""
    fn = cmd.function
    preps = tuple(prepared)
    name = cmd.name
    prefix = f"{where}: " if where else ""
    if all(p.const for p in preps):
        values = tuple(p.value for p in preps)

        def call_const(msg):
            return fn(msg, *values)
        return call_const

    def call(msg):
        vals = []
        for i, p in enumerate(preps):
            try:
                vals.append(p.get(msg))
            except ParamError as e:
                log.LM_ERR(f"{prefix}{name}(): parameter {i + 1}: {e}")
                # free what was already fixed up
                for q, v in zip(preps, vals):
                    if q.needs_free:
                        q.free(v)
                return -1
        try:
            return fn(msg, *vals)
        finally:
            for p, v in zip(preps, vals):
                if p.needs_free:
                    p.free(v)
    return call


# --- manual helpers -----------------------------------------------------------------

def fixup_uint(value) -> int:
    """An unsigned integer (a CmdParam ``fixup`` or a modparam check)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, str):
        n = _parse_int_literal(value)
        if n is None:
            raise ValueError(f"bad number {value!r}")
        value = n
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"bad unsigned number {value!r}")
    return value


def _as_arg(value, registry):
    if isinstance(value, str) and value.strip().startswith("$"):
        try:
            return parse_pv(value.strip(), registry)
        except PVError:
            return value
    return value


def fixup_igp(value, registry=None) -> Prepared:
    """int or variable (``"5"``, ``5``, ``"$var(n)"``)."""
    return prepare_param(CmdParam(CMD_PARAM_INT), _as_arg(value, registry),
                         registry)


def fixup_spve(value, registry=None) -> Prepared:
    """A string that may hold variables."""
    return prepare_param(CmdParam(CMD_PARAM_STR), value, registry)


def fixup_pvar(value, registry=None) -> PVSpec:
    """A variable given as text (``"$avp(x)"``); raise FixupError."""
    if isinstance(value, PVSpec):
        return value
    try:
        return parse_pv(str(value), registry)
    except PVError as e:
        raise FixupError(str(e)) from None


def fixup_regexp(value) -> "re.Pattern":
    try:
        return compile_regex(str(value))
    except ValueError as e:
        raise FixupError(str(e)) from None


def fixup_get_ivalue(msg, gp) -> int:
    """The int of a Prepared / PVSpec / int; raises ParamError."""
    if isinstance(gp, Prepared):
        v = gp.get(msg)
    elif isinstance(gp, PVSpec):
        v = gp.get(msg)
        if v is None:
            raise ParamError(f"variable {gp.text} is NULL")
    else:
        v = gp
    return _value_to_int(v, "value")


def fixup_get_svalue(msg, gp) -> str:
    """The text of a Prepared / PVSpec / Format / str; raises ParamError."""
    if isinstance(gp, Prepared):
        v = gp.get(msg)
    elif isinstance(gp, PVSpec):
        v = gp.get(msg)
        if v is None:
            raise ParamError(f"variable {gp.text} is NULL")
    elif isinstance(gp, Format):
        v = gp.eval(msg)
    else:
        v = gp
    return v if isinstance(v, str) else str(v)
