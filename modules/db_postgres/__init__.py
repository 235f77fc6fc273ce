"""db_postgres: the PostgreSQL DB driver (psycopg 3, the pip extra
``[postgres]``), the engine for several opensipy instances sharing one
location, subscriber or dialog table.

``db_url`` is ``postgres://user:password@host:port/database``.  Each
process opens its own connection on first use (autocommit: every statement
stands alone, as with OpenSIPS's driver).  ``timeout`` (seconds, default 2)
bounds the connect (``connect_timeout``), every statement on the server
(``statement_timeout``) and unacknowledged sends to a vanished server
(``tcp_user_timeout``), so a database that is down or gone never holds a
process longer than that.
"""
from __future__ import annotations

import datetime
import decimal
import math
import os
import select

from opensipy import db
from opensipy.sr_module import INT_PARAM, STR_PARAM, USE_FUNC_PARAM, \
    DepExport, ModuleExports, ParamExport

timeout = db.DEFAULT_TIMEOUT


def set_timeout(value) -> int:
    global timeout
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"timeout must be a number of seconds, got "
                         f"{value!r}") from None
    if not 0 < t <= 3600:
        raise ValueError(f"timeout must be in (0, 3600] seconds, got {t}")
    timeout = t
    return 0


_psycopg = None


def _pg():
    global _psycopg
    if _psycopg is None:
        try:
            import psycopg
        except ImportError as e:
            raise db.DBUrlError(
                f"db_postgres needs the Python package 'psycopg': install "
                f"it with pip install 'opensipy[postgres]' ({e})") from None
        _psycopg = psycopg
    return _psycopg


# PostgreSQL type OIDs -> DB API types
_OID_TYPES = {16: db.DB_INT, 20: db.DB_BIGINT, 21: db.DB_INT, 23: db.DB_INT,
              700: db.DB_DOUBLE, 701: db.DB_DOUBLE, 1700: db.DB_DOUBLE,
              25: db.DB_STRING, 1042: db.DB_STRING, 1043: db.DB_STRING,
              17: db.DB_BLOB, 1114: db.DB_DATETIME, 1184: db.DB_DATETIME}


# column types whose psycopg values are turned into the API's: numeric
# (Decimal -> float), bool (-> int), bytea when psycopg gives a memoryview
_CONVERTED = {1700, 16, 17}


def _value(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, bool):
        return int(v)
    return v


def _dump(v):
    """A value for send_query_params: (bytes or None, type OID, format)."""
    v = db.plain_value(v)
    if v is None:
        return None, 0, 0
    if isinstance(v, bytes):
        return v, 17, 1                      # bytea, binary
    if isinstance(v, int):
        return str(v).encode(), 20, 0        # int8
    if isinstance(v, float):
        return repr(v).encode(), 701, 0      # float8
    if isinstance(v, datetime.datetime):
        return v.isoformat(" ").encode(), 1114, 0
    return str(v).encode(), 0, 0             # the server infers the type


def _load_bytea(b: bytes) -> bytes:
    return bytes.fromhex(b[2:].decode()) if b.startswith(b"\\x") else b


def _load_ts(b: bytes):
    s = b.decode()
    try:
        return datetime.datetime.fromisoformat(s)
    except ValueError:
        return s


# text-format result values by column type OID
_LOADERS = {16: lambda b: int(b == b"t"), 20: int, 21: int, 23: int,
            26: int, 700: float, 701: float, 1700: float, 17: _load_bytea,
            1114: _load_ts, 1184: _load_ts}


class PgAsyncQuery(db.AsyncQuery):
    """One query on a connection of its own, driven with libpq's
    non-blocking calls (psycopg.pq)."""

    def __init__(self, con, raw, sql, params):
        self.con = con
        self.raw = raw
        self.done = False
        self._result = None
        self._results = []
        pgc = raw.pgconn
        dumped = [_dump(v) for v in params]
        try:
            pgc.nonblocking = 1
            pgc.send_query_params(
                db.qmark_to_numbered(sql).encode(),
                [d[0] for d in dumped] or None,
                [d[1] for d in dumped] or None,
                [d[2] for d in dumped] or None, 0)
            deadline = con.timeout
            while pgc.flush() == 1:
                if not select.select([], [pgc.socket], [], deadline)[1]:
                    raise db.DBConnectionError("db_postgres: cannot send the "
                                               "query within the timeout")
        except Exception as e:
            self._discard()
            if isinstance(e, db.DBError):
                raise
            raise db.DBConnectionError(f"db_postgres: {db._one_line(e)}") \
                from None
        self.fd = pgc.socket

    def _discard(self):
        raw, self.raw = self.raw, None
        self.done = True
        if raw is not None:
            try:
                raw.close()
            except Exception:
                pass

    def resume(self):
        if self.done:
            return self._result
        pq = _pg().pq
        pgc = self.raw.pgconn
        try:
            pgc.consume_input()
            while not pgc.is_busy():
                r = pgc.get_result()
                if r is None:
                    break
                self._results.append(r)
                pgc.consume_input()
            else:
                return None                      # more to come
        except Exception as e:
            self._discard()
            raise db.DBConnectionError(f"db_postgres: async query lost: "
                                       f"{db._one_line(e)}") from None
        self.done = True
        pgc.nonblocking = 0
        self.con._async_pool.append((os.getpid(), self.raw))
        self.raw = None
        last = self._results[-1] if self._results else None
        if last is None:
            return None
        if last.status == pq.ExecStatus.TUPLES_OK:
            cols = [last.fname(i).decode() for i in range(last.nfields)]
            oids = [last.ftype(i) for i in range(last.nfields)]
            rows = []
            for r in range(last.ntuples):
                row = []
                for c in range(last.nfields):
                    v = last.get_value(r, c)
                    row.append(None if v is None else
                               _LOADERS.get(oids[c], _text)(v))
                rows.append(tuple(row))
            self._result = db.DbResult(cols, db.types_of_rows(
                rows, len(cols), [_OID_TYPES.get(o) for o in oids]), rows)
            return self._result
        if last.status in (pq.ExecStatus.COMMAND_OK,
                           pq.ExecStatus.EMPTY_QUERY):
            return None
        msg = last.error_message.decode("utf-8", "replace")
        raise db.DBError(f"db_postgres: {' '.join(msg.split())}")

    def cancel(self) -> None:
        if not self.done:
            self._discard()


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


class PgCon(db.DbCon):
    placeholder = "%s"

    def __init__(self, dbf, url):
        super().__init__(dbf, url)
        self._async_pool = []

    def async_raw_query(self, sql, params=()):
        """See :meth:`opensipy.db.DbCon.async_raw_query`: the query runs on
        a connection of its own (from this connection's pool)."""
        raw = None
        while self._async_pool:
            pid, cand = self._async_pool.pop()
            if pid != os.getpid():
                db._abandoned.append(cand)   # another process's
                continue
            if cand.closed or cand.broken:
                continue
            raw = cand
            break
        if raw is None:
            raw = self._connect()
        return PgAsyncQuery(self, raw, sql, params)

    def close(self) -> None:
        super().close()
        pool, self._async_pool = self._async_pool, []
        for pid, raw in pool:
            if pid != os.getpid():
                db._abandoned.append(raw)
                continue
            try:
                raw.close()
            except Exception:
                pass

    def _connect(self):
        pg = _pg()
        u = self.url
        t = self.timeout
        kw = dict(dbname=u.database, autocommit=True,
                  connect_timeout=max(1, math.ceil(t)),
                  options=f"-c statement_timeout={int(t * 1000)}",
                  tcp_user_timeout=int(t * 1000),
                  keepalives=1, keepalives_idle=max(1, int(t)),
                  keepalives_interval=1, keepalives_count=2,
                  application_name="opensipy")
        if u.host:
            kw["host"] = u.host
        if u.port:
            kw["port"] = u.port
        if u.user:
            kw["user"] = u.user
        if u.password is not None:
            kw["password"] = u.password
        try:
            return pg.connect(**kw)
        except pg.Error as e:
            raise db.DBConnectionError(
                f"db_postgres: cannot connect to {u.redacted()}: "
                f"{db._one_line(e)}") from None

    def _execute(self, raw, sql, params, fetch):
        with raw.cursor() as cur:
            cur.execute(sql, params if params else None)
            desc = cur.description
            if desc is not None:
                columns = [d.name for d in desc]
                oids = [d.type_code for d in desc]
                declared = [_OID_TYPES.get(o) for o in oids]
                rows = cur.fetchall()
                if any(o in _CONVERTED for o in oids):
                    rows = [tuple(_value(v) for v in r) for r in rows]
                return (columns, db.types_of_rows(rows, len(columns),
                                                  declared),
                        rows, len(rows), None)
            return None, None, None, cur.rowcount, None

    def _placeholders(self, sql):
        return db.qmark_to_format(sql)

    def _is_lost(self, raw, exc) -> bool:
        pg = _pg()
        if not isinstance(exc, pg.OperationalError):
            return False
        if raw.closed or raw.broken:
            return True
        if isinstance(exc, (pg.errors.AdminShutdown,
                            pg.errors.CrashShutdown,
                            pg.errors.CannotConnectNow)):
            return True
        return raw.pgconn.status != pg.pq.ConnStatus.OK

    def last_inserted_id(self) -> int:
        try:
            r = self._run("SELECT lastval()", (), True)
        except db.DBConnectionError:
            raise
        except db.DBError:
            return 0        # nothing generated an id in this session yet
        return int(r[2][0][0])

    def _unique_keys(self, table):
        r = self._run(
            "SELECT i.indisprimary, array_agg(a.attname ORDER BY "
            "array_position(i.indkey::int2[], a.attnum)) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid "
            "AND a.attnum = ANY(i.indkey) "
            "WHERE c.relname = %s AND n.nspname = ANY(current_schemas(false)) "
            "AND i.indisunique GROUP BY i.indexrelid, i.indisprimary "
            "ORDER BY i.indisprimary DESC, i.indexrelid", (table,), True)
        return [list(cols) for _, cols in r[2]]

    def table_exists(self, table: str) -> bool:
        r = self._run("SELECT 1 FROM pg_tables WHERE tablename = %s AND "
                      "schemaname = ANY(current_schemas(false))", (table,),
                      True)
        return bool(r[2])


class PgFunc(db.DbFunc):
    name = "db_postgres"
    cap = db.DB_CAP_ALL | db.DB_CAP_ASYNC_RAW_QUERY
    con_class = PgCon

    @property
    def timeout(self):
        return timeout


_dbf = PgFunc()


def load_api() -> db.DbFunc:
    _pg()
    return _dbf


db.register_driver("postgres", load_api)
db.register_driver("postgresql", load_api)

exports = ModuleExports(
    name="db_postgres",
    deps=DepExport(python=[("psycopg", "postgres")]),
    params=[
        ParamExport("timeout", INT_PARAM | STR_PARAM | USE_FUNC_PARAM,
                    set_timeout),
    ],
)
