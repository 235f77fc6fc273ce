"""Restarts: a SIGTERM while REGISTERs are arriving loses no registration
that was acknowledged (200 OK) in the usrloc modes that keep them
(write-through writes before the reply, write-back flushes the dirty AORs
at shutdown).  The signal goes to the attendant only, as systemd's
KillMode=mixed sends it."""
import os
import re
import signal
import socket
import sqlite3
import threading
import time
import uuid

import pytest

from opensipy.db import admin

from server import Server, free_port, mi_call

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
stderror_enabled=yes
udp_workers=4
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "db_sqlite.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("usrloc", "working_mode_preset", "{preset}")
modparam("usrloc", "db_url", "{url}")
modparam("usrloc", "timer_interval", 600)
route {{
    if (is_method("REGISTER")) {{
        save("location");
        exit;
    }}
    send_reply(404, "Not Found");
}}
"""

THREADS = 12


def register_bytes(sip, lport, user, cid):
    return (f"REGISTER sip:127.0.0.1:{sip} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{cid}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{user}@example.com>;tag={cid[:8]}\r\n"
            f"To: <sip:{user}@example.com>\r\n"
            f"Call-ID: {cid}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{lport}>\r\n"
            f"Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()


class Load:
    """THREADS phones, each registering a new user as soon as the last
    one was answered (or 0.5 s passed); acked: users answered 200."""

    def __init__(self, sip):
        self.sip = sip
        self.acked = set()
        self.sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,))
                        for i in range(THREADS)]

    def run(self, t):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        lport = s.getsockname()[1]
        users = {}                     # Call-ID -> user
        n = 0
        try:
            while not self.stop.is_set():
                user = f"u{t}x{n}"
                n += 1
                cid = uuid.uuid4().hex
                users[cid] = user
                s.sendto(register_bytes(self.sip, lport, user, cid),
                         ("127.0.0.1", self.sip))
                with self.lock:
                    self.sent += 1
                try:
                    data = s.recv(65535)
                except (socket.timeout, ConnectionRefusedError):
                    continue
                # a late reply may answer an earlier REGISTER: its
                # Call-ID says which
                m = re.search(rb"\r\nCall-ID: *([0-9a-f]+)\r\n", data)
                if data.startswith(b"SIP/2.0 200 ") and m:
                    with self.lock:
                        self.acked.add(users[m.group(1).decode()])
        finally:
            s.close()

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join()


def table_users(path):
    con = sqlite3.connect(path)
    try:
        return {u for (u,) in con.execute("SELECT username FROM location")}
    finally:
        con.close()


@pytest.mark.parametrize("preset", ["single-instance-sql-write-back",
                                    "single-instance-sql-write-through"])
def test_sigterm_under_load_loses_no_acknowledged_registration(tmp_path,
                                                               preset):
    path = tmp_path / "loc.db"
    url = f"sqlite://{path}"
    admin.create(url, ["usrloc"])
    srv = Server(tmp_path)
    try:
        sip, mi = free_port(), free_port()
        srv.start(SCRIPT.format(sip=sip, mi=mi, url=url, preset=preset))
        with Load(sip) as load:
            deadline = time.monotonic() + 20
            while len(load.acked) < 1000 and time.monotonic() < deadline:
                time.sleep(0.05)
            # REGISTERs in flight: SIGTERM to the attendant only
            t0 = time.monotonic()
            os.kill(srv.proc.pid, signal.SIGTERM)
            rc = srv.proc.wait(timeout=30)
            stop_took = time.monotonic() - t0
            time.sleep(0.3)
        acked = set(load.acked)
        assert rc == 0, srv.stderr()[-3000:]
        assert len(acked) >= 1000, (len(acked), load.sent)
        print(f"{preset}: {load.sent} sent, {len(acked)} acknowledged, "
              f"stopped in {stop_took:.2f}s")
        stored = table_users(path)
        lost = acked - stored
        errors = [l for l in srv.stderr().splitlines() if "ERR" in l
                  or "CRIT" in l]
        assert not lost, (f"{len(lost)} acknowledged registrations lost: "
                          f"{sorted(lost)[:5]}", errors[:20])
        # after a restart every acknowledged one is served again
        sip, mi = free_port(), free_port()
        srv.start(SCRIPT.format(sip=sip, mi=mi, url=url, preset=preset))
        for user in sorted(acked):
            r = mi_call(mi, "ul_show_contact", {"table_name": "location",
                                               "aor": user})
            assert r["AOR"] == user and r["Contacts"], r
        assert srv.terminate() == 0
    finally:
        srv.cleanup()
