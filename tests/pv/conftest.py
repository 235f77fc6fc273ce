import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from opensipy import config, pvar  # noqa: E402

from pvkit import make  # noqa: E402


@pytest.fixture
def msg():
    return make


@pytest.fixture(autouse=True)
def clean_state():
    """Every test starts with empty $var, run context, flag names and
    default core settings."""
    pvar.script_vars.clear()
    pvar.ctx.__init__()
    pvar.msg_flags.reset()
    pvar.branch_flags.reset()
    config.reset()
    yield
    pvar.script_vars.clear()
    pvar.ctx.__init__()
    config.reset()
