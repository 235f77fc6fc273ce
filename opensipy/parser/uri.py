"""SIP/SIPS/TEL (and opaque other-scheme) URIs over the C URI parser."""
import re

from ._core import ffi, lib, SIP_URI_T, SIPS_URI_T, TEL_URI_T, TELS_URI_T

__all__ = ["SipUri", "parse_uri", "unescape", "UriError", "_Text", "_lazy"]

_ESC = re.compile(rb"%([0-9A-Fa-f]{2})")


class _lazy:
    """A computed attribute stored in the instance dict on first use (so the
    second read is a plain attribute read)."""
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


class _Text:
    """Bytes plus, for pure ASCII input, the same text as one str, so that a
    field is one str slice; otherwise fields decode as UTF-8 with
    surrogateescape (every byte survives an encode back)."""

    def __init__(self, buf: bytes):
        self._buf = buf
        self._t = buf.decode("ascii") if buf.isascii() else None

    def _txt(self, s, l):
        t = self._t
        if t is not None:
            return t[s:s + l]
        return self._buf[s:s + l].decode("utf-8", "surrogateescape")

    def _opt(self, st):
        """an sp_str as str, None when absent"""
        s = st.s
        if s < 0:
            return None
        t = self._t
        if t is not None:
            return t[s:s + st.l]
        return self._buf[s:s + st.l].decode("utf-8", "surrogateescape")


class UriError(ValueError):
    pass


def unescape(s: str) -> str:
    """Decode %HH escapes once (value%25%34%31 -> value%41)."""
    b = s.encode("utf-8", "surrogateescape")
    return _ESC.sub(lambda m: bytes((int(m.group(1), 16),)), b).decode(
        "utf-8", "surrogateescape")


def _split_params(text):
    out = {}
    if not text:
        return out
    for item in text.split(";"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        out.setdefault(name.lower(), value if eq else "")
    return out


class SipUri:
    """A parsed URI.  Fields are the text as received (escapes not decoded;
    use :func:`unescape` or the ``*_unescaped`` helpers).  ``port`` is 0
    when absent; ``host`` of an IPv6 reference keeps its brackets."""

    def __init__(self, src, u, ref=None):
        self._src = src      # a _Text (message or standalone string)
        self._u = u          # sp_uri cdata
        self._ref = ref      # keeps the cdata owner alive
        self.type = u.type

    def _f(self, st):
        return self._src._opt(st)

    scheme = _lazy(lambda self: self._f(self._u.scheme).lower())
    user = _lazy(lambda self: self._f(self._u.user))
    passwd = _lazy(lambda self: self._f(self._u.passwd))
    host = _lazy(lambda self: self._f(self._u.host))
    port_str = _lazy(lambda self: self._f(self._u.port_s))
    port = _lazy(lambda self: int(self._u.port))
    params_str = _lazy(lambda self: self._f(self._u.params))
    headers = _lazy(lambda self: self._f(self._u.headers))
    opaque = _lazy(lambda self: self._f(self._u.opaque))
    transport = _lazy(lambda self: self._f(self._u.transport))
    user_param = _lazy(lambda self: self._f(self._u.user_param))
    method = _lazy(lambda self: self._f(self._u.method))
    ttl = _lazy(lambda self: self._f(self._u.ttl))
    maddr = _lazy(lambda self: self._f(self._u.maddr))
    lr = _lazy(lambda self: self._u.lr.s >= 0)
    r2 = _lazy(lambda self: self._f(self._u.r2))
    gr = _lazy(lambda self: self._f(self._u.gr))

    @_lazy
    def params(self):
        """URI parameters as a dict (names lower-cased, value '' for a flag)."""
        return _split_params(self.params_str)

    def param(self, name):
        """The value of a URI parameter, '' for a flag, None when absent."""
        return self.params.get(name.lower())

    @property
    def user_unescaped(self):
        return None if self.user is None else unescape(self.user)

    @property
    def is_sip(self):
        return self.type in (SIP_URI_T, SIPS_URI_T)

    @property
    def is_tel(self):
        return self.type in (TEL_URI_T, TELS_URI_T)

    @_lazy
    def text(self):
        u = self._u
        start = u.scheme.s
        end = u.opaque.s + u.opaque.l
        return self._src._txt(start, end - start)

    def __str__(self):
        return self.text

    def __repr__(self):
        return f"SipUri({self.text!r})"

    def __eq__(self, other):
        if isinstance(other, SipUri):
            return self.text == other.text
        return NotImplemented

    def __hash__(self):
        return hash(self.text)


def parse_uri(uri) -> SipUri:
    """Parse a URI given as str or bytes; raises :class:`UriError`."""
    b = uri.encode("utf-8", "surrogateescape") if isinstance(uri, str) else bytes(uri)
    u = ffi.new("sp_uri *")
    rc = lib.sp_parse_uri(b, 0, len(b), u)
    if rc < 0:
        raise UriError(f"bad URI: {uri!r}")
    return SipUri(_Text(b), u, u)
