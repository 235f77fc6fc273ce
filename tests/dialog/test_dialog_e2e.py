"""dialog end to end: the real opensipy (several receivers, so a reply or
an in-dialog request often reaches another process than the one that made
the dialog) between real SIPp callers and callees; MI (mi_datagram) and
the statistics show what the module keeps."""
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from opensipy.parser import SipMsg

from server import REPO, free_port, mi_call, wait_for

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
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
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
            assert p.returncode == 0, out.decode(errors="replace")[-3000:]
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
        server.start(f"""
log_level=2
udp_workers={workers}
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
""")

    def mi_call(self, cmd, params=None):
        return mi_call(self.mi, cmd, params)

    def stats(self, *names):
        return mi_call(self.mi, "get_statistics", {"statistics": list(names)})

    def stat(self, name):
        return self.stats(name)[name]

    def dialogs(self):
        return self.mi_call("dlg_list")["Dialogs"]


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
            xlog("L_INFO", "no dialog for $rm $ci: $DLG_status\\n");
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
    $du = "sip:127.0.0.1:{callee}";
    t_relay();
}}
"""


def route(callee, initial="create_dialog();", within="", extra=""):
    return ROUTE.format(callee=callee, initial=initial,
                        within=within) + extra


def test_a_call_listed_over_mi_and_ended_by_bye(server):
    callee = free_port()
    p = Proxy(server, route(callee))
    b = uas("uas_call.xml", callee)
    a = uac("uac_call.xml", p.port, hold_ms=2500)
    try:
        wait_for(lambda: p.dialogs() and p.dialogs()[0]["state"] == 4, 10,
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
        one = p.mi_call("dlg_list", {"callid": d["callid"]})["Dialogs"]
        assert one[0]["ID"] == d["ID"]
    finally:
        finish(a, b)
    wait_for(lambda: p.dialogs() == [], 5, what="the dialog gone")
    st = p.stats("dialog:")
    assert st["dialog:active_dialogs"] == 0
    assert st["dialog:early_dialogs"] == 0
    assert st["dialog:processed_dialogs"] == 1
    assert st["dialog:failed_dialogs"] == 0
    assert st["dialog:expired_dialogs"] == 0
