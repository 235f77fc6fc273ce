"""async()/launch() in the real server with one UDP receiver: while one
request's route waits in async(usleep()), the receiver answers the others;
the waiting request resumes with its transaction (a retransmission is
absorbed, the reply is sent statefully) and its $avp's."""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "modules"))

import modkit  # noqa: E402
from server import free_port, mi_call, wait_for  # noqa: E402

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=1
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "cfgutils.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")

route {{
    if ($rU == "slow") {{
        $avp(kept) = "before-" + $rm;
        async(usleep(500000), resume_slow);
        append_to_reply("X-Never: reached\r\n");
        exit;
    }}
    if ($rU == "bg") {{
        launch(usleep(300000), report_bg);
        append_to_reply("X-Launched: yes\r\n");
        sl_send_reply(200, "Launched");
        exit;
    }}
    if ($rU == "sleepy") {{
        async(sleep(3), resume_slow, 1);
        exit;
    }}
    if ($rU == "nap") {{
        async(sleep(1), resume_slow);
        exit;
    }}
    append_to_reply("X-Fast: $rU\r\n");
    sl_send_reply(200, "Fast");
}}

route[resume_slow] {{
    $shv(resumes) = $shv(resumes) + 1;
    append_to_reply("X-Resumed-Rc: $rc\r\n");
    append_to_reply("X-Kept: $avp(kept)\r\n");
    t_reply(200, "Slow Done");
}}

route[report_bg] {{
    $shv(bg_done) = $shv(bg_done) + 1;
}}
"""


@pytest.fixture
def rig(server):
    port, mi = free_port(), free_port()
    server.start(SCRIPT.format(port=port, mi=mi))
    phones = [modkit.Peer() for _ in range(3)]
    yield port, mi, phones
    for p in phones:
        p.close()


def _send(phone, port, user, callid, method="INVITE", branch=None):
    data = modkit.request(method=method, ruri=f"sip:{user}@example.com",
                          via_port=phone.port, callid=callid,
                          branch=branch)
    phone.send(data, port)
    return data


def _final(phone, timeout=5.0):
    while True:
        r = phone.recv(timeout)
        if r.status >= 200:
            return r, time.monotonic()


def test_other_requests_pass_while_one_route_sleeps(rig):
    port, mi, (phone, _, _) = rig
    # one socket for every request: its receive queue keeps the replies in
    # the order the server sent them
    _send(phone, port, "slow", "slow-1@x")
    time.sleep(0.05)          # the slow request is suspended by now
    for i in range(5):
        _send(phone, port, "fast", f"fast-{i}@x", method="OPTIONS")
    finals = []
    while len(finals) < 6:
        r = phone.recv(5)
        if r.status >= 200:
            finals.append(r)
    # every fast answer was sent before the slow one: the single receiver
    # was not held by the sleeping route
    assert [r.reason for r in finals] == ["Fast"] * 5 + ["Slow Done"]
    slow_reply = finals[-1]
    assert slow_reply.callid == "slow-1@x"
    assert slow_reply.hdr("X-Resumed-Rc") == "1"
    assert slow_reply.hdr("X-Kept") == "before-INVITE"
    assert slow_reply.hdr("X-Never") is None
    # the reply was sent by tm (statefully): the transaction counts it
    st = mi_call(mi, "get_statistics", [["tm:"]])
    assert st["tm:UAS_transactions"] >= 1


def test_retransmission_during_the_wait_is_absorbed(rig):
    port, mi, (slow, _, _) = rig
    data = _send(slow, port, "slow", "slow-rtx@x", branch="z9hG4bKrtx1")
    time.sleep(0.1)
    slow.send(data, port)     # the same INVITE again, mid-wait
    r, _ = _final(slow)
    assert r.reason == "Slow Done"
    # the retransmission ran the script up to async(), whose implicit
    # t_newtran matched the transaction the first copy created: it was
    # absorbed there, so only one operation was started and resumed
    time.sleep(0.7)
    assert _shv(mi, "resumes") == 1


def _shv(mi, name):
    try:
        return mi_call(mi, "shv_get", {"name": name})["VAR"]["value"]
    except AssertionError:          # 404: never set
        return None


def test_launch_goes_on_at_once_and_reports_later(rig):
    port, mi, (phone, _, _) = rig
    t0 = time.monotonic()
    _send(phone, port, "bg", "bg-1@x", method="OPTIONS")
    r, t1 = _final(phone)
    assert (r.status, r.hdr("X-Launched")) == (200, "yes")
    # the launched sleep is still running: nothing reported yet
    assert _shv(mi, "bg_done") is None
    # the report route ran later, in the background
    got = wait_for(lambda: _shv(mi, "bg_done"), timeout=5,
                   what="report route")
    assert got == 1
    assert t1 - t0 < 5


def test_async_timeout_resumes_with_minus_one(rig):
    port, mi, (phone, _, _) = rig
    t0 = time.monotonic()
    _send(phone, port, "sleepy", "sleepy-1@x")
    r, t1 = _final(phone, timeout=5)
    # sleep(3) under a 1 s timeout: resumed by the timeout, $rc -1
    assert r.reason == "Slow Done"
    assert r.hdr("X-Resumed-Rc") == "-1"
    assert t1 - t0 < 2.9


def test_async_sleep_in_seconds(rig):
    port, mi, (phone, _, _) = rig
    _send(phone, port, "nap", "nap-1@x")
    r, _ = _final(phone, timeout=5)
    assert (r.reason, r.hdr("X-Resumed-Rc")) == ("Slow Done", "1")


def test_many_suspended_requests_all_resume_and_release(rig):
    """60 INVITEs suspended at once on the only receiver: each resumes
    with its own message, and every transaction is released afterwards
    (the post-script callbacks ran after the resume routes)."""
    port, mi, (phone, _, _) = rig
    n = 60
    for i in range(n):
        _send(phone, port, "slow", f"many-{i}@x")
    seen = {}
    while len(seen) < n:
        r = phone.recv(10)
        if r.status >= 200:
            seen[r.callid] = r
    assert set(seen) == {f"many-{i}@x" for i in range(n)}
    assert all(r.reason == "Slow Done" and r.hdr("X-Kept") == "before-INVITE"
               for r in seen.values())
    assert _shv(mi, "resumes") == n
    # no transaction is left held: they all go away after wt_timer
    wait_for(lambda: mi_call(mi, "get_statistics",
                             [["tm:inuse_transactions"]])[
                 "tm:inuse_transactions"] == 0, timeout=15,
             what="transactions released")
