"""The process table: records are written and read whole from several
processes at once, log levels follow OpenSIPS's current/default rule."""
import os

import pytest

from opensipy import log, pt, shm

from shm_forking import reap, spawn

N = 20000


@pytest.fixture
def table():
    saved = (pt._block, pt._lock, pt._cur, pt._dflt, pt._aget, pt._aset,
             pt._recs, pt._size, pt.my_id)
    pt._block = None
    pt.init(4, log.L_NOTICE)
    yield pt
    shm.shm_free(pt._block)
    pt._lock.destroy()
    (pt._block, pt._lock, pt._cur, pt._dflt, pt._aget, pt._aset,
     pt._recs, pt._size, pt.my_id) = saved


def consistent(e):
    """A record the writers below made: rank == pid (or pid 0 after
    clear_pid) and the description spells the rank."""
    return e.type == f"{e.rank:060d}" and e.pid in (0, e.rank)


def writer(w):
    base = (w + 1) * 1_000_000
    for i in range(N):
        v = base + i
        pt.set_entry(1, v, v, f"{v:060d}")
        if i % 7 == 0:
            pt.clear_pid(1)
        if i % 5 == 0:
            pt.set_log_level(1, i % 5)


def reader(r):
    bad = []
    for _ in range(N):
        e = pt.get(1) if r % 2 else (pt.entries() or [pt.get(1)])[-1]
        if not consistent(e):
            bad.append(e)
    if bad:
        raise AssertionError(f"{len(bad)} torn records, e.g. {bad[:3]}")


def test_records_are_never_torn_under_concurrent_writers_and_readers(table):
    pt.set_entry(1, 7, 7, f"{7:060d}")
    pids = []
    try:
        for w in range(2):
            pids.append(spawn(writer, w))
        for r in range(2):
            pids.append(spawn(reader, r))
    finally:
        codes = reap(pids, timeout=300)
    assert all(c == 0 for c in codes.values()), codes
    assert consistent(pt.get(1))


def test_a_respawned_process_starts_at_its_slot_default_level(table):
    pt.set_entry(2, 100, 2, "udp receiver")
    assert pt.get(2).log_level == log.L_NOTICE
    pt.set_log_level(2, log.L_DBG)            # MI log_level with a pid
    assert pt.get(2).log_level == log.L_DBG
    assert pt.get_default_log_level(2) == log.L_NOTICE
    pt.clear_pid(2)
    pt.set_entry(2, 101, 2, "udp receiver")   # the respawn
    assert pt.get(2).log_level == log.L_NOTICE
    pt.set_global_log_level(log.L_ERR)        # MI log_level for all
    pt.clear_pid(2)
    pt.set_entry(2, 102, 2, "udp receiver")
    assert pt.get(2).log_level == log.L_ERR
    assert [e.log_level for e in pt.entries()] == [log.L_ERR]


def test_a_level_set_in_another_process_is_seen(table):
    pt.set_entry(3, os.getpid(), 3, "me")

    def mi(_):
        pt.set_log_level(3, log.L_DBG)
    assert reap([spawn(mi, 0)]) and pt.get_log_level(3) == log.L_DBG


def test_slots_outside_the_table_are_refused(table):
    for bad in (-1, 4):
        with pytest.raises(IndexError):
            pt.set_entry(bad, 1, 1, "x")
        with pytest.raises(IndexError):
            pt.set_log_level(bad, 1)
