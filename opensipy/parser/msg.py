"""SipMsg: the Python face of one parsed SIP message.

One C call (``sp_parse_msg``) splits the message, types every header, frames
the body and, unless ``check=False``, validates and parses the bodies of the
headers every SIP element needs (Via, From, To, CSeq, Call-ID, Contact,
Max-Forwards, Content-Length, Date, the Request-URI) into offset tables
inside one C struct.  Python reads those offsets through one int32
memoryview and makes objects only for what is read, on the first read; other
headers (Route, Authorization, Require, ...) are parsed only when their
accessor is used.

Changes are lumps recorded against the original buffer and applied once by
:meth:`SipMsg.build` (C ``sp_build``).

The parser package by concept: ``layout`` (the C offsets), ``headers`` (the
views over parts of a message), this module (SipMsg and its lumps),
``build`` (replies and the checks on caller text).  The names other layers
import from here stay here.
"""
import re
from ._core import (ffi, lib, strerror, HDR_OTHER_T, HDR_VIA_T, HDR_TO_T,
                    HDR_FROM_T, HDR_CSEQ_T, HDR_CALLID_T, HDR_CONTACT_T,
                    HDR_ROUTE_T, HDR_RECORDROUTE_T, HDR_PATH_T,
                    HDR_CONTENTTYPE_T, HDR_CONTENTLENGTH_T, HDR_EXPIRES_T,
                    HDR_SUPPORTED_T, HDR_REQUIRE_T, HDR_PROXYREQUIRE_T,
                    HDR_UNSUPPORTED_T, HDR_ALLOW_T, HDR_EVENT_T,
                    HDR_AUTHORIZATION_T, HDR_PROXYAUTH_T,
                    HDR_WWW_AUTHENTICATE_T, HDR_PROXY_AUTHENTICATE_T,
                    HDR_DATE_T, HDR_TYPE_NAMES, LUMP_INS_BEFORE, LUMP_REPLACE,
                    LUMP_INS_AFTER, SIP_URI_T, SIPS_URI_T, TEL_URI_T,
                    TELS_URI_T)
from .uri import (SipUri, _View, _U, _lazy, int_view, strprop, intprop,
                  split_params, uri_at)
from .layout import (_HS, _H_BODY, _H_END, _H_NAME, _H_START, _H_TYPE,
                     _MAX_NA, _MAX_VIAS, _M_body_l, _M_body_s, _M_checked,
                     _M_contacts, _M_content_length, _M_count, _M_cseq_method,
                     _M_cseq_method_id, _M_cseq_num, _M_first,
                     _M_first_line_end, _M_hdrs, _M_hdrs_end, _M_hfrom,
                     _M_hto, _M_is_request, _M_max_forwards, _M_method,
                     _M_method_id, _M_msg_len, _M_n_contacts, _M_n_hdrs,
                     _M_n_lumps, _M_n_vias, _M_reason, _M_ruri,
                     _M_ruri_parsed, _M_status, _M_version, _M_vias, _NS, _VS,
                     _V, _alloc, _tuple_new, _uint, out_buffer)
from .headers import (CSeq, Credentials, Header, NameAddr, ParseError, Via,
                      _fold, _parse_params, _type_cache, hdr_type)
from .build import (_RURI_BAD, _b, _line, build_reply)

__all__ = ["SipMsg", "ParseError", "Header", "Via", "NameAddr", "CSeq",
           "Credentials", "ReceiveInfo", "build_reply", "frame_length",
           "hdr_type", "method_name", "REASONS", "check_reason",
           "check_hdr_lines"]


_MSG_PTR = ffi.typeof("sp_msg *")
_parse = lib.sp_parse_msg
_buffer = ffi.buffer
_memoryview = memoryview
_F_STREAM = lib.SP_F_STREAM
_F_NOCHECK = lib.SP_F_NOCHECK
_FIRST = _M_first
_COUNT = _M_count
_HDRS = _M_hdrs
_NHDRS = _M_n_hdrs
_CHECKED = _M_checked
_ISREQ = _M_is_request
# the top Via's and the parsed R-URI's port fields (plain_ports)
_VP_PORT = _M_vias + _V["port"]
_VP_PORT_S = _M_vias + _V["port_s"]
_VP_RPORT = _M_vias + _V["rport"]
_HDR_MAXFWD = lib.HDR_MAXFORWARDS_T
_UP_TYPE = _M_ruri_parsed + _U["type"]
_UP_PORT = _M_ruri_parsed + _U["port"]
_UP_PORT_S = _M_ruri_parsed + _U["port_s"]

_SCHEMES = ("sip", "sips", "tel", "tels")
_SCHEME_TYPES = frozenset((SIP_URI_T, SIPS_URI_T, TEL_URI_T, TELS_URI_T))


class SipMsg(_View):
    """One SIP message parsed from ``buf`` (one UDP datagram, or one stream
    frame when ``stream``).  Raises :class:`ParseError`.  ``check=False``
    only splits the headers (bodies are then parsed on first use).  See
    docs/architecture.md for the contract."""

    # slots for the fields every message has (fast, and the instance dict
    # stays small); other layers may still add attributes (msg.avps, ...)
    __slots__ = ("_buf", "_t", "_m", "_iv", "_via", "_via1", "_from", "_to",
                 "_contacts", "_puri",
                 "_cseq", "_headers", "_lumpdata", "_body_set",
                 # per-message state other layers set
                 "new_uri", "dst_uri", "flags", "rcv", "force_send_socket",
                 # read off the parser's result once (every layer asks)
                 "is_request", "method_id")
    _b = 0

    def __init__(self, buf, stream=False, check=True):
        if type(buf) is not bytes:
            buf = bytes(buf)
        m = _alloc(_MSG_PTR)
        rc = _parse(buf, len(buf), (_F_STREAM if stream else 0) | (0 if check else _F_NOCHECK), m)
        if rc:
            raise ParseError(m.err_status, strerror(rc), rc, m.err_pos)
        self._buf = buf
        self._t = buf.decode("ascii") if buf.isascii() else None
        self._m = m
        iv = self._iv = _memoryview(_buffer(m)).cast("i")
        self.is_request = iv[_ISREQ] != 0
        # METHOD_* of the request (or of a reply's CSeq)
        self.method_id = iv[_M_method_id]
        self._via = self._from = self._to = self._contacts = self._puri = self._cseq = None
        self._via1 = None
        self._headers = self._lumpdata = None
        self._body_set = False
        self.new_uri = self.dst_uri = self.rcv = self.force_send_socket = None
        self.flags = 0

    # ---- first line ------------------------------------------------------
    @property
    def method(self):
        """request method, or the CSeq method of a reply (OpenSIPS's $rm)"""
        if self._iv[_ISREQ]:
            return self._str(_M_method)
        cs = self.cseq
        return cs.method if cs is not None else None

    ruri = strprop(_M_ruri, "the Request-URI as received")
    version = strprop(_M_version)
    status = intprop(_M_status, "status code of a reply (0 for a request)")
    reason = strprop(_M_reason)

    def plain_ports(self):
        """True when a checked request's top Via and parsed R-URI need no
        port check: each names a non-zero port or none, and the Via's
        ``rport`` is absent or empty.  False means: look closer (the
        receive path's port checks do)."""
        iv = self._iv
        if not iv[_CHECKED] or not iv[_ISREQ] or not iv[_M_n_vias]:
            return False
        return ((iv[_VP_PORT] != 0 or iv[_VP_PORT_S] < 0)
                and (iv[_VP_RPORT] < 0 or iv[_VP_RPORT + 1] == 0)
                and (iv[_UP_PORT] != 0 or iv[_UP_PORT_S] < 0))

    @property
    def parsed_uri(self):
        """the Request-URI as received, parsed (None for a reply)"""
        u = self._puri
        if u is None:
            iv = self._iv
            if not iv[_ISREQ]:
                return None
            if iv[_CHECKED]:
                u = SipUri(self._buf, self._t, iv, _M_ruri_parsed)
            else:
                u = uri_at(self._buf, self._t, iv[_M_ruri], iv[_M_ruri + 1])
                if u is None:
                    raise ParseError(400, "bad Request-URI", lib.SP_E_RURI, iv[_M_ruri])
            self._puri = u
        return u

    # ---- headers -----------------------------------------------------------
    @property
    def n_headers(self):
        return self._iv[_NHDRS]

    @property
    def headers(self):
        """every header line, in order (list of :class:`Header`)"""
        hs = self._headers
        if hs is None:
            iv = self._iv
            txt = self._txt
            hs = []
            for i in range(iv[_NHDRS]):
                b = _HDRS + i * _HS
                hs.append(Header(txt(iv[b + _H_NAME], iv[b + _H_NAME + 1]), iv[b + _H_TYPE],
                                 _fold(txt(iv[b + _H_BODY], iv[b + _H_BODY + 1])),
                                 iv[b + _H_START], iv[b + _H_END], i))
            self._headers = hs
        return hs

    def _index(self, name):
        t = _type_cache.get(name)          # hdr_type(), its cache inline
        if t is None:
            t = hdr_type(name)
        if t != HDR_OTHER_T:
            return t, self._iv[_FIRST + t]
        b = name.encode() if isinstance(name, str) else name
        return t, lib.sp_find_hdr(self._m, self._buf, t, b, len(b), 0)

    def _indexes(self, name):
        t = hdr_type(name)
        if t != HDR_OTHER_T:
            return self.hdrs_of_type(t)
        b = name.encode() if isinstance(name, str) else name
        out = []
        m = self._m
        i = lib.sp_find_hdr(m, self._buf, t, b, len(b), 0)
        while i >= 0:
            out.append(i)
            i = lib.sp_find_hdr(m, self._buf, t, b, len(b), i + 1)
        return out

    def hdrs_of_type(self, t):
        """indexes of the headers of type ``t`` (HDR_*_T)"""
        iv = self._iv
        if iv[_COUNT + t] == 0:
            return []
        return [i for i in range(iv[_FIRST + t], iv[_NHDRS]) if iv[_HDRS + i * _HS] == t]

    def _span(self, i):
        b = _HDRS + i * _HS + _H_BODY
        return self._iv[b], self._iv[b + 1]

    def _body_of(self, i):
        iv = self._iv
        b = _HDRS + i * _HS + _H_BODY
        return _fold(self._txt(iv[b], iv[b + 1]))

    def hdr(self, name):
        """body of the first header called ``name`` (any case, compact forms
        included), None when there is none"""
        t = _type_cache.get(name)          # hdr_type(), its cache inline
        if t is None:
            t = hdr_type(name)
        if t != HDR_OTHER_T:
            i = self._iv[_FIRST + t]
        else:
            i = self._index(name)[1]
        if i < 0:
            return None
        iv = self._iv
        b = _HDRS + i * _HS + _H_BODY
        s = self._txt(iv[b], iv[b + 1])
        return _fold(s) if "\n" in s else s      # _body_of, inline

    def hdrs(self, name):
        """bodies of every header called ``name``, in order"""
        return [self._body_of(i) for i in self._indexes(name)]

    # ---- core headers ---------------------------------------------------------
    @property
    def via(self):
        """every Via value, top first (list of :class:`Via`)"""
        v = self._via
        if v is None:
            iv = self._iv
            if iv[_CHECKED]:
                buf, t, base = self._buf, self._t, _M_vias
                v = []
                for k in range(iv[_M_n_vias]):
                    v.append(Via(buf, t, iv, base + k * _VS))
            else:
                v = self._parse_vias()
            self._via = v
        return v

    def _parse_vias(self):
        out = []
        for i in self.hdrs_of_type(HDR_VIA_T):
            arr = ffi.new("sp_via[]", _MAX_VIAS)
            s, l = self._span(i)
            n = lib.sp_parse_via(self._buf, len(self._buf), s, l, i, arr, _MAX_VIAS)
            if n < 0:
                raise ParseError(400, strerror(n), n, s)
            av = int_view(arr)
            out.extend(Via(self._buf, self._t, av, k * _VS) for k in range(n))
        return out

    @property
    def via1(self):
        """the top Via value (OpenSIPS's via1), without building the list"""
        v = self._via
        if v is not None:
            return v[0] if v else None
        v = self._via1
        if v is not None:
            return v
        iv = self._iv
        if iv[_CHECKED]:
            if not iv[_M_n_vias]:
                return None
            v = self._via1 = Via(self._buf, self._t, iv, _M_vias)
            return v
        v = self.via
        return v[0] if v else None

    def _nameaddr_list(self, t, list_ok=True, star_ok=False):
        out = []
        for i in self.hdrs_of_type(t):
            s, l = self._span(i)
            arr = ffi.new("sp_nameaddr[]", _MAX_NA)
            n = lib.sp_parse_nameaddrs(self._buf, len(self._buf), s, l, i, 1 if list_ok else 0,
                                       1 if star_ok else 0, arr, _MAX_NA)
            if n < 0:
                raise ParseError(400, strerror(n) + " in " + HDR_TYPE_NAMES.get(t, "?"),
                                 n, s)
            av = int_view(arr)
            out.extend(NameAddr(self._buf, self._t, av, k * _NS) for k in range(n))
        return out

    @property
    def from_(self):
        f = self._from
        if f is None:
            if self._iv[_CHECKED]:
                f = NameAddr(self._buf, self._t, self._iv, _M_hfrom)
            else:
                v = self._nameaddr_list(HDR_FROM_T, False)
                f = v[0] if v else None
            self._from = f
        return f

    @property
    def to(self):
        f = self._to
        if f is None:
            if self._iv[_CHECKED]:
                f = NameAddr(self._buf, self._t, self._iv, _M_hto)
            else:
                v = self._nameaddr_list(HDR_TO_T, False)
                f = v[0] if v else None
            self._to = f
        return f

    @_lazy
    def callid(self):
        """the Call-ID (read once: the reply path and modules ask again)"""
        i = self._iv[_FIRST + HDR_CALLID_T]
        return None if i < 0 else self._body_of(i)

    @property
    def cseq(self):
        c = self._cseq
        if c is None:
            iv = self._iv
            if iv[_FIRST + HDR_CSEQ_T] < 0:
                return None
            if iv[_M_cseq_method] < 0:
                raise ParseError(400, "bad CSeq", lib.SP_E_CSEQ, -1)
            c = self._cseq = _tuple_new(CSeq, (iv[_M_cseq_num] & 0xFFFFFFFF,
                                               self._str(_M_cseq_method),
                                               iv[_M_cseq_method_id]))
        return c

    @property
    def contacts(self):
        """every Contact value (``Contact: *`` gives one NameAddr with star)"""
        c = self._contacts
        if c is None:
            iv = self._iv
            if iv[_CHECKED]:
                buf, t, base = self._buf, self._t, _M_contacts
                c = []
                for k in range(iv[_M_n_contacts]):
                    c.append(NameAddr(buf, t, iv, base + k * _NS))
            else:
                c = self._nameaddr_list(HDR_CONTACT_T, True, True)
            self._contacts = c
        return c

    @property
    def contact_star(self):
        return any(c.star for c in self.contacts)

    @property
    def max_forwards(self):
        iv = self._iv
        if iv[_CHECKED]:
            v = iv[_M_max_forwards]
            return None if v < 0 else v
        v = self.hdr("Max-Forwards")
        return int(v) if v is not None and v.isdigit() else None

    def max_forwards_span(self):
        """(value, body offset, body length) of the first Max-Forwards of a
        checked message, the value as the parser read it (digits only);
        None when the message was not checked or has no Max-Forwards."""
        iv = self._iv
        if not iv[_CHECKED]:
            return None
        i = iv[_FIRST + _HDR_MAXFWD]
        if i < 0:
            return None
        b = _HDRS + i * _HS + _H_BODY
        return iv[_M_max_forwards], iv[b], iv[b + 1]

    @property
    def content_length(self):
        v = self._iv[_M_content_length]
        return None if v < 0 else v

    @_lazy
    def body(self):
        iv = self._iv
        s = iv[_M_body_s]
        return self._buf[s:s + iv[_M_body_l]]

    @property
    def msg_len(self):
        """octets this message took in the buffer it was parsed from"""
        return self._iv[_M_msg_len]

    @_lazy
    def raw(self):
        return self._buf[:self._iv[_M_msg_len]]

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

    @property
    def content_type(self):
        i = self._iv[_FIRST + HDR_CONTENTTYPE_T]
        return None if i < 0 else self._body_of(i)

    @property
    def expires(self):
        """Expires header as int; None when absent; a value past 32 bits or
        not a number gives None (callers use their default)"""
        i = self._iv[_FIRST + HDR_EXPIRES_T]
        if i < 0:
            return None
        s, l = self._span(i)
        if lib.sp_parse_uint(self._buf, len(self._buf), s, l, _uint) < 0:
            return None
        return int(_uint[0])

    @_lazy
    def event(self):
        """(event package, params dict) of the Event header, or None"""
        i = self._iv[_FIRST + HDR_EVENT_T]
        if i < 0:
            return None
        name, _, rest = self._body_of(i).partition(";")
        return name.strip(), split_params(re.sub(r"\s+", "", rest))

    @property
    def date(self):
        i = self._iv[_FIRST + HDR_DATE_T]
        return None if i < 0 else self._body_of(i)

    def _credentials(self, t):
        out = []
        b = self._buf
        for i in self.hdrs_of_type(t):
            s, l = self._span(i)
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
        if not self._iv[_COUNT + HDR_PROXYREQUIRE_T]:
            return []                 # no Proxy-Require (nearly every request)
        sup = {s.lower() for s in supported}
        return [t for t in self.proxy_require if t.lower() not in sup]

    def unsupported_require(self, supported=()):
        """Require option tags not in ``supported`` (a UAS answers 420)"""
        if not self._iv[_COUNT + HDR_REQUIRE_T]:
            return []
        sup = {s.lower() for s in supported}
        return [t for t in self.require if t.lower() not in sup]

    def ruri_scheme_supported(self, schemes=_SCHEMES):
        """False when the Request-URI's scheme is not one of ``schemes``
        (answer 416 Unsupported URI Scheme)"""
        if schemes is _SCHEMES:
            iv = self._iv
            if iv[_CHECKED] and iv[_ISREQ]:
                # the parser typed the R-URI by these very schemes (any
                # case): read the type off its result, no URI object
                return iv[_UP_TYPE] in _SCHEME_TYPES
        u = self.parsed_uri
        if u is None:
            return False
        if schemes is _SCHEMES:
            # the parser typed the URI by these very schemes (any case)
            return u.type in _SCHEME_TYPES
        return u.scheme in schemes

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
        """remove ``length`` octets of the original from ``off``"""
        self._lump(LUMP_REPLACE, off, length, b"")

    def replace(self, off, length, data):
        """replace ``length`` octets of the original from ``off`` by ``data``"""
        self._lump(LUMP_REPLACE, off, length, data)

    def lump_checkpoint(self):
        """a token for :meth:`lump_rollback`: take back every lump added
        after this point (all-or-nothing edits)"""
        return self._m.n_lumps

    def lump_rollback(self, checkpoint):
        """drop the lumps added since ``checkpoint``; the C side checks the
        token against the lumps recorded and recomputes its counters, so a
        stale or foreign token raises ValueError and changes nothing"""
        if type(checkpoint) is not int:
            raise ValueError(f"bad lump checkpoint {checkpoint!r}")
        keep = lib.sp_lump_rollback(self._m, checkpoint)
        if keep < 0:
            raise ValueError(f"bad lump checkpoint {checkpoint!r}: "
                             f"{self._m.n_lumps} lumps recorded")
        if self._lumpdata is not None:
            del self._lumpdata[keep:]

    def lumps(self):
        """the recorded changes: list of (kind, off, removed, data)"""
        m = self._m
        ld = bytes(self._lumpdata or b"")
        out = []
        for i in range(m.n_lumps):
            lp = m.lumps[i]
            out.append((lp.kind, lp.off, getattr(lp, "del"), ld[lp.data_s:lp.data_s + lp.data_l]))
        return out

    @property
    def n_lumps(self):
        return self._iv[_M_n_lumps]

    @property
    def hdrs_start(self):
        """offset of the first header line"""
        return self._iv[_M_first_line_end]

    @property
    def hdrs_end(self):
        """offset of the empty line that ends the header section"""
        return self._iv[_M_hdrs_end]

    def add_via(self, value):
        """add a Via value on top (``SIP/2.0/UDP host;branch=...``)"""
        iv = self._iv
        i = iv[_FIRST + HDR_VIA_T]
        off = iv[_HDRS + i * _HS + _H_START] if i >= 0 else iv[_M_first_line_end]
        self._lump(LUMP_INS_BEFORE, off, 0, b"Via: " + _b(value) + b"\r\n")

    def remove_via(self):
        """remove the first Via value (the whole line when it is alone)"""
        vias = self.via
        if not vias:
            raise ValueError("no Via to remove")
        v0 = vias[0]
        if len(vias) > 1 and vias[1].hdr_index == v0.hdr_index:
            self.delete(v0.start, vias[1].start - v0.start)
        else:
            b = _HDRS + v0.hdr_index * _HS
            s = self._iv[b + _H_START]
            self.delete(s, self._iv[b + _H_END] - s)

    def add_record_route(self, value):
        """add ``Record-Route: value`` at the top (after a Via added on top)"""
        self._lump(LUMP_INS_AFTER, self._iv[_M_first_line_end], 0,
                   b"Record-Route: " + _b(value) + b"\r\n")

    def insert_hdr(self, text):
        """insert header line(s) at the top of the header section"""
        self.insert_after(self._iv[_M_first_line_end], _line(text))

    def append_hdr(self, text):
        """append header line(s) at the end of the header section"""
        self.insert_before(self._iv[_M_hdrs_end], _line(text))

    def remove_hdr(self, name):
        """remove every header called ``name``; returns how many"""
        idx = self._indexes(name)
        iv = self._iv
        for i in idx:
            b = _HDRS + i * _HS
            self.delete(iv[b + _H_START], iv[b + _H_END] - iv[b + _H_START])
        return len(idx)

    def set_hdr_body(self, name, value):
        """replace the body of the first header called ``name``"""
        t, i = self._index(name)
        if i < 0:
            raise KeyError(name)
        b = _HDRS + i * _HS + _H_BODY
        self._lump(LUMP_REPLACE, self._iv[b], self._iv[b + 1], _b(value))

    def set_body(self, body, content_type=None):
        """replace the body; Content-Length (and Content-Type when given)
        follow"""
        if self._body_set:
            raise ValueError("body already replaced")
        body = _b(body)
        iv = self._iv
        self.replace(iv[_M_body_s], iv[_M_body_l], body)
        self._set_or_append(HDR_CONTENTLENGTH_T, "Content-Length", str(len(body)))
        if content_type is not None:
            self._set_or_append(HDR_CONTENTTYPE_T, "Content-Type", content_type)
        self._body_set = True

    def _set_or_append(self, t, name, value):
        i = self._iv[_FIRST + t]
        if i >= 0:
            s, l = self._span(i)
            self.replace(s, l, _b(value))
        else:
            self.append_hdr(f"{name}: {value}")

    def build(self):
        """the outgoing bytes: the message with every lump applied, the
        Request-URI replaced by ``new_uri`` when set, Content-Length added
        when the message had none.  The lumps stay: build() can run again."""
        m = self._m
        iv = self._iv
        extra = self.new_uri is not None or iv[_M_content_length] < 0
        if extra:
            saved = self.lump_checkpoint()
        try:
            if self.new_uri is not None and iv[_ISREQ]:
                nu = _b(self.new_uri)
                if _RURI_BAD.search(nu) is not None:
                    raise ValueError(f"build: the Request-URI {nu!r} holds "
                                     f"whitespace or a control character")
                self.replace(iv[_M_ruri], iv[_M_ruri + 1], nu)
            if iv[_M_content_length] < 0 and not self._body_set:
                self.append_hdr(f"Content-Length: {iv[_M_body_l]}")
            ld = self._lumpdata
            size = iv[_M_msg_len] + m.lump_bytes
            out = out_buffer(size)
            n = lib.sp_build(m, self._buf, len(self._buf),
                             ffi.from_buffer(ld) if ld else ffi.NULL, len(ld) if ld else 0,
                             out, len(out))
            if n < 0:
                raise ValueError("build: " + strerror(n))
            return ffi.buffer(out, n)[:]
        finally:
            if extra:
                self.lump_rollback(saved)

    build_request = build

    def build_reply(self, code, reason=None, to_tag=None, headers=(), body=b""):
        """a reply to this request: see :func:`build_reply`"""
        return build_reply(self, code, reason, to_tag, headers, body)

    def __repr__(self):
        if self.is_request:
            return f"<SipMsg {self.method} {self.ruri}>"
        return f"<SipMsg {self.status} {self.reason}>"



# also re-exported: callers import these from opensipy.parser.msg
from .headers import REASONS, ReceiveInfo, method_name  # noqa: E402,F401
from .build import (check_hdr_lines, check_reason,  # noqa: E402,F401
                    frame_length)
