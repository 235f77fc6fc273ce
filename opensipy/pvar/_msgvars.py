"""Core pseudo-variables over the SIP message: the R-URI and its parts,
the first line, the destination URI, From/To, Call-ID/CSeq and other
headers, ``$hdr``/``$hdrcnt`` and the Contacts (see the package docstring
for the contract)."""
from __future__ import annotations

import re
from typing import List, Optional

from . import (_ALL, _NO, _REQ, PVError, StrInt, _as_int, _def, _simple,
               _txt, branch_flags, msg_flags)
from ..parser.uri import SipUri, UriError, parse_nameaddr, parse_uri
from ..transformations import split_top


# --- R-URI -----------------------------------------------------------------------

def _ruri_text(msg):
    if not msg.is_request:
        return None
    return msg.new_uri or msg.ruri


def _ruri_uri(msg) -> Optional[SipUri]:
    """The parsed current R-URI (new_uri when set).  The parse of a
    rewritten R-URI is kept on the message until it changes again, so a
    script reading $rU, $rd ... after ``$ru = ...`` parses it once."""
    t = _ruri_text(msg)
    if not t:
        return None
    cached = getattr(msg, "_pv_ruri", None)
    if cached is not None and cached[0] == t:
        return cached[1]
    try:
        u = parse_uri(t)
    except ValueError:
        u = None
    msg._pv_ruri = (t, u)
    return u


def _cur_uri(msg):
    """The current R-URI parsed: the C parser's view of the received one,
    or the cached parse of new_uri after a rewrite (None for a reply)."""
    if not msg.is_request:
        return None
    return _ruri_uri(msg) if msg.new_uri else msg.parsed_uri


# a Request-URI goes into the request line: no whitespace, no control
_RURI_BAD = re.compile(r"[\x00-\x20\x7f]")


def _check_ruri_text(var, v):
    m = _RURI_BAD.search(v)
    if m is not None:
        raise PVError(f"{var}: the R-URI would hold {m.group()!r} "
                      f"(whitespace and controls split the request line)")


def _set_ruri(msg, value, op):
    if value is None:
        raise PVError("cannot set $ru to NULL")
    v = _txt(value)
    try:
        parse_uri(v)
    except ValueError as e:
        raise PVError(f"$ru: {e}") from None
    _check_ruri_text("$ru", v)
    if not msg.is_request:
        raise PVError("$ru: not a request")
    msg.new_uri = v


def _ruri_part_setter(field, var):
    def setf(msg, value, op):
        if not msg.is_request:
            raise PVError(f"{var}: not a request")
        u = _ruri_uri(msg)
        if u is None:
            raise PVError(f"{var}: the R-URI cannot be parsed")
        if value is None or value == "":
            if field == "host":
                raise PVError(f"{var}: the host cannot be NULL")
            v = ""
        else:
            v = _txt(value)
            if field == "port" and not (v.isascii() and v.isdigit()
                                        and 0 < int(v) < 65536):
                raise PVError(f"{var}: bad port {v!r} (1..65535)")
            if field == "host" and ":" in v and not v.startswith("["):
                v = f"[{v}]"                 # an IPv6 address
        changes = {field: v}
        if field == "user" and not v:
            changes["passwd"] = ""
        nu = str(u.copy(**changes))
        _check_ruri_text(var, nu)
        msg.new_uri = nu
    return setf


@_simple("ru", _set_ruri)
def _get_ru(msg):
    if not msg.is_request:
        return None
    return msg.new_uri or msg.ruri


def _get_rU(msg):
    u = _cur_uri(msg)
    return (u.user or None) if u is not None else None


def _get_rd(msg):
    u = _cur_uri(msg)
    return (u.host or None) if u is not None else None


def _default_port(u) -> int:
    return 5061 if (u.scheme or "").lower() == "sips" else 5060


def _get_rp(msg):
    u = _cur_uri(msg)
    if u is None:
        return None
    # OpenSIPS: the port as written, a string carrying its number
    # (pv_get_strintval); the default port as an integer (pv_get_uintval)
    return StrInt(u.port_str) if u.port_str else _default_port(u)


def _get_rP(msg):
    u = _cur_uri(msg)
    if u is None:
        return None
    return u.param("transport") or "UDP"


_simple("rU", _ruri_part_setter("user", "$rU"))(_get_rU)
_simple("rd", _ruri_part_setter("host", "$rd"))(_get_rd)
_simple("rp", _ruri_part_setter("port", "$rp"))(_get_rp)
_simple("rP")(_get_rP)


def _orig_uri(msg):
    if not msg.is_request:
        return None
    try:
        return parse_uri(msg.ruri)
    except ValueError:
        return None


@_simple("ou")
def _get_ou(msg):
    return msg.ruri if msg.is_request else None


@_simple("oU")
def _get_oU(msg):
    u = _orig_uri(msg)
    return (u.user or None) if u is not None else None


@_simple("od")
def _get_od(msg):
    u = _orig_uri(msg)
    return (u.host or None) if u is not None else None


@_simple("op")
def _get_op(msg):
    u = _orig_uri(msg)
    if u is None:
        return None
    return StrInt(u.port_str) if u.port_str else _default_port(u)


# --- first line ------------------------------------------------------------------

@_simple("rm")
def _get_rm(msg):
    if msg.is_request:
        return msg.method
    cs = msg.cseq
    return cs.method if cs is not None else None


@_simple("rs")
def _get_rs(msg):
    return None if msg.is_request else int(msg.status)


@_simple("rr")
def _get_rr(msg):
    return None if msg.is_request else msg.reason


@_simple("rv")
def _get_rv(msg):
    return msg.version


# --- destination URI ------------------------------------------------------------------

def _set_du(msg, value, op):
    if value is None or value == "":
        msg.dst_uri = None
        return
    v = _txt(value)
    try:
        parse_uri(v)
    except ValueError as e:
        raise PVError(f"$du: {e}") from None
    msg.dst_uri = v


def _du_uri(msg):
    d = msg.dst_uri
    if not d:
        return None
    try:
        return parse_uri(d)
    except ValueError:
        return None


def _du_part_setter(field, var):
    def setf(msg, value, op):
        u = _du_uri(msg)
        if u is None:
            raise PVError(f"{var}: no destination URI ($du) to change")
        v = "" if value is None else _txt(value)
        if field == "host" and not v:
            raise PVError(f"{var}: the host cannot be NULL")
        if field == "port" and v and not v.isdigit():
            raise PVError(f"{var}: bad port {v!r}")
        if field == "host" and ":" in v and not v.startswith("["):
            v = f"[{v}]"
        msg.dst_uri = str(u.copy(**{field: v}))
    return setf


@_simple("du", _set_du)
def _get_du(msg):
    return msg.dst_uri or None


@_simple("dd", _du_part_setter("host", "$dd"))
def _get_dd(msg):
    u = _du_uri(msg)
    return (u.host or None) if u is not None else None


@_simple("dp", _du_part_setter("port", "$dp"))
def _get_dp(msg):
    u = _du_uri(msg)
    if u is None:
        return None
    return StrInt(u.port_str) if u.port_str else _default_port(u)


@_simple("dP")
def _get_dP(msg):
    u = _du_uri(msg)
    if u is None:
        return None
    return u.param("transport") or "UDP"


# --- From / To ----------------------------------------------------------------------

def _party_getters(attr, letter):
    def uri(msg):
        b = getattr(msg, attr)
        return b.uri if b is not None else None

    def user(msg):
        b = getattr(msg, attr)
        if b is None or b.parsed_uri is None:
            return None
        return b.parsed_uri.user or None

    def host(msg):
        b = getattr(msg, attr)
        if b is None or b.parsed_uri is None:
            return None
        return b.parsed_uri.host or None

    def display(msg):
        # as written, quotes included, like OpenSIPS's to_body.display
        b = getattr(msg, attr)
        if b is None:
            return None
        d = getattr(b, "display_raw", None)
        if d is None:
            d = b.display
        return d.strip() or None if d else None

    def tag(msg):
        b = getattr(msg, attr)
        return (b.tag or None) if b is not None else None

    _simple(letter + "u")(uri)
    _simple(letter + "U")(user)
    _simple(letter + "d")(host)
    _simple(letter + "n")(display)
    _simple(letter + "t")(tag)


_party_getters("from_", "f")
_party_getters("to", "t")


# --- other headers ------------------------------------------------------------------------

@_simple("ci")
def _get_ci(msg):
    return msg.callid


@_simple("cs")
def _get_cs(msg):
    cs = msg.cseq
    return str(cs.num) if cs is not None else None


@_simple("cl")
def _get_cl(msg):
    n = msg.content_length
    return None if n is None else int(n)


@_simple("ua")
def _get_ua(msg):
    return msg.hdr("User-Agent")


@_simple("cT")
def _get_cT(msg):
    return msg.hdr("Content-Type")


def _first_uri_of(hname):
    def g(msg):
        b = msg.hdr(hname)
        if not b:
            return None
        try:
            return parse_nameaddr(split_top(b)[0]).uri
        except (ValueError, IndexError):
            return None
    return g


_simple("ai")(_first_uri_of("P-Asserted-Identity"))
_simple("pi")(_first_uri_of("P-Preferred-Identity"))
_simple("re")(_first_uri_of("Remote-Party-ID"))
_simple("rt")(_first_uri_of("Refer-To"))
_simple("di")(_first_uri_of("Diversion"))


@_simple("rb")
def _get_rb(msg):
    b = msg.body
    if not b:
        return None
    return b.decode("utf-8", "replace") if isinstance(b, (bytes, bytearray,
                                                          memoryview)) \
        else str(b)


def _msg_buf(msg):
    # SipMsg.raw: the octets of this message (contract draft said "buf")
    b = getattr(msg, "raw", None)
    if b is None:
        b = getattr(msg, "buf", None)
    if b is None:
        return None
    return bytes(b)


@_simple("mb")
def _get_mb(msg):
    b = _msg_buf(msg)
    return None if b is None else b.decode("utf-8", "replace")


@_simple("ml")
def _get_ml(msg):
    b = _msg_buf(msg)
    return None if b is None else len(b)


@_simple("mf")
def _get_mf(msg):
    return msg_flags.names(msg.flags or 0)


@_simple("bf")
def _get_bf(msg):
    return branch_flags.names(getattr(msg, "ruri_bflags", 0) or 0)


# --- generic index helper -------------------------------------------------------------------

def _index_getter(values, index, first=None):
    """Build ``get(msg)`` over ``values(msg) -> list`` for an index that is
    None (the first value, or ``first(msg)`` when given), an int, ``*``
    (all, joined with ", ") or a PVSpec evaluated at run time."""
    if index is None:
        if first is not None:
            return first

        def g0(msg):
            vs = values(msg)
            return vs[0] if vs else None
        return g0
    if index == _ALL:
        def gall(msg):
            vs = values(msg)
            if not vs:
                return None
            return ", ".join("" if v is None else _txt(v) for v in vs)
        gall.values = values
        return gall
    if isinstance(index, int):
        i = index

        def gi(msg):
            vs = values(msg)
            if -len(vs) <= i < len(vs):
                return vs[i]
            return None
        return gi
    ispec = index

    def gd(msg):
        iv = ispec.get(msg)
        try:
            i = _as_int(iv)
        except (TypeError, ValueError):
            return None
        vs = values(msg)
        if -len(vs) <= i < len(vs):
            return vs[i]
        return None
    return gd


def _runtime_index(index, msg):
    if index is None or index == _ALL or isinstance(index, int):
        return index
    iv = index.get(msg)
    try:
        return _as_int(iv)
    except (TypeError, ValueError):
        raise PVError(f"index {index.text} is not an integer") from None


# --- $hdr / $hdrcnt -----------------------------------------------------------------------------

def _hdr_name(arg):
    if not arg or not re.match(r"^[A-Za-z0-9!%*_.+`'~-]+$", arg):
        raise PVError(f"bad header name {arg!r}")
    return arg


def _os_body(raw, hd) -> str:
    """A header's body as OpenSIPS keeps it (parse_hdr.c get_hdr_field):
    the white space after the colon eaten (line folding included), the
    line end (CR, LF, NUL) cut, but white space before it kept and a
    folded line kept as written."""
    line = raw[hd.start:hd.end]
    i = line.find(b":") + 1
    n = len(line)
    while i < n:
        c = line[i]
        if c == 32 or c == 9:
            i += 1
        elif c == 13 and line[i + 1:i + 2] == b"\n" and i + 2 < n \
                and line[i + 2] in (32, 9):
            i += 3
        elif c == 10 and i + 1 < n and line[i + 1] in (32, 9):
            i += 2
        else:
            break
    return line[i:].rstrip(b"\r\n\0").decode("utf-8", "replace")


def _os_bodies(msg, h):
    try:
        idx = msg._indexes(h)
        hs = msg.headers
        raw = msg.raw
    except AttributeError:          # not a parsed SipMsg (a dummy message)
        return msg.hdrs(h)
    return [_os_body(raw, hs[i]) for i in idx]


@_def("hdr", _REQ, True)
def _build_hdr(arg, index, name):
    """$hdr(name): bodies as OpenSIPS exposes them (see _os_body), so
    {s.len} and {s.trim} count what OpenSIPS counts."""
    h = _hdr_name(arg)

    def values(msg):
        return _os_bodies(msg, h)

    def first(msg):
        # the parsed view of a message does not change (edits are lumps),
        # so the first body is cached on the message: later reads of the
        # same $hdr are a dict lookup
        try:
            cache = msg._pv_hdr
        except AttributeError:
            cache = msg._pv_hdr = {}
        try:
            return cache[h]
        except KeyError:
            vs = _os_bodies(msg, h)
            v = cache[h] = vs[0] if vs else None
            return v
    return _index_getter(values, index, first), None


@_def("hdrcnt", _REQ)
def _build_hdrcnt(arg, index, name):
    h = _hdr_name(arg)

    def g(msg):
        return len(msg.hdrs(h))
    return g, None


# --- Contact ------------------------------------------------------------------------------------

def _contacts(msg) -> List[str]:
    out = []
    for body in msg.hdrs("Contact"):
        out.extend(split_top(body))
    return out


@_def("ct", _NO, True)
def _build_ct(arg, index, name):
    return _index_getter(_contacts, index), None


_CT_FIELDS = ("name", "uri", "q", "expires", "methods", "received", "params")


@_def("ct.fields", _REQ, True)
def _build_ct_fields(arg, index, name):
    f = (arg or "").strip().lower()
    if f not in _CT_FIELDS:
        raise PVError(f"unknown Contact field {arg!r} (one of "
                      f"{', '.join(_CT_FIELDS)})")

    def field_of(c):
        if c == "*":
            return None
        try:
            na = parse_nameaddr(c)
        except ValueError:
            return None
        if f == "name":
            return (na.display_raw or "").strip() or None
        if f == "uri":
            return na.uri
        if f == "params":
            return (na.params_str or "").lstrip(";").strip() or None
        v = na.param(f)
        return v or None

    def values(msg):
        return [field_of(c) for c in _contacts(msg)]
    return _index_getter(values, index), None


