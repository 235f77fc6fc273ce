"""The OpenSIPS 3.x MI FIFO framing, shared by the ``mi_fifo`` module (the
server side) and ``opensipyctl`` (the client side).

A client writes ``:reply_fifo_name:`` followed by one JSON-RPC request
object into the server's FIFO; the server writes the reply, one line of
JSON ending in a newline, into ``reply_dir/reply_fifo_name`` (a FIFO the
client created and reads).  An empty name (``::``) asks for no reply.

:class:`FifoParser` cuts the byte stream read from the server's FIFO into
requests.  It is strict about the frame and tolerant of junk: anything that
is not a frame is dropped up to the next newline, a frame whose body is not
a JSON object or array is handed on as a parse error (so the client gets
its -32700), and so is a frame left incomplete for too long, larger than
the limit, or followed by the start of another frame on a new line (which
cannot happen inside valid JSON).
"""
from __future__ import annotations

import re
import time
from typing import List, Optional, Tuple

MAX_NAME = 255
_NAME_OK = re.compile(rb"[A-Za-z0-9_.\-]*\Z")
_NEXT_FRAME = re.compile(rb"\n:[A-Za-z0-9_.\-]{0,255}:")


def frame(reply_name: str, request_json: str) -> bytes:
    return f":{reply_name}:{request_json}".encode("utf-8")


def valid_reply_name(name: bytes) -> bool:
    """A reply FIFO name is a plain file name inside reply_dir: no path
    separators, no '..', nothing exotic."""
    return (len(name) <= MAX_NAME and bool(_NAME_OK.match(name))
            and name not in (b".", b".."))


def _json_end(buf: bytes, start: int) -> int:
    """Index just past the JSON object/array starting at buf[start], or -1
    if it is not complete yet (strings and escapes are honoured)."""
    depth = 0
    in_str = False
    esc = False
    for i in range(start, len(buf)):
        c = buf[i]
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:          # backslash
                esc = True
            elif c == 0x22:          # quote
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c in (0x7B, 0x5B):      # { [
            depth += 1
        elif c in (0x7D, 0x5D):      # } ]
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


class FifoParser:
    """Feed bytes, get ``(reply_name, body)`` pairs.  ``body`` is the
    request's bytes (to be parsed by the dispatcher) or None when the
    frame was broken (the dispatcher's parse error is to be sent back to
    ``reply_name``).  ``dropped`` counts junk discarded."""

    def __init__(self, max_request: int = 1 << 20, stale_after: float = 2.0,
                 clock=time.monotonic):
        self.buf = bytearray()
        self.max_request = max_request
        self.stale_after = stale_after
        self.clock = clock
        self.partial_since: Optional[float] = None
        self.dropped = 0

    def feed(self, data: bytes) -> List[Tuple[bytes, Optional[bytes]]]:
        self.buf += data
        return self._parse()

    def _drop_line(self) -> None:
        nl = self.buf.find(b"\n")
        end = len(self.buf) if nl < 0 else nl + 1
        del self.buf[:end]
        self.dropped += 1

    def _parse(self):
        out = []
        buf = self.buf
        while True:
            i = 0
            while i < len(buf) and buf[i] in b" \t\r\n":
                i += 1
            del buf[:i]
            if not buf:
                self.partial_since = None
                return out
            if buf[0] != 0x3A:                     # ':'
                self._drop_line()
                continue
            j = buf.find(b":", 1, MAX_NAME + 2)
            if j < 0:
                if len(buf) > MAX_NAME + 1 or b"\n" in buf:
                    self._drop_line()
                    continue
                return self._wait(out)
            name = bytes(buf[1:j])
            if not valid_reply_name(name):
                self._drop_line()
                continue
            k = j + 1
            while k < len(buf) and buf[k] in b" \t\r\n":
                k += 1
            if k >= len(buf):
                return self._wait(out)
            if buf[k] not in b"{[":
                out.append((name, None))
                del buf[:j + 1]
                self._drop_line()
                continue
            end = _json_end(buf, k)
            if end < 0:
                # a new frame after a newline means this one was broken:
                # "\n:name:" cannot occur inside valid JSON
                nxt = _NEXT_FRAME.search(buf, k)
                if nxt is not None:
                    out.append((name, None))
                    del buf[:nxt.start() + 1]
                    self.dropped += 1
                    self.partial_since = None
                    continue
                if len(buf) - k > self.max_request:
                    out.append((name, None))
                    buf.clear()
                    self.dropped += 1
                    self.partial_since = None
                    return out
                return self._wait(out)
            out.append((name, bytes(buf[k:end])))
            del buf[:end]
            self.partial_since = None

    def _wait(self, out):
        if self.partial_since is None:
            self.partial_since = self.clock()
        return out

    def expire(self) -> List[Tuple[bytes, Optional[bytes]]]:
        """Give up on a frame that stayed incomplete for ``stale_after``
        seconds: its client gets a parse error (when it named a reply
        FIFO); the buffer is cleared."""
        if self.partial_since is None or \
                self.clock() - self.partial_since < self.stale_after:
            return []
        out = []
        if self.buf.startswith(b":"):
            j = self.buf.find(b":", 1)
            name = bytes(self.buf[1:j]) if j > 0 else b""
            if name and valid_reply_name(name):
                out.append((name, None))
        self.buf.clear()
        self.dropped += 1
        self.partial_since = None
        return out
