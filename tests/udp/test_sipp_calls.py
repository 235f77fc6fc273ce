"""Real SIP peers through the stateless proxy: SIPp's own UAC and UAS
(INVITE, 180, 200, ACK, BYE, 200) with opensipy -F between them."""
import shutil
import subprocess

import pytest

from server import free_port

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

CALLS = 20


def sipp(args, timeout=60):
    return subprocess.Popen(["sipp", *args, "-nostdin", "-timeout", "40s"],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait(10)


def test_sipp_calls_go_through_the_stateless_proxy(server, tmp_path):
    proxy, uas_port, uac_port = free_port(), free_port(), free_port()
    # one receiver: a single worker keeps the order of the replies, so the
    # strict built-in scenarios apply (the harness in bench/ copes with
    # reordering between several workers)
    server.start(f"""
udp_workers=1
socket=udp:127.0.0.1:{proxy}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
route {{
    if (!mf_process_maxfwd_header(10)) {{
        sl_send_reply(483, "Too Many Hops");
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
