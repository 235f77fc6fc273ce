"""db_sqlite: the embedded DB driver (Python's ``sqlite3``), the default
engine of a fresh install.

``db_url`` is ``sqlite:///absolute/path.db`` (or ``sqlite://relative.db``,
relative to the working directory).  The file and its folder are created
when missing; the database runs in WAL mode (readers never wait for the
writer) with a busy timeout of ``timeout`` seconds, so a process never
waits longer than that for another one's write lock.  DATETIME columns are
kept as ``YYYY-MM-DD HH:MM:SS`` text, as OpenSIPS's db_sqlite keeps them,
so a database made by OpenSIPS is read and written as it is.
"""
from __future__ import annotations

import datetime
import os
import sqlite3

from opensipy import db
from opensipy.sr_module import INT_PARAM, STR_PARAM, USE_FUNC_PARAM, \
    ModuleExports, ParamExport

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


# DATETIME text <-> datetime (registered once, for PARSE_DECLTYPES)
def _dt_out(v: datetime.datetime) -> str:
    return v.isoformat(" ")


def _dt_in(b: bytes):
    s = b.decode("utf-8", "replace")
    try:
        return datetime.datetime.fromisoformat(s.strip())
    except ValueError:
        return s


sqlite3.register_adapter(datetime.datetime, _dt_out)
for _name in ("DATETIME", "TIMESTAMP"):
    sqlite3.register_converter(_name, _dt_in)
sqlite3.register_converter("BLOB", bytes)
sqlite3.register_converter("LONGBLOB", bytes)


class SqliteCon(db.DbCon):
    placeholder = "?"

    def path(self) -> str:
        return self.url.database

    def _connect(self):
        path = self.path()
        if path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise db.DBConnectionError(
                    f"db_sqlite: cannot create the folder {folder} of "
                    f"{path}: {e.strerror}") from None
        try:
            raw = sqlite3.connect(path, timeout=self.timeout,
                                  detect_types=sqlite3.PARSE_DECLTYPES,
                                  isolation_level=None,
                                  check_same_thread=False)
            raw.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if path != ":memory:":
                raw.execute("PRAGMA journal_mode = WAL")
            raw.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as e:
            raise db.DBConnectionError(
                f"db_sqlite: cannot open {path}: {e}") from None
        return raw

    def _execute(self, raw, sql, params, fetch):
        cur = raw.execute(sql, params)
        try:
            if cur.description is not None:
                columns = [d[0] for d in cur.description]
                rows = cur.fetchall()
                return (columns, db.types_of_rows(rows, len(columns)), rows,
                        len(rows), None)
            lastid = cur.lastrowid if sql.startswith("INSERT") else None
            return None, None, None, cur.rowcount, lastid
        finally:
            cur.close()

    def _unique_keys(self, table):
        raw = self._conn()
        t = db.quote(table, "table")
        info = raw.execute(f"PRAGMA table_info({t})").fetchall()
        keys = []
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        if pk:
            keys.append(pk)
        for idx in raw.execute(f"PRAGMA index_list({t})").fetchall():
            if idx[2]:     # unique
                cols = [r[2] for r in raw.execute(
                    f"PRAGMA index_info({db.quote(idx[1], 'index')})")]
                if cols and cols not in keys:
                    keys.append(cols)
        return keys

    def table_exists(self, table: str) -> bool:
        r = self._run("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                      "AND name = ?", (table,), True)
        return bool(r[2])


class SqliteFunc(db.DbFunc):
    name = "db_sqlite"
    cap = db.DB_CAP_ALL
    con_class = SqliteCon

    @property
    def timeout(self):
        return timeout


_dbf = SqliteFunc()


def load_api() -> db.DbFunc:
    return _dbf


db.register_driver("sqlite", load_api)

exports = ModuleExports(
    name="db_sqlite",
    params=[
        ParamExport("timeout", INT_PARAM | STR_PARAM | USE_FUNC_PARAM,
                    set_timeout),
    ],
)
