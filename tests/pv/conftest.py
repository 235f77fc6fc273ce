import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from opensipy import config, pvar  # noqa: E402
from opensipy.parser import ReceiveInfo, SipMsg  # noqa: E402

import sipmsgs  # noqa: E402


def make(name: str, src=("192.0.2.1", 5062), dst=("127.0.0.1", 5060),
         proto="udp", socket=None):
    """A real parsed message from sipmsgs.<name>, with receive info."""
    m = SipMsg(sipmsgs.crlf(getattr(sipmsgs, name)))
    m.rcv = ReceiveInfo(src[0], src[1], dst[0], dst[1], proto, socket)
    return m


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
