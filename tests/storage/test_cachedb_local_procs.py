"""cachedb_local through the cachedb API from several forked processes at
once: counters lose no update, stores/removes of one process are seen by
the others, expiry holds everywhere."""
import importlib
import os
import sys
import time
from pathlib import Path

import pytest

from opensipy import cachedb, shm, timer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shm"))
from shm_forking import run_children  # noqa: E402

local = importlib.import_module("opensipy_modules.cachedb_local")


@pytest.fixture
def engine(monkeypatch):
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    monkeypatch.setattr(local, "urls", ["local://", "local:c:///calls"])
    monkeypatch.setattr(local, "cache_collections", "default; calls=3")
    monkeypatch.setattr(local, "cache_clean_period", 0)
    monkeypatch.setattr(local, "collections", {})
    cachedb._reset_for_tests()
    timer.open_registration()
    try:
        assert local.mod_init() == 0
    finally:
        timer.close_registration()
    yield
    for c in local.collections.values():
        c.table.destroy()
        c.locks.destroy()
    cachedb._reset_for_tests()


def test_counters_from_many_processes_lose_nothing(engine):
    def child(i):
        for _ in range(300):
            rc, _ = cachedb.cachedb_add("local", "n", 1)
            assert rc == 1
            rc, _ = cachedb.cachedb_sub("local:c", "m", 2)
            assert rc == 1
        assert cachedb.cachedb_store("local", f"from-{i}", str(os.getpid())) \
            == 1
    run_children(6, child)
    assert cachedb.cachedb_counter_fetch("local", "n") == (1, 1800)
    assert cachedb.cachedb_counter_fetch("local:c", "m") == (1, -3600)
    assert cachedb.cachedb_counter_fetch("local", "m") == (-2, None)
    for i in range(6):
        rc, pid = cachedb.cachedb_fetch("local", f"from-{i}")
        assert rc == 1 and int(pid) != os.getpid()


def test_expiry_and_removal_seen_by_other_processes(engine):
    assert cachedb.cachedb_store("local", "short", "v", 1) == 1
    assert cachedb.cachedb_store("local", "gone", "v") == 1

    def child(i):
        assert cachedb.cachedb_fetch("local", "short") == (1, "v")
        assert cachedb.cachedb_remove("local", "gone") == 1
    run_children(1, child)
    assert cachedb.cachedb_fetch("local", "gone") == (-2, None)
    time.sleep(1.1)

    def child2(i):
        assert cachedb.cachedb_fetch("local", "short") == (-2, None)
    run_children(1, child2)
    assert local.collections["default"].table.purge_expired() == 1
    assert cachedb.cachedb_raw_query("local", "x") == (-1, None)
    assert cachedb.cachedb_store("nosuch", "k", "v") == -1


def test_bad_collections_are_refused():
    with pytest.raises(ValueError, match="declared twice"):
        local.parse_collections("a; a=4")
    with pytest.raises(ValueError, match="size must be"):
        local.parse_collections("a=40")
    assert local.parse_collections("default; calls=12") == \
        {"default": 9, "calls": 12}
