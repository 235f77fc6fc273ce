"""opensipy.parser: SipMsg and friends over the C parser opensipy._sipparser.

See docs/architecture.md ("Contracts between layers / Parser")."""
from ._core import (HDR_TYPES, HDR_TYPE_NAMES, METHODS, METHOD_NAMES, URI_TYPES,
                    LUMP_INS_BEFORE, LUMP_REPLACE, LUMP_INS_AFTER, strerror)
from ._core import *  # noqa: F401,F403  HDR_*_T, METHOD_*, *_URI_T
from .uri import SipUri, UriError, parse_uri, unescape
from .msg import (SipMsg, ParseError, Header, Via, NameAddr, CSeq, Credentials,
                  ReceiveInfo, build_reply, frame_length, hdr_type, method_name,
                  REASONS, check_reason, check_hdr_lines)

__all__ = (["SipMsg", "ParseError", "Header", "Via", "NameAddr", "CSeq",
            "Credentials", "ReceiveInfo", "SipUri", "UriError", "parse_uri",
            "unescape", "build_reply", "frame_length", "hdr_type", "method_name",
            "check_reason", "check_hdr_lines", "strerror", "REASONS", "HDR_TYPES", "HDR_TYPE_NAMES", "METHODS",
            "METHOD_NAMES", "URI_TYPES", "LUMP_INS_BEFORE", "LUMP_REPLACE",
            "LUMP_INS_AFTER"]
           + sorted(HDR_TYPES) + sorted(METHODS) + sorted(URI_TYPES))
