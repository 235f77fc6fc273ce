"""A receiver killed in the middle of a transaction (holding the cell
lock): the lock is recovered and the transaction still finishes from the
timer (here: this process running the timer handler).

The reference the dead process held is taken back by the timer
(tm_reap_dead): the cell is freed and inuse_transactions goes back."""
import os
import signal
import socket
import time
from types import SimpleNamespace

from opensipy.parser import ReceiveInfo, SipMsg
from opensipy_modules.tm import core
from opensipy_modules.tm.table import lib


def _si(sock):
    host, port = sock.getsockname()
    return SimpleNamespace(sock=sock, name=f"udp:{host}:{port}", proto="udp",
                           af=socket.AF_INET, host=host, port=port,
                           adv_host=None, adv_port=None)


def test_a_killed_receiver_leaves_a_transaction_the_timer_finishes(tmtable):
    proxy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (proxy, caller, callee):
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
    si = _si(proxy)
    cport = caller.getsockname()[1]
    n0 = tmtable.inuse()
    recovered = lib.tm_locks_recovered()
    saved_wt = core.cfg.wt_timer
    core.cfg.wt_timer = 0.05
    pid = os.fork()
    if pid == 0:     # the receiver that dies
        code = 1
        try:
            msg = SipMsg((
                f"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKkill\r\n"
                f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
                f"Call-ID: kill1\r\nCSeq: 1 MESSAGE\r\n"
                f"Content-Length: 0\r\n\r\n").encode())
            msg.rcv = ReceiveInfo("127.0.0.1", cport, "127.0.0.1",
                                  si.port, "udp", si)
            msg.tm_fr_timeout = 1
            msg.dst_uri = f"sip:127.0.0.1:{callee.getsockname()[1]}"
            assert core.relay(msg) == 1
            lib.tm_cell_lock(msg.tm_cell)
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status)
        assert SipMsg(callee.recv(65535)).method == "MESSAGE"
        # one deadline for the 408 (timer F: 1 s), the wait timer and the
        # reaping: generous, every loop ends as soon as it may
        deadline = time.monotonic() + 20
        final = None
        caller.settimeout(0.05)
        while final is None and time.monotonic() < deadline:
            core.timer_tick()
            try:
                final = SipMsg(caller.recv(65535))
            except socket.timeout:
                pass
        assert final is not None and final.status == 408
        assert lib.tm_locks_recovered() == recovered + 1
        # timer E went on retransmitting while the owner was dead
        callee.settimeout(0.1)
        copies = 0
        try:
            while True:
                callee.recv(65535)
                copies += 1
        except socket.timeout:
            pass
        assert copies >= 1
        key = b"z9hG4bKkill|127.0.0.1|" + str(cport).encode()
        while time.monotonic() < deadline:
            c = tmtable.lookup_req(b"kill1", 1, key, 256, 0)
            if c is None:
                break
            tmtable.unref(c)
            time.sleep(0.02)
            core.timer_tick()
        assert tmtable.lookup_req(b"kill1", 1, key, 256, 0) is None
        while tmtable.inuse() > n0 and time.monotonic() < deadline:
            time.sleep(0.02)
            core.timer_tick()       # every 10th run reaps dead holders
        assert tmtable.inuse() == n0
        assert lib.tm_zombies() == 0
    finally:
        core.cfg.wt_timer = saved_wt
        for s in (proxy, caller, callee):
            s.close()
