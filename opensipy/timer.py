"""Timers, as OpenSIPS's timer.h has them.

Modules register handlers while ``mod_init`` runs (the core calls
:func:`open_registration` before the ``mod_init`` calls and
:func:`close_registration` after them; outside that window registering
raises :class:`TimerError` naming the timer)::

    register_timer(name, fn, param, seconds, flags=0)
    register_utimer(name, fn, param, microseconds, flags=0)

The timer process that the core forks runs :func:`timer_process_loop`,
which never returns.  A handler is called as ``fn(ticks, param)``: ``ticks``
is :func:`get_ticks` (seconds since the server started) for a timer and
:func:`get_uticks` (microseconds) for a utimer.  The schedule uses the
monotonic clock; the start time is the arena's creation time, kept in
shared memory, so every process counts ticks from the same origin.  The
first run of a handler comes one interval after the loop starts.

When a handler runs late (it, or another handler, took longer than the
interval), the flags decide:

* default (no flag): the schedule is kept: every missed tick is still run,
  back to back, until the handler is on time again (a burst);
* ``TIMER_FLAG_SKIP_ON_DELAY``: missed ticks are dropped; the next run is
  the first tick of the original schedule that is still in the future;
* ``TIMER_FLAG_DELAY_ON_DELAY``: the schedule moves: the next run is one
  interval after the late run finished.

A handler that raises is logged (``LM_ERR`` with the traceback) and keeps
its schedule; the loop goes on.  By default (``timer_workers=1``) all
handlers run in the one timer process, so a slow handler delays the others;
with the global parameter ``timer_workers`` = n > 1 (OpenSIPS's, set through
:func:`set_timer_workers`) the timer process only keeps the schedule and
hands each due tick to one of ``n`` handler processes (see
:class:`Dispatcher` for what "late" means there).

Shared state: when registration closes (in the attendant, before the
fork) every timer gets a record in shared memory: ``runs``, ``skipped``,
``errors``, ``next_due`` (the monotonic clock value of its next run) and
the number of its runs in progress.  Every process reads the same figures
(an MI listing from a module process sees the timer process's counts; an
error in a handler process is counted), and a respawned timer process
continues the schedule where the dead one left it: ticks missed while no
timer process ran are late ticks, handled by the flags as above.
"""
from __future__ import annotations

import os
import signal
import struct
import time
import traceback
from typing import Any, Callable, List, Optional

from . import log

__all__ = [
    "TIMER_FLAG_SKIP_ON_DELAY", "TIMER_FLAG_DELAY_ON_DELAY", "TimerError",
    "register_timer", "register_utimer", "open_registration",
    "close_registration", "registration_open", "get_ticks", "get_uticks",
    "timer_process_loop", "list_timers", "set_timer_workers",
]

TIMER_FLAG_SKIP_ON_DELAY = 1 << 1
TIMER_FLAG_DELAY_ON_DELAY = 1 << 2
_KNOWN_FLAGS = TIMER_FLAG_SKIP_ON_DELAY | TIMER_FLAG_DELAY_ON_DELAY


class TimerError(Exception):
    pass


# the fields of a timer's shared record (int64 each)
_RUNS, _SKIPPED, _ERRORS, _NEXT_DUE, _RUNNING = range(5)
_NFIELDS = 5


def _field(i, doc):
    def get(self):
        p = self._p
        return self._local[i] if p is None else _aget(p + i)

    def set_(self, v):
        p = self._p
        if p is None:
            self._local[i] = v
        else:
            _aset(p + i, v)
    return property(get, set_, doc=doc)


class Timer:
    """A registered timer (exposed read-only for MI listings).  The
    counters and ``next_due`` live in shared memory once registration has
    closed (:func:`close_registration`), in the process before that."""
    __slots__ = ("name", "fn", "param", "interval_ns", "flags", "is_utimer",
                 "_p", "_local")

    def __init__(self, name, fn, param, interval_ns, flags, is_utimer):
        self.name = name
        self.fn = fn
        self.param = param
        self.interval_ns = interval_ns
        self.flags = flags
        self.is_utimer = is_utimer
        self._p = None                      # int64_t * of the shm record
        self._local = [0] * _NFIELDS

    runs = _field(_RUNS, "ticks run (handed to a worker with timer_workers)")
    skipped = _field(_SKIPPED, "ticks dropped by SKIP_ON_DELAY")
    errors = _field(_ERRORS, "runs that raised")
    next_due = _field(_NEXT_DUE, "monotonic ns of the next run (0: none)")
    running = _field(_RUNNING, "runs in progress in handler processes")

    def count(self, i: int, n: int = 1) -> None:
        """Add n to counter i (atomically when shared)."""
        p = self._p
        if p is None:
            self._local[i] += n
        else:
            _aadd(p + i, n)

    def __repr__(self):
        kind = "utimer" if self.is_utimer else "timer"
        return f"<{kind} {self.name} every {self.interval_ns / 1e9:g}s>"


_timers: List[Timer] = []
_open = False
_state = None                  # shm block: the timers' records, then one
                               # int64: offset of the Dispatcher's block
_aget = _aset = _aadd = None   # shm atomics, bound with the first record


def open_registration() -> None:
    global _open
    _open = True


def close_registration() -> None:
    """Registration ends (the attendant, after mod_init, before the fork):
    the timers' records move to shared memory."""
    global _open
    _open = False
    _share()


def _share() -> None:
    global _state, _aget, _aset, _aadd
    from . import shm
    if not shm.is_initialised():
        return
    _free_state()
    _aget, _aset, _aadd = (shm.lib.shm_atomic_get, shm.lib.shm_atomic_set,
                           shm.lib.shm_atomic_add)
    n = len(_timers)
    _state = shm.shm_malloc(8 * (_NFIELDS * n + 1), "core")
    _state.buffer[:] = bytes(len(_state.buffer))
    base = shm.ffi.cast("int64_t *", _state.ptr)
    for i, t in enumerate(_timers):
        p = base + _NFIELDS * i
        for f, v in enumerate(t._local):
            _aset(p + f, v)
        t._p = p


def _free_state() -> None:
    """Give the shared records (and a Dispatcher's block) back."""
    global _state
    from . import shm
    if _state is None:
        return
    if shm.is_initialised():
        _free_dispatcher_block()
        for t in _timers:
            if t._p is not None:
                t._local = [_aget(t._p + f) for f in range(_NFIELDS)]
                t._p = None
        shm.shm_free(_state)
    _state = None


def _dispatcher_slot():
    """The int64 after the records: the shm offset of the Dispatcher's
    block (0: none), so the next timer process frees the last one's."""
    from . import shm
    return shm.ffi.cast("int64_t *", _state.ptr) + _NFIELDS * len(_timers)


def _free_dispatcher_block() -> None:
    from . import shm
    if _state is None:
        return
    off = _aget(_dispatcher_slot())
    if off:
        _aset(_dispatcher_slot(), 0)
        shm.shm_free(shm.block_at(off))


def registration_open() -> bool:
    return _open


def _register(name, fn, param, interval_ns, flags, is_utimer, unit):
    kind = "utimer" if is_utimer else "timer"
    if not _open:
        raise TimerError(f"cannot register {kind} '{name}': timers are "
                         f"registered only while mod_init runs")
    if not callable(fn):
        raise TimerError(f"{kind} '{name}': handler is not callable")
    if interval_ns <= 0:
        raise TimerError(f"{kind} '{name}': the interval must be at least "
                         f"1 {unit}")
    if flags & ~_KNOWN_FLAGS:
        raise TimerError(f"{kind} '{name}': unknown flags {flags:#x}")
    if (flags & _KNOWN_FLAGS) == _KNOWN_FLAGS:
        raise TimerError(f"{kind} '{name}': SKIP_ON_DELAY and DELAY_ON_DELAY "
                         f"exclude each other")
    t = Timer(name, fn, param, interval_ns, flags, is_utimer)
    _timers.append(t)
    return t


def register_timer(name: str, fn: Callable[[int, Any], Any], param: Any,
                   seconds: int, flags: int = 0) -> Timer:
    """Run ``fn(ticks, param)`` every ``seconds`` (a positive integer)."""
    if int(seconds) != seconds:
        raise TimerError(f"timer '{name}': seconds must be an integer "
                         f"(use register_utimer for less)")
    return _register(name, fn, param, int(seconds) * 1_000_000_000, flags,
                     False, "second")


def register_utimer(name: str, fn: Callable[[int, Any], Any], param: Any,
                    microseconds: int, flags: int = 0) -> Timer:
    """Run ``fn(uticks, param)`` every ``microseconds``."""
    return _register(name, fn, param, int(microseconds) * 1000, flags, True,
                     "microsecond")


def list_timers() -> List[Timer]:
    return list(_timers)


def _reset_for_tests() -> None:
    """TEST ONLY: forget every timer and close registration."""
    global _open, _timer_workers
    _free_state()
    _timers.clear()
    _open = False
    _timer_workers = 1


# ------------------------------------------------------------------ ticks

_local_start = time.monotonic_ns()


def _start_ns() -> int:
    from . import shm
    if shm.is_initialised():
        return shm.start_ns()
    return _local_start


def get_ticks() -> int:
    """Seconds since the server started (the same in every process)."""
    return (time.monotonic_ns() - _start_ns()) // 1_000_000_000


def get_uticks() -> int:
    """Microseconds since the server started."""
    return (time.monotonic_ns() - _start_ns()) // 1000


# ------------------------------------------------------------------- loop

class Scheduler:
    """Runs the due handlers in this process; the clock is injectable.
    A timer whose shared ``next_due`` is set (a previous timer process ran
    it) keeps that schedule; the others start one interval from now."""

    def __init__(self, timers, clock=time.monotonic_ns, start=None):
        self.timers = list(timers)
        self.clock = clock
        now = clock() if start is None else start
        for t in self.timers:
            if not t.next_due:
                t.next_due = now + t.interval_ns

    def _call(self, t: Timer) -> bool:
        """Run t; False when it must be retried shortly instead."""
        _run_handler(t)
        t.count(_RUNS)
        return True

    def run_due(self) -> Optional[int]:
        """Run each handler that is due once (earliest first); return the
        clock value of the next due time (None without timers)."""
        now = self.clock()
        for t in sorted(self.timers, key=lambda t: t.next_due):
            if t.next_due > now:
                continue
            if not self._call(t):
                t.next_due = now + min(t.interval_ns, _RETRY_NS)
                continue
            t.next_due += t.interval_ns
            if t.flags & (TIMER_FLAG_SKIP_ON_DELAY | TIMER_FLAG_DELAY_ON_DELAY):
                after = self.clock()
                if t.next_due <= after:
                    if t.flags & TIMER_FLAG_SKIP_ON_DELAY:
                        missed = (after - t.next_due) // t.interval_ns + 1
                        t.count(_SKIPPED, missed)
                        t.next_due += missed * t.interval_ns
                    else:
                        t.next_due = after + t.interval_ns
            now = self.clock()
        if not self.timers:
            return None
        return min(t.next_due for t in self.timers)


_RETRY_NS = 5_000_000


def _run_handler(t: Timer) -> None:
    ticks = get_uticks() if t.is_utimer else get_ticks()
    try:
        t.fn(ticks, t.param)
    except Exception:
        t.count(_ERRORS)
        log.LM_ERR(f"timer handler '{t.name}' failed:\n"
                   f"{traceback.format_exc()}")


# --------------------------------------------------- timer handler processes

_JOB = struct.Struct("<ii")     # timer index, padding
_timer_workers = 1


def set_timer_workers(n: int) -> None:
    """The processes that run the handlers (the global parameter
    ``timer_workers``, OpenSIPS's): 1 (the default) runs them in the timer
    process itself, n > 1 makes the timer process fork n handler
    processes.  Set it before the timer process starts."""
    global _timer_workers
    if int(n) != n or n < 1:
        raise TimerError(f"timer_workers must be a number >= 1, not {n!r}")
    _timer_workers = int(n)


def _die_with_parent() -> None:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)        # PR_SET_PDEATHSIG
    except (OSError, AttributeError):        # pragma: no cover
        pass


class Dispatcher(Scheduler):
    """The timer process with handler processes: due ticks are handed
    through a pipe to ``nworkers`` forked workers, so a slow handler holds
    one worker and the others stay on time.  Here "late" means the
    previous run of the same timer has not finished: the default runs it
    again in parallel (in another worker, or queued until one is free),
    SKIP_ON_DELAY drops the tick, DELAY_ON_DELAY waits for the previous run
    to end.  A worker that dies is replaced (its run counts as finished).
    Workers die with the timer process (PR_SET_PDEATHSIG).

    The runs in progress are counted in each timer's shared record; the
    workers' "busy" slots are one shm block whose offset is kept in the
    shared state, so a respawned timer process frees its predecessor's
    block before making its own (a respawn loop does not leak), and starts
    with no run in progress (the old workers died with the old process)."""

    def __init__(self, timers, nworkers, clock=time.monotonic_ns):
        from . import shm
        super().__init__(timers, clock)
        self.index = {id(t): i for i, t in enumerate(self.timers)}
        for t in self.timers:
            t.running = 0
        _free_dispatcher_block()
        self._blk = shm.shm_malloc(8 * nworkers, "core")
        self._blk.buffer[:] = bytes(len(self._blk.buffer))
        if _state is not None:
            _aset(_dispatcher_slot(), self._blk.offset)
        p = shm.ffi.cast("int64_t *", self._blk.ptr)
        self.running = [t._p + _RUNNING if t._p is not None else None
                        for t in self.timers]              # per timer
        if None in self.running:
            raise TimerError("the Dispatcher needs the timers in shared "
                             "memory (close_registration with an arena)")
        self.busy = [p + w for w in range(nworkers)]       # timer idx + 1
        self.rfd, self.wfd = os.pipe()
        self.workers = {}
        self.ppid = os.getpid()
        for w in range(nworkers):
            self._spawn(w)

    def _spawn(self, w: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self._worker(w)
            except BaseException:
                code = 1
                log.LM_CRIT(f"timer worker {w} failed:\n"
                            f"{traceback.format_exc()}")
            finally:
                os._exit(code)
        self.workers[pid] = w

    def _worker(self, w: int) -> None:
        from . import shm
        _die_with_parent()
        os.close(self.wfd)
        if os.getppid() != self.ppid:
            return
        from .script.reload import poll as reload_poll
        lib = shm.lib
        while True:
            data = os.read(self.rfd, _JOB.size)
            if len(data) < _JOB.size:
                return                        # the timer process is gone
            reload_poll()                     # MI reload_routes
            idx = _JOB.unpack(data)[0]
            lib.shm_atomic_set(self.busy[w], idx + 1)
            _run_handler(self.timers[idx])
            lib.shm_atomic_set(self.busy[w], 0)
            lib.shm_atomic_add(self.running[idx], -1)

    def reap(self) -> None:
        """Replace dead workers (call from the loop)."""
        from . import shm
        for pid, w in list(self.workers.items()):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if not done:
                continue
            del self.workers[pid]
            idx = shm.lib.shm_atomic_xchg(self.busy[w], 0) - 1
            if idx >= 0:
                shm.lib.shm_atomic_add(self.running[idx], -1)
            log.LM_ERR(f"timer worker {w} (pid {pid}) died; starting "
                       f"another")
            self._spawn(w)

    def _call(self, t: Timer) -> bool:
        from . import shm
        idx = self.index[id(t)]
        if shm.lib.shm_atomic_get(self.running[idx]) > 0:
            if t.flags & TIMER_FLAG_SKIP_ON_DELAY:
                t.count(_SKIPPED)
                return True
            if t.flags & TIMER_FLAG_DELAY_ON_DELAY:
                return False
        shm.lib.shm_atomic_add(self.running[idx], 1)
        os.write(self.wfd, _JOB.pack(idx, 0))
        t.count(_RUNS)
        return True


def timer_process_loop() -> None:
    """The timer process's body: never returns."""
    from .script.reload import poll as reload_poll
    if _timer_workers > 1:
        sched = Dispatcher(_timers, _timer_workers)
    else:
        sched = Scheduler(_timers)
    while True:
        log.refresh()          # MI log_level may have changed our level
        reload_poll()          # MI reload_routes may have new routes
        nxt = sched.run_due()
        delay = 1.0 if nxt is None else (nxt - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(min(delay, 1.0 if nxt is None else 0.2))
        if isinstance(sched, Dispatcher):
            sched.reap()
