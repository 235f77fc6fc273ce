"""Benchmark (not a timed test) of the receive path inside one process:
receive_msg() over a typical INVITE with a script that forwards it, and over
the 200 OK relayed back: parse, proxy checks, script, Via/branch, build,
sendto.  Run with --benchmark-enable; normal runs check the path once.

    python3 -m pytest tests/udp/test_bench_receive.py --benchmark-enable
"""
import socket

import pytest

from opensipy import config, modloader, receive, shm, statistics
from opensipy.net import udp
from opensipy.parser import SipMsg

from server import free_port

INVITE = (
    "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1234-1-0;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=1234SIPpTag001\r\n"
    "To: <sip:bob@127.0.0.1:5060>\r\n"
    "Call-ID: 1-1234@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5070>\r\n"
    "Subject: Performance Test\r\n"
    "User-Agent: bench\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 129\r\n\r\n"
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
    "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n").encode()


@pytest.fixture(scope="module")
def path():
    from opensipy import script
    from opensipy.core_cmds import core_exports
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    if statistics.get_stat("core:rcv_requests") is None:
        statistics.register_core_stats()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    config.reset()
    config.settings.set("socket", f"udp:127.0.0.1:{free_port()}")
    si = config.settings.sockets[0]
    udp.open_udp(si)
    reg = modloader.Registry()
    reg.add(modloader.LoadedModule("core", core_exports))
    s = script.parse_string(
        f'route {{ forward("127.0.0.1:{sink.getsockname()[1]}"); }}')
    compiled = script.compile_script(s, reg)
    receive.child_start(2, compiled, reg)
    yield si, sink
    si.sock.close()
    sink.close()
    config.reset()


def drain(sink):
    n = 0
    try:
        while True:
            sink.recv(65535)
            n += 1
    except BlockingIOError:
        return n


def test_receive_and_forward_an_invite(benchmark, path):
    si, sink = path
    src = ("127.0.0.1", 5070)
    drain(sink)
    benchmark(receive.receive_msg, INVITE, src, si)
    out = []
    try:
        while True:
            out.append(sink.recv(65535))
    except BlockingIOError:
        pass
    assert out, "nothing was forwarded"
    fwd = SipMsg(out[-1])
    assert fwd.method == "INVITE" and len(fwd.via) == 2
    assert fwd.via[1].received == "127.0.0.1" and fwd.via[1].rport == "5070"


def test_relay_a_reply(benchmark, path):
    si, sink = path
    port = si.port
    reply = (f"SIP/2.0 200 OK\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKabc\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{sink.getsockname()[1]};"
             f"branch=z9hG4bK-1234-1-0;received=127.0.0.1;rport=5070\r\n"
             "From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=1234SIPpTag001\r\n"
             "To: <sip:bob@127.0.0.1:5060>;tag=99\r\n"
             "Call-ID: 1-1234@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
             "Contact: <sip:bob@127.0.0.1:5080>\r\n"
             "Content-Length: 0\r\n\r\n").encode()
    drain(sink)
    # rport=5070 sends the relayed reply to 127.0.0.1:5070; count it by
    # the statistic instead of a socket
    before = statistics.get_stat("core:fwd_replies").get()
    benchmark(receive.receive_msg, reply, ("127.0.0.1", 5080), si)
    assert statistics.get_stat("core:fwd_replies").get() > before
