"""The EVI subscriber table in shared memory, hammered from several
processes: every subscription lands once, refreshes never duplicate, and
raising reads a consistent table meanwhile."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shm"))
from shm_forking import run_children  # noqa: E402

from opensipy import evi, shm  # noqa: E402

N_PROCS = 4
PER_PROC = 30
ROUNDS = 40


@pytest.fixture
def table():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    evi._reset_for_tests()
    sent = []
    evi.register_transport("udp", "test", lambda t: t,
                           lambda ev, prm, h: sent.append((ev, h)),
                           lambda h: h)
    evi.evi_publish_event("E_TEST_A")
    evi.evi_publish_event("E_TEST_B")
    evi.init_shared()
    yield sent
    evi._reset_for_tests()


def test_concurrent_subscribes_and_refreshes_land_once(table):
    start = shm.AtomicCounter(0, "test_evi")

    def worker(i):
        start.inc()
        while start.get() < N_PROCS:      # everyone starts together
            pass
        for rnd in range(ROUNDS):         # subscribe, then refresh
            for k in range(PER_PROC):
                ev = "E_TEST_A" if k % 2 else "E_TEST_B"
                evi.evi_event_subscribe(ev, f"udp:10.0.{i}.{k}:5000",
                                        0 if rnd == ROUNDS - 1 else 100 + rnd)
            # raising meanwhile sees whole records only
            for ev, sock, _x in evi.subscribers():
                assert sock.startswith("udp:10.0.") and ev.name in (
                    "E_TEST_A", "E_TEST_B")

    run_children(N_PROCS, worker, timeout=120)
    subs = evi.subscribers()
    assert len(subs) == N_PROCS * PER_PROC
    assert len({(e.name, s) for e, s, _x in subs}) == len(subs)
    assert all(x == 0 for _e, _s, x in subs)     # the last refresh won
    assert len(evi.subscribers("E_TEST_A")) == N_PROCS * (PER_PROC // 2)


def test_table_full_is_an_error_and_expired_slots_are_reused(table,
                                                             monkeypatch):
    for k in range(evi.MAX_SUBSCRIBERS):
        evi.evi_event_subscribe("E_TEST_A", f"udp:10.1.0.{k}:1", 5)
    with pytest.raises(evi.EviError, match="too many subscribers"):
        evi.evi_event_subscribe("E_TEST_A", "udp:10.2.0.1:1", 5)
    now = evi.time.time()
    monkeypatch.setattr(evi.time, "time", lambda: now + 10)
    assert evi.subscribers() == []
    evi.evi_event_subscribe("E_TEST_A", "udp:10.2.0.1:1", 5)
    assert [s for _e, s, _x in evi.subscribers()] == ["udp:10.2.0.1:1"]


def test_raise_reaches_subscribers_and_routes_not_others(table):
    evi.evi_event_subscribe("E_TEST_A", "udp:1.1.1.1:1", 0)
    evi.evi_event_subscribe("E_TEST_B", "udp:2.2.2.2:2", 0)
    seen = []
    evi._routes["E_TEST_A"] = lambda msg, params: seen.append(params)
    assert evi.evi_raise_event("E_TEST_A", {"x": 1}) == 2
    assert table == [("E_TEST_A", "1.1.1.1:1")]
    assert seen == [(1,)]
    assert evi.params_json([("a", 1), ("b", 2)]) == {"a": 1, "b": 2}
    assert evi.params_json([(None, 1), ("b", 2)]) == [1, 2]
    with pytest.raises(evi.EviError):
        evi.evi_raise_event("E_NOPE")
    with pytest.raises(evi.EviError):
        evi.evi_publish_event("bad name")


def test_a_route_raising_its_own_event_stops(table):
    calls = []

    def route(msg, params):
        calls.append(1)
        evi.evi_raise_event("E_TEST_A")
    evi._routes["E_TEST_A"] = route
    evi.evi_raise_event("E_TEST_A")
    assert len(calls) == evi.MAX_RAISE_DEPTH
