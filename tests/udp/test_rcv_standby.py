"""Standby UDP receivers (udp_workers_standby, net.udp.RcvGroup), in the
real server: at a low rate one receiver handles everything, even datagrams
that arrive in pairs; a receiver stuck in a slow script, or a saturated
one, brings a standby in; the extra receivers leave again when the load
drops; with udp_workers_standby=off every receiver waits on the socket.

The script answers each request with the pid of the process that handled
it (X-Pid), so the tests see who did the work."""
import socket
import time

import pytest

from opensipy import shm
from opensipy.net import udp
from server import free_port, mi_call, wait_for


SCRIPT = """
udp_workers={workers}
udp_workers_standby={standby}
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "cfgutils.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
route {{
    if ($rU == "slow")
        usleep(2000000);
    else if ($rU == "busy")
        usleep(8000);
    append_to_reply("X-Pid: $pp\\r\\n");
    sl_send_reply(200, "{reason}");
}}
"""


def request(user, port, n):
    return (f"OPTIONS sip:{user}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKsb{n}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: standby-{n}@test\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


class Client:
    def __init__(self, port):
        self.port = port
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.me = self.s.getsockname()[1]
        self.n = 0
        self.replies = {}          # n -> pid, in arrival order
        self.times = {}
        self.reasons = {}

    def send(self, user="u"):
        self.n += 1
        self.s.sendto(request(user, self.me, self.n),
                      ("127.0.0.1", self.port))
        return self.n

    def read(self, timeout):
        self.s.settimeout(timeout)
        try:
            data = self.s.recv(65535).decode()
        except (socket.timeout, BlockingIOError):
            return False
        n = int(data.split("branch=z9hG4bKsb", 1)[1].split("\r\n")[0])
        pid = int(data.split("X-Pid: ", 1)[1].split("\r\n")[0])
        self.replies[n] = pid
        self.reasons[n] = data.split("\r\n", 1)[0].split(" ", 2)[2]
        self.times[n] = time.monotonic()
        return True

    def read_all(self, count, timeout=15.0):
        deadline = time.monotonic() + timeout
        while len(self.replies) < count and time.monotonic() < deadline:
            self.read(max(0.01, deadline - time.monotonic()))
        assert len(self.replies) == count, \
            f"{len(self.replies)} of {count} replies"

    def pairs(self, count, gap=0.005):
        """count pairs of requests, the two of a pair back to back."""
        for _ in range(count):
            self.send()
            self.send()
            time.sleep(gap)
            while self.read(0):
                pass

    def close(self):
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def receivers(server):
    return {pid for pid, t in server.children().items()
            if "SIP receiver" in t}


def start(server, workers, standby, mi=None, reason="OK"):
    port = free_port()
    server.start(SCRIPT.format(workers=workers, standby=standby, port=port,
                               mi=mi or free_port(), reason=reason))
    wait_for(lambda: len(receivers(server)) == workers,
             what=f"{workers} receivers")
    time.sleep(0.3)                 # all asleep where they wait
    return port


@pytest.fixture
def group(monkeypatch):
    """A group of three in this process; the watch timer's arming is
    recorded instead."""
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    g = udp.RcvGroup(3)
    armed = []
    monkeypatch.setattr(g, "arm", armed.append)
    g.armed = armed
    try:
        yield g
    finally:
        g.close()
        shm.shm_free(g.block)


F = udp._FIELDS
ACTIVE, STANDBY = udp._ACTIVE, udp._STANDBY
STUCK = udp.STUCK_NS


def test_a_new_group_has_the_lead_active_and_the_others_standing_by(group):
    assert group.states() == [ACTIVE, STANDBY, STANDBY]
    assert group.has_standby()
    group.v[F] = group.v[2 * F] = ACTIVE
    assert not group.has_standby()
    with pytest.raises(ValueError):
        udp.RcvGroup(1)


def test_what_a_standby_woken_by_the_watch_timer_decides(group):
    v, now = group.v, 10 * STUCK
    waiting = [True]

    def look():
        return group.look(now, lambda: waiting[0])
    # the lead between datagrams: it will read what comes
    assert look() is False and group.armed == []
    # busy, not stuck yet: look again when it would be
    v[1] = now - STUCK // 4
    assert look() is False and group.armed == [STUCK - STUCK // 4]
    # stuck with a datagram waiting: join
    v[1] = now - STUCK
    assert look() is True
    # stuck, nothing waiting: look again one STUCK_NS on
    waiting[0] = False
    group.armed.clear()
    assert look() is False and group.armed == [STUCK]
    # two active, one of them free: nothing to do
    waiting[0] = True
    v[F] = ACTIVE
    group.armed.clear()
    assert look() is False and group.armed == []
    # both stuck: join
    v[F + 1] = now - 2 * STUCK
    assert look() is True


def test_an_extra_receiver_leaves_when_the_others_can_carry_the_load(group):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lead = group.member(0, s)
        extra = group.member(1, s)
        assert lead.active and not extra.active
        v, second = group.v, 10**9
        v[F] = ACTIVE                       # as if it had joined
        extra.active = True
        # the lead never leaves, however idle
        assert lead.window_done(0, second) is False
        # 60% + 10%: one receiver would be over 50%: stay
        v[2] = 600
        assert extra.window_done(second // 10, second) is False
        assert v[F + 2] == 100 and group.states()[1] == ACTIVE
        # 30% + 10%: leave
        v[2] = 300
        assert extra.window_done(second // 10, second) is True
        assert group.states()[1] == STANDBY and not extra.active
        assert v[F + 2] == 0
        # not while the lead is stuck in one datagram
        v[F] = ACTIVE
        extra.active = True
        v[1] = time.monotonic_ns() - 2 * STUCK
        assert extra.window_done(0, second) is False
        v[1] = 0
        assert extra.window_done(0, second) is True


@pytest.mark.slow
@pytest.mark.parametrize("standby", ["on", "off"])
def test_pairs_at_a_low_rate(server, standby):
    """on: one receiver takes both datagrams of every pair; off: the
    second of a pair often wakes another receiver."""
    port = start(server, 3, standby)
    with Client(port) as c:
        c.pairs(150)
        c.read_all(300)
        pids = set(c.replies.values())
        assert pids <= receivers(server)
        if standby == "on":
            assert len(pids) == 1, pids
        else:
            assert len(pids) >= 2, pids


@pytest.mark.slow
def test_a_stuck_receiver_brings_a_standby_in(server):
    port = start(server, 3, "on")
    with Client(port) as c:
        slow = c.send("slow")       # holds the active receiver for 2 s
        time.sleep(0.2)
        quick = [c.send() for _ in range(5)]
        c.read_all(6)
        order = list(c.replies)
        # the five were answered while the slow one was still held, by
        # another receiver
        assert order[-1] == slow, (order, c.replies, c.times)
        assert c.replies[slow] not in {c.replies[n] for n in quick}


@pytest.mark.slow
def test_saturation_brings_standbys_in_and_they_leave_after(server):
    port = start(server, 3, "on")
    with Client(port) as c:
        # each "busy" request takes 8 ms: 250/s is more than one receiver
        # can do
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            c.send("busy")
            time.sleep(0.004)
            while c.read(0):
                pass
        c.read_all(c.n)
        assert len(set(c.replies.values())) >= 2
        # idle for two load windows: the extra receivers stand by again
        time.sleep(2.5)
        c.replies.clear()
        c.pairs(100)
        c.read_all(200)
        assert len(set(c.replies.values())) == 1, set(c.replies.values())


@pytest.mark.slow
def test_a_standby_that_joins_after_reload_routes_runs_the_new_routes(
        server):
    mi = free_port()
    port = start(server, 3, "on", mi=mi, reason="gen1")
    with Client(port) as c:
        c.send()
        c.read_all(1)
        assert c.reasons[1] == "gen1"
        server.write_script(SCRIPT.format(workers=3, standby="on", port=port,
                                          mi=mi, reason="gen2"))
        mi_call(mi, "reload_routes")
        slow = c.send("slow")          # the lead: held 2 s
        time.sleep(0.2)
        quick = c.send()               # a standby joins for it
        c.read_all(3)
        assert list(c.replies)[-1] == slow
        assert c.replies[quick] != c.replies[slow]
        assert c.reasons[quick] == "gen2" and c.reasons[slow] == "gen2"
