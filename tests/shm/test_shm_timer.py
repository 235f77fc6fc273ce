"""Timers: registration window, scheduling rules (fake clock), and the real
timer process (forked, with generous tolerances: the box is shared)."""
import os
import signal
import time

import pytest

from opensipy import shm
from opensipy.timer import (TIMER_FLAG_DELAY_ON_DELAY,
                            TIMER_FLAG_SKIP_ON_DELAY, Scheduler)
from shm_forking import reap, spawn


def test_registration_only_while_open(fresh_timers):
    T = fresh_timers
    with pytest.raises(T.TimerError, match="'early'"):
        T.register_timer("early", lambda t, p: None, None, 1)
    T.open_registration()
    t = T.register_timer("ok", lambda t, p: None, "param", 2)
    u = T.register_utimer("uok", lambda t, p: None, None, 250000,
                          TIMER_FLAG_SKIP_ON_DELAY)
    assert T.list_timers() == [t, u]
    assert t.interval_ns == 2 * 10**9 and u.interval_ns == 250 * 10**6
    with pytest.raises(T.TimerError, match="'zero'"):
        T.register_timer("zero", lambda t, p: None, None, 0)
    with pytest.raises(T.TimerError, match="integer"):
        T.register_timer("frac", lambda t, p: None, None, 0.5)
    with pytest.raises(T.TimerError, match="exclude"):
        T.register_utimer("both", lambda t, p: None, None, 10,
                          TIMER_FLAG_SKIP_ON_DELAY | TIMER_FLAG_DELAY_ON_DELAY)
    with pytest.raises(T.TimerError, match="not callable"):
        T.register_timer("nf", None, None, 1)
    T.close_registration()
    with pytest.raises(T.TimerError, match="'late'.*mod_init"):
        T.register_utimer("late", lambda t, p: None, None, 1000)
    assert len(T.list_timers()) == 2


class FakeClock:
    def __init__(self):
        self.now = 0

    def __call__(self):
        return self.now


def _sched(T, clock, flags, cost):
    """A 100 ms utimer whose first run costs `cost` ns of (fake) time."""
    calls = []

    def fn(ticks, param):
        calls.append(clock.now)
        if len(calls) == 1:
            clock.now += cost

    T.open_registration()
    t = T.register_utimer("u", fn, None, 100_000, flags)
    T.close_registration()
    return Scheduler([t], clock=clock, start=0), t, calls


def _drive(sched, clock, until):
    while True:
        nxt = sched.run_due()
        if nxt > until:
            break
        clock.now = max(clock.now, nxt)


MS = 1_000_000


def test_default_keeps_the_schedule_with_a_burst(fresh_timers):
    clock = FakeClock()
    sched, t, calls = _sched(fresh_timers, clock, 0, 450 * MS)
    _drive(sched, clock, 1000 * MS)
    # first run at 100 ms took 450 ms: ticks 200..500 run back to back at
    # 550, then the schedule goes on at 600, 700, ...
    assert calls == [100 * MS] + [550 * MS] * 4 + \
        [k * 100 * MS for k in range(6, 11)]
    assert t.runs == 10 and t.skipped == 0


def test_skip_on_delay_drops_missed_ticks(fresh_timers):
    clock = FakeClock()
    sched, t, calls = _sched(fresh_timers, clock, TIMER_FLAG_SKIP_ON_DELAY,
                             450 * MS)
    _drive(sched, clock, 1000 * MS)
    assert calls == [100 * MS] + [k * 100 * MS for k in range(6, 11)]
    assert t.skipped == 4


def test_delay_on_delay_moves_the_schedule(fresh_timers):
    clock = FakeClock()
    sched, t, calls = _sched(fresh_timers, clock, TIMER_FLAG_DELAY_ON_DELAY,
                             450 * MS)
    _drive(sched, clock, 1000 * MS)
    assert calls == [100 * MS] + [k * 100 * MS + 50 * MS
                                  for k in range(6, 10)]


def test_a_raising_handler_is_logged_and_keeps_running(fresh_timers, capsys):
    T = fresh_timers
    clock = FakeClock()
    seen = []

    def bad(ticks, param):
        seen.append(param)
        raise RuntimeError("boom")

    T.open_registration()
    t = T.register_utimer("bad", bad, "p", 1000)
    T.close_registration()
    sched = Scheduler([t], clock=clock, start=0)
    for k in range(1, 4):
        clock.now = k * 1_000_000
        sched.run_due()
    assert seen == ["p", "p", "p"] and t.errors == 3
    err = capsys.readouterr().err
    assert "timer handler 'bad' failed" in err and "RuntimeError: boom" in err


def test_ticks_are_shared_between_processes(fresh_timers):
    """A process started later (its own clock origin moved to now) still
    counts ticks from the server's start: its reading lies between two
    readings of this process, measured with the plain monotonic clock."""
    T = fresh_timers
    box = shm.AtomicCounter(-1)
    while T.get_uticks() < 500_000:      # so a local origin would show
        time.sleep(0.05)

    def late_process():
        T._local_start = time.monotonic_ns()
        time.sleep(0.2)
        box.set(T.get_uticks())

    t0 = time.monotonic_ns()
    before = T.get_uticks()
    reap([spawn(late_process)], 30)
    elapsed_us = (time.monotonic_ns() - t0) // 1000
    theirs = box.get()
    assert before + 200_000 <= theirs <= before + elapsed_us + 1000
    # seconds and microseconds count from the same origin
    s, us = T.get_ticks(), T.get_uticks()
    assert us // 10**6 - 1 <= s <= us // 10**6


def test_timer_process_honours_intervals(fresh_timers):
    T = fresh_timers
    sec = shm.AtomicCounter(0)
    fast = shm.AtomicCounter(0)
    failing = shm.AtomicCounter(0)
    last_ticks = shm.AtomicCounter(-1)

    def on_sec(ticks, param):
        param.inc()
        last_ticks.set(ticks)

    def on_fast(ticks, param):
        param.inc()

    def on_fail(ticks, param):
        param.inc()
        raise ValueError("handler error")

    T.open_registration()
    T.register_timer("sec", on_sec, sec, 1)
    T.register_utimer("fast", on_fast, fast, 100_000)
    T.register_utimer("fail", on_fail, failing, 200_000)
    T.close_registration()

    def timer_proc():
        import sys
        sys.stderr = open(os.devnull, "w")   # the failing handler logs
        T.timer_process_loop()

    t0 = time.monotonic()
    pid = spawn(timer_proc)
    try:
        time.sleep(3.25)
    finally:
        os.kill(pid, signal.SIGKILL)
        codes = reap([pid], 30)
    elapsed = time.monotonic() - t0
    assert codes[pid] == -signal.SIGKILL     # the loop never returned
    # expected: 3 runs, 32 runs, 16 runs in 3.25 s; generous bounds
    assert 2 <= sec.get() <= 4, sec.get()
    assert 16 <= fast.get() <= int(elapsed * 10) + 1, fast.get()
    assert 8 <= failing.get() <= int(elapsed * 5) + 1, failing.get()
    # ticks are seconds since the arena was made, the same in both processes
    assert T.get_ticks() - 3 <= last_ticks.get() <= T.get_ticks()
    for c in (sec, fast, failing, last_ticks):
        c.destroy()


def test_timer_workers_keep_other_timers_on_time(fresh_timers):
    """With handler processes a slow handler does not hold the others up;
    SKIP_ON_DELAY never overlaps runs; a killed worker is replaced."""
    T = fresh_timers
    c = {n: shm.AtomicCounter(0) for n in
         ("fast", "last", "gap", "slow", "inside", "peak", "victim",
          "victim_pid", "pids_seen")}

    def fast(ticks, p):
        now = time.monotonic_ns()
        prev = c["last"].get()
        if prev and now - prev > c["gap"].get():
            c["gap"].set(now - prev)
        c["last"].set(now)
        c["fast"].inc()

    def slow(ticks, p):
        n = c["inside"].inc()
        if n > c["peak"].get():
            c["peak"].set(n)
        c["slow"].inc()
        time.sleep(1.5)
        c["inside"].dec()

    def victim(ticks, p):
        if c["victim_pid"].get() not in (0, os.getpid()):
            c["pids_seen"].set(2)          # ran in a new worker
        c["victim_pid"].set(os.getpid())
        c["victim"].inc()

    T.open_registration()
    T.register_utimer("fast", fast, None, 100_000)
    T.register_utimer("slow", slow, None, 300_000, TIMER_FLAG_SKIP_ON_DELAY)
    T.register_utimer("victim", victim, None, 200_000,
                      TIMER_FLAG_DELAY_ON_DELAY)
    T.close_registration()
    T.set_timer_workers(3)

    def timer_proc():
        import sys
        sys.stderr = open(os.devnull, "w")
        T.timer_process_loop()

    pid = spawn(timer_proc)
    try:
        deadline = time.monotonic() + 20
        while c["victim"].get() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(c["victim_pid"].get(), signal.SIGKILL)   # kill a worker
        time.sleep(2.5)
    finally:
        os.kill(pid, signal.SIGKILL)
        codes = reap([pid], 30)
    assert codes[pid] == -signal.SIGKILL
    assert c["fast"].get() >= 15, c["fast"].get()
    # the 1.5 s handler would leave >= 1.5 s between fast runs in one
    # process; the workers keep the gaps near 0.1 s (generous bound)
    assert c["gap"].get() < 1_000_000_000, c["gap"].get()
    assert c["peak"].get() == 1 and 1 <= c["slow"].get() <= 3
    assert c["pids_seen"].get() == 2
    for x in c.values():
        x.destroy()


# ------------------------------------------------- shared state, respawn

def _quiet_loop(T):
    import sys
    sys.stderr = open(os.devnull, "w")     # failing handlers log
    T.timer_process_loop()


def _run_timer_process(T, seconds):
    pid = spawn(_quiet_loop, T)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGKILL)
        codes = reap([pid], 30)
    assert codes[pid] == -signal.SIGKILL


def test_counters_and_schedule_are_seen_from_another_process(fresh_timers):
    """runs/errors/next_due move in the timer process and are read here
    (as an MI process would read them)."""
    T = fresh_timers

    def fail(ticks, p):
        raise ValueError("boom")

    T.open_registration()
    ok = T.register_utimer("ok", lambda ticks, p: None, None, 100_000)
    bad = T.register_utimer("bad", fail, None, 100_000)
    T.close_registration()
    assert (ok.runs, bad.errors, ok.next_due) == (0, 0, 0)
    before = time.monotonic_ns()
    _run_timer_process(T, 0.75)
    assert 2 <= ok.runs <= 8, ok.runs
    assert 2 <= bad.runs <= 8 and bad.errors == bad.runs
    assert ok.next_due > before + 100_000_000
    assert [t.name for t in T.list_timers()] == ["ok", "bad"]


def test_errors_in_handler_processes_are_counted(fresh_timers):
    T = fresh_timers

    def fail(ticks, p):
        raise ValueError("boom")

    T.open_registration()
    bad = T.register_utimer("bad", fail, None, 100_000)
    T.close_registration()
    T.set_timer_workers(2)
    _run_timer_process(T, 0.75)
    # counted by the handler processes, read here
    assert bad.runs >= 2 and 1 <= bad.errors <= bad.runs, \
        (bad.runs, bad.errors)


def test_a_respawned_timer_process_continues_the_schedule(fresh_timers):
    T = fresh_timers
    ticks = shm.AtomicCounter(0)
    T.open_registration()
    t = T.register_timer("two", lambda tk, p: p.inc(), ticks, 2)
    T.close_registration()
    _run_timer_process(T, 0.4)                 # dies before its first run
    due = t.next_due
    assert due > time.monotonic_ns() and ticks.get() == 0
    _run_timer_process(T, 0.3)                 # the respawn keeps the time
    assert t.next_due == due
    wait = (due - time.monotonic_ns()) / 1e9
    _run_timer_process(T, max(wait, 0) + 0.4)
    assert ticks.get() == 1 and t.next_due == due + 2 * 10**9
    ticks.destroy()


def test_timer_workers_respawn_loop_does_not_leak(fresh_timers):
    T = fresh_timers
    T.open_registration()
    T.register_utimer("u", lambda tk, p: None, None, 50_000)
    T.close_registration()
    T.set_timer_workers(3)
    _run_timer_process(T, 0.3)
    used = shm.stats()["used_size"]
    for _ in range(5):
        _run_timer_process(T, 0.2)
    assert shm.stats()["used_size"] == used
    T._reset_for_tests()                      # frees the records and block
    assert shm.stats()["used_size"] < used


def test_timer_workers_must_be_at_least_one(fresh_timers):
    for bad in (0, -1, 1.5):
        with pytest.raises(fresh_timers.TimerError):
            fresh_timers.set_timer_workers(bad)
    from opensipy import config
    try:
        with pytest.raises(config.ConfigError):
            config.settings.set("timer_workers", "0", "int")
        config.settings.set("timer_workers", "4", "int")
        assert config.settings.timer_workers == 4
    finally:
        config.reset()
