"""Review of the TCP transport: descriptors and records do not leak in any
server process (TCP main, workers, the UDP receivers that send over TCP),
a stream with conflicting Content-Lengths is refused, locks held by a dead
process are recovered, and no stream problem leaves a traceback."""
import os
import signal
import select
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from opensipy.parser import SipMsg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import Server, free_port, mi_call, wait_for  # noqa: E402
from tcpclient import Stream, request  # noqa: E402
from test_tcp_e2e import script, udp_send  # noqa: E402

pytestmark = pytest.mark.slow


def fd_counts(s):
    out = {}
    for pid in [s.pid, *s.children()]:
        try:
            out[pid] = len(os.listdir(f"/proc/{pid}/fd"))
        except FileNotFoundError:
            pass
    return out


class ClosingPeers:
    """n TCP listeners that read one message on each connection and close
    it (a callee that hangs up)."""

    def __init__(self, n):
        self.lst = []
        for _ in range(n):
            ls = socket.socket()
            ls.bind(("127.0.0.1", 0))
            ls.listen(16)
            self.lst.append(ls)
        self.got = 0
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    @property
    def ports(self):
        return [ls.getsockname()[1] for ls in self.lst]

    def run(self):
        while not self.stop:
            r, _, _ = select.select(self.lst, [], [], 0.1)
            for ls in r:
                c, _ = ls.accept()
                c.settimeout(2)
                try:
                    if c.recv(65535):
                        self.got += 1
                except OSError:
                    pass
                c.close()

    def close(self):
        self.stop = True
        self.t.join(2)
        for ls in self.lst:
            ls.close()


@pytest.fixture
def srv(tmp_path):
    port, mi = free_port(socket.SOCK_STREAM), free_port()
    s = Server(tmp_path)
    try:
        s.start(script(port, mi))
        yield s, port, mi
    finally:
        s.cleanup()


def test_no_descriptor_leaks_over_2000_connections(srv):
    """2,000 connections opened and closed by clients, and 150 connections
    the server opens itself (UDP requests forwarded to TCP callees that hang
    up, each on its own port): afterwards every server process has the
    descriptors it had before (the TCP main its copies, the senders their
    cached descriptors of connections now closed)."""
    s, port, mi = srv
    peers = ClosingPeers(150)
    try:
        # warm up every path once (lazy imports, caches, the MI socket)
        assert SipMsg(_one(port, 0), True).status == 200
        _forward(port, peers.ports[0], "warm")
        wait_for(lambda: peers.got >= 1, timeout=5, what="warm forward")
        wait_for(lambda: not mi_call(mi, "list_tcp_conns")["Connections"],
                 timeout=5, what="the warm-up connections gone")
        before = fd_counts(s)
        for i in range(2000):
            c = socket.create_connection(("127.0.0.1", port))
            if i % 10 == 0:        # one in ten sends a request first
                c.sendall(request(port, i))
                c.recv(65535)
            c.close()
        for i, p in enumerate(peers.ports):
            _forward(port, p, f"fw{i}")
        wait_for(lambda: peers.got >= 151, timeout=15,
                 what="every forwarded request at its callee")
        wait_for(lambda: not mi_call(mi, "list_tcp_conns")["Connections"],
                 timeout=10, what="every connection gone from the table")
        _forward(port, peers.ports[0], "last")     # one more send: purge
        wait_for(lambda: peers.got >= 152, timeout=5, what="last forward")
        wait_for(lambda: not mi_call(mi, "list_tcp_conns")["Connections"],
                 timeout=10, what="every connection gone from the table")

        def settled():
            after = fd_counts(s)
            return all(after.get(p, 0) <= n + 2 for p, n in before.items())
        try:
            wait_for(settled, timeout=5, what="descriptors back")
        except AssertionError:
            pass
        after = fd_counts(s)
        grown = {p: (before[p], after.get(p)) for p in before
                 if after.get(p, 0) > before[p] + 2}
        assert not grown, f"descriptors leaked (pid: before, after): {grown}"
        assert "Traceback" not in s.stderr()
    finally:
        peers.close()


def _one(port, i):
    c = Stream(port)
    try:
        c.send(request(port, i))
        return c.read_msg()
    finally:
        c.close()


def _forward(port, dst, callid):
    u = udp_send(port, f"X-Forward-To: sip:127.0.0.1:{dst};transport=tcp"
                 f"\r\n", callid)
    u.close()


def reg_script(port, mi):
    return f"""
log_level=2
udp_workers=1
tcp_workers=2
tcp_connection_lifetime=2
socket=udp:127.0.0.1:{port}
socket=tcp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "proto_tcp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("registrar", "tcp_persistent_flag", "TCP_PERSIST")
route {{
    if (is_method("REGISTER")) {{
        setflag("TCP_PERSIST");
        save("location");
        exit;
    }}
    if (!lookup("location")) {{
        sl_send_reply(404, "Not Here");
        exit;
    }}
    t_relay();
}}
"""


def test_a_phone_registered_over_tcp_behind_nat_is_called_on_its_connection(
        tmp_path):
    """A phone behind NAT registers over TCP with a private Contact nobody
    can reach (tcp_persistent_flag set by the script): save() records the
    connection's source as the contact's received address and keeps the
    connection open past tcp_connection_lifetime (2 s) while the contact
    lives; an INVITE from a UDP caller then reaches the phone on the
    connection it registered on, and the phone's reply goes back to the
    caller."""
    port, mi = free_port(socket.SOCK_STREAM), free_port()
    s = Server(tmp_path)
    phone = None
    u = None
    try:
        s.start(reg_script(port, mi))
        phone = Stream(port)
        phone.send((f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bKreg1\r\n"
                    f"Max-Forwards: 70\r\n"
                    f"From: <sip:alice@127.0.0.1>;tag=r1\r\n"
                    f"To: <sip:alice@127.0.0.1>\r\n"
                    f"Call-ID: reg-tcp@test\r\nCSeq: 1 REGISTER\r\n"
                    f"Contact: <sip:alice@10.0.0.9:5060;transport=tcp>\r\n"
                    f"Expires: 60\r\nContent-Length: 0\r\n\r\n").encode())
        assert SipMsg(phone.read_msg(), True).status == 200
        time.sleep(3.5)               # past tcp_connection_lifetime
        assert not phone.closed_within(0.1)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        u.settimeout(5)
        me = u.getsockname()[1]
        u.sendto((f"INVITE sip:alice@127.0.0.1 SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKinv1\r\n"
                  f"Max-Forwards: 70\r\n"
                  f"From: <sip:bob@127.0.0.1>;tag=b1\r\n"
                  f"To: <sip:alice@127.0.0.1>\r\n"
                  f"Call-ID: call-nat@test\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:bob@127.0.0.1:{me}>\r\n"
                  f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        raw = phone.read_msg()
        while raw == b"\r\n":
            raw = phone.read_msg()
        assert raw is not None, "the INVITE did not come on the connection"
        inv = SipMsg(raw, True)
        assert inv.method == "INVITE" and inv.callid == "call-nat@test"
        assert "10.0.0.9:5060" in inv.ruri
        top = inv.via[0]
        reply = (f"SIP/2.0 486 Busy Here\r\n"
                 + "".join(f"Via: {v}\r\n" for v in inv.hdrs("Via"))
                 + f"From: <sip:bob@127.0.0.1>;tag=b1\r\n"
                 f"To: <sip:alice@127.0.0.1>;tag=a1\r\n"
                 f"Call-ID: call-nat@test\r\nCSeq: 1 INVITE\r\n"
                 f"Content-Length: 0\r\n\r\n")
        assert top.transport == "TCP"
        phone.send(reply.encode())
        codes = []
        while 486 not in codes:
            codes.append(SipMsg(u.recv(65535)).status)
        assert "Traceback" not in s.stderr()
    finally:
        if phone is not None:
            phone.close()
        if u is not None:
            u.close()
        s.cleanup()


def tm_script(port, mi, callee):
    return f"""
log_level=2
udp_workers=1
tcp_workers=2
socket=udp:127.0.0.1:{port}
socket=tcp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "proto_tcp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
route {{
    if (is_method("CANCEL")) {{
        if (t_check_trans())
            t_relay();
        exit;
    }}
    $du = "sip:127.0.0.1:{callee};transport=tcp";
    if (!t_relay())
        sl_reply_error();
}}
"""


def _next(stream, timeout=5.0):
    while True:
        raw = stream.read_msg(timeout)
        if raw != b"\r\n":
            return None if raw is None else SipMsg(raw, True)


def _reply_to(m, code, reason, to_tag="cal"):
    vias = "".join(f"Via: {v}\r\n" for v in m.hdrs("Via"))
    to = m.hdr("To") + ("" if ";tag=" in m.hdr("To") else f";tag={to_tag}")
    return (f"SIP/2.0 {code} {reason}\r\n{vias}From: {m.hdr('From')}\r\n"
            f"To: {to}\r\nCall-ID: {m.callid}\r\n"
            f"CSeq: {m.hdr('CSeq')}\r\nContent-Length: 0\r\n\r\n").encode()


def test_tm_over_tcp_no_retransmissions_replies_on_the_connection_cancel(
        tmp_path):
    """TCP caller -> t_relay -> TCP callee: the INVITE is not retransmitted
    to the callee (RFC 3261 17.1.1.2: timer A only on unreliable
    transports), every reply reaches the caller on its own connection, a
    CANCEL sent on it cancels the branch (CANCEL on the callee's
    connection, 200 to the caller, 487 relayed once and not retransmitted
    while the caller has not ACKed: timer G is for UDP only)."""
    port, mi = free_port(socket.SOCK_STREAM), free_port()
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    lst.settimeout(5)
    s = Server(tmp_path)
    caller = callee = None
    try:
        s.start(tm_script(port, mi, lst.getsockname()[1]))
        caller = Stream(port)
        me = caller.local_port
        inv = (f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
               f"Via: SIP/2.0/TCP 127.0.0.1:{me};branch=z9hG4bKtmtcp1\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\n"
               f"To: <sip:bob@127.0.0.1>\r\nCall-ID: tmtcp@test\r\n"
               f"CSeq: 7 INVITE\r\nContact: <sip:a@127.0.0.1:{me}>\r\n"
               f"Content-Length: 0\r\n\r\n")
        caller.send(inv.encode())
        conn, _ = lst.accept()
        callee = Stream.__new__(Stream)
        callee.s, callee.buf, callee.eof = conn, b"", False
        m = _next(callee)
        assert m.method == "INVITE"
        assert _next(caller).status == 100
        # T1 is 500 ms: over UDP the INVITE would come again at 0.5 and 1.5 s
        assert _next(callee, 1.8) is None, "INVITE retransmitted over TCP"
        callee.send(_reply_to(m, 180, "Ringing"))
        assert _next(caller).status == 180
        caller.send(inv.replace("INVITE sip", "CANCEL sip")
                    .replace("CSeq: 7 INVITE", "CSeq: 7 CANCEL").encode())
        got = _next(caller)
        assert got.status == 200 and got.cseq.method == "CANCEL"
        cancel = _next(callee)
        assert cancel.method == "CANCEL"
        assert cancel.via[0].branch == m.via[0].branch
        callee.send(_reply_to(cancel, 200, "OK"))
        callee.send(_reply_to(m, 487, "Request Terminated"))
        ack = _next(callee)
        assert ack.method == "ACK"        # hop-by-hop ACK of the 487
        assert _next(caller).status == 487
        # no ACK from the caller: over UDP the 487 would come again
        assert _next(caller, 1.6) is None, "487 retransmitted over TCP"
        assert _next(callee, 0.2) is None
        assert "Traceback" not in s.stderr()
    finally:
        for x in (caller, callee):
            if x is not None:
                x.close()
        lst.close()
        s.cleanup()


@pytest.mark.parametrize("stream, code", [
    (b"Content-Length: 5\r\nl: 3\r\n\r\nabcde", 400),      # conflicting
    (b"Content-Length: 99999999999\r\n\r\n", 400),          # huge
    (b"Content-Length: -1\r\n\r\n", 400),                   # negative
    (b"Content-Length: 00003\r\n\r\nabc", 200),             # leading zeros
    (b"l: 4\r\n\r\n\r\n\r\n", 200),                         # CRLFCRLF body
    (b"X-Junk: \xff\xfe\x00\x80\r\nContent-Length: 0\r\n\r\n", None),
])
def test_edge_streams_get_an_answer_or_a_close_never_a_traceback(
        srv, stream, code):
    s, port, _ = srv
    c = Stream(port)
    try:
        head = request(port, 90).split(b"Content-Length")[0]
        c.send(head + stream)
        m = c.read_msg(3)
        if code is not None:
            assert m is not None and SipMsg(m, True).status == code
        if code == 400:
            assert c.closed_within(3)
        assert SipMsg(_one(port, 91), True).status == 200
        assert "Traceback" not in s.stderr()
    finally:
        c.close()


def test_headers_without_end_and_garbage_between_messages(srv):
    """A header section longer than tcp_max_msg_size with no blank line:
    513 and closed; bytes that are not SIP after a good message: the good
    one answered, then the connection closed; the server goes on."""
    s, port, _ = srv
    c = Stream(port)
    try:
        head = request(port, 94).split(b"Content-Length")[0]
        c.send(head + b"X-Long: " + b"a" * 70000)
        m = c.read_msg(3)
        assert m is not None and SipMsg(m, True).status == 513
        assert c.closed_within(3)
    finally:
        c.close()
    c = Stream(port)
    try:
        c.send(request(port, 92) + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"
               b"\r\n\r\n")
        assert SipMsg(c.read_msg(3), True).status == 200
        assert c.closed_within(3)
        assert SipMsg(_one(port, 93), True).status == 200
        assert "Traceback" not in s.stderr()
    finally:
        c.close()


N_BUSY = 1000


def test_connections_wait_for_busy_workers_instead_of_being_closed(srv):
    """Both TCP workers stopped (busy) for 2 s while 1,000 clients connect
    and send a request: a worker's channel holds a few hundred hand-overs
    (its socket buffer), the TCP main keeps the rest waiting without
    blocking itself, and once the workers run again every request is
    answered; meanwhile UDP is served.  (Before: the TCP main waited 0.5 s
    per connection, then closed it.)"""
    s, port, mi = srv
    workers = [p["PID"] for p in mi_call(mi, "ps")["Processes"]
               if p["Type"] == "TCP receiver"]
    assert len(workers) == 2
    cs = []
    try:
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        try:
            for i in range(N_BUSY):
                c = Stream(port)
                c.send(request(port, 200 + i))
                cs.append(c)
            time.sleep(2)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(3)
                u.bind(("127.0.0.1", 0))
                me = u.getsockname()[1]
                u.sendto(request(port, 300, via_port=me)
                         .replace(b"TCP", b"UDP"),
                         ("127.0.0.1", port))
                assert SipMsg(u.recv(65535)).status == 200
        finally:
            for w in workers:
                os.kill(w, signal.SIGCONT)
        codes = []
        for c in cs:
            m = c.read_msg(5)
            codes.append(None if m is None else SipMsg(m, True).status)
        assert codes == [200] * N_BUSY
        assert "Traceback" not in s.stderr()
    finally:
        for c in cs:
            c.close()


def test_connections_queued_to_a_worker_that_dies_are_served_by_its_successor(
        srv):
    """Both TCP workers stopped, 10 clients connect and send a request (the
    hand-overs wait in the workers' channels, unread); one worker is
    killed: its respawned successor reads the same channel and serves the
    connections meant for the dead one (they were never its, nothing of
    them was lost), the other worker serves its own."""
    s, port, mi = srv
    workers = [p["PID"] for p in mi_call(mi, "ps")["Processes"]
               if p["Type"] == "TCP receiver"]
    cs = []
    try:
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        try:
            for i in range(10):
                c = Stream(port)
                c.send(request(port, 400 + i))
                cs.append(c)
            time.sleep(0.3)             # the TCP main has handed them all
            os.kill(workers[0], signal.SIGKILL)
            time.sleep(2.5)             # respawned; the TCP main swept
        finally:
            for w in workers[1:]:
                os.kill(w, signal.SIGCONT)
        codes = []
        for c in cs:
            m = c.read_msg(5)
            codes.append(None if m is None else SipMsg(m, True).status)
        assert codes == [200] * 10
        time.sleep(1.5)                 # a sweep of the TCP main
        codes = []
        for i, c in enumerate(cs):      # and they stay open
            c.send(request(port, 420 + i))
            m = c.read_msg(3)
            codes.append(None if m is None else SipMsg(m, True).status)
        assert codes == [200] * 10
    finally:
        for c in cs:
            c.close()


def test_a_reply_after_the_callers_connection_closed_goes_to_its_sent_by(
        tmp_path):
    """RFC 3261 18.2.2: the connection a request came on is closed when
    the reply is ready: the server opens one to the received address and
    the Via's sent-by port (where the caller listens), not to the source
    port of the gone connection (an ephemeral port nobody listens on)."""
    port, mi = free_port(socket.SOCK_STREAM), free_port()
    lst = socket.socket()                 # the callee
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    lst.settimeout(5)
    home = socket.socket()                # the caller's listening port
    home.bind(("127.0.0.1", 0))
    home.listen(4)
    home.settimeout(5)
    s = Server(tmp_path)
    caller = callee = None
    try:
        s.start(tm_script(port, mi, lst.getsockname()[1]))
        caller = Stream(port)
        hp = home.getsockname()[1]
        caller.send((f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
                     f"Via: SIP/2.0/TCP 127.0.0.1:{hp};branch=z9hG4bKgone1\r\n"
                     f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\n"
                     f"To: <sip:bob@127.0.0.1>\r\nCall-ID: gone@test\r\n"
                     f"CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{hp}>\r\n"
                     f"Content-Length: 0\r\n\r\n").encode())
        conn, _ = lst.accept()
        callee = Stream.__new__(Stream)
        callee.s, callee.buf, callee.eof = conn, b"", False
        m = _next(callee)
        assert _next(caller).status == 100
        caller.close()
        caller = None
        time.sleep(0.3)                   # the proxy saw the close
        callee.send(_reply_to(m, 486, "Busy Here"))
        back, _ = home.accept()
        got = Stream.__new__(Stream)
        got.s, got.buf, got.eof = back, b"", False
        r = _next(got)
        assert r is not None and r.status == 486 and r.callid == "gone@test"
        back.close()
    finally:
        for x in (caller, callee):
            if x is not None:
                x.close()
        lst.close()
        home.close()
        s.cleanup()


def test_the_tcp_main_closes_its_copies_of_a_dead_workers_connections(srv):
    """20 connections, one TCP worker killed: the TCP main closes its
    copies of the connections the dead worker held (their peers see the
    close), and once the others are closed too, every server process has
    the descriptors it had before (the respawned worker included)."""
    s, port, mi = srv
    procs = mi_call(mi, "ps")["Processes"]
    main = [p["PID"] for p in procs if p["Type"] == "TCP main"]
    workers = [p["PID"] for p in procs if p["Type"] == "TCP receiver"]
    assert len(main) == 1 and len(workers) == 2
    conns = lambda: mi_call(mi, "list_tcp_conns")["Connections"]  # noqa
    before = len(os.listdir(f"/proc/{main[0]}/fd"))
    cs = []
    try:
        for i in range(20):
            c = Stream(port)
            c.send(request(port, 500 + i))
            assert SipMsg(c.read_msg(), True).status == 200
            cs.append(c)
        assert len(conns()) == 20
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: len(conns()) < 20, timeout=5,
                 what="the dead worker's connections closed")
        closed = [c for c in cs if c.closed_within(0.1)]
        assert 0 < len(closed) < 20 and len(conns()) == 20 - len(closed)
    finally:
        for c in cs:
            c.close()
    wait_for(lambda: not conns(), timeout=5, what="every connection closed")
    assert len(os.listdir(f"/proc/{main[0]}/fd")) == before


def test_a_stateless_reply_after_the_callers_connection_closed(srv):
    """forward() statelessly, then the caller's connection closes: the
    reply relayed by the core cannot use the connection (found by the
    Via's received/rport), so it opens one to the Via's sent-by port
    (RFC 3261 18.2.2), where the caller listens."""
    s, port, _ = srv
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    lst.settimeout(5)
    home = socket.socket()
    home.bind(("127.0.0.1", 0))
    home.listen(4)
    home.settimeout(5)
    caller = callee = None
    try:
        caller = Stream(port)
        hp = home.getsockname()[1]
        caller.send(request(port, 600, method="MESSAGE", via_port=hp,
                            extra=f"X-Forward-To: sip:127.0.0.1:"
                            f"{lst.getsockname()[1]};transport=tcp\r\n"))
        conn, _ = lst.accept()
        callee = Stream.__new__(Stream)
        callee.s, callee.buf, callee.eof = conn, b"", False
        m = _next(callee)
        assert m.method == "MESSAGE"
        caller.close()
        caller = None
        time.sleep(0.3)
        callee.send(_reply_to(m, 202, "Accepted"))
        back, _ = home.accept()
        got = Stream.__new__(Stream)
        got.s, got.buf, got.eof = back, b"", False
        r = _next(got)
        assert r is not None and r.status == 202
        back.close()
    finally:
        for x in (caller, callee):
            if x is not None:
                x.close()
        lst.close()
        home.close()
