"""MI transports over a server's life: files they create and remove, start-up
errors, MI kill, a Unix datagram socket, and a flood of malformed requests
that must leave MI and SIP serving."""
import json
import os
import socket
import stat

import pytest

from mi_util import TRANSPORTS, Endpoints, run_ctl
from server import wait_for

pytestmark = pytest.mark.slow


def minimal_script(ep, mods):
    return f"""
log_level=3
udp_workers=1
socket=udp:127.0.0.1:{ep.sip_port}
loadmodule "proto_udp.so"
{mods}
route {{ drop; }}
"""


def test_fifo_created_private_with_its_directory_and_removed_at_stop(
        server, tmp_path):
    ep = Endpoints(tmp_path)
    fifo = tmp_path / "deep" / "er" / "opensipy_fifo"
    server.start(minimal_script(ep, f"""
loadmodule "mi_fifo.so"
modparam("mi_fifo", "fifo_name", "{fifo}")
modparam("mi_fifo", "reply_dir", "{ep.reply_dir}")"""))
    st = fifo.stat()
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    ep.fifo = fifo
    assert ep.result("fifo", "version")["Server"].startswith("opensipy")
    assert server.terminate() == 0
    assert not fifo.exists()


def test_fifo_mode_and_a_stale_fifo_is_replaced(server, tmp_path):
    ep = Endpoints(tmp_path)
    ep.fifo.parent.mkdir()
    os.mkfifo(ep.fifo, 0o600)              # left over by a crashed run
    server.start(ep.script(extra='modparam("mi_fifo", "fifo_mode", 0660)'))
    assert stat.S_IMODE(ep.fifo.stat().st_mode) == 0o660
    assert f"replacing the stale FIFO {ep.fifo}" in server.stderr()
    assert ep.result("fifo", "pwd") == {"WD": str(tmp_path)}


def test_fifo_removed_while_running_is_created_again(server, tmp_path):
    ep = Endpoints(tmp_path)
    server.start(ep.script())
    ep.fifo.unlink()
    wait_for(ep.fifo.exists, timeout=15, what="FIFO recreated")
    wait_for(lambda: _answers(ep), timeout=10, what="MI over the new FIFO")


def _answers(ep):
    try:
        return ep.raw_fifo(b'{"jsonrpc":"2.0","method":"uptime","id":1}',
                           timeout=1) is not None
    except OSError:
        return False


def test_bad_fifo_path_stops_the_start_with_a_clear_error(server, tmp_path):
    ep = Endpoints(tmp_path)
    ep.fifo.parent.mkdir()
    ep.fifo.write_text("a regular file\n")
    with pytest.raises(RuntimeError) as ei:
        server.start(ep.script(), timeout=20)
    assert "is not a FIFO" in str(ei.value)
    assert ep.fifo.read_text() == "a regular file\n"


def test_busy_http_port_stops_the_start(server, tmp_path):
    ep = Endpoints(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ep.http_port))
        s.listen(1)
        with pytest.raises(RuntimeError) as ei:
            server.start(ep.script(), timeout=20)
    assert f"cannot listen on 127.0.0.1:{ep.http_port}" in str(ei.value)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_mi_kill_stops_the_server(server, tmp_path, kind):
    ep = Endpoints(tmp_path)
    server.start(ep.script())
    assert ep.result(kind, "kill") == "OK"
    assert server.proc.wait(20) == 0
    assert "opensipy stopped" in server.stderr()
    assert not ep.fifo.exists()


def test_datagram_over_a_unix_socket(server, tmp_path):
    from opensips.mi import OpenSIPSMI
    ep = Endpoints(tmp_path)
    path = tmp_path / "mi.sock"
    server.start(minimal_script(ep, f"""
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "{path}")"""))
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    m = OpenSIPSMI("datagram", datagram_unix_socket=str(path),
                   datagram_timeout="5")
    assert m.execute("which", {"command": "ps"}) == [[]]
    procs = m.execute("ps")["Processes"]
    assert "MI Datagram" in [p["Type"] for p in procs]
    cfg = tmp_path / "ctl-unix.cfg"
    cfg.write_text(f"[default]\ncommunication_type = datagram\n"
                   f"datagram_unix_socket = {path}\n")
    r = run_ctl(["-f", str(cfg), "-o", "json", "mi", "which", "ps"])
    assert (r.returncode, r.stdout) == (0, "[[]]\n"), r.stderr
    assert server.terminate() == 0
    assert not path.exists()


def test_flood_of_malformed_requests_leaves_mi_and_sip_serving(server,
                                                               tmp_path):
    ep = Endpoints(tmp_path)
    server.start(ep.script())
    before = {p["PID"] for p in ep.result("fifo", "ps")["Processes"]}
    rcv0 = ep.result("fifo", "get_statistics", [["core:rcv_requests"]])[
        "core:rcv_requests"]
    junk = [b"", b"{", b"}}}}", b"[" * 5000, b"\xff\xfe\x00garbage",
            b'{"jsonrpc":"2.0","method":', b"null", b'"str"',
            b'{"jsonrpc":"2.0","method":"ps","params":"x","id":1}',
            b'{"jsonrpc":"2.0","method":"get_statistics","params":[[1,2]],'
            b'"id":1}', json.dumps({"a": "b" * 20000}).encode()]
    rounds = 30
    # FIFO: junk lines, frames with bad or absent reply FIFOs, bad JSON
    with open(ep.fifo, "wb", buffering=0) as f:
        for i in range(rounds):
            for j in junk:
                f.write(j + b"\n")
                f.write(b":no_such_reply_fifo_" + str(i).encode() + b":"
                        + (j or b"{}") + b"\n")
                f.write(b":../../etc/passwd:{}\n")
    # datagram: every kind of junk, nobody waiting for the replies
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(rounds):
            for j in junk:
                s.sendto(j[:60000], ("127.0.0.1", ep.dgram_port))
    # http: broken requests on raw connections
    bad_http = [b"GARBAGE\r\n\r\n", b"POST /mi HTTP/1.1\r\nContent-Length: "
                b"-5\r\n\r\n", b"POST /mi HTTP/1.1\r\nContent-Length: "
                b"999999999\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
                b"POST /mi HTTP/1.1\r\nContent-Length: 5\r\n\r\n{{{{{"]
    for _ in range(rounds // 3):
        for b in bad_http:
            with socket.create_connection(("127.0.0.1", ep.http_port),
                                          timeout=5) as c:
                c.sendall(b)
                c.shutdown(socket.SHUT_WR)
                try:
                    c.recv(4096)
                except OSError:
                    pass
        for j in junk:
            body = ep.raw_http(j)
            assert json.loads(body)["error"]["code"] in (-32700, -32600,
                                                        -32602)
    # every transport still answers, in order, correctly
    for kind in TRANSPORTS:
        r = ep.call(kind, "uptime", rid=f"after-{kind}")
        assert r["id"] == f"after-{kind}" and "Up time" in r["result"]
    # no process died, SIP receivers still count requests
    assert {p["PID"] for p in ep.result("fifo", "ps")["Processes"]} == before
    ep.send_sip(5)
    wait_for(lambda: ep.result("datagram", "get_statistics",
                               [["core:rcv_requests"]])["core:rcv_requests"]
             >= rcv0 + 5, what="SIP requests counted")
    assert server.proc.poll() is None
