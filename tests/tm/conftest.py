"""Fixtures for the tm tests: one shm arena per pytest process and a fresh
transaction table per test module (the table pointer is process-global)."""
import pytest

from opensipy import shm


@pytest.fixture(scope="module")
def tmtable():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    from opensipy_modules.tm import table
    table.reset_for_tests()
    table.init(256, 500, 4000, 30, 120, 5)
    yield table
    table.reset_for_tests()
