"""The DB API: OpenSIPS's ``db_func_t`` in Python.

A module that keeps data in a database binds a driver by the URL's scheme
and opens one connection per process::

    from opensipy import db

    dbf = db.db_bind_mod(db_url)                # mod_init: picks the driver
    con = dbf.init(db_url)                      # mod_init, only to read ...
    db.db_check_table_version(dbf, con, "location", 1013)
    con.close()                                 # ... and closed before fork
    ...
    con = dbf.init(db_url)                      # child_init: per process
    con.use_table("location")
    res = con.query(["username"], ["="], ["alice"], ["contact", "expires"])
    for row in res.rows: ...

Mapping to OpenSIPS (``db/db.h``, ``db/db_val.h``, ``db/db_op.h``):

===========================  =============================================
``db_bind_mod(url, &dbf)``    :func:`db_bind_mod` -> :class:`DbFunc`
``dbf.init(url)``             ``dbf.init(url)`` -> :class:`DbCon`
``dbf.close(con)``            ``con.close()``
``dbf.use_table``             ``con.use_table(table)``
``dbf.query``                 ``con.query(keys, ops, vals, cols, order)``
``dbf.raw_query``             ``con.raw_query(sql, params)`` (values bound)
``dbf.insert``                ``con.insert(cols, vals)``
``dbf.delete``                ``con.delete(keys, ops, vals)``
``dbf.update``                ``con.update(keys, ops, vals, ucols, uvals)``
``dbf.replace``               ``con.replace(cols, vals, unique=n)``
``dbf.insert_update``         ``con.insert_update(cols, vals)``
``dbf.last_inserted_id``      ``con.last_inserted_id()``
``dbf.async_raw_query``       ``con.async_raw_query(sql, params)`` ->
                              :class:`AsyncQuery` (``fd`` to poll,
                              ``resume()``), DB_CAP_ASYNC_RAW_QUERY only
``DB_CAPABILITY(dbf, cap)``   ``db_capability(dbf, cap)`` / ``dbf.cap``
``db_check_table_version``    :func:`db_check_table_version`
``db_res_t``                  :class:`DbResult` (``columns``, ``types``,
                              ``rows`` of Python values)
===========================  =============================================

Typed values.  Values are Python objects both ways: ``int`` (DB_INT and
DB_BIGINT), ``float`` (DB_DOUBLE), ``str`` (DB_STRING/DB_STR),
``datetime.datetime`` (DB_DATETIME, naive, second precision kept as the
engine keeps it), ``bytes`` (DB_BLOB) and ``None`` (NULL).  A
:class:`DbVal` ``(type, value)`` forces a type when a Python value is
ambiguous (e.g. a ``str`` holding a date for a DATETIME column).  Query
results come back converted the same way: a DATETIME column gives
``datetime``, a BLOB column ``bytes``, whatever the engine.

Values are always bound as parameters: no value is ever pasted into SQL.
Table, column and operator names are checked (identifiers
``[A-Za-z_][A-Za-z0-9_]*``, operators from :data:`OPS`) and quoted.

Errors raise :class:`DBError` (a lost connection or a database that is
down: :class:`DBConnectionError`; an old or missing table:
:class:`DBVersionError`).  A connection is opened lazily on first use
within the driver's ``timeout`` (default 2 s, a module parameter of the
driver); a connection lost under a call is re-opened and the call retried
once; while the database stays down each call fails at once or within the
timeout, and the failure is logged once per ``LOG_INTERVAL`` seconds.
A connection is tied to the process that opened it: used in another
process (carried across fork) it is abandoned, never closed (closing would
end the parent's session), and a new one is opened.
"""
from __future__ import annotations

import abc
import datetime
import importlib
import importlib.util
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from .. import log

__all__ = [
    "DB_INT", "DB_BIGINT", "DB_DOUBLE", "DB_STRING", "DB_STR",
    "DB_DATETIME", "DB_BLOB", "DB_BITMAP", "DbVal", "DbResult", "DBError",
    "DBConnectionError", "DBVersionError", "DBUrlError", "DbFunc", "DbCon",
    "db_bind_mod", "db_capability", "db_check_table_version",
    "db_table_version", "parse_db_url", "register_driver", "OPS",
    "DB_CAP_QUERY", "DB_CAP_RAW_QUERY", "DB_CAP_INSERT", "DB_CAP_DELETE",
    "DB_CAP_UPDATE", "DB_CAP_REPLACE", "DB_CAP_FETCH",
    "DB_CAP_LAST_INSERTED_ID", "DB_CAP_INSERT_UPDATE", "DB_CAP_MULTIPLE_INSERT",
    "DB_CAP_ASYNC_RAW_QUERY", "DB_CAP_ALL", "VERSION_TABLE", "AsyncQuery",
]

# --- value types (db_val.h) -------------------------------------------------
DB_INT = "int"
DB_BIGINT = "bigint"
DB_DOUBLE = "double"
DB_STRING = "string"
DB_STR = "str"
DB_DATETIME = "datetime"
DB_BLOB = "blob"
DB_BITMAP = "bitmap"
DB_TYPES = (DB_INT, DB_BIGINT, DB_DOUBLE, DB_STRING, DB_STR, DB_DATETIME,
            DB_BLOB, DB_BITMAP)

# --- capabilities (db_cap.h) ------------------------------------------------
DB_CAP_QUERY = 1 << 0
DB_CAP_RAW_QUERY = 1 << 1
DB_CAP_INSERT = 1 << 2
DB_CAP_DELETE = 1 << 3
DB_CAP_UPDATE = 1 << 4
DB_CAP_REPLACE = 1 << 5
DB_CAP_FETCH = 1 << 6
DB_CAP_LAST_INSERTED_ID = 1 << 7
DB_CAP_INSERT_UPDATE = 1 << 8
DB_CAP_MULTIPLE_INSERT = 1 << 9
DB_CAP_ASYNC_RAW_QUERY = 1 << 10
DB_CAP_ALL = (DB_CAP_QUERY | DB_CAP_RAW_QUERY | DB_CAP_INSERT | DB_CAP_DELETE
              | DB_CAP_UPDATE | DB_CAP_REPLACE | DB_CAP_FETCH
              | DB_CAP_LAST_INSERTED_ID | DB_CAP_INSERT_UPDATE
              | DB_CAP_MULTIPLE_INSERT)

# --- operators (db_op.h) ----------------------------------------------------
OP_EQ, OP_NEQ, OP_LT, OP_GT, OP_LEQ, OP_GEQ = "=", "!=", "<", ">", "<=", ">="
OPS = {"=": "=", "==": "=", "!=": "<>", "<>": "<>", "<": "<", ">": ">",
       "<=": "<=", ">=": ">=", "like": "LIKE", "LIKE": "LIKE"}

VERSION_TABLE = "version"
DEFAULT_TIMEOUT = 2.0
LOG_INTERVAL = 10.0         # seconds between two logs of the same failure
RECONNECT_INTERVAL = 0.5    # seconds between two connect attempts

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class DBError(Exception):
    """A DB operation failed (bad use, engine error, connection lost)."""


class DBUrlError(DBError):
    """A db_url that cannot be used (syntax, unknown scheme, missing driver
    package)."""


class DBConnectionError(DBError):
    """The database cannot be reached (down, lost, timed out)."""


class DBVersionError(DBError):
    """A table is missing from the ``version`` table or is of another
    version than the module needs."""


@dataclass(frozen=True)
class DbVal:
    """A value with an explicit type (OpenSIPS's ``db_val_t``)."""
    type: str
    value: Any

    def __post_init__(self):
        if self.type not in DB_TYPES:
            raise DBError(f"unknown DB value type {self.type!r}")


@dataclass
class DbResult:
    """``db_res_t``: column names, their types, and the rows (tuples of
    Python values, None for NULL)."""
    columns: List[str]
    types: List[str]
    rows: List[tuple]

    def __len__(self):
        return len(self.rows)

    def dicts(self) -> List[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]


@dataclass
class DbUrl:
    scheme: str
    user: Optional[str]
    password: Optional[str]
    host: Optional[str]
    port: Optional[int]
    database: str
    raw: str = field(repr=False, default="")

    def redacted(self) -> str:
        """The URL without its password, for logs and errors."""
        if self.password is None:
            return self.raw
        return self.raw.replace(":" + self.password + "@", ":***@", 1)


_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9_+-]*)://(?P<rest>.*)\Z",
                  re.S)


def parse_db_url(url: str) -> DbUrl:
    """``scheme://[user[:password]@]host[:port]/database`` or, for file
    engines, ``sqlite:///path`` (absolute) / ``sqlite://path`` (relative)."""
    if not isinstance(url, str) or not url:
        raise DBUrlError("empty db_url")
    m = _URL.match(url.strip())
    if not m:
        raise DBUrlError(f"bad db_url {url!r}: expected "
                         f"scheme://[user[:password]@]host[:port]/database")
    scheme, rest = m.group("scheme").lower(), m.group("rest")
    if scheme == "sqlite":
        if not rest:
            raise DBUrlError(f"bad db_url {url!r}: no file name")
        return DbUrl(scheme, None, None, None, None, rest, url)
    user = password = None
    hostpart, slash, database = rest.partition("/")
    if "@" in hostpart:
        cred, _, hostpart = hostpart.rpartition("@")
        user, colon, pw = cred.partition(":")
        password = pw if colon else None
        user = user or None
    host, port = hostpart, None
    if hostpart.startswith("["):
        host, _, tail = hostpart[1:].partition("]")
        if tail.startswith(":"):
            port = tail[1:]
    elif ":" in hostpart:
        host, _, port = hostpart.rpartition(":")
    if port is not None and port != "":
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise DBUrlError(f"bad db_url {_redact(url, password)!r}: bad "
                             f"port {port!r}")
        port = int(port)
    else:
        port = None
    if not slash or not database:
        raise DBUrlError(f"bad db_url {_redact(url, password)!r}: no "
                         f"database name")
    return DbUrl(scheme, user, password, host or None, port, database, url)


def _redact(url, password):
    return url.replace(":" + password + "@", ":***@", 1) if password else url


# --- drivers ---------------------------------------------------------------

# scheme -> the driver module that serves it (OpenSIPS loads db_<scheme>)
SCHEME_MODULES = {"sqlite": "db_sqlite", "postgres": "db_postgres",
                  "postgresql": "db_postgres"}
_drivers: Dict[str, Callable[[], "DbFunc"]] = {}


def register_driver(scheme: str, factory: Callable[[], "DbFunc"]) -> None:
    """A driver module publishes its ``DbFunc`` for a URL scheme."""
    _drivers[scheme.lower()] = factory


def db_bind_mod(url: str, needed_by: str = "") -> "DbFunc":
    """The driver for ``url``'s scheme (OpenSIPS's ``db_bind_mod``).

    The driver is the module ``db_<scheme>``; when the running server has a
    registry, that module must be loaded (``loadmodule "db_sqlite.so"``),
    as in OpenSIPS; without one (tools, tests) it is imported directly."""
    u = parse_db_url(url)
    modname = SCHEME_MODULES.get(u.scheme, f"db_{u.scheme}")
    who = f" (needed by '{needed_by}')" if needed_by else ""
    from .. import modloader
    reg = modloader.registry
    if reg is not None:
        if not reg.is_loaded(modname):
            raise DBUrlError(f"db_url scheme '{u.scheme}'{who} needs module "
                             f"'{modname}': add loadmodule \"{modname}.so\"")
        return modloader.load_api(modname, needed_by)
    try:
        pkg = importlib.import_module(f"{modloader.BUILTIN_PACKAGE}.{modname}")
    except ModuleNotFoundError as e:
        if not (e.name or "").endswith(modname):
            raise DBUrlError(f"DB driver '{modname}' cannot be loaded: "
                             f"Python package '{e.name}' is missing") \
                from None
        factory = _drivers.get(u.scheme)    # a driver registered by hand
        if factory is None:
            raise DBUrlError(f"no DB driver for scheme '{u.scheme}'{who}") \
                from None
        return factory()
    exp = getattr(pkg, "exports", None)
    for import_name, extra in (exp.deps.python if exp else ()):
        if importlib.util.find_spec(import_name) is None:
            raise DBUrlError(
                f"DB driver '{modname}' needs the Python package "
                f"'{import_name}': install it with pip install "
                f"'opensipy[{extra}]'")
    return pkg.load_api()


def db_capability(dbf: "DbFunc", cap: int) -> bool:
    return (dbf.cap & cap) == cap


# --- the function table and connections ---------------------------------------

def check_ident(name: str, what: str = "column") -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise DBError(f"bad {what} name {name!r}")
    return name


def quote(name: str, what: str = "column") -> str:
    return '"' + check_ident(name, what) + '"'


def plain_value(v):
    """A DbVal or Python value -> the Python value to bind."""
    if isinstance(v, DbVal):
        v, t = v.value, v.type
        if v is None:
            return None
        if t in (DB_INT, DB_BIGINT, DB_BITMAP):
            return int(v)
        if t == DB_DOUBLE:
            return float(v)
        if t in (DB_STRING, DB_STR):
            return v if isinstance(v, str) else str(v)
        if t == DB_BLOB:
            return bytes(v.encode() if isinstance(v, str) else v)
        if t == DB_DATETIME:
            if isinstance(v, datetime.datetime):
                return v
            if isinstance(v, (int, float)):
                return datetime.datetime.fromtimestamp(v)
            return parse_datetime(str(v))
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    return v


def parse_datetime(text: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise DBError(f"bad datetime value {text!r}") from None


class DbFunc:
    """A driver's function table (``db_func_t``): ``cap`` and ``init``.
    Drivers subclass it and :class:`DbCon`."""
    name = "?"
    cap = 0
    con_class: type = None
    timeout = DEFAULT_TIMEOUT

    def init(self, url: str) -> "DbCon":
        u = parse_db_url(url)
        return self.con_class(self, u)


class _RateLog:
    """Log a failure at most once per LOG_INTERVAL (per message key),
    counting the ones held back."""

    def __init__(self):
        self.last: Dict[str, float] = {}
        self.held: Dict[str, int] = {}

    def error(self, key: str, text: str) -> None:
        now = time.monotonic()
        last = self.last.get(key)
        if last is not None and now - last < LOG_INTERVAL:
            self.held[key] = self.held.get(key, 0) + 1
            return
        n = self.held.pop(key, 0)
        self.last[key] = now
        more = f" ({n} more such failures since the last report)" if n else ""
        log.LM_ERR(text + more)

    def clear(self, key: str) -> None:
        if self.last.pop(key, None) is not None:
            self.held.pop(key, None)


ratelog = _RateLog()
_abandoned: list = []   # connections inherited across fork: never closed


class DbCon(abc.ABC):
    """One connection (``db_con_t``), owned by the process that opened it.

    Drivers implement ``_connect() -> raw``, ``_execute(raw, sql, params,
    fetch) -> (columns, types, rows, rowcount, lastid)``, ``_is_lost(exc)``,
    ``_close(raw)``, and the SQL dialect hooks below."""
    placeholder = "?"

    def __init__(self, dbf: DbFunc, url: DbUrl):
        self.dbf = dbf
        self.url = url
        self.table: Optional[str] = None
        self._raw = None
        self._pid = None
        self._next_try = 0.0
        self._last_id = 0
        self._unique_cache: Dict[str, List[List[str]]] = {}
        self._sql_cache: Dict[tuple, Any] = {}

    # -- lifecycle
    def __repr__(self):
        return f"<{type(self).__name__} {self.url.redacted()}>"

    @property
    def timeout(self) -> float:
        return self.dbf.timeout

    def _conn(self):
        if self._raw is not None and self._pid != os.getpid():
            _abandoned.append(self._raw)     # the parent's: leave it alone
            self._raw = None
            log.LM_WARN(f"{self.dbf.name}: a connection opened by process "
                        f"{self._pid} is used in process {os.getpid()}; "
                        f"it is left alone and a new one opened (close "
                        f"mod_init's connections, open them in child_init)")
        if self._raw is None:
            now = time.monotonic()
            if now < self._next_try:
                raise DBConnectionError(
                    f"{self.dbf.name}: database {self.url.redacted()} is "
                    f"unreachable (retrying)")
            try:
                self._raw = self._connect()
            except DBError as e:
                self._next_try = time.monotonic() + RECONNECT_INTERVAL
                ratelog.error(self._logkey(), str(e))
                raise
            self._pid = os.getpid()
            self._unique_cache.clear()
            if ratelog.last.get(self._logkey()) is not None:
                log.LM_NOTICE(f"{self.dbf.name}: connected again to "
                              f"{self.url.redacted()}")
                ratelog.clear(self._logkey())
        return self._raw

    def _logkey(self):
        return f"{self.dbf.name}:{self.url.redacted()}"

    def connect(self) -> None:
        """Open the connection now (child_init), instead of on first use;
        raises DBConnectionError when the database cannot be reached (a
        module may go on: the next use tries again)."""
        self._conn()

    def connected(self) -> bool:
        return self._raw is not None and self._pid == os.getpid()

    def close(self) -> None:
        """Close the connection (a module closes what mod_init opened before
        the fork)."""
        raw, self._raw = self._raw, None
        if raw is not None:
            if self._pid == os.getpid():
                try:
                    self._close(raw)
                except Exception:
                    pass
            else:
                _abandoned.append(raw)

    def use_table(self, table: str) -> None:
        self.table = check_ident(table, "table")

    # -- running statements
    def _run(self, sql: str, params: Sequence = (), fetch: bool = False,
             plain: bool = False):
        if not plain:
            params = [plain_value(v) for v in params]
        for attempt in (0, 1):
            fresh = self._raw is None or self._pid != os.getpid()
            raw = self._conn()
            try:
                out = self._execute(raw, sql, params, fetch)
            except DBError:
                raise
            except Exception as e:
                if self._is_lost(raw, e):
                    self._raw = None
                    try:
                        self._close(raw)
                    except Exception:
                        pass
                    if attempt == 0 and not fresh:
                        continue        # the old connection died: retry once
                    msg = (f"{self.dbf.name}: connection to "
                           f"{self.url.redacted()} lost: {_one_line(e)}")
                    ratelog.error(self._logkey(), msg)
                    raise DBConnectionError(msg) from None
                raise DBError(f"{self.dbf.name}: {_one_line(e)}") from None
            self._last_id = out[4] or self._last_id
            return out
        raise AssertionError("unreachable")

    def _need_table(self) -> str:
        if self.table is None:
            raise DBError("no table selected (use_table)")
        return quote(self.table, "table")

    def _where(self, keys, ops, vals, params: list) -> str:
        keys = list(keys or ())
        vals = list(vals or ())
        if len(keys) != len(vals):
            raise DBError(f"{len(keys)} keys but {len(vals)} values")
        if ops is None:
            ops = ["="] * len(keys)
        ops = list(ops)
        if len(ops) != len(keys):
            raise DBError(f"{len(keys)} keys but {len(ops)} operators")
        parts = []
        ph = self.placeholder
        for k, op, v in zip(keys, ops, vals):
            try:
                sop = OPS[op]
            except (KeyError, TypeError):
                raise DBError(f"bad operator {op!r}") from None
            v = plain_value(v)
            if v is None and sop in ("=", "<>"):
                parts.append(f"{quote(k)} IS {'' if sop == '=' else 'NOT '}"
                             f"NULL")
                continue
            parts.append(f"{quote(k)} {sop} {ph}")
            params.append(v)
        return (" WHERE " + " AND ".join(parts)) if parts else ""

    def query(self, keys=None, ops=None, vals=None, cols=None,
              order=None) -> DbResult:
        """``SELECT cols FROM table WHERE key op val AND ... ORDER BY
        order``.  ``cols`` None is every column; ``order`` a column name,
        optionally followed by `` DESC``."""
        vals = [plain_value(v) for v in vals] if vals else []
        ckey = ("q", self.table, tuple(keys) if keys else (),
                tuple(ops) if ops else None, tuple(v is None for v in vals),
                tuple(cols) if cols else None, order)
        hit = self._sql_cache.get(ckey)
        if hit is None:
            t = self._need_table()
            params: list = []
            sel = ", ".join(quote(c) for c in cols) if cols else "*"
            sql = f"SELECT {sel} FROM {t}" + self._where(keys, ops, vals,
                                                         params)
            if order:
                col, _, direction = str(order).partition(" ")
                direction = direction.strip().upper()
                if direction not in ("", "ASC", "DESC"):
                    raise DBError(f"bad order {order!r}")
                sql += f" ORDER BY {quote(col)}" + (f" {direction}"
                                                    if direction else "")
            # which values are bound (None with =/!= became IS [NOT] NULL)
            bound = [not (v is None and OPS[o] in ("=", "<>"))
                     for v, o in zip(vals, ops or ["="] * len(vals))]
            hit = (sql, None if all(bound) else bound)
            self._cache(ckey, hit)
        sql, bound = hit
        params = vals if bound is None else \
            [v for v, b in zip(vals, bound) if b]
        columns, types, rows, _, _ = self._run(sql, params, True, True)
        return DbResult(columns, types, rows)

    def _cache(self, key, value) -> None:
        if len(self._sql_cache) >= 512:
            self._sql_cache.clear()
        self._sql_cache[key] = value

    def raw_query(self, sql: str, params: Sequence = ()) -> Optional[DbResult]:
        """Run SQL written by the caller; every value goes in ``params``
        (placeholders ``?``, turned into the driver's own).  Returns a
        DbResult for a statement that gives rows, else None."""
        if not isinstance(sql, str) or not sql.strip():
            raise DBError("empty raw query")
        columns, types, rows, _, _ = self._run(self._placeholders(sql),
                                               params, True)
        if columns is None:
            return None
        return DbResult(columns, types, rows)

    def _placeholders(self, sql: str) -> str:
        return sql

    def _cols_vals(self, cols, vals):
        cols, vals = list(cols), list(vals)
        if not cols or len(cols) != len(vals):
            raise DBError(f"{len(cols)} columns but {len(vals)} values")
        return cols, vals

    def insert(self, cols, vals) -> int:
        """Insert one row (``vals`` a sequence) or several (``vals`` a list
        of sequences, DB_CAP_MULTIPLE_INSERT); returns the rows inserted."""
        cols = tuple(cols)
        rows = vals if vals and isinstance(vals[0], (list, tuple)) else [vals]
        ckey = ("i", self.table, cols)
        sql = self._sql_cache.get(ckey)
        if sql is None:
            t = self._need_table()
            self._cols_vals(cols, rows[0])
            sql = (f"INSERT INTO {t} ({', '.join(quote(x) for x in cols)}) "
                   f"VALUES ({', '.join([self.placeholder] * len(cols))})")
            self._cache(ckey, sql)
        n = 0
        for row in rows:
            if len(row) != len(cols):
                raise DBError(f"{len(cols)} columns but {len(row)} values")
            n += self._run(sql, row)[3]
        return n

    def delete(self, keys=None, ops=None, vals=None) -> int:
        t = self._need_table()
        params: list = []
        sql = f"DELETE FROM {t}" + self._where(keys, ops, vals, params)
        return self._run(sql, params)[3]

    def update(self, keys, ops, vals, ucols, uvals) -> int:
        t = self._need_table()
        ucols, uvals = self._cols_vals(ucols, uvals)
        params = [plain_value(v) for v in uvals]
        sets = ", ".join(f"{quote(c)} = {self.placeholder}" for c in ucols)
        sql = f"UPDATE {t} SET {sets}" + self._where(keys, ops, vals, params)
        return self._run(sql, params)[3]

    def unique_keys(self, table: Optional[str] = None) -> List[List[str]]:
        """The table's primary key and unique constraints (column lists)."""
        table = check_ident(table or self.table or "", "table")
        if table not in self._unique_cache:
            self._unique_cache[table] = self._unique_keys(table)
        return self._unique_cache[table]

    def _conflict_target(self, cols) -> List[str]:
        for uk in self.unique_keys():
            if uk and all(c in cols for c in uk):
                return uk
        raise DBError(f"table {self.table}: no primary key or unique "
                      f"constraint among the columns {list(cols)}")

    def insert_update(self, cols, vals, _target=None) -> int:
        """Insert, or update the row holding the same primary/unique key
        (MySQL's ``ON DUPLICATE KEY UPDATE``; ``ON CONFLICT`` here)."""
        t = self._need_table()
        cols, vals = self._cols_vals(cols, vals)
        target = _target or self._conflict_target(cols)
        others = [c for c in cols if c not in target]
        action = ("DO UPDATE SET " + ", ".join(
            f"{quote(c)} = excluded.{quote(c)}" for c in others)) \
            if others else "DO NOTHING"
        sql = (f"INSERT INTO {t} ({', '.join(quote(x) for x in cols)}) "
               f"VALUES ({', '.join([self.placeholder] * len(vals))}) "
               f"ON CONFLICT ({', '.join(quote(c) for c in target)}) "
               f"{action}")
        return self._run(sql, vals)[3]

    def replace(self, cols, vals, unique: int = 0) -> int:
        """Replace the row matching the table's key: the first ``unique``
        columns form the key (OpenSIPS's ``_un``); 0 means the table's
        own primary/unique key among ``cols``."""
        cols, vals = self._cols_vals(cols, vals)
        if unique:
            target = list(cols[:unique])
            if not set(target) <= set(cols):
                raise DBError("bad unique key count")
            # the key must be a real constraint for ON CONFLICT
            for uk in self.unique_keys():
                if sorted(uk) == sorted(target):
                    return self.insert_update(cols, vals, uk)
            return self._replace_by_update(cols, vals, target)
        return self.insert_update(cols, vals)

    def _replace_by_update(self, cols, vals, target) -> int:
        kv = [vals[cols.index(c)] for c in target]
        rest = [c for c in cols if c not in target]
        if rest:
            n = self.update(target, None, kv, rest,
                            [vals[cols.index(c)] for c in rest])
        else:
            n = len(self.query(target, None, kv, target).rows)
        return n if n else self.insert(cols, vals)

    def last_inserted_id(self) -> int:
        """The id the last insert of this connection generated."""
        return self._last_id

    def async_raw_query(self, sql: str, params: Sequence = ()) \
            -> "AsyncQuery":
        """Start ``sql`` (``?`` placeholders, values bound) without waiting
        for it: OpenSIPS's ``async_raw_query``.  The caller polls
        ``AsyncQuery.fd`` for reading and calls ``resume()`` until it gives
        the result.  Only drivers with DB_CAP_ASYNC_RAW_QUERY."""
        raise DBError(f"{self.dbf.name} cannot run queries asynchronously")

    # -- driver hooks: every driver (db_sqlite, db_postgres) implements the
    # abstract ones; a class missing one cannot be instantiated
    @abc.abstractmethod
    def _connect(self):
        """Open and return the engine's raw connection."""

    @abc.abstractmethod
    def _execute(self, raw, sql, params, fetch):
        """Run one statement; return (columns, types, rows, rowcount,
        lastrowid) as the driver module documents."""

    def _is_lost(self, raw, exc) -> bool:
        return False

    def _close(self, raw) -> None:
        raw.close()

    @abc.abstractmethod
    def _unique_keys(self, table: str) -> List[List[str]]:
        """The primary and unique keys of ``table`` (lists of columns)."""

    @abc.abstractmethod
    def table_exists(self, table: str) -> bool:
        """Whether ``table`` exists in the database."""


class AsyncQuery(abc.ABC):
    """A query running on its own connection (``async_raw_query``).

    ``fd``: the descriptor to wait on (readable when there is progress);
    ``resume()``: None while the query runs, then its :class:`DbResult`
    (or None for a statement without rows, see ``done``); raises DBError
    when the query failed; ``cancel()`` abandons it.  The connection goes
    back to the connection's pool once the result was read."""
    fd: int = -1
    done: bool = False

    @abc.abstractmethod
    def resume(self):
        """None while the query runs, then its result (see above)."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Abandon the query and give its connection back."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# --- the version table --------------------------------------------------------

def db_table_version(dbf: DbFunc, con: DbCon, table: str) -> Optional[int]:
    """The version of ``table`` recorded in the ``version`` table, or None
    when it is not there (a missing ``version`` table is an error)."""
    check_ident(table, "table")
    saved = con.table
    try:
        con.use_table(VERSION_TABLE)
        try:
            res = con.query(["table_name"], ["="], [table], ["table_version"])
        except DBConnectionError:
            raise
        except DBError as e:
            raise DBVersionError(
                f"cannot read the version of table '{table}': the "
                f"'{VERSION_TABLE}' table is missing or unreadable ({e}); "
                f"create the database with opensipyctl db create") from None
    finally:
        con.table = saved
    if not res.rows:
        return None
    return int(res.rows[0][0])


def db_check_table_version(dbf: DbFunc, con: DbCon, table: str,
                           version: int) -> int:
    """OpenSIPS's ``db_check_table_version``: 0 when ``table`` is recorded
    with ``version``; raise :class:`DBVersionError` naming the table
    otherwise."""
    found = db_table_version(dbf, con, table)
    if found is None:
        raise DBVersionError(
            f"table '{table}' is not in the '{VERSION_TABLE}' table of "
            f"{con.url.redacted()} (missing table; expected version "
            f"{version}): create it with opensipyctl db create")
    if found < version:
        raise DBVersionError(
            f"table '{table}' has version {found} in {con.url.redacted()} "
            f"(an older schema), this opensipy needs version {version}: "
            f"upgrade the database with: opensipyctl db migrate "
            f"{con.url.redacted()}")
    if found != version:
        raise DBVersionError(
            f"table '{table}' has version {found} in {con.url.redacted()}, "
            f"newer than the version {version} this opensipy knows: "
            f"upgrade opensipy")
    return 0


# --- helpers for drivers ------------------------------------------------------

def type_of_value(v) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, bool) or isinstance(v, int):
        return DB_BIGINT if not -2**31 <= v < 2**31 else DB_INT
    if isinstance(v, float):
        return DB_DOUBLE
    if isinstance(v, str):
        return DB_STRING
    if isinstance(v, datetime.datetime):
        return DB_DATETIME
    if isinstance(v, (bytes, bytearray, memoryview)):
        return DB_BLOB
    return DB_STRING


def types_of_rows(rows, ncols: int, declared=None) -> List[str]:
    """Column types: the declared ones when the driver knows them, else
    what the values are (a column of NULLs is a string column)."""
    out = []
    for i in range(ncols):
        t = declared[i] if declared and declared[i] else None
        if t is None:
            for r in rows:
                t = type_of_value(r[i])
                if t is not None:
                    break
        out.append(t or DB_STRING)
    return out


def qmark_to_numbered(sql: str) -> str:
    """``?`` placeholders -> ``$1, $2, ...`` outside quoted literals."""
    out = []
    quote_ch = None
    n = 0
    for ch in sql:
        if quote_ch:
            out.append(ch)
            if ch == quote_ch:
                quote_ch = None
        elif ch in ("'", '"'):
            quote_ch = ch
            out.append(ch)
        elif ch == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    return "".join(out)


def qmark_to_format(sql: str) -> str:
    """``?`` placeholders -> ``%s`` (and ``%`` -> ``%%``) outside quoted
    literals and identifiers, for drivers using the format style."""
    out = []
    quote_ch = None
    for ch in sql:
        if quote_ch:
            out.append("%%" if ch == "%" else ch)
            if ch == quote_ch:
                quote_ch = None
            continue
        if ch in ("'", '"'):
            quote_ch = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)
