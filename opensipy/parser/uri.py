"""SIP/SIPS/TEL (and opaque other-scheme) URIs over the C URI parser.

Field access goes through an int32 memoryview over the C result struct
(``_iv``) at a base index (``_b``): one index per offset, no cdata objects.
"""
import re
from dataclasses import dataclass

from ._core import ffi, lib, SIP_URI_T, SIPS_URI_T, TEL_URI_T, TELS_URI_T

__all__ = ["SipUri", "UriBuilder", "parse_uri", "parse_nameaddr", "unescape",
           "UriError"]

_ESC = re.compile(rb"%([0-9A-Fa-f]{2})")


def _ix(ctype, *field):
    return ffi.offsetof(ctype, *field) // 4


def int_view(cdata):
    """an int32 memoryview over a C struct or array (keeps it alive)"""
    return memoryview(ffi.buffer(cdata)).cast("i")


class _lazy:
    """A computed attribute stored in the instance dict on first use."""

    def __init__(self, fn):
        self.fn = fn
        self.name = None
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        v = self.fn(obj)
        obj.__dict__[self.name] = v
        return v


class _View:
    """Base of the objects that read (offset, length) pairs of a C result:
    ``_buf`` the parsed bytes, ``_t`` the same as str when pure ASCII (so a
    field is one str slice; otherwise UTF-8 with surrogateescape, every byte
    survives an encode back), ``_iv`` the int view, ``_b`` the base index."""

    def _str(self, k):
        iv = self._iv
        i = self._b + k
        s = iv[i]
        if s < 0:
            return None
        t = self._t
        if t is not None:
            return t[s:s + iv[i + 1]]
        return self._buf[s:s + iv[i + 1]].decode("utf-8", "surrogateescape")

    def _txt(self, s, l):
        t = self._t
        if t is not None:
            return t[s:s + l]
        return self._buf[s:s + l].decode("utf-8", "surrogateescape")


def strprop(k, doc=None):
    """a property reading the sp_str at index ``k`` of the struct"""
    def get(self):
        iv = self._iv
        i = self._b + k
        s = iv[i]
        if s < 0:
            return None
        t = self._t
        if t is not None:
            return t[s:s + iv[i + 1]]
        return self._buf[s:s + iv[i + 1]].decode("utf-8", "surrogateescape")
    return property(get, doc=doc)


def intprop(k, doc=None):
    def get(self):
        return self._iv[self._b + k]
    return property(get, doc=doc)


class UriError(ValueError):
    pass


def unescape(s: str) -> str:
    """Decode %HH escapes once (value%25%34%31 -> value%41)."""
    b = s.encode("utf-8", "surrogateescape")
    return _ESC.sub(lambda m: bytes((int(m.group(1), 16),)), b).decode(
        "utf-8", "surrogateescape")


def split_params(text):
    out = {}
    if not text:
        return out
    for item in text.split(";"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        out.setdefault(name.lower(), value if eq else "")
    return out


_U = {f: _ix("sp_uri", f) for f in (
    "type", "scheme", "user", "passwd", "host", "port_s", "port", "params", "headers",
    "opaque", "transport", "user_param", "method", "ttl", "maddr", "lr", "r2", "gr")}


class SipUri(_View):
    """A parsed URI.  Fields are the text as received (escapes not decoded;
    use :func:`unescape` or ``user_unescaped``).  ``port`` is 0 when absent;
    ``host`` of an IPv6 reference keeps its brackets; ``type`` is one of
    SIP_URI_T, SIPS_URI_T, TEL_URI_T, TELS_URI_T, OTHER_URI_T; for other
    schemes only ``scheme`` and ``opaque`` are set."""

    def __init__(self, buf, t, iv, base):
        self._buf = buf
        self._t = t
        self._iv = iv
        self._b = base

    type = intprop(_U["type"])
    user = strprop(_U["user"])
    passwd = strprop(_U["passwd"])
    host = strprop(_U["host"])
    port = intprop(_U["port"])
    port_str = strprop(_U["port_s"])
    params_str = strprop(_U["params"])
    headers = strprop(_U["headers"])
    opaque = strprop(_U["opaque"])
    transport = strprop(_U["transport"])
    user_param = strprop(_U["user_param"])
    method = strprop(_U["method"])
    ttl = strprop(_U["ttl"])
    maddr = strprop(_U["maddr"])
    r2 = strprop(_U["r2"])
    gr = strprop(_U["gr"])

    @property
    def scheme(self):
        return self._str(_U["scheme"]).lower()

    @property
    def lr(self):
        return self._iv[self._b + _U["lr"]] >= 0

    @_lazy
    def params(self):
        """URI parameters as a dict (names lower-cased, '' for a flag)."""
        return split_params(self.params_str)

    def param(self, name):
        """The value of a URI parameter, '' for a flag, None when absent."""
        return self.params.get(name.lower())

    @property
    def user_unescaped(self):
        u = self.user
        return None if u is None else unescape(u)

    @property
    def is_sip(self):
        return self.type in (SIP_URI_T, SIPS_URI_T)

    @property
    def is_tel(self):
        return self.type in (TEL_URI_T, TELS_URI_T)

    @_lazy
    def text(self):
        iv, b = self._iv, self._b
        start = iv[b + _U["scheme"]]
        end = iv[b + _U["opaque"]] + iv[b + _U["opaque"] + 1]
        return self._txt(start, end - start)

    def __str__(self):
        return self.text

    def __repr__(self):
        return f"SipUri({self.text!r})"

    def copy(self, **changes) -> "UriBuilder":
        """A mutable copy (:class:`UriBuilder`) with ``changes`` applied
        (``user``, ``passwd``, ``host``, ``port``, ``params``, ``headers``:
        text, "" for absent); ``str()`` of it is the new URI."""
        if not (self.is_sip or self.is_tel):
            raise UriError(f"cannot rebuild a {self.scheme}: URI")
        b = UriBuilder(self._str(_U["scheme"]), self.user or "",
                       self.passwd or "", self.host or "",
                       self.port_str or "", self.params_str or "",
                       self.headers or "")
        for k, v in changes.items():
            setattr(b, k, v)
        return b

    def __eq__(self, other):
        if isinstance(other, SipUri):
            return self.text == other.text
        return NotImplemented

    def __hash__(self):
        return hash(self.text)


@dataclass(slots=True)
class UriBuilder:
    """A SIP/SIPS/TEL URI being changed (from :meth:`SipUri.copy`): plain
    text fields, "" when absent; ``str()`` assembles
    ``scheme:user:passwd@host:port;params?headers`` (a TEL URI without a
    host is ``tel:number;params``).  Parse the result again to read it."""
    scheme: str = "sip"
    user: str = ""
    passwd: str = ""
    host: str = ""
    port: str = ""
    params: str = ""
    headers: str = ""

    def __str__(self):
        out = [self.scheme, ":"]
        if self.user:
            out.append(self.user)
            if self.host or self.passwd:
                if self.passwd:
                    out += (":", self.passwd)
                out.append("@")
        out.append(self.host)
        if self.port:
            out += (":", str(self.port))
        if self.params:
            out += (";", self.params)
        if self.headers:
            out += ("?", self.headers)
        return "".join(out)

    def __repr__(self):
        return f"UriBuilder({str(self)!r})"


_URI_PTR = ffi.typeof("sp_uri *")


def uri_at(buf, t, s, l):
    """parse the URI at buf[s:s+l] (offsets stay those of buf); None if bad"""
    u = ffi.new(_URI_PTR)
    if lib.sp_parse_uri(buf, len(buf), s, l, u) < 0:
        return None
    return SipUri(buf, t, memoryview(ffi.buffer(u)).cast("i"), 0)  # int_view


def parse_uri(uri) -> SipUri:
    """Parse a URI given as str or bytes; raises :class:`UriError`."""
    b = uri.encode("utf-8", "surrogateescape") if isinstance(uri, str) else bytes(uri)
    u = uri_at(b, b.decode("ascii") if b.isascii() else None, 0, len(b))
    if u is None:
        raise UriError(f"bad URI: {uri!r}")
    return u


def parse_nameaddr(text):
    """Parse one name-addr or addr-spec with its header parameters
    (``"A" <sip:a@h>;tag=1``), given as str or bytes, with the parser the
    message headers go through; returns a
    :class:`~opensipy.parser.NameAddr`, raises :class:`UriError`."""
    from .headers import NameAddr      # headers imports this module
    b = text.encode("utf-8", "surrogateescape") if isinstance(text, str) \
        else bytes(text)
    arr = ffi.new("sp_nameaddr[]", 1)
    n = lib.sp_parse_nameaddrs(b, len(b), 0, len(b), -1, 0, 0, arr, 1)
    if n != 1:
        raise UriError(f"bad name-addr: {text!r}")
    na = NameAddr(b, b.decode("ascii") if b.isascii() else None,
                  int_view(arr), 0)
    return na
