"""permissions: trusted addresses from the ``address`` table and call,
registration and URI rules from allow/deny files (OpenSIPS's permissions).

``check_address(group, ip, port, proto[, context_info[, pattern]])``,
``check_source_address(group[, context_info[, pattern]])`` and
``get_source_group(var)`` match against the address table, read from the
database at start-up and by MI ``address_reload`` and cached in shared
memory (see :mod:`.address`).  ``allow_routing``, ``allow_register`` and
``allow_uri`` apply allow/deny files (see :mod:`.rules`) read at start-up.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

from opensipy import db, log, modloader
from opensipy.db import DBError
from opensipy.mi.dispatch import MIError
from opensipy.parser import ParseError
from opensipy.pvar import PVError, get_branches
from opensipy.sr_module import (CMD_PARAM_INT, CMD_PARAM_OPT,
                                CMD_PARAM_STATIC, CMD_PARAM_STR,
                                CMD_PARAM_VAR, FAILURE_ROUTE, INT_PARAM,
                                REQUEST_ROUTE, STR_PARAM, CmdExport,
                                CmdParam, MIExport, MIRecipe, ModuleExports,
                                ParamExport)

from . import address, rules

# --- parameters (OpenSIPS names) ---------------------------------------------------
default_allow_file = "permissions.allow"
default_deny_file = "permissions.deny"
check_all_branches = 1
allow_suffix = ".allow"
deny_suffix = ".deny"
db_url = ""
address_table = "address"
grp_col = "grp"
ip_col = "ip"
mask_col = "mask"
port_col = "port"
proto_col = "proto"
pattern_col = "pattern"
info_col = "context_info"

ADDRESS_VERSION = 5
_cache: Optional[address.AddressCache] = None
_files: Dict[Tuple[str, str], Tuple[rules.RuleFile, rules.RuleFile]] = {}
_default: Optional[Tuple[rules.RuleFile, rules.RuleFile]] = None


# --- the address table ----------------------------------------------------------------

def read_address_table():
    """The rows of the address table (grp, ip, mask, port, proto, pattern,
    context_info); raises DBError."""
    dbf = db.db_bind_mod(db_url, needed_by="permissions")
    con = dbf.init(db_url)
    try:
        con.use_table(address_table)
        res = con.query(None, None, None,
                        [grp_col, ip_col, mask_col, port_col, proto_col,
                         pattern_col, info_col])
        return [tuple(r) for r in res.rows]
    finally:
        con.close()


def reload_address_table() -> int:
    """Read the table and publish it to every process; returns the row
    count.  Raises DBError / ValueError and keeps the old table then."""
    rows = read_address_table()
    return _cache.store(rows)


def _table():
    if _cache is None:
        return None
    return _cache.get()


def _proto_arg(proto) -> str:
    p = (proto or "any").strip().lower()
    return p


def _set_info(msg, spec, e) -> None:
    if spec is None:
        return
    try:
        spec.set(msg, e.info if e.info is not None else "")
    except PVError as err:
        log.LM_ERR(f"permissions: cannot set {spec.text}: {err}")


def check_address(msg, group, ip, port, proto, info_spec=None,
                  pattern=None) -> int:
    t = _table()
    if t is None:
        log.LM_ERR("check_address: no address table (set db_url)")
        return -1
    if not ip:
        log.LM_ERR("check_address: empty ip")
        return -1
    e = t.match(int(group), str(ip), int(port or 0), _proto_arg(proto),
                pattern if pattern not in (None, "") else None)
    if e is None:
        return -1
    _set_info(msg, info_spec, e)
    return 1


def check_source_address(msg, group, info_spec=None, pattern=None) -> int:
    r = msg.rcv
    if r is None:
        return -1
    return check_address(msg, group, r.src_ip, r.src_port, r.proto,
                         info_spec, pattern)


def get_source_group(msg, spec) -> int:
    t = _table()
    r = msg.rcv
    if t is None or r is None:
        return -1
    g = t.group_of(r.src_ip, r.src_port)
    if g is None:
        return -1
    try:
        spec.set(msg, g)
    except PVError as err:
        log.LM_ERR(f"get_source_group: cannot set {spec.text}: {err}")
        return -1
    return 1


# --- allow/deny files -----------------------------------------------------------------

def _base_dir() -> Optional[str]:
    reg = modloader.registry
    lm = reg.get("permissions") if reg is not None else None
    if lm is not None and lm.loc:
        return os.path.dirname(os.path.abspath(lm.loc[0]))
    return None


def _load_pair(allow_path: str, deny_path: str, quiet: bool = False):
    base = _base_dir()
    a = rules.resolve(allow_path, base)
    d = rules.resolve(deny_path, base)
    key = (a, d)
    if key not in _files:
        _files[key] = (rules.RuleFile(a), rules.RuleFile(d))
        for rf in _files[key]:
            if not rf.exists:
                # the default files are optional (OpenSIPS: debug only)
                (log.LM_DBG if quiet else log.LM_WARN)(
                    f"permissions: {rf.path} does not exist (taken as "
                    f"empty)")
    return _files[key]


def fixup_basename(name):
    return _load_pair(name + allow_suffix, name + deny_suffix)


def fixup_file(name):
    return name


def _uri_of(hdr) -> str:
    if hdr is None:
        return ""
    return hdr.uri or ""


def _routing(msg, pair) -> int:
    allow, deny = pair
    frm = _uri_of(msg.from_)
    targets = [msg.new_uri or msg.ruri]
    if check_all_branches:
        targets += [b.uri for b in get_branches(msg)]
    return rules.check_pairs(allow, deny, [(frm, t) for t in targets])


def allow_routing(msg, a=None, b=None) -> int:
    if a is None:
        return _routing(msg, _default)
    if b is None:
        return _routing(msg, a)             # the basename's pair
    return _routing(msg, _load_pair(a, b))


def allow_register(msg, a, b=None) -> int:
    pair = a if b is None else _load_pair(a, b)
    to = _uri_of(msg.to)
    try:
        contacts = msg.contacts
    except ParseError:
        return -1
    pairs = []
    for c in contacts or ():
        if getattr(c, "star", False):
            continue
        pairs.append((to, c.uri))
    return rules.check_pairs(pair[0], pair[1], pairs)


def allow_uri(msg, pair, uri) -> int:
    frm = _uri_of(msg.from_)
    return rules.check_pairs(pair[0], pair[1], [(frm, str(uri))])


# --- MI ---------------------------------------------------------------------------------

def mi_address_reload(params):
    if _cache is None or not db_url:
        raise MIError(500, "No address table (db_url not set)")
    try:
        n = reload_address_table()
    except (DBError, ValueError) as e:
        log.LM_ERR(f"address_reload: {e}")
        raise MIError(500, "Failed to reload") from None
    log.LM_INFO(f"permissions: address table reloaded ({n} rows)")
    return "OK"


def _dump(subnets: bool):
    t = _table()
    dests = []
    if t is not None:
        if subnets:
            dests = [e.mi() for e in t.subnets]
        else:
            dests = [e.mi() for es in t.addresses.values() for e in es]
    return {"Partitions": [{"name": "default", "Destinations": dests}]}


def mi_address_dump(params):
    return _dump(False)


def mi_subnet_dump(params):
    return _dump(True)


# --- lifecycle ----------------------------------------------------------------------

def fixup_info_var(spec):
    if not getattr(spec, "writable", False):
        raise ValueError(f"{spec} cannot be written")
    return spec


def mod_init() -> int:
    global _cache, _default
    _files.clear()
    _default = _load_pair(default_allow_file, default_deny_file, quiet=True)
    _cache = None
    if db_url:
        _cache = address.AddressCache()
        dbf = db.db_bind_mod(db_url, needed_by="permissions")
        con = dbf.init(db_url)
        try:
            db.db_check_table_version(dbf, con, address_table,
                                      ADDRESS_VERSION)
        finally:
            con.close()
        try:
            n = reload_address_table()
        except ValueError as e:
            raise ValueError(f"permissions: table {address_table}: {e}") \
                from None
        log.LM_DBG(f"permissions: {n} addresses loaded")
    return 0


_ROUTES = REQUEST_ROUTE | FAILURE_ROUTE
_VAR_OPT = CmdParam(CMD_PARAM_VAR | CMD_PARAM_OPT, fixup=fixup_info_var)
_BASENAME = CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC, fixup=fixup_basename)
_FILE = CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC, fixup=fixup_file)

exports = ModuleExports(
    name="permissions",
    cmds=[
        CmdExport("check_address", check_address, [
            CmdParam(CMD_PARAM_INT), CmdParam(CMD_PARAM_STR),
            CmdParam(CMD_PARAM_INT), CmdParam(CMD_PARAM_STR), _VAR_OPT,
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _ROUTES),
        CmdExport("check_source_address", check_source_address, [
            CmdParam(CMD_PARAM_INT), _VAR_OPT,
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _ROUTES),
        CmdExport("get_source_group", get_source_group, [
            CmdParam(CMD_PARAM_VAR, fixup=fixup_info_var)], _ROUTES),
        CmdExport("allow_routing", allow_routing, [], _ROUTES),
        CmdExport("allow_routing", allow_routing, [_BASENAME], _ROUTES),
        CmdExport("allow_routing", allow_routing, [_FILE, _FILE], _ROUTES),
        CmdExport("allow_register", allow_register, [_BASENAME], _ROUTES),
        CmdExport("allow_register", allow_register, [_FILE, _FILE],
                  _ROUTES),
        CmdExport("allow_uri", allow_uri,
                  [_BASENAME, CmdParam(CMD_PARAM_STR)], _ROUTES),
    ],
    params=[
        ParamExport("default_allow_file", STR_PARAM, "default_allow_file"),
        ParamExport("default_deny_file", STR_PARAM, "default_deny_file"),
        ParamExport("check_all_branches", INT_PARAM, "check_all_branches"),
        ParamExport("allow_suffix", STR_PARAM, "allow_suffix"),
        ParamExport("deny_suffix", STR_PARAM, "deny_suffix"),
        ParamExport("db_url", STR_PARAM, "db_url"),
        ParamExport("address_table", STR_PARAM, "address_table"),
        ParamExport("grp_col", STR_PARAM, "grp_col"),
        ParamExport("ip_col", STR_PARAM, "ip_col"),
        ParamExport("mask_col", STR_PARAM, "mask_col"),
        ParamExport("port_col", STR_PARAM, "port_col"),
        ParamExport("proto_col", STR_PARAM, "proto_col"),
        ParamExport("pattern_col", STR_PARAM, "pattern_col"),
        ParamExport("info_col", STR_PARAM, "info_col"),
    ],
    mi_cmds=[
        MIExport("address_reload", "reloads the address table", 0, None,
                 [MIRecipe(mi_address_reload, ())]),
        MIExport("address_dump", "dumps the cached single addresses", 0,
                 None, [MIRecipe(mi_address_dump, ())]),
        MIExport("subnet_dump", "dumps the cached subnets", 0, None,
                 [MIRecipe(mi_subnet_dump, ())]),
    ],
    init_f=mod_init,
)
