"""Shared memory exhausted: a new transaction cannot be made, the request
is answered 500 with a log line, nothing crashes, and tm works again once
memory is back."""
import socket
from types import SimpleNamespace

from opensipy import shm
from opensipy.parser import ReceiveInfo, SipMsg
from opensipy_modules.tm import core


def _request(port, i):
    return SipMsg((f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKoom{i}\r\n"
                   f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
                   f"Call-ID: oom{i}\r\nCSeq: 1 INVITE\r\n"
                   f"Content-Length: 0\r\n\r\n").encode())


def _fill():
    """Allocate until the arena is full; returns the blocks."""
    blocks = []
    for size in (1 << 20, 1 << 14, 1 << 10, 64, 16):
        while True:
            try:
                blocks.append(shm.shm_malloc(size, "oomtest"))
            except shm.ShmOutOfMemory:
                break
    return blocks


def test_no_memory_means_500_and_recovery(tmtable, capfd):
    me = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    me.bind(("127.0.0.1", 0))
    me.settimeout(2)
    port = me.getsockname()[1]
    si = SimpleNamespace(sock=me, name="udp:127.0.0.1", proto="udp")
    inuse = tmtable.inuse()
    blocks = _fill()
    try:
        msg = _request(port, 1)
        msg.rcv = ReceiveInfo("127.0.0.1", port, "127.0.0.1", port, "udp",
                              si)
        assert core.newtran(msg) == 0          # the script stops
        reply = SipMsg(me.recv(65535))
        assert (reply.status, reply.reason) == (500, "Server Internal Error")
        assert getattr(msg, "tm_cell", None) is None
        assert tmtable.inuse() == inuse
    finally:
        for b in blocks:
            shm.shm_free(b)
    assert "out of shared memory" in capfd.readouterr().err
    msg = _request(port, 2)
    msg.rcv = ReceiveInfo("127.0.0.1", port, "127.0.0.1", port, "udp", si)
    core.cfg.auto_100trying = 0
    try:
        assert core.newtran(msg) == 1
    finally:
        core.cfg.auto_100trying = 1
    cell = msg.tm_cell
    assert tmtable.inuse() == inuse + 1
    core.release(msg)
    tmtable.delete(cell)
    assert tmtable.inuse() == inuse
    me.close()
    shm.check()
