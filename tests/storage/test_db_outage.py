"""A database that goes away: calls fail within the driver's timeout with
a clear error, the failure is logged once per interval, and the same
connection object works again as soon as the database is back (no restart
of anything on our side)."""
import datetime
import sqlite3
import time

import pytest

from opensipy import db, log
from opensipy.db import admin
from engines import PgCluster

import importlib

db_sqlite = importlib.import_module("opensipy_modules.db_sqlite")
db_postgres = importlib.import_module("opensipy_modules.db_postgres")


@pytest.fixture
def own_cluster():
    c = PgCluster()
    try:
        c.init().start()
        yield c
    finally:
        c.destroy()


@pytest.fixture
def errors(monkeypatch):
    seen = []
    real = log.LM_ERR
    monkeypatch.setattr(log, "LM_ERR", lambda t: (seen.append(t), real(t)))
    return seen


def test_postgres_stopped_mid_run_then_started(own_cluster, errors):
    url = own_cluster.url(own_cluster.new_database())
    admin.create(url, ["usrloc"], create_database=False)
    con = db.db_bind_mod(url).init(url)
    con.use_table("location")
    con.insert(["username", "contact", "expires"], ["before", "sip:b@h", 1])
    assert db_postgres.timeout == 2.0

    own_cluster.stop()
    failures = 0
    for i in range(6):
        t0 = time.monotonic()
        with pytest.raises(db.DBConnectionError) as e:
            con.query(["username"], None, ["before"])
        took = time.monotonic() - t0
        assert took < db_postgres.timeout + 1.5, took
        assert "postgres" in str(e.value)
        failures += 1
        time.sleep(0.2)
    logged = [t for t in errors if "db_postgres" in t]
    assert 1 <= len(logged) < failures      # once per interval, not per call

    own_cluster.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            con.insert(["username", "contact", "expires"],
                       ["after", "sip:a@h", 2])
            break
        except db.DBConnectionError:
            assert time.monotonic() < deadline, "no recovery"
            time.sleep(0.2)
    rows = sorted(r[0] for r in con.query(cols=["username"]).rows)
    assert rows == ["after", "before"]
    con.close()


def test_postgres_unreachable_at_start_fails_within_the_timeout(errors):
    from server import free_port
    import socket
    port = free_port(socket.SOCK_STREAM)
    con = db.db_bind_mod(f"postgres://u@127.0.0.1:{port}/x").init(
        f"postgres://u@127.0.0.1:{port}/x")
    t0 = time.monotonic()
    with pytest.raises(db.DBConnectionError, match="cannot connect"):
        con.use_table("location")
        con.query()
    assert time.monotonic() - t0 < db_postgres.timeout + 1.5
    # the next call within the reconnect interval fails at once
    with pytest.raises(db.DBConnectionError):
        con.query()


def test_sqlite_write_lock_held_elsewhere_fails_after_the_busy_timeout(
        tmp_path, monkeypatch):
    url = f"sqlite://{tmp_path}/busy.db"
    admin.create(url, ["usrloc"])
    monkeypatch.setattr(db_sqlite, "timeout", 0.5)
    con = db.db_bind_mod(url).init(url)
    con.use_table("location")
    holder = sqlite3.connect(str(tmp_path / "busy.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        with pytest.raises(db.DBError, match="locked"):
            con.insert(["username", "contact", "expires"], ["x", "c", 1])
        took = time.monotonic() - t0
        assert 0.4 < took < 2.0, took
        # readers are not blocked by the writer (WAL)
        assert con.query().rows == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    con.insert(["username", "contact", "expires"], ["x", "c", 1])
    assert len(con.query().rows) == 1
    mode = con.raw_query("PRAGMA journal_mode").rows[0][0]
    assert mode == "wal"


def test_sqlite_creates_the_file_and_its_folder(tmp_path):
    path = tmp_path / "a" / "b" / "new.db"
    url = f"sqlite://{path}"
    admin.create(url, ["domain"])
    assert path.is_file()
    assert admin.tables(url) == {"version": 1, "domain": 4}


def test_timeout_parameter_is_checked():
    with pytest.raises(ValueError, match="timeout"):
        db_postgres.set_timeout("soon")
    with pytest.raises(ValueError, match="timeout"):
        db_sqlite.set_timeout(0)
    old = db_postgres.timeout
    try:
        db_postgres.set_timeout("0.5")
        assert db.db_bind_mod("postgres://u@h/d").timeout == 0.5
    finally:
        db_postgres.timeout = old


def test_postgres_statement_longer_than_the_timeout_is_cancelled(pg_url,
                                                                 monkeypatch):
    monkeypatch.setattr(db_postgres, "timeout", 0.5)
    con = db.db_bind_mod(pg_url).init(pg_url)
    t0 = time.monotonic()
    with pytest.raises(db.DBError, match="statement timeout"):
        con.raw_query("SELECT pg_sleep(10)")
    assert time.monotonic() - t0 < 3
    # the connection is still good
    assert con.raw_query("SELECT ? + 1", (41,)).rows == [(42,)]
    con.close()


def test_async_raw_query_on_postgres(pg_url):
    import select
    con = db.db_bind_mod(pg_url).init(pg_url)
    assert db.db_capability(con.dbf, db.DB_CAP_ASYNC_RAW_QUERY)
    q = con.async_raw_query(
        "SELECT a, b, c, d FROM (SELECT ?::text AS a, ? + 1 AS b, "
        "?::bytea AS c, ?::timestamp AS d, pg_sleep(0.3)) s",
        ("x'y ü", 41, b"\x00\xff", "2026-03-04 05:06:07"))
    assert q.resume() is None and not q.done        # still running
    # the connection itself serves other calls meanwhile
    assert con.raw_query("SELECT ?", ("other",)).rows == [("other",)]
    res = None
    deadline = time.monotonic() + 5
    while res is None:
        assert time.monotonic() < deadline
        select.select([q.fd], [], [], 1)
        res = q.resume()
    assert q.done
    assert res.rows == [("x'y ü", 42, b"\x00\xff",
                         datetime.datetime(2026, 3, 4, 5, 6, 7))]
    assert res.types == [db.DB_STRING, db.DB_BIGINT, db.DB_BLOB,
                         db.DB_DATETIME]
    # a failing query raises when resumed; the pooled connection is reused
    q2 = con.async_raw_query("SELECT * FROM no_such_table")
    with pytest.raises(db.DBError, match="no_such_table"):
        while q2.resume() is None:
            select.select([q2.fd], [], [], 1)
    q3 = con.async_raw_query("SELECT 1")
    while (r := q3.resume()) is None:
        select.select([q3.fd], [], [], 1)
    assert r.rows == [(1,)]
    con.close()


def test_sqlite_has_no_async_queries(tmp_path):
    url = f"sqlite://{tmp_path}/a.db"
    con = db.db_bind_mod(url).init(url)
    assert not db.db_capability(con.dbf, db.DB_CAP_ASYNC_RAW_QUERY)
    with pytest.raises(db.DBError, match="cannot run queries "
                                         "asynchronously"):
        con.async_raw_query("SELECT 1")
