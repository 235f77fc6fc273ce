"""UDP sockets: opened in the attendant before fork, read by the receivers.

The active receivers of a socket wait on the same inherited socket (each in
its own epoll set, ``EPOLLEXCLUSIVE``); the kernel wakes one of them per
datagram.  With ``udp_workers_standby`` (:class:`RcvGroup`) the first
receiver is active and the others stand by until it is saturated or stuck;
without it all are active.  The loop is the hot path: receive, hand the
bytes to the core, repeat.
"""
from __future__ import annotations

import os
import select
import socket
import sys
import time

from .. import log

MAX_DATAGRAM = 65535


def open_udp(si, rcvbuf: int = 0) -> socket.socket:
    """Bind si (a config.SocketInfo); port 0 picks a free port, written back
    into si.port.  rcvbuf > 0 sets SO_RCVBUF (the kernel doubles it)."""
    sock = socket.socket(si.af, socket.SOCK_DGRAM)
    try:
        if si.af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if rcvbuf > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((si.host, si.port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot bind {si.name}: {e.strerror}") \
            from None
    si.port = sock.getsockname()[1]
    si.sock = sock
    return sock


def udp_rcv_loop(si, handler, group=None, index: int = 0) -> None:
    """Receive forever on si, calling handler(buf, src, si) per datagram.
    A handler that raises is logged; the receiver goes on.

    The loop measures its load (``load:load-proc-<id>``): the time from
    ``recvfrom`` returning to the end of the handler is busy time; at the
    first datagram after a window of ``LOAD_WINDOW_NS`` it reports the
    busy share of that window (waiting for a datagram is idle time).

    The receivers of a socket sleep in ``epoll_wait`` with
    ``EPOLLEXCLUSIVE`` (Linux), not in a blocking ``recvfrom``: a datagram
    wakes one sleeping receiver, which then reads it without blocking
    (``epoll_wait`` returns at once while datagrams are waiting; a receiver
    that finds the socket emptied by another goes back to sleep).  Woken
    through epoll, a receiver moves to another CPU half as often as a
    ``recvfrom`` sleeper (at 1,500 REGISTERs/s: 1,900 against 3,700
    migrations in 8 s, about 12% less CPU per REGISTER: a Python process
    waking on a cold CPU pays for its large working set).  Where epoll is
    missing the loop blocks in ``recvfrom``.

    With ``group`` (a :class:`RcvGroup`; ``index`` is this receiver's place
    in it) the receivers of the socket share the work as the group says:
    only the active ones wait on the socket, the others stand by (see
    :class:`RcvGroup`).

    While ``async()``/``launch()`` operations are pending
    (:mod:`opensipy.async_engine`) the loop polls the socket together with
    their descriptors and deadlines and resumes the due ones (that time
    counts as busy too)."""
    from .. import async_engine, pt, statistics
    recv = si.sock.recvfrom
    tasks = async_engine.tasks
    async_engine.reactor = True
    refresh = log.refresh
    clock = time.monotonic_ns
    load = statistics.load
    me = pt.my_id
    report = load.report if me is not None and load.declared(me) else None
    window = statistics.LOAD_WINDOW_NS
    win_start = clock()
    busy = 0
    member = group.member(index, si.sock) if group is not None else None
    if member is not None:
        wait = member.wait
        # the group's own short window (see RcvGroup: asking for help)
        sat_window = SAT_WINDOW_NS
        sat_start = win_start
        sat_busy = 0
        mark, me_busy = group.v, member.base + 1   # my "busy since"
        arm, arm_fd, rearm_at = group.lib.osy_timerfd_arm, group.watch_fd, 0
        if not member.active:
            member.standby()
            win_start = sat_start = clock()
    else:
        wait = _exclusive_waiter(si.sock)
    while True:
        if tasks:
            # async() / launch() operations pending: wait for the socket,
            # their descriptors and the nearest deadline together
            got, spent = _poll_with_tasks(si.sock, async_engine, clock)
            busy += spent          # resume routes are work too
            if member is not None:
                sat_busy += spent
            if got is None:
                continue
            buf, src = got
        elif wait is not None:
            # until a datagram is waiting (see above); then read it unless
            # another receiver was quicker
            try:
                if wait():
                    buf, src = recv(MAX_DATAGRAM, DONTWAIT)
                elif member is not None:
                    buf = None     # a group's receiver, idle for a window
                else:
                    continue
            except (BlockingIOError, InterruptedError):
                continue
        else:
            try:
                buf, src = recv(MAX_DATAGRAM)
            except InterruptedError:
                continue
        if buf is None:
            t1 = clock()           # only the load window below
        else:
            t0 = clock()
            if member is not None:
                mark[me_busy] = t0
                if t0 >= rearm_at:         # the watch timer (RcvGroup)
                    rearm_at = t0 + REARM_NS
                    arm(arm_fd, STUCK_NS)
            refresh()          # MI log_level may have changed our level
            try:
                handler(buf, src, si)
            except Exception as e:  # one bad message must not kill it
                log.LM_ERR(f"error while processing a message from "
                           f"{src[0]}:{src[1]} on {si.name}: "
                           f"{type(e).__name__}: {e}")
            t1 = clock()
            busy += t1 - t0
            if member is not None:
                mark[me_busy] = 0
                sat_busy += t1 - t0
                if t1 - sat_start >= sat_window:
                    if sat_busy * SAT_DEN >= (t1 - sat_start) * SAT_NUM:
                        member.call_help()
                    sat_start = t1
                    sat_busy = 0
        if t1 - win_start >= window:
            if report is not None:
                report(me, busy, t1 - win_start)
            if member is not None and member.window_done(busy,
                                                         t1 - win_start):
                member.standby()
                t1 = sat_start = clock()
                sat_busy = 0
            win_start = t1
            busy = 0


# --- the receivers of one socket: active and standing by -------------------

SAT_WINDOW_NS = 20_000_000      # an active receiver's short window ...
SAT_NUM, SAT_DEN = 4, 5         # ... busy 80% of it: it asks for help
STUCK_NS = 20_000_000           # inside one datagram this long: stuck
REARM_NS = STUCK_NS // 2        # an active receiver re-arms the watch
                                # timer at most this often
LEAVE_PERMILLE = 500            # an extra leaves when the others could
                                # carry the group's load under 50% each
LOAD_WINDOW_S = 1.0             # an idle active receiver's window (s)

_STANDBY, _ACTIVE = 0, 1
_FIELDS = 3                     # per receiver: state, busy since, load


class RcvGroup:
    """The receivers of one UDP socket (``udp_workers`` of them), made in
    the attendant before the fork when the socket has two or more and
    ``udp_workers_standby`` is on.

    A Python receiver woken on a cold CPU costs about twice what a warm
    one does, and with every receiver waiting on the socket a burst of two
    datagrams wakes two of them (the second while the first is busy).  So
    only the *active* receivers wait on the socket; the others *stand by*
    and join when needed:

    * the lead (index 0) is always active; the others start standing by;
    * an active receiver busy for 80% or more of a 20 ms window asks for
      help: it adds one to the group's eventfd (``join_fd``, a semaphore),
      which wakes one standby, which joins;
    * an active receiver arms the group's timerfd (``watch_fd``) for
      ``STUCK_NS`` at the start of a datagram (at most every ``REARM_NS``;
      never disarmed).  When it expires it wakes one standby, which looks:
      when every active receiver has been inside one datagram for
      ``STUCK_NS`` (a slow script, a blocking call, a receiver that died
      holding one) and a datagram is waiting, it joins; while they are all
      busy it arms the timer again (for when the youngest would be stuck,
      or every ``STUCK_NS`` while all are stuck and nothing waits); as soon
      as one is free it goes back to sleep.  So datagrams waiting behind
      stuck receivers bring a standby in within 20-40 ms, and the standbys
      sleep while the traffic flows (a quiet spell longer than 10 ms wakes
      one once);
    * an active receiver other than the lead leaves again (stands by) at
      the end of a load window (1 s) in which the active receivers' loads,
      summed, would keep one fewer of them under 50% each, unless another
      active one is stuck or it has async operations pending.

    Both descriptors are waited on with ``EPOLLEXCLUSIVE``, so one standby
    is woken per event.  Shared state: an int64 array in shm, ``_FIELDS``
    per receiver, each written by its receiver only (its state, the
    monotonic time its current datagram started or 0, its last window's
    load in per mille).  A respawned receiver starts as its index says."""

    def __init__(self, n: int):
        from .. import shm
        if n < 2:
            raise ValueError("a receiver group needs two receivers or more")
        self.n = n
        self.block = shm.shm_malloc(8 * _FIELDS * n, "core")
        self.block.buffer[:] = bytes(8 * _FIELDS * n)
        self.v = self.block.buffer.cast("q")
        self.v[0] = _ACTIVE             # the lead, from the start
        self.join_fd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK
                                  | os.EFD_CLOEXEC)
        self.lib = shm.lib              # osy_timerfd_* (native/shm.c)
        self.watch_fd = shm.lib.osy_timerfd_open()
        if self.watch_fd < 0:
            e = shm.ffi.errno
            os.close(self.join_fd)
            raise OSError(e, f"timerfd_create: {os.strerror(e)}")

    def close(self) -> None:
        for fd in (self.join_fd, self.watch_fd):
            if fd >= 0:
                os.close(fd)
        self.join_fd = self.watch_fd = -1

    def member(self, index: int, sock):
        """This process's side of the group (made only where
        :func:`have_groups`)."""
        return _Member(self, index, sock)

    def states(self) -> list:
        v = self.v
        return [v[k * _FIELDS] for k in range(self.n)]

    def has_standby(self) -> bool:
        v = self.v
        return any(v[k * _FIELDS] == _STANDBY for k in range(1, self.n))

    def arm(self, ns: int) -> None:
        self.lib.osy_timerfd_arm(self.watch_fd, ns)

    def look(self, now: int, waiting) -> bool:
        """What a standby woken by the watch timer does: True when it
        should join (``waiting()``: a datagram waits, and the active
        receivers are all stuck); otherwise, while every active receiver
        is busy, it arms the timer again (for when the youngest would be
        stuck, or, all stuck with nothing waiting, one ``STUCK_NS`` on)."""
        v = self.v
        youngest = None
        for k in range(self.n):
            if v[k * _FIELDS] != _ACTIVE:
                continue
            since = v[k * _FIELDS + 1]
            if not since:
                return False           # one is free: it will read
            if youngest is None or since > youngest:
                youngest = since
        if youngest is None:
            return False
        left = youngest + STUCK_NS - now
        if left > 0:
            self.arm(left)
            return False
        if waiting():
            return True
        self.arm(STUCK_NS)
        return False


class _Member:
    """One receiver's side of its :class:`RcvGroup`."""

    def __init__(self, group: RcvGroup, index: int, sock):
        self.g = group
        self.k = index
        self.base = index * _FIELDS
        # two epoll sets, each kept for the process's life: the socket
        # (waited on while active), the group's descriptors (on standby).
        # With EPOLLEXCLUSIVE a set nobody waits on is passed over.
        self.ep = _exclusive_epoll(sock.fileno())
        self.ep_standby = _exclusive_epoll(group.join_fd, group.watch_fd)
        self.peek = select.poll()
        self.peek.register(sock.fileno(), select.POLLIN)
        v = group.v
        v[self.base + 1] = 0
        v[self.base + 2] = 0
        v[self.base] = _ACTIVE if index == 0 else _STANDBY
        self.active = index == 0

    def wait(self) -> bool:
        """Wait for the socket (active); True when it is readable, False
        after a load window's time without a datagram."""
        return bool(self.ep.poll(LOAD_WINDOW_S))

    def call_help(self) -> None:
        """This active receiver was saturated: one standby joins."""
        if self.g.has_standby():
            try:
                os.write(self.g.join_fd, (1).to_bytes(8, sys.byteorder))
            except BlockingIOError:
                pass

    def window_done(self, busy: int, length: int) -> bool:
        """End of a load window; True when this receiver should leave."""
        g, v = self.g, self.g.v
        mine = min(1000, busy * 1000 // length) if length > 0 else 0
        v[self.base + 2] = mine
        if self.k == 0:
            return False
        from .. import async_engine
        if async_engine.tasks:
            return False
        total, active = 0, 0
        now = time.monotonic_ns()
        for k in range(g.n):
            if v[k * _FIELDS] != _ACTIVE:
                continue
            active += 1
            total += v[k * _FIELDS + 2]
            since = v[k * _FIELDS + 1]
            if k != self.k and since and now - since >= STUCK_NS:
                return False           # another one is stuck: stay
        if active < 2 or total >= LEAVE_PERMILLE * (active - 1):
            return False
        v[self.base + 2] = 0
        v[self.base] = _STANDBY
        self.active = False
        return True

    def standby(self) -> None:
        """Stand by until this receiver joins the active ones."""
        g = self.g
        join_fd, watch_fd = g.join_fd, g.watch_fd
        poll = self.ep_standby.poll
        peek = self.peek.poll
        clock = time.monotonic_ns

        def waiting():
            return bool(peek(0))

        while not self.active:
            for fd, _ in poll():
                if fd == join_fd:
                    try:
                        os.read(join_fd, 8)     # one request
                    except BlockingIOError:     # another standby took it
                        continue
                    self.active = True
                    break
                if fd == watch_fd:
                    try:
                        os.read(watch_fd, 8)
                    except BlockingIOError:
                        continue
                    if g.look(clock(), waiting):
                        self.active = True
                        break
        g.v[self.base] = _ACTIVE


DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def have_groups() -> bool:
    """Whether receiver groups work here (epoll with EPOLLEXCLUSIVE)."""
    return _have_exclusive() and hasattr(os, "eventfd")


def _have_exclusive() -> bool:
    return bool(getattr(select, "EPOLLEXCLUSIVE", 0) and DONTWAIT
                and hasattr(select, "epoll"))


def _exclusive_waiter(sock):
    """A callable that sleeps until ``sock`` is readable, sharing wake-ups
    with the other receivers of the socket (``EPOLLEXCLUSIVE``); None where
    that is not available."""
    if not _have_exclusive():
        return None
    try:
        return _exclusive_epoll(sock.fileno()).poll
    except OSError:
        return None


def _exclusive_epoll(*fds):
    """An epoll set waiting for ``fds`` to be readable, each registered
    with ``EPOLLEXCLUSIVE`` (one waiter woken per event); closed again when
    a registration fails (OSError)."""
    ep = select.epoll()
    try:
        for fd in fds:
            ep.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
    except OSError:
        ep.close()
        raise
    return ep


def _poll_with_tasks(sock, engine, clock):
    """One turn of the receiver's reactor: resume the async tasks that are
    due, then read a datagram when one is waiting (without blocking: another
    receiver of the socket may have taken it).  Returns (datagram or None,
    nanoseconds spent resuming)."""
    sfd = sock.fileno()
    p = select.poll()
    p.register(sfd, select.POLLIN)
    for fd in engine.fds():
        p.register(fd, select.POLLIN)
    wait = engine.poll_timeout(time.monotonic())
    try:
        ready = p.poll(None if wait is None else int(wait * 1000) + 1)
    except InterruptedError:
        return None, 0
    t0 = clock()
    engine.run_ready([fd for fd, _ in ready if fd != sfd])
    spent = clock() - t0
    if not any(fd == sfd for fd, _ in ready):
        return None, spent
    try:
        return sock.recvfrom(MAX_DATAGRAM, socket.MSG_DONTWAIT), spent
    except (BlockingIOError, InterruptedError):
        return None, spent
