"""The work behind the sipmsgops functions: header matching, lumps kept
all-or-nothing, regex search over the message, sed-style substitution,
bodies and Request-URI parameters."""
from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from typing import List, Optional, Tuple

from opensipy import log
from opensipy.parser import (HDR_OTHER_T, LUMP_REPLACE, METHODS, check_hdr_lines,
                             hdr_type)
from opensipy.pvar import PVError, parse_format, parse_pv

# --------------------------------------------------------------- lumps


class LumpError(Exception):
    """A change could not be recorded (it overlaps an earlier one)."""


class Changes:
    """Record several lumps on a message all-or-nothing::

        with Changes(msg, "subst") as ch:
            ch.replace(off, n, text)

    When one lump conflicts with an earlier change, the lumps recorded in
    the block are taken back (``SipMsg.lump_checkpoint``/``lump_rollback``)
    and LumpError is raised (the caller logs it and returns -1)."""

    def __init__(self, msg, what: str):
        self.msg = msg
        self.what = what

    def __enter__(self):
        self._saved = self.msg.lump_checkpoint()
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            return False
        self.msg.lump_rollback(self._saved)
        if issubclass(et, ValueError):
            raise LumpError(f"{self.what}: {ev}") from None
        return False

    def replace(self, off, length, data):
        self.msg.replace(off, length, data)

    def delete(self, off, length):
        self.msg.delete(off, length)

    def insert_before(self, off, data):
        self.msg.insert_before(off, data)

    def insert_after(self, off, data):
        self.msg.insert_after(off, data)


def is_deleted(msg, start: int, length: int) -> bool:
    """True when exactly these bytes are already removed (a header that an
    earlier remove_hf took out)."""
    for kind, off, removed, data in msg.lumps():
        if kind == LUMP_REPLACE and off == start and removed == length \
                and not data:
            return True
    return False


# --------------------------------------------------------------- headers

@lru_cache(maxsize=256)
def parse_hname(name: str) -> Tuple[int, str]:
    """``(type, name)``: a known header matches by type (compact forms
    included), another one by name, case-insensitively."""
    n = name.strip()
    if not n or any(c in n for c in " \t:\r\n"):
        raise ValueError(f"bad header name {name!r}")
    return hdr_type(n), n.lower()


def hdr_matches(h, spec: Tuple[int, str]) -> bool:
    t, name = spec
    if t != HDR_OTHER_T:
        return h.type == t
    return h.type == HDR_OTHER_T and h.name.lower() == name


def headers_matching(msg, spec):
    return [h for h in msg.headers if hdr_matches(h, spec)]


def remove_headers(msg, pred, what: str) -> int:
    """Remove every header ``pred(h)`` accepts and that is still there;
    1 when at least one went, -1 otherwise."""
    n = 0
    try:
        with Changes(msg, what) as ch:
            for h in msg.headers:
                if not pred(h) or is_deleted(msg, h.start, h.end - h.start):
                    continue
                ch.delete(h.start, h.end - h.start)
                n += 1
    except LumpError as e:
        log.LM_ERR(str(e))
        return -1
    return 1 if n else -1


def glob_pred(pattern: str):
    p = pattern.lower()
    return lambda h: fnmatch.fnmatchcase(h.name.lower(), p)


def regex_pred(rx):
    return lambda h: rx.search(h.name) is not None


def hdr_lines_error(text: str):
    """Why ``text`` is not whole header lines (None when it is): each line
    ``name: value`` ending with CRLF, no NUL, no bare CR or LF, no empty
    line -- anything else would add or split headers."""
    if not text:
        return "empty header text"
    if not text.endswith("\r\n"):
        return f"the header text must end with \\r\\n: {text!r}"
    return check_hdr_lines(text)


def check_line(text: str, fname: str) -> bool:
    why = hdr_lines_error(text)
    if why is not None:
        log.LM_ERR(f"{fname}: {why}")
        return False
    return True


# --------------------------------------------------------------- methods

def parse_methods(text: str) -> Tuple[int, Optional[str]]:
    """``is_method`` fixup: ``(mask, None)`` for known methods (a list
    ``A|B`` must hold known methods only), ``(0, NAME)`` for one method
    without an id (compared by name, case-insensitively)."""
    t = text.strip()
    if not t:
        raise ValueError("empty method name")
    names = [x.strip() for x in t.split("|")]
    if any(not x for x in names):
        raise ValueError(f"bad method names {text!r}")
    mask = 0
    for n in names:
        mid = METHODS.get("METHOD_" + n.upper())
        if mid is None or n.upper() in ("OTHER", "UNDEF") \
                or not re.fullmatch(r"[A-Za-z]+", n):
            if len(names) > 1:
                raise ValueError(f"unknown method {n!r} in list {text!r}: "
                                 f"a list must hold only known methods")
            if not re.fullmatch(r"[!%*_+`'~.A-Za-z0-9-]+", n):
                raise ValueError(f"bad method name {n!r}")
            return 0, n.upper()
        mask |= mid
    return mask, None


# --------------------------------------------------------------- text

def msg_text(msg) -> str:
    """The received message as text, one char per byte when possible."""
    return msg.raw.decode("utf-8", "surrogateescape")


def byte_offset(text: str, i: int) -> int:
    if text.isascii():
        return i
    return len(text[:i].encode("utf-8", "surrogateescape"))


# --------------------------------------------------------------- subst

class SubstExpr:
    """A parsed ``/re/repl/flags`` (OpenSIPS subst_parser)."""

    def __init__(self, regex, pieces, global_):
        self.regex = regex
        self.pieces = pieces      # str | int (group) | "uri" marker | Format
        self.global_ = global_

    def replacement(self, m, msg) -> str:
        out = []
        for p in self.pieces:
            if isinstance(p, int):
                out.append(m.group(p) or "")
            elif p is _URI:
                out.append(msg.new_uri or msg.ruri or "")
            elif isinstance(p, str):
                out.append(p)
            else:
                out.append(p.eval(msg))
        return "".join(out)

    def apply(self, text: str, msg) -> Tuple[List[Tuple[int, int, str]], int]:
        """The matches as (start, end, replacement) in ``text``."""
        out = []
        for m in self.regex.finditer(text):
            out.append((m.start(), m.end(), self.replacement(m, msg)))
            if not self.global_:
                break
        return out, len(out)

    def subst_str(self, text: str, msg) -> Optional[str]:
        """``text`` with the substitution applied; None when nothing
        matched."""
        edits, n = self.apply(text, msg)
        if not n:
            return None
        out = []
        pos = 0
        for s, e, r in edits:
            out.append(text[pos:s])
            out.append(r)
            pos = e
        out.append(text[pos:])
        return "".join(out)


_URI = object()
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}


def _split_fields(expr: str, sep: str) -> List[str]:
    fields = []
    cur = []
    i = 1
    while i < len(expr):
        c = expr[i]
        if c == "\\" and i + 1 < len(expr):
            cur.append(expr[i:i + 2])
            i += 2
            continue
        if c == sep:
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    fields.append("".join(cur))
    return fields


def _repl_pieces(repl: str, sep: str, ngroups: int, registry=None):
    pieces = []
    lit = []

    def flush():
        if lit:
            text = "".join(lit)
            lit.clear()
            if "$" in text:
                try:
                    fmt = parse_format(text, registry)
                except PVError as e:
                    raise ValueError(f"bad variable in replacement: {e}") \
                        from None
                pieces.append(fmt.value if fmt.is_constant else fmt)
            else:
                pieces.append(text)

    i = 0
    while i < len(repl):
        c = repl[i]
        if c != "\\":
            lit.append(c)
            i += 1
            continue
        if i + 1 >= len(repl):
            raise ValueError("replacement ends with a lone backslash")
        e = repl[i + 1]
        i += 2
        if e.isdigit():
            g = int(e)
            if g > ngroups:
                raise ValueError(f"\\{g} refers to a group the expression "
                                 f"does not have ({ngroups})")
            flush()
            pieces.append(g)
        elif e == "u":
            flush()
            pieces.append(_URI)
        elif e in _ESCAPES:
            lit.append(_ESCAPES[e])
        elif e == sep or e == "$":
            lit.append(e)
        else:
            raise ValueError(f"unknown escape \\{e} in replacement")
    flush()
    return pieces


def parse_subst(expr: str, registry=None) -> SubstExpr:
    """Parse ``/re/repl/flags`` (any separator, the first char); flags
    ``i`` (ignore case), ``g`` (every match), ``s`` (``.`` matches a newline
    and ``^``/``$`` only match at the ends).  Raises ValueError."""
    if len(expr) < 4:
        raise ValueError(f"subst expression {expr!r} is too short")
    sep = expr[0]
    if sep.isalnum() or sep in "\\ ":
        raise ValueError(f"bad separator {sep!r} in {expr!r}")
    fields = _split_fields(expr, sep)
    if len(fields) != 3:
        raise ValueError(f"subst expression {expr!r} is not "
                         f"{sep}re{sep}repl{sep}flags")
    rx_text, repl, flags = fields
    if not rx_text:
        raise ValueError(f"empty regular expression in {expr!r}")
    rflags = re.MULTILINE
    global_ = False
    for f in flags:
        if f == "i":
            rflags |= re.IGNORECASE
        elif f == "g":
            global_ = True
        elif f == "s":
            rflags = (rflags & ~re.MULTILINE) | re.DOTALL
        else:
            raise ValueError(f"unknown subst flag {f!r} in {expr!r}")
    try:
        rx = re.compile(rx_text, rflags)
    except re.error as e:
        raise ValueError(f"bad regular expression {rx_text!r}: {e}") \
            from None
    return SubstExpr(rx, _repl_pieces(repl, sep, rx.groups, registry),
                     global_)


# --------------------------------------------------------------- bodies

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MIME = re.compile(rf"({_TOKEN})/({_TOKEN})\Z")


def parse_mime(text: Optional[str]) -> Optional[str]:
    """``has_body`` fixup: ``type/subtype`` lower-cased; '' or None means no
    type check (None)."""
    if text is None or not text.strip():
        return None
    t = text.strip()
    if "," in t:
        raise ValueError(f"multiple mime types are not supported: {t!r}")
    if not _MIME.match(t):
        raise ValueError(f"unsupported mime {t!r}")
    return t.lower()


def _ctype(value: Optional[str]) -> Tuple[Optional[str], dict]:
    if value is None:
        return None, {}
    main, _, rest = value.partition(";")
    params = {}
    for p in rest.split(";"):
        k, eq, v = p.partition("=")
        if eq:
            params[k.strip().lower()] = v.strip().strip('"')
    return main.strip().lower(), params


def body_parts(msg) -> List[Tuple[Optional[str], bytes]]:
    """``(content type, data)`` of each part: one for a plain body, one per
    part of a multipart body (one level, as OpenSIPS)."""
    ctype, params = _ctype(msg.content_type)
    body = msg.body
    if ctype is None or not ctype.startswith("multipart/") \
            or "boundary" not in params:
        return [(ctype, body)]
    delim = b"--" + params["boundary"].encode()
    out = []
    chunks = body.split(delim)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            head, data = b"", chunk
        ptype = "text/plain"
        for line in head.split(b"\r\n"):
            k, c, v = line.partition(b":")
            if c and k.strip().lower() in (b"content-type", b"c"):
                ptype = _ctype(v.decode("utf-8", "replace"))[0]
        out.append((ptype, data))
    return out


# --------------------------------------------------------------- URIs

_RU = parse_pv("$ru")
_RU_USER = parse_pv("$rU")


def current_ruri(msg) -> str:
    return msg.new_uri or msg.ruri


def set_ruri(msg, uri: str, fname: str) -> int:
    try:
        _RU.set(msg, uri)
    except PVError as e:
        log.LM_ERR(f"{fname}: {e}")
        return -1
    return 1


def set_ruri_user(msg, user: str, fname: str) -> int:
    try:
        _RU_USER.set(msg, user)
    except PVError as e:
        log.LM_ERR(f"{fname}: {e}")
        return -1
    return 1


def get_ruri_user(msg) -> Optional[str]:
    return _RU_USER.get(msg)


def split_uri_params(uri: str) -> Tuple[str, str, str]:
    """``(before, params, headers)``: params is the text after the first
    ';' of the URI (without it), headers from '?' (with it)."""
    head, q, hdrs = uri.partition("?")
    at = head.rfind("@")
    # params start at the first ';' after the user part
    semi = head.find(";", at + 1 if at >= 0 else 0)
    if semi < 0:
        return head, "", q + hdrs
    return head[:semi], head[semi + 1:], q + hdrs


def e164_check(user: Optional[str]) -> bool:
    return bool(user) and 2 < len(user) < 17 and user[0] == "+" \
        and user[1:].isascii() and user[1:].isdigit()
