"""cfgutils and mi_script in the real server (4 UDP receivers): mi() from
the script into a variable replied in a header, $shv shared by every
process and set over MI, get_static_lock serialising a read-sleep-write
across processes, rand_event's probability (set over MI) checked on a few
hundred requests with a loose bound."""
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "modules"))

import modkit  # noqa: E402
from server import free_port, mi_call  # noqa: E402

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=4
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "cfgutils.so"
loadmodule "mi_script.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("cfgutils", "shvset", "mode=s:normal")
modparam("cfgutils", "shvset", "limit=i:7")
modparam("cfgutils", "initial_probability", 0)
modparam("cfgutils", "varset", "greet=s:hello")

route {{
    append_to_reply("X-Pid: $pp\r\n");
    if ($rU == "stats") {{
        $avp(n) = "statistics";
        $avp(v) = "__array(core:rcv_requests)";
        mi("get_statistics", $avp(st), $avp(n), $avp(v));
        append_to_reply("X-Rc: $rc\r\nX-Stats: $avp(st)\r\n");
        sl_send_reply(200, "OK");
        exit;
    }}
    if ($rU == "badmi") {{
        mi("no_such_command", $var(err));
        append_to_reply("X-Rc: $rc\r\nX-Err: $var(err)\r\n");
        sl_send_reply(200, "OK");
        exit;
    }}
    if ($rU == "shvset") {{
        mi("shv_set from_script int 42");
        sl_send_reply(200, "OK");
        exit;
    }}
    if ($rU == "shv") {{
        append_to_reply("X-Mode: $shv(mode)\r\nX-Limit: $shv(limit)\r\n");
        append_to_reply("X-Greet: $var(greet)\r\n");
        sl_send_reply(200, "OK");
        exit;
    }}
    if ($rU == "locked") {{
        get_static_lock("counter");
        $var(c) = $shv(counter);
        usleep(20000);
        $shv(counter) = $var(c) + 1;
        release_static_lock("counter");
        sl_send_reply(200, "OK");
        exit;
    }}
    if ($rU == "dyn") {{
        get_dynamic_lock("$fU");
        $var(c) = $shv(dcounter);
        usleep(20000);
        $shv(dcounter) = $var(c) + 1;
        release_dynamic_lock("$fU");
        sl_send_reply(200, "OK");
        exit;
    }}
    if (rand_event()) {{
        sl_send_reply(503, "Shed");
        exit;
    }}
    sl_send_reply(200, "OK");
}}
"""


@pytest.fixture
def rig(server):
    port, mi = free_port(), free_port()
    server.start(SCRIPT.format(port=port, mi=mi))
    yield port, mi


def ask(port, user, callid="c@x", method="OPTIONS"):
    p = modkit.Peer()
    try:
        p.send(modkit.request(method=method, ruri=f"sip:{user}@example.com",
                              via_port=p.port, callid=callid), port)
        return p.recv(10)
    finally:
        p.close()


def test_mi_from_the_script_into_a_variable(rig):
    port, mi = rig
    r = ask(port, "stats")
    assert r.hdr("X-Rc") == "1"
    import json
    st = json.loads(r.hdr("X-Stats"))
    # the request itself was counted before the script ran
    assert st["core:rcv_requests"] >= 1
    r2 = ask(port, "stats", "c2@x")
    assert json.loads(r2.hdr("X-Stats"))["core:rcv_requests"] > \
        st["core:rcv_requests"]


def test_mi_error_is_a_negative_code_and_its_message(rig):
    port, mi = rig
    r = ask(port, "badmi")
    assert r.hdr("X-Rc") == "-32601"
    assert r.hdr("X-Err") == "Method not found"


def test_shv_shared_by_every_process_and_set_over_mi(rig):
    port, mi = rig
    assert mi_call(mi, "shv_get", {"name": "mode"}) == {
        "VAR": {"name": "mode", "type": "string", "value": "normal"}}
    assert mi_call(mi, "shv_set", ["mode", "str", "maintenance"]) == "OK"
    pids = set()
    for i in range(12):
        r = ask(port, "shv", f"shv-{i}@x")
        assert r.hdr("X-Mode") == "maintenance"
        assert r.hdr("X-Limit") == "7"
        assert r.hdr("X-Greet") == "hello"      # varset, in every worker
        pids.add(r.hdr("X-Pid"))
    # set from a SIP worker through mi(): seen by the MI process
    ask(port, "shvset")
    assert mi_call(mi, "shv_get", {"name": "from_script"})["VAR"][
        "value"] == 42
    allv = mi_call(mi, "shv_get")["VARs"]
    assert {"name": "limit", "type": "integer", "value": 7} in allv
    # a bad type is an MI error object
    with pytest.raises(AssertionError, match="bad shv value type"):
        mi_call(mi, "shv_set", ["x", "float", "1.5"])


@pytest.mark.parametrize("user,var", [("locked", "counter"),
                                      ("dyn", "dcounter")])
def test_lock_serialises_read_sleep_write_across_processes(rig, user, var):
    port, mi = rig
    n_threads, per = 6, 5
    pids = []
    errors = []

    def worker(k):
        try:
            for i in range(per):
                r = ask(port, user, f"{user}-{k}-{i}@x")
                pids.append(r.hdr("X-Pid"))
        except Exception as e:          # reported below
            errors.append(e)
    ts = [threading.Thread(target=worker, args=(k,))
          for k in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors
    # several receivers ran the critical section, none lost an update
    assert len(set(pids)) > 1
    assert mi_call(mi, "shv_get", {"name": var})["VAR"]["value"] == \
        n_threads * per


def test_rand_event_follows_the_probability_set_over_mi(rig):
    port, mi = rig
    # initial_probability 0: never
    assert all(ask(port, "x", f"z{i}@x").status == 200 for i in range(20))
    assert mi_call(mi, "rand_set_prop", [30]) == "OK"
    assert mi_call(mi, "rand_get_prob") == {"actual probability": 30}
    shed = 0
    n = 300
    for i in range(n):
        r = ask(port, "x", f"r{i}@x")
        shed += r.status == 503
    # 30 % of 300 is 90, sd ~8: a loose bound
    assert 50 <= shed <= 135, shed
    assert mi_call(mi, "rand_reset_prob") == "OK"
    assert mi_call(mi, "rand_get_prob") == {"actual probability": 0}
    with pytest.raises(AssertionError):
        mi_call(mi, "rand_set_prop", [150])
