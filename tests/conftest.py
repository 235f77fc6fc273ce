import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings as _hyp_settings

# CI runs the property tests with a fixed seed, so that main's CI verdict
# does not depend on luck; explore with random seeds locally (the default).
_hyp_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import Server  # noqa: E402
# ../shared: the needs_shared mark (skip when missing, fail under CI)
from shareddata import pytest_configure, pytest_runtest_setup  # noqa: E402,F401


@pytest.fixture
def server(tmp_path):
    """A real opensipy, stopped (process group killed) after the test."""
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()
