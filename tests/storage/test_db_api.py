"""The DB API, the same suite on SQLite and on a real PostgreSQL: every
operation and value type, NULLs, unicode, large blobs, values holding SQL
syntax, the version check."""
import datetime
import os

import pytest

from opensipy import db
from opensipy.db import admin, schema

LOC_COLS = ["username", "domain", "contact", "expires", "q", "callid",
            "cseq", "last_modified", "flags", "user_agent", "kv_store"]


@pytest.fixture
def con(db_url):
    admin.create(db_url, ["usrloc", "dialog", "auth_db", "acc", "domain"],
                 create_database=False)
    dbf = db.db_bind_mod(db_url)
    c = dbf.init(db_url)
    yield c
    c.close()


def loc_row(user, contact="sip:u@1.2.3.4", expires=3600, **kw):
    row = dict(username=user, domain="example.com", contact=contact,
               expires=expires, q=0.5, callid="cid-" + user, cseq=7,
               last_modified=datetime.datetime(2026, 11, 29, 12, 30, 45),
               flags=3, user_agent="ua", kv_store=None)
    row.update(kw)
    return [row[c] for c in LOC_COLS]


def test_bind_picks_the_driver_by_scheme_and_reports_capabilities(con):
    assert con.dbf.name in ("db_sqlite", "db_postgres")
    for cap in (db.DB_CAP_QUERY, db.DB_CAP_RAW_QUERY, db.DB_CAP_INSERT,
                db.DB_CAP_DELETE, db.DB_CAP_UPDATE, db.DB_CAP_REPLACE,
                db.DB_CAP_INSERT_UPDATE, db.DB_CAP_LAST_INSERTED_ID):
        assert db.db_capability(con.dbf, cap)
    assert db.db_capability(con.dbf, db.DB_CAP_ASYNC_RAW_QUERY) == \
        (con.dbf.name == "db_postgres")


def test_unknown_scheme_and_bad_urls_are_clear_errors():
    with pytest.raises(db.DBUrlError, match="no DB driver for scheme 'nosql'"):
        db.db_bind_mod("nosql://h/db")
    with pytest.raises(db.DBUrlError, match="no database name"):
        db.db_bind_mod("postgres://u:secret@h:5432")
    with pytest.raises(db.DBUrlError, match="bad port") as e:
        db.parse_db_url("postgres://u:secret@h:99999/db")
    assert "secret" not in str(e.value)


def test_insert_query_every_type_and_read_back(con):
    con.use_table("location")
    con.insert(LOC_COLS, loc_row("alice"))
    assert con.last_inserted_id() >= 1
    first = con.last_inserted_id()
    con.insert(LOC_COLS, loc_row("bob"))
    assert con.last_inserted_id() == first + 1
    res = con.query(["username"], ["="], ["alice"], LOC_COLS)
    assert res.columns == LOC_COLS
    (row,) = res.rows
    d = dict(zip(LOC_COLS, row))
    assert d["username"] == "alice" and d["expires"] == 3600
    assert d["q"] == pytest.approx(0.5)
    assert d["last_modified"] == datetime.datetime(2026, 11, 29, 12, 30, 45)
    assert d["kv_store"] is None
    types = dict(zip(res.columns, res.types))
    assert types["expires"] == db.DB_INT
    assert types["q"] == db.DB_DOUBLE
    assert types["last_modified"] == db.DB_DATETIME
    assert types["username"] == db.DB_STRING


def test_defaults_of_the_schema_apply(con):
    con.use_table("location")
    con.insert(["username", "contact", "expires"], ["carol", "sip:c@h", 60])
    (row,) = con.query(["username"], None, ["carol"],
                       ["callid", "cseq", "q", "last_modified", "domain"]).rows
    assert row == ("Default-Call-ID", 13, 1.0,
                   datetime.datetime(1900, 1, 1, 0, 0, 1), None)


def test_operators_order_and_null_matching(con):
    con.use_table("location")
    for i, u in enumerate(["u1", "u2", "u3", "u4"]):
        con.insert(LOC_COLS, loc_row(u, expires=100 * (i + 1),
                                     kv_store=None if i % 2 else "kv"))
    r = con.query(["expires"], [">="], [200], ["username"], order="expires")
    assert [x[0] for x in r.rows] == ["u2", "u3", "u4"]
    r = con.query(["expires", "expires"], [">", "<"], [100, 400],
                  ["username"], order="username DESC")
    assert [x[0] for x in r.rows] == ["u3", "u2"]
    r = con.query(["kv_store"], ["="], [None], ["username"], order="username")
    assert [x[0] for x in r.rows] == ["u2", "u4"]
    r = con.query(["kv_store"], ["!="], [None], ["username"], order="username")
    assert [x[0] for x in r.rows] == ["u1", "u3"]
    r = con.query(["username"], ["!="], ["u1"], ["username"])
    assert len(r.rows) == 3
    assert len(con.query().rows) == 4


def test_update_and_delete_count_rows(con):
    con.use_table("location")
    for u in ("a", "b", "c"):
        con.insert(LOC_COLS, loc_row(u))
    assert con.update(["username"], ["="], ["b"], ["expires", "kv_store"],
                      [99, "x"]) == 1
    assert con.query(["username"], None, ["b"],
                     ["expires", "kv_store"]).rows == [(99, "x")]
    assert con.update(["expires"], ["<"], [1000], ["kv_store"], [None]) == 1
    assert con.query(["username"], None, ["b"], ["kv_store"]).rows == [(None,)]
    assert con.delete(["username"], ["="], ["a"]) == 1
    assert con.delete(["username"], ["="], ["nobody"]) == 0
    assert sorted(r[0] for r in con.query(cols=["username"]).rows) == \
        ["b", "c"]
    assert con.delete() == 2


def test_unicode_and_sql_syntax_are_stored_verbatim(con):
    nasty = ["Zoë 日本語 \u202e emoji 😀",
             "x'); DROP TABLE location; --",
             'quote " and \' and \\ backslash % percent ? qmark',
             "Robert'); DELETE FROM version WHERE ('1'='1",
             "line\nbreak\ttab"]
    con.use_table("location")
    for i, v in enumerate(nasty):
        con.insert(LOC_COLS, loc_row(v, contact=v, user_agent=v,
                                     callid=f"c{i}"))
    for v in nasty:
        r = con.query(["username", "contact"], ["=", "="], [v, v],
                      ["username", "contact", "user_agent"])
        assert r.rows == [(v, v, v)]
    assert len(con.query().rows) == len(nasty)
    con.use_table("version")
    assert len(con.query().rows) >= 5          # nothing was executed


def test_large_blobs_and_binary_bytes(con):
    blob = os.urandom(1 << 20) + b"\x00\xff'\"--"
    con.use_table("dialog")
    cols = ["dlg_id", "callid", "from_uri", "from_tag", "to_uri", "to_tag",
            "caller_cseq", "callee_cseq", "caller_ping_cseq",
            "callee_ping_cseq", "caller_sock", "callee_sock", "state",
            "start_time", "timeout", "vars"]
    big = 2 ** 40 + 5
    con.insert(cols, [big, "c", "sip:a@h", "ft", "sip:b@h", "tt", "1", "2",
                      1, 2, "udp:1.2.3.4:5060", "udp:1.2.3.4:5060", 4,
                      1700000000, 1700003600, blob])
    r = con.query(["dlg_id"], None, [big], ["dlg_id", "vars", "profiles"])
    assert r.rows[0][0] == big
    assert isinstance(r.rows[0][1], bytes) and r.rows[0][1] == blob
    assert r.rows[0][2] is None
    assert dict(zip(r.columns, r.types))["vars"] == db.DB_BLOB
    assert dict(zip(r.columns, r.types))["dlg_id"] in (db.DB_BIGINT,)


def test_typed_values_force_the_type(con):
    con.use_table("location")
    con.insert(["username", "contact", "expires", "last_modified"],
               ["t", "sip:t@h", db.DbVal(db.DB_INT, "42"),
                db.DbVal(db.DB_DATETIME, "2026-01-02 03:04:05")])
    (row,) = con.query(["username"], None, ["t"],
                       ["expires", "last_modified"]).rows
    assert row == (42, datetime.datetime(2026, 1, 2, 3, 4, 5))
    with pytest.raises(db.DBError, match="unknown DB value type"):
        db.DbVal("money", 1)


def test_replace_and_insert_update_use_the_unique_key(con):
    con.use_table("subscriber")
    cols = ["username", "domain", "password", "ha1"]
    con.insert(cols, ["alice", "d", "pw1", "h1"])
    con.insert_update(cols, ["alice", "d", "pw2", "h2"])
    con.insert_update(cols, ["bob", "d", "pw3", "h3"])
    r = con.query(cols=["username", "password", "ha1"], order="username")
    assert r.rows == [("alice", "pw2", "h2"), ("bob", "pw3", "h3")]
    con.replace(cols, ["alice", "d", "pw4", "h4"], unique=2)
    con.replace(cols, ["carol", "d", "pw5", "h5"], unique=2)
    r = con.query(cols=["username", "password"], order="username")
    assert r.rows == [("alice", "pw4"), ("bob", "pw3"), ("carol", "pw5")]
    # a key that is no constraint: update, else insert
    con.use_table("location")
    con.replace(["username", "contact", "expires"], ["z", "sip:z@1", 5],
                unique=1)
    con.replace(["username", "contact", "expires"], ["z", "sip:z@2", 6],
                unique=1)
    assert con.query(["username"], None, ["z"], ["contact", "expires"]).rows \
        == [("sip:z@2", 6)]


def test_raw_query_binds_its_values(con):
    con.use_table("location")
    con.insert(LOC_COLS, loc_row("r1"))
    con.insert(LOC_COLS, loc_row("r2", expires=10))
    r = con.raw_query("SELECT username, expires FROM location WHERE "
                      "expires > ? AND username LIKE 'r%' ORDER BY username",
                      (100,))
    assert r.rows == [("r1", 3600)]
    assert con.raw_query("UPDATE location SET expires = ? WHERE "
                         "username = ?", (1, "r2'; --")) is None
    r = con.raw_query("SELECT count(*) FROM location WHERE expires = ?", (1,))
    assert r.rows[0][0] == 0


def test_bad_names_and_shapes_are_refused_before_sql(con):
    con.use_table("location")
    with pytest.raises(db.DBError, match="bad column name"):
        con.query(["username; DROP TABLE x"], None, ["a"])
    with pytest.raises(db.DBError, match="bad table name"):
        con.use_table("location--")
    with pytest.raises(db.DBError, match="bad operator"):
        con.query(["username"], ["=1 OR 1"], ["a"])
    with pytest.raises(db.DBError, match="2 keys but 1 values"):
        con.query(["username", "domain"], None, ["a"])
    with pytest.raises(db.DBError):
        con.insert(["no_such_column"], [1])


def test_version_check_names_the_table(con):
    assert db.db_check_table_version(con.dbf, con, "location", 1013) == 0
    assert db.db_table_version(con.dbf, con, "dialog") == 11
    with pytest.raises(db.DBVersionError,
                       match=r"table 'location' has version 1013 .* needs "
                             r"version 1014"):
        db.db_check_table_version(con.dbf, con, "location", 1014)
    with pytest.raises(db.DBVersionError,
                       match=r"table 'address' is not in the 'version' table"):
        db.db_check_table_version(con.dbf, con, "address", 5)
    # the current table stays selected
    con.use_table("location")
    db.db_check_table_version(con.dbf, con, "location", 1013)
    assert con.table == "location"


def test_version_check_without_a_version_table(db_url):
    c = db.db_bind_mod(db_url).init(db_url)
    try:
        with pytest.raises(db.DBVersionError,
                           match="cannot read the version of table "
                                 "'location'.*'version' table is missing"):
            db.db_check_table_version(c.dbf, c, "location", 1013)
    finally:
        c.close()


def test_schema_matches_the_ddl_the_engine_created(con):
    for t in ("location", "subscriber", "acc", "missed_calls", "dialog",
              "domain"):
        con.use_table(t)
        r = con.query(cols=None)
        assert r.columns == schema.table(t).column_names


def test_a_connection_used_after_fork_is_replaced_not_shared(con):
    con.use_table("location")
    con.insert(LOC_COLS, loc_row("parent"))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            con.insert(LOC_COLS, loc_row("child"))
            code = 0 if len(con.query().rows) == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's connection still works
    assert sorted(r[0] for r in con.query(cols=["username"]).rows) == \
        ["child", "parent"]


def test_a_missing_extra_is_a_load_error_naming_it(monkeypatch):
    import importlib.util
    from opensipy import modloader
    from opensipy.core_cmds import core_exports
    from opensipy.sr_module import ModuleError
    real = importlib.util.find_spec
    hidden = {"psycopg": "postgres", "redis": "redis"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in hidden
                        else real(name, *a))
    for mod, extra in (("db_postgres", "postgres"),
                       ("cachedb_redis", "redis")):
        reg = modloader.Registry()
        reg.add(modloader.LoadedModule("core", core_exports))
        with pytest.raises(ModuleError,
                           match=rf"pip install 'opensipy\[{extra}\]'"):
            modloader.load_module(reg, mod, loc=("t.cfg", 3, 1))
    with pytest.raises(db.DBUrlError, match=r"opensipy\[postgres\]"):
        db.db_bind_mod("postgres://u@h/d")


def test_a_sqlite_database_made_the_opensips_way_is_used_as_it_is(tmp_path):
    """Declarations as OpenSIPS's sqlite scripts write them (sized FLOAT,
    TEXT and BLOB types, BIGINT(10), dates as text), rows written by
    another program: read and written through the API unchanged."""
    import sqlite3
    path = tmp_path / "opensips.db"
    raw = sqlite3.connect(str(path))
    raw.executescript("""
        CREATE TABLE version (table_name CHAR(32) NOT NULL,
            table_version INTEGER DEFAULT 0 NOT NULL,
            CONSTRAINT version_t_name_idx UNIQUE (table_name));
        INSERT INTO version VALUES ('location', '1013'), ('dialog', '11');
        CREATE TABLE location (
            contact_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
            username CHAR(64) DEFAULT '' NOT NULL,
            domain CHAR(64) DEFAULT NULL,
            contact TEXT NOT NULL,
            expires INTEGER NOT NULL,
            q FLOAT(10,2) DEFAULT 1.0 NOT NULL,
            last_modified DATETIME DEFAULT '1900-01-01 00:00:01' NOT NULL,
            kv_store TEXT(512) DEFAULT NULL);
        INSERT INTO location (username, contact, expires, q, last_modified)
            VALUES ('old', 'sip:old@h', 1893456000, 0.7,
                    '2025-12-31 23:59:58');
        CREATE TABLE dialog (dlg_id BIGINT(10) PRIMARY KEY NOT NULL,
            vars BLOB(4096) DEFAULT NULL);
        INSERT INTO dialog VALUES (1, x'00ff10');
    """)
    raw.commit()
    url = f"sqlite://{path}"
    con = db.db_bind_mod(url).init(url)
    db.db_check_table_version(con.dbf, con, "location", 1013)
    con.use_table("location")
    (row,) = con.query(cols=["username", "q", "last_modified", "kv_store"]).rows
    assert row == ("old", 0.7,
                   datetime.datetime(2025, 12, 31, 23, 59, 58), None)
    con.insert(["username", "contact", "expires", "last_modified"],
               ["new", "sip:new@h", 1, datetime.datetime(2026, 2, 3, 4, 5, 6)])
    con.use_table("dialog")
    assert con.query(cols=["vars"]).rows == [(b"\x00\xff\x10",)]
    con.close()
    # what we wrote is what OpenSIPS writes: dates as text
    assert raw.execute("SELECT last_modified, typeof(last_modified) FROM "
                       "location WHERE username = 'new'").fetchone() == \
        ("2026-02-03 04:05:06", "text")
    raw.close()
