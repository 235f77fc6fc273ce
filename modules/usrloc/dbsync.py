"""usrloc's database side: the OpenSIPS ``location`` table (version 1013)
through the DB API, for the write-through, write-back and sql-only modes.

Rows map to contacts one to one: ``contact_id`` is the contact's id,
``username`` (and ``domain`` with ``use_domain``) the AOR, ``expires`` a
UNIX time (0: permanent), ``q`` a float (-1: unspecified), ``cflags`` the
branch flag names, ``last_modified`` a datetime.

Each process opens its own connection on first use (the DB API opens
lazily and re-opens a lost one); a failed write is logged and left to the
next one (write-through) or the next flush (write-back: the AOR stays
dirty).
"""
from __future__ import annotations

import datetime
from typing import Dict, Iterable, List, Optional, Tuple

from opensipy import db, log
from opensipy.pvar import branch_flags

from .udomain import CS_SYNC, UContact, URecord

TABLE_VERSION = 1013
COLUMNS = ["contact_id", "username", "domain", "contact", "received", "path",
           "expires", "q", "callid", "cseq", "last_modified", "flags",
           "cflags", "user_agent", "socket", "methods", "sip_instance",
           "attr"]


def _split_aor(aor: str, use_domain: bool) -> Tuple[str, Optional[str]]:
    if use_domain and "@" in aor:
        user, _, dom = aor.partition("@")
        return user, dom
    return aor, None


def _cflags_names(mask: int) -> Optional[str]:
    return branch_flags.names(mask) if mask else None


def _cflags_mask(text) -> int:
    mask = 0
    for name in (text or "").replace(",", " ").split():
        try:
            mask |= 1 << branch_flags.bit(name)
        except Exception:          # noqa: BLE001 - an unknown flag: skip
            log.LM_WARN(f"usrloc: cannot map branch flag {name!r} "
                        f"from the database")
    return mask


def _int32(v: int) -> int:
    """An unsigned 32-bit mask as the signed INT column keeps it (OpenSIPS
    writes its unsigned fields that way: all methods is -1)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= (1 << 31) else v


def row_of(aor: str, c: UContact, use_domain: bool) -> list:
    user, dom = _split_aor(aor, use_domain)
    return [c.contact_id, user, dom, c.contact, c.received or None,
            c.path or None, int(c.expires),
            (c.q / 1000.0) if c.q >= 0 else -1.0,
            c.callid, c.cseq,
            datetime.datetime.fromtimestamp(int(c.last_modified)),
            _int32(c.flags), _cflags_names(c.cflags), c.user_agent,
            c.socket or None, _int32(c.methods), c.instance or None,
            c.attr or None]


def contact_of(row: Dict) -> Tuple[str, UContact]:
    user = row["username"] or ""
    aor = f"{user}@{row['domain']}" if row.get("domain") else user
    q = row.get("q")
    lm = row.get("last_modified")
    if isinstance(lm, datetime.datetime):
        lm = int(lm.timestamp())
    methods = row.get("methods")
    c = UContact(row["contact"],
                 contact_id=int(row.get("contact_id") or 0),
                 received=row.get("received") or "",
                 path=row.get("path") or "",
                 expires=int(row.get("expires") or 0),
                 q=-1 if q is None or q < 0 else int(round(q * 1000)),
                 callid=row.get("callid") or "",
                 cseq=int(row.get("cseq") or 0),
                 last_modified=int(lm or 0),
                 flags=int(row.get("flags") or 0) & 0xFFFFFFFF,
                 cflags=_cflags_mask(row.get("cflags")),
                 user_agent=row.get("user_agent") or "",
                 socket=row.get("socket") or "",
                 methods=0xFFFFFFFF if methods is None
                 else methods & 0xFFFFFFFF,
                 instance=row.get("sip_instance") or "",
                 attr=row.get("attr") or "",
                 state=CS_SYNC)
    return aor, c


class DbSync:
    """The location table of one domain, for one process at a time (the
    connection is per process: the DB API re-opens it after a fork)."""

    def __init__(self, url: str, table: str, use_domain: bool):
        self.url = url
        self.table = table
        self.use_domain = use_domain
        self.dbf = db.db_bind_mod(url, needed_by="usrloc")
        self._con = None

    @property
    def con(self):
        if self._con is None:
            self._con = self.dbf.init(self.url)
        self._con.use_table(self.table)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def check_version(self) -> None:
        db.db_check_table_version(self.dbf, self.con, self.table,
                                  TABLE_VERSION)

    # --- reads -----------------------------------------------------------
    def _aor_keys(self, aor: str):
        user, dom = _split_aor(aor, self.use_domain)
        if self.use_domain:
            return ["username", "domain"], ["=", "="], [user, dom]
        return ["username"], ["="], [user]

    def load_all(self) -> Dict[str, List[UContact]]:
        res = self.con.query(None, None, None, COLUMNS)
        out: Dict[str, List[UContact]] = {}
        for row in res.dicts():
            aor, c = contact_of(row)
            out.setdefault(aor, []).append(c)
        return out

    def load_aor(self, aor: str) -> Optional[URecord]:
        keys, ops, vals = self._aor_keys(aor)
        res = self.con.query(keys, ops, vals, COLUMNS)
        contacts = [contact_of(r)[1] for r in res.dicts()]
        return URecord(aor, contacts) if contacts else None

    # --- writes ----------------------------------------------------------
    def write_diff(self, rec: URecord, old: Optional[URecord]) -> None:
        """Make the rows of the AOR what ``rec`` holds, touching only the
        contacts that changed (by contact_id)."""
        before = {c.contact_id: c for c in (old.contacts if old else [])}
        after = {c.contact_id: c for c in rec.contacts}
        con = self.con
        for cid in before.keys() - after.keys():
            con.delete(["contact_id"], ["="], [cid])
        for cid, c in after.items():
            prev = before.get(cid)
            if prev is not None and prev.as_tuple()[:-1] == c.as_tuple()[:-1]:
                continue
            row = row_of(rec.aor, c, self.use_domain)
            if prev is None:
                con.insert(COLUMNS, row)
            else:
                con.update(["contact_id"], ["="], [cid], COLUMNS[1:], row[1:])

    def rewrite_aor(self, rec: URecord) -> None:
        """Replace every row of the AOR by ``rec`` (write-back flush)."""
        keys, ops, vals = self._aor_keys(rec.aor)
        con = self.con
        con.delete(keys, ops, vals)
        for c in rec.contacts:
            con.insert(COLUMNS, row_of(rec.aor, c, self.use_domain))

    def delete_expired(self, now: int) -> int:
        return self.con.delete(["expires", "expires"], ["<", "!="],
                               [now, 0]) or 0

    def delete_all(self) -> None:
        self.con.delete()

    def insert_all(self, recs: Iterable[URecord]) -> None:
        for rec in recs:
            for c in rec.contacts:
                self.con.insert(COLUMNS, row_of(rec.aor, c,
                                                self.use_domain))
