"""Locks, lock sets and read-write locks from several processes, and the
take-over of a lock whose holder was killed."""
import os
import signal
import struct
import time

import pytest

from opensipy import shm
from shm_forking import reap, run_children, spawn, wait_until

N_PROCS = 4
Q = struct.Struct("<q")


def bump(buf, off=0):
    """A deliberately non-atomic read-modify-write on shared bytes."""
    v = Q.unpack_from(buf, off)[0]
    Q.pack_into(buf, off, v + 1)


def test_lock_protects_read_modify_write():
    lock = shm.Lock("test_locks")
    blk = shm.shm_malloc(8, "test_locks")
    Q.pack_into(blk.buffer, 0, 0)
    m = 20000

    def worker(_):
        for _ in range(m):
            with lock:
                bump(blk.buffer)

    run_children(N_PROCS, worker, timeout=120)
    assert Q.unpack_from(blk.buffer, 0)[0] == N_PROCS * m
    assert lock.owner == 0
    shm.shm_free(blk)
    lock.destroy()


def test_try_acquire_and_owner():
    lock = shm.Lock()
    assert lock.try_acquire()
    assert lock.owner == os.getpid()
    got = shm.AtomicCounter(-1)
    reap([spawn(lambda: got.set(int(lock.try_acquire())))], 30)
    assert got.get() == 0          # busy for another process
    lock.release()
    assert lock.owner == 0
    lock.destroy()
    got.destroy()


def test_lockset_by_bucket():
    n = 8
    ls = shm.LockSet(n, "test_locks")
    blk = shm.shm_malloc(8 * n, "test_locks")
    blk.buffer[:] = bytes(8 * n)
    m = 8000

    def worker(w):
        for k in range(m):
            i = (k * 7 + w) % n
            ls.lock(i)
            try:
                bump(blk.buffer, 8 * i)
            finally:
                ls.unlock(i)

    run_children(N_PROCS, worker, timeout=120)
    counts = [Q.unpack_from(blk.buffer, 8 * i)[0] for i in range(n)]
    assert sum(counts) == N_PROCS * m
    assert len(ls) == n
    with pytest.raises(IndexError):
        ls.lock(n)
    with ls[3]:
        assert ls[3].owner == os.getpid()
    shm.shm_free(blk)
    ls.destroy()


def test_rwlock_readers_see_consistent_pairs_and_no_write_is_lost():
    rw = shm.RWLock("test_locks")
    blk = shm.shm_malloc(16, "test_locks")
    blk.buffer[:] = bytes(16)
    torn = shm.AtomicCounter(0)
    reads = shm.AtomicCounter(0)
    m = 3000

    def worker(w):
        for k in range(m):
            if w % 2 == 0 or k % 4 == 0:
                with rw.write:
                    bump(blk.buffer, 0)
                    time.sleep(0) if k % 64 == 0 else None
                    bump(blk.buffer, 8)
            else:
                with rw.read:
                    a, b = struct.unpack_from("<qq", blk.buffer, 0)
                    if a != b:
                        torn.inc()
                    reads.inc()

    run_children(N_PROCS, worker, timeout=180)
    writes = 2 * m + 2 * (m // 4)
    assert struct.unpack_from("<qq", blk.buffer, 0) == (writes, writes)
    assert torn.get() == 0
    assert reads.get() == 2 * (m - m // 4)
    shm.shm_free(blk)
    rw.destroy()


def test_rwlock_readers_share():
    rw = shm.RWLock()
    inside = shm.AtomicCounter(0)
    peak = shm.AtomicCounter(0)

    def reader(_):
        with rw.read:
            now = inside.inc()
            if now > peak.get():
                peak.set(now)
            wait_until(lambda: peak.get() >= 3, 20)
            inside.dec()

    run_children(3, reader, timeout=60)
    assert peak.get() == 3
    rw.destroy()


def _hold_and_die(acquire, release=None):
    """Fork a child that takes a lock, signals, and waits to be killed;
    kill it; return its pid once reaped."""
    ready = shm.AtomicCounter(0)

    def child():
        acquire()
        ready.set(1)
        time.sleep(60)

    pid = spawn(child)
    try:
        wait_until(lambda: ready.get() == 1, 30)
    finally:
        os.kill(pid, signal.SIGKILL)
        codes = reap([pid], 30)
    assert codes[pid] == -signal.SIGKILL
    ready.destroy()
    return pid


def test_lock_of_a_killed_holder_is_recovered(capsys):
    lock = shm.Lock("test_locks")
    dead = _hold_and_die(lock.acquire)
    with lock:                        # does not hang: EOWNERDEAD, recovered
        assert lock.owner == os.getpid()
    err = capsys.readouterr().err
    assert f"process {dead} died holding it" in err
    with lock:                        # and is an ordinary lock again
        pass
    lock.destroy()


def test_waiters_go_on_when_the_holder_is_killed():
    lock = shm.Lock("test_locks")
    blk = shm.shm_malloc(8, "test_locks")
    Q.pack_into(blk.buffer, 0, 0)
    holding = shm.AtomicCounter(0)
    started = shm.AtomicCounter(0)

    def holder():
        lock.acquire()
        holding.set(1)
        time.sleep(60)

    def worker(_):
        started.inc()
        for _ in range(2000):
            with lock:
                bump(blk.buffer)

    hpid = spawn(holder)
    pids = [hpid]
    try:
        wait_until(lambda: holding.get() == 1, 30)
        pids += [spawn(worker, i) for i in range(3)]
        wait_until(lambda: started.get() == 3, 30)
        time.sleep(0.1)               # the workers now wait on the lock
        assert Q.unpack_from(blk.buffer, 0)[0] == 0
        os.kill(hpid, signal.SIGKILL)
    finally:
        codes = reap(pids, 120)
    assert codes[hpid] == -signal.SIGKILL
    assert all(codes[p] == 0 for p in pids[1:]), codes
    assert Q.unpack_from(blk.buffer, 0)[0] == 3 * 2000
    shm.shm_free(blk)
    lock.destroy()


def test_lockset_bucket_of_a_killed_holder(capsys):
    ls = shm.LockSet(4)
    dead = _hold_and_die(lambda: ls.lock(2))
    ls.lock(2)
    ls.unlock(2)
    assert str(dead) in capsys.readouterr().err
    ls.destroy()


def test_rwlock_killed_writer(capsys):
    rw = shm.RWLock()
    dead = _hold_and_die(rw.acquire_write)
    with rw.read:
        pass
    with rw.write:
        pass
    assert str(dead) in capsys.readouterr().err
    rw.destroy()


def test_rwlock_killed_reader_does_not_block_writers(capsys):
    rw = shm.RWLock()
    dead = _hold_and_die(rw.acquire_read)
    with rw.write:
        pass
    with rw.read:
        pass
    assert f"rwlock (reader): process {dead} died" in capsys.readouterr().err
    rw.destroy()
