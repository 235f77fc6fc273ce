"""SipMsg: the Python face of one parsed SIP message.

One C call (``sp_parse_msg``) splits the message, types every header, frames
the body and, unless ``check=False``, validates and parses the bodies of the
headers every SIP element needs (Via, From, To, CSeq, Call-ID, Contact,
Max-Forwards, Content-Length, Date, the Request-URI) into offset tables
inside one C struct.  Python objects are made only for what is read, on the
first read; other headers (Route, Authorization, Require, ...) are parsed
only when their accessor is used.

Changes are lumps recorded against the original buffer and applied once by
:meth:`SipMsg.build` (C ``sp_build``).
"""
import hashlib
import re

from ._core import (ffi, lib, strerror, HDR_OTHER_T, HDR_VIA_T, HDR_TO_T,
                    HDR_FROM_T, HDR_CSEQ_T, HDR_CALLID_T, HDR_CONTACT_T,
                    HDR_ROUTE_T, HDR_RECORDROUTE_T, HDR_PATH_T, HDR_CONTENTTYPE_T,
                    HDR_CONTENTLENGTH_T, HDR_EXPIRES_T, HDR_SUPPORTED_T,
                    HDR_REQUIRE_T, HDR_PROXYREQUIRE_T, HDR_UNSUPPORTED_T,
                    HDR_ALLOW_T, HDR_EVENT_T, HDR_AUTHORIZATION_T, HDR_PROXYAUTH_T,
                    HDR_WWW_AUTHENTICATE_T, HDR_PROXY_AUTHENTICATE_T, HDR_DATE_T,
                    HDR_MAXFORWARDS_T, HDR_TYPE_NAMES, LUMP_INS_BEFORE, LUMP_REPLACE,
                    LUMP_INS_AFTER, METHOD_NAMES, SIP_URI_T, SIPS_URI_T, TEL_URI_T,
                    TELS_URI_T)
from .uri import SipUri, _Text, _lazy, _split_params

__all__ = ["SipMsg", "ParseError", "Header", "Via", "NameAddr", "CSeq",
           "Credentials", "ReceiveInfo", "build_reply", "frame_length",
           "hdr_type", "REASONS"]

_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_FOLD = re.compile(r"[ \t]*\r?\n[ \t]*")
_QP = re.compile(r"\\(.)", re.S)
_MAX_PARAMS = 64
_params_scratch = ffi.new("sp_param[]", _MAX_PARAMS)
_out = [ffi.new("char[]", 1 << 16)]

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 421: "Extension Required", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class ParseError(ValueError):
    """A message that must not be processed.  ``code`` is the status the core
    answers a request with (400, 505, ...); 0 means drop it silently (a bad
    reply, or nothing to answer).  ``err`` is the C SP_E_* code and ``pos``
    the offset where it was found (-1 unknown)."""

    def __init__(self, code, reason, err=0, pos=-1):
        super().__init__(f"{code} {reason}" if code else f"drop: {reason}")
        self.code = code
        self.reason = reason
        self.err = err
        self.pos = pos


_type_cache = {}


def hdr_type(name) -> int:
    """The HDR_*_T code of a header name (compact forms included)."""
    t = _type_cache.get(name)
    if t is None:
        b = name.encode() if isinstance(name, str) else bytes(name)
        t = lib.sp_hdr_type(b, len(b))
        if len(_type_cache) < 1024:
            _type_cache[name] = t
    return t


def _unquote(s):
    if s and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return _QP.sub(r"\1", s[1:-1])
    return s


def _fold(s):
    return _FOLD.sub(" ", s) if "\n" in s else s


class ReceiveInfo:
    """Where a message came from (set by the transport layer as msg.rcv)."""
    __slots__ = ("src_ip", "src_port", "dst_ip", "dst_port", "proto", "socket")

    def __init__(self, src_ip=None, src_port=0, dst_ip=None, dst_port=0, proto=None,
                 socket=None):
        self.src_ip = src_ip
        self.src_port = src_port
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.proto = proto
        self.socket = socket

    def __repr__(self):
        return (f"ReceiveInfo({self.src_ip}:{self.src_port} -> "
                f"{self.dst_ip}:{self.dst_port} {self.proto})")


class Header:
    """One header line: ``name`` as written, ``type`` (HDR_*_T), ``body``
    (folding replaced by one SP), offsets ``start``/``end`` of the whole line
    and ``index`` in the message's header list."""
    __slots__ = ("name", "type", "body", "start", "end", "index")

    def __init__(self, name, type, body, start, end, index):
        self.name = name
        self.type = type
        self.body = body
        self.start = start
        self.end = end
        self.index = index

    @property
    def type_name(self):
        return HDR_TYPE_NAMES.get(self.type, "HDR_OTHER_T")

    def __repr__(self):
        return f"Header({self.name!r}, {self.type_name}, {self.body!r})"


class CSeq:
    __slots__ = ("num", "method", "method_id")

    def __init__(self, num, method, method_id):
        self.num = num
        self.method = method
        self.method_id = method_id

    def __repr__(self):
        return f"CSeq({self.num}, {self.method!r})"


class Via:
    """One Via value.  ``rport`` is None when absent, '' when present without
    a value; ``port`` is 0 when the sent-by has none."""

    def __init__(self, src, v, owner):
        self._src = src
        self._v = v
        self._owner = owner

    def _f(self, st):
        return self._src._opt(st)

    proto = _lazy(lambda self: self._f(self._v.proto))
    version = _lazy(lambda self: self._f(self._v.version))
    transport = _lazy(lambda self: self._f(self._v.transport).upper())
    host = _lazy(lambda self: self._f(self._v.host))
    port = _lazy(lambda self: int(self._v.port))
    branch = _lazy(lambda self: self._f(self._v.branch))
    received = _lazy(lambda self: self._f(self._v.received))
    rport = _lazy(lambda self: self._f(self._v.rport))
    maddr = _lazy(lambda self: self._f(self._v.maddr))
    ttl = _lazy(lambda self: self._f(self._v.ttl))
    params_str = _lazy(lambda self: self._f(self._v.params))
    hdr_index = _lazy(lambda self: int(self._v.hdr))
    start = _lazy(lambda self: int(self._v.start))
    end = _lazy(lambda self: int(self._v.end))

    @_lazy
    def params(self):
        """every param: dict name (lower-case) -> value ('' when none)"""
        return _params_of(self._src, self._v.params, ord(";"))

    def param(self, name):
        return self.params.get(name.lower())

    @property
    def text(self):
        return self._src._txt(self.start, self.end - self.start)

    def __repr__(self):
        return f"Via({self.text!r})"


class NameAddr:
    """A To/From/Contact/Route value.  ``display`` is unquoted and unescaped
    (``display_raw`` as written), ``uri`` the URI text, ``parsed_uri`` the
    parsed :class:`SipUri`; ``tag``/``expires``/``q`` header params; ``star``
    for ``Contact: *``."""

    def __init__(self, src, na, owner):
        self._src = src
        self._na = na
        self._owner = owner
        self.star = bool(na.star)

    def _f(self, st):
        return self._src._opt(st)

    display_raw = _lazy(lambda self: self._f(self._na.display))
    uri = _lazy(lambda self: self._f(self._na.uri))
    tag = _lazy(lambda self: self._f(self._na.tag))
    q = _lazy(lambda self: self._f(self._na.q))
    params_str = _lazy(lambda self: self._f(self._na.params))
    bracket = _lazy(lambda self: bool(self._na.bracket))
    hdr_index = _lazy(lambda self: int(self._na.hdr))
    start = _lazy(lambda self: int(self._na.start))
    end = _lazy(lambda self: int(self._na.end))

    @_lazy
    def display(self):
        return _unquote(self.display_raw)

    @_lazy
    def expires(self):
        """the expires param as int (None when absent or not a number;
        values past 32 bits are clamped to 2**32-1)"""
        v = self._f(self._na.expires)
        if v is None or not v.isdigit():
            return None
        return min(int(v), 0xFFFFFFFF)

    @_lazy
    def parsed_uri(self):
        st = self._na.uri
        if st.s < 0:
            return None
        u = ffi.new("sp_uri *")
        if lib.sp_parse_uri(self._src._buf, st.s, st.l, u) < 0:
            raise ParseError(400, "bad URI in " + repr(self.uri), lib.SP_E_URI, st.s)
        return SipUri(self._src, u, u)

    @_lazy
    def params(self):
        return _params_of(self._src, self._na.params, ord(";"))

    def param(self, name):
        return self.params.get(name.lower())

    @property
    def text(self):
        return self._src._txt(self.start, self.end - self.start)

    def __repr__(self):
        return "NameAddr(*)" if self.star else f"NameAddr({self.text!r})"


class Credentials:
    """An Authorization/Proxy-Authorization/WWW-Authenticate value:
    ``scheme`` and ``params`` (names lower-cased, quoted values unquoted);
    ``username``, ``realm``, ``nonce``, ``uri``, ``response``, ``algorithm``,
    ``cnonce``, ``opaque``, ``qop``, ``nc``, ``stale`` read the params."""
    __slots__ = ("scheme", "params", "raw")
    _FIELDS = ("username", "realm", "nonce", "uri", "response", "algorithm",
               "cnonce", "opaque", "qop", "nc", "stale", "domain")

    def __init__(self, scheme, params, raw):
        self.scheme = scheme
        self.params = params
        self.raw = raw

    def __getattr__(self, name):
        if name in Credentials._FIELDS:
            return self.params.get(name)
        raise AttributeError(name)

    def __repr__(self):
        return f"Credentials({self.scheme!r}, {self.params!r})"


def _params_of(src, st, sep):
    if st.s < 0:
        return {}
    return _parse_params(src, st.s, st.l, sep)


def _parse_params(src, s, l, sep):
    n = lib.sp_parse_params(src._buf, s, l, sep, _params_scratch, _MAX_PARAMS)
    if n < 0:
        raise ParseError(400, "bad parameters: " + strerror(n), n, s)
    out = {}
    for i in range(n):
        p = _params_scratch[i]
        name = src._txt(p.name.s, p.name.l).lower()
        v = p.value
        if name not in out:
            out[name] = _unquote(src._txt(v.s, v.l)) if v.s >= 0 else ""
    return out


class SipMsg(_Text):
    """One SIP message parsed from ``buf`` (one UDP datagram or one stream
    frame).  Raises :class:`ParseError`.  See docs/architecture.md for the
    contract; accessors are computed on first use and cached."""

    def __init__(self, buf, stream=False, check=True):
        if type(buf) is not bytes:
            buf = bytes(buf)
        m = _alloc("sp_msg *")
        rc = lib.sp_parse_msg(buf, len(buf), (1 if stream else 0) | (0 if check else 2), m)
        if rc:
            raise ParseError(m.err_status, strerror(rc), rc, m.err_pos)
        self._buf = buf
        self._t = buf.decode("ascii") if buf.isascii() else None
        self._m = m
        self.is_request = bool(m.is_request)
        # per-message state other layers set
        self.new_uri = None
        self.dst_uri = None
        self.flags = 0
        self.rcv = None
        self.force_send_socket = None
        self._lumpdata = None
        self._body_set = False

    # ---- first line ------------------------------------------------------
    @_lazy
    def method(self):
        """request method, or the CSeq method of a reply (OpenSIPS's $rm)"""
        m = self._m
        if m.is_request:
            st = m.method
            return self._txt(st.s, st.l)
        return self.cseq.method if self.cseq is not None else None

    @_lazy
    def method_id(self):
        return int(self._m.method_id)

    @_lazy
    def ruri(self):
        return self._opt(self._m.ruri)

    @_lazy
    def version(self):
        return self._opt(self._m.version)

    @_lazy
    def status(self):
        return int(self._m.status)

    @_lazy
    def reason(self):
        return self._opt(self._m.reason)

    @_lazy
    def parsed_uri(self):
        """the Request-URI as received, parsed (None for a reply)"""
        m = self._m
        if not m.is_request:
            return None
        if m.checked:
            return SipUri(self, m.ruri_parsed, m)
        u = ffi.new("sp_uri *")
        if lib.sp_parse_uri(self._buf, m.ruri.s, m.ruri.l, u) < 0:
            raise ParseError(400, "bad Request-URI", lib.SP_E_RURI, m.ruri.s)
        return SipUri(self, u, u)

    # ---- headers -----------------------------------------------------------
    @property
    def n_headers(self):
        return int(self._m.n_hdrs)

    @_lazy
    def headers(self):
        m = self._m
        out = []
        txt = self._txt
        for i in range(m.n_hdrs):
            h = m.hdrs[i]
            out.append(Header(txt(h.name.s, h.name.l), h.type,
                              _fold(txt(h.body.s, h.body.l)), h.start, h.end, i))
        return out

    def _index(self, name):
        t = hdr_type(name)
        if t != HDR_OTHER_T:
            return t, int(self._m.first[t])
        b = name.encode() if isinstance(name, str) else name
        return t, lib.sp_find_hdr(self._m, self._buf, t, b, len(b), 0)

    def _indexes(self, name):
        m = self._m
        t = hdr_type(name)
        if t != HDR_OTHER_T:
            if m.count[t] == 0:
                return []
            return [i for i in range(m.first[t], m.n_hdrs) if m.hdrs[i].type == t]
        b = name.encode() if isinstance(name, str) else name
        out = []
        i = lib.sp_find_hdr(m, self._buf, t, b, len(b), 0)
        while i >= 0:
            out.append(i)
            i = lib.sp_find_hdr(m, self._buf, t, b, len(b), i + 1)
        return out

    def _body_of(self, i):
        st = self._m.hdrs[i].body
        return _fold(self._txt(st.s, st.l))

    def hdr(self, name):
        """body of the first header called ``name`` (any case, compact forms
        included), None when there is none"""
        t, i = self._index(name)
        return None if i < 0 else self._body_of(i)

    def hdrs(self, name):
        """bodies of every header called ``name``, in order"""
        return [self._body_of(i) for i in self._indexes(name)]

    def hdrs_of_type(self, t):
        m = self._m
        return [i for i in range(m.n_hdrs) if m.hdrs[i].type == t]

    # ---- core headers ---------------------------------------------------------
    @_lazy
    def via(self):
        m = self._m
        if m.checked:
            return [Via(self, m.vias[i], m) for i in range(m.n_vias)]
        out = []
        for i in self.hdrs_of_type(HDR_VIA_T):
            arr = ffi.new("sp_via[]", lib.SP_MAX_VIAS)
            h = m.hdrs[i]
            n = lib.sp_parse_via(self._buf, h.body.s, h.body.l, i, arr, lib.SP_MAX_VIAS)
            if n < 0:
                raise ParseError(400, strerror(n), n, h.start)
            out.extend(Via(self, arr[k], arr) for k in range(n))
        return out

    @property
    def via1(self):
        v = self.via
        return v[0] if v else None

    def _nameaddr_list(self, t, list_ok=True, star_ok=False):
        m = self._m
        out = []
        for i in self.hdrs_of_type(t):
            h = m.hdrs[i]
            arr = ffi.new("sp_nameaddr[]", lib.SP_MAX_CONTACTS)
            n = lib.sp_parse_nameaddrs(self._buf, h.body.s, h.body.l, i, 1 if list_ok else 0,
                                       1 if star_ok else 0, arr, lib.SP_MAX_CONTACTS)
            if n < 0:
                raise ParseError(400, strerror(n) + " in " + HDR_TYPE_NAMES.get(t, "?"),
                                 n, h.start)
            out.extend(NameAddr(self, arr[k], arr) for k in range(n))
        return out

    @_lazy
    def from_(self):
        m = self._m
        if m.checked:
            return NameAddr(self, m.hfrom, m)
        v = self._nameaddr_list(HDR_FROM_T, False)
        return v[0] if v else None

    @_lazy
    def to(self):
        m = self._m
        if m.checked:
            return NameAddr(self, m.hto, m)
        v = self._nameaddr_list(HDR_TO_T, False)
        return v[0] if v else None

    @_lazy
    def callid(self):
        i = self._m.first[HDR_CALLID_T]
        return None if i < 0 else self._body_of(i)

    @_lazy
    def cseq(self):
        m = self._m
        if m.first[HDR_CSEQ_T] < 0:
            return None
        if m.cseq_method.s < 0:
            raise ParseError(400, "bad CSeq", lib.SP_E_CSEQ, -1)
        return CSeq(int(m.cseq_num), self._opt(m.cseq_method), int(m.cseq_method_id))

    @_lazy
    def contacts(self):
        """every Contact value (``Contact: *`` gives one NameAddr with star)"""
        m = self._m
        if m.checked:
            return [NameAddr(self, m.contacts[i], m) for i in range(m.n_contacts)]
        return self._nameaddr_list(HDR_CONTACT_T, True, True)

    @property
    def contact_star(self):
        return any(c.star for c in self.contacts)

    @_lazy
    def max_forwards(self):
        m = self._m
        if m.checked:
            return None if m.max_forwards < 0 else int(m.max_forwards)
        v = self.hdr("Max-Forwards")
        return int(v) if v is not None and v.isdigit() else None

    @_lazy
    def content_length(self):
        v = self._m.content_length
        return None if v < 0 else int(v)

    @_lazy
    def body(self):
        m = self._m
        return self._buf[m.body_s:m.body_s + m.body_l]

    @property
    def msg_len(self):
        """octets this message took in the buffer it was parsed from"""
        return int(self._m.msg_len)

    @_lazy
    def raw(self):
        return self._buf[:self._m.msg_len]

    # ---- other headers, parsed on demand ---------------------------------------------
    @_lazy
    def route(self):
        return self._nameaddr_list(HDR_ROUTE_T)

    @_lazy
    def record_route(self):
        return self._nameaddr_list(HDR_RECORDROUTE_T)

    @_lazy
    def path(self):
        return self._nameaddr_list(HDR_PATH_T)

    def _tokens(self, t):
        out = []
        for i in self.hdrs_of_type(t):
            out.extend(x.strip() for x in self._body_of(i).split(",") if x.strip())
        return out

    require = _lazy(lambda self: self._tokens(HDR_REQUIRE_T))
    proxy_require = _lazy(lambda self: self._tokens(HDR_PROXYREQUIRE_T))
    supported = _lazy(lambda self: self._tokens(HDR_SUPPORTED_T))
    unsupported = _lazy(lambda self: self._tokens(HDR_UNSUPPORTED_T))
    allow = _lazy(lambda self: self._tokens(HDR_ALLOW_T))

    @_lazy
    def content_type(self):
        i = self._m.first[HDR_CONTENTTYPE_T]
        return None if i < 0 else self._body_of(i)

    @_lazy
    def expires(self):
        """Expires header as int; None when absent; a value past 32 bits or
        not a number gives None (callers use their default)"""
        i = self._m.first[HDR_EXPIRES_T]
        if i < 0:
            return None
        h = self._m.hdrs[i]
        v = ffi.new("uint32_t *")
        if lib.sp_parse_uint(self._buf, h.body.s, h.body.l, v) < 0:
            return None
        return int(v[0])

    @_lazy
    def event(self):
        """(event package, params dict) of the Event header, or None"""
        i = self._m.first[HDR_EVENT_T]
        if i < 0:
            return None
        name, _, rest = self._body_of(i).partition(";")
        return name.strip(), {k.strip(): v.strip() for k, v in
                              _split_params(rest.replace(" ", "")).items()}

    @_lazy
    def date(self):
        i = self._m.first[HDR_DATE_T]
        return None if i < 0 else self._body_of(i)

    def _credentials(self, t):
        out = []
        m = self._m
        for i in self.hdrs_of_type(t):
            h = m.hdrs[i]
            s, l = h.body.s, h.body.l
            b = self._buf
            k = s
            while k < s + l and b[k] not in b" \t\r\n":
                k += 1
            scheme = self._txt(s, k - s)
            params = _parse_params(self, k, s + l - k, ord(",")) if k < s + l else {}
            out.append(Credentials(scheme, params, self._body_of(i)))
        return out

    authorization = _lazy(lambda self: self._credentials(HDR_AUTHORIZATION_T))
    proxy_authorization = _lazy(lambda self: self._credentials(HDR_PROXYAUTH_T))
    www_authenticate = _lazy(lambda self: self._credentials(HDR_WWW_AUTHENTICATE_T))
    proxy_authenticate = _lazy(lambda self: self._credentials(HDR_PROXY_AUTHENTICATE_T))

    # ---- checks the core turns into 416/420 ---------------------------------------
    def unsupported_proxy_require(self, supported=()):
        """Proxy-Require option tags not in ``supported`` (answer 420 listing
        them in Unsupported when not empty)"""
        sup = {s.lower() for s in supported}
        return [t for t in self.proxy_require if t.lower() not in sup]

    def unsupported_require(self, supported=()):
        """Require option tags not in ``supported`` (a UAS answers 420)"""
        sup = {s.lower() for s in supported}
        return [t for t in self.require if t.lower() not in sup]

    def ruri_scheme_supported(self, schemes=("sip", "sips", "tel", "tels")):
        """False when the Request-URI's scheme is not one of ``schemes``
        (answer 416 Unsupported URI Scheme)"""
        u = self.parsed_uri
        return u is not None and u.scheme in schemes

    # ---- lumps ----------------------------------------------------------------------
    def _lump(self, kind, off, delete, data):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        ld = self._lumpdata
        if ld is None:
            ld = self._lumpdata = bytearray()
        ds = len(ld)
        ld += data
        rc = lib.sp_lump_add(self._m, kind, off, delete, ds, len(data))
        if rc:
            del ld[ds:]
            raise ValueError(f"lump at {off} (+{delete}): {strerror(rc)}")

    def insert_before(self, off, data):
        """insert ``data`` at ``off``, ahead of anything else placed there"""
        self._lump(LUMP_INS_BEFORE, off, 0, data)

    def insert_after(self, off, data):
        """insert ``data`` at ``off``, after other text placed there (and after
        the replacement text of a change starting there)"""
        self._lump(LUMP_INS_AFTER, off, 0, data)

    def delete(self, off, length):
        self._lump(LUMP_REPLACE, off, length, b"")

    def replace(self, off, length, data):
        self._lump(LUMP_REPLACE, off, length, data)

    @property
    def n_lumps(self):
        return int(self._m.n_lumps)

    @property
    def hdrs_start(self):
        return int(self._m.first_line_end)

    @property
    def hdrs_end(self):
        """offset of the empty line that ends the header section"""
        return int(self._m.hdrs_end)

    def add_via(self, value):
        """add a Via value on top (``SIP/2.0/UDP host;branch=...``)"""
        m = self._m
        i = m.first[HDR_VIA_T]
        off = m.hdrs[i].start if i >= 0 else m.first_line_end
        self.insert_before(off, b"Via: " + _b(value) + b"\r\n")

    def remove_via(self):
        """remove the first Via value (the whole line when it is alone)"""
        vias = self.via
        if not vias:
            raise ValueError("no Via to remove")
        v0 = vias[0]
        m = self._m
        if len(vias) > 1 and vias[1].hdr_index == v0.hdr_index:
            self.delete(v0.start, vias[1].start - v0.start)
        else:
            h = m.hdrs[v0.hdr_index]
            self.delete(h.start, h.end - h.start)

    def add_record_route(self, value):
        """add ``Record-Route: value`` at the top (after a Via added on top)"""
        self.insert_after(self._m.first_line_end, b"Record-Route: " + _b(value) + b"\r\n")

    def insert_hdr(self, text):
        """insert header line(s) at the top of the header section"""
        self.insert_after(self._m.first_line_end, _line(text))

    def append_hdr(self, text):
        """append header line(s) at the end of the header section"""
        self.insert_before(self._m.hdrs_end, _line(text))

    def remove_hdr(self, name):
        """remove every header called ``name``; returns how many"""
        idx = self._indexes(name)
        m = self._m
        for i in idx:
            h = m.hdrs[i]
            self.delete(h.start, h.end - h.start)
        return len(idx)

    def set_hdr_body(self, name, value):
        """replace the body of the first header called ``name``"""
        t, i = self._index(name)
        if i < 0:
            raise KeyError(name)
        h = self._m.hdrs[i]
        self.replace(h.body.s, h.body.l, _b(value))

    def set_body(self, body, content_type=None):
        """replace the body; Content-Length (and Content-Type when given)
        follow"""
        if self._body_set:
            raise ValueError("body already replaced")
        body = _b(body)
        m = self._m
        self.replace(m.body_s, m.body_l, body)
        self._set_or_append(HDR_CONTENTLENGTH_T, "Content-Length", str(len(body)))
        if content_type is not None:
            self._set_or_append(HDR_CONTENTTYPE_T, "Content-Type", content_type)
        self._body_set = True

    def _set_or_append(self, t, name, value):
        m = self._m
        i = m.first[t]
        if i >= 0:
            h = m.hdrs[i]
            self.replace(h.body.s, h.body.l, _b(value))
        else:
            self.append_hdr(f"{name}: {value}")

    def build(self):
        """the outgoing bytes: the message with every lump applied, the
        Request-URI replaced by ``new_uri`` when set, Content-Length added
        when the message had none"""
        m = self._m
        saved = (m.n_lumps, m.lump_seq, m.lump_bytes)
        ld = self._lumpdata
        saved_ld = len(ld) if ld is not None else 0
        try:
            if self.new_uri is not None and m.is_request:
                self.replace(m.ruri.s, m.ruri.l, _b(self.new_uri))
            if m.content_length < 0 and not self._body_set:
                self.append_hdr(f"Content-Length: {m.body_l}")
            ld = self._lumpdata
            size = m.msg_len + m.lump_bytes
            out = _out[0]
            if len(out) < size:
                out = _out[0] = ffi.new("char[]", max(size, 2 * len(out)))
            n = lib.sp_build(m, self._buf, ffi.from_buffer(ld) if ld else ffi.NULL,
                             out, len(out))
            if n < 0:
                raise ValueError("build: " + strerror(n))
            return ffi.unpack(out, n)
        finally:
            m.n_lumps, m.lump_seq, m.lump_bytes = saved
            if ld is not None:
                del ld[saved_ld:]

    build_request = build

    def build_reply(self, code, reason=None, to_tag=None, headers=(), body=b""):
        return build_reply(self, code, reason, to_tag, headers, body)

    def __repr__(self):
        if self.is_request:
            return f"<SipMsg {self.method} {self.ruri}>"
        return f"<SipMsg {self.status} {self.reason}>"


def _b(v):
    return v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)


def _line(text):
    b = _b(text)
    return b if b.endswith(b"\r\n") else b + b"\r\n"


def _default_to_tag(msg):
    f = msg.from_
    v = msg.via1
    key = "|".join((msg.callid or "", f.tag or "" if f else "",
                    v.branch or "" if v else "", str(msg.cseq.num if msg.cseq else "")))
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def build_reply(msg, code, reason=None, to_tag=None, headers=(), body=b""):
    """A reply to request ``msg`` (RFC 3261 8.2.6): status line, the Via
    headers, From, To (with ``to_tag`` added when the request's To has none
    and code > 100; a stable tag is made when none is given), Call-ID, CSeq,
    then ``headers`` (str/bytes lines, or one block), Content-Length, body."""
    if not msg.is_request:
        raise ValueError("cannot reply to a reply")
    if reason is None:
        reason = REASONS.get(code, "Unknown")
    if to_tag is None and code > 100:
        to_tag = _default_to_tag(msg)
    rb = _b(reason)
    tb = _b(to_tag) if to_tag else b""
    if isinstance(headers, (str, bytes)):
        eb = _b(headers)
    else:
        eb = b"".join(_line(h) for h in headers)
    bb = _b(body)
    m = msg._m
    size = 64 + len(rb) + len(tb) + len(eb) + len(bb) + m.hdrs_end
    out = ffi.new("char[]", size)
    n = lib.sp_build_reply(m, msg._buf, code, rb, len(rb), tb, len(tb), eb, len(eb),
                           bb, len(bb), out, size)
    if n < 0:
        raise ValueError("build_reply: " + strerror(n))
    return ffi.unpack(out, n)


def frame_length(buf) -> int:
    """For a stream: how many octets the first message in ``buf`` takes
    (leading CRLFs included); 0 when more data is needed.  Raises
    :class:`ParseError` (code 400) on a framing error (bad or missing
    Content-Length), after which the connection should be closed."""
    b = buf if type(buf) is bytes else bytes(buf)
    n = lib.sp_frame(b, len(b))
    if n < 0:
        raise ParseError(400, strerror(n), n, -1)
    return n


def method_name(method_id):
    return METHOD_NAMES.get(method_id)


# URI type names re-exported for users of NameAddr.parsed_uri
URI_SIP_TYPES = (SIP_URI_T, SIPS_URI_T)
URI_TEL_TYPES = (TEL_URI_T, TELS_URI_T)
