"""Real SIP peers through the stateless proxy: SIPp's own UAC and UAS
(INVITE, 180, 200, ACK, BYE, 200) with opensipy -F between them."""
import shutil
import socket
import subprocess

import pytest

from opensipy.parser import SipMsg

from server import free_port, mi_call, popen

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

CALLS = 20


def sipp(args, timeout=60):
    return popen(["sipp", *args, "-nostdin", "-timeout", "40s"],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait(10)


def options(port, n):
    """n OPTIONS for the proxy itself, answered by sl; returns the replies."""
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        me = s.getsockname()[1]
        for i in range(n):
            s.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKo{i}\r\n"
                      f"Max-Forwards: 70\r\n"
                      f"From: <sip:t@127.0.0.1>;tag=o{i}\r\n"
                      f"To: <sip:127.0.0.1:{port}>\r\n"
                      f"Call-ID: opt{i}@test\r\nCSeq: 1 OPTIONS\r\n"
                      f"Content-Length: 0\r\n\r\n").encode(),
                     ("127.0.0.1", port))
            replies.append(SipMsg(s.recv(65535)))
    return replies


def test_sipp_calls_go_through_the_stateless_proxy(server, tmp_path):
    proxy, uas_port, uac_port = free_port(), free_port(), free_port()
    mi_port = free_port()
    # one receiver: a single worker keeps the order of the replies, so the
    # strict built-in scenarios apply (the harness in bench/ copes with
    # reordering between several workers)
    server.start(f"""
udp_workers=1
socket=udp:127.0.0.1:{proxy}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi_port}")
route {{
    if (!mf_process_maxfwd_header(10)) {{
        sl_send_reply(483, "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && is_myself("$rd")) {{
        sl_send_reply(200, "OK");
        exit;
    }}
    forward("127.0.0.1:{uas_port}");
}}
""")
    uas = sipp(["-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port),
                "-mp", str(free_port()), "-m", str(CALLS)])
    uac = sipp(["-sn", "uac", f"127.0.0.1:{proxy}", "-i", "127.0.0.1",
                "-p", str(uac_port), "-mp", str(free_port()),
                "-m", str(CALLS), "-r", "20", "-d", "0"])
    try:
        out, _ = uac.communicate(timeout=60)
        assert uac.returncode == 0, out.decode(errors="replace")[-3000:]
        uas.wait(30)
        assert uas.returncode == 0
    finally:
        stop(uac)
        stop(uas)
    assert server.proc.poll() is None
    replies = options(proxy, 5)
    assert [r.status for r in replies] == [200] * 5
    assert all(r.to.tag for r in replies)
    stats = mi_call(mi_port, "get_statistics", {"statistics": ["core:", "sl:"]})
    # per call: INVITE, ACK, BYE in and out; 180, 200, 200 back
    assert stats["core:rcv_requests"] == 3 * CALLS + 5
    assert stats["core:fwd_requests"] == 3 * CALLS
    assert stats["core:rcv_replies"] == 3 * CALLS
    assert stats["core:fwd_replies"] == 3 * CALLS
    assert stats["core:err_requests"] == 0
    assert stats["core:drop_replies"] == 0
    assert stats["sl:2xx_replies"] == 5
    assert stats["sl:sent_replies"] == 5
    assert stats["sl:sent_err_replies"] == 0
