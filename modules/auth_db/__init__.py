"""auth_db: digest authentication against a subscriber table through the
DB API (OpenSIPS's auth_db).

``www_authorize(realm, table)`` / ``proxy_authorize(realm, table)`` look the
user up (``username`` = the credentials' user, and ``domain`` = the realm
when ``use_domain``), take the HA1 of the credentials' algorithm
(``password_column`` for MD5, ``hash_column_sha256``,
``hash_column_sha512t256``; with ``calculate_ha1`` the ``password_column``
holds the plain password and the HA1 is computed), check the response
through the auth module's API and, on success, load the
``load_credentials`` columns into AVPs.  ``db_does_uri_exist``,
``db_is_to_authorized``, ``db_is_from_authorized`` and ``db_get_auth_id``
read the subscriber / uri tables.

Return codes are auth's (see modules/auth).  A database failure is -5 (no
reply sent), as OpenSIPS's "generic error".
"""
from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import List, Optional, Tuple

from opensipy import db, log, modloader
from opensipy.db import DBError
from opensipy.parser import ParseError, parse_uri
from opensipy.pvar import PVError, parse_pv
from opensipy.sr_module import (CMD_PARAM_STATIC, CMD_PARAM_STR,
                                CMD_PARAM_VAR, FAILURE_ROUTE, INT_PARAM,
                                LOCAL_ROUTE, REQUEST_ROUTE, STR_PARAM,
                                CmdExport, CmdParam, DepExport, ModuleDep,
                                ModuleExports, ParamExport)

# --- parameters (OpenSIPS names) ---------------------------------------------------
db_url = ""
calculate_ha1 = 0
use_domain = 1
load_credentials = ""
skip_version_check = 0
user_column = "username"
domain_column = "domain"
password_column = "ha1"
hash_column_sha256 = "ha1_sha256"
hash_column_sha512t256 = "ha1_sha512t256"
uri_user_column = "username"
uri_domain_column = "domain"
uri_uriuser_column = "uri_user"
# opensipy additions (see README): a per-process cache of subscriber rows
credentials_cache_ttl = 0
credentials_cache_size = 1024

SUBSCRIBER_VERSION = 8
URI_VERSION = 2

auth = None          # the auth module's API
_dbf = None
_con = None
_con_pid = None
_creds: List[Tuple[object, str]] = []       # (avp spec, column)
_cache: "OrderedDict" = OrderedDict()

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _conn():
    """This process's connection (opened on first use after the fork)."""
    global _con, _con_pid
    import os
    if _con is None or _con_pid != os.getpid():
        _con = _dbf.init(db_url)
        _con_pid = os.getpid()
    return _con


def _ident(name: str, what: str) -> str:
    if not _IDENT.match(name or ""):
        raise ValueError(f"{what} {name!r} is not a column/table name")
    return name


def parse_load_credentials(text: str, registry=None):
    """``"$avp(13)=rpid;email_address"`` -> [(spec of $avp(13), "rpid"),
    (spec of $avp(email_address), "email_address")]."""
    out = []
    for item in (text or "").split(";"):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            avp, col = (x.strip() for x in item.split("=", 1))
        else:
            avp, col = f"$avp({item})", item
        _ident(col, "load_credentials column")
        try:
            spec = parse_pv(avp, registry)
        except PVError as e:
            raise ValueError(f"load_credentials: {e}") from None
        if not spec.writable:
            raise ValueError(f"load_credentials: {avp} cannot be written")
        out.append((spec, col))
    return out


# --- the subscriber row ---------------------------------------------------------------

def _hash_column(algorithm: str) -> str:
    if calculate_ha1:
        return password_column
    base = algorithm[:-5] if algorithm.endswith("-sess") else algorithm
    if base == "SHA-256":
        return hash_column_sha256
    if base == "SHA-512-256":
        return hash_column_sha512t256
    return password_column


def _columns() -> List[str]:
    cols = [password_column]
    if not calculate_ha1:
        cols += [hash_column_sha256, hash_column_sha512t256]
    for _, c in _creds:
        if c not in cols:
            cols.append(c)
    return cols


def fetch_row(table: str, user: str, domain: str) -> Optional[dict]:
    """The subscriber row of ``user`` (@``domain`` with use_domain), None
    when there is none; raises DBError."""
    key = (table, user, domain if use_domain else "")
    if credentials_cache_ttl > 0:
        hit = _cache.get(key)
        if hit is not None:
            if hit[0] > time.monotonic():
                _cache.move_to_end(key)
                return hit[1]
            del _cache[key]
    con = _conn()
    con.use_table(table)
    keys, ops, vals = [user_column], ["="], [user]
    if use_domain:
        keys.append(domain_column)
        ops.append("=")
        vals.append(domain)
    res = con.query(keys, ops, vals, _columns())
    rows = res.dicts()
    if not rows:
        return None
    if len(rows) > 1:
        log.LM_WARN(f"auth_db: {len(rows)} rows for user {user!r} in "
                    f"{table} (set use_domain?): using the first")
    row = rows[0]
    if credentials_cache_ttl > 0:
        _cache[key] = (time.monotonic() + credentials_cache_ttl, row)
        while len(_cache) > max(credentials_cache_size, 1):
            _cache.popitem(last=False)
    return row


def _authorize(msg, realm: str, table: str, hf_name: str) -> int:
    found = {}

    def get_ha1(msg, cred, realm):
        try:
            row = fetch_row(table, cred.user, realm)
        except DBError as e:
            log.LM_ERR(f"auth_db: cannot read {table}: {e}")
            return auth.AUTH_ERROR
        if row is None:
            return None
        value = row.get(_hash_column(cred.algorithm))
        if not value:
            log.LM_INFO(f"auth_db: user {cred.username!r} has no "
                        f"{_hash_column(cred.algorithm)} for "
                        f"{cred.algorithm}")
            return ""
        found["row"] = row
        if calculate_ha1:
            return auth.calc_HA1(cred.algorithm, cred.username, realm,
                                 str(value))
        return str(value)

    rc = auth.authorize(msg, realm, hf_name, get_ha1)
    if rc == 1 and "row" in found:
        for spec, col in _creds:
            v = found["row"].get(col)
            if v is not None:
                try:
                    spec.set(msg, v)
                except PVError as e:
                    log.LM_ERR(f"auth_db: cannot load {col} into "
                               f"{spec.text}: {e}")
    return rc


def www_authorize(msg, realm, table) -> int:
    return _authorize(msg, realm, table, "Authorization")


def proxy_authorize(msg, realm, table) -> int:
    return _authorize(msg, realm, table, "Proxy-Authorization")


# --- the URI checks -------------------------------------------------------------------

def _user_host(uri_text) -> Optional[Tuple[str, str]]:
    try:
        u = parse_uri(str(uri_text))
    except (ParseError, ValueError):
        return None
    if u is None or not u.user:
        return None
    return u.user, u.host or ""


def db_does_uri_exist(msg, uri, table) -> int:
    uh = _user_host(uri)
    if uh is None:
        log.LM_ERR(f"db_does_uri_exist: {uri!r} has no user part")
        return -1
    con = _conn()
    try:
        con.use_table(table)
        keys, ops, vals = [user_column], ["="], [uh[0]]
        if use_domain:
            keys.append(domain_column)
            ops.append("=")
            vals.append(uh[1])
        res = con.query(keys, ops, vals, [user_column])
    except DBError as e:
        log.LM_ERR(f"db_does_uri_exist: {e}")
        return -2
    return 1 if res.rows else -1


def _authorized_cred(msg):
    for st in (getattr(msg, "auth_state", None) or {}).values():
        if st.authorized and st.cred is not None:
            return st.cred
    return None


def _is_authorized(msg, table, which) -> int:
    cred = _authorized_cred(msg)
    if cred is None:
        log.LM_ERR(f"db_is_{which}_authorized: no authorized credentials "
                   f"(call www_authorize/proxy_authorize first)")
        return -1
    hdr = msg.to if which == "to" else msg.from_
    try:
        u = hdr.parsed_uri if hdr is not None else None
    except (ParseError, ValueError):
        u = None
    if u is None or not u.user:
        log.LM_ERR(f"db_is_{which}_authorized: the {which.title()} URI has "
                   f"no user")
        return -1
    con = _conn()
    try:
        con.use_table(table)
        keys = [uri_user_column, uri_uriuser_column]
        vals = [cred.user, u.user]
        if use_domain:
            keys.append(uri_domain_column)
            vals.append(u.host or "")
        res = con.query(keys, ["="] * len(keys), vals, [uri_user_column])
    except DBError as e:
        log.LM_ERR(f"db_is_{which}_authorized: {e}")
        return -2
    return 1 if res.rows else -1


def db_is_to_authorized(msg, table) -> int:
    return _is_authorized(msg, table, "to")


def db_is_from_authorized(msg, table) -> int:
    return _is_authorized(msg, table, "from")


def db_get_auth_id(msg, table, uri, auth_var, realm_var) -> int:
    uh = _user_host(uri)
    if uh is None:
        log.LM_ERR(f"db_get_auth_id: {uri!r} has no user part")
        return -1
    con = _conn()
    try:
        con.use_table(table)
        keys, vals = [uri_uriuser_column], [uh[0]]
        if use_domain:
            keys.append(uri_domain_column)
            vals.append(uh[1])
        res = con.query(keys, ["="] * len(keys), vals,
                        [uri_user_column, uri_domain_column])
    except DBError as e:
        log.LM_ERR(f"db_get_auth_id: {e}")
        return -2
    if not res.rows:
        return -1
    user, domain = res.rows[0]
    try:
        auth_var.set(msg, user)
        realm_var.set(msg, domain)
    except PVError as e:
        log.LM_ERR(f"db_get_auth_id: {e}")
        return -2
    return 1


# --- fixups, lifecycle -------------------------------------------------------------

def fixup_table_subscriber(name):
    return _check_table(name, SUBSCRIBER_VERSION)


def fixup_table_uri(name):
    return _check_table(name, URI_VERSION)


def _check_table(name, version):
    _ident(name, "table")
    if not skip_version_check:
        con = _dbf.init(db_url)
        try:
            db.db_check_table_version(_dbf, con, name, version)
        finally:
            con.close()
    return name


def fixup_var(spec):
    if not getattr(spec, "writable", False):
        raise ValueError(f"{spec} cannot be written")
    return spec


def mod_init() -> int:
    global auth, _dbf, _creds
    auth = modloader.load_api("auth", needed_by="auth_db")
    if not db_url:
        raise ValueError("auth_db needs db_url")
    for what, col in (("user_column", user_column),
                      ("domain_column", domain_column),
                      ("password_column", password_column),
                      ("hash_column_sha256", hash_column_sha256),
                      ("hash_column_sha512t256", hash_column_sha512t256),
                      ("uri_user_column", uri_user_column),
                      ("uri_domain_column", uri_domain_column),
                      ("uri_uriuser_column", uri_uriuser_column)):
        _ident(col, what)
    _dbf = db.db_bind_mod(db_url, needed_by="auth_db")
    _creds = parse_load_credentials(load_credentials, modloader.registry)
    _cache.clear()
    return 0


def child_init(rank: int) -> int:
    _cache.clear()
    return 0


_SUB = CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC,
                fixup=fixup_table_subscriber)
_URI = CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC, fixup=fixup_table_uri)

exports = ModuleExports(
    name="auth_db",
    deps=DepExport(md=[ModuleDep("auth")]),
    cmds=[
        CmdExport("www_authorize", www_authorize,
                  [CmdParam(CMD_PARAM_STR), _SUB], REQUEST_ROUTE),
        CmdExport("proxy_authorize", proxy_authorize,
                  [CmdParam(CMD_PARAM_STR), _SUB], REQUEST_ROUTE),
        CmdExport("db_does_uri_exist", db_does_uri_exist,
                  [CmdParam(CMD_PARAM_STR), _SUB], REQUEST_ROUTE),
        CmdExport("db_is_to_authorized", db_is_to_authorized, [_URI],
                  REQUEST_ROUTE),
        CmdExport("db_is_from_authorized", db_is_from_authorized, [_URI],
                  REQUEST_ROUTE),
        CmdExport("db_get_auth_id", db_get_auth_id,
                  [_URI, CmdParam(CMD_PARAM_STR),
                   CmdParam(CMD_PARAM_VAR, fixup=fixup_var),
                   CmdParam(CMD_PARAM_VAR, fixup=fixup_var)],
                  REQUEST_ROUTE | FAILURE_ROUTE | LOCAL_ROUTE),
    ],
    params=[
        ParamExport("db_url", STR_PARAM, "db_url"),
        ParamExport("calculate_ha1", INT_PARAM, "calculate_ha1"),
        ParamExport("use_domain", INT_PARAM, "use_domain"),
        ParamExport("load_credentials", STR_PARAM, "load_credentials"),
        ParamExport("skip_version_check", INT_PARAM, "skip_version_check"),
        ParamExport("user_column", STR_PARAM, "user_column"),
        ParamExport("domain_column", STR_PARAM, "domain_column"),
        ParamExport("password_column", STR_PARAM, "password_column"),
        ParamExport("hash_column_sha256", STR_PARAM, "hash_column_sha256"),
        ParamExport("hash_column_sha512t256", STR_PARAM,
                    "hash_column_sha512t256"),
        ParamExport("uri_user_column", STR_PARAM, "uri_user_column"),
        ParamExport("uri_domain_column", STR_PARAM, "uri_domain_column"),
        ParamExport("uri_uriuser_column", STR_PARAM, "uri_uriuser_column"),
        ParamExport("credentials_cache_ttl", INT_PARAM,
                    "credentials_cache_ttl"),
        ParamExport("credentials_cache_size", INT_PARAM,
                    "credentials_cache_size"),
    ],
    init_f=mod_init,
    init_child_f=child_init,
)
