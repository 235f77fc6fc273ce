"""acc's CDRs (the ``cdr`` flag) through the real server, on SQLite and
PostgreSQL: a call relayed between two UAs of ours (rr + dialog + acc),
ended by the caller's BYE, the callee's BYE, the dialog's timeout, MI
``dlg_end_dlg``, and across a restart that reloads the dialog from the
database; the ``ACC: call ended:`` line (stderr) and the ``acc`` row
(duration, ms_duration, setuptime, created) are read back."""
import datetime
import re
import socket
import time

import pytest

from opensipy.db import admin, db_bind_mod
from opensipy.parser import SipMsg

from server import free_port, mi_call

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
stderror_enabled=yes
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "{driver}.so"
loadmodule "dialog.so"
loadmodule "acc.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("tm", "wt_timer", 1)
modparam("dialog", "db_url", "{url}")
modparam("dialog", "db_mode", {db_mode})
modparam("acc", "db_url", "{url}")
modparam("acc", "extra_fields", "log: src_ip->src; ua->user_agent; ans")
modparam("acc", "extra_fields", "db: src_ip->src_ip")
modparam("acc", "leg_fields", "log: dst->dst")
modparam("acc", "leg_fields", "db: dst->dst_col")
route {{
    if (has_totag()) {{
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        if (!loose_route()) {{
            sl_send_reply(404, "Not here");
            exit;
        }}
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans())
            t_relay();
        exit;
    }}
    record_route();
    if ($rU == "short")
        $DLG_timeout = 2;
    if ($rU != "nodlg")
        create_dialog();
    $acc_extra(src_ip) = $si;
    $(acc_leg(dst)[0]) = $rU;
    do_accounting("log|db", "cdr|missed");
    # set after do_accounting: the value reaches the CDR all the same
    $acc_extra(ua) = $hdr(User-Agent);
    $du = "sip:127.0.0.1:{callee}";
    t_on_reply("answered");
    t_relay();
}}
onreply_route[answered] {{
    # a value set from the 2xx's process reaches the CDR too
    if ($rs == 200)
        $acc_extra(ans) = $rr;
}}
"""


def _sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


class Call:
    """A caller and a callee UA of ours, and the server between them."""

    def __init__(self, server, url, db_mode=0):
        self.server, self.url, self.db_mode = server, url, db_mode
        self.port = free_port()
        self.caller, self.callee = _sock(), _sock()
        self.start()

    def start(self):
        # the MI port is picked at each start: a port left free between a
        # stop and a restart may have been taken by then (failed once in
        # CI: "Address already in use"); the SIP port stays, the dialogs
        # in the database name it
        self.mi = free_port()
        driver = "db_postgres" if self.url.startswith("postgres") \
            else "db_sqlite"
        self.server.start(SCRIPT.format(
            port=self.port, mi=self.mi, url=self.url, driver=driver,
            db_mode=self.db_mode, callee=self.callee.getsockname()[1]))

    def close(self):
        self.caller.close()
        self.callee.close()

    def _recv(self, sock, want):
        while True:
            m = SipMsg(sock.recv(65535))
            if want(m):
                return m

    def invite(self, user, callid, code=200, reason="OK"):
        """INVITE -> 180 -> final; for a 2xx the ACK along the Route set.
        Returns the final reply the caller got."""
        self.callid, me = callid, self.caller.getsockname()[1]
        self.caller.sendto((
            f"INVITE sip:{user}@127.0.0.1:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{callid}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=ft-{callid}"
            f"\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {callid}\r\n"
            f"CSeq: 1 INVITE\r\nUser-Agent: cdr-test/1\r\n"
            f"Contact: <sip:alice@127.0.0.1:{me}>\r\n"
            f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", self.port))
        data, addr = self.callee.recvfrom(65535)
        req = SipMsg(data)
        assert req.method == "INVITE"
        self.rr = req.hdr("Record-Route")
        vias = "".join(f"Via: {v}\r\n" for v in req.hdrs("Via"))
        cme = self.callee.getsockname()[1]
        for c, r in ((180, "Ringing"), (code, reason)):
            self.callee.sendto((
                f"SIP/2.0 {c} {r}\r\n{vias}Record-Route: {self.rr}\r\n"
                f"From: {req.hdr('From')}\r\nTo: {req.hdr('To')};"
                f"tag=tt-{callid}\r\nCall-ID: {callid}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:bob@127.0.0.1:{cme}>\r\n"
                f"Content-Length: 0\r\n\r\n").encode(), addr)
        final = self._recv(self.caller, lambda m: m.status
                           and m.status >= 200)
        if final.status < 300:
            self.seq(self.caller, "ACK", 1)
            ack = self._recv(self.callee, lambda m: m.method == "ACK")
            assert ack.callid == callid
        return final

    def seq(self, sock, method, cseq):
        me = sock.getsockname()[1]
        if sock is self.caller:
            ruri = f"sip:bob@127.0.0.1:{self.callee.getsockname()[1]}"
            ft, tt = f"ft-{self.callid}", f"tt-{self.callid}"
            fu, tu = "alice", "bob"
        else:
            ruri = f"sip:alice@127.0.0.1:{self.caller.getsockname()[1]}"
            ft, tt = f"tt-{self.callid}", f"ft-{self.callid}"
            fu, tu = "bob", "alice"
        sock.sendto((
            f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{method}{cseq}"
            f"{self.callid}\r\nMax-Forwards: 70\r\nRoute: {self.rr}\r\n"
            f"From: <sip:{fu}@127.0.0.1>;tag={ft}\r\n"
            f"To: <sip:{tu}@127.0.0.1>;tag={tt}\r\nCall-ID: {self.callid}\r\n"
            f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", self.port))

    def answer_bye(self, sock):
        """The far end's BYE arrives and is answered 200."""
        bye = self._recv(sock, lambda m: m.method == "BYE")
        vias = "".join(f"Via: {v}\r\n" for v in bye.hdrs("Via"))
        sock.sendto((
            f"SIP/2.0 200 OK\r\n{vias}From: {bye.hdr('From')}\r\n"
            f"To: {bye.hdr('To')}\r\nCall-ID: {bye.callid}\r\n"
            f"CSeq: {bye.hdr('CSeq')}\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", self.port))
        return bye

    def bye(self, sock):
        self.seq(sock, "BYE", 2)
        other = self.callee if sock is self.caller else self.caller
        self.answer_bye(other)
        r = self._recv(sock, lambda m: m.status is not None and m.status)
        assert r.status == 200

    # ---- what was accounted
    def lines(self, text, n=1, timeout=10):
        pat = re.compile(re.escape(text) + r"(\S*call_id="
                         + re.escape(self.callid) + r";\S*)")
        deadline = time.monotonic() + timeout
        while True:
            found = [m.group(1) for m in pat.finditer(self.server.stderr())]
            if len(found) >= n or time.monotonic() > deadline:
                return [dict(kv.split("=", 1) for kv in f.split(";"))
                        for f in found]
            time.sleep(0.05)

    def rows(self, table, n=1, timeout=10):
        con = db_bind_mod(self.url).init(self.url)
        try:
            con.use_table(table)
            deadline = time.monotonic() + timeout
            while True:
                r = con.query(["callid"], ["="], [self.callid]).dicts()
                if len(r) >= n or time.monotonic() > deadline:
                    return r
                time.sleep(0.05)
        finally:
            con.close()


@pytest.fixture
def make_call(server, db_url):
    admin.create(db_url, ["acc", "dialog"], create_database=False)
    con = db_bind_mod(db_url).init(db_url)
    try:        # the db extra column, the operator's to add (README)
        for t in ("acc", "missed_calls"):
            con.raw_query(f"ALTER TABLE {t} ADD COLUMN src_ip VARCHAR(64)")
            con.raw_query(f"ALTER TABLE {t} ADD COLUMN dst_col VARCHAR(64)")
    finally:
        con.close()
    made = []

    def make(db_mode=0):
        c = Call(server, db_url, db_mode)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def _check_cdr(call, line, row, held, setup_max=5):
    """One CDR: the INVITE's identity, the call's times."""
    assert (line["method"], line["from_tag"], line["to_tag"], line["code"],
            line["reason"]) == ("INVITE", f"ft-{call.callid}",
                                f"tt-{call.callid}", "200", "OK")
    assert line["src"] == "127.0.0.1"
    assert line["user_agent"] == "cdr-test/1"
    assert line["dst"] == "bob"                  # the leg field
    assert line["ans"] == "OK"                   # set in onreply_route
    assert int(line["duration"]) == held
    assert held * 1000 <= int(line["ms_duration"]) < (held + 1) * 1000
    assert 0 <= int(line["setuptime"]) <= setup_max
    now = time.time()
    assert now - 60 < int(line["created"]) <= int(line["call_start_time"]) \
        <= now
    assert (row["method"], row["from_tag"], row["to_tag"], row["sip_code"],
            row["sip_reason"]) == ("INVITE", f"ft-{call.callid}",
                                   f"tt-{call.callid}", "200", "OK")
    assert row["src_ip"] == "127.0.0.1" and row["dst_col"] == "bob"
    assert row["duration"] == held
    assert row["ms_duration"] == int(line["ms_duration"])
    assert 0 <= row["setuptime"] <= setup_max
    assert isinstance(row["created"], datetime.datetime)
    assert row["created"] <= row["time"]
    assert abs(row["time"].timestamp() - int(line["call_start_time"])) <= 1


def test_caller_bye_ends_the_call_with_one_cdr(make_call):
    call = make_call()
    assert call.invite("bob", "cdr-caller").status == 200
    time.sleep(1.1)
    call.bye(call.caller)
    [line] = call.lines("ACC: call ended: ")
    [row] = call.rows("acc")
    _check_cdr(call, line, row, held=1)
    # the answered INVITE is not reported apart, nor is the BYE
    time.sleep(0.3)
    assert call.lines("ACC: transaction answered: ", n=0, timeout=0) == []
    assert len(call.rows("acc")) == 1
    assert call.rows("missed_calls", n=0, timeout=0) == []


def test_callee_bye_ends_the_call_with_one_cdr(make_call):
    call = make_call()
    assert call.invite("bob", "cdr-callee").status == 200
    time.sleep(1.1)
    call.bye(call.callee)
    [line] = call.lines("ACC: call ended: ")
    [row] = call.rows("acc")
    _check_cdr(call, line, row, held=1)


def test_dialog_timeout_ends_the_call_with_one_cdr(make_call):
    call = make_call()
    assert call.invite("short", "cdr-timeout").status == 200
    # the timer ends the call ($DLG_timeout = 2: 1 to 3 s after the 200) without any BYE of ours
    [line] = call.lines("ACC: call ended: ", timeout=10)
    [row] = call.rows("acc")
    assert 1 <= int(line["duration"]) <= 3
    assert row["duration"] == int(line["duration"])
    assert line["to_tag"] == "tt-cdr-timeout"


def test_mi_dlg_end_dlg_ends_the_call_with_one_cdr(make_call):
    call = make_call()
    assert call.invite("bob", "cdr-mi").status == 200
    time.sleep(1.1)
    mi_call(call.mi, "dlg_end_dlg", ["cdr-mi"])
    call.answer_bye(call.caller)
    call.answer_bye(call.callee)
    [line] = call.lines("ACC: call ended: ")
    [row] = call.rows("acc")
    _check_cdr(call, line, row, held=1)


def test_failed_call_is_missed_and_no_cdr(make_call):
    call = make_call()
    assert call.invite("bob", "cdr-busy", 486, "Busy Here").status == 486
    [line] = call.lines("ACC: call missed: ")
    assert line["code"] == "486"
    [row] = call.rows("missed_calls")
    assert row["sip_code"] == "486"
    time.sleep(0.5)
    assert call.lines("ACC: call ended: ", n=0, timeout=0) == []
    assert call.rows("acc", n=0, timeout=0) == []


def test_without_create_dialog_acc_makes_the_dialog(make_call):
    # OpenSIPS's create_acc_dlg: do_accounting(..., "cdr") makes it
    call = make_call()
    assert call.invite("nodlg", "cdr-nodlg").status == 200
    assert "did=" in call.rr
    time.sleep(1.1)
    call.bye(call.caller)
    [line] = call.lines("ACC: call ended: ")
    [row] = call.rows("acc")
    assert line["to_tag"] == "tt-cdr-nodlg" and row["duration"] == 1


def test_cdr_survives_a_restart_with_the_dialog_in_the_db(make_call):
    call = make_call(db_mode=1)
    assert call.invite("bob", "cdr-restart").status == 200
    time.sleep(0.3)
    assert call.server.terminate() == 0
    call.start()
    time.sleep(1)
    call.bye(call.callee)
    [line] = call.lines("ACC: call ended: ")
    [row] = call.rows("acc")
    _check_cdr(call, line, row, held=int(line["duration"]))
    assert int(line["duration"]) >= 1
    assert line["src"] == "127.0.0.1" and line["user_agent"] == "cdr-test/1"
