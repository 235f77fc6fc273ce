"""auth_db's other functions in the real server on SQLite:
db_does_uri_exist, db_get_auth_id and db_is_from/to_authorized over the
uri table, the subscriber-row cache (credentials_cache_ttl), a database
that disappears (-5, no reply from auth_db), a bad table at start-up; and
opensipyctl user on SQLite and PostgreSQL."""
import os
import sqlite3
import subprocess
import sys
import uuid

import pytest

from opensipy.db import admin

from digestclient import Phone
from server import REPO, free_port, run_opensipy

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
modparam("auth_db", "credentials_cache_ttl", {ttl})

route {{
    if (is_method("OPTIONS")) {{
        if (db_does_uri_exist("$ru", "subscriber"))
            append_to_reply("X-Exists: yes\r\n");
        if (db_get_auth_id("uri", "$fu", $avp(aid), $avp(arealm)))
            append_to_reply("X-Auth-Id: $avp(aid)@$avp(arealm)\r\n");
        send_reply(200, "OK");
        exit;
    }}
    proxy_authorize("", "subscriber");
    $var(rc) = $rc;
    if ($var(rc) < 0) {{
        append_to_reply("X-RC: $var(rc)\r\n");
        proxy_challenge("", "auth");
        exit;
    }}
    if (db_is_from_authorized("uri"))
        append_to_reply("X-From-Ok: yes\r\n");
    if (db_is_to_authorized("uri"))
        append_to_reply("X-To-Ok: yes\r\n");
    send_reply(200, "OK");
}}
"""


def ctl(*args, url=None, cfg=None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "opensipy.ctl"]
    if cfg:
        cmd += ["-f", str(cfg)]
    cmd.append("user")
    if url:
        cmd += ["-u", url]
    return subprocess.run(cmd + list(args), capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "a.db"
    url = f"sqlite://{path}"
    admin.create(url, ["auth_db"])
    for aor, pw in (("alice@example.com", "wonderland"),
                    ("carol@example.com", "pw")):
        assert ctl("add", aor, pw, url=url).returncode == 0
    con = sqlite3.connect(path)
    con.execute("INSERT INTO uri (username, domain, uri_user) VALUES "
                "('alice', 'example.com', 'sales')")
    con.commit()
    con.close()
    return path, url


def test_uri_checks(server, db):
    path, url = db
    sip = free_port()
    server.start(SCRIPT.format(sip=sip, url=url, ttl=0))
    sales = Phone(sip, "sales", "example.com")
    try:
        r = sales.request("OPTIONS", "sip:carol@example.com")
        assert r.hdr("X-Exists") == "yes"
        assert r.hdr("X-Auth-Id") == "alice@example.com"
        r = sales.request("OPTIONS", "sip:nobody@example.com")
        assert r.hdr("X-Exists") is None
        # From sales, authenticated as alice: the uri table allows it
        _, ok = sales.auth_request("MESSAGE", "sip:carol@example.com",
                                   "wonderland", username="alice")
        assert ok.status == 200
        assert ok.hdr("X-From-Ok") == "yes" and ok.hdr("X-To-Ok") is None
        # To sales (a MESSAGE from carol to the sales alias): carol is not
        # allowed to use it
        carol = Phone(sip, "carol", "example.com")
        try:
            _, ok = carol.auth_request("MESSAGE", "sip:sales@example.com",
                                       "pw", to_user="sales")
            assert ok.status == 200
            assert ok.hdr("X-From-Ok") is None and ok.hdr("X-To-Ok") is None
        finally:
            carol.close()
    finally:
        sales.close()


def test_cached_row_outlives_a_password_change_until_its_ttl(server, db):
    path, url = db
    sip = free_port()
    server.start(SCRIPT.format(sip=sip, url=url, ttl=600))
    ph = Phone(sip, "alice", "example.com")
    try:
        _, ok = ph.auth_request("MESSAGE", "sip:carol@example.com",
                                "wonderland")
        assert ok.status == 200
        assert ctl("passwd", "alice@example.com", "changed",
                   url=url).returncode == 0
        # the worker answers from its cached row: the old password still
        # works, the new one not yet
        _, ok = ph.auth_request("MESSAGE", "sip:carol@example.com",
                                "wonderland")
        assert ok.status == 200
        _, bad = ph.auth_request("MESSAGE", "sip:carol@example.com",
                                 "changed")
        assert bad.status == 407 and bad.hdr("X-RC") == "-2"
    finally:
        ph.close()


def test_database_gone_gives_minus_five(server, db):
    path, url = db
    sip = free_port()
    server.start(SCRIPT.format(sip=sip, url=url, ttl=0))
    ph = Phone(sip, "alice", "example.com")
    try:
        con = sqlite3.connect(path)
        con.execute("DROP TABLE subscriber")
        con.commit()
        con.close()
        _, r = ph.auth_request("MESSAGE", "sip:carol@example.com",
                               "wonderland")
        assert r.status == 407 and r.hdr("X-RC") == "-5"
    finally:
        ph.close()


def test_missing_table_is_a_start_up_error(tmp_path):
    url = f"sqlite://{tmp_path}/empty.db"
    admin.create(url, ["standard"])
    cfg = tmp_path / "s.cfg"
    cfg.write_text(SCRIPT.format(sip=free_port(), url=url, ttl=0))
    r = run_opensipy(["-F", "-E", "-f", str(cfg)], timeout=30)
    assert r.returncode != 0
    assert "subscriber" in r.stderr


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_opensipyctl_user_add_passwd_list_rm(tmp_path, request, engine):
    if engine == "sqlite":
        url = f"sqlite://{tmp_path}/u.db"
    else:
        c = request.getfixturevalue("pg_cluster")
        url = c.url("ctl_" + uuid.uuid4().hex[:10])
    admin.create(url, ["auth_db"])
    cfg = tmp_path / "ctl.cfg"
    cfg.write_text(f"[default]\ndatabase_url = {url}\n"
                   f"plain_text_passwords = true\n")
    r = ctl("add", "alice@example.com", "wonderland", cfg=cfg)
    assert r.returncode == 0, r.stderr
    assert ctl("add", "bob@other.org", "builder", cfg=cfg).returncode == 0
    r = ctl("add", "alice@example.com", "again", cfg=cfg)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = ctl("list", cfg=cfg)
    assert r.stdout.split() == ["alice@example.com", "bob@other.org"]
    assert ctl("list", "other.org", cfg=cfg).stdout.split() == \
        ["bob@other.org"]
    from opensipy.db import db_bind_mod
    con = db_bind_mod(url).init(url)
    try:
        con.use_table("subscriber")
        row = con.query(["username"], ["="], ["alice"]).dicts()[0]
        import hashlib
        t = b"alice:example.com:wonderland"
        assert row["ha1"] == hashlib.md5(t).hexdigest()
        assert row["ha1_sha256"] == hashlib.sha256(t).hexdigest()
        assert row["ha1_sha512t256"] == \
            hashlib.new("sha512_256", t).hexdigest()
        assert row["password"] == "wonderland"
        assert ctl("passwd", "alice@example.com", "n3w",
                   cfg=cfg).returncode == 0
        row = con.query(["username"], ["="], ["alice"]).dicts()[0]
        assert row["ha1"] == hashlib.md5(
            b"alice:example.com:n3w").hexdigest()
        assert row["password"] == "n3w"
    finally:
        con.close()
    assert ctl("rm", "alice@example.com", cfg=cfg).returncode == 0
    r = ctl("rm", "alice@example.com", cfg=cfg)
    assert r.returncode == 1 and "no user" in r.stderr
    assert ctl("list", cfg=cfg).stdout.split() == ["bob@other.org"]
    r = ctl("add", "not-an-aor", "x", cfg=cfg)
    assert r.returncode == 2 and "USER@DOMAIN" in r.stderr
    r = ctl("frob", cfg=cfg)
    assert r.returncode == 2
