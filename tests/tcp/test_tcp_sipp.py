"""SIPp over TCP through the real server: stateless and stateful calls with
several TCP workers (with -t tn every call has its own connection, so the
connections are spread over the workers and a reply often leaves on a
connection another worker holds), and UDP <-> TCP bridging with a double
Record-Route and in-dialog requests both ways."""
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from server import free_port, mi_call, popen

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

HERE = Path(__file__).resolve().parent / "sipp"
CALLS = 30


def sipp(args):
    return popen(["sipp", *args, "-nostdin", "-timeout", "40s",
                             "-max_socket", "256"],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(p, timeout=60):
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    return p.returncode, out.decode(errors="replace")[-3000:]


def proxy_script(port, mi, route, workers=3):
    return f"""
log_level=2
udp_workers=2
tcp_workers={workers}
socket=udp:127.0.0.1:{port}
socket=tcp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "proto_tcp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("rr", "enable_double_rr", 1)
route {{
{route}
}}
"""


@pytest.mark.parametrize("mode", ["t1", "tn"])
@pytest.mark.parametrize("relay", ["forward()", "t_relay()"])
def test_sipp_calls_over_tcp(server, relay, mode):
    port = free_port(socket.SOCK_STREAM)
    mi, uas_port = free_port(), free_port(socket.SOCK_STREAM)
    server.start(proxy_script(port, mi, f"""
    $du = "sip:127.0.0.1:{uas_port};transport=tcp";
    {relay};
"""))
    uas = sipp(["-sn", "uas", "-t", "t1", "-i", "127.0.0.1",
                "-p", str(uas_port), "-m", str(CALLS)])
    uac = sipp(["-sn", "uac", "-t", mode, f"127.0.0.1:{port}",
                "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_STREAM)),
                "-m", str(CALLS), "-r", "15", "-d", "0"])
    try:
        rc, out = finish(uac)
        assert rc == 0, out
        rc, out = finish(uas, 30)
        assert rc == 0, out
    finally:
        for p in (uac, uas):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    st = mi_call(mi, "get_statistics", {"statistics": ["core:",
                                                       "proto_tcp:", "tm:"]})
    assert st["core:rcv_requests"] == 3 * CALLS
    assert st["core:rcv_replies"] == 3 * CALLS
    assert st["proto_tcp:send_timeouts"] == 0
    # one connection to the callee; from the caller one, or one per call
    assert st["proto_tcp:opened_conns"] == (CALLS if mode == "tn" else 1) + 1
    if relay == "t_relay()":
        assert st["tm:UAS_transactions"] == 2 * CALLS
        assert st["tm:relayed_replies"] == 3 * CALLS
    else:
        assert st["core:fwd_requests"] == 3 * CALLS
        assert st["core:fwd_replies"] == 3 * CALLS


def test_udp_tcp_bridging_with_double_record_route(server):
    port, mi = free_port(socket.SOCK_STREAM), free_port()
    callee_port = free_port(socket.SOCK_STREAM)
    server.start(proxy_script(port, mi, """
    if (has_totag()) {
        if (loose_route()) {
            t_relay();
            exit;
        }
        sl_send_reply(404, "Not here");
        exit;
    }
    record_route();
    t_relay();
""", workers=2))
    n = 5
    callee = sipp(["-sf", str(HERE / "bridge_callee.xml"), "-t", "t1",
                   "-i", "127.0.0.1", "-p", str(callee_port), "-m", str(n),
                   f"127.0.0.1:{port}"])
    caller = sipp(["-sf", str(HERE / "bridge_caller.xml"), "-t", "u1",
                   "-i", "127.0.0.1", "-p", str(free_port()),
                   "-key", "callee_port", str(callee_port),
                   "-m", str(n), "-r", "5", f"127.0.0.1:{port}"])
    try:
        rc, out = finish(caller)
        assert rc == 0, out
        rc, out = finish(callee, 30)
        assert rc == 0, out
    finally:
        for p in (caller, callee):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    st = mi_call(mi, "get_statistics", {"statistics": ["core:", "tm:"]})
    # INVITE and ACK from the UDP side, BYE from the TCP side
    assert st["core:rcv_requests"] == 3 * n
    assert st["tm:UAS_transactions"] == 2 * n
    assert st["core:err_requests"] == 0
