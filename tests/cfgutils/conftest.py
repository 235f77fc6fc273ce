import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "modules"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "shm"))

from opensipy import async_engine, modloader, mi, pvar, shm  # noqa: E402
from opensipy.core_cmds import core_exports  # noqa: E402

import opensipy_modules.cfgutils as cfg  # noqa: E402
import opensipy_modules.mi_script as mis  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def arena():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    yield


@pytest.fixture(autouse=True)
def clean_state():
    pvar.script_vars.clear()
    pvar.ctx.__init__()
    async_engine._reset_for_tests()
    yield
    async_engine._reset_for_tests()


@pytest.fixture
def reg():
    """A registry with the core, cfgutils and mi_script; cfgutils' mod_init
    run (its shm state made once per test process)."""
    saved = modloader.registry
    r = modloader.Registry()
    r.add(modloader.LoadedModule("core", core_exports))
    for name, pymod in (("cfgutils", cfg), ("mi_script", mis)):
        r.add(modloader.LoadedModule(name, pymod.exports, pymod))
    modloader.registry = r
    mi._reset_for_tests()
    cfg._shvset[:] = []
    assert cfg.mod_init() == 0
    yield r
    modloader.registry = saved
    mi._reset_for_tests()
