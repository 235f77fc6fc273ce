"""Restarts: a SIGTERM while calls are being set up loses no established
dialog in the dialog module's DB modes (1 writes at once, 2 flushes the
marked dialogs at shutdown, 3 rewrites the table at shutdown).  The signal
goes to the attendant only, as systemd's KillMode=mixed sends it.  After
the restart on the same SQLite file every call whose 200 OK reached the
caller (and was ACKed) is listed with its values and its profile, and its
BYE is matched and relayed to the callee."""
import os
import random
import re
import signal
import socket
import sqlite3
import threading
import time
import uuid

import pytest

from opensipy.db import admin

from server import Server, free_port, mi_call, wait_for

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=2
stderror_enabled=yes
udp_workers=3
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "db_sqlite.so"
loadmodule "dialog.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("tm", "wt_timer", 1)
modparam("dialog", "db_url", "{url}")
modparam("dialog", "db_mode", {mode})
modparam("dialog", "db_update_period", 60)
modparam("dialog", "profiles_with_value", "caller")
route {{
    if (has_totag()) {{
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        if (!loose_route()) {{
            send_reply(404, "Not here");
            exit;
        }}
        if (!validate_dialog()) {{
            send_reply(481, "Call/Transaction Does Not Exist");
            exit;
        }}
        t_relay();
        exit;
    }}
    if (is_method("INVITE")) {{
        create_dialog();
        $dlg_val(who) = $fU;
        set_dlg_profile("caller", $fU);
        record_route();
        $du = "sip:127.0.0.1:{callee}";
        t_relay();
        exit;
    }}
    send_reply(404, "Not Found");
}}
"""

CALLERS = 4
BEFORE = 30          # established calls before the SIGTERM
MAX_CALLS = 120      # no more calls than this in all


def hdr(data, name):
    m = re.search(rf"\r\n{name}: *([^\r]*)\r\n".encode(), data, re.I)
    return m.group(1).decode() if m else None


def hdrs(data, name):
    return [v.decode() for v in
            re.findall(rf"\r\n{name}: *([^\r]*)\r\n".encode(), data, re.I)]


class Callee(threading.Thread):
    """Answers every INVITE 200 after 10-80 ms (the To tag made of the
    Call-ID, so a retransmission gets the same answer) and every BYE 200
    at once; counts BYEs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(0.2)
        self.port = self.s.getsockname()[1]
        self.stop = threading.Event()
        self.byes = set()

    def run(self):
        while not self.stop.is_set():
            try:
                data, addr = self.s.recvfrom(65535)
            except socket.timeout:
                continue
            if data.startswith(b"SIP/2.0") or data.startswith(b"ACK "):
                continue
            cid = hdr(data, "Call-ID")
            method = data.split(b" ", 1)[0]
            to = hdr(data, "To")
            if method == b"INVITE":
                to += f";tag=b{cid[:10]}"
            lines = ["SIP/2.0 200 OK"]
            lines += [f"Via: {v}" for v in hdrs(data, "Via")]
            lines += [f"Record-Route: {v}" for v in hdrs(data, "Record-Route")]
            lines += [f"From: {hdr(data, 'From')}", f"To: {to}",
                      f"Call-ID: {cid}", f"CSeq: {hdr(data, 'CSeq')}",
                      f"Contact: <sip:bob@127.0.0.1:{self.port}>",
                      "Content-Length: 0", "", ""]
            reply = "\r\n".join(lines).encode()
            if method == b"INVITE":
                # answered a little later: calls are half set up when
                # the SIGTERM arrives, their 200 OK crossing the shutdown
                threading.Timer(random.uniform(0.01, 0.08), self.send,
                                (reply, addr)).start()
                continue
            self.send(reply, addr)
            if method == b"BYE":
                self.byes.add(cid)

    def send(self, reply, addr):
        try:
            self.s.sendto(reply, addr)
        except OSError:                # closed at the end of the test
            pass

    def close(self):
        self.stop.set()
        self.join()
        self.s.close()


class Call:
    def __init__(self, user, cid, route, contact, to):
        self.user, self.cid, self.route = user, cid, route
        self.contact, self.to = contact, to


class Callers:
    """CALLERS threads, each setting up a call as soon as the last one was
    answered (or 0.5 s passed); established: the calls ACKed after their
    200 OK."""

    def __init__(self, sip):
        self.sip = sip
        self.established = {}
        self.pending = set()           # INVITEs sent, not yet answered
        self.sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,))
                        for i in range(CALLERS)]

    def run(self, t):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        lport = s.getsockname()[1]
        users = {}
        n = 0
        try:
            while not self.stop.is_set():
                with self.lock:
                    if self.sent >= MAX_CALLS:
                        break
                    self.sent += 1
                user = f"c{t}x{n}"
                n += 1
                cid = uuid.uuid4().hex
                users[cid] = user
                with self.lock:
                    self.pending.add(cid)
                s.sendto((
                    f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{lport};"
                    f"branch=z9hG4bK{cid}\r\n"
                    f"Max-Forwards: 70\r\n"
                    f"From: <sip:{user}@example.com>;tag=a{cid[:10]}\r\n"
                    f"To: <sip:bob@example.com>\r\n"
                    f"Call-ID: {cid}\r\nCSeq: 1 INVITE\r\n"
                    f"Contact: <sip:{user}@127.0.0.1:{lport}>\r\n"
                    f"Content-Length: 0\r\n\r\n").encode(),
                    ("127.0.0.1", self.sip))
                data = self.final(s)
                with self.lock:
                    self.pending.discard(cid)
                if data is None:
                    continue
                rcid = hdr(data, "Call-ID")
                if rcid not in users:
                    continue
                route = list(reversed(hdrs(data, "Record-Route")))
                contact = hdr(data, "Contact").strip("<>")
                to = hdr(data, "To")
                ack = self.request("ACK", users[rcid], rcid, lport, route,
                                   contact, to, 1)
                s.sendto(ack, ("127.0.0.1", self.sip))
                with self.lock:
                    self.established[rcid] = Call(users[rcid], rcid, route,
                                                  contact, to)
        finally:
            s.close()

    @staticmethod
    def final(s):
        """The next 200 OK (a 100 Trying skipped), None after 0.5 s."""
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                data = s.recv(65535)
            except (socket.timeout, ConnectionRefusedError):
                return None
            if data.startswith(b"SIP/2.0 200 "):
                return data
        return None

    @staticmethod
    def request(method, user, cid, lport, route, contact, to, cseq):
        rt = "".join(f"Route: {r}\r\n" for r in route)
        return (f"{method} {contact} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK"
                f"{uuid.uuid4().hex}\r\n"
                f"Max-Forwards: 70\r\n{rt}"
                f"From: <sip:{user}@example.com>;tag=a{cid[:10]}\r\n"
                f"To: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join()


def bye_all(sip, calls):
    """A BYE for each call through the proxy; the Call-IDs answered 200."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    lport = s.getsockname()[1]
    ok = set()
    try:
        for _ in range(3):                 # UDP: retry the unanswered
            for c in calls:
                if c.cid not in ok:
                    s.sendto(Callers.request("BYE", c.user, c.cid, lport,
                                             c.route, c.contact, c.to, 2),
                             ("127.0.0.1", sip))
            end = time.monotonic() + 2
            while len(ok) < len(calls) and time.monotonic() < end:
                try:
                    data = s.recv(65535)
                except socket.timeout:
                    continue
                if data.startswith(b"SIP/2.0 200 ") and \
                        hdr(data, "CSeq") == "2 BYE":
                    ok.add(hdr(data, "Call-ID"))
            if len(ok) == len(calls):
                break
    finally:
        s.close()
    return ok


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_sigterm_while_calls_are_set_up_loses_no_established_dialog(
        tmp_path, mode):
    path = tmp_path / "dlg.db"
    url = f"sqlite://{path}"
    admin.create(url, ["dialog"])
    srv = Server(tmp_path)
    callee = Callee()
    callee.start()
    try:
        sip, mi = free_port(), free_port()
        script = dict(url=url, mode=mode, callee=callee.port)
        srv.start(SCRIPT.format(sip=sip, mi=mi, **script))
        with Callers(sip) as callers:
            wait_for(lambda: len(callers.established) >= BEFORE, 15,
                     what=f"{BEFORE} established calls")
            # INVITEs in flight: SIGTERM to the attendant only
            with callers.lock:
                in_flight = len(callers.pending)
            os.kill(srv.proc.pid, signal.SIGTERM)
            rc = srv.proc.wait(timeout=20)
        calls = dict(callers.established)
        assert rc == 0, srv.stderr()[-3000:]
        print(f"db_mode {mode}: {callers.sent} INVITEs, {in_flight} in "
              f"flight at the SIGTERM, {len(calls)} established")
        assert in_flight, "no call was being set up at the SIGTERM"
        errors = [l for l in srv.stderr().splitlines()
                  if "ERR" in l or "CRIT" in l]
        # the same SIP port: the calls' route sets name it
        mi = free_port()
        srv.start(SCRIPT.format(sip=sip, mi=mi, **script))
        listed = {d["callid"]: d for d in
                  mi_call(mi, "dlg_list_ctx")["Dialogs"]}
        lost = set(calls) - set(listed)
        assert not lost, (f"db_mode {mode}: {len(lost)} of {len(calls)} "
                          f"established dialogs lost", errors[:20])
        for cid, c in calls.items():
            d = listed[cid]
            assert d["state"] in (3, 4), d
            assert d["context"]["values"] == [{"who": c.user}], d
            r = mi_call(mi, "profile_get_size", ["caller", c.user])
            assert r["profile"]["count"] == 1, (c.user, r)
        # every BYE matched: 200 from the callee through the proxy
        ok = bye_all(sip, calls.values())
        assert ok == set(calls), f"{len(set(calls) - ok)} BYEs unanswered"
        assert set(calls) <= callee.byes
        wait_for(lambda: not set(calls) & {
            d["callid"] for d in mi_call(mi, "dlg_list")["Dialogs"]}, 5,
            what="the dialogs ended")
        assert srv.terminate() == 0
        # ended: their rows gone too (a further restart brings none back)
        with sqlite3.connect(path) as con:
            left = {c for (c,) in con.execute("SELECT callid FROM dialog")}
        assert not set(calls) & left, len(set(calls) & left)
    finally:
        srv.cleanup()
        callee.close()
