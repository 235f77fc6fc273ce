"""Benchmarks of tm's hot paths (pytest-benchmark).  Normal runs pass
--benchmark-disable (pyproject), so each body runs once as a plain test;
measure with:

    python -m pytest tests/tm/test_bench_tm.py --benchmark-enable

* lookup: a request retransmission finding its cell among 1000 (C, one
  bucket under its lock) and a reply finding its cell by hash and label;
* insert: a new transaction made and deleted (cell allocation, bucket
  insert, unlink, free);
* timer tick: one run of the timer lists with 1000 cells holding timers,
  nothing due, and with 100 retransmissions due (sent by C over UDP).
"""
import socket

from opensipy_modules.tm.table import lib

INVITE = 1


def _cells(t, n, prefix=b"b"):
    out = []
    for i in range(n):
        c, created = t.lookup_or_new(prefix + b"%d" % i, 1,
                                     b"z9hG4bK%d|127.0.0.1|5060" % i, INVITE)
        assert created == 1
        out.append(c)
    return out


def _drop(t, cells):
    for c in cells:
        t.delete(c)
        t.unref(c)


def test_bench_request_lookup(benchmark, tmtable):
    t = tmtable
    cells = _cells(t, 1000)
    key = b"z9hG4bK500|127.0.0.1|5060"

    def lookup():
        c = t.lookup_req(b"b500", 1, key, INVITE, 0)
        t.unref(c)
        return c

    assert benchmark(lookup) == cells[500]
    _drop(t, cells)


def test_bench_reply_lookup(benchmark, tmtable):
    t = tmtable
    cells = _cells(t, 1000, b"r")
    h, label = cells[700].hash, cells[700].label

    def lookup():
        c = t.lookup_reply(h, label)
        t.unref(c)
        return c

    assert benchmark(lookup) == cells[700]
    _drop(t, cells)


def test_bench_insert_and_delete(benchmark, tmtable):
    t = tmtable
    n0 = t.inuse()

    def insert():
        c, created = t.lookup_or_new(b"ins-call", 1, b"z9hG4bKins", INVITE)
        t.delete(c)
        t.unref(c)
        return created

    assert benchmark(insert) == 1
    assert t.inuse() == n0


def test_bench_timer_tick_idle(benchmark, tmtable):
    t = tmtable
    cells = _cells(t, 1000, b"ti")
    for c in cells:
        t.timer_start(c, lib.TM_TW_BR_FR, 0, 60_000, lib.TM_K_PY)
        t.timer_start(c, lib.TM_TW_WAIT, -1, 300_000, lib.TM_K_DELETE)
    assert benchmark(t.tick) == []
    _drop(t, cells)


def test_bench_timer_tick_retransmitting(benchmark, tmtable):
    t = tmtable
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)

    class Si:
        sock = tx
    cells = _cells(t, 100, b"tr")
    for c in cells:
        t.set_buf(c, lib.TM_BUF_BR_REQ, 0, b"x" * 600)
        t.set_dst(c, 0, Si, 0, *rx.getsockname())
    before = lib.tm_retransmissions()

    def setup():
        for c in cells:
            t.timer_start(c, lib.TM_TW_BR_RETR, 0, 0, lib.TM_K_RETR_REQ, 1)
        try:
            while True:
                rx.recv(2048)
        except BlockingIOError:
            pass

    benchmark.pedantic(t.tick, setup=setup, rounds=50)
    assert lib.tm_retransmissions() >= before + 100
    _drop(t, cells)
    rx.close()
    tx.close()
