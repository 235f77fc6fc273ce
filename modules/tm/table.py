"""The Python face of ``opensipy._tm`` (native/tm.c): the cell table in shm.

Cells are ``tm_cell_t *`` cdata pointers, valid in every process (the
arena is mapped at the same address everywhere).  Whoever gets a cell from
a lookup holds a reference and must :func:`unref` it.
"""
from __future__ import annotations

import socket
import struct

from opensipy import shm

try:
    from opensipy._tm import ffi, lib
except ImportError as _e:  # pragma: no cover - depends on the build
    raise ImportError("opensipy._tm is not built: run "
                      "'python native/build_tm.py' or install the package"
                      ) from _e

MAX_BRANCHES = lib.TM_MAX_BRANCHES
NULL = ffi.NULL
_created = ffi.new("int *")


class TableError(Exception):
    pass


def init(size: int, t1_ms: int, t2_ms: int, fr_s: int, fr_inv_s: int,
         wt_s: int) -> None:
    """Create the table in the arena (mod_init, before fork)."""
    from opensipy._shm import ffi as sffi, lib as slib
    alloc = int(sffi.cast("uintptr_t", sffi.addressof(slib,
                                                      "shm_malloc_mod")))
    free = int(sffi.cast("uintptr_t", sffi.addressof(slib, "shm_free_ptr")))
    ms = 1_000_000
    rc = lib.tm_init(size, alloc, free, shm.module_id("tm"), t1_ms * ms,
                     t2_ms * ms, fr_s * 1000 * ms, fr_inv_s * 1000 * ms,
                     wt_s * 1000 * ms)
    if rc == -3:
        raise shm.ShmOutOfMemory(f"tm: no shared memory for a table of "
                                 f"{size} buckets")
    if rc:
        raise TableError(f"tm: cannot create the transaction table ({rc})")


def reset_for_tests() -> None:
    lib.tm_reset_for_tests()


def _b(s) -> bytes:
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s


def lookup_or_new(callid: bytes, cseq: int, key: bytes, method: int):
    """(cell, created): created 1 new, 0 a retransmission; (None, -1)
    when shared memory is exhausted."""
    c = lib.tm_lookup_or_new(callid, len(callid), cseq, key, len(key),
                             method, _created)
    if c == NULL:
        return None, -1
    return c, _created[0]


def lookup_req(callid: bytes, cseq: int, key: bytes, method: int, mode: int):
    c = lib.tm_lookup_req(callid, len(callid), cseq, key, len(key), method,
                          mode)
    return None if c == NULL else c


def new_local(callid: bytes, cseq: int, method: int):
    c = lib.tm_new_local(callid, len(callid), cseq, method)
    return None if c == NULL else c


def lookup_cseq(callid: bytes, cseq: int, method: int, cap: int = 16):
    """Server transactions of ``method`` with this CSeq number that may
    have this Call-ID (same bucket): each holds a reference."""
    out = ffi.new("tm_cell_t *[]", cap)
    n = lib.tm_lookup_cseq(callid, len(callid), cseq, method, out, cap)
    return [out[i] for i in range(n)]


def lookup_reply(hash_index: int, label: int):
    c = lib.tm_lookup_reply(hash_index, label)
    return None if c == NULL else c


ref = lib.tm_ref
unref = lib.tm_unref
lock = lib.tm_cell_lock
unlock = lib.tm_cell_unlock
delete = lib.tm_delete


def set_buf(cell, which: int, branch: int, data: bytes) -> None:
    rc = lib.tm_set_buf(cell, which, branch, data, len(data))
    if rc == -1:
        raise shm.ShmOutOfMemory(f"tm: no shared memory for {len(data)} "
                                 f"bytes")
    if rc:
        raise TableError(f"tm: cannot store a buffer ({rc})")


def buf(ptr, length) -> bytes:
    return ffi.unpack(ptr, length) if length else b""


_sa_cache = {}


def sockaddr(ip: str, port: int) -> bytes:
    """A packed struct sockaddr for C's sendto (remembered)."""
    key = (ip, port)
    sa = _sa_cache.get(key)
    if sa is None:
        sa = _sockaddr(ip, port)
        if len(_sa_cache) < 4096:
            _sa_cache[key] = sa
    return sa


def _sockaddr(ip: str, port: int) -> bytes:
    if ":" in ip:
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, ip) + b"\0\0\0\0")
    return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
            + socket.inet_aton(ip) + b"\0" * 8)


def set_dst(cell, branch: int, si, si_index: int, ip: str, port: int,
            conn_id: int = 0):
    """Where a branch (or, branch -1, the replies) goes.  A TCP
    destination has no descriptor for C (fd -1: the timer sends nothing,
    a reliable transport is not retransmitted); Python sends it, on the
    connection ``conn_id`` (kept in ``conn``) when it is open."""
    sa = sockaddr(ip, port)
    tcp = getattr(si, "proto", None) == "tcp"
    rc = lib.tm_set_dst(cell, branch,
                        -1 if tcp or not si.sock else si.sock.fileno(),
                        sa, len(sa), si_index)
    if rc:
        raise TableError(f"tm: bad destination ({rc})")
    d = cell.uas_dst if branch < 0 else cell.br[branch].dst
    d.conn = conn_id if tcp else 0


def _unpack_sa(d):
    raw = bytes(ffi.buffer(d.sa, d.salen))
    af = struct.unpack_from("=H", raw)[0]
    if af == socket.AF_INET6:
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                struct.unpack_from("!H", raw, 2)[0])
    return (socket.inet_ntoa(raw[4:8]), struct.unpack_from("!H", raw, 2)[0])


def send(dst, data: bytes) -> bool:
    if dst.fd < 0 and dst.si >= 0:
        from opensipy import config
        from opensipy.net import tcp
        socks = config.settings.sockets
        if dst.si < len(socks) and socks[dst.si].proto == "tcp":
            return tcp.send(socks[dst.si], data, _unpack_sa(dst), dst.conn)
    return lib.tm_send(dst, data, len(data)) == 0


def timer_start(cell, which, branch, delay_ms, kind, cap_t2=0):
    lib.tm_timer_start(cell, which, branch, int(delay_ms * 1_000_000), kind,
                       cap_t2)


timer_stop = lib.tm_timer_stop
timer_gen = lib.tm_timer_gen
timer_pending = lib.tm_timer_pending
inuse = lib.tm_inuse
now_ns = lib.tm_now


_EVENTS = 64
_events = None


def tick(now=None):
    """Run the timer lists once; returns [(cell, which, branch, gen)] of
    the events for Python (each holding a cell reference to drop)."""
    global _events
    if _events is None:
        _events = ffi.new("tm_event_t[]", _EVENTS)
    out = []
    while True:
        n = lib.tm_timer_tick(lib.tm_now() if now is None else now,
                              _events, _EVENTS)
        for i in range(n):
            e = _events[i]
            out.append((e.cell, e.which, e.branch, e.gen))
        if n < _EVENTS:
            return out
