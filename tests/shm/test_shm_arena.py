"""Arena and allocator: blocks, accounting, exhaustion, cross-process free."""
import random
import struct

import pytest

from opensipy import shm
from shm_forking import reap, run_children, spawn


def used():
    return shm.stats()["used_size"]


def test_init_twice_is_an_error():
    assert shm.is_initialised()
    with pytest.raises(shm.ShmError, match="already"):
        shm.shm_init(1 << 20)


def test_block_buffer_is_writable_and_found_by_offset():
    b = shm.shm_malloc(64, module="test_arena")
    try:
        struct.pack_into("<IQ", b.buffer, 0, 0xDEADBEEF, 12345678901)
        same = shm.block_at(b.offset)
        assert same.module == "test_arena"
        assert same.size >= 64
        assert struct.unpack_from("<IQ", same.buffer, 0) == (0xDEADBEEF,
                                                            12345678901)
        assert b.buffer.readonly is False and len(b.buffer) == 64
    finally:
        shm.shm_free(b)


def test_accounting_adds_up_per_module():
    before = shm.module_usage()
    a = [shm.shm_malloc(100, "acc_a") for _ in range(10)]
    b = [shm.shm_malloc(1000, "acc_b") for _ in range(3)]
    mu = shm.module_usage()
    # each block is accounted at its real size: the request 16-aligned, or
    # a little more when a free block too small to split was taken whole
    # (what earlier tests left in the arena decides which)
    real_a = [shm.block_at(x.offset).size for x in a]
    real_b = [shm.block_at(x.offset).size for x in b]
    assert all(112 <= n < 112 + 64 for n in real_a), real_a
    assert all(1008 <= n < 1008 + 64 for n in real_b), real_b
    assert mu["acc_a"] - before.get("acc_a", 0) == sum(real_a)
    assert mu["acc_b"] - before.get("acc_b", 0) == sum(real_b)
    st = shm.stats()
    assert sum(mu.values()) == st["used_size"]
    assert st["real_used_size"] > st["used_size"]
    assert st["free_size"] == st["total_size"] - st["real_used_size"]
    assert st["max_used_size"] >= st["real_used_size"]
    for x in a + b:
        shm.shm_free(x)
    assert shm.module_usage()["acc_a"] == before.get("acc_a", 0)
    assert sum(shm.module_usage().values()) == used()
    shm.check()


def test_double_free_and_bad_pointer_are_refused():
    b = shm.shm_malloc(32)
    shm.shm_free(b)
    with pytest.raises(shm.ShmError):
        shm.shm_free(b)
    with pytest.raises(shm.ShmError):
        shm.shm_free(shm.ffi.cast("void *", shm.lib.shm_base_addr() + 8))
    with pytest.raises(shm.ShmError):
        shm.block_at(3)
    with pytest.raises(shm.ShmError):
        shm.shm_free(shm.ffi.new("char[64]"))
    shm.check()


def test_exhaustion_raises_and_the_arena_stays_usable():
    base_used = used()
    largest = shm.fragmentation()["largest_free_block"]
    ht = shm.HashTable(16, "hog_ht")
    ht.put(b"before", b"1")
    held = []
    size = 1 << 20
    try:
        while size >= 64:
            try:
                held.append(shm.shm_malloc(size, "hog"))
            except shm.ShmOutOfMemory:
                size //= 2
        with pytest.raises(shm.ShmOutOfMemory, match="hog"):
            shm.shm_malloc(1 << 20, "hog")
        assert shm.stats()["free_size"] < (1 << 20)
        assert shm.fragmentation()["largest_free_block"] < 64
        shm.check()
        # a hash table put fails cleanly too and the table stays as it was
        with pytest.raises(shm.ShmOutOfMemory, match="hog_ht"):
            ht.put(b"k", b"v" * 512)
        with pytest.raises(shm.ShmOutOfMemory):
            ht.put(b"before", b"2" * 512)
        assert len(ht) == 1 and ht.get(b"before") == b"1"
        assert ht.get(b"k") is None
    finally:
        for b in held:
            shm.shm_free(b)
    ht.put(b"k", b"v" * 512)
    assert ht.get(b"k") == b"v" * 512
    ht.destroy()
    shm.check()
    assert used() == base_used
    # the whole space merged back: the largest block fits again
    assert shm.fragmentation()["largest_free_block"] == largest
    big = shm.shm_malloc(largest, "hog")
    shm.shm_free(big)
    shm.check()


def test_realloc_keeps_content_and_failure_keeps_old_block():
    b = shm.shm_malloc(40, "re")
    b.buffer[:40] = bytes(range(40))
    b2 = shm.shm_realloc(b, 5000)
    assert bytes(b2.buffer[:40]) == bytes(range(40))
    b3 = shm.shm_realloc(b2, 24)
    assert bytes(b3.buffer[:24]) == bytes(range(24))
    with pytest.raises(shm.ShmOutOfMemory):
        shm.shm_realloc(b3, 1 << 40)
    assert bytes(shm.block_at(b3.offset).buffer[:24]) == bytes(range(24))
    shm.shm_free(b3)
    shm.check()


def test_random_alloc_free_keeps_arena_consistent():
    rnd = random.Random(7)
    base = used()
    live = []
    for step in range(4000):
        if live and rnd.random() < 0.45:
            shm.shm_free(live.pop(rnd.randrange(len(live))))
        elif live and rnd.random() < 0.1:
            i = rnd.randrange(len(live))
            live[i] = shm.shm_realloc(live[i], rnd.choice((8, 300, 5000)))
        else:
            size = rnd.choice((1, 16, 17, 200, 1024, 1025, 4000, 70000))
            b = shm.shm_malloc(size, rnd.choice(("r1", "r2")))
            b.buffer[0:1] = b"x"
            live.append(b)
        if step % 500 == 0:
            shm.check()
            assert sum(shm.module_usage().values()) == used()
    for b in live:
        shm.shm_free(b)
    shm.check()
    assert used() == base


def test_free_in_another_process():
    base = used()
    blocks = [shm.shm_malloc(256, "xproc") for _ in range(20)]
    offsets = [b.offset for b in blocks]

    def child_frees(_):
        for b in blocks[:10]:          # inherited handles
            shm.shm_free(b)
        for off in offsets[10:]:       # or found again by offset
            shm.shm_free(shm.block_at(off))

    run_children(1, child_frees)
    assert used() == base
    for off in offsets:
        with pytest.raises(shm.ShmError):
            shm.block_at(off)
    shm.check()


def test_block_from_a_child_freed_by_the_parent():
    base = used()
    mailbox = shm.AtomicCounter(0, "xproc")

    def child_allocates():
        b = shm.shm_malloc(1000, "xproc")
        b.buffer[:5] = b"hello"
        mailbox.set(b.offset)

    codes = reap([spawn(child_allocates)], 30)
    assert list(codes.values()) == [0]
    blk = shm.block_at(mailbox.get())
    assert bytes(blk.buffer[:5]) == b"hello"
    shm.shm_free(blk)
    mailbox.destroy()
    assert used() == base
    shm.check()


def test_parallel_alloc_free_from_four_processes():
    base = used()

    def worker(i):
        rnd = random.Random(i)
        live = []
        for _ in range(3000):
            if live and rnd.random() < 0.5:
                b = live.pop(rnd.randrange(len(live)))
                assert b.buffer[0] == i
                shm.shm_free(b)
            else:
                b = shm.shm_malloc(rnd.choice((16, 100, 900, 3000)),
                                   f"par{i}")
                b.buffer[0] = i
                live.append(b)
        for b in live:
            shm.shm_free(b)

    run_children(4, worker, timeout=120)
    shm.check()
    assert used() == base
    assert all(shm.module_usage()[f"par{i}"] == 0 for i in range(4))


def test_processes_killed_while_allocating(capfd):
    """Children hammering the allocator are SIGKILLed at random moments
    (sometimes inside the allocator lock); every time, the survivors find
    a consistent arena (taken over, and rebuilt if needed)."""
    import os
    import signal
    import time
    rnd = random.Random(11)
    for _ in range(8):
        go = shm.AtomicCounter(0)

        def hammer():
            live = []
            go.set(1)
            r = random.Random(os.getpid())
            while True:
                if live and r.random() < 0.5:
                    shm.shm_free(live.pop())
                else:
                    live.append(shm.shm_malloc(r.randrange(1, 3000), "killed"))

        pid = spawn(hammer)
        try:
            deadline = time.monotonic() + 30
            while go.get() != 1 and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rnd.uniform(0.002, 0.03))
        finally:
            os.kill(pid, signal.SIGKILL)
            reap([pid], 30)
        shm.check()
        assert sum(shm.module_usage().values()) == used()
        shm.shm_free(shm.shm_malloc(100))
        go.destroy()
    assert "INCONSISTENT" not in capfd.readouterr().err


def test_reset_for_tests_gives_a_fresh_arena():
    """Done in a child, so the session's arena stays as it is."""
    old = shm.shm_malloc(64, "reset")

    def child():
        shm._shm_reset_for_tests(1 << 20)
        assert shm.stats()["total_size"] == 1 << 20
        assert shm.stats()["used_size"] == 0
        try:
            shm.shm_free(old)            # belongs to the old arena
        except shm.ShmError:
            pass
        else:
            raise AssertionError("a stale block was accepted")
        b = shm.shm_malloc(1000, "reset")
        assert shm.module_usage()["reset"] == 1008
        shm.shm_free(b)
        shm.check()

    codes = reap([spawn(child)], 30)
    assert list(codes.values()) == [0]
    shm.shm_free(old)
