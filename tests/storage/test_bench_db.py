"""The DB API's own cost: a primary-key query and an insert through the API
on each engine, next to the same statement on the raw driver (sqlite3,
psycopg).  Run with ``--benchmark-enable``; never a timed assertion."""
import itertools
import sqlite3

import psycopg
import pytest

from opensipy import db
from opensipy.db import admin

COLS = ["username", "domain", "contact", "expires", "callid"]


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path}/bench.db"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.url(cluster.new_database())
    admin.create(url, ["usrloc"], create_database=False)
    con = db.db_bind_mod(url).init(url)
    con.use_table("location")
    for i in range(1000):
        con.insert(COLS, [f"user{i}", "example.com", f"sip:user{i}@h",
                          3600, f"cid{i}"])
    u = db.parse_db_url(url)
    if request.param == "sqlite":
        raw = sqlite3.connect(u.database, isolation_level=None)
        raw.execute("PRAGMA journal_mode = WAL")
        ph = "?"
    else:
        raw = psycopg.connect(host=u.host, port=u.port, user=u.user,
                              dbname=u.database, autocommit=True)
        ph = "%s"
    yield request.param, con, raw, ph
    con.close()
    raw.close()


def test_bench_pk_query_api(benchmark, engine):
    name, con, raw, ph = engine
    ids = itertools.cycle(range(1, 1001))
    res = benchmark(lambda: con.query(["contact_id"], ["="], [next(ids)],
                                      ["username", "contact", "expires"]))
    assert len(res.rows) == 1


def test_bench_pk_query_raw(benchmark, engine):
    name, con, raw, ph = engine
    ids = itertools.cycle(range(1, 1001))
    sql = (f'SELECT "username", "contact", "expires" FROM "location" '
           f'WHERE "contact_id" = {ph}')

    def q():
        cur = raw.execute(sql, (next(ids),))
        rows = cur.fetchall()
        cur.close()
        return rows
    assert len(benchmark(q)) == 1


def test_bench_insert_api(benchmark, engine):
    name, con, raw, ph = engine
    n = itertools.count()
    benchmark(lambda: con.insert(COLS, [f"b{next(n)}", "example.com",
                                        "sip:b@h", 60, "c"]))


def test_bench_insert_raw(benchmark, engine):
    name, con, raw, ph = engine
    n = itertools.count()
    sql = (f'INSERT INTO "location" ("username", "domain", "contact", '
           f'"expires", "callid") VALUES ({ph}, {ph}, {ph}, {ph}, {ph})')

    def ins():
        raw.execute(sql, (f"r{next(n)}", "example.com", "sip:b@h", 60,
                          "c")).close()
    benchmark(ins)
