"""sipmsgops: SIP-level operations on the message (OpenSIPS's sipmsgops,
with textops' search/subst family).

Every change goes through lumps on the received message; a change that
overlaps an earlier one (two edits of the same bytes) is logged and the
function returns -1, the message untouched by that call.  Header texts
given to append_hf/insert_hf/append_to_reply must end with CRLF, as the
script writer writes them.  ``append_to_reply`` queues its text in
``msg.reply_hdrs`` (a list of header-line texts), the list sl and tm send
with every reply they build for the request.
"""
from __future__ import annotations

from functools import lru_cache

from opensipy import log
from opensipy.mod_fix import compile_regex
from opensipy.parser import METHOD_OTHER
from opensipy.pvar import PVError
from opensipy.sr_module import (BRANCH_ROUTE, CMD_PARAM_NO_CRLF,
                                CMD_PARAM_NO_EXPAND,
                                CMD_PARAM_OPT, CMD_PARAM_REGEX,
                                CMD_PARAM_STATIC, CMD_PARAM_STR, ERROR_ROUTE,
                                FAILURE_ROUTE, LOCAL_ROUTE, ONREPLY_ROUTE,
                                REQUEST_ROUTE, CmdExport, CmdParam,
                                ModuleExports)

from . import ops
from .ops import Changes, LumpError

_ALL5 = (REQUEST_ROUTE | ONREPLY_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE
         | LOCAL_ROUTE)
_TXT = REQUEST_ROUTE | ONREPLY_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE
_TXT5 = _TXT | LOCAL_ROUTE
_RURI = REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE | LOCAL_ROUTE


def _hname(value):
    return ops.parse_hname(value)


# ------------------------------------------------------------ headers

def fixup_hdr_text(text):
    """Header text for append_hf/insert_hf/append_to_reply: whole header
    lines (see ops.hdr_lines_error); a constant is checked when the script
    is fixed up, a variable's value on each call."""
    why = ops.hdr_lines_error(text)
    if why is not None:
        raise ValueError(why)
    return text


def fixup_uri_param(text):
    """A R-URI parameter for ruri_add_param: no whitespace or control
    character (it would split the request line); checked on constants
    when the script is checked, on variables' values on each call."""
    for ch in text:
        if ch <= " " or ch == "\x7f":
            raise ValueError(f"the URI parameter {text!r} holds {ch!r}")
    return text


def _add_hf(msg, text, anchor, append: bool, fname: str) -> int:
    if not ops.check_line(text, fname):
        return -1
    h = None
    if anchor is not None:
        found = ops.headers_matching(msg, anchor)
        h = found[0] if found else None
    try:
        with Changes(msg, fname) as ch:
            if append:
                ch.insert_before(h.end if h is not None else msg.hdrs_end,
                                 text)
            elif h is not None:
                ch.insert_before(h.start, text)
            else:
                ch.insert_after(msg.hdrs_start, text)
    except LumpError as e:
        log.LM_ERR(str(e))
        return -1
    return 1


def w_append_hf(msg, text, anchor=None) -> int:
    """append_hf(txt[, hdr]): after the last header, or after the first
    ``hdr`` header (after the last header when there is none)."""
    return _add_hf(msg, text, anchor, True, "append_hf")


def w_insert_hf(msg, text, anchor=None) -> int:
    """insert_hf(txt[, hdr]): before the first header, or before the first
    ``hdr`` header."""
    return _add_hf(msg, text, anchor, False, "insert_hf")


def w_append_to_reply(msg, text) -> int:
    if not ops.check_line(text, "append_to_reply"):
        return -1
    hdrs = getattr(msg, "reply_hdrs", None)
    if hdrs is None:
        hdrs = msg.reply_hdrs = []
    hdrs.append(text)
    return 1


@lru_cache(maxsize=128)
def _pattern_pred(pattern: str, flags: str):
    if flags == "r":
        return ops.regex_pred(compile_regex(pattern))
    if flags == "g":
        return ops.glob_pred(pattern)
    spec = ops.parse_hname(pattern)
    return lambda h: ops.hdr_matches(h, spec)


def fixup_hf_flags(value):
    if value is None:
        return ""
    v = value.strip().lower()
    if v not in ("", "r", "g"):
        raise ValueError(f"unknown flags {value!r} (r: regex, g: glob)")
    return v


def w_remove_hf(msg, hname, flags="") -> int:
    """remove_hf(hname[, flags]): every header of that name (flags 'r': a
    regex over the names, 'g': a shell wildcard); 1 when one went."""
    try:
        pred = _pattern_pred(hname, flags or "")
    except ValueError as e:
        log.LM_ERR(f"remove_hf: {e}")
        return -1
    return ops.remove_headers(msg, pred, "remove_hf")


def w_remove_hf_re(msg, rx) -> int:
    return ops.remove_headers(msg, ops.regex_pred(rx), "remove_hf_re")


def w_remove_hf_glob(msg, pattern) -> int:
    return ops.remove_headers(msg, ops.glob_pred(pattern), "remove_hf_glob")


def w_is_present_hf(msg, spec) -> int:
    return 1 if ops.headers_matching(msg, spec) else -1


# ------------------------------------------------------------ methods, tags

def fixup_method(value):
    return ops.parse_methods(value)


def w_is_method(msg, meth) -> int:
    mask, name = meth
    mid = msg.method_id
    if name is None:
        return 1 if mid & mask else -1
    if mid != METHOD_OTHER:
        return -1
    m = msg.method
    return 1 if m is not None and m.upper() == name else -1


def w_has_totag(msg) -> int:
    to = msg.to
    return 1 if to is not None and to.tag else -1


# ------------------------------------------------------------ search

def w_search(msg, rx) -> int:
    return 1 if rx.search(ops.msg_text(msg)) else -1


def w_search_body(msg, rx) -> int:
    body = msg.body.decode("utf-8", "surrogateescape")
    return 1 if body and rx.search(body) else -1


def _after_first_line(msg):
    """(message text, index where the headers start in it)."""
    t = ops.msg_text(msg)
    first = msg.hdrs_start if t.isascii() else \
        len(msg.raw[:msg.hdrs_start].decode("utf-8", "surrogateescape"))
    return t, first


def w_search_append(msg, rx, text) -> int:
    """search_append(re, txt): the first match after the first line, as in
    OpenSIPS."""
    t, first = _after_first_line(msg)
    m = rx.search(t, first)
    if m is None:
        return -1
    try:
        with Changes(msg, "search_append") as ch:
            ch.insert_after(ops.byte_offset(t, m.end()), text)
    except LumpError as e:
        log.LM_ERR(str(e))
        return -1
    return 1


# ------------------------------------------------------------ subst

def fixup_subst(value):
    from opensipy import modloader
    return ops.parse_subst(value, modloader.registry)


def w_subst(msg, se) -> int:
    """subst('/re/repl/flags') over the headers and body (the first line is
    left alone, as in OpenSIPS)."""
    t, first = _after_first_line(msg)
    try:
        edits, n = se.apply(t[first:], msg)
    except PVError as e:
        log.LM_ERR(f"subst: {e}")
        return -1
    if not n:
        return -1
    try:
        with Changes(msg, "subst") as ch:
            for s, e, r in edits:
                bs = ops.byte_offset(t, first + s)
                be = ops.byte_offset(t, first + e)
                if be > bs:
                    ch.replace(bs, be - bs, r)
                else:
                    ch.insert_after(bs, r)
    except LumpError as e:
        log.LM_ERR(str(e))
        return -1
    return 1


def w_subst_uri(msg, se) -> int:
    if not msg.is_request:
        return -1
    try:
        new = se.subst_str(ops.current_ruri(msg), msg)
    except PVError as e:
        log.LM_ERR(f"subst_uri: {e}")
        return -1
    if new is None:
        return -1
    return ops.set_ruri(msg, new, "subst_uri")


def w_subst_user(msg, se) -> int:
    if not msg.is_request:
        return -1
    user = ops.get_ruri_user(msg) or ""
    try:
        new = se.subst_str(user, msg)
    except PVError as e:
        log.LM_ERR(f"subst_user: {e}")
        return -1
    if new is None:
        return -1
    return ops.set_ruri_user(msg, new, "subst_user")


# ------------------------------------------------------------ bodies

def fixup_mime(value):
    return ops.parse_mime(value)


def w_has_body(msg, mime=None) -> int:
    n = msg.content_length
    if n is None:
        n = len(msg.body)
    if n == 0:
        return -1
    if mime is None:
        return 1
    ctype = ops._ctype(msg.content_type)[0]
    if mime.startswith("multipart/"):
        return 1 if ctype == mime else -1
    for ptype, _ in ops.body_parts(msg):
        if ptype == mime:
            return 1
    return -1


# ------------------------------------------------------------ URIs

def w_is_uri_user_e164(msg, uri) -> int:
    from opensipy.parser import parse_uri
    if not uri:
        log.LM_DBG("is_uri_user_e164: missing uri")
        return -1
    try:
        u = parse_uri(uri)
    except ValueError:
        u = None
    if u is None:
        log.LM_ERR(f"is_uri_user_e164: parsing URI {uri!r} failed")
        return -1
    return 1 if ops.e164_check(u.user) else -1


def w_ruri_has_param(msg, param, value=None) -> int:
    if not msg.is_request:
        return -1
    _, params, _ = ops.split_uri_params(ops.current_ruri(msg))
    for p in params.split(";") if params else ():
        name, eq, body = p.partition("=")
        if name != param:
            continue
        if value is not None:
            return 1 if body == value else -1
        return -1 if body else 1
    return -1


def w_ruri_add_param(msg, param) -> int:
    if not param:
        return 1
    if not msg.is_request:
        return -1
    before, params, hdrs = ops.split_uri_params(ops.current_ruri(msg))
    p = f";{params}" if params else ""
    return ops.set_ruri(msg, f"{before}{p};{param}{hdrs}", "ruri_add_param")


def w_ruri_del_param(msg, param) -> int:
    if not param:
        return 1
    if not msg.is_request:
        return -1
    before, params, hdrs = ops.split_uri_params(ops.current_ruri(msg))
    if not params:
        log.LM_DBG("ruri_del_param: the R-URI has no parameters")
        return -1
    items = params.split(";")
    names = [p.partition("=")[0] for p in items]
    if param not in names:
        return -1
    # the first parameter of that name goes, as in OpenSIPS
    idx = names.index(param)
    rest = items[:idx] + items[idx + 1:]
    p = "".join(";" + x for x in rest)
    return ops.set_ruri(msg, f"{before}{p}{hdrs}", "ruri_del_param")


# ------------------------------------------------------------ exports

_S = CmdParam(CMD_PARAM_STR)
# header lines: a variable inside the text may not add lines of its own
_HDR_TEXT = CmdParam(CMD_PARAM_STR | CMD_PARAM_NO_CRLF, fixup=fixup_hdr_text)
_HNAME = CmdParam(CMD_PARAM_STR, fixup=_hname)
_HNAME_OPT = CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT, fixup=_hname)
_SUBST = CmdParam(CMD_PARAM_STR | CMD_PARAM_NO_EXPAND, fixup=fixup_subst)
_RX = CmdParam(CMD_PARAM_REGEX)

exports = ModuleExports(
    name="sipmsgops",
    cmds=[
        CmdExport("append_to_reply", w_append_to_reply, [_HDR_TEXT],
                  REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE | ERROR_ROUTE),
        CmdExport("append_hf", w_append_hf, [_HDR_TEXT, _HNAME_OPT], _ALL5),
        CmdExport("insert_hf", w_insert_hf, [_HDR_TEXT, _HNAME_OPT], _ALL5),
        CmdExport("remove_hf", w_remove_hf,
                  [_S, CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT
                                | CMD_PARAM_STATIC, fixup=fixup_hf_flags)],
                  _ALL5),
        CmdExport("remove_hf_re", w_remove_hf_re, [_RX], _ALL5),
        CmdExport("remove_hf_glob", w_remove_hf_glob, [_S], _ALL5),
        CmdExport("is_present_hf", w_is_present_hf, [_HNAME], _ALL5),
        CmdExport("is_method", w_is_method,
                  [CmdParam(CMD_PARAM_STR, fixup=fixup_method)], _ALL5),
        CmdExport("has_totag", w_has_totag, [], _ALL5),
        CmdExport("has_body", w_has_body,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT, fixup=fixup_mime)],
                  _ALL5),
        CmdExport("search", w_search, [_RX], _TXT5),
        CmdExport("search_body", w_search_body, [_RX], _TXT5),
        CmdExport("search_append", w_search_append, [_RX, _S], _TXT5),
        CmdExport("subst", w_subst, [_SUBST], _TXT5),
        CmdExport("subst_uri", w_subst_uri, [_SUBST], _TXT),
        CmdExport("subst_user", w_subst_user, [_SUBST], _TXT),
        CmdExport("is_uri_user_e164", w_is_uri_user_e164, [_S],
                  REQUEST_ROUTE | FAILURE_ROUTE | LOCAL_ROUTE),
        CmdExport("ruri_has_param", w_ruri_has_param,
                  [_S, CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _RURI),
        CmdExport("ruri_add_param", w_ruri_add_param,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_NO_CRLF,
                            fixup=fixup_uri_param)], _RURI),
        CmdExport("ruri_del_param", w_ruri_del_param, [_S], REQUEST_ROUTE),
    ],
)
