"""TCP: the TCP main process, the TCP workers and the connection table.

The shape is OpenSIPS's (``net/net_tcp.c``):

* the attendant opens the listening sockets and, before it forks, the
  connection table in shm (:class:`ConnTable`) and one unix datagram
  socket pair per process (the process's channel to the TCP main);
* the **TCP main** process (rank ``PROC_TCP_MAIN``) accepts connections,
  records each in the table, keeps a copy of its descriptor and hands
  another to a **TCP worker** (positive ranks, after the UDP receivers) over
  that worker's channel (``SCM_RIGHTS``); it closes connections idle longer
  than ``tcp_connection_lifetime``, those whose worker died, and refuses
  connections beyond ``tcp_max_connections``;
* a **TCP worker** reads its connections (epoll), frames SIP messages by
  Content-Length and hands each to the core's receive path, as the UDP
  receivers do with datagrams;
* any process that must write on a connection it does not hold asks the
  TCP main for the descriptor (``GET``) and keeps it in a small per-process
  cache; a process that needs a connection that does not exist connects
  itself (``tcp_connect_timeout``), writes, and gives the descriptor to the
  TCP main (``ADD``), which hands it to a worker to read the replies.

Writes never block a process on a peer that does not read: every
descriptor is non-blocking and a write that cannot complete within
``tcp_send_timeout`` closes the connection.  Writes on one connection are
serialised by a per-connection shm lock, so messages from several processes
never interleave.
"""
from __future__ import annotations

import errno
import os
import re
import resource
import select
import selectors
import socket
import struct
import time
from collections import OrderedDict, deque
from typing import Dict, Optional

from .. import config, log

# connection states (OpenSIPS's enum tcp_conn_states values)
S_CONN_BAD = -1
S_CONN_OK = 0
S_CONN_INIT = 1
S_CONN_EOF = 2

# channel operations
OP_NEW, OP_GET, OP_FD, OP_NOFD, OP_ADD, OP_CLOSE, OP_BAD = range(1, 8)
_OP = struct.Struct("<Bq")

# the table record: header, then the peer key and the alias keys
_HDR = struct.Struct("<qiiiiiidd")   # id state owner owner_pid si naliases
_HDR_SIZE = 64                       #   local_port created last
_KEEP_OFF = 48                       # then: kept open until (a double)
_KEY = 24
MAX_ALIASES = 3
_REC = _HDR_SIZE + _KEY * (1 + MAX_ALIASES)
_KEY_MARK = b"\x01T"

# tunables (proto_tcp's modparams write them)
send_timeout_ms = 100
max_msg_size = 65535
crlf_pingpong = True

table: Optional["ConnTable"] = None
_chan_ends = []        # per slot id: (main end, process end) or None
_worker_slots = []     # slot ids of the TCP workers
main_slot = -1
stats = None           # proto_tcp binds: dict name -> stat

RECV_CHUNK = 65536
HANDOVER_WAIT = 10.0   # s a new connection may wait for a busy worker


def peer_key(af: int, ip: str, port: int) -> bytes:
    raw = socket.inet_pton(af, ip)
    return (_KEY_MARK + bytes((af & 0xff, 0)) + raw.ljust(16, b"\0")
            + struct.pack("!H", port) + b"\0\0")


def key_addr(key: bytes):
    af = key[2]
    raw = key[4:20] if af == socket.AF_INET6 else key[4:8]
    return (socket.inet_ntop(af, raw), struct.unpack("!H", key[20:22])[0])


def _af_of(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _count(name: str, n: int = 1) -> None:
    if stats is not None:
        st = stats.get(name)
        if st is not None:
            st.update(n)


class ConnTable:
    """The connection table in shm: ``size`` records under one lock, a
    write lock per record, ids from a shared counter (the record of id
    ``n`` is ``n % size``, so a stale id never matches a reused record)."""

    def __init__(self, size: int):
        from .. import shm
        self.size = size
        self.block = shm.shm_malloc(_REC * size, module="core")
        self.block.buffer[:] = bytes(_REC * size)
        self.buf = self.block.buffer
        self.lock = shm.Lock("core")
        self.wlocks = shm.LockSet(size, "core")
        self.next_id = shm.AtomicCounter(0, "core")

    # -- records
    def _off(self, cid: int) -> int:
        return (cid % self.size) * _REC

    def get(self, cid: int):
        """(id, state, owner, owner_pid, si, naliases, local_port, created,
        last) of connection cid, None when it is gone."""
        if cid <= 0:
            return None
        h = _HDR.unpack_from(self.buf, self._off(cid))
        return h if h[0] == cid else None

    def alloc(self, key: bytes, si: int, owner: int = -1,
              owner_pid: int = 0, local_port: int = 0,
              state: int = S_CONN_OK) -> int:
        """A new record for a connection to/from key; 0 when full."""
        for _ in range(self.size):
            cid = self.next_id.inc()
            off = self._off(cid)
            with self.lock:
                if _HDR.unpack_from(self.buf, off)[0] != 0:
                    continue
                now = time.time()
                _HDR.pack_into(self.buf, off, cid, state, owner, owner_pid,
                               si, 0, local_port, now, now)
                self.buf[off + _HDR_SIZE:off + _REC] = \
                    key + bytes(_KEY * MAX_ALIASES)
                return cid
        return 0

    def free(self, cid: int) -> bool:
        off = self._off(cid)
        with self.lock:
            if _HDR.unpack_from(self.buf, off)[0] != cid:
                return False
            self.buf[off:off + _REC] = bytes(_REC)
            return True

    def set_owner(self, cid: int, owner: int, owner_pid: int,
                  state: int = S_CONN_OK) -> None:
        off = self._off(cid)
        with self.lock:
            h = list(_HDR.unpack_from(self.buf, off))
            if h[0] != cid:
                return
            h[1], h[2], h[3] = state, owner, owner_pid
            _HDR.pack_into(self.buf, off, *h)

    def set_state(self, cid: int, state: int) -> None:
        off = self._off(cid)
        with self.lock:
            if _HDR.unpack_from(self.buf, off)[0] == cid:
                struct.pack_into("<i", self.buf, off + 8, state)

    def touch(self, cid: int, now: float) -> None:
        """Last activity (one aligned 8-byte store: no lock needed)."""
        off = self._off(cid)
        if _HDR.unpack_from(self.buf, off)[0] == cid:
            struct.pack_into("<d", self.buf, off + 40, now)

    def keep(self, cid: int, until: float) -> None:
        """Keep the connection open until then whatever its idle time
        (registrar's tcp_persistent_flag; 0: tcp_connection_lifetime
        again); under the table lock, so that a record freed and reused
        meanwhile is not touched."""
        off = self._off(cid)
        with self.lock:
            if _HDR.unpack_from(self.buf, off)[0] == cid:
                struct.pack_into("<d", self.buf, off + _KEEP_OFF, until)

    def kept_until(self, cid: int) -> float:
        off = self._off(cid)
        return struct.unpack_from("<d", self.buf, off + _KEEP_OFF)[0]

    def add_alias(self, cid: int, key: bytes) -> bool:
        off = self._off(cid)
        with self.lock:
            h = list(_HDR.unpack_from(self.buf, off))
            if h[0] != cid:
                return False
            base = off + _HDR_SIZE
            for i in range(1 + h[5]):
                if bytes(self.buf[base + i * _KEY:base + (i + 1) * _KEY]) \
                        == key:
                    return True
            if h[5] >= MAX_ALIASES:
                return False
            h[5] += 1
            p = base + h[5] * _KEY
            self.buf[p:p + _KEY] = key
            _HDR.pack_into(self.buf, off, *h)
            return True

    def keys(self, cid: int):
        off = self._off(cid)
        h = _HDR.unpack_from(self.buf, off)
        base = off + _HDR_SIZE
        return [bytes(self.buf[base + i * _KEY:base + (i + 1) * _KEY])
                for i in range(1 + h[5])]

    def find(self, key: bytes) -> int:
        """The id of a usable connection whose peer or an alias is key."""
        with self.lock:
            data = bytes(self.buf)
        pos = data.find(key)
        while pos >= 0:
            rel = pos % _REC
            if rel >= _HDR_SIZE and (rel - _HDR_SIZE) % _KEY == 0:
                off = pos - rel
                h = _HDR.unpack_from(data, off)
                if h[0] and h[1] == S_CONN_OK and \
                        (rel - _HDR_SIZE) // _KEY <= h[5]:
                    return h[0]
            pos = data.find(key, pos + 1)
        return 0

    def all(self):
        with self.lock:
            data = bytes(self.buf)
        out = []
        for i in range(self.size):
            off = i * _REC
            h = _HDR.unpack_from(data, off)
            if h[0]:
                base = off + _HDR_SIZE
                keys = [data[base + j * _KEY:base + (j + 1) * _KEY]
                        for j in range(1 + h[5])]
                out.append((h, keys))
        return out

    def count(self) -> int:
        return len(self.all())


# ------------------------------------------------------------ set-up

def enabled() -> bool:
    return any(si.proto == "tcp" for si in config.settings.sockets)


def raise_fd_limit(want: int) -> None:
    """Room for the connections: the soft RLIMIT_NOFILE up to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError) as e:
            log.LM_WARN(f"cannot raise the open files limit to {new}: {e}")


def open_tcp(si, backlog: int = 1024) -> socket.socket:
    sock = socket.socket(si.af, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if si.af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((si.host, si.port))
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot bind {si.name}: {e.strerror}") \
            from None
    sock.setblocking(False)
    si.port = sock.getsockname()[1]
    si.sock = sock
    return sock


def init_table() -> None:
    """The table (attendant, before the fork)."""
    global table
    s = config.settings
    raise_fd_limit(s.tcp_max_connections * 2 + 256)
    table = ConnTable(s.tcp_max_connections)


def plan_channels(nslots: int, tcp_main: int, workers) -> None:
    """One channel per process slot (attendant, before the fork)."""
    global _chan_ends, _worker_slots, main_slot
    close_channels()
    _chan_ends = [None]
    for _ in range(1, nslots):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.setblocking(False)
        b.setblocking(False)
        _chan_ends.append((a, b))
    _worker_slots = list(workers)
    main_slot = tcp_main


def close_channels() -> None:
    global _chan_ends
    for e in _chan_ends:
        if e:
            e[0].close()
            e[1].close()
    _chan_ends = []


def _my_chan() -> Optional[socket.socket]:
    from .. import pt
    me = pt.my_id
    if me is None or not 0 < me < len(_chan_ends):
        return None
    return _chan_ends[me][1]


def _sock_index(si) -> int:
    try:
        return config.settings.sockets.index(si)
    except ValueError:
        return -1


def _sock_at(i: int):
    socks = config.settings.sockets
    return socks[i] if 0 <= i < len(socks) else None


# ------------------------------------------------------------ TCP main

def tcp_main_loop() -> None:
    """The TCP main process: accept, hand over, serve descriptors, expire."""
    from .. import pt
    s = config.settings
    sel = selectors.DefaultSelector()
    for si in s.sockets:
        if si.proto == "tcp" and si.sock is not None:
            sel.register(si.sock, selectors.EVENT_READ, ("listen", si))
    for sid in range(1, len(_chan_ends)):
        if sid != main_slot:
            sel.register(_chan_ends[sid][0], selectors.EVENT_READ,
                         ("chan", sid))
    fds: Dict[int, socket.socket] = {}     # conn id -> our copy
    rr = [0]
    last_sweep = 0.0

    waiting = deque()       # (cid, sock, since): no worker could take it

    def try_hand(cid, sock):
        """Round robin over the live workers; a worker whose channel is
        full is skipped.  True: handed; False: every channel is full;
        None: no live worker."""
        live = [(w, pt.get(w).pid) for w in _worker_slots]
        live = [x for x in live if x[1]]
        if not live:
            return None
        rr[0] += 1
        msg = [_OP.pack(OP_NEW, cid)]
        for i in range(len(live)):
            w, pid = live[(rr[0] + i) % len(live)]
            try:
                socket.send_fds(_chan_ends[w][0], msg, [sock.fileno()])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                log.LM_ERR(f"tcp main: cannot hand connection {cid} "
                           f"to process {w}: {e}")
                continue
            table.set_owner(cid, w, pid)
            return True
        return False

    def hand_over(cid, sock):
        """Hand the connection to a worker; when every worker's channel is
        full (all busy), it waits in our queue (the TCP main never blocks
        on a worker) and is handed as soon as one reads."""
        if not waiting:
            r = try_hand(cid, sock)
            if r is not False:
                if r is None:
                    log.LM_ERR(f"tcp main: no TCP worker for connection "
                               f"{cid}")
                return bool(r)
        waiting.append((cid, sock, time.monotonic()))
        return True

    def hand_waiting():
        now = time.monotonic()
        while waiting:
            cid, sock, since = waiting[0]
            if fds.get(cid) is not sock:        # closed meanwhile
                waiting.popleft()
                continue
            r = try_hand(cid, sock)
            if r:
                waiting.popleft()
                continue
            if now - since < HANDOVER_WAIT:
                return
            waiting.popleft()
            log.LM_ERR(f"tcp main: no TCP worker took connection {cid} "
                       f"within {HANDOVER_WAIT:.0f}s; closed")
            close_conn(cid, "every TCP worker is busy")

    def close_conn(cid, why):
        sock = fds.pop(cid, None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if table.free(cid):
            _count("closed_conns")
            log.LM_DBG(f"tcp: connection {cid} closed ({why})")

    while True:
        log.refresh()
        try:
            events = sel.select(0.02 if waiting else 1.0)
        except InterruptedError:
            continue
        if waiting:
            hand_waiting()
        for key, _ in events:
            kind, arg = key.data
            if kind == "listen":
                _accept(arg, fds, hand_over)
                continue
            m = _recv_op(key.fileobj)
            if m is None:
                continue
            op, cid, got = m
            if op == OP_GET:
                sock = fds.get(cid)
                try:
                    if sock is not None and table.get(cid) is not None:
                        socket.send_fds(key.fileobj, [_OP.pack(OP_FD, cid)],
                                        [sock.fileno()])
                    else:
                        key.fileobj.send(_OP.pack(OP_NOFD, cid))
                except OSError:
                    pass
            elif op == OP_ADD:
                if not got:
                    continue
                sock = socket.socket(fileno=got[0])
                for fd in got[1:]:
                    os.close(fd)
                fds[cid] = sock
                if not hand_over(cid, sock):
                    close_conn(cid, "no TCP worker")
            elif op == OP_CLOSE:
                close_conn(cid, "closed by its worker")
            elif op == OP_BAD:
                close_conn(cid, "write failed")
            else:
                for fd in got:
                    os.close(fd)
        now = time.time()
        if now - last_sweep >= 1.0:
            last_sweep = now
            _sweep(fds, close_conn, now)


def _accept(si, fds, hand_over) -> None:
    s = config.settings
    for _ in range(64):
        try:
            sock, addr = si.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.LM_ERR(f"tcp: accept on {si.name} failed: {e}")
            return
        if len(fds) >= s.tcp_max_connections:
            _count("refused_conns")
            log.LM_WARN(f"tcp: connection from {addr[0]}:{addr[1]} refused: "
                        f"tcp_max_connections ({s.tcp_max_connections}) "
                        f"reached")
            sock.close()
            continue
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = table.alloc(peer_key(si.af, addr[0], addr[1]), _sock_index(si),
                          local_port=si.port)
        if not cid:
            _count("refused_conns")
            sock.close()
            continue
        fds[cid] = sock
        _count("opened_conns")
        if not hand_over(cid, sock):
            fds.pop(cid, None)
            sock.close()
            table.free(cid)


def _sweep(fds, close_conn, now) -> None:
    """Idle connections (tcp_connection_lifetime), connections of dead or
    respawned workers, records nobody holds."""
    from .. import pt
    life = config.settings.tcp_connection_lifetime
    pids = {}
    for h, _ in table.all():
        cid, owner, opid = h[0], h[2], h[3]
        if owner > 0:
            pid = pids.get(owner)
            if pid is None:
                pid = pids[owner] = pt.get(owner).pid
            if pid != opid:
                close_conn(cid, f"its worker (process {owner}) died")
                continue
        if now - h[8] > life and now > table.kept_until(cid):
            close_conn(cid, "lifetime expired")
        elif cid not in fds and now - h[7] > 5:
            table.free(cid)         # given to nobody (its ADD was lost)


# ------------------------------------------------------------ workers

class _Conn:
    __slots__ = ("id", "sock", "buf", "src", "si", "started", "last_touch")

    def __init__(self, cid, sock, src, si):
        self.id = cid
        self.sock = sock
        self.buf = b""
        self.src = src
        self.si = si
        self.started = 0.0        # when the pending partial message began
        self.last_touch = 0.0


_held: Dict[int, _Conn] = {}      # the worker's own connections, by id
_pending_new = []                 # (cid, fd) received while waiting for GET


def tcp_worker_loop(handler) -> None:
    """A TCP worker: read the connections the TCP main hands us."""
    from .. import pt, statistics
    chan = _my_chan()
    sel = selectors.DefaultSelector()
    sel.register(chan, selectors.EVENT_READ, None)
    me = pt.my_id
    load = statistics.load
    report = load.report if load.declared(me) else None
    clock = time.monotonic_ns
    win_start = clock()
    busy = 0
    last_check = 0.0

    mypid = os.getpid()

    def adopt(cid, fd):
        h = table.get(cid)
        sock = socket.socket(fileno=fd)
        if h is None:
            sock.close()
            return
        if h[3] != mypid:
            # handed to the process that held this slot before us (it died
            # before reading its channel): ours now, or the TCP main would
            # close it as a dead worker's
            table.set_owner(cid, me, mypid, h[1])
        si = _sock_at(h[4])
        try:
            peer = sock.getpeername()[:2]
        except OSError:
            peer = key_addr(table.keys(cid)[0])
        c = _Conn(cid, sock, peer, si)
        _held[cid] = c
        sel.register(sock, selectors.EVENT_READ, c)

    def drop(c, why):
        _held.pop(c.id, None)
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        table.set_state(c.id, S_CONN_EOF)
        _tell_main(OP_CLOSE, c.id)
        log.LM_DBG(f"tcp: connection {c.id} from {c.src[0]}:{c.src[1]} "
                   f"closed: {why}")

    global _drop
    _drop = drop
    while True:
        log.refresh()
        while _pending_new:
            adopt(*_pending_new.pop(0))
        try:
            events = sel.select(1.0)
        except InterruptedError:
            continue
        t0 = clock()
        for key, _ in events:
            c = key.data
            if c is None:
                _read_chan(chan, adopt)
                continue
            if c.id not in _held:
                continue
            try:
                data = c.sock.recv(RECV_CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                drop(c, str(e))
                continue
            if not data:
                drop(c, "EOF")
                continue
            now = time.time()
            if now - c.last_touch >= 1.0:
                c.last_touch = now
                table.touch(c.id, now)
            why = _frame(c, data, handler)
            if why is not None:
                drop(c, why)
        now = time.time()
        if now - last_check >= 0.25:       # slow senders, a few times a s
            last_check = now
            slow = config.settings.tcp_max_msg_time
            for c in [c for c in _held.values() if c.started]:
                if now - c.started > slow:
                    drop(c, f"message not complete in {slow}s")
        t1 = clock()
        busy += t1 - t0
        if t1 - win_start >= statistics.LOAD_WINDOW_NS and report:
            report(me, busy, t1 - win_start)
            win_start = t1
            busy = 0


_drop = None


def _recv_op(chan):
    """One control message from a unix channel: (op, connection id, the
    descriptors it carried), or None when none is whole (the descriptors
    of a malformed one closed)."""
    try:
        data, got, _, _ = socket.recv_fds(chan, 64, 1)
    except (BlockingIOError, InterruptedError):
        return None
    if len(data) != _OP.size:
        for fd in got:
            os.close(fd)
        return None
    op, cid = _OP.unpack(data)
    return op, cid, got


def _read_chan(chan, adopt) -> None:
    while True:
        try:
            data, got, _, _ = socket.recv_fds(chan, 64, 1)
        except (BlockingIOError, InterruptedError):
            return
        if len(data) == _OP.size:
            op, cid = _OP.unpack(data)
            if op == OP_NEW and got:
                adopt(cid, got[0])
                got = got[1:]
        for fd in got:
            os.close(fd)


_CL = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)",
                 re.I | re.M)


def _frame(c: _Conn, data: bytes, handler) -> Optional[str]:
    """Cut the stream into SIP messages; a reason to close, or None."""
    buf = c.buf + data if c.buf else data
    while buf:
        if buf[:1] in (b"\r", b"\n"):
            if buf.startswith(b"\r\n\r\n"):           # RFC 5626 keep-alive
                buf = buf[4:]
                if crlf_pingpong:
                    _send_on(c.id, c.sock, b"\r\n")
                continue
            if buf in (b"\r", b"\r\n", b"\r\n\r"):
                break                                  # wait for the rest
            buf = buf[2:] if buf.startswith(b"\r\n") else buf[1:]
            continue
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > max_msg_size:
                _reject(c, buf, 513, "Message Too Large")
                return "headers larger than the maximum message size"
            break
        head = buf[:end + 2]
        m = _CL.search(head)
        if m is None:
            _reject(c, head, 400, "Bad Request (missing Content-Length)")
            return "no Content-Length"
        v = m.group(1).strip()
        if not v.isdigit() or len(v) > 9:
            _reject(c, head, 400, "Bad Request (bad Content-Length)")
            return "bad Content-Length"
        for m2 in _CL.finditer(head, m.end()):
            v2 = m2.group(1).strip()
            if not v2.isdigit() or int(v2) != int(v):
                _reject(c, head, 400,
                        "Bad Request (conflicting Content-Length)")
                return "conflicting Content-Length headers"
        total = end + 4 + int(v)
        if total > max_msg_size:
            _reject(c, head, 513, "Message Too Large")
            return f"message of {total} bytes"
        if len(buf) < total:
            break
        msg, buf = buf[:total], buf[total:]
        c.started = 0.0
        try:
            handler(msg, c.src, c.si, c.id)
        except Exception as e:
            log.LM_ERR(f"error while processing a message from "
                       f"{c.src[0]}:{c.src[1]} over TCP: "
                       f"{type(e).__name__}: {e}")
        if c.id not in _held:
            return None
    c.buf = buf
    if not buf.strip(b"\r\n"):
        c.started = 0.0          # nothing or a CRLF: no message begun
    elif not c.started:
        c.started = time.time()
    return None


def _reject(c: _Conn, head: bytes, code: int, reason: str) -> None:
    from ..receive import raw_error_reply
    data = raw_error_reply(head + b"\r\n", code, reason)
    if data is not None:
        _send_on(c.id, c.sock, data)


# ------------------------------------------------------------ sending

_cache: "OrderedDict[int, socket.socket]" = OrderedDict()
_CACHE_MAX = 64
_peer_cache: Dict[bytes, int] = {}


def _tell_main(op: int, cid: int, fd: int = -1) -> None:
    chan = _my_chan()
    if chan is None:
        return
    deadline = time.monotonic() + 1.0
    while True:
        try:
            if fd >= 0:
                socket.send_fds(chan, [_OP.pack(op, cid)], [fd])
            else:
                chan.send(_OP.pack(op, cid))
            return
        except (BlockingIOError, InterruptedError):
            left = deadline - time.monotonic()
            if left <= 0:
                log.LM_ERR("tcp: the TCP main process is not reading its "
                           "channel")
                return
            select.select([], [chan], [], left)
        except OSError as e:
            log.LM_ERR(f"tcp: cannot reach the TCP main process: {e}")
            return


def _fetch_fd(cid: int) -> Optional[socket.socket]:
    """The descriptor of connection cid, from the TCP main."""
    chan = _my_chan()
    if chan is None:
        return None
    _tell_main(OP_GET, cid)
    deadline = time.monotonic() + 1.0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            log.LM_ERR(f"tcp: the TCP main did not answer for connection "
                       f"{cid}")
            return None
        r, _, _ = select.select([chan], [], [], left)
        if not r:
            continue
        m = _recv_op(chan)
        if m is None:
            continue
        op, rid, got = m
        if op == OP_NEW and got:
            _pending_new.append((rid, got[0]))      # a worker's new conn
            continue
        if rid != cid:
            for fd in got:
                os.close(fd)
            continue
        if op == OP_FD and got:
            for fd in got[1:]:
                os.close(fd)
            return socket.socket(fileno=got[0])
        for fd in got:
            os.close(fd)
        return None


def _sock_for(cid: int) -> Optional[socket.socket]:
    c = _held.get(cid)
    if c is not None:
        return c.sock
    s = _cache.get(cid)
    if s is not None:
        _cache.move_to_end(cid)
        return s
    s = _fetch_fd(cid)
    if s is None:
        return None
    _cache_put(cid, s)
    return s


def _cache_put(cid: int, sock: socket.socket) -> None:
    """Keep a descriptor of connection cid.  Descriptors of connections
    closed since (their record gone or not usable) are closed first, then
    the least recently used beyond _CACHE_MAX: a process that sends on many
    short-lived connections keeps no copy of the dead ones."""
    for old in [k for k in _cache
                if (h := table.get(k)) is None or h[1] != S_CONN_OK]:
        _cache.pop(old).close()
    _cache[cid] = sock
    while len(_cache) > _CACHE_MAX:
        _, old = _cache.popitem(last=False)
        old.close()


def _forget(cid: int) -> None:
    s = _cache.pop(cid, None)
    if s is not None:
        s.close()


def _send_on(cid: int, sock: socket.socket, data: bytes) -> bool:
    """Write data whole, waiting at most tcp_send_timeout; a write that
    cannot finish closes the connection (the TCP main shuts it down)."""
    lk = table.wlocks[cid % table.size]
    deadline = None
    view = memoryview(data)
    ok = True
    with lk:
        h = table.get(cid)
        if h is None or h[1] != S_CONN_OK:
            # closed while we waited for the lock (e.g. the write before
            # ours timed out): do not wait on it again
            _forget(cid)
            return False
        while view:
            try:
                n = sock.send(view)
                view = view[n:]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                log.LM_ERR(f"tcp: write on connection {cid} failed: {e}")
                ok = False
                break
            now = time.monotonic()
            if deadline is None:
                deadline = now + send_timeout_ms / 1000.0
            if now >= deadline:
                log.LM_ERR(f"tcp: write on connection {cid} timed out "
                           f"after {send_timeout_ms} ms (the peer does not "
                           f"read): closing it")
                _count("send_timeouts")
                ok = False
                break
            select.select([], [sock], [], deadline - now)
    if not ok:
        table.set_state(cid, S_CONN_BAD)
        _tell_main(OP_BAD, cid)
        _forget(cid)
    return ok


def _connect(si, addr) -> int:
    """A new connection to addr from si's address; its id (0 failed)."""
    s = config.settings
    af = _af_of(addr[0])
    sock = socket.socket(af, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if si is not None and si.af == af:
            sock.bind((si.host, 0))
        rc = sock.connect_ex(addr)
        if rc not in (0, errno.EINPROGRESS):
            raise OSError(rc, os.strerror(rc))
        if rc:
            _, w, _ = select.select([], [sock], [],
                                    s.tcp_connect_timeout / 1000.0)
            if not w:
                raise OSError(errno.ETIMEDOUT, "connect timed out")
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as e:
        sock.close()
        log.LM_ERR(f"tcp: cannot connect to {addr[0]}:{addr[1]}: "
                   f"{e.strerror or e}")
        _count("refused_conns")
        return 0
    cid = table.alloc(peer_key(af, addr[0], addr[1]), _sock_index(si),
                      local_port=sock.getsockname()[1])
    if not cid:
        sock.close()
        log.LM_ERR("tcp: tcp_max_connections reached")
        _count("refused_conns")
        return 0
    _count("opened_conns")
    _tell_main(OP_ADD, cid, sock.fileno())
    _cache_put(cid, sock)
    return cid


def find_conn(addr) -> int:
    try:
        key = peer_key(_af_of(addr[0]), addr[0], int(addr[1]))
    except (OSError, ValueError):
        return 0
    cid = _peer_cache.get(key, 0)
    if cid:
        h = table.get(cid)
        if h is not None and h[1] == S_CONN_OK:
            return cid
        _peer_cache.pop(key, None)
        _forget(cid)
    cid = table.find(key)
    if cid:
        if len(_peer_cache) > 1024:
            _peer_cache.clear()
        _peer_cache[key] = cid
    return cid


def send(si, data: bytes, addr, conn_id: int = 0) -> bool:
    """Send data to addr over TCP: on connection conn_id when it is still
    open, else on an open connection to addr (or one of its aliases), else
    on a new one."""
    if table is None:
        log.LM_ERR("tcp: no TCP socket is configured")
        return False
    cid = 0
    if conn_id:
        h = table.get(conn_id)
        if h is not None and h[1] == S_CONN_OK:
            cid = conn_id
    if not cid:
        cid = find_conn(addr)
    for _ in range(2):
        if not cid:
            cid = _connect(si, (addr[0], int(addr[1])))
            if not cid:
                return False
        sock = _sock_for(cid)
        if sock is None:
            table.set_state(cid, S_CONN_BAD)
            cid = 0
            continue
        return _send_on(cid, sock, data)
    return False


def keep_open(cid: int, until: float) -> bool:
    """Connection cid stays open until then (0: its idle lifetime again);
    False when it is gone."""
    if table is None or not cid or table.get(cid) is None:
        return False
    table.keep(cid, until)
    return True


def add_alias(cid: int, ip: str, port: int) -> bool:
    if table is None or not cid:
        return False
    try:
        return table.add_alias(cid, peer_key(_af_of(ip), ip, port))
    except OSError:
        return False


def list_conns():
    """MI list_tcp_conns: OpenSIPS's reply shape."""
    out = []
    life = config.settings.tcp_connection_lifetime
    for h, keys in table.all() if table is not None else ():
        ip, port = key_addr(keys[0])
        si = _sock_at(h[4])
        local = f"{si.host if si else '?'}:{h[6]}"
        ts = time.localtime(max(h[8] + life, table.kept_until(h[0])))
        item = {"ID": h[0], "Type": "tcp", "State": h[1],
                "Remote": f"{ip}:{port}", "Local": local,
                "Lifetime": time.strftime("%Y-%m-%d %H:%M:%S", ts)}
        aliases = [key_addr(k)[1] for k in keys[1:]]
        if aliases:
            item["Alias port"] = aliases[0] if len(aliases) == 1 \
                else aliases
        out.append(item)
    return {"Connections": out}
