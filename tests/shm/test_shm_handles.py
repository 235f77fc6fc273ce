"""The Python handles of shared-memory objects (issue #19, point 9):
attaching to a counter keeps its value, an RWLock's reader slots are kept
per thread, and unlock results are checked."""
import os
import threading
import time

import pytest

from opensipy import shm
from shm_forking import reap, run_children, spawn

MOD = "test_handles"


def _in_child(fn, timeout=60):
    """Run fn in a forked child (a deadlock there is a timeout, not a hung
    test run); fail unless it returns."""
    pid = spawn(fn)
    codes = reap([pid], timeout)
    assert codes[pid] == 0, f"child: {codes[pid]}"


def test_attaching_to_a_counter_keeps_its_value():
    c = shm.AtomicCounter(5, MOD)
    c.inc(2)

    def worker(_):
        mine = shm.AtomicCounter(_ptr=c._p)    # attach: no reset
        for _ in range(1000):
            mine.inc()

    run_children(3, worker, timeout=60)
    assert shm.AtomicCounter(_ptr=c._p).get() == 7 + 3000
    assert c.get() == 3007
    c.destroy()


def test_rwlock_reader_slots_are_per_thread():
    rw = shm.RWLock(MOD)
    n_threads, rounds = 4, 300
    errors = []
    barrier = threading.Barrier(n_threads)

    def reader():
        try:
            barrier.wait(10)
            for _ in range(rounds):
                rw.acquire_read()
                time.sleep(0)
                rw.release_read()
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)

    def writer(_):
        for _ in range(50):
            with rw.write:
                pass

    threads = [threading.Thread(target=reader) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # every slot the threads took was given back: a writer gets in
    run_children(2, writer, timeout=30)
    rw.destroy()


def test_interleaved_readers_in_two_threads_release_their_own_slots():
    rw = shm.RWLock(MOD)
    a_in, b_in, a_out, b_out = (threading.Event() for _ in range(4))
    finish = threading.Event()
    errors = []

    def a():
        try:
            rw.acquire_read()
            a_in.set()
            b_in.wait(10)
            rw.release_read()          # popped b's slot before the fix
            a_out.set()
        except Exception as e:   # noqa: BLE001
            errors.append(e)
        finish.wait(60)                # stay alive: a live thread's slot stays held

    def b():
        try:
            a_in.wait(10)
            rw.acquire_read()
            b_in.set()
            a_out.wait(10)
            rw.release_read()
        except Exception as e:   # noqa: BLE001
            errors.append(e)
        b_out.set()
        finish.wait(60)

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    try:
        assert b_out.wait(30)
        assert not errors, errors
        # both slots were given back while their threads still run: a
        # writer in another process gets in
        _in_child(lambda: rw.acquire_write(), timeout=20)
    finally:
        finish.set()
        for t in ts:
            t.join(30)
    rw.destroy()


def test_unlock_results_are_checked(capsys):
    lock = shm.Lock(MOD)
    rw = shm.RWLock(MOD)
    entered, done = threading.Event(), threading.Event()

    def holder():
        with lock, rw.write:
            entered.set()
            done.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert entered.wait(10)
        with pytest.raises(shm.ShmError, match="unlock"):
            lock.__exit__(None, None, None)       # not the holder: EPERM
        with pytest.raises(shm.ShmError, match="write unlock"):
            rw.release_write()
        with pytest.raises(shm.ShmError, match="write unlock"):
            rw.write.__exit__(None, None, None)
        capsys.readouterr()
        # an exception leaving a block is not replaced by the unlock error
        assert lock.__exit__(KeyError, KeyError("inner"), None) is False
        assert rw.write.__exit__(KeyError, KeyError("inner"), None) is False
        err = capsys.readouterr().err
        assert err.count("while leaving on KeyError") == 2, err
        assert lock.owner == os.getpid()
    finally:
        done.set()
        t.join(10)
    assert lock.owner == 0
    _in_child(lambda: rw.acquire_write(), timeout=20)
    lock.destroy()
    rw.destroy()
