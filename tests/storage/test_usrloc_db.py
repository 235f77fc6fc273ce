"""usrloc with a database, on the real server: write-through and write-back
on SQLite survive a SIGTERM and a restart (checked by ul_dump, the table
itself and a call reaching the user), and two instances in sql-only mode on
one PostgreSQL (and one SQLite file) serve one location table."""
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from opensipy.db import admin
from opensipy.parser import SipMsg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import modkit  # noqa: E402
from server import Server, free_port, mi_call

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
stderror_enabled=yes
udp_workers=2
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "{driver}.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("usrloc", "working_mode_preset", "{preset}")
modparam("usrloc", "db_url", "{url}")
modparam("usrloc", "timer_interval", {timer})
route {{
    if (is_method("REGISTER")) {{
        save("location");
        exit;
    }}
    if (!lookup("location")) {{
        send_reply(404, "Not Found");
        exit;
    }}
    forward();
}}
"""


class Phone:
    def __init__(self):
        self.peer = modkit.Peer()
        self.cseq = 0

    def register(self, sip_port, user, contact_port, expires=600,
                 callid="reg@phone"):
        self.cseq += 1
        data = modkit.request(
            method="REGISTER", ruri=f"sip:127.0.0.1:{sip_port}",
            via_port=self.peer.port, callid=callid, cseq=self.cseq,
            extra=[f"Contact: <sip:{user}@127.0.0.1:{contact_port}>",
                   f"Expires: {expires}"])
        data = data.replace(b"To: <sip:bob@example.com>",
                            f"To: <sip:{user}@example.com>".encode())
        self.peer.send(data, sip_port)
        return self.peer.recv()

    def invite(self, sip_port, user, callid):
        self.peer.send(modkit.request(
            method="INVITE", ruri=f"sip:{user}@127.0.0.1:{sip_port}",
            via_port=self.peer.port, callid=callid), sip_port)

    def close(self):
        self.peer.close()


def start(server, url, preset, timer=60):
    sip, mi = free_port(), free_port()
    driver = "db_postgres" if url.startswith("postgres") else "db_sqlite"
    server.start(SCRIPT.format(sip=sip, mi=mi, driver=driver, url=url,
                               preset=preset, timer=timer))
    return sip, mi


def aors(mi):
    dom = mi_call(mi, "ul_dump")["Domains"][0]
    return {a["AOR"]: [c["Contact"] for c in a["Contacts"]]
            for a in dom["AORs"]}


def rows(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT username, contact, expires, callid "
                           "FROM location ORDER BY username").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("preset", ["single-instance-sql-write-through",
                                    "single-instance-sql-write-back"])
def test_registrations_survive_a_restart(tmp_path, preset):
    path = tmp_path / "loc.db"
    url = f"sqlite://{path}"
    admin.create(url, ["usrloc"])
    phone, callee = Phone(), modkit.Peer()
    a = Server(tmp_path)
    try:
        sip, mi = start(a, url, preset)
        r = phone.register(sip, "alice", callee.port)
        assert r.status == 200
        if preset.endswith("write-through"):
            # written at once
            assert [(u, c) for u, c, _, _ in rows(path)] == [
                ("alice", f"sip:alice@127.0.0.1:{callee.port}")]
        assert a.terminate() == 0
        # write-back: the shutdown flush wrote it
        (user, contact, expires, callid), = rows(path)
        assert (user, callid) == ("alice", "reg@phone")
        assert expires > time.time() + 500
        sip, mi = start(a, url, preset)
        assert aors(mi) == {"alice": [f"sip:alice@127.0.0.1:{callee.port}"]}
        phone.invite(sip, "alice", "call-after-restart")
        got = callee.recv()
        assert got.method == "INVITE" and got.callid == "call-after-restart"
        # an unregister reaches the table too (flushed at the next stop)
        assert phone.register(sip, "alice", callee.port, expires=0).status \
            == 200
        assert a.terminate() == 0
        assert rows(path) == []
    finally:
        phone.close()
        callee.close()
        a.cleanup()


def test_write_back_timer_flushes_without_a_stop(tmp_path):
    path = tmp_path / "wb.db"
    url = f"sqlite://{path}"
    admin.create(url, ["usrloc"])
    phone, callee = Phone(), modkit.Peer()
    a = Server(tmp_path)
    try:
        sip, mi = start(a, url, "single-instance-sql-write-back", timer=1)
        assert phone.register(sip, "bob", callee.port).status == 200
        deadline = time.time() + 10
        while time.time() < deadline and not rows(path):
            time.sleep(0.2)
        assert [r[0] for r in rows(path)] == ["bob"]
    finally:
        phone.close()
        callee.close()
        a.cleanup()


def test_ul_flush_and_ul_sync_over_mi(tmp_path):
    path = tmp_path / "mi.db"
    url = f"sqlite://{path}"
    admin.create(url, ["usrloc"])
    phone, callee = Phone(), modkit.Peer()
    a = Server(tmp_path)
    try:
        sip, mi = start(a, url, "single-instance-sql-write-back", timer=60)
        assert phone.register(sip, "dan", callee.port).status == 200
        assert rows(path) == []                 # not before the flush
        assert mi_call(mi, "ul_flush") == "OK"
        assert [r[0] for r in rows(path)] == ["dan"]
        # a row deleted behind our back comes back with ul_sync
        con = sqlite3.connect(path)
        con.execute("DELETE FROM location")
        con.commit()
        con.close()
        assert mi_call(mi, "ul_sync", {"table_name": "location"}) == "OK"
        assert [r[0] for r in rows(path)] == ["dan"]
    finally:
        phone.close()
        callee.close()
        a.cleanup()


def test_missing_location_table_stops_the_start(tmp_path):
    url = f"sqlite://{tmp_path}/empty.db"
    admin.create(url, ["standard"])
    a = Server(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="location"):
            start(a, url, "single-instance-sql-write-through")
    finally:
        a.cleanup()


def test_two_instances_share_one_table_in_sql_only_mode(tmp_path, db_url):
    admin.create(db_url, ["usrloc"], create_database=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Server(tmp_path / "a"), Server(tmp_path / "b")
    phone, callee = Phone(), modkit.Peer()
    try:
        sip_a, mi_a = start(a, db_url, "sql-only")
        sip_b, mi_b = start(b, db_url, "sql-only")
        # registered through A ...
        assert phone.register(sip_a, "carol", callee.port).status == 200
        # ... reached through B
        phone.invite(sip_b, "carol", "call-via-b")
        got = callee.recv()
        assert got.callid == "call-via-b"
        assert got.ruri == f"sip:carol@127.0.0.1:{callee.port}"
        assert aors(mi_a) == aors(mi_b) == {
            "carol": [f"sip:carol@127.0.0.1:{callee.port}"]}
        # unregistered through B: A no longer finds her
        assert phone.register(sip_b, "carol", callee.port,
                              expires=0).status == 200
        phone.invite(sip_a, "carol", "call-via-a")
        r = phone.peer.recv()
        assert (r.status, r.callid) == (404, "call-via-a")
    finally:
        phone.close()
        callee.close()
        a.cleanup()
        b.cleanup()
