"""The process table, in shared memory.

One record per process of the server, allocated in the attendant before the
first fork (so every process sees the same table): the OpenSIPS process id
(index in the table), pid, rank, the description shown by ``ps`` and in the
process title, and the process's log level (so MI ``log_level`` can change
one process's level from another).  A respawned process reuses its slot.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Optional

# id, pid, rank, log_level, generation, description
_REC = struct.Struct("<iiiii60s")
DESC_MAX = 60

_block = None
_size = 0
my_id: Optional[int] = None     # this process's slot (0 = attendant)


@dataclass
class ProcEntry:
    id: int
    pid: int
    rank: int
    type: str
    log_level: int


def init(nprocs: int) -> None:
    """Allocate the table for nprocs processes (attendant, before fork)."""
    global _block, _size, my_id
    from . import shm
    if _block is not None:
        shm.shm_free(_block)
    _block = shm.shm_malloc(_REC.size * nprocs, module="core")
    _size = nprocs
    _block.buffer[:] = b"\0" * (_REC.size * nprocs)
    my_id = 0


def size() -> int:
    return _size


def set_entry(pid_id: int, pid: int, rank: int, desc: str,
              log_level: int) -> None:
    if not 0 <= pid_id < _size:
        raise IndexError(f"process id {pid_id} outside the table ({_size})")
    d = desc.encode("utf-8", "replace")[:DESC_MAX]
    gen = _REC.unpack_from(_block.buffer, pid_id * _REC.size)[4] + 1
    _REC.pack_into(_block.buffer, pid_id * _REC.size, pid_id, pid, rank,
                   log_level, gen, d)


def clear_pid(pid_id: int) -> None:
    """Mark a slot's process as gone (its record stays for the respawn)."""
    rec = list(_REC.unpack_from(_block.buffer, pid_id * _REC.size))
    rec[1] = 0
    _REC.pack_into(_block.buffer, pid_id * _REC.size, *rec)


def get(pid_id: int) -> ProcEntry:
    i, pid, rank, lvl, _gen, d = _REC.unpack_from(_block.buffer,
                                                  pid_id * _REC.size)
    return ProcEntry(i, pid, rank, d.rstrip(b"\0").decode("utf-8", "replace"),
                     lvl)


def entries() -> List[ProcEntry]:
    """The live processes, by id."""
    if _block is None:
        return []
    out = []
    for i in range(_size):
        e = get(i)
        if e.pid:
            out.append(e)
    return out


def set_log_level(pid_id: int, level: int) -> None:
    rec = list(_REC.unpack_from(_block.buffer, pid_id * _REC.size))
    rec[3] = level
    _REC.pack_into(_block.buffer, pid_id * _REC.size, *rec)


def get_log_level(pid_id: int) -> int:
    return _REC.unpack_from(_block.buffer, pid_id * _REC.size)[3]


def find_pid(pid: int) -> Optional[ProcEntry]:
    for e in entries():
        if e.pid == pid:
            return e
    return None
