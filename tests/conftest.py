import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import Server  # noqa: E402


@pytest.fixture
def server(tmp_path):
    """A real opensipy, stopped (process group killed) after the test."""
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()
