"""usrloc: the user location tables (OpenSIPS's usrloc module).

Domains (tables such as ``location``) are registered by the modules that use
them (registrar's fixups call ``register_udomain``), before the fork; each is
a shared-memory hash table of AOR records (see :mod:`.udomain`).  The timer
removes expired contacts every ``timer_interval`` seconds.  Other modules use
the API returned by ``load_api()`` (:class:`UsrlocApi`).

With a database (``db_url``; ``db_mode`` 1..3 or the matching
``working_mode_preset``) the table ``location`` of OpenSIPS's schema is
kept in step: written at every change (write-through), flushed by the timer
(write-back), or used instead of memory (sql-only); modes 1 and 2 load it
into memory at start-up.
"""
from __future__ import annotations

import time
import zlib
from typing import Dict, Optional

from opensipy import log, shm, statistics
from opensipy.mi.dispatch import MIError, get_int, get_str, param_error
from opensipy.sr_module import (INT_PARAM, STR_PARAM, MIExport, MIRecipe,
                                ModuleExports, ParamExport, StatExport)
from opensipy.timer import register_timer

from .udomain import (ALL_METHODS, DB_ONLY, NO_DB, STATE_NAMES,
                      WRITE_BACK, WRITE_THROUGH, UContact, UDomain, URecord,
                      q2str, str2q)

PRESETS = {"single-instance-no-db": NO_DB,
           "single-instance-sql-write-through": WRITE_THROUGH,
           "single-instance-sql-write-back": WRITE_BACK,
           "sql-only": DB_ONLY}

__all__ = ["UContact", "URecord", "UDomain", "q2str", "str2q",
           "ALL_METHODS", "load_api"]

# --- parameters (OpenSIPS names) ---------------------------------------------
db_mode = 0
working_mode_preset = ""
db_url = ""
timer_interval = 60
hash_size = 9
nat_bflag = ""
matching_mode = 0          # 0: contact only, 1: contact and Call-ID
desc_time_order = 0
use_domain = 0
cseq_delay = 20

CT_MATCH_CONTACT_ONLY = 0
CT_MATCH_CONTACT_CALLID = 1

MI_CALLID = "dfjrewr12386fd6-343@opensips.mi"
MI_UA = "OpenSIPS MI Server"
MI_CSEQ = 1

registered_users = None     # the usrloc:registered_users statistic
_mode = NO_DB               # db_mode after working_mode_preset
_domains: Dict[str, UDomain] = {}
_id_counter = None


# --- domains -----------------------------------------------------------------

def register_udomain(name: str) -> UDomain:
    """The table ``name``, created on first use (only before the fork)."""
    d = _domains.get(name)
    if d is not None:
        return d
    if not name or any(c in name for c in " \t\r\n;"):
        raise ValueError(f"bad usrloc table name {name!r}")
    stats = {}
    for what in ("users", "contacts", "expires"):
        st = statistics.get_stat(f"usrloc:{name}-{what}")
        if st is None:
            st = statistics.register_stat("usrloc", f"{name}-{what}",
                                          statistics.STAT_NO_RESET
                                          if what != "expires" else 0)
        stats[what] = st
    dbs = None
    if _mode != NO_DB:
        from .dbsync import DbSync
        dbs = DbSync(db_url, name, bool(use_domain))
        dbs.check_version()
    d = UDomain(name, hash_size, stats, registered_users, _mode, dbs)
    if _mode in (WRITE_THROUGH, WRITE_BACK):
        n = d.preload()
        log.LM_INFO(f"usrloc: {n} contacts of table {name} loaded from "
                    f"the database")
    if dbs is not None:
        dbs.close()            # opened again in each process, on first use
    _domains[name] = d
    return d


def get_udomain(name: str) -> Optional[UDomain]:
    return _domains.get(name)


def domains():
    return list(_domains.values())


def new_contact_id(aor: str) -> int:
    """A 64-bit id: the AOR's hash above, a shared counter below."""
    n = _id_counter.inc() if _id_counter is not None else int(time.time())
    return ((zlib.crc32(aor.encode("utf-8", "surrogateescape")) & 0x7FFFFFFF)
            << 32) | (n & 0xFFFFFFFF)


def fix_aor(aor: str) -> str:
    """An AOR as the tables key it: without domain unless use_domain."""
    if use_domain:
        if "@" not in aor:
            raise ValueError("Domain missing in AOR")
        return aor
    return aor.split("@", 1)[0]


def match_contact(rec: URecord, contact: str, callid: Optional[str] = None,
                  instance: str = "", reg_id: int = 0,
                  mode: Optional[int] = None) -> Optional[UContact]:
    """The binding a registration refers to: by +sip.instance and reg-id
    (RFC 5626) when both are given, else by the Contact URI (and the Call-ID
    with matching_mode 1)."""
    for c in rec.contacts:
        if instance and reg_id and c.instance == instance \
                and c.reg_id == reg_id:
            return c
    mode = matching_mode if mode is None else mode
    for c in rec.contacts:
        if c.contact != contact:
            continue
        if mode == CT_MATCH_CONTACT_CALLID and callid is not None \
                and c.callid != callid:
            continue
        return c
    return None


def order_contacts(contacts):
    """Highest q first; equal q by time (newest first with desc_time_order,
    else in the order they were saved)."""
    if len(contacts) < 2:
        return list(contacts)          # nothing to order
    keyed = list(enumerate(contacts))
    if desc_time_order:
        keyed.sort(key=lambda kc: (-kc[1].q, -kc[1].last_modified, kc[0]))
    else:
        keyed.sort(key=lambda kc: (-kc[1].q, kc[0]))
    return [c for _, c in keyed]


# --- timer -------------------------------------------------------------------

def ul_timer(ticks, param) -> None:
    now = time.time()
    for d in _domains.values():
        try:
            d.expire(now)
            d.flush()
        except shm.ShmOutOfMemory as e:
            log.LM_ERR(f"usrloc: no shared memory while expiring {d.name}: "
                       f"{e}")
        except Exception as e:     # noqa: BLE001 - DBError: the next tick
            log.LM_ERR(f"usrloc: timer on table {d.name}: {e}")


# --- MI ----------------------------------------------------------------------

def _domain_of(params) -> UDomain:
    d = _domains.get(get_str(params, "table_name"))
    if d is None:
        raise MIError(404, "Table not found")
    return d


def _aor_of(params) -> str:
    try:
        return fix_aor(get_str(params, "aor"))
    except ValueError:
        raise MIError(400, "Domain missing in AOR") from None


def _flag_list(cflags: int) -> str:
    from opensipy.pvar import branch_flags
    return branch_flags.names(cflags)


def aor_item(rec: URecord, now: float, brief=False) -> dict:
    item = {"AOR": rec.aor}
    if brief:
        return item
    cts = []
    for c in rec.contacts:
        ct = {"Contact": c.contact, "ContactID": str(c.contact_id)}
        if c.expires == 0:
            ct["Expires"] = "permanent"
        elif now > c.expires:
            ct["Expires"] = "expired"
        else:
            ct["Expires"] = int(c.expires - now)
        ct["Q"] = q2str(c.q)
        ct["Callid"] = c.callid
        ct["Cseq"] = c.cseq
        if c.user_agent:
            ct["User-agent"] = c.user_agent
        if c.received:
            ct["Received"] = c.received
        if c.path:
            ct["Path"] = c.path
        ct["State"] = STATE_NAMES.get(c.state, "CS_UNKNOWN")
        ct["Flags"] = c.flags
        ct["Cflags"] = _flag_list(c.cflags)
        if c.socket:
            ct["Socket"] = c.socket
        ct["Methods"] = c.methods
        if c.attr:
            ct["Attr"] = c.attr
        if c.instance:
            ct["SIP_instance"] = c.instance
        cts.append(ct)
    item["Contacts"] = cts
    return item


def mi_dump(params, brief=False):
    now = time.time()
    out = []
    for d in _domains.values():
        aors = [aor_item(r, now, brief) for r in d.records()]
        out.append({"name": d.name, "hash_size": d.size, "AORs": aors})
    return {"Domains": out}


def mi_dump_brief(params):
    return mi_dump(params, bool(get_int(params, "brief")))


def mi_show_contact(params):
    d = _domain_of(params)
    aor = _aor_of(params)
    with d.locked(aor):
        rec = d.get(aor)
    if rec is None:
        raise MIError(404, "AOR not found")
    return aor_item(rec, time.time())


def mi_rm(params):
    d = _domain_of(params)
    aor = _aor_of(params)
    with d.locked(aor):
        rec = d.get(aor)
        if rec is not None:
            d.put(URecord(aor), rec)
    return "OK"


def mi_rm_contact(params):
    d = _domain_of(params)
    aor = _aor_of(params)
    contact = get_str(params, "contact")
    with d.locked(aor):
        rec = d.get(aor)
        if rec is None:
            raise MIError(404, "AOR not found")
        keep = [c for c in rec.contacts if c.contact != contact]
        if len(keep) == len(rec.contacts):
            raise MIError(404, "Contact not found")
        d.put(URecord(aor, keep), rec)
    return "OK"


def mi_add(params):
    d = _domain_of(params)
    aor = _aor_of(params)
    contact = get_str(params, "contact")
    if not contact or any(ch in contact for ch in "\r\n\x00"):
        raise param_error("bad contact")
    expires = get_int(params, "expires")
    if expires < 0:
        raise MIError(400, "Bad parameter value")
    try:
        q = str2q(get_str(params, "q"))
    except ValueError:
        raise MIError(400, "Bad parameter value") from None
    flags = get_int(params, "flags")
    cflags = get_int(params, "cflags")
    methods = get_int(params, "methods")
    now = int(time.time())
    with d.locked(aor):
        rec = d.get(aor)
        new = URecord(aor, list(rec.contacts) if rec else [])
        c = match_contact(new, contact)
        fields = dict(expires=now + expires if expires else 0, q=q,
                      flags=flags, cflags=cflags, methods=methods,
                      user_agent=MI_UA, callid=MI_CALLID, last_modified=now)
        if c is None:
            new.contacts.append(UContact(contact, cseq=MI_CSEQ,
                                         contact_id=new_contact_id(aor),
                                         **fields))
        else:
            for k, v in fields.items():
                setattr(c, k, v)
        new.contacts = order_contacts(new.contacts)
        try:
            d.put(new, rec)
        except shm.ShmOutOfMemory:
            raise MIError(500, "Internal Error") from None
    return "OK"


def mi_flush(params):
    """Write the dirty AORs now (write-back); nothing to do otherwise."""
    for d in _domains.values():
        d.flush()
    return "OK"


def mi_sync(params):
    """Rewrite the table's rows (or one AOR's) from memory."""
    d = _domain_of(params)
    if d.db_mode in (NO_DB, DB_ONLY):
        raise MIError(400, "Nothing to sync: this db_mode keeps no memory "
                      "copy beside the database")
    if "aor" in params:
        aor = _aor_of(params)
        with d.locked(aor):
            rec = d.get(aor)
            if rec is None:
                raise MIError(404, "AOR not found")
            d.dbs.rewrite_aor(rec)
        return "OK"
    d.dbs.delete_all()
    d.dbs.insert_all(d.records())
    return "OK"


# --- API -----------------------------------------------------------------------

class UsrlocApi:
    """``load_api("usrloc")``: what registrar (and others) use."""
    register_udomain = staticmethod(register_udomain)
    get_udomain = staticmethod(get_udomain)
    fix_aor = staticmethod(fix_aor)
    match_contact = staticmethod(match_contact)
    order_contacts = staticmethod(order_contacts)
    new_contact_id = staticmethod(new_contact_id)
    q2str = staticmethod(q2str)
    str2q = staticmethod(str2q)
    UContact = UContact
    URecord = URecord

    @property
    def use_domain(self):
        return use_domain

    @property
    def nat_flag(self):
        return nat_bflag

    @property
    def cseq_delay(self):
        return cseq_delay


def load_api() -> UsrlocApi:
    return UsrlocApi()


# --- lifecycle -------------------------------------------------------------

def mod_init() -> int:
    global registered_users, _id_counter, _mode
    preset = (working_mode_preset or "").strip().lower()
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"working_mode_preset {working_mode_preset!r} "
                             f"is not supported (one of: "
                             f"{', '.join(PRESETS)})")
        _mode = PRESETS[preset]
    else:
        if db_mode not in (0, 1, 2, 3):
            raise ValueError(f"db_mode {db_mode}: 0..3")
        _mode = db_mode
    if _mode != NO_DB and not db_url:
        raise ValueError("a database mode needs db_url")
    if not 1 <= hash_size <= 16:
        raise ValueError(f"hash_size {hash_size} out of 1..16")
    if timer_interval < 1:
        raise ValueError("timer_interval must be at least 1")
    if matching_mode not in (0, 1):
        raise ValueError(f"matching_mode {matching_mode}: 0 or 1")
    registered_users = statistics.get_stat("usrloc:registered_users")
    _id_counter = shm.AtomicCounter(0)
    register_timer("ul_timer", ul_timer, None, timer_interval)
    return 0


def mod_destroy() -> None:
    """Write-back: what is still dirty goes to the database at shutdown."""
    for d in _domains.values():
        try:
            n = d.flush()
            if n:
                log.LM_INFO(f"usrloc: {n} AORs of {d.name} written at "
                            f"shutdown")
        except Exception as e:     # noqa: BLE001
            log.LM_ERR(f"usrloc: flush of {d.name} at shutdown failed: {e}")
        if d.dbs is not None:
            d.dbs.close()


exports = ModuleExports(
    name="usrloc",
    params=[
        ParamExport("db_mode", INT_PARAM, "db_mode"),
        ParamExport("working_mode_preset", STR_PARAM, "working_mode_preset"),
        ParamExport("db_url", STR_PARAM, "db_url"),
        ParamExport("timer_interval", INT_PARAM, "timer_interval"),
        ParamExport("hash_size", INT_PARAM, "hash_size"),
        ParamExport("nat_bflag", STR_PARAM, "nat_bflag"),
        ParamExport("matching_mode", INT_PARAM, "matching_mode"),
        ParamExport("desc_time_order", INT_PARAM, "desc_time_order"),
        ParamExport("use_domain", INT_PARAM, "use_domain"),
        ParamExport("cseq_delay", INT_PARAM, "cseq_delay"),
    ],
    stats=[StatExport("registered_users", statistics.STAT_NO_RESET)],
    mi_cmds=[
        MIExport("ul_dump", "dumps the content of the location tables", 0,
                 None, [MIRecipe(mi_dump, ()),
                        MIRecipe(mi_dump_brief, ("brief",))]),
        MIExport("ul_show_contact", "the contacts of an AOR", 0, None,
                 [MIRecipe(mi_show_contact, ("table_name", "aor"))]),
        MIExport("ul_rm", "removes an AOR", 0, None,
                 [MIRecipe(mi_rm, ("table_name", "aor"))]),
        MIExport("ul_rm_contact", "removes one contact of an AOR", 0, None,
                 [MIRecipe(mi_rm_contact, ("table_name", "aor", "contact"))]),
        MIExport("ul_add", "adds a contact to an AOR", 0, None,
                 [MIRecipe(mi_add, ("table_name", "aor", "contact",
                                    "expires", "q", "unused", "flags",
                                    "cflags", "methods"))]),
        MIExport("ul_flush", "writes the memory cache to the database", 0,
                 None, [MIRecipe(mi_flush, ())]),
        MIExport("ul_sync", "rewrites the database from memory", 0, None,
                 [MIRecipe(mi_sync, ("table_name",)),
                  MIRecipe(mi_sync, ("table_name", "aor"))]),
    ],
    init_f=mod_init,
    destroy_f=mod_destroy,
)
