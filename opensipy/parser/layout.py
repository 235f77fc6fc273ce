"""Where the C parser puts things: the field offsets of sp_msg, sp_hdr,
sp_via and sp_nameaddr read through one int32 memoryview, and the scratch
buffers the Python side reuses (the layout SipMsg and its views share)."""
import re
from ._core import (ffi, lib)
from .uri import (_ix, int_view)



_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_tuple_new = tuple.__new__
_FOLD = re.compile(r"[ \t]*\r?\n[ \t]*")
_QP = re.compile(r"\\(.)", re.S)
_MAX_PARAMS = 64
_params_scratch = ffi.new("sp_param[]", _MAX_PARAMS)
_params_iv = int_view(_params_scratch)
_out = [ffi.new("char[]", 1 << 16)]


def out_buffer(size):
    """The process's output buffer for building a message (sp_build,
    sp_build_reply), grown to at least ``size``; callers copy the result
    out of it before building again."""
    out = _out[0]
    if len(out) < size:
        out = _out[0] = ffi.new("char[]", max(size, 2 * len(out)))
    return out
_uint = ffi.new("uint32_t *")

# int32 indexes of the C struct fields
_M = {f: _ix("sp_msg", f) for f in (
    "err_status", "is_request", "method_id", "method", "ruri", "version", "reason",
    "status", "first_line_end", "hdrs_end", "body_s", "body_l", "msg_len",
    "content_length", "max_forwards", "cseq_num", "cseq_method", "cseq_method_id",
    "checked", "n_hdrs", "first", "count", "hdrs", "n_vias", "vias", "hfrom", "hto",
    "n_contacts", "contacts", "ruri_parsed", "n_lumps")}
_HS = ffi.sizeof("sp_hdr") // 4
_H_TYPE = _ix("sp_hdr", "type")
_H_NAME = _ix("sp_hdr", "name")
_H_BODY = _ix("sp_hdr", "body")
_H_START = _ix("sp_hdr", "start")
_H_END = _ix("sp_hdr", "end")
_VS = ffi.sizeof("sp_via") // 4
_V = {f: _ix("sp_via", f) for f in (
    "hdr", "start", "end", "proto", "version", "transport", "host", "port_s", "port",
    "params", "branch", "received", "rport", "maddr", "ttl", "i")}
_NS = ffi.sizeof("sp_nameaddr") // 4
_N = {f: _ix("sp_nameaddr", f) for f in (
    "hdr", "start", "end", "star", "bracket", "display", "uri", "params", "tag",
    "expires", "q")}
_M_body_l = _M["body_l"]
_M_body_s = _M["body_s"]
_M_checked = _M["checked"]
_M_contacts = _M["contacts"]
_M_content_length = _M["content_length"]
_M_count = _M["count"]
_M_cseq_method = _M["cseq_method"]
_M_cseq_method_id = _M["cseq_method_id"]
_M_cseq_num = _M["cseq_num"]
_M_first = _M["first"]
_M_first_line_end = _M["first_line_end"]
_M_hdrs = _M["hdrs"]
_M_hdrs_end = _M["hdrs_end"]
_M_hfrom = _M["hfrom"]
_M_hto = _M["hto"]
_M_is_request = _M["is_request"]
_M_max_forwards = _M["max_forwards"]
_M_method = _M["method"]
_M_method_id = _M["method_id"]
_M_msg_len = _M["msg_len"]
_M_n_contacts = _M["n_contacts"]
_M_n_hdrs = _M["n_hdrs"]
_M_n_lumps = _M["n_lumps"]
_M_n_vias = _M["n_vias"]
_M_reason = _M["reason"]
_M_ruri = _M["ruri"]
_M_ruri_parsed = _M["ruri_parsed"]
_M_status = _M["status"]
_M_version = _M["version"]
_M_vias = _M["vias"]
_MAX_VIAS = lib.SP_MAX_VIAS
_MAX_NA = lib.SP_MAX_CONTACTS
