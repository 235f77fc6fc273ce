"""The shared hash table, alone and hammered from several processes."""
import time

import pytest

from opensipy import shm
from shm_forking import reap, run_children, spawn

N_PROCS = 4


def test_put_get_delete_len_items():
    ht = shm.HashTable(16, "test_ht")
    assert len(ht) == 0 and ht.get(b"a") is None
    ht.put(b"a", b"1")
    ht.put(b"b", b"")
    ht[b""] = b"empty key"
    assert ht.get(b"a") == b"1" and ht[b"b"] == b"" and ht[b""] == b"empty key"
    ht.put(b"a", b"2" * 100)           # overwrite
    assert ht.get(b"a") == b"2" * 100 and len(ht) == 3
    assert sorted(ht.items()) == [(b"", b"empty key"), (b"a", b"2" * 100),
                                  (b"b", b"")]
    assert ht.delete(b"a") is True and ht.delete(b"a") is False
    assert b"a" not in ht and b"b" in ht and len(ht) == 2
    with pytest.raises(KeyError):
        ht[b"a"]
    big = bytes(range(256)) * 1000      # larger than the scratch buffer
    ht.put(b"big", big)
    assert ht.get(b"big") == big
    assert dict(ht.items())[b"big"] == big
    with pytest.raises(TypeError):
        ht.put("str key", b"x")
    ht.destroy()
    with pytest.raises(ValueError):
        shm.HashTable(0)


def test_memory_is_accounted_and_returned():
    before = shm.module_usage().get("ht_acct", 0)
    ht = shm.HashTable(64, "ht_acct")
    table = shm.module_usage()["ht_acct"]
    for i in range(500):
        ht.put(b"key%d" % i, b"v" * 200)
    assert shm.module_usage()["ht_acct"] > table + 500 * 200
    for i in range(500):
        ht.delete(b"key%d" % i)
    assert shm.module_usage()["ht_acct"] == table
    ht.destroy()
    assert shm.module_usage()["ht_acct"] == before
    shm.check()


def test_expiry_invisible_then_purged():
    ht = shm.HashTable(8, "ht_exp")
    ht.put(b"short", b"s", expires=0.05)
    ht.put(b"long", b"l", expires=60)
    ht.put(b"never", b"n")
    assert len(ht) == 3 and ht.get(b"short") == b"s"
    held = shm.module_usage()["ht_exp"]
    time.sleep(0.1)
    assert ht.get(b"short") is None
    assert len(ht) == 2
    assert sorted(k for k, _ in ht.items()) == [b"long", b"never"]
    assert shm.module_usage()["ht_exp"] == held      # not reclaimed yet
    assert ht.purge_expired() == 1
    assert shm.module_usage()["ht_exp"] < held
    assert ht.purge_expired() == 0
    ht.put(b"long", b"l2")                           # overwrite drops expiry
    assert ht.get(b"long") == b"l2" and len(ht) == 2
    ht.destroy()


def test_many_processes_writing_and_reading():
    ht = shm.HashTable(128, "ht_par")
    m = 1500

    def worker(w):
        for i in range(m):
            ht.put(b"w%d-%d" % (w, i), b"first")
        for i in range(m):
            ht.put(b"w%d-%d" % (w, i), (b"%d:%d:" % (w, i)) * 20)
        for i in range(0, m, 3):
            assert ht.delete(b"w%d-%d" % (w, i))
        for i in range(m):
            v = ht.get(b"w%d-%d" % (w, i))
            assert v == (None if i % 3 == 0 else (b"%d:%d:" % (w, i)) * 20)
        ht.put(b"shared", b"from %d" % w)

    run_children(N_PROCS, worker, timeout=180)
    left = N_PROCS * (m - len(range(0, m, 3)))
    assert len(ht) == left + 1
    items = dict(ht.items())
    assert len(items) == left + 1
    assert items[b"shared"] in {b"from %d" % w for w in range(N_PROCS)}
    assert items[b"w1-2"] == b"1:2:" * 20
    ht.destroy()
    shm.check()


def test_items_while_others_write():
    ht = shm.HashTable(32, "ht_iter")
    stop = shm.AtomicCounter(0)

    def writer(w):
        i = 0
        while not stop.get():
            k = b"w%d-%d" % (w, i % 200)
            ht.put(k, k * 3)
            if i % 2:
                ht.delete(b"w%d-%d" % (w, (i * 7) % 200))
            i += 1

    pids = [spawn(writer, w) for w in range(3)]
    try:
        for _ in range(100):
            for k, v in ht.items():
                assert v == k * 3      # every pair is whole and consistent
            len(ht)
    finally:
        stop.set(1)
        codes = reap(pids, 60)
    assert all(c == 0 for c in codes.values()), codes
    assert len(ht) == len(ht.items())
    ht.destroy()
    stop.destroy()
    shm.check()
