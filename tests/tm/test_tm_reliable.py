"""Over TCP tm starts no retransmission timer (RFC 3261 17.1.1.2 timer A,
17.1.2.2 timer E, 17.2.1 timer G: unreliable transports only); over UDP
it does; the final-response timers run on both."""
import socket

import pytest

from opensipy import config
from opensipy_modules.tm import core
from opensipy_modules.tm.table import lib

INVITE = 1


class Si:
    def __init__(self, proto, sock=None):
        self.proto, self.sock = proto, sock
        self.host, self.port, self.af = "127.0.0.1", 5060, socket.AF_INET


@pytest.mark.parametrize("proto, retr", [("udp", 1), ("tcp", 0)])
def test_retransmission_timers_only_on_unreliable_transports(
        tmtable, monkeypatch, proto, retr):
    t = tmtable
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    si = Si(proto, tx if proto == "udp" else None)
    monkeypatch.setattr(config.settings, "socket", [si])
    try:
        c, _ = t.lookup_or_new(f"rel-{proto}".encode(), 1, b"krel", INVITE)
        t.set_dst(c, 0, si, 0, "127.0.0.1", 9)
        t.set_dst(c, -1, si, 0, "127.0.0.1", 9)
        assert core._reliable(c.br[0].dst) == (proto == "tcp")
        core._start_client(c, 0)
        assert t.timer_pending(c, lib.TM_TW_BR_RETR, 0) == retr   # A
        assert t.timer_pending(c, lib.TM_TW_BR_FR, 0) == 1         # B
        t.delete(c)
        t.unref(c)
    finally:
        tx.close()
