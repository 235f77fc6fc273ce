"""Upgrades: a database made by the previous schema version (OpenSIPS
3.1's subscriber, version 7) stops the start with an error naming
``opensipyctl db migrate``; the migration upgrades it in place, keeping
every row, and the server then starts and authenticates the old users."""
import hashlib
import os
import sqlite3
import subprocess
import sys

import pytest

from opensipy.db import admin

from digestclient import Phone
from server import REPO, free_port

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=1
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "{url}")

route {{
    if (!proxy_authorize("", "subscriber")) {{
        proxy_challenge("", "auth");
        exit;
    }}
    send_reply(200, "OK");
}}
"""

# OpenSIPS 3.1's subscriber table (version 7: ha1b, no SHA-2 HA1s)
SUBSCRIBER_V7 = """CREATE TABLE subscriber (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    username CHAR(64) DEFAULT '' NOT NULL,
    domain CHAR(64) DEFAULT '' NOT NULL,
    password CHAR(25) DEFAULT '' NOT NULL,
    email_address CHAR(64) DEFAULT '' NOT NULL,
    ha1 CHAR(64) DEFAULT '' NOT NULL,
    ha1b CHAR(64) DEFAULT '' NOT NULL,
    rpid CHAR(64) DEFAULT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain))"""


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def make_old_db(path):
    url = f"sqlite://{path}"
    admin.create(url, ["auth_db", "usrloc"])
    con = sqlite3.connect(path)
    con.execute("DROP TABLE subscriber")
    con.execute(SUBSCRIBER_V7)
    con.execute("UPDATE version SET table_version = 7 "
                "WHERE table_name = 'subscriber'")
    con.execute("INSERT INTO subscriber (username, domain, ha1, ha1b) "
                "VALUES ('alice', 'example.com', ?, ?)",
                (md5("alice:example.com:wonderland"),
                 md5("alice@example.com:example.com:wonderland")))
    con.commit()
    con.close()
    return url


def ctl_db(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "opensipy.ctl", "db",
                           *args], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def versions(path):
    con = sqlite3.connect(path)
    try:
        return dict(con.execute("SELECT table_name, table_version "
                                "FROM version"))
    finally:
        con.close()


def test_an_older_database_is_refused_then_migrated(server, tmp_path):
    path = tmp_path / "old.db"
    url = make_old_db(path)
    sip = free_port()
    with pytest.raises(RuntimeError) as ei:
        server.start(SCRIPT.format(sip=sip, url=url))
    err = str(ei.value)
    assert "table 'subscriber' has version 7" in err, err
    assert f"opensipyctl db migrate {url}" in err, err

    r = ctl_db("migrate", url)
    assert r.returncode == 0, r.stderr
    assert "upgraded table subscriber from version 7 to 8" in r.stdout
    assert versions(path)["subscriber"] == 8
    con = sqlite3.connect(path)
    row = con.execute("SELECT username, ha1, ha1b, ha1_sha256 FROM "
                      "subscriber").fetchall()
    con.close()
    assert row == [("alice", md5("alice:example.com:wonderland"),
                    md5("alice@example.com:example.com:wonderland"), "")]
    # again: nothing to do
    r = ctl_db("migrate", url)
    assert r.returncode == 0 and "current version" in r.stdout, r.stdout

    # the server starts and the old user authenticates (MD5 HA1 kept)
    server.start(SCRIPT.format(sip=sip, url=url))
    ph = Phone(sip, "alice", "example.com")
    try:
        _, ok = ph.auth_request("MESSAGE", "sip:bob@example.com",
                                "wonderland")
        assert ok.status == 200
        _, bad = ph.auth_request("MESSAGE", "sip:bob@example.com", "nope")
        assert bad.status == 407
    finally:
        ph.close()


def test_migrate_refuses_an_unknown_version_and_changes_nothing(tmp_path):
    path = tmp_path / "old.db"
    url = make_old_db(path)
    con = sqlite3.connect(path)
    con.execute("UPDATE version SET table_version = 1011 "
                "WHERE table_name = 'location'")
    con.commit()
    con.close()
    r = ctl_db("migrate", url)
    assert r.returncode == 1
    assert "table 'location' version 1011" in r.stderr, r.stderr
    # checked before anything changed: subscriber is still version 7
    assert versions(path)["subscriber"] == 7
    con = sqlite3.connect(path)
    cols = [c[1] for c in con.execute("PRAGMA table_info(subscriber)")]
    con.close()
    assert "ha1_sha256" not in cols
