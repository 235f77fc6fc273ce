"""The event interface: MI subscribe_event through event_datagram, events
raised from the script, event_route, module-declared and core events."""
from __future__ import annotations

import json
import os
import socket
import textwrap
import time

import pytest

from ops_util import Ports, http_mi, send_sip_options
from server import mi_call, run_opensipy, wait_for

ROUTE = """
    if ($rU == "raise") {
        $avp(attr) = "callid";
        $avp(val) = $ci;
        $avp(attr) = "user";
        $avp(val) = $fU;
        raise_event("E_MY_EVENT", $avp(attr), $avp(val));
    }
    if ($rU == "plain") {
        $avp(v) = "one";
        $avp(v) = 2;
        raise_event("E_PLAIN");
        raise_event("E_PLAIN", $avp(v));
    }
    sl_send_reply(200, "OK");
"""


def script(p, extra="", route=ROUTE, head="", loads=""):
    return p.script(head=head, route=route,
                    loads='loadmodule "event_datagram.so"\n' + loads,
                    extra=extra)


def listener(kind="udp", path=None):
    if kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        return s, f"udp:127.0.0.1:{s.getsockname()[1]}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    return s, f"unix:{path}"


def recv_json(s, timeout=5.0):
    s.settimeout(timeout)
    return json.loads(s.recv(65535))


def sip_to(p, user, tag="ev"):
    """One request for sip:<user>@ (the route looks at $rU)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        cid = f"{tag}-{time.time_ns()}"
        msg = (f"OPTIONS sip:{user}@127.0.0.1:{p.sip} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{cid}\r\n"
               f"From: <sip:alice@127.0.0.1>;tag=1\r\n"
               f"To: <sip:{user}@127.0.0.1>\r\n"
               f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
               f"Content-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), ("127.0.0.1", p.sip))
        s.settimeout(5)
        assert s.recv(65535).startswith(b"SIP/2.0 200")
        return cid


@pytest.fixture
def srv(server):
    p = Ports()
    server.start(script(p))
    server.ports = p
    return server


def test_subscribe_over_mi_and_receive_an_event_raised_by_the_script(srv):
    p = srv.ports
    s, sock = listener()
    with s:
        assert mi_call(p.mi, "subscribe_event", ["E_MY_EVENT", sock]) == "OK"
        cid = sip_to(p, "raise")
        note = recv_json(s)
        assert note == {"jsonrpc": "2.0", "method": "E_MY_EVENT",
                        "params": {"callid": cid, "user": "alice"}}
        # unnamed values: an array, newest first as OpenSIPS's AVPs
        assert mi_call(p.mi, "subscribe_event", ["E_PLAIN", sock, 0]) == "OK"
        sip_to(p, "plain")
        assert recv_json(s) == {"jsonrpc": "2.0", "method": "E_PLAIN",
                                "params": []}
        assert recv_json(s)["params"] == [2, "one"]


def test_unix_socket_subscriber(srv, tmp_path):
    p = srv.ports
    s, sock = listener("unix", str(tmp_path / "ev.sock"))
    with s:
        assert mi_call(p.mi, "subscribe_event", ["E_MY_EVENT", sock]) == "OK"
        sip_to(p, "raise")
        assert recv_json(s)["method"] == "E_MY_EVENT"
    # a bare path is a Unix socket too (['unix:'] path)
    assert mi_call(p.mi, "subscribers_list", ["E_MY_EVENT"]) == {
        "Event": {"name": "E_MY_EVENT", "id": 2, "Subscribers": [
            {"socket": sock, "expire": 3600}]}}


def test_mi_lists_and_errors(srv):
    p = srv.ports
    names = [e["name"] for e in mi_call(p.mi, "events_list")["Events"]]
    assert names[:2] == ["E_CORE_THRESHOLD", "E_CORE_SHM_THRESHOLD"]
    assert {"E_MY_EVENT", "E_PLAIN"} <= set(names)
    assert mi_call(p.mi, "subscribers_list") == {"Events": []}
    s, sock = listener()
    with s:
        mi_call(p.mi, "subscribe_event", ["E_MY_EVENT", sock, 0])
        mi_call(p.mi, "subscribe_event", {"event": "E_PLAIN", "socket": sock,
                                          "expire": 120})
        got = mi_call(p.mi, "subscribers_list")["Events"]
        assert {(e["name"], e["Subscribers"][0]["expire"]) for e in got} == \
            {("E_MY_EVENT", "never"), ("E_PLAIN", 120)}
        assert mi_call(p.mi, "subscribers_list", ["E_PLAIN", sock]) == {
            "Event": {"name": "E_PLAIN", "id": names.index("E_PLAIN"),
                      "Subscriber": {"socket": sock, "expire": 120}}}
        # resubscribing refreshes, it does not add
        mi_call(p.mi, "subscribe_event", ["E_PLAIN", sock, 60])
        assert len(mi_call(p.mi, "subscribers_list",
                           ["E_PLAIN"])["Event"]["Subscribers"]) == 1
        # MI raise_event: named params as a JSON string, or an array
        assert mi_call(p.mi, "raise_event",
                       ["E_PLAIN", '{"a": 1, "b": "x"}']) == "OK"
        assert recv_json(s)["params"] == {"a": 1, "b": "x"}
        assert mi_call(p.mi, "raise_event",
                       {"event": "E_PLAIN", "params": ["p", "q"]}) == "OK"
        assert recv_json(s)["params"] == ["p", "q"]

    def err(method, params):
        with pytest.raises(AssertionError) as e:
            mi_call(p.mi, method, params)
        return e.value.args[0]
    assert err("subscribe_event", ["E_NOPE", sock]) == {
        "code": 400, "message": "Bad parameter value"}
    assert err("subscribe_event", ["E_PLAIN", "tcp:1.2.3.4:5"])["code"] == 400
    assert err("subscribe_event", ["E_PLAIN", "udp:127.0.0.1:notaport"]) \
        ["code"] == 400
    assert err("subscribe_event", ["E_PLAIN", sock, -1]) == {
        "code": -32602, "message": "Invalid params",
        "data": "Negative expire value"}
    assert err("raise_event", ["E_NOPE"]) == {
        "code": 404, "message": "Event not registered"}
    assert err("raise_event", ["E_CORE_THRESHOLD"]) == {
        "code": 480, "message": "Temporarily Unavailable"}
    assert err("raise_event", ["E_PLAIN", "not json"]) == {
        "code": 400, "message": "Bad Params"}
    assert err("subscribers_list", ["E_NOPE"]) == {
        "code": 404, "message": "Event not published"}
    assert err("subscribers_list", ["E_PLAIN", "udp:127.0.0.1:1"]) == {
        "code": 404, "message": "Subscriber does not exist"}


def test_subscription_expires(srv):
    p = srv.ports
    s, sock = listener()
    with s:
        mi_call(p.mi, "subscribe_event", ["E_MY_EVENT", sock, 1])
        time.sleep(2.2)
        assert mi_call(p.mi, "subscribers_list") == {"Events": []}
        sip_to(p, "raise")
        with pytest.raises(socket.timeout):
            recv_json(s, timeout=1)


def test_subscription_made_over_http_reaches_every_receiver(srv):
    """The table is shared: a subscription made in the HTTPD process is
    seen by whichever receiver handles the request."""
    p = srv.ports
    s, sock = listener()
    with s:
        assert http_mi(p.http, "subscribe_event",
                       ["E_MY_EVENT", sock]) == "OK"
        cids = {sip_to(p, "raise", f"r{i}") for i in range(6)}
        got = {recv_json(s)["params"]["callid"] for _ in range(6)}
        assert got == cids


def test_event_route_gets_the_parameters(server):
    p = Ports()
    server.start(script(p, route=ROUTE + "", extra="""
event_route[E_MY_EVENT] {
    xlog("L_NOTICE", "event_route: $param(1) / $param(2)\\n");
    xlog("L_NOTICE", "by name: $param(user) $param(callid) [$param(nope)]\\n");
}
"""))
    cid = sip_to(p, "raise")
    wait_for(lambda: f"event_route: alice / {cid}" in server.stderr(),
             what="the event_route's line")
    assert f"by name: alice {cid} [<null>]" in server.stderr()
    # a route counts as a consumer: MI raise_event is accepted
    assert mi_call(p.mi, "raise_event", ["E_MY_EVENT", ["x", "y"]]) == "OK"
    wait_for(lambda: "event_route: x / y" in server.stderr())


def test_event_route_of_an_unknown_event_stops_the_start(tmp_path):
    p = Ports()
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(script(p, extra="event_route[E_NOBODY] { exit; }\n"))
    r = run_opensipy(["-F", "-E", "-f", str(cfg)], timeout=60)
    assert r.returncode != 0
    assert "event_route[E_NOBODY]: event E_NOBODY is not published" in \
        r.stderr
    assert "bad.cfg:" in r.stderr


def test_module_declares_its_event_in_exports(server, tmp_path):
    d = tmp_path / "mods" / "evmod"
    d.mkdir(parents=True)
    (d / "__init__.py").write_text(textwrap.dedent('''
        from opensipy import evi
        from opensipy.sr_module import (CmdExport, EventExport,
                                        ModuleExports, REQUEST_ROUTE)

        def w_fire(msg):
            evi.evi_raise_event("E_EVMOD_FIRED", {"from": "evmod",
                                                  "ruri": msg.ruri})
            return 1

        exports = ModuleExports(
            name="evmod",
            cmds=[CmdExport("evmod_fire", w_fire, [], REQUEST_ROUTE)],
            events=[EventExport("E_EVMOD_FIRED")],
        )
    '''))
    p = Ports()
    server.start(script(p, head=f'mpath="{tmp_path}/mods/"\n',
                        loads='loadmodule "evmod.so"\n',
                        route='    evmod_fire();\n'
                              '    sl_send_reply(200, "OK");\n'))
    assert "E_EVMOD_FIRED" in [
        e["name"] for e in mi_call(p.mi, "events_list")["Events"]]
    s, sock = listener()
    with s:
        mi_call(p.mi, "subscribe_event", ["E_EVMOD_FIRED", sock])
        sip_to(p, "x")
        note = recv_json(s)
    assert note["method"] == "E_EVMOD_FIRED"
    assert note["params"] == {"from": "evmod",
                              "ruri": f"sip:x@127.0.0.1:{p.sip}"}


def test_core_threshold_event_for_a_slow_message(server):
    p = Ports()
    server.start(script(p, head="exec_msg_threshold=1\n"))
    s, sock = listener()
    with s:
        mi_call(p.mi, "subscribe_event", ["E_CORE_THRESHOLD", sock])
        cid = sip_to(p, "slow")
        note = recv_json(s)
    assert note["method"] == "E_CORE_THRESHOLD"
    prm = note["params"]
    assert prm["source"] == "msg processing" and prm["time"] >= 1
    assert cid in prm["extra"] and "OPTIONS sip:slow@" in prm["extra"]
    assert "threshold exceeded : msg processing took too long" in \
        server.stderr()


def test_no_threshold_event_when_disabled(srv):
    p = srv.ports
    s, sock = listener()
    with s:
        mi_call(p.mi, "subscribe_event", ["E_CORE_THRESHOLD", sock])
        sip_to(p, "fast")
        with pytest.raises(socket.timeout):
            recv_json(s, timeout=1)


def test_core_shm_threshold_event(server):
    p = Ports()
    server.start(script(p, head="event_shm_threshold=1\n", extra="""
event_route[E_CORE_SHM_THRESHOLD] {
    xlog("L_NOTICE", "shm usage $param(1)% over $param(2)%\\n");
}
"""), args=["-m", "2"])      # 2 MB: the server's own use is above 1%
    line = wait_for(lambda: next((x for x in server.stderr().splitlines()
                                  if "shm usage " in x), None),
                    what="E_CORE_SHM_THRESHOLD in its event_route")
    usage = int(line.split("shm usage ")[1].split("%")[0])
    st = mi_call(p.mi, "get_statistics", [["shmem:"]])
    assert usage >= 1
    assert abs(usage - st["shmem:real_used_size"] * 100
               // st["shmem:total_size"]) <= 1
    assert "over 1%" in line


@pytest.mark.parametrize("head, why", [
    ("exec_msg_threshold=-5\n", "must not be negative"),
    ("event_shm_threshold=101\n", "must be a percentage"),
])
def test_bad_threshold_parameters(tmp_path, head, why):
    p = Ports()
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(script(p, head=head))
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode != 0 and why in r.stderr
