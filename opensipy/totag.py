"""To tags of locally generated replies: one generator for the whole server.

OpenSIPS builds every local To tag the same way (``init_tags`` and
``calc_crc_suffix``): a prefix that is the MD5 of a signature and the
server's sockets, a separator, and a CRC-32 of what identifies the request
(Call-ID, From tag, CSeq number, the top Via's sent-by and branch).  So a
retransmitted request gets the same tag again, and a component can tell its
own tags by their prefix (sl absorbs the ACKs of its own replies that way).

Each user names its signature: :data:`core` (the core's own replies and
messages that cannot be parsed), ``TagGen("opensipy-stateless")`` for sl,
``TagGen("opensipy-tm")`` for tm.  Prefixes are made lazily from the
sockets configured when first used (after the script is loaded, before the
fork, so every process agrees).
"""
from __future__ import annotations

import hashlib
import re
import zlib
from typing import Iterable, Optional

from ._sipparser import lib as _sp

_totag_crc = _sp.sp_totag_crc

SEPARATOR = "-"
PREFIX_LEN = 32            # MD5 in hex
SUFFIX_LEN = 8             # CRC-32 in hex
TAG_LEN = PREFIX_LEN + 1 + SUFFIX_LEN
_HEX = re.compile(r"[0-9a-f]+\Z")


def request_suffix(msg) -> str:
    """CRC-32 (hex) of what identifies the request: the same for its
    retransmissions, different for another request."""
    m = getattr(msg, "_m", None)
    if m is not None:
        # a parsed message: the C parser reads the parts off its result
        c = _totag_crc(m, msg._buf)
        if c >= 0:
            return "%08x" % c
    v = msg.via1
    f = msg.from_
    cs = msg.cseq
    if v is not None and f is not None and cs is not None:
        # every part there (any request that got this far): one f-string
        key = (f"{msg.callid or ''}|{f.tag or ''}|{cs.num}|{v.host}:{v.port}"
               f"|{v.branch or ''}")
        return format(zlib.crc32(key.encode("utf-8", "surrogateescape")),
                      "08x")
    key = "|".join((msg.callid or "", (f.tag or "") if f else "",
                    str(cs.num) if cs else "",
                    f"{v.host}:{v.port}" if v else "",
                    (v.branch or "") if v else ""))
    return format(zlib.crc32(key.encode("utf-8", "surrogateescape")), "08x")


def bytes_suffix(buf: bytes) -> str:
    """CRC-32 (hex) of a raw message (one that did not parse)."""
    return format(zlib.crc32(buf), "08x")


class TagGen:
    """The To tags of one component: ``prefix-suffix``."""
    __slots__ = ("signature", "_prefix")

    def __init__(self, signature: str):
        self.signature = signature
        self._prefix: Optional[str] = None

    def init(self, sockets: Iterable = ()) -> str:
        """Make the prefix from the signature and the sockets' names."""
        names = "|".join(str(s) for s in sockets)
        self._prefix = hashlib.md5(f"{self.signature}|{names}".encode(),
                                   usedforsecurity=False).hexdigest()
        return self._prefix

    def prefix(self) -> str:
        if self._prefix is None:
            from . import config
            self.init(config.settings.sockets)
        return self._prefix

    def tag(self, msg) -> str:
        """The To tag of the local replies to request ``msg``."""
        return (self._prefix or self.prefix()) + SEPARATOR + \
            request_suffix(msg)

    def tag_with(self, suffix: str) -> str:
        return self.prefix() + SEPARATOR + suffix

    def is_ours(self, tag: Optional[str]) -> bool:
        """True when ``tag`` came from this generator (this server)."""
        if not tag or len(tag) != TAG_LEN:
            return False
        return (tag.startswith(self.prefix()) and tag[PREFIX_LEN] == SEPARATOR
                and _HEX.match(tag, PREFIX_LEN + 1) is not None)


core = TagGen("opensipy-core")
