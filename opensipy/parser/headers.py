"""The views over a parsed message's parts: ParseError, REASONS, header
types, ReceiveInfo, Header, CSeq, Via, NameAddr, Credentials (objects made
only when read, over the C parser's offset tables)."""
from operator import itemgetter as _itemgetter
from ._core import lib, strerror, HDR_TYPE_NAMES, METHOD_NAMES
from .uri import _View, _lazy, strprop, intprop, uri_at
from .layout import (_FOLD, _MAX_PARAMS, _N, _QP, _V, _params_iv,
                     _params_scratch, _tuple_new)


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


def method_name(method_id):
    return METHOD_NAMES.get(method_id)


def _unquote(s):
    if s and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return _QP.sub(r"\1", s[1:-1])
    return s


def _fold(s):
    return _FOLD.sub(" ", s) if "\n" in s else s


class ReceiveInfo:
    """Where a message came from (the transport layer sets it as msg.rcv)."""
    __slots__ = ("src_ip", "src_port", "dst_ip", "dst_port", "proto", "socket",
                 "conn_id")

    def __init__(self, src_ip=None, src_port=0, dst_ip=None, dst_port=0, proto=None,
                 socket=None, conn_id=0):
        self.src_ip = src_ip
        self.src_port = src_port
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.proto = proto
        self.socket = socket
        self.conn_id = conn_id     # the TCP connection it came on (0: none)

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


class CSeq(tuple):
    """(num, method, method_id) of the CSeq header"""
    __slots__ = ()
    num = property(_itemgetter(0))
    method = property(_itemgetter(1))
    method_id = property(_itemgetter(2))

    def __new__(cls, num, method, method_id):
        return _tuple_new(cls, (num, method, method_id))

    def __repr__(self):
        return f"CSeq({self.num}, {self.method!r})"


def _params_of(view, k, sep=ord(";")):
    iv = view._iv
    i = view._b + k
    if iv[i] < 0:
        return {}
    return _parse_params(view, iv[i], iv[i + 1], sep)


def _parse_params(view, s, l, sep):
    buf = view._buf
    n = lib.sp_parse_params(buf, len(buf), s, l, sep, _params_scratch, _MAX_PARAMS)
    if n < 0:
        raise ParseError(400, "bad parameters: " + strerror(n), n, s)
    out = {}
    pv = _params_iv
    t = view._t
    txt = view._txt
    for k in range(0, 4 * n, 4):
        s = pv[k]
        # view._txt inline for an ASCII message (str slices)
        name = (t[s:s + pv[k + 1]] if t is not None
                else txt(s, pv[k + 1])).lower()
        if name not in out:
            vs = pv[k + 2]
            if vs < 0:
                out[name] = ""
                continue
            v = t[vs:vs + pv[k + 3]] if t is not None else txt(vs, pv[k + 3])
            out[name] = _unquote(v) if v[:1] == '"' else v
    return out


class Via(_View):
    """One Via value.  ``rport`` is None when absent, '' when present without
    a value; ``port`` is 0 when the sent-by has none; ``transport`` is upper
    case."""

    def __init__(self, buf, t, iv, base):
        self._buf = buf
        self._t = t
        self._iv = iv
        self._b = base

    proto = strprop(_V["proto"])
    version = strprop(_V["version"])
    host = strprop(_V["host"])
    port = intprop(_V["port"])
    port_str = strprop(_V["port_s"])
    branch = strprop(_V["branch"])
    received = strprop(_V["received"])
    rport = strprop(_V["rport"])
    maddr = strprop(_V["maddr"])
    ttl = strprop(_V["ttl"])
    params_str = strprop(_V["params"])
    hdr_index = intprop(_V["hdr"])
    start = intprop(_V["start"])
    end = intprop(_V["end"])

    @property
    def transport(self):
        return self._str(_V["transport"]).upper()

    @_lazy
    def params(self):
        """every param: dict name (lower-case) -> value ('' when none)"""
        return _params_of(self, _V["params"])

    def param(self, name):
        return self.params.get(name.lower())

    @property
    def text(self):
        return self._txt(self.start, self.end - self.start)

    def __repr__(self):
        return f"Via({self.text!r})"


class NameAddr(_View):
    """A To/From/Contact/Route value.  ``display`` is unquoted and unescaped
    (``display_raw`` as written), ``uri`` the URI text, ``parsed_uri`` the
    parsed :class:`SipUri`; ``tag``/``expires``/``q`` header params; ``star``
    for ``Contact: *``."""

    def __init__(self, buf, t, iv, base):
        self._buf = buf
        self._t = t
        self._iv = iv
        self._b = base

    display_raw = strprop(_N["display"])
    uri = strprop(_N["uri"])
    tag = strprop(_N["tag"])
    q = strprop(_N["q"])
    params_str = strprop(_N["params"])
    hdr_index = intprop(_N["hdr"])
    start = intprop(_N["start"])
    end = intprop(_N["end"])
    uri_start = intprop(_N["uri"])        # offset of the URI in the message
    uri_len = intprop(_N["uri"] + 1)

    @property
    def addr_end(self):
        """offset just past the name-addr (the URI and its '>'), where the
        header params (;tag=...) begin"""
        return self.uri_start + self.uri_len + (1 if self.bracket else 0)

    @property
    def star(self):
        return bool(self._iv[self._b + _N["star"]])

    @property
    def bracket(self):
        return bool(self._iv[self._b + _N["bracket"]])

    @_lazy
    def display(self):
        return _unquote(self.display_raw)

    @_lazy
    def expires(self):
        """the expires param as int (None when absent or not a number;
        values past 32 bits are clamped to 2**32-1)"""
        v = self._str(_N["expires"])
        if v is None or not v.isdigit():
            return None
        return min(int(v), 0xFFFFFFFF)

    @_lazy
    def parsed_uri(self):
        iv = self._iv
        i = self._b + _N["uri"]
        if iv[i] < 0:
            return None
        u = uri_at(self._buf, self._t, iv[i], iv[i + 1])
        if u is None:
            raise ParseError(400, "bad URI " + repr(self.uri), lib.SP_E_URI, iv[i])
        return u

    @_lazy
    def params(self):
        return _params_of(self, _N["params"])

    def param(self, name):
        return self.params.get(name.lower())

    @property
    def text(self):
        return self._txt(self.start, self.end - self.start)

    def __repr__(self):
        return "NameAddr(*)" if self.star else f"NameAddr({self.text!r})"


class Credentials:
    """An Authorization/Proxy-Authorization/WWW-Authenticate value:
    ``scheme`` and ``params`` (names lower-cased, quoted values unquoted);
    ``username``, ``realm``, ``nonce``, ``uri``, ``response``, ``algorithm``,
    ``cnonce``, ``opaque``, ``qop``, ``nc``, ``stale``, ``domain`` read the
    params (None when absent)."""
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


