"""The tm API's transaction callbacks, driven through core on a real
socket pair (no server): a global TMCB_REQUEST_IN arms per-transaction
callbacks by name; the reply out and the deletion at the end of the wait
run them."""
import socket
import time
from types import SimpleNamespace

import pytest

from opensipy.parser import ReceiveInfo, SipMsg
from opensipy_modules.tm import callbacks as cb
from opensipy_modules.tm import core


@pytest.fixture
def peer(tmtable):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    saved = (list(cb._request_in), dict(cb._funcs), core.cfg.wt_timer)
    yield s
    cb._request_in[:] = saved[0]
    cb._funcs.clear()
    cb._funcs.update(saved[1])
    core.cfg.wt_timer = saved[2]
    s.close()


def _message(port):
    m = SipMsg((f"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKcb1\r\n"
                f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
                f"Call-ID: cb1\r\nCSeq: 7 MESSAGE\r\n"
                f"Content-Length: 0\r\n\r\n").encode())
    return m


def test_callbacks_run_where_the_events_happen(peer, tmtable):
    port = peer.getsockname()[1]
    si = SimpleNamespace(sock=peer, name="udp:127.0.0.1", proto="udp")
    seen = []

    def on_event(cell, typ, params):
        seen.append((typ, params["code"], params["param"]))

    def on_new(cell, typ, params):
        seen.append((typ, params["req"].method, None))
        cb.register_tmcb(cell, cb.TMCB_LOCAL_RESPONSE_OUT
                         | cb.TMCB_TRANS_DELETED, "test-ev", "p1")

    cb.register_tmcb_func("test-ev", on_event)
    cb.register_tmcb(None, cb.TMCB_REQUEST_IN, on_new)
    with pytest.raises(cb.TmcbError):
        cb.register_tmcb(None, cb.TMCB_RESPONSE_IN, on_new)
    core.cfg.wt_timer = 0.02           # 20 ms of wait state
    n = tmtable.inuse()
    msg = _message(port)
    msg.rcv = ReceiveInfo("127.0.0.1", port, "127.0.0.1", port, "udp", si)
    assert core.newtran(msg) == 1
    cell = msg.tm_cell
    with pytest.raises(cb.TmcbError):
        cb.register_tmcb(cell, cb.TMCB_RESPONSE_IN, "nobody-registered-me")
    assert core.reply_local(cell, msg, 202, "Accepted") == 1
    assert SipMsg(peer.recv(65535)).status == 202
    core.release(msg)
    assert seen == [(cb.TMCB_REQUEST_IN, "MESSAGE", None),
                    (cb.TMCB_LOCAL_RESPONSE_OUT, 202, "p1")]
    deadline = time.monotonic() + 10      # ends as soon as it is deleted
    while tmtable.inuse() > n and time.monotonic() < deadline:
        time.sleep(0.03)
        core.timer_tick()
    assert seen[-1] == (cb.TMCB_TRANS_DELETED, 202, "p1")
    assert tmtable.inuse() == n
