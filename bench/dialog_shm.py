"""Shared memory per dialog: make N established dialogs through the dialog
module's own paths (create_dialog over a parsed INVITE, tm's reply
callback with its 200 OK, the ACK through the in-dialog path) and read
the arena's figures before and after.

    python bench/dialog_shm.py [N] [shm MB]

prints bytes per dialog (the dialog record, its Call-ID index entry and
its timer-wheel entry; the table's buckets are counted apart).  The
messages are a typical call's (SIPp-like INVITE with SDP, Record-Route,
one proxy).
"""
from __future__ import annotations

import os
import sys
import time

# bench/opensipy (the configs) must not shadow the package
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

INVITE = (
    "INVITE sip:bob@10.0.0.2:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{i}-1\r\n"
    "From: \"Alice\" <sip:alice@example.com>;tag=8kd73hs{i}\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: {i}-4711@10.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.1:5060>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {blen}\r\n\r\n{body}")
SDP_A = ("v=0\r\no=alice 53655765 2353687637 IN IP4 10.0.0.1\r\ns=-\r\n"
         "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\n"
         "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
SDP_B = SDP_A.replace("alice", "bob").replace("10.0.0.1", "10.0.0.2")
OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{i}-1\r\n"
    "Record-Route: <sip:127.0.0.1:5060;lr;ftag=8kd73hs{i};did={did}>\r\n"
    "From: \"Alice\" <sip:alice@example.com>;tag=8kd73hs{i}\r\n"
    "To: <sip:bob@example.com>;tag=as5e2b1{i}\r\n"
    "Call-ID: {i}-4711@10.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:bob@10.0.0.2:5060>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {blen}\r\n\r\n{body}")
ACK = (
    "ACK sip:bob@10.0.0.2:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{i}-2\r\n"
    "Route: <sip:127.0.0.1:5060;lr;ftag=8kd73hs{i};did={did}>\r\n"
    "From: \"Alice\" <sip:alice@example.com>;tag=8kd73hs{i}\r\n"
    "To: <sip:bob@example.com>;tag=as5e2b1{i}\r\n"
    "Call-ID: {i}-4711@10.0.0.1\r\nCSeq: 1 ACK\r\n"
    "Content-Length: 0\r\n\r\n")


class _Sock:
    proto, host, port = "udp", "127.0.0.1", 5060


def setup(hash_size=4096):
    """Bind the dialog module's state as mod_init does (tm's and rr's APIs,
    the table) without a running server."""
    from opensipy_modules import rr, tm
    from opensipy_modules.dialog import core, profiles
    from opensipy_modules.dialog.table import DlgTable
    core.st.tm = tm.load_api()
    core.st.rr = rr.load_api()
    core.st.tbl = DlgTable(hash_size)
    profiles.init()
    return core


def make_calls(core, n, start=0):
    """n established dialogs; returns their keys."""
    from opensipy.parser import ReceiveInfo, SipMsg
    tm = core.st.tm
    keys = []
    rcv = ReceiveInfo("10.0.0.1", 5060, "127.0.0.1", 5060, "udp", _Sock())
    for i in range(start, start + n):
        inv = SipMsg(INVITE.format(i=i, blen=len(SDP_A), body=SDP_A)
                     .encode())
        inv.rcv = rcv
        if core.create(inv, 0) != 1:
            raise RuntimeError("create_dialog failed")
        key = inv.dlg_key
        did = inv.dlg_snap.did
        rpl = SipMsg(OK.format(i=i, did=did, blen=len(SDP_B), body=SDP_B)
                     .encode())
        rpl.rcv = rcv
        core.on_initial_reply(None, tm.TMCB_RESPONSE_IN,
                              {"param": key, "code": 200, "rpl": rpl})
        ack = SipMsg(ACK.format(i=i, did=did).encode())
        d, dr = core.lookup(ack, did)
        core.within(ack, d, dr)
        keys.append(key)
    return keys


def measure(n, hash_size=4096):
    from opensipy import shm
    core = setup(hash_size)
    base = shm.stats()["used_size"]
    t0 = time.monotonic()
    keys = make_calls(core, n)
    took = time.monotonic() - t0
    used = shm.stats()["used_size"] - base
    return core, keys, used, took


def main(argv):
    from opensipy import shm
    n = int(argv[1]) if len(argv) > 1 else 100_000
    mb = int(argv[2]) if len(argv) > 2 else 256
    shm.shm_init(mb * 1024 * 1024)
    hs = 1 << max(12, (n // 4).bit_length())
    before = shm.stats()["used_size"]
    core, keys, used, took = measure(n, hs)
    table_bytes = shm.stats()["used_size"] - before - used
    st = shm.stats()
    print(f"{n} established dialogs: {used} bytes of shm, "
          f"{used / n:.0f} bytes per dialog (+ {table_bytes} bytes of "
          f"tables, hash_size {hs}); arena {st['total_size']} bytes, "
          f"{st['free_size']} free; {n / took:.0f} dialogs/s made")
    assert len(core.st.tbl) == n


if __name__ == "__main__":
    main(sys.argv)
