import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "modules"))
sys.path.insert(0, str(HERE.parent / "storage"))

from opensipy import shm  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def arena():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    yield


@pytest.fixture(scope="session")
def pg_cluster():
    """One throw-away PostgreSQL cluster for the session (removed after)."""
    from engines import PgCluster
    c = PgCluster()
    try:
        c.init().start()
        yield c
    finally:
        c.destroy()
