import sys
from pathlib import Path

import pytest

from opensipy import shm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shm"))


@pytest.fixture(scope="session", autouse=True)
def arena():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    yield
