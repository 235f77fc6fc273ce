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
its schedule; the loop goes on.  By default all handlers run in the one
timer process, so a slow handler delays the others; with
:func:`set_timer_workers` ``(n)`` (OpenSIPS's ``timer_workers``) the timer
process only keeps the schedule and hands each due tick to one of ``n``
handler processes (see :class:`Dispatcher` for what "late" means there).
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


class Timer:
    """A registered timer (exposed read-only for MI listings)."""
    __slots__ = ("name", "fn", "param", "interval_ns", "flags", "is_utimer",
                 "next_due", "runs", "skipped", "errors")

    def __init__(self, name, fn, param, interval_ns, flags, is_utimer):
        self.name = name
        self.fn = fn
        self.param = param
        self.interval_ns = interval_ns
        self.flags = flags
        self.is_utimer = is_utimer
        self.next_due = 0
        self.runs = 0
        self.skipped = 0
        self.errors = 0

    def __repr__(self):
        kind = "utimer" if self.is_utimer else "timer"
        return f"<{kind} {self.name} every {self.interval_ns / 1e9:g}s>"


_timers: List[Timer] = []
_open = False


def open_registration() -> None:
    global _open
    _open = True


def close_registration() -> None:
    global _open
    _open = False


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
    _timers.clear()
    _open = False
    _timer_workers = 0


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
    """Runs the due handlers in this process; the clock is injectable."""

    def __init__(self, timers, clock=time.monotonic_ns, start=None):
        self.timers = list(timers)
        self.clock = clock
        now = clock() if start is None else start
        for t in self.timers:
            t.next_due = now + t.interval_ns

    def _call(self, t: Timer) -> bool:
        """Run t; False when it must be retried shortly instead."""
        _run_handler(t)
        t.runs += 1
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
                        t.skipped += missed
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
        t.errors += 1
        log.LM_ERR(f"timer handler '{t.name}' failed:\n"
                   f"{traceback.format_exc()}")


# --------------------------------------------------- timer handler processes

_JOB = struct.Struct("<ii")     # timer index, padding
_timer_workers = 0


def set_timer_workers(n: int) -> None:
    """Number of timer handler processes (OpenSIPS's ``timer_workers``);
    0 (the default) runs the handlers in the timer process itself.  Set it
    before the timer process starts."""
    global _timer_workers
    if n < 0:
        raise TimerError("timer_workers must be >= 0")
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
    Workers die with the timer process (PR_SET_PDEATHSIG)."""

    def __init__(self, timers, nworkers, clock=time.monotonic_ns):
        from . import shm
        super().__init__(timers, clock)
        self.index = {id(t): i for i, t in enumerate(self.timers)}
        n = max(1, len(self.timers))
        self._blk = shm.shm_malloc(8 * (n + nworkers), "core")
        self._blk.buffer[:] = bytes(len(self._blk.buffer))
        p = shm.ffi.cast("int64_t *", self._blk.ptr)
        self.running = [p + i for i in range(n)]           # per timer
        self.busy = [p + n + w for w in range(nworkers)]   # timer idx + 1
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
        lib = shm.lib
        while True:
            data = os.read(self.rfd, _JOB.size)
            if len(data) < _JOB.size:
                return                        # the timer process is gone
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
                t.skipped += 1
                return True
            if t.flags & TIMER_FLAG_DELAY_ON_DELAY:
                return False
        shm.lib.shm_atomic_add(self.running[idx], 1)
        os.write(self.wfd, _JOB.pack(idx, 0))
        t.runs += 1
        return True


def timer_process_loop() -> None:
    """The timer process's body: never returns."""
    if _timer_workers > 0:
        sched = Dispatcher(_timers, _timer_workers)
    else:
        sched = Scheduler(_timers)
    while True:
        log.refresh()          # MI log_level may have changed our level
        nxt = sched.run_due()
        delay = 1.0 if nxt is None else (nxt - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(min(delay, 1.0 if nxt is None else 0.2))
        if isinstance(sched, Dispatcher):
            sched.reap()
