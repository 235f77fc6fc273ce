"""cachedb_sql: the cachedb engine over the DB API (OpenSIPS's cachedb_sql):
keys live in a table of an SQL database, so several opensipy instances
sharing one database (PostgreSQL) share the cache.

``cachedb_url`` is a DB URL, optionally with a group after the scheme
(``postgres://u:p@host/db``, ``postgres:g1://...``, ``sqlite:///f.db``);
the storage id in the script is the scheme (and group): ``"postgres"``.
The table (default ``cachedb``, version 2, created by ``opensipyctl db
create``) holds ``keyname``, ``value``, ``counter`` and ``expires`` (a
UNIX time, 0 for never); expired rows are invisible at once and deleted
every ``cache_clean_period`` seconds.  The driver module (``db_postgres``,
``db_sqlite``) must be loaded; its ``timeout`` bounds every call.
"""
from __future__ import annotations

import time

from opensipy import cachedb, db, log, timer
from opensipy.sr_module import (INT_PARAM, STR_PARAM, USE_FUNC_PARAM,
                                ModuleExports, ParamExport)

MOD = "cachedb_sql"
TABLE_VERSION = 2
urls = []
db_table = "cachedb"
key_column = "keyname"
value_column = "value"
counter_column = "counter"
expires_column = "expires"
cache_clean_period = 60


def add_url(value: str) -> int:
    u = cachedb.parse_cachedb_url(value)
    db.parse_db_url(_db_url(u))
    urls.append(value)
    return 0


def _db_url(u) -> str:
    return f"{u.scheme}://{u.rest}"


def _names():
    return [db.quote(n) for n in (db_table, key_column, value_column,
                                  counter_column, expires_column)]


class SqlCon:
    def __init__(self, u):
        url = _db_url(u)
        try:
            self.con = db.db_bind_mod(url, MOD).init(url)
        except db.DBError as e:
            raise cachedb.CacheDBError(str(e)) from None
        t, k, v, c, x = _names()
        self.sql_fetch = (f"SELECT {v}, {c} FROM {t} WHERE {k} = ? AND "
                          f"({x} = 0 OR {x} > ?)")
        self.sql_store = (f"INSERT INTO {t} ({k}, {v}, {c}, {x}) VALUES "
                          f"(?, ?, 0, ?) ON CONFLICT ({k}) DO UPDATE SET "
                          f"{v} = excluded.{v}, {x} = excluded.{x}")
        self.sql_remove = f"DELETE FROM {t} WHERE {k} = ?"
        # a counter that expired starts again from 0
        self.sql_add = (f"INSERT INTO {t} ({k}, {v}, {c}, {x}) VALUES "
                        f"(?, '', ?, ?) ON CONFLICT ({k}) DO UPDATE SET "
                        f"{c} = CASE WHEN {t}.{x} <> 0 AND {t}.{x} <= ? "
                        f"THEN 0 ELSE {t}.{c} END + excluded.{c}, "
                        f"{x} = CASE WHEN excluded.{x} <> 0 THEN excluded.{x}"
                        f" ELSE {t}.{x} END RETURNING {c}")

    def _q(self, sql, params):
        try:
            return self.con.raw_query(sql, params)
        except db.DBConnectionError as e:
            raise cachedb.CacheDBConnectionError(str(e)) from None
        except db.DBError as e:
            raise cachedb.CacheDBError(str(e)) from None

    @staticmethod
    def _exp(expires):
        return int(time.time()) + expires if expires > 0 else 0

    def store(self, key, value, expires):
        self._q(self.sql_store, (key, value, self._exp(expires)))

    def fetch(self, key):
        r = self._q(self.sql_fetch, (key, int(time.time())))
        return r.rows[0][0] if r.rows else None

    def remove(self, key):
        self._q(self.sql_remove, (key,))

    def add(self, key, n, expires):
        r = self._q(self.sql_add, (key, n, self._exp(expires),
                                   int(time.time())))
        return int(r.rows[0][0])

    def sub(self, key, n, expires):
        return self.add(key, -n, expires)

    def get_counter(self, key):
        r = self._q(self.sql_fetch, (key, int(time.time())))
        return int(r.rows[0][1]) if r.rows else None

    def raw_query(self, text):
        r = self._q(text, ())
        if r is None:
            return None
        return [v for row in r.rows for v in row]

    def close(self):
        self.con.close()


def clean_timer(ticks, param):
    t, _, _, _, x = _names()
    for url in urls:
        sid = cachedb.parse_cachedb_url(url).storage_id
        try:
            c = cachedb.get_engine(sid).con()
            c._q(f"DELETE FROM {t} WHERE {x} <> 0 AND {x} <= ?",
                 (int(time.time()),))
        except cachedb.CacheDBError as e:
            log.LM_DBG(f"cachedb_sql: cleaning {sid}: {e}")


def mod_init() -> int:
    if not urls:
        raise ValueError("no cachedb_url given")
    for name in (db_table, key_column, value_column, counter_column,
                 expires_column):
        db.check_ident(name)
    for url in urls:
        u = cachedb.parse_cachedb_url(url)
        dburl = _db_url(u)
        dbf = db.db_bind_mod(dburl, MOD)
        con = dbf.init(dburl)               # only for the version check ...
        try:
            db.db_check_table_version(dbf, con, db_table, TABLE_VERSION)
        finally:
            con.close()                     # ... closed before the fork
        cachedb.register_url(url, SqlCon)
    if cache_clean_period > 0:
        timer.register_timer("cachedb_sql-expire", clean_timer, None,
                             cache_clean_period)
    return 0


def child_init(rank: int) -> int:
    """Open this process's connections now (a database that is down is
    not fatal: the next use tries again)."""
    for url in urls:
        e = cachedb.get_engine(cachedb.parse_cachedb_url(url).storage_id)
        try:
            e.con().con.connect()
        except cachedb.CacheDBError as err:
            e.log_error("connect", err)
        except db.DBError as err:
            e.log_error("connect", cachedb.CacheDBConnectionError(str(err)))
    return 0


exports = ModuleExports(
    name=MOD,
    params=[
        ParamExport("cachedb_url", STR_PARAM | USE_FUNC_PARAM, add_url),
        ParamExport("db_table", STR_PARAM, "db_table"),
        ParamExport("key_column", STR_PARAM, "key_column"),
        ParamExport("value_column", STR_PARAM, "value_column"),
        ParamExport("counter_column", STR_PARAM, "counter_column"),
        ParamExport("expires_column", STR_PARAM, "expires_column"),
        ParamExport("cache_clean_period", INT_PARAM, "cache_clean_period"),
    ],
    init_f=mod_init,
    init_child_f=child_init,
)
