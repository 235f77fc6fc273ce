"""Parsing of variable tokens and formatted strings: ``parse_pv`` and
``parse_format`` (the contract is in the package docstring)."""
from __future__ import annotations

import re
from typing import Any, List, Tuple

from . import (_ALL, _DEFS, _EXTRA, _NO, _OPT, _REQ, NULL_TEXT, PVError,
               PVSpec)
from .. import transformations as _tr
from ..transformations import TrError


# --- parsing ------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")


def _lookup(name: str, registry):
    """('core', def) | ('extra', pvexport) | ('module', pvexport) | None"""
    d = _DEFS.get(name)
    if d is not None:
        return ("core", d)
    e = _EXTRA.get(name)
    if e is not None:
        return ("extra", e)
    if registry is not None:
        pv = registry.find_pv(name)
        if pv is not None:
            return ("module", pv)
    return None


def _match_close(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at ``i`` (nesting of (), {}, []
    is tracked; quotes are not special)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = [close_ch]
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")}]":
            if ch != stack[-1]:
                raise PVError(f"unbalanced {ch!r} in {text!r}")
            stack.pop()
            if not stack:
                return j
        j += 1
    raise PVError(f"missing {close_ch!r} in {text!r}")


def _scan_name(text, i, registry, strict):
    """Match a variable name at ``i``; back off at dots to the longest
    known name.  Returns (name, kind, end) or raises PVError."""
    m = _NAME_RE.match(text, i)
    if not m:
        raise PVError(f"missing variable name after '$' in {text!r}")
    full = m.group(0)
    cand = full
    while True:
        found = _lookup(cand, registry)
        if found is not None:
            return cand, found, i + len(cand)
        dot = cand.rfind(".")
        if dot < 0:
            break
        cand = cand[:dot]
    hint = ""
    if full.startswith("T_"):
        hint = " (the $T_* variables come from the tm module)"
    raise PVError(f"unknown variable ${full}{hint}")


def _parse_index(text, registry) -> Any:
    t = text.strip()
    if t == "*":
        return _ALL
    if t.startswith("$"):
        return parse_pv(t, registry)
    try:
        return int(t)
    except ValueError:
        raise PVError(f"bad index [{text}]") from None


def _scan_pv(text: str, i: int, registry) -> Tuple[PVSpec, int]:
    """Parse the variable starting at ``text[i] == '$'``; return it and the
    index just after it."""
    n = len(text)
    j = i + 1
    if j < n and text[j] == "(":
        close = _match_close(text, j, "(", ")")
        inner = text[j + 1:close]
        spec = _parse_inner(inner, registry, text[i:close + 1], True)
        return spec, close + 1
    name, found, k = _scan_name(text, j, registry, False)
    argspec, takes_index = _shape(found)
    arg = None
    if k < n and text[k] == "(" and argspec != _NO:
        close = _match_close(text, k, "(", ")")
        arg = text[k + 1:close]
        k = close + 1
    index = None
    if k < n and text[k] == "[" and takes_index:
        close = _match_close(text, k, "[", "]")
        index = _parse_index(text[k + 1:close], registry)
        k = close + 1
    spec = _build(name, found, arg, index, text[i:k], registry)
    return spec, k


def _shape(found):
    kind, d = found
    if kind == "core":
        return d[0], d[1]
    # module / extra variables: an argument is allowed when they parse one
    # (or always: many take an optional name); an index when parse_index
    return _OPT, getattr(d, "parse_index", None) is not None


def _parse_inner(inner: str, registry, text: str, allow_tr: bool) -> PVSpec:
    """``name(arg)[idx]{tr}{tr}`` (the inside of ``$( ... )``)."""
    s = inner.strip()
    name, found, k = _scan_name(s, 0, registry, True)
    argspec, takes_index = _shape(found)
    arg = None
    n = len(s)
    if k < n and s[k] == "(":
        if argspec == _NO:
            raise PVError(f"${name} takes no argument: {text}")
        close = _match_close(s, k, "(", ")")
        arg = s[k + 1:close]
        k = close + 1
    index = None
    if k < n and s[k] == "[":
        if not takes_index:
            raise PVError(f"${name} takes no index: {text}")
        close = _match_close(s, k, "[", "]")
        index = _parse_index(s[k + 1:close], registry)
        k = close + 1
    trs = []
    while k < n and s[k] == "{":
        close = _match_close(s, k, "{", "}")
        body = s[k + 1:close]
        try:
            trs.append(_tr.compile_tr(body, lambda t: parse_pv(t, registry)))
        except TrError as e:
            raise PVError(f"{e} in {text}") from None
        k = close + 1
    if k != n:
        raise PVError(f"unexpected {s[k:]!r} in {text}")
    base = _build(name, found, arg, index, text, registry)
    if not trs:
        return base
    bget = base.get
    if len(trs) == 1:
        t0 = trs[0]

        def get(msg):
            return t0(msg, bget(msg))
    else:
        def get(msg):
            v = bget(msg)
            for t in trs:
                v = t(msg, v)
            return v
    return PVSpec(text, name, arg, index, get, None, base.param)


def _build(name, found, arg, index, text, registry) -> PVSpec:
    kind, d = found
    if kind == "core":
        argspec, takes_index, build = d
        if argspec == _REQ and (arg is None or arg.strip() == ""):
            raise PVError(f"${name} needs a name: ${name}(...)")
        if argspec == _NO and arg is not None:
            raise PVError(f"${name} takes no argument: {text}")
        if index is not None and not takes_index:
            raise PVError(f"${name} takes no index: {text}")
        get, setf = build(arg, index, name)
        return PVSpec(text, name, arg, index, get, setf,
                      values=getattr(get, "values", None))
    # module-exported or registered variable
    pv = d
    param = arg
    if pv.parse_name is not None:
        try:
            param = pv.parse_name(arg)
        except Exception as e:
            raise PVError(f"bad name in {text}: {e}") from None
    if index is not None:
        pidx = pv.parse_index
        if pidx is None:
            raise PVError(f"${name} takes no index: {text}")
        if isinstance(index, PVSpec):
            raise PVError(f"${name}: a variable index is not supported")
        try:
            param = PVParam(param, pidx(str(index)))
        except Exception as e:
            raise PVError(f"bad index in {text}: {e}") from None
    getf, setfn = pv.getf, pv.setf
    p = param

    def get(msg):
        return getf(msg, p)
    setf = None
    if setfn is not None:
        def setf(msg, value, op):
            r = setfn(msg, p, op, value)
            if isinstance(r, int) and r < 0:
                raise PVError(f"cannot set {text}")
    return PVSpec(text, name, arg, index, get, setf, param)


class PVParam:
    """What a module variable's getf/setf receive when the script gives an
    index: ``name`` (the parse_name result) and ``index`` (parse_index)."""
    __slots__ = ("name", "index")

    def __init__(self, name, index):
        self.name = name
        self.index = index

    def __repr__(self):
        return f"PVParam({self.name!r}, {self.index!r})"


def parse_pv(text: str, registry=None) -> PVSpec:
    """Parse one variable token (the whole text must be the variable)."""
    if not isinstance(text, str):
        raise PVError(f"not a variable: {text!r}")
    t = text.strip()
    if not t.startswith("$"):
        raise PVError(f"not a variable: {text!r}")
    spec, end = _scan_pv(t, 0, registry)
    if end != len(t):
        rest = t[end:]
        if rest[0] == "[":
            raise PVError(f"${spec.name} takes no index: {text}")
        if rest[0] == "(":
            raise PVError(f"${spec.name} takes no argument: {text}")
        raise PVError(f"unexpected {t[end:]!r} after {t[:end]} in {text!r}")
    return spec


# --- formats ------------------------------------------------------------------------------------

class Format:
    """A string with embedded variables, split once at parse time."""
    __slots__ = ("text", "parts", "is_constant", "value", "eval", "specs")

    def __init__(self, text, parts):
        self.text = text
        self.parts = parts
        self.specs = [p for p in parts if isinstance(p, PVSpec)]
        self.is_constant = not self.specs
        if self.is_constant:
            v = "".join(parts)
            self.value = v
            self.eval = lambda msg: v
            return
        self.value = None
        getters = [(None, p) if isinstance(p, str) else (p.get, None)
                   for p in parts]
        if len(parts) == 1:
            g = parts[0].get

            def ev1(msg):
                x = g(msg)
                if x is None:
                    return NULL_TEXT
                return x if isinstance(x, str) else str(x)
            self.eval = ev1
            return

        def ev(msg):
            out = []
            for g, lit in getters:
                if g is None:
                    out.append(lit)
                else:
                    x = g(msg)
                    if x is None:
                        out.append(NULL_TEXT)
                    else:
                        out.append(x if isinstance(x, str) else str(x))
            return "".join(out)
        self.eval = ev

    def __repr__(self):
        return f"Format({self.text!r})"


def parse_format(text: str, registry=None) -> Format:
    """Split ``text`` into literal parts and variables.  A ``$`` not followed
    by a variable name or ``(`` is literal text (``"5$"``); an unknown
    variable or a bad transformation raises PVError."""
    parts: list = []
    lit: List[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n and (text[i + 1] == "(" or
                                        text[i + 1].isalpha() or
                                        text[i + 1] == "_"):
            if lit:
                parts.append("".join(lit))
                lit = []
            spec, i = _scan_pv(text, i, registry)
            parts.append(spec)
            continue
        lit.append(ch)
        i += 1
    if lit:
        parts.append("".join(lit))
    return Format(text, parts)
