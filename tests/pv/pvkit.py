"""Helpers of the pv tests (imported by name, not through conftest, so
that several test folders can be collected together)."""
from opensipy.parser import ReceiveInfo, SipMsg

import sipmsgs


def make(name: str, src=("192.0.2.1", 5062), dst=("127.0.0.1", 5060),
         proto="udp", socket=None):
    """A real parsed message from sipmsgs.<name>, with receive info."""
    m = SipMsg(sipmsgs.crlf(getattr(sipmsgs, name)))
    m.rcv = ReceiveInfo(src[0], src[1], dst[0], dst[1], proto, socket)
    return m
