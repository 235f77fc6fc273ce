"""Transformations: ``{s.len}``, ``{uri.user}``, ``{param.value,name}`` ...

Every core transformation class of OpenSIPS 3.x/4.x: ``s.*``, ``uri.*``,
``via.*``, ``param.*``, ``nameaddr.*`` (also ``nameaddr.N.x``), ``ip.*``,
``csv.*``, ``sdp.*`` and ``re.subst``; names match in any case.

A transformation is applied to the value of a variable:
``$(ru{uri.user}{s.toupper})``.  :func:`compile_tr` turns the text between
the braces into a function ``f(msg, value) -> value`` once, at parse time;
the arguments of a transformation may be variables, evaluated on each call.

Values follow the pvar convention: ``str``, ``int`` or ``None`` (NULL).
A transformation given NULL returns NULL, every one of them, ``s.len``
included (OpenSIPS fails the transformation and the variable prints as
``<null>``); so does one whose variable argument is NULL.  A string
transformation given an int works on its decimal text.  A transformation
that cannot be applied (``s.substr`` out of range, ``s.index`` of an
absent substring, ``s.decode.hexa`` of a non-hex digit ...) gives NULL,
and so does an empty or absent URI or name-addr part (``{uri.user}`` of
``sip:host``, ``{nameaddr.name}`` without a display name), as OpenSIPS's
transformations.c sets PV_VAL_NULL there.  Bad constant arguments
(``{s.width,0}``, a ``{re.subst}`` that does not compile) are refused when
the script is parsed, so ``opensipy -c`` reports them.

URIs and name-addrs are read by :mod:`opensipy.parser` (the C parser the
message goes through), so ``{uri.*}`` and ``{nameaddr.*}`` understand a
URI exactly as routing does.  This module also holds the small SIP text
helpers the pseudo-variables share: :func:`parse_params`,
:func:`split_top` and the RFC 3261 escaping functions.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
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


# --- escaping (OpenSIPS's strcommon.c) ----------------------------------------------
#
# escape_user keeps letters, digits and -_.!~*'()&=+$,;? (so '/' is
# escaped); escape_param escapes only space ? & = , ; and the double
# quote; both write lower-case hex and refuse a character outside
# printable ASCII (32..126).  unescape_user/param need two hex digits after
# '%' and a printable result.

_USER_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789-_.!~*'()&=+$,;?")
_PARAM_ESC = frozenset(' ?&=,;"')
_HEX = "0123456789abcdef"
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def _pct(c: str) -> str:
    b = ord(c)
    return "%" + _HEX[b >> 4] + _HEX[b & 15]


def _printable(s: str) -> None:
    for c in s:
        if not 32 <= ord(c) <= 126:
            raise ValueError(f"cannot escape the character {c!r}")


def escape_user(s: str) -> str:
    _printable(s)
    return "".join(c if c in _USER_OK else _pct(c) for c in s)


def escape_param(s: str) -> str:
    _printable(s)
    return "".join(_pct(c) if c in _PARAM_ESC else c for c in s)


def _unescape_pct(s: str) -> str:
    out = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch == "%":
            h = s[i + 1:i + 3]
            if len(h) != 2 or not all(c in _HEXDIGITS for c in h):
                raise ValueError(f"bad %-escape {s[i:i + 3]!r}")
            c = int(h, 16)
            if not 32 <= c <= 126:
                raise ValueError(f"%-escape of a non-printable {s[i:i + 3]!r}")
            out.append(chr(c))
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


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
#
# Each follows OpenSIPS's transformations.c (tr_eval_string, tr_eval_uri,
# tr_eval_paramlist, tr_eval_nameaddr, tr_eval_csv, tr_eval_re): a value
# that cannot be transformed, and an empty URI or name-addr part, is NULL.

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
    """The whole text as a signed decimal integer, or None."""
    t = text.strip()
    if t[:1] in "+-":
        sign, digits = t[0], t[1:]
    else:
        sign, digits = "", t
    if not digits.isdigit() or not digits.isascii():
        return None
    return int(sign + digits)


def _str2sint_prefix(text: str) -> int:
    """OpenSIPS's str2sint as {s.int} uses it: an optional sign and the
    digits up to the first other character (none: 0)."""
    i, sign, n = 0, 1, 0
    if text[:1] == "+":
        i = 1
    elif text[:1] == "-":
        i, sign = 1, -1
    while i < len(text) and "0" <= text[i] <= "9":
        n = n * 10 + ord(text[i]) - 48
        i += 1
    return _w32(sign * n)


def _w32(n: int) -> int:
    return ((n + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _s_int(v):
    return v if isinstance(v, int) else _str2sint_prefix(v)


def _substr(v, offset, length):
    s = _s(v)
    i = _int_arg(offset, "s.substr offset")
    j = _int_arg(length, "s.substr length")
    n = len(s)
    if i < 0:
        if -i > n:
            return None
        i += n
    if i >= n:
        return None
    if j < 1:
        j = n + j - i
    if i + j > n:
        j = n - i
    if j < 0:
        return None
    return s[i:i + j]


def _select(v, idx, sep):
    parts = _s(v).split(_s(sep)[:1] or ",")
    i = _int_arg(idx, "s.select index")
    if -len(parts) <= i < len(parts):
        return parts[i]
    return None


def _encode_hexa(v):
    return _s(v).encode("utf-8", "surrogateescape").hex()


def _decode_hexa(v):
    s = _s(v)
    s = s[:len(s) // 2 * 2]             # an odd last digit is ignored
    try:
        return bytes.fromhex(s).decode("utf-8", "replace") if all(
            c in _HEXDIGITS for c in s) else None
    except ValueError:
        return None


def _index(v, needle, start=None):
    s, nd = _s(v), _s(needle)
    n = len(s)
    i = 0 if start is None else _int_arg(start, "s.index offset")
    if i < 0:
        i = (-i) % n if n else 0
        if i > 0:
            i = n - i
    if i >= n or len(nd) > n - i or not nd:
        return None
    r = s.find(nd, i)
    return None if r < 0 else r


def _rindex(v, needle, start=None):
    s, nd = _s(v), _s(needle)
    n = len(s)
    i = n - 1 if start is None else _int_arg(start, "s.rindex offset")
    if i < 0:
        i = (-i) % n if n else 0
        if i > 0:
            i = n - i
    if len(nd) > n or not nd:
        return None
    if i >= n:
        i = n - 1
    if len(nd) > n - i:
        i = n - len(nd)
    r = s.rfind(nd, 0, i + len(nd))
    return None if r < 0 else r


def _fill_left(v, pad, length):
    s, pad = _s(v), _s(pad)
    k = _int_arg(length, "s.fill.left length") - len(s)
    if k < 0 or not pad:
        return s
    r = k % len(pad)
    head = pad[len(pad) - r:] if r else ""
    return head + pad * ((k - r) // len(pad)) + s


def _fill_right(v, pad, length):
    s, pad = _s(v), _s(pad)
    k = _int_arg(length, "s.fill.right length") - len(s)
    if k < 0 or not pad:
        return s
    return s + (pad * (k // len(pad) + 1))[:k]


def _width(v, length):
    s = _s(v)
    w = _int_arg(length, "s.width length")
    if w <= 0:
        return None
    return s[:w] if w <= len(s) else s + " " * (w - len(s))


def _dec2hex(v):
    if isinstance(v, int):
        n = v
    else:
        n = _to_int(v)
        if n is None:
            return None
    return "%x" % (n & 0xFFFFFFFF)


def _hex2dec(v):
    if isinstance(v, int):
        return v
    s = _s(v)
    if not all(c in _HEXDIGITS for c in s):
        return None
    return int(s, 16) & 0xFFFFFFFF if s else 0


def _date2unix(v):
    from email.utils import parsedate_to_datetime
    try:
        d = parsedate_to_datetime(_s(v).strip())
    except (TypeError, ValueError, IndexError):
        return None
    if d is None:
        return None
    if d.tzinfo is None:
        import datetime as _dt
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp())


def _bytes(v) -> bytes:
    return _s(v).encode("utf-8", "surrogateescape")


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _b64encode(v):
    return base64.b64encode(_bytes(v)).decode("ascii")


def _b64decode(v):
    s = _s(v).strip()
    try:
        return _text(base64.b64decode(s + "=" * (-len(s) % 4)))
    except (ValueError, binascii.Error):
        return None


def _xor(v, secret):
    data, key = _bytes(v), _bytes(secret)
    if not key:
        return None
    return _text(bytes(b ^ key[i % len(key)] for i, b in enumerate(data)))


def _crc32(v):
    return str(binascii.crc32(_bytes(v)) & 0xFFFFFFFF)


def _hash(algo):
    def f(v):
        return hashlib.new(algo, _bytes(v)).hexdigest()
    return f


def _hmac(algo):
    def f(v, key):
        return hmac.new(_bytes(key), _bytes(v), algo).hexdigest()
    return f


def _ascii_lower(v):
    return _s(v).translate(_LOWER)


def _ascii_upper(v):
    return _s(v).translate(_UPPER)


_LOWER = {c: c + 32 for c in range(65, 91)}
_UPPER = {c + 32: c for c in range(65, 91)}


@lru_cache(maxsize=256)
def _eval_format(text: str):
    from .pvar import parse_format
    return parse_format(text)


def _s_eval(msg, v):
    """{s.eval}: the value read as a format string, its variables
    evaluated (OpenSIPS's pv_printf)."""
    try:
        fmt = _eval_format(_s(v))
    except Exception:
        return None
    return fmt.eval(msg)


@lru_cache(maxsize=1024)
def _uri_of_text(text: str) -> Optional[SipUri]:
    try:
        return parse_uri(text)
    except UriError:
        return None


def _uri_of(v) -> Optional[SipUri]:
    return _uri_of_text(_s(v))


def _uri_field(field):
    """A URI part; NULL when the URI has none or it is empty (OpenSIPS
    sets PV_VAL_NULL on an empty part)."""
    def f(v):
        u = _uri_of(v)
        if u is None:
            return None
        return getattr(u, field) or None
    return f


def _uri_port(v):
    """The port as written, an integer with its text; NULL when the URI
    writes none."""
    u = _uri_of(v)
    if u is None or not u.port_str:
        return None
    return u.port


def _uri_schema(v):
    u = _uri_of(v)
    if u is None:
        return None
    t = _s(v)
    c = t.find(":", 0, 5)
    return t[:c] if c > 0 else None


def _uri_p(pname):
    """A well-known URI parameter's value; NULL when absent or empty."""
    def f(v):
        u = _uri_of(v)
        if u is None:
            return None
        return u.param(pname) or None
    return f


def _uri_param(v, name):
    """The value of a URI parameter: "" when it has none, NULL when the
    URI has no such parameter (OpenSIPS's {uri.param,NAME})."""
    u = _uri_of(v)
    if u is None:
        return None
    return u.param(_s(name))


def _plist(v, sep):
    s = _s(v)
    if not s:
        raise ValueError("empty parameter list")
    return parse_params(s, _s(sep)[:1] or ";")


def _param_value(v, name, sep=";"):
    name = _s(name).lower()
    for k, val in _plist(v, sep):
        if k.lower() == name:
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
    if _s(v) == "":
        return 0
    return len(_plist(v, sep))


def _param_exist(v, name, sep=";"):
    name = _s(name).lower()
    return 1 if any(k.lower() == name for k, _ in _plist(v, sep)) else 0


@lru_cache(maxsize=512)
def _na_of_text(text: str):
    try:
        return parse_nameaddr(text)
    except UriError:
        return None


def _na(v, index=0):
    """The name-addr at index of a comma-separated list (OpenSIPS 3.3+
    {nameaddr.N.x}); index 0 is the whole value when it is one."""
    text = _s(v)
    if index:
        parts = split_top(text)
        if not -len(parts) <= index < len(parts):
            return None
        text = parts[index]
    elif "," in text:
        parts = split_top(text)
        if parts:
            text = parts[0]
    return _na_of_text(text)


def _na_name(v, index=0):
    na = _na(v, index)
    if na is None:
        return None
    return (na.display_raw or "").strip() or None


def _na_uri(v, index=0):
    na = _na(v, index)
    return None if na is None else (na.uri or None)


def _na_len(v, index=0):
    """The length of the name-addr part: up to '>' (or the bare URI),
    header parameters left out."""
    na = _na(v, index)
    if na is None:
        return None
    text = na.text
    if na.params_str:               # the params run to the value's end
        text = text[:len(text) - len(na.params_str)]
    return len(text.rstrip(" \t;"))


def _na_param(v, name, index=0):
    """A header parameter's value: the name matches exactly (strncmp
    there); absent, or without a value, is NULL (tr_eval_nameaddr)."""
    na = _na(v, index)
    if na is None:
        return None
    name = _s(name)
    for k, val in parse_params(na.params_str or ""):
        if k == name:
            return val or None
    return None


def _na_params(v, index=0):
    na = _na(v, index)
    if na is None:
        return None
    return (na.params_str or "").lstrip(";").strip() or None


def _csv(v):
    """The fields of one RFC 4180 record (OpenSIPS's _parse_csv_record
    with CSV_RFC_4180): a quoted field may hold commas, "" is a quote;
    an empty value is no record."""
    text = _s(v)
    if not text:
        raise ValueError("empty CSV record")
    out, cur, i, n = [], [], 0, len(text)
    quoted = False
    while i < n:
        c = text[i]
        if quoted:
            if c == '"':
                if text[i + 1:i + 2] == '"':
                    cur.append('"')
                    i += 1
                else:
                    quoted = False
            else:
                cur.append(c)
        elif c == '"' and not "".join(cur).strip():
            quoted, cur = True, []
        elif c == ",":
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur).strip())
    return out


def _csv_value(v, idx):
    parts = _csv(v)
    i = _int_arg(idx, "csv.value index")
    if -len(parts) <= i < len(parts):
        return parts[i]
    return None


class _Subst:
    """A sed-like ``/re/replacement/flags`` (OpenSIPS's subst_parser):
    any delimiter, flags i (ignore case) and g (every match), \\0-\\9 in
    the replacement for the groups."""
    __slots__ = ("rx", "repl", "count")

    def __init__(self, text: str):
        if len(text) < 3:
            raise ValueError(f"bad substitution {text!r}")
        d = text[0]
        parts, cur, i = [], [], 1
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                if text[i + 1] == d:
                    cur.append(d)
                else:
                    cur.append(text[i:i + 2])
                i += 2
                continue
            if c == d:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(c)
            i += 1
        parts.append("".join(cur))
        if len(parts) != 3:
            raise ValueError(f"bad substitution {text!r}: expected "
                             f"{d}regex{d}replacement{d}flags")
        rx, repl, flags = parts
        bad = set(flags) - set("igs")
        if bad:
            raise ValueError(f"bad substitution flag(s) {''.join(bad)!r}")
        f = re.IGNORECASE if "i" in flags else 0
        try:
            self.rx = re.compile(rx, f)
        except re.error as e:
            raise ValueError(f"bad regular expression {rx!r}: {e}") \
                from None
        self.repl = re.sub(r"\\([0-9])", r"\\g<\1>", repl)
        self.count = 0 if "g" in flags else 1


@lru_cache(maxsize=256)
def _subst_of(text: str) -> _Subst:
    return _Subst(text)


def _re_subst(v, expr):
    s = _s(v)
    if not s:
        return None
    try:
        sub = _subst_of(_s(expr))
        return sub.rx.sub(sub.repl, s, count=sub.count)
    except (ValueError, re.error, IndexError):
        return None


# --- via.* (tr_eval_via) ------------------------------------------------------

_VIA_RE = re.compile(
    r"\s*([^/\s]+)\s*/\s*([^/\s]+)\s*/\s*([^\s]+)\s+"     # SIP / 2.0 / UDP
    r"(\[[^\]]*\]|[^\s:;,(]+)"                              # host
    r"(?:\s*:\s*([0-9]+))?"                                 # port
    r"\s*((?:;[^,(]*)?)"                                    # ;params
    r"\s*(?:\(([^)]*)\))?\s*(?:,|\Z)")                      # (comment)


@lru_cache(maxsize=256)
def _via_of_text(text: str):
    m = _VIA_RE.match(text)
    return m


def _via(v):
    m = _via_of_text(_s(v))
    if m is None:
        raise ValueError("not a Via body")
    return m


def _via_group(i):
    def f(v):
        return _via(v).group(i) or None
    return f


def _via_port(v):
    p = _via(v).group(5)
    return int(p) if p else None


def _via_params(v):
    return _via(v).group(6).lstrip(";").strip() or None


def _via_param(v, name):
    name = _s(name).lower()
    for k, val in parse_params(_via(v).group(6)):
        if k.lower() == name:
            return val
    return None


def _via_p(pname):
    def f(v):
        return _via_param(v, pname) or None
    return f


# --- ip.* (tr_eval_ip) --------------------------------------------------------

def _ip_obj(text):
    import ipaddress
    t = _s(text)
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        return ipaddress.ip_address(t)
    except ValueError:
        return None


def _binary(v) -> bytes:
    return _s(v).encode("latin-1", "replace")


def _ip_family(v):
    n = len(_binary(v))
    if n == 4:
        return "INET"
    if n == 16:
        return "INET6"
    return None


def _ip_ntop(v):
    import ipaddress
    b = _binary(v)
    if len(b) not in (4, 16):
        return None
    return str(ipaddress.ip_address(b))


def _ip_pton(v):
    ip = _ip_obj(v)
    return None if ip is None else ip.packed.decode("latin-1")


def _ip_is(version=None):
    def f(v):
        ip = _ip_obj(v)
        return int(ip is not None and (version is None or
                                       ip.version == version))
    return f


def _ip_matches(v, net):
    import ipaddress
    ip = _ip_obj(v)
    text = _s(net)
    if ip is None or "/" not in text:
        return None
    addr, _, bits = text.partition("/")
    base = _ip_obj(addr)
    if base is None or not bits.isdigit() or \
            int(bits) > base.max_prefixlen or base.version != ip.version:
        return None
    return int(ip in ipaddress.ip_network(f"{base}/{bits}", strict=False))


def _ip_isprivate(v):
    import ipaddress
    ip = _ip_obj(v)
    nets = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    return int(ip is not None and ip.version == 4 and any(
        ip in ipaddress.ip_network(n) for n in nets))


def _ip_resolve(v):
    import socket
    t = _s(v)
    if _ip_obj(t) is not None:
        return str(_ip_obj(t))
    try:
        return socket.getaddrinfo(t, None)[0][4][0]
    except (OSError, IndexError, UnicodeError):
        return None


# --- sdp.* (tr_eval_sdp) ------------------------------------------------------

def _sdp_lines(v):
    return _s(v).replace("\r\n", "\n").split("\n")


def _sdp_line(v, kind, idx=0):
    k = _s(kind)[:1]
    n = _int_arg(idx, "sdp.line index")
    if n < 0:
        return None
    found = [ln for ln in _sdp_lines(v) if ln.startswith(k + "=")]
    return found[n] if n < len(found) else None


def _sdp_streams(v):
    """(session head lines, [(media, lines) ...]) of an SDP."""
    head, streams = [], []
    for ln in _sdp_lines(v):
        if ln.startswith("m="):
            streams.append((ln[2:].split(" ", 1)[0], [ln]))
        elif streams:
            streams[-1][1].append(ln)
        else:
            head.append(ln)
    return head, streams


def _pick_stream(streams, which):
    i = _to_int(_s(which)) if not isinstance(which, int) else which
    if i is not None:
        if i < 0:
            i += len(streams)
        return [i] if 0 <= i < len(streams) else []
    name = _s(which).lower()
    return [k for k, (media, _) in enumerate(streams)
            if media.lower() == name]


def _sdp_stream(v, which):
    _, streams = _sdp_streams(v)
    picked = _pick_stream(streams, which)
    if not picked:
        return None
    lines = streams[picked[0]][1]
    return "\r\n".join(ln for ln in lines if ln) + "\r\n"


def _sdp_stream_delete(v, which):
    head, streams = _sdp_streams(v)
    picked = set(_pick_stream(streams, which))
    if not picked:
        return None
    keep = head + [ln for k, (_, lines) in enumerate(streams)
                   if k not in picked for ln in lines]
    return "\r\n".join(ln for ln in keep if ln) + "\r\n"


_WS = " \t\r\n"

# name -> (function(value, *args), min args, max args)
TRANSFORMATIONS: Dict[str, Tuple[Callable, int, int]] = {
    "s.len": (lambda v: len(_s(v)), 0, 0),
    "s.int": (_s_int, 0, 0),
    "s.md5": (_hash("md5"), 0, 0),
    "s.crc32": (_crc32, 0, 0),
    "s.reverse": (lambda v: _s(v)[::-1], 0, 0),
    "s.substr": (_substr, 2, 2),
    "s.select": (_select, 2, 2),
    "s.encode.hexa": (_encode_hexa, 0, 0),
    "s.decode.hexa": (_decode_hexa, 0, 0),
    "s.escape.common": (lambda v: escape_common(_s(v)), 0, 0),
    "s.unescape.common": (lambda v: unescape_common(_s(v)), 0, 0),
    "s.escape.user": (lambda v: escape_user(_s(v)), 0, 0),
    "s.unescape.user": (lambda v: unescape_user(_s(v)), 0, 0),
    "s.escape.param": (lambda v: escape_param(_s(v)), 0, 0),
    "s.unescape.param": (lambda v: unescape_param(_s(v)), 0, 0),
    "s.tolower": (_ascii_lower, 0, 0),
    "s.toupper": (_ascii_upper, 0, 0),
    "s.index": (_index, 1, 2),
    "s.rindex": (_rindex, 1, 2),
    "s.fill.left": (_fill_left, 2, 2),
    "s.fill.right": (_fill_right, 2, 2),
    "s.width": (_width, 1, 1),
    "s.trim": (lambda v: _s(v).strip(_WS), 0, 0),
    "s.trimr": (lambda v: _s(v).rstrip(_WS), 0, 0),
    "s.triml": (lambda v: _s(v).lstrip(_WS), 0, 0),
    "s.dec2hex": (_dec2hex, 0, 0),
    "s.hex2dec": (_hex2dec, 0, 0),
    "s.date2unix": (_date2unix, 0, 0),
    "s.b64encode": (_b64encode, 0, 0),
    "s.b64decode": (_b64decode, 0, 0),
    "s.xor": (_xor, 1, 1),
    "s.eval": (_s_eval, 0, 0),
    "uri.user": (_uri_field("user"), 0, 0),
    "uri.host": (_uri_field("host"), 0, 0),
    "uri.passwd": (_uri_field("passwd"), 0, 0),
    "uri.port": (_uri_port, 0, 0),
    "uri.params": (_uri_field("params_str"), 0, 0),
    "uri.headers": (_uri_field("headers"), 0, 0),
    "uri.schema": (_uri_schema, 0, 0),
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
    "csv.count": (lambda v: len(_csv(v)), 0, 0),
    "csv.value": (_csv_value, 1, 1),
    "re.subst": (_re_subst, 1, 1),
    "via.name": (_via_group(1), 0, 0),
    "via.version": (_via_group(2), 0, 0),
    "via.transport": (_via_group(3), 0, 0),
    "via.host": (_via_group(4), 0, 0),
    "via.domain": (_via_group(4), 0, 0),
    "via.port": (_via_port, 0, 0),
    "via.params": (_via_params, 0, 0),
    "via.param": (_via_param, 1, 1),
    "via.comment": (_via_group(7), 0, 0),
    "via.branch": (_via_p("branch"), 0, 0),
    "via.received": (_via_p("received"), 0, 0),
    "via.rport": (_via_p("rport"), 0, 0),
    "ip.family": (_ip_family, 0, 0),
    "ip.ntop": (_ip_ntop, 0, 0),
    "ip.pton": (_ip_pton, 0, 0),
    "ip.isip": (_ip_is(), 0, 0),
    "ip.isip4": (_ip_is(4), 0, 0),
    "ip.isip6": (_ip_is(6), 0, 0),
    "ip.resolve": (_ip_resolve, 0, 0),
    "ip.matches": (_ip_matches, 1, 1),
    "ip.isprivate": (_ip_isprivate, 0, 0),
    "sdp.line": (_sdp_line, 1, 2),
    "sdp.stream": (_sdp_stream, 1, 1),
    "sdp.stream-delete": (_sdp_stream_delete, 1, 1),
}
for _a in ("sha1", "sha224", "sha256", "sha384", "sha512"):
    TRANSFORMATIONS[f"s.{_a}"] = (_hash(_a), 0, 0)
    TRANSFORMATIONS[f"s.{_a}_hmac"] = (_hmac(_a), 1, 1)
del _a

# transformations that read the message: fn(msg, value, *args)
_WITH_MSG = {"s.eval"}
# the nameaddr transformations OpenSIPS 3.3+ also accepts with an index
# of the name-addr in a list: {nameaddr.1.uri}, {nameaddr.-1.name}
_NA_INDEXED = {"name", "uri", "len", "param", "params"}
_NA_RE = re.compile(r"nameaddr\.(-?[0-9]+)\.([a-z]+)\Z")


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
    body = body.lstrip()            # {s.select,0, }: a trailing space counts
    comma = body.find(",")
    # OpenSIPS matches the names in any case (strncasecmp)
    name = (body if comma < 0 else body[:comma]).strip().lower()
    spec = TRANSFORMATIONS.get(name)
    if spec is None:
        m = _NA_RE.match(name)
        if m and m.group(2) in _NA_INDEXED:
            base, idx = TRANSFORMATIONS["nameaddr." + m.group(2)], \
                int(m.group(1))
            f0 = base[0]
            spec = ((lambda v, *a: f0(v, *a, index=idx)),) + base[1:]
    if spec is None:
        raise TrError(f"unknown transformation {{{name}}}")
    fn, amin, amax = spec
    if name in _WITH_MSG:
        fn0 = fn
    args: list = []
    if comma >= 0:
        if amax == 0:
            raise TrError(f"transformation {{{name}}} takes no argument")
        raw = _split_args(body[comma + 1:], amax - 1)
        for a in raw:
            if a.strip(" \t").startswith("$"):
                a = a.strip(" \t")
                try:
                    args.append(parse_pv(a))
                except Exception as e:
                    raise TrError(f"bad argument {a!r} of {{{name}}}: {e}") \
                        from None
            else:
                # OpenSIPS trims the white space around an argument
                # ({s.fill.left, 0, 5}); quotes keep it ({s.select,1," "})
                # ... but {s.select,0, } separates on a space: its
                # separator is the one character after the comma
                raw_a = a
                a = a.strip(" \t")
                if not a and raw_a and name == "s.select" and len(args) == 1:
                    a = raw_a[0]
                if len(a) >= 2 and a[0] == a[-1] and a[0] in "\"'":
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
    _check_const(name, args, dyn)

    if name in _WITH_MSG:
        def tr_msg(msg, value):
            if value is None:
                return None
            return fn0(msg, value)
        return tr_msg

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
                 "csv.value": (0,), "s.fill.left": (1,),
                 "s.fill.right": (1,), "s.width": (0,), "sdp.line": (1,)}


def _check_const(name, args, dyn):
    """Constant arguments OpenSIPS refuses when it parses the script."""
    def const(i):
        return None if dyn[i] else args[i]
    if name == "s.width" and const(0) is not None and _to_int(const(0)) <= 0:
        raise TrError("the width of {s.width} must be at least 1")
    if name in ("s.fill.left", "s.fill.right") and const(0) == "":
        raise TrError(f"the padding of {{{name}}} may not be empty")
    if name in ("s.select",) and const(1) == "":
        raise TrError("the separator of {s.select} may not be empty")
    if (name == "s.xor" or name.endswith("_hmac")) and const(0) == "":
        raise TrError(f"the key of {{{name}}} may not be empty")
    if name == "re.subst" and const(0) is not None:
        try:
            _subst_of(const(0))
        except ValueError as e:
            raise TrError(f"{{re.subst}}: {e}") from None


def _numeric_arg(name: str, i: int) -> bool:
    return i in _NUMERIC_ARGS.get(name, ())
