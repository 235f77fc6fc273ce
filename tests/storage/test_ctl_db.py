"""``opensipyctl db`` as an operator runs it, on SQLite and PostgreSQL:
create (PostgreSQL: role and database, as opensips-cli does), tables,
migrate between engines, drop; the URL from the command line or the
configuration."""
import datetime
import os
import subprocess
import sys

import psycopg

from opensipy import db
from opensipy.db import schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def ctl(*args, cfg=None):
    cmd = [sys.executable, "-m", "opensipy.ctl"]
    if cfg:
        cmd += ["-f", str(cfg)]
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(cmd + list(args), capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


def test_sqlite_create_tables_drop(tmp_path):
    url = f"sqlite://{tmp_path}/new/opensipy.db"
    r = ctl("db", "create", url)
    assert r.returncode == 0, r.stderr
    assert "created table location (version 1013)" in r.stdout
    r = ctl("db", "tables", url)
    assert r.returncode == 0, r.stderr
    got = dict(line.split() for line in r.stdout.splitlines())
    assert got == {t.name: str(t.version) for t in schema.all_tables()}
    r = ctl("db", "create", url)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = ctl("db", "drop", url)
    assert r.returncode == 0 and not (tmp_path / "new" / "opensipy.db").exists()
    r = ctl("db", "tables", url)
    assert r.returncode == 1 and "no 'version' table" in r.stderr


def test_url_and_groups_from_the_configuration(tmp_path):
    cfg = tmp_path / "ctl.cfg"
    url = f"sqlite://{tmp_path}/cfg.db"
    cfg.write_text(f"[default]\ndatabase_url = {url}\n"
                   f"database_modules = usrloc domain\n")
    r = ctl("db", "create", cfg=cfg)
    assert r.returncode == 0, r.stderr
    r = ctl("db", "tables", cfg=cfg)
    assert r.stdout.split() == ["version", "1", "location", "1013",
                                "domain", "4"]
    r = ctl("db", "create", f"sqlite://{tmp_path}/x.db", "nosuchgroup")
    assert r.returncode == 2 and "unknown table group 'nosuchgroup'" in \
        r.stderr
    empty = tmp_path / "empty.cfg"
    empty.write_text("[default]\n")
    r = ctl("db", "tables", cfg=empty)
    assert r.returncode == 2 and "no database URL" in r.stderr


def test_postgres_role_database_tables_and_drop(pg_cluster, tmp_path):
    cfg = tmp_path / "ctl.cfg"
    cfg.write_text(f"[default]\ndatabase_admin_url = "
                   f"{pg_cluster.admin_url}\n")
    url = pg_cluster.url("osy_ctl", user="osy_user", password="s3cr'et")
    r = ctl("db", "create", url, cfg=cfg)
    assert r.returncode == 0, r.stderr
    assert "created role osy_user" in r.stdout
    assert "created database osy_ctl" in r.stdout
    assert "s3cr'et" not in r.stdout
    with psycopg.connect(host="127.0.0.1", port=pg_cluster.port,
                         user="osy_user", dbname="osy_ctl") as c:
        owner = c.execute("SELECT tableowner FROM pg_tables WHERE "
                          "tablename = 'location'").fetchone()[0]
        assert owner == "osy_user"
        dbowner = c.execute("SELECT pg_get_userbyid(datdba) FROM "
                            "pg_database WHERE datname = 'osy_ctl'"
                            ).fetchone()[0]
        assert dbowner == "osy_user"
    r = ctl("db", "tables", url)
    got = dict(line.split() for line in r.stdout.splitlines())
    assert got == {t.name: str(t.version) for t in schema.all_tables()}
    r = ctl("db", "create", url, cfg=cfg)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = ctl("db", "drop", url, cfg=cfg)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(pg_cluster.admin_url.replace("postgres://",
                                                      "postgresql://")) as c:
        assert c.execute("SELECT count(*) FROM pg_database WHERE datname = "
                         "'osy_ctl'").fetchone()[0] == 0


def _fill(url):
    con = db.db_bind_mod(url).init(url)
    con.use_table("location")
    for i in range(5):
        con.insert(["username", "domain", "contact", "expires",
                    "last_modified"],
                   [f"user{i} ü", "d", f"sip:{i}@h'", 3600 + i,
                    datetime.datetime(2026, 1, 1, 0, 0, i)])
    con.use_table("dialog")
    con.insert(["dlg_id", "callid", "from_uri", "from_tag", "to_uri",
                "to_tag", "caller_cseq", "callee_cseq", "caller_ping_cseq",
                "callee_ping_cseq", "caller_sock", "callee_sock", "state",
                "start_time", "timeout", "vars"],
               [7, "c", "f", "ft", "t", "tt", "1", "2", 1, 2, "s", "s", 4,
                1, 2, b"\x00\x01binary"])
    con.close()


def _dump(url):
    con = db.db_bind_mod(url).init(url)
    out = {}
    for t in ("location", "dialog"):
        con.use_table(t)
        out[t] = con.query(order=schema.table(t).columns[0].name).rows
    con.close()
    return out


def test_migrate_sqlite_to_postgres_and_back(pg_cluster, tmp_path):
    src = f"sqlite://{tmp_path}/old.db"
    assert ctl("db", "create", src, "usrloc", "dialog").returncode == 0
    _fill(src)
    dst = pg_cluster.url("osy_migrated")
    cfg = tmp_path / "ctl.cfg"
    cfg.write_text(f"[default]\ndatabase_admin_url = "
                   f"{pg_cluster.admin_url}\n")
    r = ctl("db", "migrate", src, dst, cfg=cfg)
    assert r.returncode == 0, r.stderr
    assert "copied 5 rows of location" in r.stdout
    assert _dump(dst) == _dump(src)
    # the sequence continues after the copied ids
    con = db.db_bind_mod(dst).init(dst)
    con.use_table("location")
    con.insert(["username", "contact", "expires"], ["new", "c", 1])
    assert con.last_inserted_id() == 6
    con.close()
    back = f"sqlite://{tmp_path}/back.db"
    r = ctl("db", "migrate", dst, back)
    assert r.returncode == 0, r.stderr
    d = _dump(back)
    assert d["dialog"] == _dump(src)["dialog"]
    assert len(d["location"]) == 6


def test_migrate_upgrades_an_opensips_3_table_and_refuses_unknown_ones(
        tmp_path):
    import sqlite3
    old = tmp_path / "os3.db"
    raw = sqlite3.connect(str(old))
    # an OpenSIPS 3.x domain table (version 3: no accept_subdomain yet)
    raw.executescript("""
        CREATE TABLE version (table_name CHAR(32) NOT NULL,
            table_version INTEGER DEFAULT 0 NOT NULL);
        INSERT INTO version VALUES ('domain', 3);
        CREATE TABLE domain (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
            domain CHAR(64) DEFAULT '' NOT NULL,
            attrs CHAR(255) DEFAULT NULL,
            last_modified DATETIME DEFAULT '1900-01-01 00:00:01' NOT NULL);
        INSERT INTO domain (domain, attrs) VALUES ('example.com', 'a=1');
    """)
    raw.commit()
    new = f"sqlite://{tmp_path}/new.db"
    r = ctl("db", "migrate", f"sqlite://{old}", new)
    assert r.returncode == 0, r.stderr
    assert "copied 1 rows of domain (version 3 -> 4)" in r.stdout
    con = db.db_bind_mod(new).init(new)
    db.db_check_table_version(con.dbf, con, "domain", 4)
    con.use_table("domain")
    assert con.query(cols=["domain", "attrs", "accept_subdomain"]).rows == \
        [("example.com", "a=1", 0)]
    con.close()
    raw.execute("UPDATE version SET table_version = 2")
    raw.commit()
    raw.close()
    r = ctl("db", "migrate", f"sqlite://{old}", f"sqlite://{tmp_path}/n2.db")
    assert r.returncode == 1
    assert "table 'domain' version 2 is not one opensipy knows" in r.stderr
