"""Benchmarks (not timed tests) of the TCP hot path inside one process:
framing a stream of typical INVITEs, and one write on a connection by a
process that does not hold it (cached descriptor: table record check,
write lock, send).  Run with --benchmark-enable; normal runs check the
path once.

    python3 -m pytest tests/tcp/test_bench_tcp.py --benchmark-enable
"""
import socket

import pytest

from opensipy import shm
from opensipy.net import tcp

INVITE = (
    "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-1234-1-0\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=1234SIPpTag001\r\n"
    "To: <sip:bob@127.0.0.1:5060>\r\n"
    "Call-ID: 1-1234@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5070;transport=tcp>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 129\r\n\r\n"
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
    "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n").encode()


@pytest.fixture(scope="module", autouse=True)
def arena():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)


def test_bench_frame_ten_invites_in_two_reads(benchmark):
    c = tcp._Conn(5, None, ("127.0.0.1", 5070), None)
    tcp._held[5] = c
    got = []
    stream = INVITE * 10
    half = len(stream) // 2 + 7

    def run():
        got.clear()
        tcp._frame(c, stream[:half], lambda m, s, si, cid: got.append(m))
        tcp._frame(c, stream[half:], lambda m, s, si, cid: got.append(m))
    try:
        benchmark(run)
        assert got == [INVITE] * 10 and c.buf == b""
    finally:
        tcp._held.pop(5, None)


def test_bench_send_on_a_cached_connection(benchmark, monkeypatch):
    a, b = socket.socketpair()
    a.setblocking(False)
    monkeypatch.setattr(tcp, "table", tcp.ConnTable(64))
    cid = tcp.table.alloc(tcp.peer_key(socket.AF_INET, "127.0.0.1", 5080), 0)
    tcp._cache[cid] = a
    n = [0]

    def run():
        assert tcp.send(None, INVITE, ("127.0.0.1", 5080))
        n[0] += 1
        if n[0] % 64 == 0:          # keep the peer's buffer from filling
            try:
                while b.recv(1 << 20, socket.MSG_DONTWAIT):
                    pass
            except BlockingIOError:
                pass
    try:
        benchmark(run)
        assert b.recv(len(INVITE), socket.MSG_DONTWAIT) == INVITE
    finally:
        tcp._cache.pop(cid, None)
        tcp._peer_cache.clear()
        a.close()
        b.close()
