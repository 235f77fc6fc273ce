"""topology_hiding between two real SIPp phones through the real server.

The scenarios (tests/modules/sipp/topoh/) check with SIPp's ereg actions
(check_it / check_it_inverse) what each phone receives: only the proxy's
Via on requests, only its own Vias on replies, no Record-Route, the proxy's
Contact with a thinfo token, and nothing of the other phone's address; the
ACK and the BYE (from the caller, then from the callee) are routed through
topology_hiding_match() to the right Contact along the right route set.
Both modes: without dialog (a sealed thinfo token in the Contact) and with
one (create_dialog(): the dialog id in the Contact, the dialog listed over
MI while the call lasts and gone after the BYE)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from server import free_port, mi_call, popen, wait_for
from test_topology_hiding import SCRIPT

DIALOG = """
loadmodule "dialog.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
"""
CTPARAM = {"no-dialog": r"thinfo=[A-Za-z0-9_-]+",
           "dialog": r"did=[0-9a-f]+\.[0-9a-f]+"}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

SCEN = Path(__file__).resolve().parent / "sipp" / "topoh"


def scenario(tmp, side, bye_from, ports):
    text = (SCEN / f"{side}.xml").read_text() + \
        (SCEN / f"{side}_tail_{bye_from}.xml").read_text()
    for k, v in ports.items():
        text = text.replace(k, str(v))
    p = tmp / f"{side}-{bye_from}.xml"
    p.write_text(text)
    return p


def run(args, out):
    return popen(["sipp", *args, "-m", "1", "-nostdin",
                             "-timeout", "20s", "-timeout_error",
                             "-trace_err", "-trace_msg"],
                            stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=str(out.name and Path(out.name).parent))


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait(10)


@pytest.mark.parametrize("mode", ["no-dialog", "dialog"])
@pytest.mark.parametrize("bye_from", ["caller", "callee"])
def test_sipp_call_through_topology_hiding(server, tmp_path, bye_from, mode):
    port, uas_port, uac_port = free_port(), free_port(), free_port()
    mi = free_port()
    script = SCRIPT.format(port=port, callee=uas_port)
    if mode == "dialog":
        script = script.replace(
            'loadmodule "topology_hiding.so"',
            DIALOG.format(mi=mi) + 'loadmodule "topology_hiding.so"')
        script = script.replace('    if ($rU == "hidecid")',
                                '    create_dialog();\n'
                                '    if ($rU == "hidecid")')
    server.start(script)
    ports = {"PROXYPORT": port, "CALLERPORT": uac_port,
             "CALLEEPORT": uas_port, "CTPARAM": CTPARAM[mode]}
    uas_xml = scenario(tmp_path, "uas", bye_from, ports)
    uac_xml = scenario(tmp_path, "uac", bye_from, ports)
    uas_out = open(tmp_path / "uas.out", "wb")
    uac_out = open(tmp_path / "uac.out", "wb")
    uas = run(["-sf", str(uas_xml), "-i", "127.0.0.1", "-p", str(uas_port)],
              uas_out)
    uac = None
    seen = []
    try:
        uac = run([f"127.0.0.1:{port}", "-sf", str(uac_xml),
                   "-i", "127.0.0.1", "-p", str(uac_port)], uac_out)
        if mode == "dialog":
            # the call is up for a while (a 300 ms pause before the BYE)
            seen = wait_for(lambda: mi_call(mi, "dlg_list")["Dialogs"],
                            timeout=10, interval=0.02, what="the dialog")
        rc_uac = uac.wait(40)
        rc_uas = uas.wait(40)
    finally:
        for p in (uac, uas):
            if p is not None:
                stop(p)
        uas_out.close()
        uac_out.close()
    logs = "".join(f"\n--- {f.name}\n{f.read_text(errors='replace')}"
                   for f in tmp_path.iterdir()
                   if f.suffix in (".log", ".out"))
    assert rc_uac == 0 and rc_uas == 0, logs[-6000:]
    assert "TH matched BYE" in server.stderr()
    if mode == "dialog":
        assert len(seen) == 1
        wait_for(lambda: mi_call(mi, "dlg_list")["Dialogs"] == [],
                 what="the dialog to end")
