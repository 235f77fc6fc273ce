"""Transformations: ``{s.len}``, ``{uri.user}``, ``{param.value,name}`` ...

A transformation is applied to the value of a variable:
``$(ru{uri.user}{s.toupper})``.  :func:`compile_tr` turns the text between
the braces into a function ``f(msg, value) -> value`` once, at parse time;
the arguments of a transformation may be variables, evaluated on each call.

Values follow the pvar convention: ``str``, ``int`` or ``None`` (NULL).
A transformation given NULL returns NULL, every one of them, ``s.len``
included (OpenSIPS fails the transformation and the variable prints as
``<null>``); so does one whose variable argument is NULL.  A string
transformation given an int works on its decimal text.  A transformation
that cannot be applied (``s.substr`` out of range, ``s.int`` of a word,
``s.decode.hexa`` of odd text ...) gives NULL.

URIs and name-addrs are read by :mod:`opensipy.parser` (the C parser the
message goes through), so ``{uri.*}`` and ``{nameaddr.*}`` understand a
URI exactly as routing does.  This module also holds the small SIP text
helpers the pseudo-variables share: :func:`parse_params`,
:func:`split_top` and the RFC 3261 escaping functions.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Tuple

from .parser.uri import SipUri, UriError, parse_nameaddr, parse_uri


class TrError(Exception):
    """A transformation is unknown or its arguments are wrong."""


# --- parameters and name-addr -------------------------------------------------

def parse_params(text: str, sep: str = ";") -> List[Tuple[str, str]]:
    """``a=1;b;c="x;y"`` -> ``[("a","1"), ("b",""), ("c",'"x;y"')]``.

    A leading separator is allowed; quoted values may hold the separator.
    Names and values are stripped of surrounding white space."""
    out = []
    i, n = 0, len(text)
    while i < n:
        # one parameter: up to the next separator outside quotes
        j = i
        inq = False
        while j < n:
            ch = text[j]
            if ch == '"':
                inq = not inq
            elif ch == "\\" and inq:
                j += 1
            elif ch == sep and not inq:
                break
            j += 1
        item = text[i:j].strip()
        i = j + 1
        if not item:
            continue
        eq = item.find("=")
        if eq < 0:
            out.append((item, ""))
        else:
            out.append((item[:eq].strip(), item[eq + 1:].strip()))
    return out


def split_top(text: str, sep: str = ",") -> List[str]:
    """Split on ``sep`` outside quotes and ``<...>`` (for header values
    such as Contact: a, b)."""
    out, cur = [], []
    inq = False
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if inq:
            if ch == "\\" and i + 1 < len(text):
                cur.append(ch)
                i += 1
                ch = text[i]
            elif ch == '"':
                inq = False
        elif ch == '"':
            inq = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    out.append("".join(cur).strip())
    return [p for p in out if p]


# --- escaping (RFC 3261 grammar) ------------------------------------------------

_UNRESERVED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789-_.!~*'()")
_USER_OK = _UNRESERVED | frozenset("&=+$,;?/")
_PARAM_OK = _UNRESERVED | frozenset("[]/:&+$")
_HEX = "0123456789ABCDEF"
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def _escape_set(s: str, ok) -> str:
    out = []
    for b in s.encode("utf-8"):
        ch = chr(b)
        if b < 128 and ch in ok:
            out.append(ch)
        else:
            out.append("%" + _HEX[b >> 4] + _HEX[b & 15])
    return "".join(out)


def _unescape_pct(s: str) -> str:
    out = bytearray()
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch == "%":
            h = s[i + 1:i + 3]
            if len(h) != 2 or not all(c in _HEXDIGITS for c in h):
                raise ValueError(f"bad %-escape {s[i:i + 3]!r}")
            out.append(int(h, 16))
            i += 3
        else:
            out += ch.encode("utf-8")
            i += 1
    return out.decode("utf-8", "replace")


def escape_user(s: str) -> str:
    return _escape_set(s, _USER_OK)


def escape_param(s: str) -> str:
    return _escape_set(s, _PARAM_OK)


unescape_user = _unescape_pct
unescape_param = _unescape_pct

_COMMON_ESC = {"'": "\\'", '"': '\\"', "\\": "\\\\", "\0": "\\0"}
_COMMON_UNESC = {"'": "'", '"': '"', "\\": "\\", "0": "\0"}


def escape_common(s: str) -> str:
    """Backslash-escape ' " \\ and NUL (OpenSIPS's escape_common)."""
    return "".join(_COMMON_ESC.get(c, c) for c in s)


def unescape_common(s: str) -> str:
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in _COMMON_UNESC:
            out.append(_COMMON_UNESC[s[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# --- the transformations -----------------------------------------------------------

def _s(v) -> str:
    return v if isinstance(v, str) else str(v)


def _int_arg(v, what) -> int:
    if isinstance(v, int):
        return v
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, not {v!r}") from None


def _to_int(text):
    t = text.strip()
    if t[:1] in "+-":
        sign, digits = t[0], t[1:]
    else:
        sign, digits = "", t
    if not digits.isdigit():
        return None
    return int(sign + digits)


def _substr(v, offset, length):
    s = _s(v)
    off = _int_arg(offset, "s.substr offset")
    ln = _int_arg(length, "s.substr length")
    n = len(s)
    if off < 0:
        off += n
        if off < 0:
            return None
    if off >= n and n:
        return None
    if ln == 0:
        return s[off:]
    if ln > 0:
        return s[off:off + ln]
    end = n + ln
    if end <= off:
        return None
    return s[off:end]


def _select(v, idx, sep):
    parts = _s(v).split(_s(sep)[:1] or ",")
    i = _int_arg(idx, "s.select index")
    if -len(parts) <= i < len(parts):
        return parts[i]
    return None


def _decode_hexa(v):
    s = _s(v)
    try:
        return bytes.fromhex(s).decode("utf-8", "replace")
    except ValueError:
        return None


def _index(v, needle, start=0):
    s, nd = _s(v), _s(needle)
    st = _int_arg(start, "s.index offset")
    if st < 0:
        st = max(0, len(s) + st)
    return s.find(nd, st)


def _rindex(v, needle, start=None):
    s, nd = _s(v), _s(needle)
    if start is None:
        return s.rfind(nd)
    st = _int_arg(start, "s.rindex offset")
    if st < 0:
        st = len(s) + st
    if st < 0:
        return -1
    return s.rfind(nd, 0, st + len(nd))


@lru_cache(maxsize=1024)
def _uri_of_text(text: str) -> Optional[SipUri]:
    try:
        return parse_uri(text)
    except UriError:
        return None


def _uri_of(v) -> Optional[SipUri]:
    return _uri_of_text(_s(v))


def _uri_field(field):
    """A URI part; "" when the URI has none (OpenSIPS's empty string)."""
    def f(v):
        u = _uri_of(v)
        if u is None:
            return None
        return getattr(u, field) or ""
    return f


def _uri_p(pname):
    """A well-known URI parameter; "" when absent, as in OpenSIPS."""
    def f(v):
        u = _uri_of(v)
        if u is None:
            return None
        r = u.param(pname)
        return "" if r is None else r
    return f


def _uri_param(v, name):
    """The value of a URI parameter: "" when it has none, NULL when the
    URI has no such parameter (OpenSIPS's {uri.param,NAME})."""
    u = _uri_of(v)
    if u is None:
        return None
    return u.param(_s(name))


def _plist(v, sep):
    return parse_params(_s(v), _s(sep)[:1] or ";")


def _param_value(v, name, sep=";"):
    name = _s(name)
    for k, val in _plist(v, sep):
        if k == name:
            return val
    return None


def _param_valueat(v, idx, sep=";"):
    ps = _plist(v, sep)
    i = _int_arg(idx, "param.valueat index")
    if -len(ps) <= i < len(ps):
        return ps[i][1]
    return None


def _param_name(v, idx, sep=";"):
    ps = _plist(v, sep)
    i = _int_arg(idx, "param.name index")
    if -len(ps) <= i < len(ps):
        return ps[i][0]
    return None


def _param_count(v, sep=";"):
    return len(_plist(v, sep))


def _param_exist(v, name, sep=";"):
    name = _s(name)
    return 1 if any(k == name for k, _ in _plist(v, sep)) else 0


@lru_cache(maxsize=512)
def _na_of_text(text: str):
    try:
        return parse_nameaddr(text)
    except UriError:
        return None


def _na(v):
    return _na_of_text(_s(v))


def _na_name(v):
    na = _na(v)
    if na is None:
        return None
    return (na.display_raw or "").strip()


def _na_uri(v):
    na = _na(v)
    return None if na is None else na.uri


def _na_len(v):
    """The length of the name-addr part: up to '>' (or the bare URI),
    header parameters left out."""
    na = _na(v)
    if na is None:
        return None
    text = na.text
    if na.params_str:               # the params run to the value's end
        text = text[:len(text) - len(na.params_str)]
    return len(text.rstrip(" \t;"))


def _na_param(v, name):
    na = _na(v)
    if na is None:
        return None
    return na.param(_s(name))


def _na_params(v):
    na = _na(v)
    if na is None:
        return None
    return (na.params_str or "").lstrip(";").strip()


def _csv(v):
    return [p.strip() for p in _s(v).split(",")]


def _csv_value(v, idx):
    parts = _csv(v)
    i = _int_arg(idx, "csv.value index")
    if -len(parts) <= i < len(parts):
        return parts[i]
    return None


_WS = " \t\r\n"

# name -> (function(value, *args), min args, max args)
TRANSFORMATIONS: Dict[str, Tuple[Callable, int, int]] = {
    "s.len": (lambda v: len(_s(v)), 0, 0),
    "s.int": (lambda v: v if isinstance(v, int) else _to_int(v), 0, 0),
    "s.substr": (_substr, 2, 2),
    "s.select": (_select, 2, 2),
    "s.tolower": (lambda v: _s(v).lower(), 0, 0),
    "s.toupper": (lambda v: _s(v).upper(), 0, 0),
    "s.trim": (lambda v: _s(v).strip(_WS), 0, 0),
    "s.trimr": (lambda v: _s(v).rstrip(_WS), 0, 0),
    "s.triml": (lambda v: _s(v).lstrip(_WS), 0, 0),
    "s.encode.hexa": (lambda v: _s(v).encode("utf-8").hex(), 0, 0),
    "s.decode.hexa": (_decode_hexa, 0, 0),
    "s.escape.common": (lambda v: escape_common(_s(v)), 0, 0),
    "s.unescape.common": (lambda v: unescape_common(_s(v)), 0, 0),
    "s.escape.user": (lambda v: escape_user(_s(v)), 0, 0),
    "s.unescape.user": (lambda v: unescape_user(_s(v)), 0, 0),
    "s.escape.param": (lambda v: escape_param(_s(v)), 0, 0),
    "s.unescape.param": (lambda v: unescape_param(_s(v)), 0, 0),
    "s.md5": (lambda v: hashlib.md5(_s(v).encode("utf-8")).hexdigest(),
              0, 0),
    "s.index": (_index, 1, 2),
    "s.rindex": (_rindex, 1, 2),
    "uri.user": (_uri_field("user"), 0, 0),
    "uri.host": (_uri_field("host"), 0, 0),
    "uri.passwd": (_uri_field("passwd"), 0, 0),
    "uri.port": (_uri_field("port_str"), 0, 0),
    "uri.params": (_uri_field("params_str"), 0, 0),
    "uri.headers": (_uri_field("headers"), 0, 0),
    "uri.schema": (_uri_field("scheme"), 0, 0),
    "uri.param": (_uri_param, 1, 1),
    "uri.transport": (_uri_p("transport"), 0, 0),
    "uri.ttl": (_uri_p("ttl"), 0, 0),
    "uri.uparam": (_uri_p("user"), 0, 0),
    "uri.maddr": (_uri_p("maddr"), 0, 0),
    "uri.method": (_uri_p("method"), 0, 0),
    "uri.lr": (_uri_p("lr"), 0, 0),
    "uri.r2": (_uri_p("r2"), 0, 0),
    "param.value": (_param_value, 1, 2),
    "param.valueat": (_param_valueat, 1, 2),
    "param.name": (_param_name, 1, 2),
    "param.count": (_param_count, 0, 1),
    "param.exist": (_param_exist, 1, 2),
    "nameaddr.name": (_na_name, 0, 0),
    "nameaddr.uri": (_na_uri, 0, 0),
    "nameaddr.len": (_na_len, 0, 0),
    "nameaddr.param": (_na_param, 1, 1),
    "nameaddr.params": (_na_params, 0, 0),
    "nameaddr.tag": (lambda v: _na_param(v, "tag"), 0, 0),
    "csv.count": (lambda v: len(_csv(v)), 0, 0),
    "csv.value": (_csv_value, 1, 1),
}


def _split_args(text: str, maxsplit: int) -> List[str]:
    """Split on commas outside ``$(...)``/``(...)``/``{...}``; the last
    piece keeps the rest (so a separator argument may be a comma)."""
    out, depth, start = [], 0, 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
        elif ch == "," and depth == 0 and len(out) < maxsplit:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return out


def compile_tr(body: str, parse_pv: Callable[[str], object]) -> Callable:
    """Compile the text between ``{`` and ``}`` into ``f(msg, value)``.

    ``parse_pv(text)`` parses an argument that is a variable (it returns an
    object with ``get(msg)``).  Raises :class:`TrError`."""
    body = body.strip()
    comma = body.find(",")
    name = (body if comma < 0 else body[:comma]).strip()
    spec = TRANSFORMATIONS.get(name)
    if spec is None:
        raise TrError(f"unknown transformation {{{name}}}")
    fn, amin, amax = spec
    args: list = []
    if comma >= 0:
        if amax == 0:
            raise TrError(f"transformation {{{name}}} takes no argument")
        raw = _split_args(body[comma + 1:], amax - 1)
        for a in raw:
            if a.startswith("$"):
                try:
                    args.append(parse_pv(a))
                except Exception as e:
                    raise TrError(f"bad argument {a!r} of {{{name}}}: {e}") \
                        from None
            else:
                if len(a) >= 2 and a[0] == a[-1] == '"':
                    a = a[1:-1]
                args.append(a)
    if not amin <= len(args) <= amax:
        want = str(amin) if amin == amax else f"{amin} to {amax}"
        raise TrError(f"transformation {{{name}}} takes {want} argument(s), "
                      f"got {len(args)}")
    # check constant numeric arguments now
    for i, a in enumerate(args):
        if isinstance(a, str) and _numeric_arg(name, i) and _to_int(a) is None:
            raise TrError(f"argument {i + 1} of {{{name}}} must be an "
                          f"integer, not {a!r}")
    dyn = [hasattr(a, "get") for a in args]

    if not any(dyn):
        const = tuple(_to_int(a) if _numeric_arg(name, i) else a
                      for i, a in enumerate(args))

        def tr(msg, value):
            if value is None:
                return None
            try:
                return fn(value, *const)
            except (ValueError, IndexError):
                return None
        return tr

    def tr_dyn(msg, value):
        if value is None:
            return None
        vals = []
        for a, d in zip(args, dyn):
            if d:
                x = a.get(msg)
                if x is None:
                    return None
                vals.append(x)
            else:
                vals.append(a)
        try:
            return fn(value, *vals)
        except (ValueError, IndexError):
            return None
    return tr_dyn


_NUMERIC_ARGS = {"s.substr": (0, 1), "s.select": (0,), "s.index": (1,),
                 "s.rindex": (1,), "param.valueat": (0,), "param.name": (0,),
                 "csv.value": (0,)}


def _numeric_arg(name: str, i: int) -> bool:
    return i in _NUMERIC_ARGS.get(name, ())
