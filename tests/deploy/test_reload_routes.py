"""MI reload_routes end to end: the new routes run in every SIP receiver
(and the timer process); a script that does not compile changes nothing
and says where it is wrong; a later good one still works."""
import json
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest

from server import free_port

pytestmark = pytest.mark.slow

WORKERS = 4


def script(sip_port, mi_port, gen, body_extra="", top_extra=""):
    return f"""
log_level=3
udp_workers={WORKERS}
# every receiver reads the socket (no standby): each must switch
udp_workers_standby=off
socket=udp:127.0.0.1:{sip_port}
loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi_port}")
{top_extra}
route {{
    {body_extra}
    if (is_method("OPTIONS")) {{
        send_reply(200, "gen{gen} pid $pp");
        exit;
    }}
    drop;
}}

timer_route[tick, 1] {{
    xlog("L_NOTICE", "timer route gen{gen}\\n");
}}
"""


def mi(port, method, params=None, timeout=30):
    req = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        req["params"] = params
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(json.dumps(req).encode(), ("127.0.0.1", port))
        data, _ = s.recvfrom(65535)
    return json.loads(data)


def options(port, n):
    """n OPTIONS at once from n sockets; the reasons of the replies."""
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        lp = s.getsockname()[1]
        cid = uuid.uuid4().hex
        s.sendto((f"OPTIONS sip:x@127.0.0.1:{port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK{cid}\r\n"
                  f"From: <sip:t@127.0.0.1>;tag={i}\r\n"
                  f"To: <sip:x@127.0.0.1>\r\n"
                  f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\n"
                  f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
                 .encode(), ("127.0.0.1", port))
        socks.append(s)
    out = []
    for s in socks:
        try:
            data = s.recv(65535).decode()
            out.append(data.split("\r\n", 1)[0].split(" ", 2)[2])
        except socket.timeout:
            out.append(None)
        finally:
            s.close()
    return out


def receiver_pids(mi_port):
    return {p["PID"] for p in mi(mi_port, "ps")["result"]["Processes"]
            if p["Type"].startswith("SIP receiver")}


def answers_from_every_receiver(sip_port, pids, rounds=40):
    """{pid: set of reasons} once every receiver answered."""
    seen = {}
    for _ in range(rounds):
        for reason in options(sip_port, 40):
            assert reason is not None, "an OPTIONS got no reply"
            m = re.fullmatch(r"(gen\d+) pid (\d+)", reason)
            assert m, reason
            seen.setdefault(int(m.group(2)), set()).add(m.group(1))
        if set(seen) >= pids:
            return seen
    raise AssertionError(f"receivers {pids - set(seen)} never answered "
                         f"({len(seen)} of {len(pids)} did)")


def wait_log(server, text, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.stderr():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never logged:\n{server.stderr()[-3000:]}")


def test_reload_routes_good_broken_good(server):
    sip_port, mi_port = free_port(), free_port()
    server.start(script(sip_port, mi_port, 1))
    cfg = server.workdir / "opensipy.cfg"
    pids = receiver_pids(mi_port)
    assert len(pids) == WORKERS
    seen = answers_from_every_receiver(sip_port, pids)
    assert all(v == {"gen1"} for v in seen.values()), seen
    wait_log(server, "timer route gen1")

    # a good reload: every receiver and the timer process run gen2
    cfg.write_text(script(sip_port, mi_port, 2))
    before = len(server.notifications)
    r = mi(mi_port, "reload_routes")
    assert r.get("result") == "OK", r
    seen = answers_from_every_receiver(sip_port, pids)
    assert all(v == {"gen2"} for v in seen.values()), seen
    wait_log(server, "timer route gen2")
    server._drain_notify(0.5)
    sent = server.notifications[before:]
    assert any(n.startswith("RELOADING=1") for n in sent), sent
    assert any(n.startswith("READY=1") for n in sent), sent

    # broken: a syntax error, then an unknown function: the error names
    # the file and line, and nothing changes anywhere
    good = script(sip_port, mi_port, 3).splitlines()
    line = next(i for i, l in enumerate(good, 1) if "send_reply" in l)
    broken = list(good)
    broken[line - 1] = "        send_reply(200, \"gen3\";"
    cfg.write_text("\n".join(broken) + "\n")
    r = mi(mi_port, "reload_routes")
    assert r["error"]["code"] == 500, r
    assert r["error"]["message"] == "reload failed"
    assert any(e.startswith(f"{cfg}:{line}:") for e in r["error"]["data"]), r
    cfg.write_text(script(sip_port, mi_port, 3,
                          body_extra="no_such_function();"))
    r = mi(mi_port, "reload_routes")
    assert r["error"]["code"] == 500, r
    assert any("no_such_function" in e and e.startswith(f"{cfg}:")
               for e in r["error"]["data"]), r
    seen = answers_from_every_receiver(sip_port, pids)
    assert all(v == {"gen2"} for v in seen.values()), seen

    # a later good reload still works, in every process again
    cfg.write_text(script(sip_port, mi_port, 4))
    r = mi(mi_port, "reload_routes")
    assert r.get("result") == "OK", r
    seen = answers_from_every_receiver(sip_port, pids)
    assert all(v == {"gen4"} for v in seen.values()), seen
    wait_log(server, "timer route gen4")
    # no receiver was restarted on the way
    assert receiver_pids(mi_port) == pids
    assert "crashed" not in server.stderr()


def test_reload_routes_refuses_a_new_timer_route_and_ignores_modparams(
        server):
    sip_port, mi_port = free_port(), free_port()
    server.start(script(sip_port, mi_port, 1))
    cfg = server.workdir / "opensipy.cfg"
    cfg.write_text(script(sip_port, mi_port, 2) +
                   "\ntimer_route[other, 5] {\n    xlog(\"x\\n\");\n}\n")
    r = mi(mi_port, "reload_routes")
    assert r["error"]["code"] == 500, r
    assert any("timer routes cannot be added" in e
               for e in r["error"]["data"]), r
    # a changed modparam is not applied (a warning names its line) but
    # the routes are reloaded
    cfg.write_text(script(sip_port, mi_port, 3, top_extra=
                          'modparam("sl", "enable_stats", 0)'))
    r = mi(mi_port, "reload_routes")
    assert r.get("result") == "OK", r
    assert "reload_routes does not apply this ModParam line" in \
        server.stderr()
    assert set(options(sip_port, 5)) <= {f"gen3 pid {p}"
                                         for p in receiver_pids(mi_port)}


def stateful_script(sip_port, mi_port, gen):
    return f"""
log_level=3
udp_workers=2
udp_workers_standby=off
socket=udp:127.0.0.1:{sip_port}
loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "maxfwd.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi_port}")
route {{
    if (!mf_process_maxfwd_header(10)) {{
        send_reply(483, "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS")) {{
        send_reply(200, "gen{gen} pid $pp");
        exit;
    }}
    if (is_method("REGISTER")) {{
        save("location");
        exit;
    }}
    record_route();
    if (!lookup("location")) {{
        t_reply(404, "Not Found gen{gen}");
        exit;
    }}
    t_on_failure("missed");
    t_relay();
}}

failure_route[missed] {{
    xlog("failed gen{gen}\\n");
}}
"""


def test_reload_routes_with_stateful_modules(server):
    """tm, rr, usrloc and registrar fix their parameters up again in
    every process (the location table made at start-up is reused)."""
    sip_port, mi_port = free_port(), free_port()
    server.start(stateful_script(sip_port, mi_port, 1))
    cfg = server.workdir / "opensipy.cfg"
    pids = receiver_pids(mi_port)
    cfg.write_text(stateful_script(sip_port, mi_port, 2))
    r = mi(mi_port, "reload_routes")
    assert r.get("result") == "OK", r
    seen = answers_from_every_receiver(sip_port, pids)
    assert all(v == {"gen2"} for v in seen.values()), seen
    # a new usrloc table cannot be made after the fork: refused, named
    cfg.write_text(stateful_script(sip_port, mi_port, 3)
                   .replace('save("location")', 'save("other")'))
    r = mi(mi_port, "reload_routes")
    assert r["error"]["code"] == 500, r
    assert any(e.startswith(f"{cfg}:") and "'save'" in e
               for e in r["error"]["data"]), r
    seen = answers_from_every_receiver(sip_port, pids)
    assert all(v == {"gen2"} for v in seen.values()), seen


def test_systemctl_reload_of_the_default_script(server, tmp_path):
    """The unit's ExecReload (opensipyctl mi reload_routes over the
    script's FIFO) on our default script: tm, dialog, acc, auth_db and
    registrar fix their parameters up again; the change shows on the wire;
    a broken edit fails the command and changes nothing."""
    from opensipy.db import admin
    from test_default_scripts import our_default_text
    port = free_port()
    url = f"sqlite://{tmp_path}/opensipy.db"
    admin.create(url)
    text = our_default_text(tmp_path, port, url)
    server.start(text)
    cfg = server.workdir / "opensipy.cfg"
    ctl_cfg = tmp_path / "opensipyctl.cfg"
    ctl_cfg.write_text(f"[default]\ncommunication_type = fifo\n"
                       f"fifo_file = {tmp_path / 'fifo'}\n"
                       f"fifo_reply_dir = {tmp_path}\n")

    def reload():
        return subprocess.run([sys.executable, "-m", "opensipy.ctl", "-f",
                               str(ctl_cfg), "mi", "reload_routes"],
                              capture_output=True, text=True, timeout=60)

    def foreign_reasons(n=12):
        out = []
        for i in range(n):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(10)
                me = s.getsockname()[1]
                s.sendto((f"INVITE sip:bob@example.com SIP/2.0\r\n"
                          f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKr"
                          f"{uuid.uuid4().hex}\r\nMax-Forwards: 70\r\n"
                          f"From: <sip:a@example.org>;tag=1\r\n"
                          f"To: <sip:bob@example.com>\r\n"
                          f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\n"
                          f"Content-Length: 0\r\n\r\n").encode(),
                         ("127.0.0.1", port))
                data = s.recv(65535).decode()
                out.append(data.split("\r\n", 1)[0])
        return set(out)

    assert foreign_reasons() == {"SIP/2.0 403 Relay Forbidden"}
    assert text.count('send_reply(403,"Relay Forbidden");') == 1
    cfg.write_text(text.replace('send_reply(403,"Relay Forbidden");',
                                'send_reply(403,"Relay Forbidden here");'))
    r = reload()
    assert r.returncode == 0 and r.stdout.strip() == '"OK"', r.stderr
    assert foreign_reasons() == {"SIP/2.0 403 Relay Forbidden here"}
    cfg.write_text(text.replace('send_reply(403,"Relay Forbidden");',
                                'send_reply(403,"Relay Forbidden";'))
    r = reload()
    assert r.returncode == 1 and "reload failed" in r.stderr, r.stderr
    assert f"{cfg}:" in r.stderr
    assert foreign_reasons() == {"SIP/2.0 403 Relay Forbidden here"}
