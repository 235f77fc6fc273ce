"""The UDP receive loop's wait: receivers of one socket sleep in their own
epoll sets with EPOLLEXCLUSIVE; a datagram that arrives while one receiver
is busy wakes another, and none is lost or read twice."""
import os
import signal
import socket
import time

from opensipy import config
from opensipy.net import udp
from server import free_port


def _receiver(si, wfd, hold):
    def handler(buf, src, si_):
        os.write(wfd, b"%d %s\n" % (os.getpid(), buf))
        if buf == b"slow":
            time.sleep(hold)
    try:
        udp.udp_rcv_loop(si, handler)
    finally:
        os._exit(0)


def test_a_busy_receiver_leaves_the_next_datagram_to_another():
    assert udp._exclusive_waiter(socket.socket(socket.AF_INET,
                                               socket.SOCK_DGRAM)) is not None
    si = config.parse_socket(f"udp:127.0.0.1:{free_port()}")
    udp.open_udp(si)
    r, w = os.pipe()
    pids = []
    try:
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _receiver(si, w, 1.0)
            pids.append(pid)
        os.close(w)
        time.sleep(0.3)            # both asleep in epoll_wait
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b"slow", ("127.0.0.1", si.port))
            time.sleep(0.2)        # one receiver is busy with it now
            for i in range(5):
                c.sendto(b"m%d" % i, ("127.0.0.1", si.port))
            deadline = time.monotonic() + 5
            out = b""
            while out.count(b"\n") < 6 and time.monotonic() < deadline:
                out += os.read(r, 4096)
        lines = [ln.split() for ln in out.decode().splitlines()]
        got = sorted(x[1] for x in lines)
        assert got == ["m0", "m1", "m2", "m3", "m4", "slow"]
        slow_pid = next(p for p, m in lines if m == "slow")
        # the five came while the first receiver held "slow": the other
        # took them, each once
        assert {p for p, m in lines if m != "slow"} == \
            {str(p) for p in pids} - {slow_pid}
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        si.sock.close()
        os.close(r)
