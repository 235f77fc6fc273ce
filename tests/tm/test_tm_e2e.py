"""tm end to end: the real opensipy with several udp_workers (a reply often
reaches another receiver than its request) between real SIPp callers and
callees, or raw UDP peers where a test needs to count what arrives.

Every test checks at the end that ``tm:inuse_transactions`` went back to 0
and the shared memory in use back to its value after start-up."""
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from opensipy.parser import SipMsg

from server import REPO, free_port, mi_call, popen, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

HERE = Path(__file__).resolve().parent
SCEN = HERE / "scenarios"
BENCH = REPO / "bench" / "scenarios"


def sipp(args):
    return popen(["sipp", *args, "-nostdin", "-timeout", "30s"],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait(10)


def _bound(port):
    """True once a UDP socket is bound to port (read from /proc: binding
    the port to find out could make the SIPp starting there fail)."""
    want = f":{port:04X}"
    with open("/proc/net/udp") as f:
        next(f)
        return any(ln.split()[1].endswith(want) for ln in f)


def uas(scenario, port, calls):
    """A SIPp callee, returned once it listens: a request sent before
    would be lost, and a test must not depend on a retransmission timer
    of the proxy (or on how long a loaded machine takes to start SIPp)."""
    p = sipp(["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port),
              "-mp", str(free_port()), "-m", str(calls)])
    try:
        wait_for(lambda: p.poll() is not None or _bound(port), 20,
                 what=f"SIPp listening on {port}")
    except AssertionError:
        stop(p)
        raise
    if p.poll() is not None:
        raise AssertionError("SIPp callee exited: " + p.communicate()[0]
                             .decode(errors="replace")[-3000:])
    return p


def uac(scenario, proxy, calls, rate=10):
    return sipp(["-sf", str(scenario), f"127.0.0.1:{proxy}", "-i",
                 "127.0.0.1", "-p", str(free_port()), "-mp",
                 str(free_port()), "-m", str(calls), "-r", str(rate)])


def finish(*procs, timeout=45):
    """Wait for every SIPp; assert each ended with success.  Returns their
    outputs (see counts())."""
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append(out.decode(errors="replace"))
            assert p.returncode == 0, outs[-1][-3000:]
    finally:
        for p in procs:
            stop(p)
    return outs


def counts(out, row):
    """(messages, retransmissions) of the first line of a SIPp screen
    that starts with row ("200 <-", "ACK -")."""
    line = next(ln for ln in out.splitlines()
                if ln.strip().startswith(row))
    nums = [int(x) for x in line.split()[2:] if x.isdigit()]
    return nums[0], nums[1]


class Proxy:
    def __init__(self, server, routes, params="", workers=3):
        self.port = free_port()
        self.mi = free_port()
        self.server = server
        server.start(f"""
log_level=2
udp_workers={workers}
# every receiver on the socket: replies reach other processes
udp_workers_standby=off
socket=udp:127.0.0.1:{self.port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{self.mi}")
modparam("tm", "wt_timer", 1)
{params}
{routes}
""")
        self.shm_start = self.stat("shmem:used_size")

    def stats(self, *names):
        return mi_call(self.mi, "get_statistics", {"statistics": list(names)})

    def stat(self, name):
        return self.stats(name)[name]

    def wait_stats(self, want, timeout=15, check=None):
        """The statistics named in ``want`` once each has its value (an
        int, or a predicate on the value) and ``check(stats)`` holds.

        A worker counts a reply just after it sent it, so a peer (a SIPp
        that then exits) can have it before the counter moved: read once,
        a loaded machine shows the count one short.  Counters only go up,
        so a count that went past its value never comes back and still
        fails here, with the values seen."""
        last = {}

        def ok():
            last.update(self.stats(*want))
            return all(f(last[k]) if callable(f) else last[k] == f
                       for k, f in want.items()) and \
                (check is None or check(last))
        try:
            wait_for(ok, timeout, what="statistics")
        except AssertionError:
            raise AssertionError(f"statistics {last} never reached "
                                 f"{want}") from None
        return last

    def settle(self, timeout=15):
        """inuse_transactions back to 0 and shm used back to its start."""
        wait_for(lambda: self.stat("tm:inuse_transactions") == 0, timeout,
                 what="inuse_transactions == 0")
        wait_for(lambda: self.stat("shmem:used_size") == self.shm_start,
                 5, what=f"shm used back to {self.shm_start}")


ROUTE_HEAD = """
route {
    if (!mf_process_maxfwd_header(10)) {
        sl_send_reply(483, "Too Many Hops");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans())
            t_relay();
        exit;
    }
"""


def test_a_stateful_call(server):
    callee = free_port()
    p = Proxy(server, ROUTE_HEAD + f"""
    $du = "sip:127.0.0.1:{callee}";
    if (!t_relay())
        sl_reply_error();
    exit;
}}""")
    n = 30
    b = uas(BENCH / "invite_uas.xml", callee, n)
    a = uac(BENCH / "invite_uac.xml", p.port, n, rate=20)
    out = finish(a, b)[0]
    # the ACKs, statelessly: one a call, and one more for each copy of the
    # 200 the caller got (the callee resends it until the ACK reaches it,
    # from 0.5 s on: on a loaded machine the proxy can be that slow)
    copies = counts(out, "200 <-")[1]
    p.wait_stats({
        # INVITE and BYE are transactions; ACK of the 2xx is end to end
        "tm:UAS_transactions": 2 * n,
        "tm:2xx_transactions": 2 * n,
        "core:fwd_requests": lambda v: n <= v <= n + copies,
        "tm:local_replies": n,                  # our 100 Trying
        # 200 (INVITE) and 200 (BYE) relayed, and the 180 unless a
        # receiver got it after the 200 (then it is late and not sent);
        # 100 absorbed
        "tm:relayed_replies": lambda v: v >= 2 * n})
    p.settle()
    assert p.stat("tm:relayed_replies") <= 3 * n


def test_serial_forking_on_486_through_failure_route(server):
    busy, free = free_port(), free_port()
    p = Proxy(server, ROUTE_HEAD + f"""
    if (is_method("INVITE")) {{
        $du = "sip:127.0.0.1:{busy}";
        $avp(next) = "sip:127.0.0.1:{free}";
        t_on_failure("next");
    }} else {{
        $du = "sip:127.0.0.1:{free}";
    }}
    t_relay();
    exit;
}}
failure_route[next] {{
    # the $avp set before t_relay lives with the transaction; the 486 came
    # from the callee, it is no local reply
    if (t_check_status("486") && $avp(next) != NULL &&
            !t_local_replied("last")) {{
        $du = $avp(next);
        t_relay();
    }}
}}""")
    n = 10
    b1 = uas(SCEN / "uas_busy.xml", busy, n)
    b2 = uas(BENCH / "invite_uas.xml", free, n)
    a = uac(BENCH / "invite_uac.xml", p.port, n)
    finish(a, b1, b2)       # b1 checks the hop-by-hop ACK of its 486
    p.wait_stats({"tm:2xx_transactions": 2 * n,
                  "tm:4xx_transactions": 0})
    p.settle()


def _invite(port, me, i=0, branch=None):
    br = branch or f"z9hG4bKt{i}x{time.monotonic_ns()}"
    return (f"INVITE sip:callee@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=f{i}\r\n"
            f"To: <sip:callee@127.0.0.1>\r\n"
            f"Call-ID: call{i}-{br}@test\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@127.0.0.1:{me}>\r\n"
            f"Content-Length: 0\r\n\r\n").encode(), br


def _recv_all(sock, until, pred=None):
    out = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            data = sock.recv(65535)
        except socket.timeout:
            break
        m = SipMsg(data)
        out.append(m)
        if pred is not None and pred(m):
            break
    return out


def _sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def test_no_answer_gives_408_and_failure_route(server):
    with _sock()[0] as callee:
        cport = callee.getsockname()[1]
        p = Proxy(server, ROUTE_HEAD + f"""
    $du = "sip:127.0.0.1:{cport}";
    $T_fr_timeout = 2;          # this transaction's timer B
    t_on_failure("timeout");
    t_relay();
    exit;
}}
failure_route[timeout] {{
    xlog("L_NOTICE", "fr $T_ruri $T_branch_last_reply_code $T_fr_timeout\\n");
    if (t_check_status("408") && t_local_replied("all"))
        t_reply(408, "Nobody Home");
}}""")
        caller, me = _sock()
        with caller:
            data, _ = _invite(p.port, me)
            caller.sendto(data, ("127.0.0.1", p.port))
            got = _recv_all(caller, time.monotonic() + 6,
                            lambda m: m.status >= 200)
            assert [m.status for m in got] == [100, 408]
            assert got[-1].reason == "Nobody Home"
            assert got[-1].to.tag
            # timer A: the INVITE went out at 0, 0.5 s, 1.5 s; B at 2 s
            seen = _recv_all(callee, time.monotonic() + 0.2)
            assert len(seen) == 3
            assert all(m.method == "INVITE" for m in seen)
            assert len({m.via1.branch for m in seen}) == 1
            # the 408 is retransmitted (timer G: 0.5 s, then 1 s later)
            # until the ACK comes; a busy timer process may be late
            again = _recv_all(caller, time.monotonic() + 1.3,
                              lambda m: m.status == 408)
            assert [m.status for m in again] == [408]
            ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
                   f"Via: {got[-1].via1.text}\r\n"
                   f"From: {got[-1].hdr('From')}\r\n"
                   f"To: {got[-1].hdr('To')}\r\n"
                   f"Call-ID: {got[-1].callid}\r\nCSeq: 1 ACK\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            caller.sendto(ack, ("127.0.0.1", p.port))
            # once a receiver has the ACK (a copy may cross it), no more
            wait_for(lambda: p.stat("core:rcv_requests") == 2, 10,
                     what="the ACK received")
            _recv_all(caller, time.monotonic() + 0.3)
            assert _recv_all(caller, time.monotonic() + 2.5) == []
        assert f"fr sip:callee@127.0.0.1:{p.port} 408 2" in server.stderr()
        p.wait_stats({"core:fwd_requests": 0,   # the ACK was absorbed
                      "tm:4xx_transactions": 1,
                      "tm:local_replies": 2})   # 100 and the 408
        p.settle()


def test_cancel_while_ringing(server):
    callee = free_port()
    p = Proxy(server, ROUTE_HEAD + f"""
    t_on_failure("f");
    t_relay("", "udp:127.0.0.1:{callee}");    # the outbound proxy form
    exit;
}}
failure_route[f] {{
    if (t_was_cancelled())
        xlog("L_NOTICE", "cancelled $ci $T_reply_code\\n");
}}""")
    n = 5
    b = uas(SCEN / "uas_ring_cancel.xml", callee, n)
    a = uac(SCEN / "uac_cancel.xml", p.port, n)
    finish(a, b)
    p.wait_stats({"tm:2xx_transactions": n,     # the 200s to the CANCELs
                  "tm:4xx_transactions": n})    # the 487s
    wait_for(lambda: server.stderr().count("cancelled ") == n, 5,
             what="failure_route saw t_was_cancelled()")
    assert " 487" in server.stderr()
    p.settle()


def _drain(sock, quiet=0.3, limit=8.0):
    """Everything that arrives until the socket stays quiet for a while."""
    out = []
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = _recv_all(sock, time.monotonic() + quiet)
        if not got:
            break
        out += got
    return out


def test_request_retransmissions_are_absorbed(server):
    with _sock()[0] as callee:
        cport = callee.getsockname()[1]
        p = Proxy(server, ROUTE_HEAD + f"""
    $du = "sip:127.0.0.1:{cport}";
    t_relay();
    exit;
}}""")
        caller, me = _sock()
        with caller:
            data, br = _invite(p.port, me, 7)
            for _ in range(1000):            # a storm over 3 receivers
                caller.sendto(data, ("127.0.0.1", p.port))
            inv = _recv_all(callee, time.monotonic() + 5, bool)[0]
            assert inv.method == "INVITE"
            ring = (f"SIP/2.0 180 Ringing\r\n"
                    + "".join(f"Via: {v.text}\r\n" for v in inv.via)
                    + f"From: {inv.hdr('From')}\r\n"
                    f"To: {inv.hdr('To')};tag=callee\r\n"
                    f"Call-ID: {inv.callid}\r\nCSeq: 1 INVITE\r\n"
                    f"Content-Length: 0\r\n\r\n").encode()
            # every copy is answered with the 100 Trying sent again (some
            # may be lost in a full socket buffer, ours or the caller's)
            got = _drain(caller)
            assert {m.status for m in got} == {100}
            rcv = p.stat("core:rcv_requests")
            assert 1 < len(got) <= rcv
            # one INVITE went on, and timer A copies of it: never a second
            # transaction
            more = _drain(callee)
            assert all(m.method == "INVITE" and m.via1.branch ==
                       inv.via1.branch for m in more)
            callee.sendto(ring, ("127.0.0.1", p.port))
            assert [m.status for m in _recv_all(
                caller, time.monotonic() + 1)] == [180]
            _drain(callee)      # a timer A copy may have crossed the 180
            # a retransmission now gets the 180 again
            caller.sendto(data, ("127.0.0.1", p.port))
            again = _recv_all(caller, time.monotonic() + 0.5)
            assert [m.status for m in again] == [180]
            assert _recv_all(callee, time.monotonic() + 0.3) == []
            st = p.stats("tm:UAS_transactions", "tm:inuse_transactions")
            assert st["tm:UAS_transactions"] == 1
            assert st["tm:inuse_transactions"] == 1
            final = ring.replace(b"180 Ringing", b"486 Busy Here")
            callee.sendto(final, ("127.0.0.1", p.port))
            up = _recv_all(caller, time.monotonic() + 5,
                           lambda m: m.status == 486)
            assert up[-1].status == 486
            acks = _recv_all(callee, time.monotonic() + 0.5)
            assert [m.method for m in acks] == ["ACK"]
            assert acks[0].via1.branch == inv.via1.branch
            ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
                   f"From: {up[-1].hdr('From')}\r\nTo: {up[-1].hdr('To')}\r\n"
                   f"Call-ID: {up[-1].callid}\r\nCSeq: 1 ACK\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            caller.sendto(ack, ("127.0.0.1", p.port))
        p.settle()


def test_parallel_forking_first_200_wins_other_cancelled(server):
    fast, slow = free_port(), free_port()
    p = Proxy(server, ROUTE_HEAD + f"""
    if (is_method("INVITE")) {{
        $ru = "sip:service@127.0.0.1:{fast}";
        append_branch("sip:service@127.0.0.1:{slow}");
    }} else {{
        $du = "sip:127.0.0.1:{fast}";
    }}
    t_relay();
    exit;
}}""")
    n = 5
    b1 = uas(BENCH / "invite_uas.xml", fast, n)
    b2 = uas(SCEN / "uas_ring_cancel.xml", slow, n)
    # both callees listen (uas() waits for it): the slow one gets its
    # INVITE at once, not from a timer A copy that may come after the cell
    # is gone (wt_timer 1 s after the fast 200), and so rings in time to
    # be cancelled
    a = uac(BENCH / "invite_uac.xml", p.port, n, rate=5)
    finish(a, b1, b2)        # b2 saw a CANCEL for every call
    p.wait_stats({"tm:2xx_transactions": 2 * n})   # INVITE and BYE
    p.settle()


def test_branch_route_drops_a_branch(server):
    with _sock()[0] as dropped:
        dport = dropped.getsockname()[1]
        kept = free_port()
        p = Proxy(server, ROUTE_HEAD + f"""
    if (is_method("INVITE")) {{
        $ru = "sip:service@127.0.0.1:{kept}";
        append_branch("sip:service@127.0.0.1:{dport}");
        t_on_branch("pick");
    }} else {{
        $du = "sip:127.0.0.1:{kept}";
    }}
    t_relay();
    exit;
}}
branch_route[pick] {{
    if ($rp == {dport})
        drop;
    append_hf("X-Branch: $T_branch_idx\\r\\n");
}}""")
        n = 5
        b = uas(BENCH / "invite_uas.xml", kept, n)
        a = uac(BENCH / "invite_uac.xml", p.port, n)
        finish(a, b)
        assert _recv_all(dropped, time.monotonic() + 0.3) == []
        p.settle()


def test_t_uac_dlg_over_mi_sends_a_message(server):
    callee = free_port()
    p = Proxy(server, ROUTE_HEAD + """
    t_relay();
    exit;
}""")
    b = uas(SCEN / "uas_message.xml", callee, 1)
    try:
        r = mi_call(p.mi, "t_uac_dlg", {
            "method": "MESSAGE", "ruri": "sip:bob@example.invalid",
            "headers": "From: <sip:mi@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>"
                       "\r\nContent-Type: text/plain\r\n",
            "next_hop": f"sip:127.0.0.1:{callee}",
            "socket": f"udp:127.0.0.1:{p.port}",
            "body": "hello from MI"}, timeout=10)
        assert r["Status"] == "200 OK"
        assert "X-Got: it" in r["Message"]
        finish(b)
    finally:
        stop(b)
    p.wait_stats({"tm:UAC_transactions": 1, "tm:2xx_transactions": 1})
    with pytest.raises(AssertionError) as e:
        mi_call(p.mi, "t_uac_dlg", {"method": "OPTIONS",
                                    "ruri": "sip:x@127.0.0.1",
                                    "headers": "To: <sip:x@127.0.0.1>\r\n"})
    assert "From and To" in str(e.value)
    p.settle()


def test_a_lost_200_is_recovered_by_the_callees_retransmission(server):
    callee = free_port()
    p = Proxy(server, ROUTE_HEAD + f"""
    $du = "sip:127.0.0.1:{callee}";
    t_relay();
    exit;
}}""")
    n = 3
    b = uas(BENCH / "invite_uas.xml", callee, n)
    a = uac(SCEN / "uac_lost200.xml", p.port, n)
    out = a.communicate(timeout=45)[0].decode(errors="replace")
    assert a.returncode == 0, out[-3000:]
    finish(b)
    # the caller saw the retransmitted copies of every 200 (Retrans column
    # of its first "200 <---" line): 2 per call
    n200, copies = counts(out, "200 <-")
    assert n200 == n and copies >= 2 * n, out[-3000:]
    # The callee sends 180 and 200 back to back; with 3 receivers the 200
    # may be handled first, and a 1xx after the final reply is not relayed
    # (the caller's 180 count says how many were)
    n180 = counts(out, "180 <-")[0]
    assert n180 <= n
    # 180, 200, 200 of the BYE by tm; the copies by tm while the cell
    # waits (wt_timer 1 s), statelessly by the core after
    p.wait_stats({"tm:relayed_replies": lambda v: v >= n180 + 2 * n,
                  "core:fwd_replies": lambda v: True},
                 check=lambda st: st["tm:relayed_replies"]
                 + st["core:fwd_replies"] >= n180 + 2 * n + copies)
    p.settle()


def test_signaling_send_reply_is_stateful_in_a_transaction(server):
    p = Proxy(server, """
loadmodule "signaling.so"
route {
    if (is_method("ACK")) {
        t_check_trans();        # absorbs the ACK of our 404
        exit;
    }
    t_newtran();
    send_reply(404, "Not Here");
    exit;
}""")
    caller, me = _sock()
    with caller:
        data, br = _invite(p.port, me, 3)
        caller.sendto(data, ("127.0.0.1", p.port))
        got = _recv_all(caller, time.monotonic() + 5,
                        lambda m: m.status >= 200)
        assert [(m.status, m.reason) for m in got] == [(100, "Trying"),
                                                       (404, "Not Here")]
        caller.sendto(data, ("127.0.0.1", p.port))       # retransmitted
        again = _recv_all(caller, time.monotonic() + 0.3)
        assert [m.status for m in again] == [404]
        assert again[0].to.tag == got[1].to.tag
        ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
               f"From: {got[1].hdr('From')}\r\nTo: {got[1].hdr('To')}\r\n"
               f"Call-ID: {got[1].callid}\r\nCSeq: 1 ACK\r\n"
               f"Content-Length: 0\r\n\r\n").encode()
        caller.sendto(ack, ("127.0.0.1", p.port))
    p.wait_stats({"tm:local_replies": 2, "sl:sent_replies": 0,
                  "tm:4xx_transactions": 1})
    p.settle()


def _reply_to(req, code, reason, tag="callee"):
    return (f"SIP/2.0 {code} {reason}\r\n"
            + "".join(f"Via: {v.text}\r\n" for v in req.via)
            + f"From: {req.hdr('From')}\r\n"
            f"To: {req.hdr('To')}{';tag=' + tag if tag else ''}\r\n"
            f"Call-ID: {req.callid}\r\nCSeq: {req.cseq.num} "
            f"{req.cseq.method}\r\nContent-Length: 0\r\n\r\n").encode()


def test_t_add_hdrs_t_flush_flags_t_new_request(server):
    callee, cport = _sock()
    other, oport = _sock()
    with callee, other:
        p = Proxy(server, f"""
route {{
    if (is_method("ACK")) {{
        t_check_trans();
        exit;
    }}
    t_add_hdrs("X-Added: yes");
    t_on_failure("f");
    $du = "sip:127.0.0.1:{cport}";
    t_relay();
    setflag(5);
    t_flush_flags();
    xlog("L_NOTICE", "flushed $ci\n");
    exit;
}}
failure_route[f] {{
    if (isflagset(5))
        t_new_request("MESSAGE", "sip:n@127.0.0.1:{oport}",
                      "sip:tm@127.0.0.1", "sip:n@127.0.0.1",
                      "failed: $T_reply_code", "text/plain");
}}""")
        caller, me = _sock()
        with caller:
            data, br = _invite(p.port, me, 11)
            caller.sendto(data, ("127.0.0.1", p.port))
            inv = _recv_all(callee, time.monotonic() + 5, bool)[0]
            assert inv.hdr("X-Added") == "yes"
            # the flag is flushed after t_relay: a 486 handled by another
            # receiver before it would run failure_route without it
            wait_for(lambda: "flushed " in server.stderr(), 10,
                     what="t_flush_flags() done")
            callee.sendto(_reply_to(inv, 486, "Busy Here"),
                          ("127.0.0.1", p.port))
            msg = _recv_all(other, time.monotonic() + 5, bool)[0]
            assert msg.method == "MESSAGE" and msg.body == b"failed: 486"
            assert msg.content_type == "text/plain"
            other.sendto(_reply_to(msg, 200, "OK"), ("127.0.0.1", p.port))
            up = _recv_all(caller, time.monotonic() + 5,
                           lambda m: m.status >= 200)
            assert up[-1].status == 486
            assert [m.method for m in _recv_all(callee, time.monotonic()
                                                + 0.3)] == ["ACK"]
            ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
                   f"From: {up[-1].hdr('From')}\r\nTo: {up[-1].hdr('To')}\r\n"
                   f"Call-ID: {up[-1].callid}\r\nCSeq: 1 ACK\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            caller.sendto(ack, ("127.0.0.1", p.port))
        st = p.stats("tm:UAC_transactions", "tm:2xx_transactions")
        assert st["tm:UAC_transactions"] == 1
        p.settle()


def test_a_relay_that_fails_at_once_is_answered_unless_no_auto_477(server):
    p = Proxy(server, """
route {
    if (is_method("ACK")) {
        t_check_trans();
        exit;
    }
    $du = "sip:127.0.0.1:9;transport=sctp";
    if ($hdr(X-Quiet) == "1") {
        t_relay("no-auto-477");
        if ($rc == -4)          # OpenSIPS's "bad destination"
            t_reply(503, "Quietly Failed");
    } else {
        t_relay();
    }
    exit;
}""")
    caller, me = _sock()
    with caller:
        for quiet, want in (("0", "/TM)"), ("1", "Quietly Failed")):
            data, br = _invite(p.port, me, 20 + int(quiet))
            data = data.replace(b"Content-Length", f"X-Quiet: {quiet}\r\n"
                                f"Content-Length".encode())
            caller.sendto(data, ("127.0.0.1", p.port))
            got = _recv_all(caller, time.monotonic() + 5,
                            lambda m: m.status >= 200)
            assert got[-1].status >= 400 and want in got[-1].reason, \
                got[-1].reason
            ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
                   f"From: {got[-1].hdr('From')}\r\n"
                   f"To: {got[-1].hdr('To')}\r\n"
                   f"Call-ID: {got[-1].callid}\r\nCSeq: 1 ACK\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            caller.sendto(ack, ("127.0.0.1", p.port))
    p.settle()


def test_t_uac_cancel_cancels_a_local_invite_and_local_route_runs(server):
    """A local INVITE (t_new_request from the script, as MI t_uac_dlg
    would block its MI process until the final reply), local_route seeing
    it, MI t_uac_cancel cancelling it while the callee rings."""
    import re
    callee = free_port()
    p = Proxy(server, f"""
route {{
    if (is_method("OPTIONS")) {{
        t_new_request("INVITE", "sip:bob@127.0.0.1:{callee}",
                      "sip:tm@127.0.0.1", "sip:bob@127.0.0.1");
        sl_send_reply(200, "Calling");
    }}
    exit;
}}
local_route {{
    xlog("L_NOTICE", "local_route: $rm $ru $ci $cs\\n");
}}""")
    b = uas(SCEN / "uas_ring_cancel.xml", callee, 1)
    try:
        caller, me = _sock()
        with caller:
            caller.sendto((f"OPTIONS sip:x@127.0.0.1:{p.port} SIP/2.0\r\n"
                           f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKo1"
                           f"\r\nFrom: <sip:t@127.0.0.1>;tag=o\r\n"
                           f"To: <sip:x@127.0.0.1>\r\nCall-ID: opt-uac\r\n"
                           f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                           ).encode(), ("127.0.0.1", p.port))
            assert _recv_all(caller, time.monotonic() + 5,
                             bool)[0].status == 200
        m = wait_for(lambda: re.search(
            rf"local_route: INVITE sip:bob@127.0.0.1:{callee} (\S+) (\d+)",
            server.stderr()), 5, what="local_route ran")
        # the callee rings (its 180 reached tm)
        p.wait_stats({"tm:received_replies": lambda v: v >= 1})
        assert mi_call(p.mi, "t_uac_cancel", {"callid": m.group(1),
                                              "cseq": m.group(2)}) == "OK"
        finish(b)           # the callee got the CANCEL and our ACK
    finally:
        stop(b)
    with pytest.raises(AssertionError, match="not found"):
        mi_call(p.mi, "t_uac_cancel", {"callid": "nope", "cseq": "1"})
    p.wait_stats({"tm:UAC_transactions": 1, "tm:4xx_transactions": 1})
    p.settle()


def test_a_minor_branch_is_not_waited_for(server):
    busy, ring = free_port(), free_port()
    p = Proxy(server, ROUTE_HEAD + f"""
    if (is_method("INVITE")) {{
        $ru = "sip:service@127.0.0.1:{busy}";
        append_branch("sip:service@127.0.0.1:{ring}");
        setbflag(1, "MINOR");
    }}
    t_relay();
    exit;
}}""", params='modparam("tm", "minor_branch_flag", "MINOR")')
    b1 = uas(SCEN / "uas_busy.xml", busy, 1)
    b2 = uas(SCEN / "uas_ring_cancel.xml", ring, 1)
    try:
        caller, me = _sock()
        with caller:
            data, br = _invite(p.port, me, 31)
            caller.sendto(data, ("127.0.0.1", p.port))
            got = _recv_all(caller, time.monotonic() + 5,
                            lambda m: m.status >= 200)
            # the 486 of the main branch goes up although the minor one
            # only rang; the minor one is cancelled (b2 checks the CANCEL)
            assert got[-1].status == 486
            ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
                   f"From: {got[-1].hdr('From')}\r\n"
                   f"To: {got[-1].hdr('To')}\r\n"
                   f"Call-ID: {got[-1].callid}\r\nCSeq: 1 ACK\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            caller.sendto(ack, ("127.0.0.1", p.port))
            late = _recv_all(caller, time.monotonic() + 1)
            assert all(m.status < 200 or m.status == 486 for m in late)
        finish(b1, b2)
    finally:
        stop(b1)
        stop(b2)
    p.settle()


def test_onreply_routes_see_every_reply_and_may_drop_a_provisional(server):
    callee, cport = _sock()
    with callee:
        p = Proxy(server, ROUTE_HEAD + f"""
    $du = "sip:127.0.0.1:{cport}";
    $avp(who) = "alice";
    t_on_reply("r");
    t_relay();
    exit;
}}
onreply_route {{
    xlog("L_NOTICE", "main onreply $rs\\n");
}}
onreply_route[r] {{
    xlog("L_NOTICE",
         "tx onreply $rs $T_reply_code branch $T_branch_idx avp $avp(who)\\n");
    if ($rs == 183)
        drop;
}}""", params='modparam("tm", "onreply_avp_mode", 1)')
        caller, me = _sock()
        with caller:
            data, br = _invite(p.port, me, 41)
            caller.sendto(data, ("127.0.0.1", p.port))
            inv = _recv_all(callee, time.monotonic() + 5, bool)[0]
            for code, reason in ((183, "Session Progress"), (180, "Ringing"),
                                 (200, "OK")):
                callee.sendto(_reply_to(inv, code, reason),
                              ("127.0.0.1", p.port))
                # in this order: the next may reach another receiver, and
                # a 180 handled after the 200 is not relayed.  The worker
                # that logged holds the transaction until it relayed.
                wait_for(lambda: f"tx onreply {code} " in server.stderr(),
                         10, what=f"onreply_route ran for the {code}")
            got = _recv_all(caller, time.monotonic() + 5,
                            lambda m: m.status == 200)
            assert [m.status for m in got] == [100, 180, 200]
        err = server.stderr()
        for code in (183, 180, 200):
            assert f"main onreply {code}" in err
            assert f"tx onreply {code} {code} branch 0 avp alice" in err
        p.settle()


def test_t_reply_by_callid_answers_the_invite_from_its_cancel(server):
    p = Proxy(server, """
route {
    if (is_method("ACK")) {
        t_check_trans();
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_reply_by_callid(487, "Gone By Call-ID"))
            sl_send_reply(200, "Canceled");
        exit;
    }
    if ($hdr(X-Other) != NULL) {
        if (!t_reply_by_callid(486, "Nope", "$hdr(X-Other)", "1"))
            sl_send_reply(481, "No Such Call");
        exit;
    }
    t_newtran();         # the INVITE waits, answered 100 only
    exit;
}""")
    caller, me = _sock()
    with caller:
        data, br = _invite(p.port, me, 51)
        caller.sendto(data, ("127.0.0.1", p.port))
        assert _recv_all(caller, time.monotonic() + 5, bool)[0].status == 100
        inv = SipMsg(data)
        miss = (f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKoth\r\n"
                f"From: <sip:a@127.0.0.1>;tag=9\r\nTo: <sip:x@127.0.0.1>\r\n"
                f"Call-ID: other\r\nCSeq: 1 OPTIONS\r\nX-Other: no-such\r\n"
                f"Content-Length: 0\r\n\r\n").encode()
        caller.sendto(miss, ("127.0.0.1", p.port))
        assert _recv_all(caller, time.monotonic() + 5, bool)[0].status == 481
        cancel = (f"CANCEL {inv.ruri} SIP/2.0\r\n"
                  f"Via: {inv.via1.text}\r\nFrom: {inv.hdr('From')}\r\n"
                  f"To: {inv.hdr('To')}\r\nCall-ID: {inv.callid}\r\n"
                  f"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode()
        caller.sendto(cancel, ("127.0.0.1", p.port))
        got = _recv_all(caller, time.monotonic() + 1)
        # (the 487 may come twice: timer G until the ACK)
        assert sorted({(m.status, m.reason, m.cseq.method)
                       for m in got}) == [
            (200, "Canceled", "CANCEL"),
            (487, "Gone By Call-ID", "INVITE")]
        r = next(m for m in got if m.status == 487)
        ack = (f"ACK {inv.ruri} SIP/2.0\r\nVia: {inv.via1.text}\r\n"
               f"From: {r.hdr('From')}\r\nTo: {r.hdr('To')}\r\n"
               f"Call-ID: {r.callid}\r\nCSeq: 1 ACK\r\n"
               f"Content-Length: 0\r\n\r\n").encode()
        caller.sendto(ack, ("127.0.0.1", p.port))
    p.settle()


def test_mi_t_reply_and_t_hash_on_a_pending_transaction(server):
    import re
    p = Proxy(server, """
route {
    if (is_method("ACK")) {
        t_check_trans();
        exit;
    }
    t_newtran();
    xlog("L_NOTICE", "pending $T_id\\n");
    exit;
}""")
    caller, me = _sock()
    with caller:
        data, br = _invite(p.port, me, 61)
        caller.sendto(data, ("127.0.0.1", p.port))
        assert _recv_all(caller, time.monotonic() + 5, bool)[0].status == 100
        m = wait_for(lambda: re.search(r"pending (\d+):(\d+)",
                                       server.stderr()), 5, what="$T_id")
        buckets = mi_call(p.mi, "t_hash")
        assert {"index": int(m.group(1)), "entries": 1} in buckets
        assert mi_call(p.mi, "t_reply", {
            "code": "603", "reason": "Declined By MI",
            "trans_id": f"{m.group(1)}:{m.group(2)}", "to_tag": "mi",
            "new_headers": "X-MI: yes\r\n"}) == "OK"
        r = _recv_all(caller, time.monotonic() + 5,
                      lambda x: x.status >= 200)[-1]
        assert (r.status, r.reason, r.hdr("X-MI"), r.to.tag) == (
            603, "Declined By MI", "yes", "mi")
        with pytest.raises(AssertionError, match="not found"):
            mi_call(p.mi, "t_reply", {"code": "500", "reason": "x",
                                      "trans_id": "1:99999", "to_tag": "x"})
        ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
               f"From: {r.hdr('From')}\r\nTo: {r.hdr('To')}\r\n"
               f"Call-ID: {r.callid}\r\nCSeq: 1 ACK\r\n"
               f"Content-Length: 0\r\n\r\n").encode()
        caller.sendto(ack, ("127.0.0.1", p.port))
    p.wait_stats({"tm:6xx_transactions": 1})
    p.settle()


def test_allow_no_cancel_keeps_the_other_branches_after_a_200(server):
    fast, fport = _sock()
    slow, sport = _sock()
    with fast, slow:
        p = Proxy(server, ROUTE_HEAD + f"""
    $ru = "sip:a@127.0.0.1:{fport}";
    append_branch("sip:b@127.0.0.1:{sport}");
    t_relay("allow-no-cancel");
    exit;
}}""")
        caller, me = _sock()
        with caller:
            data, br = _invite(p.port, me, 71)
            data = data.replace(b"Content-Length",
                                b"Request-Disposition: no-cancel\r\n"
                                b"Content-Length")
            caller.sendto(data, ("127.0.0.1", p.port))
            s_inv = _recv_all(slow, time.monotonic() + 5, bool)[0]
            slow.sendto(_reply_to(s_inv, 180, "Ringing", "s"),
                        ("127.0.0.1", p.port))
            f_inv = _recv_all(fast, time.monotonic() + 5, bool)[0]
            fast.sendto(_reply_to(f_inv, 200, "OK", "f"),
                        ("127.0.0.1", p.port))
            got = _recv_all(caller, time.monotonic() + 5,
                            lambda m: m.status == 200)
            assert got[-1].status == 200
            # RFC 3841 §9.1: the ringing branch is not cancelled
            assert _recv_all(slow, time.monotonic() + 0.8) == []
            slow.sendto(_reply_to(s_inv, 486, "Busy Here", "s"),
                        ("127.0.0.1", p.port))
            assert [m.method for m in _recv_all(
                slow, time.monotonic() + 0.5)] == ["ACK"]
            # the 486 is not relayed after the 200
            assert all(m.status < 300 for m in _recv_all(
                caller, time.monotonic() + 0.3))
        p.settle()


def test_no_transaction_cancel_and_reply_go_statelessly(server):
    callee, cport = _sock()
    with callee:
        p = Proxy(server, f"""
route {{
    $du = "sip:127.0.0.1:{cport}";
    t_relay();
    exit;
}}""")
        caller, me = _sock()
        with caller:
            # a CANCEL whose INVITE we never saw: relayed statelessly
            cancel = (f"CANCEL sip:x@127.0.0.1 SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKlost\r\n"
                      f"Max-Forwards: 70\r\n"
                      f"From: <sip:a@127.0.0.1>;tag=1\r\n"
                      f"To: <sip:x@127.0.0.1>\r\nCall-ID: lost-cancel\r\n"
                      f"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode()
            caller.sendto(cancel, ("127.0.0.1", p.port))
            got = _recv_all(callee, time.monotonic() + 1)
            assert [m.method for m in got] == ["CANCEL"]
            assert _recv_all(caller, time.monotonic() + 0.2) == []
            # its reply matches no transaction: stateless relay too
            callee.sendto(_reply_to(got[0], 481, "No Such Call"),
                          ("127.0.0.1", p.port))
            back = _recv_all(caller, time.monotonic() + 1)
            assert [(m.status, len(m.via)) for m in back] == [(481, 1)]
        p.wait_stats({"tm:UAS_transactions": 0, "core:fwd_requests": 1,
                      "core:fwd_replies": 1, "tm:received_replies": 0})
        p.settle()


def _reply_hdrs(req, code, reason, tag, extra=""):
    r = _reply_to(req, code, reason, tag)
    return r.replace(b"Content-Length", extra.encode() + b"Content-Length")


def test_best_reply_of_two_branches(server):
    a, aport = _sock()
    b, bport = _sock()
    with a, b:
        p = Proxy(server, ROUTE_HEAD + f"""
    $ru = "sip:a@127.0.0.1:{aport}";
    append_branch("sip:b@127.0.0.1:{bport}");
    t_relay();
    exit;
}}""")
        caller, me = _sock()
        cases = [
            # (reply of a, reply of b) -> what goes up
            ((503, "Service Unavailable", ""), (486, "Busy Here", ""),
             (486, "Busy Here")),
            ((503, "Service Unavailable", ""), (504, "Timeout", ""),
             (500, "Server Internal Error")),     # §16.7 step 6
            ((401, "Unauthorized",
              'WWW-Authenticate: Digest realm="a", nonce="1"\r\n'),
             (407, "Proxy Authentication Required",
              'Proxy-Authenticate: Digest realm="b", nonce="2"\r\n'),
             (401, "Unauthorized")),
            ((302, "Moved", "Contact: <sip:x@127.0.0.1>\r\n"),
             (603, "Decline", ""), (603, "Decline")),
        ]
        with caller:
            for i, (ra, rb, want) in enumerate(cases):
                data, br = _invite(p.port, me, 80 + i)
                caller.sendto(data, ("127.0.0.1", p.port))
                ia = _recv_all(a, time.monotonic() + 5, bool)[0]
                ib = _recv_all(b, time.monotonic() + 5, bool)[0]
                a.sendto(_reply_hdrs(ia, ra[0], ra[1], "a", ra[2]),
                         ("127.0.0.1", p.port))
                # a's reply handled (tm ACKs it) before b's is sent
                a_ack = _recv_all(a, time.monotonic() + 5,
                                  lambda m: m.method == "ACK")
                b.sendto(_reply_hdrs(ib, rb[0], rb[1], "b", rb[2]),
                         ("127.0.0.1", p.port))
                cid = SipMsg(data).callid
                up = _recv_all(caller, time.monotonic() + 5,
                               lambda m: m.status >= 200 and
                               m.callid == cid)[-1]
                assert (up.status, up.reason) == want, (i, up)
                if want[0] == 401:
                    # the challenges of both branches, merged
                    assert 'realm="a"' in up.hdr("WWW-Authenticate")
                    assert 'realm="b"' in up.hdr("Proxy-Authenticate")
                # hop-by-hop ACKs, one each
                for s, got in ((a, a_ack), (b, [])):
                    assert [m.method for m in got + _recv_all(
                        s, time.monotonic() + 0.3)] == ["ACK"]
                ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
                       f"From: {up.hdr('From')}\r\nTo: {up.hdr('To')}\r\n"
                       f"Call-ID: {up.callid}\r\nCSeq: 1 ACK\r\n"
                       f"Content-Length: 0\r\n\r\n").encode()
                caller.sendto(ack, ("127.0.0.1", p.port))
        p.settle()


def test_fr_inv_timeout_cancels_a_ringing_branch_restarted_by_each_1xx(
        server):
    callee, cport = _sock()
    with callee:
        p = Proxy(server, ROUTE_HEAD + f"""
    $du = "sip:127.0.0.1:{cport}";
    t_relay();
    exit;
}}""", params='modparam("tm", "fr_inv_timeout", 3)\n'
               'modparam("tm", "restart_fr_on_each_reply", 1)')
        caller, me = _sock()
        with caller:
            data, br = _invite(p.port, me, 91)
            caller.sendto(data, ("127.0.0.1", p.port))
            inv = _recv_all(callee, time.monotonic() + 5, bool)[0]
            t0 = time.monotonic()
            callee.sendto(_reply_to(inv, 180, "Ringing", "c"),
                          ("127.0.0.1", p.port))
            # the second 180 at 1.5 s: 1.5 s before timer C (3 s) would
            # fire, margin for a loaded machine to handle it
            time.sleep(1.5)
            callee.sendto(_reply_to(inv, 180, "Ringing", "c"),
                          ("127.0.0.1", p.port))
            # timer C restarted at 1.5 s: nothing final before 4.5 s
            early = _recv_all(caller, t0 + 4.2)
            assert all(m.status < 200 for m in early)
            got = _recv_all(caller, t0 + 9, lambda m: m.status >= 200)
            assert (got[-1].status, got[-1].reason) == (408,
                                                        "Request Timeout")
            assert 4.3 < time.monotonic() - t0 < 9
            # the ringing branch was cancelled
            c = _recv_all(callee, time.monotonic() + 5,
                          lambda m: m.method == "CANCEL")
            assert c and c[-1].method == "CANCEL"
            assert c[-1].via1.branch == inv.via1.branch
            callee.sendto(_reply_to(c[-1], 200, "OK", "c"),
                          ("127.0.0.1", p.port))
            callee.sendto(_reply_to(inv, 487, "Request Terminated", "c"),
                          ("127.0.0.1", p.port))
            assert "ACK" in [m.method for m in _recv_all(
                callee, time.monotonic() + 0.5)]
            up = got[-1]
            ack = (f"ACK sip:callee@127.0.0.1:{p.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
                   f"From: {up.hdr('From')}\r\nTo: {up.hdr('To')}\r\n"
                   f"Call-ID: {up.callid}\r\nCSeq: 1 ACK\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            caller.sendto(ack, ("127.0.0.1", p.port))
        p.settle()


def test_t_reply_with_body_and_t_cancel_branch(server):
    a, aport = _sock()
    b, bport = _sock()
    with a, b:
        p = Proxy(server, ROUTE_HEAD + f"""
    if (is_method("MESSAGE")) {{
        t_reply_with_body(200, "Got It", "stored: $rb", "text/plain");
        exit;
    }}
    $ru = "sip:a@127.0.0.1:{aport}";
    append_branch("sip:b@127.0.0.1:{bport}");
    t_on_reply("r");
    t_relay();
    exit;
}}
onreply_route[r] {{
    if ($rs == 180 && $T_branch_idx == 1)
        t_cancel_branch();
}}""")
        caller, me = _sock()
        with caller:
            caller.sendto((
                f"MESSAGE sip:x@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKmsg\r\n"
                f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\n"
                f"Call-ID: msg-body\r\nCSeq: 1 MESSAGE\r\n"
                f"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
            ).encode(), ("127.0.0.1", p.port))
            r = _recv_all(caller, time.monotonic() + 5, bool)[0]
            assert (r.status, r.reason, r.content_type, r.body) == (
                200, "Got It", "text/plain", b"stored: hi")
            data, br = _invite(p.port, me, 95)
            caller.sendto(data, ("127.0.0.1", p.port))
            ia = _recv_all(a, time.monotonic() + 5, bool)[0]
            ib = _recv_all(b, time.monotonic() + 5, bool)[0]
            a.sendto(_reply_to(ia, 180, "Ringing", "a"), ("127.0.0.1", p.port))
            b.sendto(_reply_to(ib, 180, "Ringing", "b"), ("127.0.0.1", p.port))
            # only branch 1 (b) is cancelled from its onreply_route
            cb = _recv_all(b, time.monotonic() + 5, lambda m: m.method ==
                           "CANCEL")
            assert cb and cb[-1].method == "CANCEL"
            assert all(m.method != "CANCEL" for m in _recv_all(
                a, time.monotonic() + 0.3))
            b.sendto(_reply_to(cb[-1], 200, "OK", "b"), ("127.0.0.1", p.port))
            b.sendto(_reply_to(ib, 487, "Request Terminated", "b"),
                     ("127.0.0.1", p.port))
            a.sendto(_reply_to(ia, 200, "OK", "a"), ("127.0.0.1", p.port))
            up = _recv_all(caller, time.monotonic() + 5,
                           lambda m: m.status == 200)
            assert up[-1].status == 200 and up[-1].to.tag == "a"
            ack = (f"ACK sip:a@127.0.0.1:{aport} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKack2\r\n"
                   f"From: {up[-1].hdr('From')}\r\nTo: {up[-1].hdr('To')}\r\n"
                   f"Call-ID: {up[-1].callid}\r\nCSeq: 1 ACK\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            caller.sendto(ack, ("127.0.0.1", p.port))
        p.settle()
