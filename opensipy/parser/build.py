"""Outgoing bytes from caller text: the checks that keep CR/LF out of
reasons, tags and header lines, the default To tag, build_reply() for a
reply to a request (C sp_build_reply), frame_length() for streams."""
import re
from ._core import ffi, lib, strerror
from .headers import ParseError, REASONS
from .layout import _M_hdrs_end, _M_is_request, _M_n_hdrs, out_buffer


def _b(v):
    return v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)


def _line(text):
    b = text.encode("utf-8", "surrogateescape") if type(text) is str \
        else bytes(text)
    return b if b.endswith(b"\r\n") else b + b"\r\n"


# Text the caller gives to a message being built (a reason phrase, header
# lines) must not be able to add lines of its own (header injection).
_REASON_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TAG_BAD = re.compile(rb"[\x00\r\n]")
_RURI_BAD = re.compile(rb"[\x00-\x20\x7f]")
_HDR_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+[ \t]*:[^\x00\r\n]*\r\n")
# whole blocks of such lines, checked by one fullmatch (check_hdr_lines
# says what is wrong when it fails)
_HDR_BLOCK = re.compile(rb"(?:" + _HDR_LINE.pattern + rb")*")
# reason phrases that passed the check, as bytes (most are constants)
_REASONS_OK = {}


def check_reason(text):
    """None when ``text`` (str or bytes) can be a reason phrase, else why
    not: RFC 3261 allows no control character but HTAB, so CR, LF and NUL
    (which would end or split the status line) are refused."""
    m = _REASON_BAD.search(_b(text))
    if m is None:
        return None
    return (f"the reason phrase holds the control character "
            f"{m.group()!r} (CR, LF, NUL and other controls are refused)")


def check_hdr_lines(text):
    """None when ``text`` (str or bytes) is zero or more whole header lines
    (``name: value`` CRLF each, a token name, no NUL, no CR or LF but the
    CRLF that ends each line), else why not.  Folded lines and empty lines
    (which would end the header section) are refused."""
    b = _b(text)
    pos, n = 0, len(b)
    match = _HDR_LINE.match
    while pos < n:
        m = match(b, pos)
        if m is not None:
            pos = m.end()
            continue
        end = b.find(b"\n", pos)
        line = b[pos:] if end < 0 else b[pos:end + 1]
        if b"\0" in line:
            why = "holds a NUL"
        elif line in (b"\r\n", b"\n"):
            why = "is empty (it would end the header section)"
        elif not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            why = "does not end with CRLF or holds a bare CR or LF"
        else:
            why = "is not 'name: value' with a token name"
        return f"the header line {line!r} {why}"
    return None


def _default_to_tag(msg):
    """The core's To tag (opensipy.totag) when the caller gives none."""
    from .. import totag        # the parser sits below the rest of the core
    return totag.core.tag(msg)


def build_reply(msg, code, reason=None, to_tag=None, headers=(), body=b""):
    """A reply to request ``msg`` (RFC 3261 8.2.6): status line, the Via
    headers, From, To (with ``to_tag`` added when the request's To has none
    and code > 100; a stable tag is made when none is given), Call-ID, CSeq,
    then ``headers`` (str/bytes lines, or one block), Content-Length, body.
    Raises ValueError when the reason or the To tag holds CR, LF or NUL, or
    ``headers`` is not whole header lines (:func:`check_hdr_lines`), so no
    caller-provided text can add a header or split the status line."""
    iv = msg._iv
    if not iv[_M_is_request]:
        raise ValueError("cannot reply to a reply")
    if reason is None:
        reason = REASONS.get(code, "Unknown")
    if to_tag is None and code > 100:
        to_tag = _default_to_tag(msg)
    rb = _REASONS_OK.get(reason) if type(reason) is str else None
    if rb is None:
        rb = _b(reason)
        if _REASON_BAD.search(rb) is not None:
            raise ValueError(check_reason(rb))
        if type(reason) is str and len(_REASONS_OK) < 256:
            _REASONS_OK[reason] = rb
    tb = _b(to_tag) if to_tag else b""
    if _TAG_BAD.search(tb) is not None:
        raise ValueError(f"the To tag {tb!r} holds CR, LF or NUL")
    if isinstance(headers, (str, bytes)):
        eb = _b(headers)
    elif headers:
        if type(headers) is not list and type(headers) is not tuple:
            headers = list(headers)         # read twice on a TypeError
        try:
            # str lines (what modules give): joined, then encoded once
            eb = "".join([h if h.endswith("\r\n") else h + "\r\n"
                          for h in headers]).encode("utf-8", "surrogateescape")
        except (TypeError, AttributeError):     # bytes among them: by line
            eb = b"".join([_line(h) for h in headers])
    else:
        eb = b""
    if eb and _HDR_BLOCK.fullmatch(eb) is None:
        raise ValueError(check_hdr_lines(eb))
    bb = body if type(body) is bytes else _b(body)
    m = msg._m
    size = 64 + len(rb) + len(tb) + len(eb) + len(bb) + iv[_M_hdrs_end] + 4 * iv[_M_n_hdrs]
    out = out_buffer(size)
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
