"""load:load, load:load-proc-<id> and core:unsupported_methods move under
traffic in the real server (read over mi_datagram)."""
import socket
import time

import pytest

from server import free_port, mi_call, wait_for

pytestmark = pytest.mark.slow


def request(method, port, n):
    return (f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKload{n}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            "To: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: load-{n}@test\r\nCSeq: 1 {method}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def test_load_and_unsupported_methods_move_under_traffic(server):
    port, mi = free_port(), free_port()
    server.start(f"""
udp_workers=1
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
route {{ drop; }}
""")
    stats = mi_call(mi, "get_statistics", [["load:", "core:"]])
    procs = mi_call(mi, "ps")["Processes"]
    rid = next(p["ID"] for p in procs if p["Type"].startswith("SIP receiver"))
    assert stats["load:load"] == 0
    assert stats[f"load:load-proc-{rid}"] == 0
    assert stats["core:unsupported_methods"] == 0
    # the timer process and the MI process do not report a load
    assert [k for k in stats if k.startswith("load:load-proc-")] == \
        [f"load:load-proc-{rid}"]

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        for n in range(5):
            s.sendto(request("FOOBAR", me, n), ("127.0.0.1", port))
            s.sendto(request("OPTIONS", me, n), ("127.0.0.1", port))
        wait_for(lambda: mi_call(mi, "get_statistics",
                                 [["rcv_requests"]])["core:rcv_requests"]
                 >= 10, what="10 requests received")
        assert mi_call(mi, "get_statistics", [["unsupported_methods"]]) == \
            {"core:unsupported_methods": 5}

        # keep the receiver busy for a few windows, reading as we go
        seen = {}
        deadline = time.monotonic() + 8
        n = 0
        while time.monotonic() < deadline:
            for _ in range(200):
                n += 1
                s.sendto(request("OPTIONS", me, n), ("127.0.0.1", port))
            got = mi_call(mi, "get_statistics", [["load:"]])
            if got["load:load"] > 0 and got[f"load:load-proc-{rid}"] > 0:
                seen = got
                break
        assert seen, "the load never moved under traffic"
        assert 0 < seen[f"load:load-proc-{rid}"] <= 100
        assert 0 < seen["load:load"] <= 100     # the mean over receivers
    # the traffic stopped: two windows later the receiver counts idle
    wait_for(lambda: mi_call(mi, "get_statistics",
                             [["load:load"]])["load:load"] == 0,
             timeout=10, what="the load back to 0")
