"""The location tables (OpenSIPS's udomain/urecord/ucontact) in shared memory.

A domain (``location``) is a shared hash table: the key is the AOR, the value
the whole record (every contact of the AOR) serialized with ``marshal``.  A
lock set indexed by the AOR's hash (OpenSIPS's ``lock_udomain``) makes each
read-modify-write of a record atomic across processes: callers take
``with dom.locked(aor):`` and then ``get``/``put`` the record.

Counters (``<domain>-users``, ``<domain>-contacts``, ``registered_users``)
move in :meth:`UDomain.put`, from the difference between the old and new
record, so they are exact whichever process changes the table.
"""
from __future__ import annotations

import marshal
import operator
import time
import zlib
from typing import Dict, List, Optional

from opensipy import log, shm

# OpenSIPS's CS_* contact states (what the DB layer has seen of a contact)
CS_NEW, CS_SYNC, CS_DIRTY = 0, 1, 2
STATE_NAMES = {CS_NEW: "CS_NEW", CS_SYNC: "CS_SYNC", CS_DIRTY: "CS_DIRTY"}
Q_UNSPECIFIED = -1
ALL_METHODS = 0xFFFFFFFF

_FIELDS = ("contact", "received", "path", "expires", "q", "callid", "cseq",
           "flags", "cflags", "user_agent", "socket", "methods", "instance",
           "reg_id", "last_modified", "contact_id", "attr", "state")


_get_fields = operator.attrgetter(*_FIELDS)   # one C call for the record


class UContact:
    """One binding.  ``expires`` is absolute (epoch seconds; 0 = permanent);
    ``q`` in thousandths (OpenSIPS's qvalue_t, -1 = unspecified)."""
    __slots__ = _FIELDS

    def __init__(self, contact: str, *, received: str = "", path: str = "",
                 expires: int = 0, q: int = Q_UNSPECIFIED, callid: str = "",
                 cseq: int = 0, flags: int = 0, cflags: int = 0,
                 user_agent: str = "", socket: str = "",
                 methods: int = ALL_METHODS, instance: str = "",
                 reg_id: int = 0, last_modified: Optional[int] = None,
                 contact_id: int = 0, attr: str = "", state: int = CS_NEW):
        # numbers are taken as given (ints): callers reading text or a
        # database convert at that boundary (dbsync.contact_of, MI)
        self.contact = contact
        self.received = received
        self.path = path
        self.expires = expires
        self.q = q
        self.callid = callid
        self.cseq = cseq
        self.flags = flags
        self.cflags = cflags
        self.user_agent = user_agent
        self.socket = socket
        self.methods = methods
        self.instance = instance
        self.reg_id = reg_id
        self.last_modified = int(time.time()) if last_modified is None \
            else last_modified
        self.contact_id = contact_id
        self.attr = attr
        self.state = state

    def as_tuple(self):
        return _get_fields(self)

    @classmethod
    def from_tuple(cls, t) -> "UContact":
        c = cls.__new__(cls)
        for setter, v in zip(_SETTERS, t):
            setter(c, v)
        return c

    def alive(self, now: float) -> bool:
        return self.expires == 0 or self.expires > now

    def __repr__(self):
        return f"UContact({self.contact!r}, expires={self.expires})"


_SETTERS = tuple(getattr(UContact, f).__set__ for f in _FIELDS)


def q2str(q: int) -> str:
    """OpenSIPS's q2str: thousandths as '0.5', '1', '' when unspecified."""
    if q < 0:
        return ""
    if q >= 1000:
        return "1"
    if q == 0:
        return "0"
    return ("0.%03d" % q).rstrip("0")


def str2q(text: str) -> int:
    """'0.5' -> 500; raises ValueError outside 0..1 or not a number."""
    t = text.strip()
    if not t:
        return Q_UNSPECIFIED
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"bad q value {text!r}") from None
    if not 0.0 <= v <= 1.0 or len(t) > 5:
        raise ValueError(f"q value {text!r} out of range 0..1")
    return int(round(v * 1000))


class URecord:
    """An AOR and its contacts, ordered by q (highest first) then by the
    order they were saved (newest first with ``desc_time_order``)."""
    __slots__ = ("aor", "contacts")

    def __init__(self, aor: str, contacts: Optional[List[UContact]] = None):
        self.aor = aor
        self.contacts = contacts or []

    def alive(self, now=None) -> List[UContact]:
        now = time.time() if now is None else now
        # UContact.alive() inline: this runs for every REGISTER
        return [c for c in self.contacts if c.expires == 0 or c.expires > now]

    def dumps(self) -> bytes:
        return marshal.dumps([_get_fields(c) for c in self.contacts])

    @classmethod
    def loads(cls, aor: str, data: bytes) -> "URecord":
        return cls(aor, [UContact.from_tuple(t) for t in marshal.loads(data)])


# OpenSIPS's db_mode values
NO_DB, WRITE_THROUGH, WRITE_BACK, DB_ONLY = 0, 1, 2, 3


class UDomain:
    """One location table in shared memory.  Created in the attendant (mod_init
    or a fixup); usable from every forked process.

    ``db_mode`` (OpenSIPS's): 0 memory only; 1 write-through (every change
    written to the database at once); 2 write-back (changed AORs marked
    dirty in shm, written by :meth:`flush` from the timer); 3 database only
    (no memory copy: every read and write goes to the database, so several
    instances can share it).  ``dbs`` is the :class:`DbSync` for modes
    1..3."""

    def __init__(self, name: str, hash_size: int, stats: Dict[str, object],
                 registered_users=None, db_mode: int = NO_DB, dbs=None):
        self.name = name
        self.size = 1 << hash_size
        self.db_mode = db_mode
        self.dbs = dbs
        self.ht = shm.HashTable(self.size, module="usrloc") \
            if db_mode != DB_ONLY else None
        self.dirty = shm.HashTable(max(self.size // 4, 16), module="usrloc") \
            if db_mode == WRITE_BACK else None
        self.locks = shm.LockSet(min(self.size, 256), module="usrloc")
        self.users = stats["users"]
        self.contacts = stats["contacts"]
        self.expired = stats["expires"]
        self.registered_users = registered_users

    def slot(self, aor: str) -> int:
        return zlib.crc32(aor.encode("utf-8", "surrogateescape")) \
            % self.locks.n

    def locked(self, aor: str) -> shm.Lock:
        """The AOR's lock: ``with dom.locked(aor):`` (the shm Lock itself,
        no generator-based context made per call)."""
        return self.locks[zlib.crc32(aor.encode("utf-8", "surrogateescape"))
                          % self.locks.n]

    def get(self, aor: str) -> Optional[URecord]:
        if self.db_mode == DB_ONLY:
            return self.dbs.load_aor(aor)
        data = self.ht.get(aor.encode("utf-8", "surrogateescape"))
        if data is None:
            return None
        return URecord.loads(aor, data)

    def put(self, rec: URecord, old: Optional[URecord],
            memory_only: bool = False) -> None:
        """Store ``rec`` (the caller holds the AOR's lock and read ``old``
        under it); an empty record is removed.  Raises ShmOutOfMemory with
        the table unchanged (or DBError in db_mode 3).  ``memory_only``:
        no database write (save()'s memory-only flag, the start-up load)."""
        key = rec.aor.encode("utf-8", "surrogateescape")
        n_old = len(old.contacts) if old is not None else 0
        n_new = len(rec.contacts)
        if self.db_mode == DB_ONLY:
            self.dbs.write_diff(rec, old)
        elif n_new:
            self.ht.put(key, rec.dumps())
        elif old is not None:
            self.ht.delete(key)
        if not memory_only:
            if self.db_mode == WRITE_THROUGH:
                try:
                    self.dbs.write_diff(rec, old)
                except Exception as e:     # noqa: BLE001 - DBError & co
                    log.LM_ERR(f"usrloc: writing {rec.aor} to table "
                               f"{self.name} failed: {e}")
            elif self.db_mode == WRITE_BACK:
                try:
                    self.dirty.put(key, b"1")
                except shm.ShmOutOfMemory:
                    log.LM_ERR(f"usrloc: cannot mark {rec.aor} for the "
                               f"next flush: out of shared memory")
        if n_new != n_old:
            self.contacts.update(n_new - n_old)
        du = (n_new > 0) - (n_old > 0)
        if du:
            self.users.update(du)
            if self.registered_users is not None:
                self.registered_users.update(du)

    def records(self) -> List[URecord]:
        """Every record (a snapshot, bucket by bucket)."""
        if self.db_mode == DB_ONLY:
            return [URecord(aor, cs)
                    for aor, cs in self.dbs.load_all().items()]
        out = []
        for k, v in self.ht.items():
            out.append(URecord.loads(k.decode("utf-8", "surrogateescape"), v))
        return out

    def flush(self) -> int:
        """Write-back: write every dirty AOR to the database; returns how
        many.  An AOR whose write fails stays dirty for the next flush."""
        if self.db_mode != WRITE_BACK:
            return 0
        done = 0
        for key in self.dirty.keys():
            aor = key.decode("utf-8", "surrogateescape")
            with self.locked(aor):
                self.dirty.delete(key)
                rec = self.get(aor) or URecord(aor)
                try:
                    self.dbs.rewrite_aor(rec)
                except Exception as e:     # noqa: BLE001 - DBError & co
                    log.LM_ERR(f"usrloc: flushing {aor} to table "
                               f"{self.name} failed: {e}")
                    self.dirty.put(key, b"1")
                    continue
                done += 1
        return done

    def preload(self) -> int:
        """Load the table from the database into memory (start-up)."""
        now = time.time()
        n = 0
        for aor, contacts in self.dbs.load_all().items():
            live = [c for c in contacts if c.alive(now)]
            if not live:
                continue
            with self.locked(aor):
                self.put(URecord(aor, live), self.get(aor), memory_only=True)
            n += len(live)
        return n

    def expire(self, now: float) -> int:
        """Remove the expired contacts of every AOR; returns how many."""
        if self.db_mode == DB_ONLY:
            n = self.dbs.delete_expired(int(now))
            if n:
                self.expired.update(n)
            return n
        removed = 0
        for rec in self.records():
            if all(c.alive(now) for c in rec.contacts):
                continue
            with self.locked(rec.aor):
                cur = self.get(rec.aor)
                if cur is None:
                    continue
                keep = [c for c in cur.contacts if c.alive(now)]
                gone = len(cur.contacts) - len(keep)
                if gone:
                    self.put(URecord(cur.aor, keep), cur)
                    removed += gone
        if removed:
            self.expired.update(removed)
        return removed
