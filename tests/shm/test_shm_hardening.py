"""The lock handling of native/shm.c under forks (issue #19, point 8): owners
kept by failed unlocks, hash-table
operations that fail instead of running unlocked, dead owners' locks that
cannot be made consistent, owner-dead reports made outside the allocator
lock, block headers read under it, a table destroyed under its bucket
locks."""
import ctypes
import errno
import os
import random
import signal
import threading
import time

import pytest

from opensipy import shm
from opensipy.shm import ffi, lib
from shm_forking import reap, run_children, spawn, wait_until

MOD = "test_hardening"


def _hold_and_die(acquire):
    """A child takes a lock and is killed holding it; returns its pid."""
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


def _in_child(fn, timeout=60):
    """Run fn in a forked child (a deadlock there is a timeout, not a hung
    test run); fail unless it returns."""
    pid = spawn(fn)
    codes = reap([pid], timeout)
    assert codes[pid] == 0, f"child: {codes[pid]}"


# ------------------------------------------------------- unlock by a non-owner

def test_a_failed_unlock_keeps_the_owner():
    lock = shm.Lock(MOD)
    ready, done = shm.AtomicCounter(0), shm.AtomicCounter(0)

    def holder():
        lock.acquire()
        ready.set(1)
        wait_until(lambda: done.get() == 1, 30)
        lock.release()

    pid = spawn(holder)
    try:
        wait_until(lambda: ready.get() == 1, 30)
        with pytest.raises(shm.ShmError, match=f"errno {errno.EPERM}"):
            lock.release()
        assert lock.owner == pid          # not wiped by the failed unlock
        assert not lock.try_acquire()     # and still held
    finally:
        done.set(1)
        codes = reap([pid], 30)
    assert codes[pid] == 0 and lock.owner == 0
    lock.destroy()


def test_owner_is_right_while_intruders_unlock_hammer():
    lock = shm.Lock(MOD)
    finished, refused = shm.AtomicCounter(0), shm.AtomicCounter(0)
    n_workers, rounds = 3, 20000

    def worker(i):
        if i == n_workers:                # the intruder
            while finished.get() < n_workers:
                try:
                    lock.release()
                except shm.ShmError:
                    refused.inc()
                else:
                    raise AssertionError("a non-owner released the lock")
            return
        me = os.getpid()
        try:
            wait_until(lambda: refused.get() > 0, 30)   # the intruder is on
            for _ in range(rounds):
                with lock:
                    assert lock.owner == me, lock.owner
        finally:
            finished.inc()

    run_children(n_workers + 1, worker, timeout=120)
    assert refused.get() > 0 and lock.owner == 0
    lock.destroy()


def test_a_thread_that_does_not_hold_the_lock_cannot_release_it():
    lock = shm.Lock(MOD)
    held, go = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            go.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        held.wait(10)
        with pytest.raises(shm.ShmError):
            lock.release()
        assert lock.owner == os.getpid()
        assert not lock.try_acquire()
    finally:
        go.set()
        t.join(10)
    assert lock.owner == 0
    lock.destroy()


# ---------------------------------------- hash table on an unusable bucket lock

_libc = ctypes.CDLL(None, use_errno=True)


def _make_unrecoverable(lock_ptr):
    """Take over the lock of a dead holder the wrong way (no
    pthread_mutex_consistent): the mutex becomes ENOTRECOVERABLE."""
    addr = ctypes.c_void_p(int(ffi.cast("uintptr_t", lock_ptr)))
    assert _libc.pthread_mutex_lock(addr) == errno.EOWNERDEAD
    assert _libc.pthread_mutex_unlock(addr) == 0
    assert _libc.pthread_mutex_lock(addr) == errno.ENOTRECOVERABLE


def _keys(ht, n):
    """n keys in the bucket of b'k0' and n in other buckets"""
    bl = lib.shm_ht_bucket_lock_for_tests(ht._p, b"k0", 2)
    same, other = [], []
    i = 0
    while len(same) < n or len(other) < n:
        k = b"k%d" % i
        (same if lib.shm_ht_bucket_lock_for_tests(ht._p, k, len(k)) == bl
         else other).append(k)
        i += 1
    return bl, same[:n], other[:n]


def test_hash_table_operations_fail_on_an_unusable_bucket_lock():
    ht = shm.HashTable(4, MOD)
    bl, same, other = _keys(ht, 8)
    for k in same + other:
        ht.put(k, b"v")
    _hold_and_die(shm.Lock(_ptr=bl, _set=True).acquire)
    _make_unrecoverable(bl)

    def worker(w):
        for r in range(300):
            k = same[(w + r) % len(same)]
            for op in (lambda: ht.put(k, b"x"), lambda: ht.get(k),
                       lambda: ht.delete(k), lambda: ht.items()):
                with pytest.raises(shm.ShmError, match="bucket lock unusable"):
                    op()
            k = other[(w + r) % len(other)]
            ht.put(k, b"w%d" % w)
            assert ht.get(k) is not None

    run_children(3, worker, timeout=120)
    ht.put(other[0], b"x", expires=60)     # len and purge now walk the buckets
    with pytest.raises(shm.ShmError, match="bucket lock unusable"):
        len(ht)
    with pytest.raises(shm.ShmError, match="bucket lock unusable"):
        ht.purge_expired()
    shm.check()


def test_an_unrecoverable_bucket_does_not_stop_destroy():
    ht = shm.HashTable(2, MOD + "_u")
    bl, same, other = _keys(ht, 3)
    for k in same + other:
        ht.put(k, b"v" * 100)
    _hold_and_die(shm.Lock(_ptr=bl, _set=True).acquire)
    _make_unrecoverable(bl)
    with pytest.raises(shm.ShmError, match="destroy"):
        ht.destroy()
    assert shm.module_usage()[MOD + "_u"] == 0
    shm.check()


# ------------------------------------------- pthread_mutex_consistent failing

def test_a_lock_that_cannot_be_made_consistent_is_not_used(capsys):
    lock = shm.Lock(MOD)
    dead = _hold_and_die(lock.acquire)
    lib.shm_fail_consistent_for_tests(1)
    try:
        with pytest.raises(shm.ShmError, match=f"errno {errno.ENOTRECOVERABLE}"):
            lock.acquire()
    finally:
        lib.shm_fail_consistent_for_tests(0)
    err = capsys.readouterr().err
    assert "could not be made consistent" in err and f"process {dead}" in err

    def worker(_):
        for _ in range(200):
            with pytest.raises(shm.ShmError):
                lock.acquire()
            with pytest.raises(shm.ShmError):
                lock.try_acquire()

    run_children(3, worker, timeout=60)


# --------------------------------- owner-dead reports outside the allocator lock

def test_owner_dead_report_may_allocate(capsys):
    """A report that allocates shared memory (as a logging path may) must
    not run inside the allocator lock it reports on: children hammering
    the allocator are killed, often inside it, and the next allocation
    takes it over."""
    took_over = shm.AtomicCounter(0)

    def checker():
        from opensipy import log
        real_err, real_crit = log.LM_ERR, log.LM_CRIT

        def allocating(real):
            def report(msg):
                b = shm.shm_malloc(64, MOD)   # deadlocked before the fix
                shm.shm_free(b)
                if "shm allocator" in msg:
                    took_over.inc()
                real(msg)
            return report

        log.LM_ERR, log.LM_CRIT = allocating(real_err), allocating(real_crit)
        rnd = random.Random(19)
        for _ in range(60):
            go = shm.AtomicCounter(0)

            def hammer():
                blk = shm.shm_malloc(1 << 20, MOD)
                go.set(1)
                while True:                    # grow: new block + 1 MiB copy
                    blk = shm.shm_realloc(blk, (1 << 20) + 4096)
                    blk = shm.shm_realloc(blk, 1 << 20)   # shrink in place

            pid = spawn(hammer)
            wait_until(lambda: go.get() == 1, 30)
            time.sleep(rnd.uniform(0.002, 0.02))
            os.kill(pid, signal.SIGKILL)
            reap([pid], 30)
            shm.shm_free(shm.shm_malloc(100, MOD))   # takes the lock over
            go.destroy()
            shm.check()
            if took_over.get() >= 3:
                break
        assert took_over.get() > 0, "no child died inside the allocator"

    _in_child(checker, timeout=120)
    shm.check()


# --------------------------------------------- block headers under the lock

def test_block_at_reads_size_and_module_of_one_block():
    """One process frees and allocates blocks of two modules and sizes,
    publishing each block's offset; the others look the offset up at once:
    they get an error or the size and module of one same block."""
    stop, at = shm.AtomicCounter(0), shm.AtomicCounter(0)
    want = {(MOD + "_a", 112), (MOD + "_b", 304)}
    shm.module_id(MOD + "_a")
    shm.module_id(MOD + "_b")

    readers = 2

    def worker(w):
        if w == 0:
            # runs until both readers are done (a reader that starts late
            # must still find live blocks), and keeps each block a moment
            # so lookups land on allocated blocks as well as freed ones
            i = 0
            while stop.get() < readers:
                b = shm.shm_malloc(100 if i % 2 == 0 else 300,
                                   MOD + ("_a" if i % 2 == 0 else "_b"))
                at.set(b.offset)
                for _ in range(20):
                    at.get()
                shm.shm_free(b)
                i += 1
            return
        try:
            wait_until(lambda: at.get() != 0, 30)
            seen = 0
            for _ in range(20000):
                try:
                    b = shm.block_at(at.get())
                except shm.ShmError:
                    continue
                assert (b.module, b.size) in want, (b.module, b.size)
                seen += 1
            assert seen > 0
        finally:
            stop.inc()

    run_children(readers + 1, worker, timeout=120)
    stop.destroy()
    at.destroy()
    shm.check()


# --------------------------------------------- destroy under the bucket locks

def test_destroy_waits_for_operations_and_leaks_nothing():
    mod = MOD + "_d"
    for rnd in range(5):
        ht = shm.HashTable(2, mod)
        started = shm.AtomicCounter(0)

        def worker(w):
            i = 0
            started.inc()
            while True:
                k = b"w%d-%d" % (w, i % 50)
                try:
                    ht.put(k, b"x" * (16 + i % 200))
                    if i % 3 == 0:
                        ht.delete(k)
                    ht.get(k)
                except shm.ShmError:
                    return                 # destroyed: every later op fails
                i += 1

        pids = [spawn(worker, w) for w in range(3)]
        try:
            wait_until(lambda: started.get() == 3, 30)
            time.sleep(0.02 + 0.01 * rnd)
            ht.destroy()
        finally:
            codes = reap(pids, 60)
        assert all(c == 0 for c in codes.values()), codes
        started.destroy()
        shm.check()
        assert shm.module_usage()[mod] == 0, "entries or the table leaked"
