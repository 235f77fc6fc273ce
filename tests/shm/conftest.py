"""Fixtures for the shared-memory tests.

The arena is process-global: it is created once per pytest process (or
reused when another test directory created it first).  Children are made
with os.fork, always reaped, and killed when they overrun their time.
"""
import pytest

from opensipy import shm, statistics, timer


@pytest.fixture(scope="session", autouse=True)
def arena():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    yield


@pytest.fixture
def fresh_stats():
    """An empty statistics registry for the test; whatever other tests of
    this process had registered is put back afterwards."""
    saved = (dict(statistics._groups), dict(statistics._dynamic),
             statistics._closed, statistics._net_sockets)
    load = statistics.load
    saved_load = (load._blk, load._gen, list(load._procs))
    statistics._reset_for_tests()
    yield statistics
    statistics._reset_for_tests()
    groups, dynamic, closed, net = saved
    statistics._groups.update(groups)
    statistics._dynamic.update(dynamic)
    statistics._closed = closed
    statistics._net_sockets = net
    load._blk, load._gen, load._procs = saved_load


@pytest.fixture
def fresh_timers():
    saved = (list(timer._timers), timer._open, timer._timer_workers)
    timer._reset_for_tests()
    yield timer
    timer._reset_for_tests()
    timer._timers[:] = saved[0]
    timer._open, timer._timer_workers = saved[1], saved[2]
