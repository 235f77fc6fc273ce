"""usrloc and registrar in the real server: REGISTERs from a UDP phone, the
replies checked on the wire, the table read over MI (ul_dump,
ul_show_contact) and changed over MI (ul_add, ul_rm, ul_rm_contact),
lookup() relaying to the registered contact, statistics moving."""
import json
import socket
import time

import pytest

from opensipy.parser import SipMsg

import modkit
from server import free_port

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("registrar", "min_expires", 30)
modparam("registrar", "max_expires", 1800)
modparam("usrloc", "timer_interval", 1)

route {{
    if (is_method("REGISTER")) {{
        if ($tU == "limited") {{
            save("location", "max-contacts=2");
        }} else if ($tU == "over") {{
            save("location", "max-contacts=1,force-registration");
        }} else if ($tU == "quiet") {{
            if (save("location", "no-reply"))
                send_reply(299, "Saved Quietly");
        }} else {{
            save("location");
        }}
        exit;
    }}
    if (!lookup("location")) {{
        send_reply(404, "Not Found");
        exit;
    }}
    if (is_registered("location"))
        $var(reg) = "yes";
    forward();
}}
"""


class Rig:
    def __init__(self, server):
        self.port = free_port()
        self.mi_port = free_port()
        self.phone = modkit.Peer()
        server.start(SCRIPT.format(port=self.port, mi=self.mi_port))
        self.cseq = 0

    def register(self, user="bob", contacts=None, expires=None, extra=(),
                 callid="reg-1@phone", cseq=None):
        self.cseq += 1
        contacts = [f"<sip:{user}@127.0.0.1:{self.phone.port}>"] \
            if contacts is None else contacts
        hdrs = [f"Contact: {c}" for c in contacts]
        if expires is not None:
            hdrs.append(f"Expires: {expires}")
        hdrs += list(extra)
        data = modkit.request(
            method="REGISTER", ruri=f"sip:127.0.0.1:{self.port}",
            via_port=self.phone.port, callid=callid,
            cseq=cseq if cseq is not None else self.cseq, extra=hdrs)
        # the To header of modkit.request names bob: REGISTER for another
        # user rewrites it
        data = data.replace(b"To: <sip:bob@example.com>",
                            f"To: <sip:{user}@example.com>".encode())
        self.phone.send(data, self.port)
        return self.phone.recv()

    def mi(self, method, params=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        try:
            s.sendto(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                 "params": params or {}}).encode(),
                     ("127.0.0.1", self.mi_port))
            return json.loads(s.recv(1 << 20))
        finally:
            s.close()

    def aors(self):
        dom = self.mi("ul_dump")["result"]["Domains"]
        assert [d["name"] for d in dom] == ["location"]
        return {a["AOR"]: a["Contacts"] for a in dom[0]["AORs"]}

    def stat(self, name):
        r = self.mi("get_statistics", {"statistics": [name]})["result"]
        return r[name]

    def close(self):
        self.phone.close()


@pytest.fixture
def rig(server):
    r = Rig(server)
    yield r
    r.close()


def test_register_refresh_and_unregister(rig):
    r = rig.register(expires=600)
    assert (r.status, r.reason) == (200, "OK")
    c = r.contacts
    assert len(c) == 1 and c[0].uri == f"sip:bob@127.0.0.1:{rig.phone.port}"
    assert 590 <= int(c[0].param("expires")) <= 600
    assert r.hdr("Date")
    aors = rig.aors()
    assert list(aors) == ["bob"]
    ct = aors["bob"][0]
    assert ct["Contact"] == c[0].uri and ct["Callid"] == "reg-1@phone"
    assert ct["Cseq"] == 1 and 590 <= ct["Expires"] <= 600
    assert ct["Socket"] == f"udp:127.0.0.1:{rig.port}"
    assert rig.stat("usrloc:location-contacts") == 1
    assert rig.stat("usrloc:registered_users") == 1
    # refresh with a longer time: capped at max_expires
    r = rig.register(expires=7200)
    assert 1790 <= int(r.contacts[0].param("expires")) <= 1800
    assert rig.aors()["bob"][0]["Cseq"] == 2
    # unregister
    r = rig.register(expires=0)
    assert r.status == 200 and r.contacts == []
    assert rig.aors() == {}
    assert rig.stat("usrloc:location-contacts") == 0
    assert rig.stat("usrloc:location-users") == 0
    assert rig.stat("registrar:accepted_regs") == 3


def test_second_contact_star_unregister_and_fetch(rig):
    rig.register(expires=600)
    r = rig.register(contacts=[f"<sip:bob@127.0.0.1:{rig.phone.port};o=2>"
                               ";expires=300"], callid="reg-2@phone")
    assert r.status == 200 and len(r.contacts) == 2
    # a REGISTER without Contact fetches the bindings
    r = rig.register(contacts=[])
    assert r.status == 200 and len(r.contacts) == 2
    r = rig.register(contacts=["*"], expires=0, callid="reg-3@phone")
    assert r.status == 200 and r.contacts == []
    assert rig.aors() == {}


def test_bad_registrations(rig):
    r = rig.register(expires=5)
    assert (r.status, r.reason) == (423, "Interval Too Brief")
    # (the stateless 423 carries the Min-Expires the phone must use)
    assert r.hdr("Min-Expires") == "30"
    r = rig.register(contacts=["*"], expires=60)
    assert (r.status, r.reason) == (400, "Expires must be zero")
    # a star beside another contact does not even parse: the core says 400
    r = rig.register(contacts=["*", "<sip:x@127.0.0.1>"], expires=0)
    assert r.status == 400
    r = rig.register(contacts=["<sip:x@127.0.0.1>;q=2"], expires=60)
    assert (r.status, r.reason) == (400, "Invalid q")
    r = rig.register(expires=600, extra=[], cseq=50)
    assert r.status == 200
    # an older CSeq of the same Call-ID is refused
    r = rig.register(expires=600, cseq=10)
    assert (r.status, r.reason) == (400, "Invalid CSeq number")
    assert rig.stat("registrar:rejected_regs") == 4


def test_contact_limit_and_force_registration(rig):
    for i in range(2):
        r = rig.register(user="limited", contacts=[
            f"<sip:l{i}@127.0.0.1:{rig.phone.port}>"], expires=600,
            callid=f"lim-{i}")
        assert r.status == 200
    r = rig.register(user="limited", contacts=[
        f"<sip:l9@127.0.0.1:{rig.phone.port}>"], expires=600, callid="lim-9")
    assert (r.status, r.reason) == (503, "Too Many Registered Contacts")
    assert len(rig.aors()["limited"]) == 2
    # force-registration: at the limit, the oldest contact gives way
    for i in range(2):
        rig.register(user="over", contacts=[
            f"<sip:o{i}@127.0.0.1:{rig.phone.port}>"], expires=600,
            callid=f"over-{i}")
    assert [c["Contact"] for c in rig.aors()["over"]] == \
        [f"sip:o1@127.0.0.1:{rig.phone.port}"]


def test_no_reply_flag_lets_the_script_answer(rig):
    r = rig.register(user="quiet", expires=600)
    assert (r.status, r.reason) == (299, "Saved Quietly")
    assert "quiet" in rig.aors()


def test_lookup_relays_to_the_contact_and_404_for_unknown(rig):
    callee = modkit.Peer()
    try:
        rig.register(user="carol",
                     contacts=[f"<sip:carol@127.0.0.1:{callee.port}>"],
                     expires=600)
        rig.phone.send(modkit.request(
            method="INVITE", ruri=f"sip:carol@127.0.0.1:{rig.port}",
            via_port=rig.phone.port, callid="call-carol"), rig.port)
        got = callee.recv()
        assert got.method == "INVITE"
        assert got.ruri == f"sip:carol@127.0.0.1:{callee.port}"
        rig.phone.send(modkit.request(
            method="INVITE", ruri=f"sip:nobody@127.0.0.1:{rig.port}",
            via_port=rig.phone.port, callid="call-nobody"), rig.port)
        r = rig.phone.recv()
        assert (r.status, r.reason) == (404, "Not Found")
    finally:
        callee.close()


def test_contacts_expire_by_the_timer(rig):
    rig.mi("ul_add", {"table_name": "location", "aor": "eve",
                      "contact": "sip:eve@192.0.2.1", "expires": 1,
                      "q": "0.5", "unused": 0, "flags": 0, "cflags": 0,
                      "methods": 4294967295})
    assert rig.aors()["eve"][0]["Q"] == "0.5"
    deadline = time.time() + 10
    while time.time() < deadline and "eve" in rig.aors():
        time.sleep(0.2)
    assert "eve" not in rig.aors()
    assert rig.stat("usrloc:location-expires") == 1


def test_mi_show_add_and_remove(rig):
    rig.register(user="dave", expires=600)
    r = rig.mi("ul_show_contact", {"table_name": "location", "aor": "dave"})
    assert r["result"]["AOR"] == "dave"
    assert len(r["result"]["Contacts"]) == 1
    r = rig.mi("ul_show_contact", {"table_name": "location", "aor": "zed"})
    assert r["error"] == {"code": 404, "message": "AOR not found"}
    r = rig.mi("ul_show_contact", {"table_name": "nope", "aor": "dave"})
    assert r["error"]["message"] == "Table not found"
    rig.mi("ul_add", {"table_name": "location", "aor": "dave@example.com",
                      "contact": "sip:dave@192.0.2.5", "expires": 0,
                      "q": "1", "unused": 0, "flags": 0, "cflags": 0,
                      "methods": 4294967295})
    cts = rig.aors()["dave"]
    assert "sip:dave@192.0.2.5" in [c["Contact"] for c in cts]
    # q 1 sorts above the registered contact's default q 0
    assert cts[0]["Contact"] == "sip:dave@192.0.2.5"
    assert [c for c in cts if c["Contact"] == "sip:dave@192.0.2.5"][0][
        "Expires"] == "permanent"
    r = rig.mi("ul_rm_contact", {"table_name": "location", "aor": "dave",
                                 "contact": "sip:dave@192.0.2.5"})
    assert r["result"] == "OK"
    assert len(rig.aors()["dave"]) == 1
    assert rig.mi("ul_rm", {"table_name": "location",
                            "aor": "dave"})["result"] == "OK"
    assert rig.aors() == {}


def test_opensipyctl_ul_show_add_rm(rig, tmp_path):
    import subprocess
    import sys
    from server import REPO
    cfg = tmp_path / "ctl.cfg"
    cfg.write_text("[default]\ncommunication_type = datagram\n"
                   f"datagram_ip = 127.0.0.1\ndatagram_port = {rig.mi_port}\n")

    def ctl(*args):
        import os
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.run([sys.executable, "-m", "opensipy.ctl", "-f",
                               str(cfg), *args], capture_output=True,
                              text=True, timeout=30, env=env,
                              stdin=subprocess.DEVNULL)
    rig.register(user="erin", expires=600)
    r = ctl("ul", "show")
    assert r.returncode == 0, r.stderr
    assert "AOR: erin" in r.stdout
    assert f"sip:erin@127.0.0.1:{rig.phone.port} expires=" in r.stdout
    r = ctl("ul", "add", "frank", "sip:frank@192.0.2.9", "300", "0.7")
    assert r.returncode == 0, r.stderr
    r = ctl("ul", "show", "frank")
    assert "sip:frank@192.0.2.9 expires=" in r.stdout and "Q=0.7" in r.stdout
    assert ctl("ul", "rm", "frank", "sip:frank@192.0.2.9").returncode == 0
    assert "frank" not in rig.aors()
    assert ctl("ul", "rm", "erin").returncode == 0
    assert rig.aors() == {}
    r = ctl("ul", "show", "nobody")
    assert r.returncode == 1 and "AOR not found" in r.stderr
    assert ctl("ul", "frobnicate").returncode == 2


def test_shm_exhausted_by_new_aors_answers_500_and_keeps_bindings(server):
    """A flood of REGISTERs for new AORs on a small arena: once shared
    memory is gone the registrar answers 500 (and logs it), the bindings
    already stored stay, and the server still serves."""
    port, mi = free_port(), free_port()
    server.start(SCRIPT.format(port=port, mi=mi), args=["-m", "2"])
    phone = modkit.Peer()
    try:
        def reg(user, n):
            data = modkit.request(
                method="REGISTER", ruri=f"sip:127.0.0.1:{port}",
                via_port=phone.port, callid=f"flood-{n}", cseq=1,
                extra=[f"Contact: <sip:{user}@127.0.0.1:{phone.port}>",
                       "Expires: 600"])
            data = data.replace(b"To: <sip:bob@example.com>",
                                f"To: <sip:{user}@example.com>".encode())
            phone.send(data, port)
            return phone.recv()
        assert reg("keeper", 0).status == 200
        statuses = []
        for n in range(1, 40000):
            st = reg(f"u{n:05d}" + "x" * 60, n).status
            statuses.append(st)
            if st == 500:
                break
        assert statuses[-1] == 500, "shared memory never ran out"
        assert set(statuses[:-1]) == {200} and len(statuses) > 20, statuses
        # what was stored stays, and the server still answers
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(json.dumps({"jsonrpc": "2.0", "id": 1,
                                 "method": "ul_show_contact",
                                 "params": {"table_name": "location",
                                            "aor": "keeper"}}).encode(),
                     ("127.0.0.1", mi))
            r = json.loads(s.recv(65535))
        assert r["result"]["AOR"] == "keeper"
        assert "no shared memory" in server.stderr()
    finally:
        phone.close()
