"""``opensipyctl db``: the database of opensipy (and of OpenSIPS), as
opensips-cli's ``database`` module handles it.

    opensipyctl db create [URL] [GROUP ...]   role, database and tables
    opensipyctl db drop [URL]                 the database
    opensipyctl db migrate [URL]              upgrade older tables in place
    opensipyctl db migrate OLD_URL NEW_URL    copy every table (any engines)
    opensipyctl db tables [URL]               tables and their versions

The URL comes from the command line or the configuration's
``database_url`` (opensips-cli's key); PostgreSQL's admin connection from
``database_admin_url`` (default: user ``postgres`` on the URL's host,
database ``postgres``).  ``database_modules`` (space-separated) chooses the
table groups ``create`` makes when none is given; the groups are OpenSIPS's
script names: standard, usrloc, auth_db, acc, dialog, permissions,
alias_db, domain, cachedb_sql.
"""
from __future__ import annotations

from typing import List

from ..db import DBError, parse_db_url
from ..db import admin, schema

USAGE = ("db create [URL] [GROUP ...] | db drop [URL] | "
         "db migrate [URL] | db migrate OLD_URL NEW_URL | db tables [URL]")


def _url(ctl, args: List[str], usage_error) -> str:
    if args and "://" in args[0]:
        return args.pop(0)
    url = (ctl.cfg.get("database_url") or "").strip()
    if not url:
        raise usage_error("no database URL: give one or set database_url "
                          "in the configuration")
    return url


def run_db(ctl, args: List[str], usage_error, fail_error) -> None:
    if not args:
        raise usage_error(f"which db command? ({USAGE})")
    sub, rest = args[0], list(args[1:])
    admin_url = (ctl.cfg.get("database_admin_url") or "").strip() or None
    try:
        if sub == "create":
            url = _url(ctl, rest, usage_error)
            groups = rest or (ctl.cfg.get("database_modules") or "").split()
            for g in groups:
                if g not in schema.GROUPS:
                    raise usage_error(f"unknown table group '{g}' (groups: "
                                      f"{', '.join(schema.GROUPS)})")
            done = admin.create(url, groups or None, admin_url)
            ctl.print("\n".join(done))
            ctl.print(f"database {parse_db_url(url).redacted()} created")
        elif sub == "drop":
            url = _url(ctl, rest, usage_error)
            if rest:
                raise usage_error("db drop [URL]")
            ctl.print("\n".join(admin.drop(url, admin_url)))
        elif sub == "migrate":
            if len(rest) == 2:
                ctl.print("\n".join(admin.migrate(rest[0], rest[1],
                                                  admin_url)))
            elif len(rest) <= 1:
                url = _url(ctl, rest, usage_error)
                ctl.print("\n".join(admin.upgrade(url)))
            else:
                raise usage_error("db migrate [URL] | db migrate OLD_URL "
                                  "NEW_URL")
        elif sub == "tables":
            url = _url(ctl, rest, usage_error)
            if rest:
                raise usage_error("db tables [URL]")
            rows = admin.tables(url)
            width = max(len(n) for n in rows)
            ctl.print("\n".join(f"{n.ljust(width)}  "
                                f"{'-' if v is None else v}"
                                for n, v in rows.items()))
        else:
            raise usage_error(f"unknown db command '{sub}' ({USAGE})")
    except DBError as e:
        raise fail_error(str(e)) from None
