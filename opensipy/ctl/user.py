"""``opensipyctl user``: subscribers in the ``subscriber`` table, as
opensips-cli's ``user`` module keeps them.

    opensipyctl user add USER@DOMAIN PASSWORD
    opensipyctl user passwd USER@DOMAIN PASSWORD
    opensipyctl user rm USER@DOMAIN
    opensipyctl user list [DOMAIN]

``-t TABLE`` (first) names another subscriber-like table; ``-u URL`` another
database than the configuration's ``database_url``.  Every write stores the
three HA1 columns auth_db reads (``ha1`` = MD5, ``ha1_sha256``,
``ha1_sha512t256`` of ``user:domain:password``); the ``password`` column
gets the plain password only when the configuration says
``plain_text_passwords = true`` (opensips-cli's key), for servers that run
auth_db with ``calculate_ha1``.
"""
from __future__ import annotations

import hashlib
import re
from typing import List

from ..db import DBError, db_bind_mod

USAGE = ("user add USER@DOMAIN PASSWORD | user passwd USER@DOMAIN PASSWORD"
         " | user rm USER@DOMAIN | user list [DOMAIN]   (-t TABLE, -u URL "
         "first)")
_USER = re.compile(r"[^@:\s]+\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9.\-\[\]:]+\Z")


def ha1s(user: str, domain: str, password: str) -> dict:
    text = f"{user}:{domain}:{password}".encode()
    return {"ha1": hashlib.md5(text, usedforsecurity=False).hexdigest(),
            "ha1_sha256": hashlib.sha256(text).hexdigest(),
            "ha1_sha512t256": hashlib.new("sha512_256", text).hexdigest()}


def _split(aor: str, usage_error):
    if aor.startswith("sip:"):
        aor = aor[4:]
    user, at, domain = aor.partition("@")
    if not at or not _USER.match(user) or not _DOMAIN.match(domain):
        raise usage_error(f"'{aor}' is not USER@DOMAIN")
    return user, domain


def _truthy(v) -> bool:
    return str(v or "").strip().lower() in ("1", "true", "yes", "on")


def run_user(ctl, args: List[str], usage_error, fail_error) -> None:
    table = "subscriber"
    url = None
    while len(args) >= 2 and args[0] in ("-t", "-u"):
        if args[0] == "-t":
            table = args[1]
        else:
            url = args[1]
        args = args[2:]
    if not args:
        raise usage_error(f"which user command? ({USAGE})")
    url = url or (ctl.cfg.get("database_url") or "").strip()
    if not url:
        raise usage_error("no database URL: give -u URL or set "
                          "database_url in the configuration")
    plain = _truthy(ctl.cfg.get("plain_text_passwords"))
    sub, rest = args[0], args[1:]
    try:
        dbf = db_bind_mod(url)
        con = dbf.init(url)
    except DBError as e:
        raise fail_error(str(e)) from None
    try:
        con.use_table(table)
        if sub in ("add", "passwd"):
            if len(rest) != 2:
                raise usage_error(f"user {sub} USER@DOMAIN PASSWORD")
            user, domain = _split(rest[0], usage_error)
            password = rest[1]
            if not password:
                raise usage_error("the password is empty")
            cols = ha1s(user, domain, password)
            cols["password"] = password if plain else ""
            exists = con.query(["username", "domain"], ["=", "="],
                               [user, domain], ["username"]).rows
            if sub == "add":
                if exists:
                    raise fail_error(f"user {user}@{domain} already exists")
                names = ["username", "domain"] + list(cols)
                con.insert(names, [user, domain] + list(cols.values()))
                ctl.print(f"user {user}@{domain} added")
            else:
                if not exists:
                    raise fail_error(f"no user {user}@{domain}")
                con.update(["username", "domain"], ["=", "="],
                           [user, domain], list(cols), list(cols.values()))
                ctl.print(f"password of {user}@{domain} changed")
        elif sub == "rm":
            if len(rest) != 1:
                raise usage_error("user rm USER@DOMAIN")
            user, domain = _split(rest[0], usage_error)
            n = con.delete(["username", "domain"], ["=", "="],
                           [user, domain])
            if not n:
                raise fail_error(f"no user {user}@{domain}")
            ctl.print(f"user {user}@{domain} removed")
        elif sub == "list":
            if len(rest) > 1:
                raise usage_error("user list [DOMAIN]")
            if rest:
                res = con.query(["domain"], ["="], [rest[0]],
                                ["username", "domain"], "username")
            else:
                res = con.query(None, None, None, ["username", "domain"],
                                "username")
            lines = sorted(f"{u}@{d}" for u, d in res.rows)
            ctl.print("\n".join(lines) if lines else "no users")
        else:
            raise usage_error(f"unknown user command '{sub}' ({USAGE})")
    except DBError as e:
        raise fail_error(str(e)) from None
    finally:
        con.close()
