"""Two real opensipy servers sharing one database (PostgreSQL, and a
SQLite file) see each other's writes: cachedb_sql over the DB API, driven
over MI and by the script.  A database without the module's table stops
the start with an error naming the table."""
import pytest

from opensipy.db import admin

from server import Server, free_port, mi_call
from test_cachedb import mi_raw, options, SCRIPT


def engine(db_url):
    driver = "db_postgres" if db_url.startswith("postgres") else "db_sqlite"
    return (f'loadmodule "{driver}.so"\n'
            f'loadmodule "cachedb_sql.so"\n'
            f'modparam("cachedb_sql", "cachedb_url", "{db_url}")')


def start(server, db_url):
    sip, mi = free_port(), free_port()
    sid = db_url.split(":", 1)[0]
    server.start(SCRIPT.format(workers=2, sip=sip, mi=mi,
                               engine=engine(db_url), sid=sid))
    return sip, mi, sid


def test_two_servers_see_each_others_writes(tmp_path, db_url):
    admin.create(db_url, ["cachedb_sql"], create_database=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Server(tmp_path / "a"), Server(tmp_path / "b")
    try:
        sip_a, mi_a, sid = start(a, db_url)
        sip_b, mi_b, _ = start(b, db_url)
        assert options(sip_a)[0] == (404, "no greeting rc=-2 n=1")
        assert mi_call(mi_a, "cache_store", [sid, "greeting", "from-a"]) \
            == "OK"
        assert mi_call(mi_b, "cache_fetch", [sid, "greeting"]) == \
            {"key": "greeting", "value": "from-a"}
        assert options(sip_b, 3, "b") == [(200, f"got from-a n={n}")
                                          for n in (2, 3, 4)]
        assert options(sip_a)[0] == (200, "got from-a n=5")
        assert mi_call(mi_b, "cache_store", [sid, "greeting",
                                             "x'); DROP TABLE cachedb; --"])
        assert mi_call(mi_a, "cache_fetch", [sid, "greeting"])["value"] == \
            "x'); DROP TABLE cachedb; --"
        assert mi_call(mi_a, "cache_remove", [sid, "greeting"]) == "OK"
        assert mi_raw(mi_b, "cache_fetch", [sid, "greeting"])["error"] == \
            {"code": 400, "message": "Value not found"}
    finally:
        a.cleanup()
        b.cleanup()


def test_missing_table_stops_the_start_naming_it(server, db_url):
    admin.create(db_url, ["usrloc"], create_database=False)
    with pytest.raises(RuntimeError, match="table 'cachedb' is not in the "
                                           "'version' table"):
        start(server, db_url)
