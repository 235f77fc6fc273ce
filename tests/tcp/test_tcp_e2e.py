"""SIP over TCP on the wire: the real server with a TCP and a UDP socket,
driven by plain sockets.  Framing (several messages per read, split
messages, CRLF keep-alive, missing/bad Content-Length, too large), abuse
(garbage, slow-loris, 1,000 idle connections, a peer that never reads)
and, through all of it, the server keeps serving other connections and
UDP."""
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from opensipy.parser import SipMsg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import Server, free_port, mi_call, wait_for  # noqa: E402
from tcpclient import Stream, request  # noqa: E402

pytestmark = pytest.mark.slow

PAD = 40000          # bytes of the X-Pad header a "X-Big" request gets back


def script(port, mi, extra=""):
    return f"""
log_level=2
udp_workers=1
tcp_workers=2
tcp_max_connections=1030
tcp_max_msg_time=1
tcp_accept_aliases=yes
tcp_connect_timeout=300
{extra}
socket=udp:127.0.0.1:{port}
socket=tcp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "proto_tcp.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("proto_tcp", "tcp_send_timeout", 300)
route {{
    if (is_present_hf("X-Big")) {{
        append_to_reply("X-Pad: {'p' * PAD}\\r\\n");
        sl_send_reply(200, "Big");
        exit;
    }}
    if (is_present_hf("X-Forward-To")) {{
        $du = $hdr(X-Forward-To);
        if (!forward()) {{
            sl_send_reply(477, "Send failed");
        }}
        exit;
    }}
    if (is_present_hf("X-Force-TCP")) {{
        force_send_socket(tcp:127.0.0.1:{port});
        $du = $hdr(X-Force-TCP);
        forward();
        exit;
    }}
    sl_send_reply(200, "OK");
}}
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    port, mi = free_port(socket.SOCK_STREAM), free_port()
    s = Server(tmp_path_factory.mktemp("tcp"))
    try:
        s.start(script(port, mi))
        yield s, port, mi
    finally:
        s.cleanup()


def udp_ok(port, i=0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        u.settimeout(3)
        me = u.getsockname()[1]
        u.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKu{i}\r\n"
                  f"From: <sip:t@x>;tag=u\r\nTo: <sip:y@x>\r\n"
                  f"Call-ID: udp{i}\r\nCSeq: 1 OPTIONS\r\n"
                  f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        return SipMsg(u.recv(65535)).status == 200


def tcp_ok(port, i=0):
    c = Stream(port)
    try:
        c.send(request(port, i))
        m = c.read_msg()
        return m is not None and SipMsg(m, True).status == 200
    finally:
        c.close()


def stat(mi, name):
    return mi_call(mi, "get_statistics", {"statistics": [name]})[name]


def test_framing_several_per_read_split_and_keepalive(srv):
    _, port, _ = srv
    c = Stream(port)
    try:
        # three requests in one write, separated by a stray CRLF
        c.send(request(port, 1) + request(port, 2) + b"\r\n"
               + request(port, 3))
        got = [SipMsg(c.read_msg(), True) for _ in range(3)]
        assert [m.callid for m in got] == ["tcp1@test", "tcp2@test",
                                           "tcp3@test"]
        assert all(m.status == 200 for m in got)
        # one request in five pieces, the body too
        data = request(port, 4, method="MESSAGE", body=b"hello there")
        for i in range(0, len(data), len(data) // 5 + 1):
            c.send(data[i:i + len(data) // 5 + 1])
            time.sleep(0.05)
        m = SipMsg(c.read_msg(), True)
        assert m.callid == "tcp4@test" and m.status == 200
        # RFC 5626 4.4.1: a double CRLF ping gets a single CRLF pong
        c.send(b"\r\n\r\n")
        assert c.read_msg(3) == b"\r\n"
        assert c.read_msg(0.3) is None          # one pong, nothing else
        # a lone CRLF (a client's pong) begins no message: it is not
        # closed as a slow sender after tcp_max_msg_time (1 s)
        c.send(b"\r\n")
        time.sleep(1.6)
        c.send(request(port, 5))
        assert SipMsg(c.read_msg(), True).status == 200
    finally:
        c.close()


@pytest.mark.parametrize("cl, reason", [(None, b"missing Content-Length"),
                                        ("12x", b"bad Content-Length")])
def test_bad_content_length_is_answered_400_and_closed(srv, cl, reason):
    _, port, _ = srv
    data = request(port, 9).replace(b"Content-Length: 0\r\n", b"")
    if cl is not None:
        data = data.replace(b"\r\n\r\n", f"\r\nContent-Length: {cl}"
                                         f"\r\n\r\n".encode())
    c = Stream(port)
    try:
        c.send(data)
        m = c.read_msg()
        assert m is not None and m.startswith(b"SIP/2.0 400 ")
        assert reason in m.split(b"\r\n")[0]
        assert c.closed_within(3)
    finally:
        c.close()
    assert tcp_ok(port) and udp_ok(port)


def test_a_70kb_message_is_refused_513_and_a_50kb_one_served(srv):
    _, port, _ = srv
    c = Stream(port)
    try:
        c.send(request(port, 10, method="MESSAGE", body=b"b" * 50000))
        assert SipMsg(c.read_msg(), True).status == 200
        c.send(request(port, 11, method="MESSAGE", body=b"b" * 70000))
        m = c.read_msg()
        assert m is not None and m.startswith(b"SIP/2.0 513 ")
        assert c.closed_within(3)
    finally:
        c.close()
    assert tcp_ok(port) and udp_ok(port)


def test_garbage_is_closed_and_the_server_goes_on(srv):
    _, port, _ = srv
    junk = Stream(port)
    nul = Stream(port)
    try:
        junk.send(bytes(range(1, 256)) * 8)          # never a header end
        nul.send(b"\x00\xff\xfe garbage\r\n\r\n")    # a "message" w/o CL
        assert nul.closed_within(3)
        assert junk.closed_within(4)                 # tcp_max_msg_time=1
    finally:
        junk.close()
        nul.close()
    assert tcp_ok(port) and udp_ok(port)


def test_slow_loris_is_closed_while_others_are_served(srv):
    _, port, _ = srv
    data = request(port, 20)
    slow = Stream(port)
    try:
        start = time.monotonic()
        slow.send(data[:40])
        closed = False
        for i in range(40, len(data) - 2):      # a byte every 0.2 s
            try:
                slow.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            assert tcp_ok(port, 100 + i) if i % 5 == 0 else True
            if slow.closed_within(0.2):
                closed = True
                break
        assert closed or slow.closed_within(2)
        # closed after tcp_max_msg_time (1 s), long before the bytes end
        assert time.monotonic() - start < 4
    finally:
        slow.close()
    assert udp_ok(port)


def test_a_peer_that_never_reads_does_not_block_the_server(srv):
    _, port, mi = srv
    before = stat(mi, "proto_tcp:send_timeouts")
    deaf = Stream(port, rcvbuf=4096)
    try:
        # each request is small; each reply carries a 40 KB header: the
        # server's writes pile up until the socket buffers are full
        for i in range(200):
            try:
                deaf.send(request(port, 1000 + i, extra="X-Big: 1\r\n"))
            except (BrokenPipeError, ConnectionResetError):
                break
        t0 = time.monotonic()
        while stat(mi, "proto_tcp:send_timeouts") == before:
            assert udp_ok(port, 7) and tcp_ok(port, 7)
            assert time.monotonic() - t0 < 20, "no write ever timed out"
            time.sleep(0.2)
        # the server gave up on the deaf peer and still serves the others
        for i in range(3):
            assert udp_ok(port, 30 + i) and tcp_ok(port, 30 + i)
    finally:
        deaf.close()


def test_aliases_and_reuse_of_a_connection(srv):
    """A Via ;alias makes the sent-by port an alias of the connection; a
    request we forward to that port (transport=tcp) goes on it."""
    _, port, mi = srv
    alias = free_port(socket.SOCK_STREAM)       # nobody listens there
    c = Stream(port)
    try:
        c.send(request(port, 40, via_port=alias, via_params=";alias"))
        assert SipMsg(c.read_msg(), True).status == 200
        conns = mi_call(mi, "list_tcp_conns")["Connections"]
        mine = [x for x in conns
                if x["Remote"] == f"127.0.0.1:{c.local_port}"]
        assert len(mine) == 1 and mine[0]["Alias port"] == alias
        assert mine[0]["Type"] == "tcp" and mine[0]["State"] == 0
        assert mine[0]["Local"] == f"127.0.0.1:{port}"
        # a UDP request forwarded to sip:127.0.0.1:<alias>;transport=tcp
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            me = u.getsockname()[1]
            u.sendto((f"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKal\r\n"
                      f"X-Forward-To: sip:127.0.0.1:{alias};transport=tcp\r\n"
                      f"From: <sip:t@x>;tag=u\r\nTo: <sip:bob@x>\r\n"
                      f"Call-ID: alias-fwd\r\nCSeq: 1 MESSAGE\r\n"
                      f"Content-Length: 0\r\n\r\n").encode(),
                     ("127.0.0.1", port))
        m = SipMsg(c.read_msg(), True)
        assert m.method == "MESSAGE" and m.callid == "alias-fwd"
        assert m.via[0].transport == "TCP"
        # no new connection was opened to the alias
        conns = mi_call(mi, "list_tcp_conns")["Connections"]
        assert not [x for x in conns if x["Remote"].endswith(f":{alias}")]
    finally:
        c.close()


def udp_send(port, extra, callid):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.settimeout(5)
    me = u.getsockname()[1]
    u.sendto((f"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{callid}\r\n"
              f"{extra}"
              f"From: <sip:t@x>;tag=u\r\nTo: <sip:bob@x>\r\n"
              f"Call-ID: {callid}\r\nCSeq: 1 MESSAGE\r\n"
              f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
    return u


def test_force_send_socket_chooses_tcp(srv):
    """No transport in $du, but force_send_socket(tcp:...): the request
    leaves over TCP, from our TCP socket's address."""
    _, port, _ = srv
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    lst.settimeout(5)
    dst = lst.getsockname()[1]
    u = udp_send(port, f"X-Force-TCP: sip:127.0.0.1:{dst}\r\n", "forced")
    try:
        conn, peer = lst.accept()
        c = Stream.__new__(Stream)
        c.s, c.buf, c.eof = conn, b"", False
        m = SipMsg(c.read_msg(), True)
        assert m.callid == "forced" and m.via[0].transport == "TCP"
        assert m.via[0].port == port and peer[0] == "127.0.0.1"
        conn.close()
    finally:
        u.close()
        lst.close()


def test_tcp_connect_timeout(srv):
    """A peer whose accept queue is full never completes the handshake:
    the connect gives up after tcp_connect_timeout (300 ms), the forward
    fails and the script answers 477, long before the kernel would."""
    _, port, mi = srv
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    dst = lst.getsockname()[1]
    fill = []
    for _ in range(3):                 # fill the accept queue
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", dst))
        fill.append(f)
    time.sleep(0.2)
    refused = stat(mi, "proto_tcp:refused_conns")
    u = udp_send(port, f"X-Forward-To: sip:127.0.0.1:{dst};transport=tcp"
                       f"\r\n", "blackhole")
    try:
        t0 = time.monotonic()
        r = SipMsg(u.recv(65535))
        assert r.status == 477
        assert time.monotonic() - t0 < 5
        assert stat(mi, "proto_tcp:refused_conns") == refused + 1
    finally:
        u.close()
        for f in fill:
            f.close()
        lst.close()


def _holder(mi, server_port, client_port):
    """The pid of the TCP receiver that holds the server's end of the
    connection from client_port (by its socket inode in /proc)."""
    inode = None
    with open("/proc/net/tcp") as f:
        for ln in f.readlines()[1:]:
            p = ln.split()
            if int(p[1].rsplit(":", 1)[1], 16) == server_port and \
                    int(p[2].rsplit(":", 1)[1], 16) == client_port:
                inode = p[9]
    assert inode is not None
    found = []
    for pr in mi_call(mi, "ps")["Processes"]:
        if pr["Type"] != "TCP receiver":
            continue
        fd_dir = Path(f"/proc/{pr['PID']}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    found.append(pr["PID"])
            except OSError:
                continue
    return found


def test_a_worker_writes_on_a_connection_another_worker_holds(srv):
    """Two connections, held by the two TCP workers (round robin): a
    request read by one worker is forwarded on the other's connection
    (the descriptor comes from the TCP main)."""
    _, port, mi = srv
    a, b = Stream(port), Stream(port)
    try:
        for i, c in enumerate((a, b)):       # both registered and served
            c.send(request(port, 80 + i))
            assert SipMsg(c.read_msg(), True).status == 200
        ha, hb = _holder(mi, port, a.local_port), \
            _holder(mi, port, b.local_port)
        assert len(ha) == 1 and len(hb) == 1 and ha != hb
        a.send(request(port, 82, method="MESSAGE",
                       extra=f"X-Forward-To: sip:127.0.0.1:{b.local_port}"
                             f";transport=tcp\r\n"))
        m = SipMsg(b.read_msg(), True)
        assert m.method == "MESSAGE" and m.callid == "tcp82@test"
        # b answers; the reply goes back, relayed on a's connection
        reply = (f"SIP/2.0 200 OK\r\n"
                 + "".join(f"Via: {v.text}\r\n" for v in m.via)
                 + f"From: {m.hdr('From')}\r\nTo: {m.hdr('To')};tag=b\r\n"
                 f"Call-ID: {m.callid}\r\nCSeq: 1 MESSAGE\r\n"
                 f"Content-Length: 0\r\n\r\n").encode()
        b.send(reply)
        r = SipMsg(a.read_msg(), True)
        assert r.status == 200 and r.callid == "tcp82@test"
        assert len(r.via) == 1
    finally:
        a.close()
        b.close()


def test_net_waiting_tcp_counts_unread_bytes(srv):
    """net:waiting_tcp: the bytes waiting in our TCP sockets (here a
    request the stopped workers have not read yet)."""
    _, port, mi = srv
    c = Stream(port)
    workers = [p["PID"] for p in mi_call(mi, "ps")["Processes"]
               if p["Type"] == "TCP receiver"]
    try:
        c.send(request(port, 90))
        assert SipMsg(c.read_msg(), True).status == 200
        assert stat(mi, "net:waiting_tcp") == 0
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        data = request(port, 91)
        c.send(data)
        wait_for(lambda: stat(mi, "net:waiting_tcp") >= len(data),
                 timeout=5, what="net:waiting_tcp to count the request")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    try:
        assert SipMsg(c.read_msg(), True).callid == "tcp91@test"
        wait_for(lambda: stat(mi, "net:waiting_tcp") == 0, timeout=5,
                 what="net:waiting_tcp back to 0")
    finally:
        c.close()


def test_ps_shows_the_tcp_processes_with_their_ranks(srv):
    s, port, mi = srv
    procs = mi_call(mi, "ps")["Processes"]
    by_type = {}
    for p in procs:
        by_type.setdefault(p["Type"], []).append(p["Rank"])
    assert by_type["TCP main"] == [-4]
    assert sorted(by_type["TCP receiver"]) == [2, 3]   # after 1 UDP rank
    assert [r for t, rs in by_type.items() for r in rs
            if t.startswith("SIP receiver udp")] == [1]
    st = mi_call(mi, "get_statistics", {"statistics": ["net:", "proto_tcp:"]})
    assert "net:waiting_tcp" in st and st["proto_tcp:opened_conns"] > 0


def test_1000_idle_connections_and_tcp_max_connections(srv):
    s, port, mi = srv
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    base = stat(mi, "proto_tcp:current_conns")
    refused = stat(mi, "proto_tcp:refused_conns")
    idle = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        wait_for(lambda: stat(mi, "proto_tcp:current_conns") >= base + 1000,
                 timeout=30, what="1000 connections in the table")
        assert tcp_ok(port, 50) and udp_ok(port, 50)
        # tcp_max_connections = 1030: the next ones are refused (closed)
        extra = [socket.create_connection(("127.0.0.1", port))
                 for _ in range(60)]
        idle += extra
        wait_for(lambda: stat(mi, "proto_tcp:refused_conns") > refused,
                 timeout=10, what="refused connections")
        assert stat(mi, "proto_tcp:current_conns") <= 1030
        assert udp_ok(port, 51)
    finally:
        for x in idle:
            x.close()
    wait_for(lambda: stat(mi, "proto_tcp:current_conns") <= base + 1,
             timeout=30, what="the idle connections closed")
    assert tcp_ok(port, 52)


def test_dead_tcp_worker_respawned_its_connections_closed(tmp_path):
    port, mi = free_port(socket.SOCK_STREAM), free_port()
    s = Server(tmp_path)
    try:
        s.start(script(port, mi, "tcp_connection_lifetime=3"))
        a, b = Stream(port), Stream(port)
        for i, c in enumerate((a, b)):
            c.send(request(port, 60 + i))
            assert SipMsg(c.read_msg(), True).status == 200
        workers = {p["PID"]: p["Rank"] for p in mi_call(mi, "ps")["Processes"]
                   if p["Type"] == "TCP receiver"}
        assert len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        # exactly one of the two connections was held by the victim
        wait_for(lambda: a.closed_within(0.1) or b.closed_within(0.1),
                 timeout=8, what="the dead worker's connection closed")
        alive = b if a.eof else a
        assert not alive.eof
        alive.send(request(port, 70))
        assert SipMsg(alive.read_msg(), True).status == 200
        wait_for(lambda: len([p for p in mi_call(mi, "ps")["Processes"]
                              if p["Type"] == "TCP receiver"]) == 2,
                 timeout=10, what="the worker respawned")
        ranks = {p["Rank"] for p in mi_call(mi, "ps")["Processes"]
                 if p["Type"] == "TCP receiver"}
        assert ranks == set(workers.values())
        assert tcp_ok(port, 71) and udp_ok(port, 71)
        # tcp_connection_lifetime=3: an idle connection is closed
        assert alive.closed_within(8)
        assert s.proc.poll() is None
    finally:
        s.cleanup()
