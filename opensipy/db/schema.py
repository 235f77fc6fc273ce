"""OpenSIPS's database schema, described once and turned into DDL.

Each table is described as OpenSIPS's ``db/schema/*.xml`` describes it:
its name, its version (the row it gets in the ``version`` table), its
columns (OpenSIPS's names, types, sizes, defaults, NULL-ness) and its
indexes.  Tables are grouped as OpenSIPS's ``scripts/<engine>/<group>-
create.sql`` files group them (one group per module: ``standard``,
``usrloc``, ``auth_db``, ...).  :func:`ddl` gives the SQLite or PostgreSQL
statements; a database made by OpenSIPS 3.x/4.x with the same table
versions has the same tables and columns, so either tool can use it.

The versions are OpenSIPS 4.x's; the 3.x tables that differ (``dialog``
10, ``domain`` 3) only lack columns added since, which ``opensipyctl db
migrate`` fills with their defaults when it copies such a database.

Column types (``type``) are the XML's: ``int`` (``unsigned int``
included), ``bigint``, ``smallint``, ``float``, ``double``, ``string``
(needs ``size``), ``text``, ``blob``, ``datetime``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from . import VERSION_TABLE, DBError

__all__ = ["Column", "Index", "Table", "GROUPS", "TABLES", "table",
           "ddl", "ddl_group", "drop_ddl", "ENGINES"]

ENGINES = ("sqlite", "postgres")
_NO_DEFAULT = object()


@dataclass
class Column:
    name: str
    type: str
    size: int = 0
    null: bool = False
    default: Any = _NO_DEFAULT
    autoincrement: bool = False
    primary: bool = False

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@dataclass
class Index:
    name: str
    columns: Sequence[str]
    unique: bool = False


@dataclass
class Table:
    name: str
    version: int
    columns: List[Column]
    indexes: List[Index] = field(default_factory=list)
    # older versions of the table that differ only by columns added since
    # (version -> those columns): migrate copies them, the new columns take
    # their defaults
    older: Dict[int, List[str]] = field(default_factory=dict)

    def columns_of(self, version: int) -> List[str]:
        if version == self.version:
            return self.column_names
        if version not in self.older:
            raise DBError(f"table '{self.name}' version {version} is not "
                          f"one opensipy knows (it knows {self.version}"
                          + "".join(f", {v}" for v in self.older) + ")")
        added = set(self.older[version])
        return [c for c in self.column_names if c not in added]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def column_names(self) -> List[str]:
        return [c.name for c in self.columns]


def C(name, type, size=0, null=False, default=_NO_DEFAULT, **kw) -> Column:
    return Column(name, type, size, null, default, **kw)


def ID(name="id", type="int") -> Column:
    return Column(name, type, 0, False, _NO_DEFAULT, autoincrement=True,
                  primary=True)


S = "string"
DATE_ZERO = "1900-01-01 00:00:01"

# --- the tables ---------------------------------------------------------------

VERSION = Table(VERSION_TABLE, 1, [
    C("table_name", S, 32),
    C("table_version", "int", default=0),
], [Index("t_name_idx", ["table_name"], unique=True)])

LOCATION = Table("location", 1013, [
    ID("contact_id", "bigint"),
    C("username", S, 64, default=""),
    C("domain", S, 64, null=True, default=None),
    C("contact", "text"),
    C("received", S, 255, null=True, default=None),
    C("path", S, 255, null=True, default=None),
    C("expires", "int"),
    C("q", "float", default=1.0),
    C("callid", S, 255, default="Default-Call-ID"),
    C("cseq", "int", default=13),
    C("last_modified", "datetime", default=DATE_ZERO),
    C("flags", "int", default=0),
    C("cflags", S, 255, null=True, default=None),
    C("user_agent", S, 255, default=""),
    C("socket", S, 64, null=True, default=None),
    C("methods", "int", null=True, default=None),
    C("sip_instance", S, 255, null=True, default=None),
    C("kv_store", "text", null=True, default=None),
    C("attr", S, 255, null=True, default=None),
])

SUBSCRIBER = Table("subscriber", 8, [
    ID(),
    C("username", S, 64, default=""),
    C("domain", S, 64, default=""),
    C("password", S, 25, default=""),
    C("email_address", S, 64, default=""),
    C("ha1", S, 64, default=""),
    C("ha1_sha256", S, 64, default=""),
    C("ha1_sha512t256", S, 64, default=""),
    C("rpid", S, 64, null=True, default=None),
], [Index("account_idx", ["username", "domain"], unique=True),
    Index("username_idx", ["username"])],
    # OpenSIPS 3.1's version 7 had ha1b (MD5 of user@domain:realm:password)
    # where 3.2+ has the SHA-2 HA1s; an upgraded table keeps its ha1b
    older={7: ["ha1_sha256", "ha1_sha512t256"]})

URI = Table("uri", 2, [
    ID(),
    C("username", S, 64, default=""),
    C("domain", S, 64, default=""),
    C("uri_user", S, 64, default=""),
    C("last_modified", "datetime", default=DATE_ZERO),
], [Index("account_idx", ["username", "domain", "uri_user"], unique=True)])


def _acc_columns(with_duration: bool) -> List[Column]:
    cols = [
        ID(),
        C("method", S, 16, default=""),
        C("from_tag", S, 64, default=""),
        C("to_tag", S, 64, default=""),
        C("callid", S, 64, default=""),
        C("sip_code", S, 3, default=""),
        C("sip_reason", S, 32, default=""),
        C("time", "datetime"),
    ]
    if with_duration:
        cols += [C("duration", "int", default=0),
                 C("ms_duration", "int", default=0)]
    cols += [C("setuptime", "int", default=0),
             C("created", "datetime", null=True, default=None)]
    return cols


ACC = Table("acc", 7, _acc_columns(True),
            [Index("callid_idx", ["callid"])])
MISSED_CALLS = Table("missed_calls", 5, _acc_columns(False),
                     [Index("callid_idx", ["callid"])])

DIALOG = Table("dialog", 11, [
    C("dlg_id", "bigint", primary=True),
    C("callid", S, 255),
    C("from_uri", S, 255),
    C("from_tag", S, 64),
    C("to_uri", S, 255),
    C("to_tag", S, 64),
    C("mangled_from_uri", S, 64, null=True, default=None),
    C("mangled_to_uri", S, 64, null=True, default=None),
    C("caller_cseq", S, 11),
    C("callee_cseq", S, 11),
    C("caller_ping_cseq", "int"),
    C("callee_ping_cseq", "int"),
    C("caller_route_set", "text", null=True),
    C("callee_route_set", "text", null=True),
    C("caller_contact", S, 255, null=True),
    C("callee_contact", S, 255, null=True),
    C("caller_sock", S, 64),
    C("callee_sock", S, 64),
    C("state", "int"),
    C("start_time", "int"),
    C("timeout", "int"),
    C("vars", "blob", null=True, default=None),
    C("profiles", "text", null=True, default=None),
    C("script_flags", "int", default=0),
    C("module_flags", "int", default=0),
    C("flags", "int", default=0),
    C("rt_on_answer", S, 64, null=True, default=None),
    C("rt_on_timeout", S, 64, null=True, default=None),
    C("rt_on_hangup", S, 64, null=True, default=None),
], older={10: ["rt_on_answer", "rt_on_timeout", "rt_on_hangup"]})

ADDRESS = Table("address", 5, [
    ID(),
    C("grp", "smallint", default=0),
    C("ip", S, 50),
    C("mask", "smallint", default=32),
    C("port", "smallint", default=0),
    C("proto", S, 4, default="any"),
    C("pattern", S, 64, null=True, default=None),
    C("context_info", S, 32, null=True, default=None),
])

DBALIASES = Table("dbaliases", 2, [
    ID(),
    C("alias_username", S, 64, default=""),
    C("alias_domain", S, 64, default=""),
    C("username", S, 64, default=""),
    C("domain", S, 64, default=""),
], [Index("alias_idx", ["alias_username", "alias_domain"], unique=True),
    Index("target_idx", ["username", "domain"])])

DOMAIN = Table("domain", 4, [
    ID(),
    C("domain", S, 64, default=""),
    C("attrs", S, 255, null=True, default=None),
    C("accept_subdomain", "int", default=0),
    C("last_modified", "datetime", default=DATE_ZERO),
], [Index("domain_idx", ["domain"], unique=True)],
    older={3: ["accept_subdomain"]})

CACHEDB = Table("cachedb", 2, [
    ID(),
    C("keyname", S, 255),
    C("value", "text"),
    C("counter", "int", default=0),
    C("expires", "int", default=0),
], [Index("cachedbsql_keyname_idx", ["keyname"], unique=True)])

# group (OpenSIPS's scripts/<engine>/<group>-create.sql) -> tables
GROUPS: Dict[str, List[Table]] = {
    "standard": [VERSION],
    "usrloc": [LOCATION],
    "auth_db": [SUBSCRIBER, URI],
    "acc": [ACC, MISSED_CALLS],
    "dialog": [DIALOG],
    "permissions": [ADDRESS],
    "alias_db": [DBALIASES],
    "domain": [DOMAIN],
    "cachedb_sql": [CACHEDB],
}
TABLES: Dict[str, Table] = {t.name: t for ts in GROUPS.values() for t in ts}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise DBError(f"no schema for table '{name}'") from None


# --- DDL ---------------------------------------------------------------------

def _sql_type(c: Column, engine: str) -> str:
    t = c.type
    if engine == "sqlite":
        return {"int": "INTEGER", "bigint": "BIGINT", "smallint": "SMALLINT",
                "float": "FLOAT", "double": "DOUBLE", "text": "TEXT",
                "blob": "BLOB", "datetime": "DATETIME",
                "string": f"CHAR({c.size})"}[t]
    return {"int": "INTEGER", "bigint": "BIGINT", "smallint": "SMALLINT",
            "float": "REAL", "double": "DOUBLE PRECISION", "text": "TEXT",
            "blob": "BYTEA", "datetime": "TIMESTAMP WITHOUT TIME ZONE",
            "string": f"VARCHAR({c.size})"}[t]


def _literal(v) -> str:
    """A schema default as SQL (these are constants of this file, never
    user data)."""
    if v is None:
        return "NULL"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if "'" in s:
        raise DBError(f"bad schema default {s!r}")
    return f"'{s}'"


def _column_ddl(c: Column, engine: str) -> str:
    if c.autoincrement:
        if engine == "sqlite":
            return f"{c.name} INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL"
        serial = "BIGSERIAL" if c.type == "bigint" else "SERIAL"
        return f"{c.name} {serial} PRIMARY KEY NOT NULL"
    parts = [c.name, _sql_type(c, engine)]
    if c.primary:
        parts.append("PRIMARY KEY")
    if c.has_default:
        parts.append("DEFAULT " + _literal(c.default))
    if not c.null:
        parts.append("NOT NULL")
    return " ".join(parts)


def add_column_ddl(t: Table, column: str, engine: str) -> str:
    """ALTER TABLE ... ADD COLUMN for a column a newer version added (it
    has a default, so existing rows get it)."""
    return f"ALTER TABLE {t.name} ADD COLUMN " \
        f"{_column_ddl(t.column(column), engine)}"


def ddl(t: Table, engine: str) -> List[str]:
    """CREATE TABLE (+ indexes) and the version row, for one table."""
    if engine not in ENGINES:
        raise DBError(f"no DDL for engine '{engine}'")
    lines = [_column_ddl(c, engine) for c in t.columns]
    for ix in t.indexes:
        if ix.unique:
            lines.append(f"CONSTRAINT {t.name}_{ix.name} UNIQUE "
                         f"({', '.join(ix.columns)})")
    out = [f"CREATE TABLE {t.name} (\n    " + ",\n    ".join(lines) + "\n)"]
    for ix in t.indexes:
        if not ix.unique:
            out.append(f"CREATE INDEX {t.name}_{ix.name} ON {t.name} "
                       f"({', '.join(ix.columns)})")
    if t.name != VERSION_TABLE:
        out.append(f"INSERT INTO {VERSION_TABLE} (table_name, table_version) "
                   f"VALUES ('{t.name}', '{t.version}')")
    return out


def ddl_group(group: str, engine: str) -> List[str]:
    try:
        tables = GROUPS[group]
    except KeyError:
        raise DBError(f"no schema group '{group}' (groups: "
                      f"{', '.join(GROUPS)})") from None
    return [s for t in tables for s in ddl(t, engine)]


def drop_ddl(t: Table) -> List[str]:
    return [f"DROP TABLE IF EXISTS {t.name}"]


def all_tables() -> List[Table]:
    return [t for ts in GROUPS.values() for t in ts]


def sql_script(engine: str, groups: Optional[Sequence[str]] = None) -> str:
    groups = list(groups or GROUPS)
    return "".join(s + ";\n" for g in groups for s in ddl_group(g, engine))
