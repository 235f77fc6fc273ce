"""UDP sockets: opened in the attendant before fork, read by the receivers.

Every receiver of a socket waits on the same inherited socket (in its own
epoll set, ``EPOLLEXCLUSIVE``); the kernel wakes one of them per datagram.
The loop is the hot path: receive, hand the bytes to the core, repeat.
"""
from __future__ import annotations

import select
import socket
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


def udp_rcv_loop(si, handler) -> None:
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
    wait = _exclusive_waiter(si.sock)
    while True:
        if tasks:
            # async() / launch() operations pending: wait for the socket,
            # their descriptors and the nearest deadline together
            got, spent = _poll_with_tasks(si.sock, async_engine, clock)
            busy += spent          # resume routes are work too
            if got is None:
                continue
            buf, src = got
        elif wait is not None:
            # until a datagram is waiting (see above); then read it unless
            # another receiver was quicker
            try:
                wait()
                buf, src = recv(MAX_DATAGRAM, DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
        else:
            try:
                buf, src = recv(MAX_DATAGRAM)
            except InterruptedError:
                continue
        t0 = clock()
        refresh()              # MI log_level may have changed our level
        try:
            handler(buf, src, si)
        except Exception as e:  # one bad message must not kill the receiver
            log.LM_ERR(f"error while processing a message from "
                       f"{src[0]}:{src[1]} on {si.name}: "
                       f"{type(e).__name__}: {e}")
        t1 = clock()
        busy += t1 - t0
        if t1 - win_start >= window and report is not None:
            report(me, busy, t1 - win_start)
            win_start = t1
            busy = 0


DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def _exclusive_waiter(sock):
    """A callable that sleeps until ``sock`` is readable, sharing wake-ups
    with the other receivers of the socket (``EPOLLEXCLUSIVE``); None where
    that is not available."""
    flag = getattr(select, "EPOLLEXCLUSIVE", 0)
    if not flag or not DONTWAIT or not hasattr(select, "epoll"):
        return None
    ep = select.epoll()
    try:
        ep.register(sock.fileno(), select.EPOLLIN | flag)
    except OSError:
        ep.close()
        return None
    return ep.poll


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
