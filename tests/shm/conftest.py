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
    statistics._reset_for_tests()
    yield statistics
    statistics._reset_for_tests()


@pytest.fixture
def fresh_timers():
    timer._reset_for_tests()
    yield timer
    timer._reset_for_tests()
