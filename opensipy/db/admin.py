"""Creating, dropping, listing and copying opensipy/OpenSIPS databases
(what ``opensipyctl db`` runs), on every engine the DB API drives.

PostgreSQL: like opensips-cli, ``create`` connects with an admin URL
(``database_admin_url``, default the URL's host as user ``postgres`` on
database ``postgres``), creates the role of the URL's user (with its
password) when it does not exist, creates the database owned by that role,
then connects as that user and creates the tables.  ``drop`` drops the
database (the role stays, as other databases may use it).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from . import (VERSION_TABLE, DBError, DbUrl, db_bind_mod, parse_db_url,
               quote)
from . import schema


def _engine(u: DbUrl) -> str:
    if u.scheme == "sqlite":
        return "sqlite"
    if u.scheme in ("postgres", "postgresql"):
        return "postgres"
    raise DBError(f"opensipyctl db does not handle '{u.scheme}' databases")


def _connect(url: str):
    dbf = db_bind_mod(url)
    return dbf.init(url)


def default_admin_url(u: DbUrl) -> str:
    host = u.host or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = f":{u.port}" if u.port else ""
    return f"postgres://postgres@{host}{port}/postgres"


def _pg_ident(name: str) -> str:
    """A role or database name for PostgreSQL DDL (which cannot bind
    identifiers): checked, then double-quoted."""
    return quote(name, "role/database")


def pg_create_database(u: DbUrl, admin_url: Optional[str]) -> List[str]:
    """Create the role and the database of ``u`` (as opensips-cli does);
    returns what was done."""
    done = []
    adm = _connect(admin_url or default_admin_url(u))
    try:
        if u.user:
            r = adm.raw_query("SELECT 1 FROM pg_roles WHERE rolname = ?",
                              (u.user,))
            if not r.rows:
                # a password cannot be bound in CREATE ROLE: it goes in
                # as a quoted literal, escaped the way the server wants it
                pw = ""
                if u.password is not None:
                    lit = adm.raw_query("SELECT quote_literal(?)",
                                        (u.password,)).rows[0][0]
                    pw = f" PASSWORD {lit}"
                adm.raw_query(f"CREATE ROLE {_pg_ident(u.user)} LOGIN{pw}")
                done.append(f"created role {u.user}")
        r = adm.raw_query("SELECT 1 FROM pg_database WHERE datname = ?",
                          (u.database,))
        if r.rows:
            raise DBError(f"database {u.database} already exists")
        owner = f" OWNER {_pg_ident(u.user)}" if u.user else ""
        adm.raw_query(f"CREATE DATABASE {_pg_ident(u.database)}{owner} "
                      f"ENCODING 'UTF8' TEMPLATE template0")
        done.append(f"created database {u.database}")
    finally:
        adm.close()
    return done


def create(url: str, groups: Optional[Sequence[str]] = None,
           admin_url: Optional[str] = None,
           create_database: bool = True) -> List[str]:
    """Create the database (PostgreSQL: role and database first) and the
    tables of ``groups`` (default: every group); returns what was done."""
    u = parse_db_url(url)
    engine = _engine(u)
    done = []
    if engine == "postgres" and create_database:
        done += pg_create_database(u, admin_url)
    elif engine == "sqlite":
        path = u.database
        if os.path.exists(path) and os.path.getsize(path) > 0:
            con = _connect(url)
            try:
                if con.table_exists(VERSION_TABLE):
                    raise DBError(f"database {path} already exists")
            finally:
                con.close()
    groups = list(groups or schema.GROUPS)
    if "standard" not in groups:
        groups.insert(0, "standard")
    con = _connect(url)
    try:
        for g in groups:
            for t in schema.GROUPS.get(g) or schema.ddl_group(g, engine):
                if t.name == VERSION_TABLE and con.table_exists(t.name):
                    continue
                for stmt in schema.ddl(t, engine):
                    con.raw_query(stmt)
                done.append(f"created table {t.name} (version {t.version})")
    finally:
        con.close()
    return done


def drop(url: str, admin_url: Optional[str] = None) -> List[str]:
    u = parse_db_url(url)
    engine = _engine(u)
    if engine == "sqlite":
        removed = []
        for suffix in ("", "-wal", "-shm"):
            p = u.database + suffix
            if os.path.exists(p):
                os.unlink(p)
                removed.append(p)
        if not removed:
            raise DBError(f"database {u.database} does not exist")
        return [f"removed {u.database}"]
    adm = _connect(admin_url or default_admin_url(u))
    try:
        r = adm.raw_query("SELECT 1 FROM pg_database WHERE datname = ?",
                          (u.database,))
        if not r.rows:
            raise DBError(f"database {u.database} does not exist")
        adm.raw_query("SELECT pg_terminate_backend(pid) FROM "
                      "pg_stat_activity WHERE datname = ? AND "
                      "pid <> pg_backend_pid()", (u.database,))
        adm.raw_query(f"DROP DATABASE {_pg_ident(u.database)}")
    finally:
        adm.close()
    return [f"dropped database {u.database}"]


def tables(url: str) -> Dict[str, Optional[int]]:
    """{table: version} for the known tables present in the database
    (None when the table exists but has no version row)."""
    con = _connect(url)
    try:
        if not con.table_exists(VERSION_TABLE):
            raise DBError(f"{con.url.redacted()} has no '{VERSION_TABLE}' "
                          f"table: not an opensipy/OpenSIPS database")
        con.use_table(VERSION_TABLE)
        versions = {n: int(v) for n, v in con.query(
            cols=["table_name", "table_version"]).rows}
        out = {}
        for t in schema.all_tables():
            if t.name == VERSION_TABLE or con.table_exists(t.name):
                out[t.name] = versions.get(t.name,
                                           1 if t.name == VERSION_TABLE
                                           else None)
        for n, v in versions.items():
            out.setdefault(n, v)
        return out
    finally:
        con.close()


def outdated(url: str) -> Dict[str, int]:
    """{table: its version} for the known tables of ``url`` whose version
    is not the one this opensipy uses."""
    return {n: v for n, v in tables(url).items()
            if n in schema.TABLES and n != VERSION_TABLE and v is not None
            and v != schema.TABLES[n].version}


def upgrade(url: str) -> List[str]:
    """``opensipyctl db migrate URL``: bring every table of an older schema
    version up to this opensipy's, in place (the columns added since, with
    their defaults; the ``version`` rows).  Every table is checked before
    anything changes; a version opensipy has no upgrade for is refused,
    naming the table."""
    u = parse_db_url(url)
    engine = _engine(u)
    old = outdated(url)
    for n, v in old.items():
        t = schema.TABLES[n]
        if v > t.version:
            raise DBError(f"table '{n}' has version {v}, newer than this "
                          f"opensipy's {t.version}: upgrade opensipy")
        t.columns_of(v)            # raises for an unknown older version
    if not old:
        return [f"{u.redacted()}: every table is at its current version"]
    done = []
    con = _connect(url)
    try:
        for n, v in old.items():
            t = schema.TABLES[n]
            for c in t.older[v]:
                con.raw_query(schema.add_column_ddl(t, c, engine))
            con.raw_query(f"UPDATE {VERSION_TABLE} SET table_version = ? "
                          f"WHERE table_name = ?", (t.version, n))
            done.append(f"upgraded table {n} from version {v} to "
                        f"{t.version} (added {', '.join(t.older[v])})")
    finally:
        con.close()
    return done


def migrate(old_url: str, new_url: str,
            admin_url: Optional[str] = None) -> List[str]:
    """Copy every known table of ``old_url`` into ``new_url`` (created
    with the current schema when needed): the engines may differ.  An
    older table version that only lacks columns (OpenSIPS 3.x's dialog 10,
    domain 3) is upgraded on the way; any other version is refused, naming
    the table."""
    src = _connect(old_url)
    done = []
    try:
        present = tables(old_url)
        names = [n for n in present if n in schema.TABLES
                 and n != VERSION_TABLE]
        src_cols = {}
        for n in names:
            if present[n] is None:
                raise DBError(f"table '{n}' has no row in the old "
                              f"database's version table")
            src_cols[n] = schema.TABLES[n].columns_of(present[n])
        nu = parse_db_url(new_url)
        dst_engine = _engine(nu)
        groups = [g for g, ts in schema.GROUPS.items()
                  if any(t.name in names for t in ts)]
        try:
            existing = tables(new_url)
        except DBError:
            existing = None
        if existing is None:
            done += create(new_url, groups, admin_url,
                           create_database=(dst_engine == "postgres"))
        dst = _connect(new_url)
        try:
            for n in names:
                t = schema.TABLES[n]
                cols = src_cols[n]
                src.use_table(n)
                res = src.query(cols=cols)
                dst.use_table(n)
                dst.delete()
                for row in res.rows:
                    dst.insert(cols, list(row))
                if dst_engine == "postgres":
                    for c in t.columns:
                        if c.autoincrement:
                            dst.raw_query(
                                f"SELECT setval(pg_get_serial_sequence(?, ?),"
                                f" COALESCE((SELECT MAX({c.name}) FROM "
                                f"{n}), 0) + 1, false)", (n, c.name))
                done.append(f"copied {len(res.rows)} rows of {n}"
                            + (f" (version {present[n]} -> {t.version})"
                               if present[n] != t.version else ""))
        finally:
            dst.close()
    finally:
        src.close()
    return done
