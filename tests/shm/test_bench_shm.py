"""Benchmarks of the hot paths (pytest-benchmark).  Normal runs pass
--benchmark-disable (pyproject), so each body runs once as a plain test;
measure with:

    python -m pytest tests/shm/test_bench_shm.py --benchmark-enable

Goals: lock + counter increment <= 1 us, hash get/put of 200 bytes <= 3 us.
"""
from opensipy import shm, statistics


def test_bench_lock_and_counter(benchmark):
    lock = shm.Lock("bench")
    c = shm.AtomicCounter(0, "bench")

    def step():
        with lock:
            c.inc()

    benchmark(step)
    assert c.get() >= 1 and lock.owner == 0
    lock.destroy()
    c.destroy()


def test_bench_counter_inc(benchmark):
    c = shm.AtomicCounter(0, "bench")
    benchmark(c.inc)
    assert c.get() >= 1
    c.destroy()


def test_bench_stat_inc(benchmark, fresh_stats):
    st = statistics.register_stat("bench", "hits")
    benchmark(st.inc)
    assert st.get() >= 1


def test_bench_lock_acquire_release(benchmark):
    lock = shm.Lock("bench")

    def step():
        lock.acquire()
        lock.release()

    benchmark(step)
    assert lock.owner == 0
    lock.destroy()


def test_bench_hash_put_200(benchmark):
    ht = shm.HashTable(4096, "bench")
    keys = [b"sip:user%d@example.com" % i for i in range(1000)]
    value = b"v" * 200
    it = iter(range(10**9))

    def step():
        ht.put(keys[next(it) % 1000], value)

    benchmark(step)
    assert ht.get(keys[0]) == value
    ht.destroy()


def test_bench_hash_get_200(benchmark):
    ht = shm.HashTable(4096, "bench")
    keys = [b"sip:user%d@example.com" % i for i in range(1000)]
    for k in keys:
        ht.put(k, k.ljust(200, b"."))
    key = keys[123]
    got = benchmark(ht.get, key)
    assert got == key.ljust(200, b".")
    ht.destroy()
