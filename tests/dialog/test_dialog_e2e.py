"""dialog end to end: the real opensipy (several receivers, so a reply or
an in-dialog request often reaches another process than the one that made
the dialog) between real SIPp callers and callees; MI (mi_datagram) and
the statistics show what the module keeps."""
import shutil
import socket
import subprocess
import time

import pytest

from opensipy.parser import SipMsg

from server import REPO, free_port, mi_call, popen, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

SCEN = REPO / "tests" / "modules" / "sipp" / "dialog"


def sipp(scenario, args, remote=None):
    cmd = ["sipp"]
    if remote is not None:
        cmd.append(f"127.0.0.1:{remote}")
    cmd += ["-sf", str(SCEN / scenario), "-i", "127.0.0.1", "-mp",
            str(free_port()), "-nostdin", "-timeout", "40s",
            "-timeout_error", *args]
    return popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def uas(scenario, port, calls=1, extra=()):
    return sipp(scenario, ["-p", str(port), "-m", str(calls), *extra])


def uac(scenario, proxy, calls=1, hold_ms=0, extra=()):
    return sipp(scenario, ["-p", str(free_port()), "-m", str(calls),
                           "-d", str(hold_ms), "-l", str(max(calls, 1)),
                           *extra], remote=proxy)


def finish(*procs, timeout=60):
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            text = out.decode(errors="replace")
            assert p.returncode == 0, text[:1500] + "\n...\n" + text[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


class Proxy:
    def __init__(self, server, routes, params="", workers=3):
        self.port = free_port()
        self.mi = free_port()
        self.server = server
        self.script = f"""
log_level=2
udp_workers={workers}
# every receiver on the socket: in-dialog requests reach others
udp_workers_standby=off
socket=udp:127.0.0.1:{self.port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "signaling.so"
loadmodule "dialog.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{self.mi}")
modparam("tm", "wt_timer", 1)
{params}
{routes}
"""
        server.start(self.script)

    def restart(self):
        assert self.server.terminate() == 0
        self.server.start(self.script)

    def mi_call(self, cmd, params=None):
        return mi_call(self.mi, cmd, params)

    def stats(self, *names):
        return mi_call(self.mi, "get_statistics", {"statistics": list(names)})

    def stat(self, name):
        return self.stats(name)[name]

    def dialogs(self):
        return self.mi_call("dlg_list")["Dialogs"]

    def state(self):
        """The state of the first dialog listed (None: none)."""
        ds = self.dialogs()
        return ds[0]["state"] if ds else None


# the usual checks of a proxy with dialogs: a sequential request must name
# a live dialog, else 481
ROUTE = """
route {{
    if (!mf_process_maxfwd_header(10)) {{
        sl_send_reply(483, "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        if (!loose_route()) {{
            send_reply(404, "Not here");
            exit;
        }}
        if (!validate_dialog()) {{
            xlog("L_NOTICE", "no dialog for $rm $ci: $DLG_status $rc\\n");
            send_reply(481, "Call/Transaction Does Not Exist");
            exit;
        }}
        {within}
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans())
            t_relay();
        exit;
    }}
    {initial}
    record_route();
    {target}
    t_relay();
}}
"""


def route(callee, initial="create_dialog();", within="", extra="",
          target=None):
    if target is None:
        target = f'$du = "sip:127.0.0.1:{callee}";'
    return ROUTE.format(callee=callee, initial=initial, within=within,
                        target=target) + extra


def test_a_call_listed_over_mi_and_ended_by_bye(server):
    callee = free_port()
    p = Proxy(server, route(callee))
    b = uas("uas_call.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=2500)
    try:
        wait_for(lambda: p.state() == 4, 10,
                 what="an established dialog")
        d = p.dialogs()[0]
        assert d["from_uri"] == "sip:alice@example.com"
        assert d["to_uri"] == "sip:callee@example.com"
        assert d["caller_contact"].startswith("sip:alice@127.0.0.1:")
        assert len(d["CALLEES"]) == 1
        assert d["CALLEES"][0]["callee_contact"].startswith(
            "sip:callee@127.0.0.1:")
        assert d["timeout"] - d["timestart"] == 43200
        assert p.stat("dialog:active_dialogs") == 1
        assert p.stat("dialog:processed_dialogs") == 1
        # looked up by its Call-ID
        one = p.mi_call("dlg_list", {"callid": d["callid"]})["Dialog"]
        assert one["ID"] == d["ID"]
        assert int(one["db_id"]) >> 32 == int(d["ID"].split(".")[0][::-1],
                                               16)
        with pytest.raises(AssertionError, match="404"):
            p.mi_call("dlg_list", {"callid": "nope"})
    finally:
        finish(a, b)
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog gone")
    st = p.stats("dialog:")
    assert st["dialog:active_dialogs"] == 0
    assert st["dialog:early_dialogs"] == 0
    assert st["dialog:processed_dialogs"] == 1
    assert st["dialog:failed_dialogs"] == 0
    assert st["dialog:expired_dialogs"] == 0


def test_a_profile_limits_concurrent_calls(server):
    callee = free_port()
    p = Proxy(server, route(callee, initial="""
    if (is_method("INVITE")) {
        create_dialog();
        get_profile_size("calls", $var(n));
        if ($var(n) >= 2) {
            send_reply(486, "Busy Here");
            exit;
        }
        set_dlg_profile("calls");
        set_dlg_profile("caller", $fU);
    }"""), params='modparam("dialog", "profiles_no_value", "calls")\n'
                  'modparam("dialog", "profiles_with_value", "caller")')
    b = uas("uas_call.xml", callee, calls=2)
    a = uac("uac_call.xml", p.port, calls=2, hold_ms=4000)
    try:
        wait_for(lambda: p.mi_call("profile_get_size", {"profile": "calls"})
                 ["profile"]["count"] == 2, 10, what="2 calls in the profile")
        assert p.mi_call("profile_get_size", ["caller", "alice"]) == \
            {"profile": {"name": "caller", "value": "alice", "count": 2}}
        assert len(p.mi_call("profile_list_dlgs", ["calls"])["Dialogs"]) == 2
        # a third call is refused while both are up
        c = uac("uac_busy.xml", p.port)
        finish(c)
        # its dialog, never given a transaction, is gone with the request
        assert len(p.dialogs()) == 2
    finally:
        finish(a, b)
    wait_for(lambda: p.mi_call("profile_get_size", {"profile": "calls"})
             ["profile"]["count"] == 0, 5, what="the profile empty")
    assert p.mi_call("profile_get_size", ["caller", "alice"])["profile"][
        "count"] == 0
    assert p.stat("dialog:processed_dialogs") == 2


def test_dlg_val_kept_across_requests(server):
    callee = free_port()
    p = Proxy(server, route(callee, initial="""
    create_dialog();
    $dlg_val(caller) = $fU;
    store_dlg_value("leg", "A-$ci");
    dlg_on_hangup("hangup");""", within="""
    if (is_method("BYE")) {
        fetch_dlg_value("leg", $var(leg));
        if ($dlg_val(caller) != "alice" || $var(leg) != ("A-" + $ci)) {
            send_reply(403, "Lost Values");
            exit;
        }
        xlog("L_NOTICE", "BYE of $dlg_val(caller) in $DLG_dir, state $DLG_status\\n");
    }""", extra="""
route[hangup] {
    xlog("L_NOTICE", "hangup of $dlg_val(caller): $DLG_end_reason\\n");
}
"""))
    b = uas("uas_call.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=2000)
    try:
        # the dialog is listed from create_dialog() on; its values come
        # with the next statements of the route
        wait_for(lambda: len((p.mi_call("dlg_list_ctx")["Dialogs"] or [{}])
                             [0].get("context", {}).get("values", [])) == 2,
                 10, what="a dialog with its two values")
        d = p.mi_call("dlg_list_ctx")["Dialogs"][0]
        assert d["context"]["values"] == [{"caller": "alice"},
                                          {"leg": "A-" + d["callid"]}]
    finally:
        finish(a, b)
    wait_for(lambda: "hangup of alice: Downstream BYE" in server.stderr(), 5,
             what="the hangup route")
    assert "BYE of alice in downstream, state 5" in server.stderr()


def test_a_dialog_timing_out_sends_bye_to_both_ends(server):
    callee = free_port()
    p = Proxy(server, route(callee, initial="""
    create_dialog("B");
    $DLG_timeout = 2;
    dlg_on_timeout("expired");""", extra="""
route[expired] {
    xlog("L_NOTICE", "expired $DLG_did after $DLG_lifetime s: $DLG_end_reason\\n");
}
"""))
    b = uas("uas_call.xml", callee)
    a = uac("uac_wait_bye.xml", p.port)
    t0 = time.monotonic()
    finish(a, b)          # both received the proxy's BYE and answered it
    assert time.monotonic() - t0 >= 1.5
    st = p.stats("dialog:")
    assert st["dialog:expired_dialogs"] == 1
    assert st["dialog:active_dialogs"] == 0
    assert p.dialogs() == []
    wait_for(lambda: "Lifetime Timeout" in server.stderr(), 5,
             what="the timeout route")


def test_options_pinging_ends_a_call_whose_callee_is_gone(server):
    callee = free_port()
    p = Proxy(server, route(callee, initial='create_dialog("Pp");'),
              params='modparam("dialog", "options_ping_interval", 1)\n'
                     'modparam("tm", "fr_timeout", 2)')
    b = uas("uas_answer_gone.xml", callee)
    a = uac("uac_wait_bye.xml", p.port)
    finish(b)
    finish(a)             # the caller answered pings, then got the BYE
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog gone")
    assert p.stat("dialog:active_dialogs") == 0
    assert p.stat("dialog:expired_dialogs") == 0


def test_in_dialog_request_for_unknown_or_ended_dialog_gets_481(server):
    callee = free_port()
    p = Proxy(server, route(callee))
    b = uas("uas_call.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=1000)
    try:
        wait_for(lambda: p.state() == 4, 10, what="an established dialog")
        d = p.dialogs()[0]
    finally:
        finish(a, b)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    me = s.getsockname()[1]
    ended = (d["ID"], d["callid"], d["caller_tag"],
             d["CALLEES"][0]["callee_tag"], "INFO")
    try:
        for did, cid, ft, tt, m in (ended, ("1.99999", "x", "a1", "b1", "BYE"),
                                    ("zz", "y", "a1", "b1", "BYE"),
                                    (None, "z", "a1", "b1", "BYE")):
            route_hdr = f"Route: <sip:127.0.0.1:{p.port};lr" + \
                (f";did={did}" if did else "") + ">\r\n"
            req = (f"{m} sip:callee@127.0.0.1:{callee} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{did}x\r\n"
                   f"{route_hdr}"
                   f"From: <sip:alice@example.com>;tag={ft}\r\n"
                   f"To: <sip:callee@example.com>;tag={tt}\r\n"
                   f"Call-ID: {cid}\r\nCSeq: 3 {m}\r\n"
                   f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            s.sendto(req.encode(), ("127.0.0.1", p.port))
            while True:
                r = SipMsg(s.recv(65535))
                if r.via1.branch == f"z9hG4bK{did}x" and r.status >= 200:
                    break
            assert r.status == 481, (did, r.status, r.reason)
    finally:
        s.close()


def test_a_re_invite_within_the_dialog(server):
    callee = free_port()
    # R: re-INVITE pinging asked for (not due in the test), so the SDPs
    # are kept
    p = Proxy(server, route(callee, initial='create_dialog("R");', within="""
    if (is_method("INVITE"))
        xlog("L_NOTICE", "re-INVITE in dialog $DLG_did state $DLG_status dir $DLG_dir\\n");"""))
    b = uas("uas_reinvite.xml", callee)
    a = uac("uac_reinvite.xml", p.port, hold_ms=1500)
    try:
        wait_for(lambda: "6004" in ((p.dialogs() or [{}])[0].get(
            "caller_sdp") or ""), 10, what="the re-INVITE's SDP kept")
        d = p.dialogs()[0]
        assert d["state"] == 4
        assert d["callee_cseq"] == "2"      # the caller's last CSeq
    finally:
        finish(a, b)
    assert "state 4 dir downstream" in server.stderr()
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog gone")
    st = p.stats("dialog:")
    assert st["dialog:processed_dialogs"] == 1
    assert st["dialog:active_dialogs"] == 0


def test_prack_and_update_in_two_early_dialogs(server):
    fa, fb = free_port(), free_port()
    p = Proxy(server, route(fa, within="""
    xlog("L_NOTICE", "$rm in state $DLG_status dir $DLG_dir\\n");""",
                            target=f"""
    seturi("sip:callee@127.0.0.1:{fa}");
    append_branch("sip:callee@127.0.0.1:{fb}");"""))
    b1 = uas("uas_fork_a.xml", fa, extra=("-d", "2500"))
    b2 = uas("uas_fork_b.xml", fb)
    a = uac("uac_prack_fork.xml", p.port)
    try:
        def early_two():
            ds = p.dialogs()
            return bool(ds) and ds[0]["state"] == 2 and \
                len(ds[0]["CALLEES"]) == 2
        wait_for(early_two, 10, what="one dialog, two early legs")
        assert p.stat("dialog:early_dialogs") == 1
        assert p.stat("dialog:active_dialogs") == 0
        tags = {c["callee_tag"][-2:-1] for c in p.dialogs()[0]["CALLEES"]}
        assert tags == {"A", "B"}
    finally:
        try:
            finish(a, b1, b2)
        finally:
            print(server.stderr()[-3000:])
    err = server.stderr()
    assert "PRACK in state 2 dir downstream" in err
    assert "UPDATE in state 2 dir downstream" in err
    assert "BYE in state 5 dir downstream" in err
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog gone")
    st = p.stats("dialog:")
    assert st["dialog:early_dialogs"] == 0
    assert st["dialog:processed_dialogs"] == 1
    assert st["dialog:failed_dialogs"] == 0


def test_a_restart_with_write_through_keeps_an_established_dialog(
        server, tmp_path):
    import sqlite3

    from opensipy.db import admin
    path = tmp_path / "dlg.db"
    url = f"sqlite://{path}"
    admin.create(url, ["dialog"])
    callee = free_port()
    p = Proxy(server, route(callee, initial="""
    create_dialog();
    $dlg_val(who) = $fU;"""), params=f"""
loadmodule "db_sqlite.so"
modparam("dialog", "db_url", "{url}")
modparam("dialog", "db_mode", 1)""")
    b = uas("uas_call.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=6000)
    try:
        wait_for(lambda: p.state() == 4, 10,
                 what="an established dialog")
        before = p.mi_call("dlg_list_ctx")["Dialogs"][0]
        with sqlite3.connect(path) as c:
            rows = c.execute("select dlg_id, state, callid from dialog")\
                .fetchall()
        assert rows == [(int(before["db_id"]), 4, before["callid"])]
        p.restart()
        after = p.mi_call("dlg_list_ctx")["Dialogs"]
        assert len(after) == 1
        for k in ("ID", "callid", "from_uri", "to_uri", "caller_tag",
                  "caller_contact", "timestart", "timeout", "state"):
            assert after[0][k] == before[k], k
        assert after[0]["CALLEES"][0]["callee_tag"] == \
            before["CALLEES"][0]["callee_tag"]
        assert after[0]["context"]["values"] == [{"who": "alice"}]
        # the table again: nothing new, no double
        assert p.mi_call("dlg_db_sync") == "OK"
        assert len(p.dialogs()) == 1
        assert p.stat("dialog:active_dialogs") == 1
    finally:
        finish(a, b)        # the BYE after the restart matched and relayed
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog ended")
    with sqlite3.connect(path) as c:
        assert c.execute("select count(*) from dialog").fetchone()[0] == 0
    assert p.stat("dialog:active_dialogs") == 0


def test_mi_dlg_end_dlg_sends_bye_to_both_ends(server):
    callee = free_port()
    p = Proxy(server, route(callee))
    b = uas("uas_call.xml", callee)
    a = uac("uac_wait_bye.xml", p.port)
    try:
        wait_for(lambda: p.state() == 4, 10,
                 what="an established dialog")
        d = p.dialogs()[0]
        with pytest.raises(AssertionError, match="404"):
            p.mi_call("dlg_end_dlg", {"dialog_id": "12345"})
        assert p.mi_call("dlg_end_dlg", {"dialog_id": d["ID"]}) == "OK"
    finally:
        finish(a, b)
    assert p.dialogs() == []
    assert p.stat("dialog:active_dialogs") == 0


def test_re_invite_pinging_keeps_a_live_call(server):
    callee = free_port()
    p = Proxy(server, route(callee, initial='create_dialog("r");'),
              params='modparam("dialog", "reinvite_ping_interval", 1)')
    b = uas("uas_pinged.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=3500)
    finish(a, b)     # the callee got >= 1 re-INVITE with the caller's SDP
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog gone")
    st = p.stats("dialog:")
    assert st["dialog:processed_dialogs"] == 1
    assert st["dialog:active_dialogs"] == 0


def test_match_dialog_by_callid_and_tags_without_a_route_set(server):
    """The bench's calls (bench/scenarios): ACK and BYE carry no Route
    set; match_dialog() with dlg_match_mode 1 finds the dialogs by Call-ID
    and tags, and every BYE ends its dialog."""
    callee = free_port()
    p = Proxy(server, """
route {
    if ($tt != NULL) {
        if (!loose_route() && !match_dialog()) {
            send_reply(481, "Call/Transaction Does Not Exist");
            exit;
        }
        xlog("L_NOTICE", "$rm matched: $DLG_status $DLG_dir\\n");
    } else if ($rm == "INVITE") {
        create_dialog();
        record_route();
    }
    $du = "sip:127.0.0.1:%d";
    t_relay();
}
""" % callee, params='modparam("dialog", "dlg_match_mode", 1)')
    n = 10
    bench = REPO / "bench" / "scenarios"
    b = popen(["sipp", "-sf", str(bench / "invite_uas.xml"),
                          "-i", "127.0.0.1", "-p", str(callee), "-m", str(n),
                          "-nostdin", "-timeout", "40s"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    a = popen(["sipp", "-sf", str(bench / "invite_uac.xml"),
                          f"127.0.0.1:{p.port}", "-i", "127.0.0.1", "-p",
                          str(free_port()), "-m", str(n), "-r", "10",
                          "-nostdin", "-timeout", "40s"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    finish(a, b)
    wait_for(lambda: p.dialogs() == [], 5, what="every dialog ended")
    st = p.stats("dialog:")
    assert st["dialog:processed_dialogs"] == n
    assert st["dialog:active_dialogs"] == 0
    assert server.stderr().count("BYE matched: 5 downstream") == n


def test_dlg_on_answer_and_a_sequential_request_of_ours(server):
    callee = free_port()
    p = Proxy(server, route(callee, initial="""
    create_dialog();
    dlg_on_answer("answered");""", within="""
    if (is_method("ACK"))
        dlg_send_sequential("OPTIONS", "caller");""", extra="""
route[answered] {
    xlog("L_NOTICE", "answered $DLG_did state $DLG_status\\n");
}
"""))
    b = uas("uas_call.xml", callee)
    a = uac("uac_wait_bye.xml", p.port)
    try:
        def sent():
            ds = p.dialogs()
            return ds and ds[0]["CALLEES"] and \
                ds[0]["CALLEES"][0]["caller_cseq"] == "1"
        wait_for(sent, 10,
                 what="our OPTIONS took the callee side's next CSeq")
        d = p.dialogs()[0]
        assert f"answered {d['ID']} state 3" in server.stderr()
        assert p.mi_call("dlg_end_dlg", [d["callid"]]) == "OK"
    finally:
        finish(a, b)
    assert p.dialogs() == []


PROBE_ROUTE = """
    if (is_method("OPTIONS") && $hdr(X-Dlg) != NULL) {
        if (!load_dialog_ctx($hdr(X-Dlg))) {
            send_reply(404, "No Dialog");
            exit;
        }
        $var(r) = "st=" + $DLG_status + " who=" + $dlg_val(caller);
        if (is_dlg_flag_set(3))
            $var(r) = $var(r) + " f3";
        if (is_in_profile("callers", "alice"))
            $var(r) = $var(r) + " in";
        get_dialog_info("caller", $var(i), "room", "r1");
        $var(r) = $var(r) + " info=" + $var(i);
        get_dialogs_by_val("room", "r1", $avp(ids), $var(n));
        $var(r) = $var(r) + " byval=" + $var(n);
        get_dialogs_by_profile("callers", "alice", $avp(p), $var(m));
        $var(r) = $var(r) + " byprof=" + $var(m);
        get_dialog_vals($avp(names), $avp(vals), $ci);
        unload_dialog_ctx();
        if ($DLG_status == NULL)
            $var(r) = $var(r) + " unloaded";
        send_reply(200, "$var(r)");
        exit;
    }
"""


def test_script_functions_over_a_live_dialog(server):
    callee = free_port()
    p = Proxy(server, route(callee, initial=PROBE_ROUTE + """
    create_dialog();
    $dlg_val(caller) = $fU;
    store_dlg_value("room", "r1");
    set_dlg_flag(3);
    if (test_and_set_dlg_flag(3))
        xlog("L_ERR", "flag 3 was not set\\n");
    reset_dlg_flag(4);
    set_dlg_profile("callers", $fU);
    $DLG_flags = $DLG_flags | 16;"""),
        params='modparam("dialog", "profiles_with_value", "callers")')
    b = uas("uas_call.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=3000)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    me = s.getsockname()[1]

    def probe(which, i):
        br = f"z9hG4bKprobe{i}"
        s.sendto((f"OPTIONS sip:127.0.0.1:{p.port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={br}\r\n"
                  f"From: <sip:probe@test>;tag=p{i}\r\n"
                  f"To: <sip:proxy@test>\r\nCall-ID: probe{i}@test\r\n"
                  f"CSeq: 1 OPTIONS\r\nX-Dlg: {which}\r\n"
                  f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
                 .encode(), ("127.0.0.1", p.port))
        while True:
            r = SipMsg(s.recv(65535))
            if r.via1.branch == br:
                return r.status, r.reason
    try:
        wait_for(lambda: p.state() == 4, 10,
                 what="an established dialog")
        d = p.dialogs()[0]
        assert d["user_flags"] == (1 << 3) | 16
        for i, which in enumerate((d["callid"], d["db_id"], d["ID"])):
            assert probe(which, i) == (
                200, "st=4 who=alice f3 in info=alice byval=1 byprof=1 "
                     "unloaded")
        assert probe("nope", 9) == (404, "No Dialog")
    finally:
        s.close()
        finish(a, b)
    assert "flag 3 was not set" not in server.stderr()


def test_a_call_refused_by_the_callee_is_a_failed_dialog(server):
    callee = free_port()
    p = Proxy(server, route(callee, initial="""
    create_dialog();
    set_dlg_profile("calls");"""),
        params='modparam("dialog", "profiles_no_value", "calls")')
    b = uas_path(REPO / "tests" / "tm" / "scenarios" / "uas_busy.xml",
                 callee)
    a = uac("uac_busy.xml", p.port)
    finish(a, b)
    wait_for(lambda: p.stat("dialog:failed_dialogs") == 1, 5,
             what="a failed dialog")
    st = p.stats("dialog:")
    assert st["dialog:processed_dialogs"] == 0
    assert st["dialog:early_dialogs"] == 0
    assert p.dialogs() == []
    assert p.mi_call("profile_get_size", ["calls"])["profile"]["count"] == 0


def uas_path(path, port):
    return popen(["sipp", "-sf", str(path), "-i", "127.0.0.1",
                             "-p", str(port), "-m", "1", "-nostdin",
                             "-timeout", "40s"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def test_dlg_inc_cseq_shifts_a_direction_and_its_replies_back(server):
    callee = free_port()
    p = Proxy(server, route(callee, within="""
    if (is_method("INVITE") && !dlg_inc_cseq(5)) {
        send_reply(500, "No CSeq Change");
        exit;
    }"""))
    b = uas("uas_reinvite_cseq.xml", callee)   # sees 7 INVITE, 7 ACK, 8 BYE
    a = uac("uac_reinvite.xml", p.port, hold_ms=500)  # gets 2 and 3 back
    finish(a, b)
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog gone")


def test_a_spiral_keeps_one_dialog(server):
    """The INVITE is sent back to the proxy once (a spiral) before it goes
    to the callee: both passes record-route with the same did, one dialog
    is made, the BYE (two Routes of ours) ends it."""
    callee = free_port()
    p = Proxy(server, route(callee, initial="""
    create_dialog();""", target="""
    if (is_present_hf("X-Spiral")) {
        $du = "sip:127.0.0.1:%d";
    } else {
        append_hf("X-Spiral: 1\\r\\n");
        $du = "sip:127.0.0.1:" + $Rp;
    }""" % callee))
    b = uas("uas_call.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=1500)
    try:
        wait_for(lambda: p.state() == 4, 10,
                 what="an established dialog")
        assert len(p.dialogs()) == 1
    finally:
        finish(a, b)
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog gone")
    assert p.stat("dialog:processed_dialogs") == 1


def test_fix_route_dialog_sends_a_request_to_the_dialogs_contact(server):
    callee = free_port()
    p = Proxy(server, route(callee, within="""
    if (is_method("BYE")) {
        $ru = "sip:nobody@127.0.0.1:9";
        if (!fix_route_dialog()) {
            send_reply(500, "No Route Fix");
            exit;
        }
        xlog("L_NOTICE", "BYE fixed to $ru\\n");
    }"""))
    b = uas("uas_call.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=300)
    finish(a, b)          # the BYE reached the callee's Contact
    assert f"BYE fixed to sip:callee@127.0.0.1:{callee}" in server.stderr()
