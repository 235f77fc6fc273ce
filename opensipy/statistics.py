"""Statistics, as OpenSIPS has them (statistics.h), over shared-memory
atomic counters: a value incremented in any process is seen by all.

* :func:`register_stat` ``(group, name, flags=0, func=None)`` creates a
  statistic; with ``STAT_IS_FUNC`` (implied by ``func``) the value is
  computed by ``func()`` on every read.  Registration happens in the
  attendant before the workers are forked (module load, ``mod_init``): in a
  forked server process (``pt.my_id`` > 0) or after
  :func:`close_registration` it raises :class:`StatError`.
* :func:`get_stat` ``("group:name")`` returns the :class:`Stat` (or None);
  ``inc()/dec()/update(n)/get()/reset()`` work from any process.
* ``reset()`` leaves ``STAT_NO_RESET`` and computed statistics alone.
* :func:`get_statistics` answers ``"group:name"``, ``"group:"`` (the whole
  group) and ``"all"`` with ``{"group:name": value}``.

Core groups (:func:`register_core_stats`): ``core``, ``shmem`` (computed
from the arena), ``load`` (``load`` and ``load-proc-<id>``, fed by the
SIP receive loops through :data:`load`), ``net`` (waiting bytes on
the server's own sockets, computed from /proc/net; the core hands over its
socket list with :func:`register_net_sockets`) and ``pkmem`` (resident
size of each process of the process table, computed on read).
"""
from __future__ import annotations

import os
import socket
from functools import partial
from typing import Callable, Dict, Iterable, List, Optional

from . import shm
from .sr_module import STAT_IS_FUNC, STAT_NO_RESET, StatExport

__all__ = [
    "StatError", "Stat", "register_stat", "get_stat", "reset_stat",
    "register_module_stats", "list_groups", "get_statistics",
    "register_core_stats", "register_net_sockets", "load",
    "close_registration", "open_registration", "STAT_NO_RESET",
    "STAT_IS_FUNC",
]


class StatError(KeyError):
    """Bad statistic name, duplicate, late registration, or an operation a
    statistic does not support."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


_add = shm.lib.shm_atomic_add
_get = shm.lib.shm_atomic_get
_xchg = shm.lib.shm_atomic_xchg


class Stat:
    """A counter statistic in shared memory.

    ``inc()``, ``dec()`` and ``update(n)`` are the C atomic add bound to the
    counter's slot (functools.partial, made once): the receive path counts
    several statistics per message, and this skips a Python frame each."""
    __slots__ = ("group", "name", "flags", "_p", "inc", "dec", "update")

    def __init__(self, group, name, flags, ptr):
        self.group = group
        self.name = name
        self.flags = flags
        self._p = ptr
        if ptr is not None:            # FuncStat: no slot, read-only
            self.inc = partial(_add, ptr, 1)
            self.dec = partial(_add, ptr, -1)
            self.update = partial(_add, ptr)

    @property
    def full_name(self) -> str:
        return f"{self.group}:{self.name}"

    def get(self) -> int:
        return _get(self._p)

    def reset(self) -> bool:
        """Set to 0 unless STAT_NO_RESET; True when it was reset."""
        if self.flags & STAT_NO_RESET:
            return False
        _xchg(self._p, 0)
        return True

    def __repr__(self):
        return f"<Stat {self.full_name}={self.get()}>"


class FuncStat(Stat):
    """A statistic computed on read (STAT_IS_FUNC)."""
    __slots__ = ("func",)

    def __init__(self, group, name, flags, func):
        super().__init__(group, name, flags | STAT_IS_FUNC, None)
        self.func = func

    def _readonly(self, *a):
        raise StatError(f"statistic {self.full_name} is computed; it cannot "
                        f"be changed")

    inc = dec = update = _readonly

    def get(self) -> int:
        return self.func()

    def reset(self) -> bool:
        return False


# ------------------------------------------------------------- registry

_groups: Dict[str, Dict[str, Stat]] = {}
_dynamic: Dict[str, Callable[[], Dict[str, int]]] = {}
_closed = False
_pool = None       # current int64_t * slot chunk
_pool_left = 0
_POOL_SLOTS = 256
_pool_gen = -1


def close_registration() -> None:
    """The core calls this before forking the workers."""
    global _closed
    _closed = True


def open_registration() -> None:
    global _closed
    _closed = False


def _registration_open() -> Optional[str]:
    if _closed:
        return "registration is closed (the workers are forked)"
    from . import pt
    if pt.my_id:
        return f"this is a forked server process (id {pt.my_id})"
    return None


def _slot():
    global _pool, _pool_left, _pool_gen
    if _pool_left == 0 or _pool_gen != shm._generation:
        p = shm._alloc(8 * _POOL_SLOTS, "statistics")
        _pool = shm.ffi.cast("int64_t *", p)
        for i in range(_POOL_SLOTS):
            _pool[i] = 0
        _pool_left = _POOL_SLOTS
        _pool_gen = shm._generation
    p = _pool + (_POOL_SLOTS - _pool_left)
    _pool_left -= 1
    return p


def _check_name(group, name):
    for what, v in (("group", group), ("name", name)):
        if not isinstance(v, str) or not v or ":" in v or v.strip() != v:
            raise StatError(f"bad statistic {what} {v!r}")


def register_stat(group: str, name: str, flags: int = 0,
                  func: Optional[Callable[[], int]] = None) -> Stat:
    """Create the statistic ``group:name``."""
    _check_name(group, name)
    why = _registration_open()
    if why:
        raise StatError(f"cannot register statistic {group}:{name}: {why}; "
                        f"statistics are registered before fork")
    if group in _dynamic or name in _groups.get(group, ()):
        raise StatError(f"statistic {group}:{name} is already registered")
    if func is not None or flags & STAT_IS_FUNC:
        if not callable(func):
            raise StatError(f"statistic {group}:{name}: STAT_IS_FUNC needs "
                            f"a function")
        st = FuncStat(group, name, flags, func)
    else:
        shm._need_arena()
        st = Stat(group, name, flags, _slot())
    _groups.setdefault(group, {})[name] = st
    return st


def _split(full: str):
    group, sep, name = full.partition(":")
    if not sep:
        raise StatError(f"statistic name {full!r} is not 'group:name'")
    return group, name


def get_stat(full_name: str) -> Optional[Stat]:
    """The statistic ``group:name``, or None."""
    group, name = _split(full_name)
    st = _groups.get(group, {}).get(name)
    if st is None and group in _dynamic:
        values = _dynamic[group]()
        if name in values:
            fn = _dynamic[group]
            st = FuncStat(group, name, STAT_NO_RESET,
                          lambda: fn().get(name, 0))
    return st


def reset_stat(stat) -> bool:
    """Reset a Stat or a ``group:name``; False if it may not be reset."""
    if isinstance(stat, str):
        s = get_stat(stat)
        if s is None:
            raise StatError(f"no statistic {stat}")
        stat = s
    return stat.reset()


def register_module_stats(module_name: str,
                          stat_exports: Iterable[StatExport]) -> Dict[str, Stat]:
    """Register a module's ``stats`` exports under the module's group;
    returns ``{name: Stat}`` (the loader hands non-computed ones to the
    module's ``stat_pointer`` attribute)."""
    out = {}
    for se in stat_exports:
        if se.flags & STAT_IS_FUNC:
            out[se.name] = register_stat(module_name, se.name, se.flags,
                                         se.stat_pointer)
        else:
            out[se.name] = register_stat(module_name, se.name, se.flags)
    return out


def list_groups() -> List[str]:
    return list(_groups) + [g for g in _dynamic if g not in _groups]


def list_stats(group: str) -> List[str]:
    if group in _dynamic:
        return list(_dynamic[group]())
    return list(_groups.get(group, {}))


def _group_values(group, out):
    if group in _dynamic:
        for n, v in _dynamic[group]().items():
            out[f"{group}:{n}"] = v
        return
    for n, st in _groups[group].items():
        out[f"{group}:{n}"] = st.get()


def get_statistics(names) -> Dict[str, int]:
    """Values for ``"group:name"``, ``"group:"`` and ``"all"`` (a name or
    an iterable of names); an unknown name raises StatError."""
    if isinstance(names, str):
        names = [names]
    out: Dict[str, int] = {}
    for full in names:
        if full == "all":
            for g in list_groups():
                _group_values(g, out)
            continue
        group, name = _split(full)
        if not name:
            if group not in _groups and group not in _dynamic:
                raise StatError(f"no statistics group {group}")
            _group_values(group, out)
            continue
        st = get_stat(full)
        if st is None:
            raise StatError(f"no statistic {full}")
        out[full] = st.get()
    return out


def reset_all(group: Optional[str] = None) -> None:
    """Reset every resettable statistic (of one group)."""
    for g, stats in _groups.items():
        if group is None or g == group:
            for st in stats.values():
                st.reset()


def _reset_for_tests() -> None:
    """TEST ONLY: forget every statistic and reopen registration."""
    global _closed, _pool_left, _net_sockets
    _groups.clear()
    _dynamic.clear()
    _closed = False
    _pool_left = 0
    _net_sockets = None
    load._reset()


# ------------------------------------------------------------ core groups

CORE_STATS = ("rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies",
              "drop_requests", "drop_replies", "err_requests", "err_replies",
              "bad_URIs_rcvd", "unsupported_methods", "bad_msg_hdr")


def register_core_stats() -> Dict[str, Stat]:
    """Register the core groups; returns the ``core`` counters by name
    (``timestamp`` included)."""
    core = {n: register_stat("core", n) for n in CORE_STATS}
    core["timestamp"] = register_stat(
        "core", "timestamp", STAT_NO_RESET,
        lambda: (shm.now_ns() - shm.start_ns()) // 1_000_000_000)
    for n in shm.STAT_NAMES:
        register_stat("shmem", n, STAT_NO_RESET,
                      (lambda n=n: shm.stats()[n]))
    load._register()
    register_stat("net", "waiting_udp", STAT_NO_RESET,
                  lambda: _waiting("udp"))
    register_stat("net", "waiting_tcp", STAT_NO_RESET,
                  lambda: _waiting("tcp"))
    _dynamic["pkmem"] = _pkmem
    return core


# --- load: how busy the SIP receivers are, shared -------------------------

LOAD_WINDOW_NS = 1_000_000_000


class _Load:
    """OpenSIPS's ``load`` class: the realtime load of the SIP receivers.

    Each receive loop measures the time it spends handling datagrams (from
    the moment ``recvfrom`` returns to the end of the handler) and, at the
    first datagram after a window of :data:`LOAD_WINDOW_NS` has passed,
    publishes the busy part of that window (per mille) into its slot, by
    process-table id (:meth:`report`, two shm atomics per second, nothing
    per datagram).  ``load:load-proc-<id>`` is one receiver's load in
    percent, ``load:load`` the mean over the receivers declared before the
    fork (:meth:`declare_proc`).  A receiver that has published nothing
    for two windows has been waiting in ``recvfrom`` (no traffic): it
    counts as idle (0)."""
    MAX = 1024                # process-table ids 0 .. MAX-1
    _REC = 16                 # int64 per-mille + 1, int64 published at (ns)

    def __init__(self):
        self._reset()

    def _reset(self):
        self._blk = None
        self._gen = -1
        self._procs = []

    def _table(self):
        if self._blk is None or self._gen != shm._generation:
            self._blk = shm.shm_malloc(self.MAX * self._REC, "statistics")
            self._blk.buffer[:] = bytes(self.MAX * self._REC)
            self._gen = shm._generation
            self._procs = []
        return self._blk

    def _register(self):
        self._table()
        register_stat("load", "load", STAT_NO_RESET, self._mean)

    def _ptr(self, pid_id: int):
        if not 0 <= pid_id < self.MAX:
            raise ValueError(f"process id {pid_id} outside the load table")
        if self._blk is None or self._gen != shm._generation:
            raise StatError("the load statistics are not registered "
                            "(register_core_stats)")
        return shm.ffi.cast("int64_t *", self._blk.ptr) + 2 * pid_id

    def declare_proc(self, pid_id: int) -> Stat:
        """Before fork: process ``pid_id`` reports its load; registers
        ``load:load-proc-<id>`` and counts it in ``load:load``."""
        why = _registration_open()
        if why:
            raise StatError(f"cannot declare the load of process {pid_id}: "
                            f"{why}")
        self._ptr(pid_id)
        st = register_stat("load", f"load-proc-{pid_id}", STAT_NO_RESET,
                           lambda: self.proc_load(pid_id))
        self._procs.append(pid_id)
        return st

    def declared(self, pid_id) -> bool:
        return pid_id in self._procs

    def report(self, pid_id: int, busy_ns: int, window_ns: int) -> None:
        """Process ``pid_id`` was busy ``busy_ns`` of the last
        ``window_ns`` (its receive loop calls this about once a second)."""
        p = self._ptr(pid_id)
        v = min(1000, busy_ns * 1000 // window_ns) if window_ns > 0 else 0
        shm.lib.shm_atomic_set(p + 1, shm.now_ns())
        shm.lib.shm_atomic_set(p, v + 1)              # +1: "reported"

    def proc_load(self, pid_id: int) -> int:
        """Percent, 0 when the process has not reported for two windows."""
        p = self._ptr(pid_id)
        v = _get(p)
        if not v or shm.now_ns() - _get(p + 1) > 2 * LOAD_WINDOW_NS:
            return 0
        return round((v - 1) / 10)

    def _mean(self) -> int:
        if not self._procs or self._blk is None:
            return 0
        return round(sum(self.proc_load(i) for i in self._procs)
                     / len(self._procs))


load = _Load()


# --- net: bytes waiting on the server's sockets ---------------------------

_net_sockets: Optional[Callable[[], Iterable[tuple]]] = None


def register_net_sockets(func: Callable[[], Iterable[tuple]]) -> None:
    """The core hands a function returning its listening sockets as
    ``(proto, ip, port)`` tuples ("udp"/"tcp")."""
    global _net_sockets
    _net_sockets = func


def _hex_ip(h: str) -> str:
    raw = bytes.fromhex(h)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc prints IPv6 as four host-order (little-endian) 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _proc_net_queues(proto: str, root: str = "/proc/net"):
    """(ip, port, rx_queue) of every socket of proto in /proc/net."""
    for fname in (proto, proto + "6"):
        try:
            with open(os.path.join(root, fname)) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 5:
                continue
            ip_h, _, port_h = parts[1].partition(":")
            try:
                rx = int(parts[4].partition(":")[2], 16)
                yield _hex_ip(ip_h), int(port_h, 16), rx
            except ValueError:
                continue


def _waiting(proto: str, root: str = "/proc/net") -> int:
    if _net_sockets is None:
        return 0
    wanted = set()
    for p, ip, port in _net_sockets():
        if p == proto:
            wanted.add((ip, int(port)))
    if not wanted:
        return 0
    total = 0
    for ip, port, rx in _proc_net_queues(proto, root):
        if (ip, port) in wanted:
            total += rx
    return total


# --- pkmem: resident size per process ------------------------------------

def _rss(pid: int) -> int:
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss
    except ImportError:
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0
    except Exception:   # psutil.NoSuchProcess, AccessDenied
        return 0


def _pkmem() -> Dict[str, int]:
    from . import pt
    procs = [(e.id, e.pid) for e in pt.entries()] or [(0, os.getpid())]
    return {f"{i}-real_used_size": _rss(pid) for i, pid in procs}


def uptime() -> float:
    """Seconds since the arena (the server) was created."""
    return (shm.now_ns() - shm.start_ns()) / 1e9

