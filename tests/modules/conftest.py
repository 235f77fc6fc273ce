import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from opensipy import config, pvar, receive, shm, statistics  # noqa: E402

import modkit  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def arena():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    yield


@pytest.fixture(autouse=True)
def clean_state():
    pvar.script_vars.clear()
    pvar.ctx.__init__()
    config.reset()
    saved_cbs = list(receive._pre_script_cbs)
    yield
    receive._pre_script_cbs[:] = saved_cbs
    config.reset()


@pytest.fixture
def stats_registry():
    """An empty statistics registry for the test, the old one put back."""
    saved = (dict(statistics._groups), dict(statistics._dynamic),
             statistics._closed)
    statistics._groups.clear()
    statistics._dynamic.clear()
    statistics._closed = False
    yield statistics
    statistics._groups.clear()
    statistics._dynamic.clear()
    statistics._groups.update(saved[0])
    statistics._dynamic.update(saved[1])
    statistics._closed = saved[2]


@pytest.fixture
def peer():
    p = modkit.Peer()
    yield p
    p.close()


@pytest.fixture
def srv_sock():
    si = modkit.server_socket()
    yield si
    si.sock.close()
