"""The dialog table in shared memory (OpenSIPS's ``d_table``).

A dialog is a :class:`Dialog` record marshalled (as one tuple) into a shm
:class:`~opensipy.shm.HashTable` under its key ``b"<h_entry hex>.<h_id
hex>"`` (its ``did``, OpenSIPS's rr parameter, writes the same numbers in
reversed hex).
``h_entry`` is the hash of the Call-ID (OpenSIPS's ``dlg_hash``), ``h_id``
a number taken from a shared counter, so the id is unique while the
server runs and, with ``h_entry``, names the lock of the dialog: a
:class:`~opensipy.shm.LockSet` slot ``h_entry % n``.  A second table maps a
Call-ID to the ids of its dialogs (matching by Call-ID and tags); it is
changed under the same lock (same ``h_entry``).

Every change is ``with tbl.locked(h_entry): d = tbl.get(id); ...;
tbl.put(d)`` (the lock is re-entrant within a process, so a callback run
under it may read the dialog again).

Timeouts are kept in a timer wheel in shm: slot ``second * 16 + (h_entry %
16)`` holds the ids due in that second (a stale entry, the dialog's timeout
having moved, is skipped when the slot fires).  Only the timer process
pops slots, so a slot read-delete is safe under the wheel lock.
"""
from __future__ import annotations

import marshal
import time
import zlib
from typing import Dict, List, Optional

from opensipy import shm

# OpenSIPS's dialog states (dlg_hash.h)
DLG_STATE_UNCONFIRMED = 1
DLG_STATE_EARLY = 2
DLG_STATE_CONFIRMED_NA = 3
DLG_STATE_CONFIRMED = 4
DLG_STATE_DELETED = 5

# module flags (create_dialog's letters)
DLG_FLAG_BYEONTIMEOUT = 1 << 0      # B
DLG_FLAG_PING_CALLER = 1 << 1       # P
DLG_FLAG_PING_CALLEE = 1 << 2       # p
DLG_FLAG_REINVITE_PING_CALLER = 1 << 3   # R
DLG_FLAG_REINVITE_PING_CALLEE = 1 << 4   # r
DLG_FLAG_END_ON_RACE_CONDITION = 1 << 5  # E (accepted, see README)

FLAG_LETTERS = {"B": DLG_FLAG_BYEONTIMEOUT, "P": DLG_FLAG_PING_CALLER,
                "p": DLG_FLAG_PING_CALLEE,
                "R": DLG_FLAG_REINVITE_PING_CALLER,
                "r": DLG_FLAG_REINVITE_PING_CALLEE,
                "E": DLG_FLAG_END_ON_RACE_CONDITION}
PING_FLAGS = (DLG_FLAG_PING_CALLER | DLG_FLAG_PING_CALLEE
              | DLG_FLAG_REINVITE_PING_CALLER | DLG_FLAG_REINVITE_PING_CALLEE)

# a leg: [tag, contact, cseq, route_set, bind_addr, sdp]
L_TAG, L_CONTACT, L_CSEQ, L_ROUTES, L_SOCK, L_SDP = range(6)

_FIELDS = ("h_entry", "h_id", "callid", "from_uri", "to_uri", "ruri",
           "caller", "callees", "callee_idx", "state", "start_ts",
           "lifetime", "timeout", "mflags", "user_flags", "end_reason",
           "vals", "profiles", "cbs", "rt_on_answer", "rt_on_timeout",
           "rt_on_hangup", "ping_cseq", "ping_fail")


class Dialog:
    """One dialog.  ``caller`` is a leg list; ``callees`` the legs of
    every To-tag seen (early dialogs of a forked call), ``callee_idx`` the
    one confirmed (-1 before).  ``timeout`` is absolute (epoch seconds, 0
    while not running), ``lifetime`` the seconds it runs from confirmation
    ($DLG_timeout)."""
    __slots__ = _FIELDS

    def __init__(self, h_entry: int, h_id: int, callid: str):
        self.h_entry = h_entry
        self.h_id = h_id
        self.callid = callid
        self.from_uri = self.to_uri = self.ruri = ""
        self.caller = ["", "", "0", "", "", ""]
        self.callees: List[list] = []
        self.callee_idx = -1
        self.state = DLG_STATE_UNCONFIRMED
        self.start_ts = 0
        self.lifetime = 0
        self.timeout = 0
        self.mflags = 0
        self.user_flags = 0
        self.end_reason = ""
        self.vals: Dict[str, object] = {}
        self.profiles: List[list] = []       # [name, value or None]
        self.cbs: List[tuple] = []           # (types, name, param)
        self.rt_on_answer = self.rt_on_timeout = self.rt_on_hangup = ""
        self.ping_cseq = [0, 0]              # our pings: caller, callee
        self.ping_fail = 0

    @property
    def key(self) -> bytes:
        return dlg_key(self.h_entry, self.h_id)

    @property
    def did(self) -> str:
        """OpenSIPS's did (the rr parameter, MI ``ID``): h_entry and h_id
        in hex written least significant digit first."""
        return f"{self.h_entry:x}"[::-1] + "." + f"{self.h_id:x}"[::-1]

    @property
    def dlg_id(self) -> int:
        """OpenSIPS's numeric id (MI ``ID``, the DB's ``dlg_id``)."""
        return (self.h_entry << 32) | self.h_id

    @property
    def callee(self) -> Optional[list]:
        if 0 <= self.callee_idx < len(self.callees):
            return self.callees[self.callee_idx]
        return None

    def callee_by_tag(self, tag: str) -> Optional[list]:
        for leg in self.callees:
            if leg[L_TAG] == tag:
                return leg
        return None

    def dumps(self) -> bytes:
        return marshal.dumps(tuple(getattr(self, f) for f in _FIELDS))

    @classmethod
    def loads(cls, data: bytes) -> "Dialog":
        d = cls.__new__(cls)
        for f, v in zip(_FIELDS, marshal.loads(data)):
            setattr(d, f, v)
        return d


def dlg_key(h_entry: int, h_id: int) -> bytes:
    return f"{h_entry:x}.{h_id:x}".encode()


def parse_key(text) -> Optional[tuple]:
    """(h_entry, h_id) of a table key (hex, most significant first)."""
    a, sep, b = str(text).partition(".")
    if not sep:
        return None
    try:
        return int(a, 16), int(b, 16)
    except ValueError:
        return None


def parse_did(text) -> Optional[tuple]:
    """(h_entry, h_id) of a ``did`` value (reversed hex), else None."""
    if not text:
        return None
    a, sep, b = str(text).partition(".")
    if not sep or not a or not b:
        return None
    return parse_key(a[::-1] + "." + b[::-1])


def split_dlg_id(n: int) -> tuple:
    return (n >> 32) & 0xFFFFFFFF, n & 0xFFFFFFFF


WHEEL_SPREAD = 16


class DlgTable:
    """The dialogs of the server.  Made in mod_init (before the fork)."""

    def __init__(self, hash_size: int, module: str = "dialog"):
        if hash_size < 1:
            raise ValueError("dialog: hash_size must be positive")
        self.size = hash_size
        self.ht = shm.HashTable(hash_size, module=module)
        self.by_callid = shm.HashTable(hash_size, module=module)
        self.locks = shm.LockSet(min(hash_size, 512), module=module)
        self.ids = shm.AtomicCounter(0, module=module)
        self.wheel = shm.HashTable(1024, module=module)
        self.wheel_lock = shm.Lock(module=module)
        self.wheel_done = shm.AtomicCounter(int(time.time()), module=module)
        self.pings = shm.HashTable(256, module=module)   # id -> b"1"
        self.dirty = shm.HashTable(256, module=module)   # write-back ids
        self._held: Dict[int, int] = {}

    # ---- locking
    def hash(self, callid: str) -> int:
        return zlib.crc32(callid.encode("utf-8", "surrogateescape")) \
            % self.size

    def locked(self, h_entry: int):
        return _Locked(self, h_entry % len(self.locks))

    # ---- records
    def new_id(self) -> int:
        return self.ids.inc() & 0xFFFFFFFF

    def get(self, key: bytes) -> Optional[Dialog]:
        data = self.ht.get(key)
        return None if data is None else Dialog.loads(data)

    def put(self, d: Dialog, new: bool = False) -> None:
        """Store (the caller holds the lock); a new dialog also goes into
        the Call-ID index.  ShmOutOfMemory leaves the table as it was."""
        key = d.key
        self.ht.put(key, d.dumps())
        if new:
            cid = d.callid.encode("utf-8", "surrogateescape")
            old = self.by_callid.get(cid)
            ids = marshal.loads(old) if old else []
            ids.append(key)
            try:
                self.by_callid.put(cid, marshal.dumps(ids))
            except shm.ShmOutOfMemory:
                self.ht.delete(key)
                raise

    def remove(self, d: Dialog) -> None:
        key = d.key
        self.ht.delete(key)
        cid = d.callid.encode("utf-8", "surrogateescape")
        old = self.by_callid.get(cid)
        if old:
            ids = [k for k in marshal.loads(old) if k != key]
            if ids:
                self.by_callid.put(cid, marshal.dumps(ids))
            else:
                self.by_callid.delete(cid)
        self.pings.delete(key)

    def ids_of_callid(self, callid: str) -> List[bytes]:
        data = self.by_callid.get(callid.encode("utf-8", "surrogateescape"))
        return marshal.loads(data) if data else []

    def all(self) -> List[Dialog]:
        return [Dialog.loads(v) for _, v in self.ht.items()]

    def __len__(self):
        return len(self.ht)

    # ---- timer wheel
    def arm_timeout(self, d: Dialog) -> None:
        if not d.timeout:
            return
        slot = self._slot(int(d.timeout), d.h_entry)
        with self.wheel_lock:
            old = self.wheel.get(slot)
            self.wheel.put(slot, (old or b"") + d.key + b",")

    @staticmethod
    def _slot(sec: int, h_entry: int) -> bytes:
        return b"%d:%d" % (sec, h_entry % WHEEL_SPREAD)

    def due(self, now: int) -> List[bytes]:
        """Pop every slot up to ``now`` (timer process only)."""
        out = []
        start = self.wheel_done.get()
        if start > now:
            return out
        with self.wheel_lock:
            for sec in range(start, now + 1):
                for i in range(WHEEL_SPREAD):
                    slot = b"%d:%d" % (sec, i)
                    data = self.wheel.get(slot)
                    if data:
                        self.wheel.delete(slot)
                        out.extend(k for k in data.split(b",") if k)
            self.wheel_done.set(now + 1)
        return out


class _Locked:
    __slots__ = ("t", "i")

    def __init__(self, t, i):
        self.t = t
        self.i = i

    def __enter__(self):
        held = self.t._held
        n = held.get(self.i, 0)
        if n == 0:
            self.t.locks.lock(self.i)
        held[self.i] = n + 1
        return self

    def __exit__(self, *exc):
        held = self.t._held
        n = held[self.i] - 1
        if n == 0:
            del held[self.i]
            self.t.locks.unlock(self.i)
        else:
            held[self.i] = n
        return False
