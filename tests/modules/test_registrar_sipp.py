"""Real SIPp phones against registrar, usrloc and rr in the real server:
register, refresh, unregister, 423 and the max_expires cap step by step
(an old CSeq's 400 is checked with raw peers in test_registrar_e2e.py:
SIPp 3.6 aborts on a 400 even where the scenario expects it)
(checked over MI ul_dump between the steps), and a call between two
SIPp users that registered, through a record-routing proxy: the ACK and the
BYE follow the Route set through loose_route()."""
import shutil
import subprocess
from pathlib import Path

import pytest

from server import free_port, mi_call, popen

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

SCEN = Path(__file__).resolve().parent / "sipp"

SCRIPT = """
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "rr.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("registrar", "min_expires", 60)
modparam("registrar", "max_expires", 1800)
route {{
    if (!mf_process_maxfwd_header(10)) {{
        sl_send_reply(483, "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            forward();
            exit;
        }}
        sl_send_reply(404, "Not here");
        exit;
    }}
    if (is_method("REGISTER")) {{
        save("location");
        exit;
    }}
    record_route();
    if (!lookup("location")) {{
        sl_send_reply(404, "Not Found");
        exit;
    }}
    forward();
}}
"""


def sipp(proxy, scenario, local_port, keys, wait=True, tmp=None):
    path = SCEN / scenario
    if "status" in keys:
        # the expected status is written into a copy of the scenario
        keys = dict(keys)
        text = path.read_text().replace("STATUS", str(keys.pop("status")))
        path = tmp / f"{path.stem}-{local_port}-{len(text)}.xml"
        path.write_text(text)
    args = ["sipp", f"127.0.0.1:{proxy}", "-sf", str(path),
            "-i", "127.0.0.1", "-p", str(local_port), "-m", "1",
            "-nostdin", "-timeout", "30s", "-timeout_error"]
    if "user" in keys:
        # one Call-ID per user: the steps are one registration (RFC 3261)
        args += ["-cid_str", f"reg-{keys['user']}@%s"]
        keys.setdefault("contact_port", local_port)
    for k, v in keys.items():
        args += ["-key", k, str(v)]
    if not wait:
        # a SIPp left running writes its screens to a file: a pipe nobody
        # reads fills up and stops it
        out = open(tmp / f"sipp-{local_port}.out", "wb")
        return popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                start_new_session=True), out
    p = popen(args, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    if wait:
        try:
            out, _ = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        return p.returncode, out.decode(errors="replace")


@pytest.fixture
def proxy(server):
    port, mi = free_port(), free_port()
    server.start(SCRIPT.format(port=port, mi=mi))
    return port, mi


def contacts(mi):
    dom = mi_call(mi, "ul_dump")["Domains"][0]
    return {a["AOR"]: {c["Contact"]: c["Expires"] for c in a["Contacts"]}
            for a in dom["AORs"]}


def test_sipp_register_refresh_cap_423_unregister(proxy, tmp_path):
    port, mi = proxy
    phone = free_port()
    contact = f"sip:alice@127.0.0.1:{phone}"
    step = dict(user="alice", seq=1, expires=600, status=200)
    rc, out = sipp(port, "register.xml", phone, step, tmp=tmp_path)
    assert rc == 0, out
    assert 590 <= contacts(mi)["alice"][contact] <= 600
    # a refresh asking for more than max_expires gets max_expires
    rc, out = sipp(port, "register.xml", phone,
                   dict(step, seq=2, expires=7200), tmp=tmp_path)
    assert rc == 0, out
    assert 1790 <= contacts(mi)["alice"][contact] <= 1800
    # under min_expires: 423 (with Min-Expires), the binding stays
    rc, out = sipp(port, "register.xml", phone,
                   dict(step, seq=3, expires=10, status=423), tmp=tmp_path)
    assert rc == 0, out
    assert contact in contacts(mi)["alice"]
    rc, out = sipp(port, "register.xml", phone,
                   dict(step, seq=4, expires=0), tmp=tmp_path)
    assert rc == 0, out
    assert contacts(mi) == {}
    stats = mi_call(mi, "get_statistics", {"statistics": ["registrar:"]})
    assert stats["registrar:accepted_regs"] == 3
    assert stats["registrar:rejected_regs"] == 1


def test_call_between_registered_sipp_users_follows_the_route_set(
        proxy, tmp_path):
    port, mi = proxy
    callee_port, caller_port = free_port(), free_port()
    callee, callee_out = sipp(port, "callee.xml", callee_port,
                              {"user": "bob"},
                              wait=False, tmp=tmp_path)
    try:
        rc, out = sipp(port, "register.xml", free_port(),
                       dict(user="bob", seq=1, expires=600, status=200,
                            contact_port=callee_port), tmp=tmp_path)
        assert rc == 0, out
        assert f"sip:bob@127.0.0.1:{callee_port}" in contacts(mi)["bob"]
        rc, out = sipp(port, "caller.xml", caller_port, {"callee": "bob"})
        assert rc == 0, out
        assert callee.wait(30) == 0, \
            (tmp_path / f"sipp-{callee_port}.out").read_text(errors="replace")
    finally:
        if callee.poll() is None:
            callee.kill()
            callee.wait(10)
        callee_out.close()
    # an unknown user is answered 404 by the script: the caller's scenario,
    # which wants a 200, fails on it
    rc, out = sipp(port, "caller.xml", free_port(), {"callee": "nobody"})
    assert rc != 0 and "404" in out
