"""The process table, in shared memory.

One record per process of the server, allocated in the attendant before the
first fork (so every process sees the same table): the OpenSIPS process id
(index in the table), pid, rank, the description shown by ``ps`` and in the
process title, and the process's log level (so MI ``log_level`` can change
one process's level from another).  A respawned process reuses its slot.

Concurrency: the attendant writes a record when it forks or reaps a
process while MI (in a module process) and the statistics read the table.
The records (id, pid, rank, description) are written and read whole under
one shm lock, so no reader sees half of a record.  The log levels are not
under the lock: each is an int64 read and written with the shm atomics,
because every receive loop reads its own level once per datagram
(:func:`opensipy.log.refresh`).

Log levels, as OpenSIPS keeps them (``pt[].log_level`` and
``pt[].default_log_level``): each slot has a current level and a default
one.  MI ``log_level`` with a pid changes that process's current level
only; without a pid it sets both levels of every slot.  A process forked
into a slot (at start-up or as a respawn) starts at the slot's default
level: a level set for one process over MI does not survive its respawn,
a level set for all processes does.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Optional

# id, pid, rank, description (under the lock)
_REC = struct.Struct("<iii60s")
DESC_MAX = 60
_LV = 16                       # two int64 per slot: current, default level

_block = None
_lock = None
_cur = []                      # int64_t * per slot: current level
_dflt = []                     # int64_t * per slot: default level
_aget = _aset = None           # shm atomics, bound by init()
_recs = 0                      # offset of the records in the block
_size = 0
my_id: Optional[int] = None     # this process's slot (0 = attendant)


@dataclass
class ProcEntry:
    id: int
    pid: int
    rank: int
    type: str
    log_level: int


def init(nprocs: int, log_level: Optional[int] = None) -> None:
    """Allocate the table for nprocs processes (attendant, before fork);
    every slot's levels start at ``log_level`` (the script's)."""
    global _block, _lock, _cur, _dflt, _aget, _aset, _recs, _size, my_id
    from . import log, shm
    if _block is not None:
        shm.shm_free(_block)
        _lock.destroy()
    _size = 0
    _recs = _LV * nprocs
    _block = shm.shm_malloc(_recs + _REC.size * nprocs, module="core")
    _block.buffer[:] = bytes(len(_block.buffer))
    _lock = shm.Lock("core")
    lv = shm.ffi.cast("int64_t *", _block.ptr)
    _cur = [lv + 2 * i for i in range(nprocs)]
    _dflt = [lv + 2 * i + 1 for i in range(nprocs)]
    _aget, _aset = shm.lib.shm_atomic_get, shm.lib.shm_atomic_set
    level = log.state.level if log_level is None else log_level
    for p in _cur + _dflt:
        _aset(p, level)
    _size = nprocs
    my_id = 0


def size() -> int:
    return _size


def _check(pid_id: int) -> None:
    if not 0 <= pid_id < _size:
        raise IndexError(f"process id {pid_id} outside the table ({_size})")


def set_entry(pid_id: int, pid: int, rank: int, desc: str,
              log_level: Optional[int] = None) -> None:
    """A process was forked into slot ``pid_id``: its record, and its
    current level reset to the slot's default (``log_level`` given: both
    set to it)."""
    _check(pid_id)
    d = desc.encode("utf-8", "replace")[:DESC_MAX]
    with _lock:
        _REC.pack_into(_block.buffer, _recs + pid_id * _REC.size, pid_id,
                       pid, rank, d)
    if log_level is not None:
        _aset(_dflt[pid_id], log_level)
    _aset(_cur[pid_id], _aget(_dflt[pid_id]))


def clear_pid(pid_id: int) -> None:
    """Mark a slot's process as gone (its record stays for the respawn)."""
    _check(pid_id)
    off = _recs + pid_id * _REC.size + 4
    with _lock:
        struct.pack_into("<i", _block.buffer, off, 0)


def _get(buf, pid_id: int) -> ProcEntry:
    i, pid, rank, d = _REC.unpack_from(buf, _recs + pid_id * _REC.size)
    return ProcEntry(i, pid, rank, d.rstrip(b"\0").decode("utf-8", "replace"),
                     get_log_level(pid_id))


def get(pid_id: int) -> ProcEntry:
    _check(pid_id)
    with _lock:
        return _get(_block.buffer, pid_id)


def entries() -> List[ProcEntry]:
    """The live processes, by id (one consistent read of the table)."""
    if _block is None:
        return []
    with _lock:
        all_ = [_get(_block.buffer, i) for i in range(_size)]
    return [e for e in all_ if e.pid]


def set_log_level(pid_id: int, level: int) -> None:
    """The current level of one process (MI ``log_level`` with a pid)."""
    _check(pid_id)
    _aset(_cur[pid_id], level)


def set_global_log_level(level: int) -> None:
    """Current and default level of every slot (MI ``log_level``)."""
    for p in _cur + _dflt:
        _aset(p, level)


def get_log_level(pid_id: int) -> int:
    return _aget(_cur[pid_id])


def get_default_log_level(pid_id: int) -> int:
    _check(pid_id)
    return _aget(_dflt[pid_id])


def find_pid(pid: int) -> Optional[ProcEntry]:
    for e in entries():
        if e.pid == pid:
            return e
    return None
