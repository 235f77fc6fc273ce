"""acc on the wire: the real server relays a call between two sockets of
ours, and the accounting lines (stderr) and rows (SQLite, made by
``opensipyctl db create``'s code) are read back."""
import re
import socket
import time

import pytest

from opensipy.db import admin, db_bind_mod
from opensipy.parser import SipMsg

from server import free_port, popen, run_opensipy

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
stderror_enabled=yes
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "db_sqlite.so"
loadmodule "acc.so"
modparam("tm", "wt_timer", 1)
modparam("acc", "db_url", "{url}")
modparam("acc", "extra_fields", "log: src_ip->src; ua->user_agent")
modparam("acc", "extra_fields", "db: src_ip->src_ip")
modparam("acc", "early_media", {early})
{params}
route {{
    if (is_method("CANCEL")) {{
        if (t_check_trans())
            t_relay();
        exit;
    }}
    if (is_method("ACK")) {{
        if (t_check_trans())
            t_relay();
        exit;
    }}
    $acc_extra(src_ip) = $si;
    $acc_extra(ua) = $hdr(User-Agent);
    if ($rU == "logreq") {{
        acc_log_request("404 Nobody home");
        acc_db_request("404 Nobody home", "missed_calls");
        sl_send_reply(404, "Nobody home");
        exit;
    }}
    if ($rU == "failed")
        do_accounting("log|db", "failed");
    else if ($rU == "serial") {{
        do_accounting("log|db", "missed");
        t_on_failure("next");
    }} else if ($rU == "dropped") {{
        do_accounting("log|db");
        drop_accounting("log");
    }} else
        do_accounting("log|db", "missed");
    $du = "sip:127.0.0.1:{callee}";
    t_relay();
}}
failure_route[next] {{
    if ($avp(tried) == NULL) {{
        $avp(tried) = 1;
        $acc_extra(ua) = "retry of " + $acc_extra(ua);
        do_accounting("log", "missed");
        $du = "sip:127.0.0.1:{callee}";
        t_relay();
    }}
}}
"""


class Rig:
    def __init__(self, server, tmp_path, early=0, params=""):
        self.port = free_port()
        self.url = f"sqlite://{tmp_path}/acc.db"
        admin.create(self.url, ["acc"])
        con = db_bind_mod(self.url).init(self.url)
        try:        # an extra column is the operator's to add (README)
            for t in ("acc", "missed_calls"):
                con.raw_query(f"ALTER TABLE {t} ADD COLUMN src_ip "
                              f"VARCHAR(64) DEFAULT NULL")
        finally:
            con.close()
        self.callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.callee.bind(("127.0.0.1", 0))
        self.callee.settimeout(5)
        self.caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.caller.bind(("127.0.0.1", 0))
        self.caller.settimeout(5)
        self.server = server
        server.start(SCRIPT.format(port=self.port, url=self.url,
                                   callee=self.callee.getsockname()[1],
                                   early=early, params=params))

    def close(self):
        self.callee.close()
        self.caller.close()

    def invite(self, user, callid, ua="acc-test/1"):
        me = self.caller.getsockname()[1]
        self.caller.sendto((
            f"INVITE sip:{user}@127.0.0.1:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{callid}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=ft{callid}"
            f"\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {callid}\r\n"
            f"CSeq: 1 INVITE\r\nUser-Agent: {ua}\r\n"
            f"Contact: <sip:alice@127.0.0.1:{me}>\r\n"
            f"Content-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", self.port))

    def at_callee(self, method="INVITE"):
        while True:
            data, addr = self.callee.recvfrom(65535)
            m = SipMsg(data)
            if m.is_request and m.method == method:
                return m, addr

    def answer(self, req, addr, code, reason, body=b"", tag="tt1"):
        vias = "".join(f"Via: {v}\r\n" for v in req.hdrs("Via"))
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        self.callee.sendto((
            f"SIP/2.0 {code} {reason}\r\n{vias}"
            f"From: {req.hdr('From')}\r\nTo: {req.hdr('To')};tag={tag}\r\n"
            f"Call-ID: {req.callid}\r\nCSeq: {req.hdr('CSeq')}\r\n"
            f"{ctype}Content-Length: {len(body)}\r\n\r\n").encode() + body,
            addr)

    def final(self):
        while True:
            m = SipMsg(self.caller.recv(65535))
            if m.status >= 200:
                return m

    def lines(self, text, callid, n=1, timeout=10):
        pat = re.compile(re.escape(text) + r"(timestamp=\d+;.*call_id="
                         + re.escape(callid) + r";.*)")
        deadline = time.monotonic() + timeout
        while True:
            found = [m.group(1) for m in pat.finditer(self.server.stderr())]
            if len(found) >= n or time.monotonic() > deadline:
                return [dict(kv.split("=", 1) for kv in f.split(";"))
                        for f in found]
            time.sleep(0.05)

    def rows(self, table, callid, n=1, timeout=10):
        con = db_bind_mod(self.url).init(self.url)
        try:
            con.use_table(table)
            deadline = time.monotonic() + timeout
            while True:
                r = con.query(["callid"], ["="], [callid]).dicts()
                if len(r) >= n or time.monotonic() > deadline:
                    return r
                time.sleep(0.05)
        finally:
            con.close()


@pytest.fixture
def rig(server, tmp_path):
    r = Rig(server, tmp_path)
    yield r
    r.close()


def test_an_answered_call_is_one_line_and_one_row(rig):
    rig.invite("bob", "ans1")
    req, addr = rig.at_callee()
    rig.answer(req, addr, 180, "Ringing")
    rig.answer(req, addr, 200, "OK")
    assert rig.final().status == 200
    [line] = rig.lines("ACC: transaction answered: ", "ans1")
    assert line["method"] == "INVITE" and line["from_tag"] == "ftans1"
    assert line["to_tag"] == "tt1" and line["code"] == "200"
    assert line["reason"] == "OK"
    assert line["src"] == "127.0.0.1"            # $acc_extra, log backend
    assert line["user_agent"] == "acc-test/1"
    assert abs(int(line["timestamp"]) - time.time()) < 30
    [row] = rig.rows("acc", "ans1")
    assert (row["method"], row["from_tag"], row["to_tag"], row["sip_code"],
            row["sip_reason"]) == ("INVITE", "ftans1", "tt1", "200", "OK")
    assert row["src_ip"] == "127.0.0.1"           # db extra column
    assert row["time"].year >= 2024
    # the 180 was not accounted (no early_media) and nothing went missed
    assert rig.lines("ACC: call missed: ", "ans1", n=0, timeout=0) == []
    assert rig.rows("missed_calls", "ans1", n=0, timeout=0) == []


def test_a_busy_callee_is_a_missed_call_not_an_answered_one(rig):
    rig.invite("bob", "busy1")
    req, addr = rig.at_callee()
    rig.answer(req, addr, 486, "Busy Here", tag="b1")
    assert rig.final().status == 486
    [line] = rig.lines("ACC: call missed: ", "busy1")
    assert (line["code"], line["reason"], line["to_tag"]) == \
        ("486", "Busy Here", "b1")
    [row] = rig.rows("missed_calls", "busy1")
    assert (row["sip_code"], row["sip_reason"]) == ("486", "Busy Here")
    # once only (ON_FAILURE reports it, the final reply does not again)
    time.sleep(0.5)
    assert len(rig.lines("ACC: call missed: ", "busy1", n=2,
                         timeout=0)) == 1
    assert rig.rows("acc", "busy1", n=0, timeout=0) == []


def test_failed_flag_accounts_a_negative_reply_in_acc(rig):
    rig.invite("failed", "fail1")
    req, addr = rig.at_callee()
    rig.answer(req, addr, 603, "Decline")
    assert rig.final().status == 603
    [line] = rig.lines("ACC: transaction answered: ", "fail1")
    assert line["code"] == "603"
    [row] = rig.rows("acc", "fail1")
    assert row["sip_reason"] == "Decline"
    assert rig.rows("missed_calls", "fail1", n=0, timeout=0) == []


def test_serial_forking_reports_each_missed_attempt(rig):
    rig.invite("serial", "ser1")
    req, addr = rig.at_callee()
    rig.answer(req, addr, 486, "Busy Here", tag="s1")
    req2, addr2 = rig.at_callee()              # failure_route relayed again
    rig.answer(req2, addr2, 480, "Temporarily Unavailable", tag="s2")
    assert rig.final().status == 480
    lines = rig.lines("ACC: call missed: ", "ser1", n=2)
    assert [(l["code"], l["to_tag"]) for l in lines] == \
        [("486", "s1"), ("480", "s2")]
    # $acc_extra set in the failure_route belongs to the transaction
    assert [l["user_agent"] for l in lines] == \
        ["acc-test/1", "retry of acc-test/1"]
    # the failure route re-armed only the log backend
    [row] = rig.rows("missed_calls", "ser1")
    assert row["sip_code"] == "486"


def test_drop_accounting_stops_one_backend(rig):
    rig.invite("dropped", "drop1")
    req, addr = rig.at_callee()
    rig.answer(req, addr, 200, "OK")
    assert rig.final().status == 200
    assert len(rig.rows("acc", "drop1")) == 1
    assert rig.lines("ACC: transaction answered: ", "drop1", n=1,
                     timeout=0.5) == []


def test_acc_log_request_and_acc_db_request_account_on_the_spot(rig):
    rig.invite("logreq", "req1")
    assert rig.final().status == 404
    [line] = rig.lines("ACC: request accounted: ", "req1")
    assert (line["code"], line["reason"], line["src"]) == \
        ("404", "Nobody home", "127.0.0.1")
    [row] = rig.rows("missed_calls", "req1")
    assert (row["sip_code"], row["sip_reason"]) == ("404", "Nobody home")


def test_early_media_accounts_a_provisional_with_a_body(server, tmp_path):
    rig = Rig(server, tmp_path, early=1)
    try:
        rig.invite("bob", "early1")
        req, addr = rig.at_callee()
        rig.answer(req, addr, 180, "Ringing")            # no body: not
        rig.answer(req, addr, 183, "Session Progress", body=b"v=0\r\n")
        while SipMsg(rig.caller.recv(65535)).status != 183:
            pass        # the 183 relayed before the 200 is sent: in order
        rig.answer(req, addr, 200, "OK")
        assert rig.final().status == 200
        lines = rig.lines("ACC: transaction answered: ", "early1", n=2)
        assert [l["code"] for l in lines] == ["183", "200"]
    finally:
        rig.close()


def test_log_level_hides_the_lines_below_it(server, tmp_path):
    # log_level=3 for the server; acc at L_DBG (4) prints nothing
    rig = Rig(server, tmp_path, params='modparam("acc", "log_level", 4)')
    try:
        rig.invite("bob", "quiet1")
        req, addr = rig.at_callee()
        rig.answer(req, addr, 200, "OK")
        assert rig.final().status == 200
        assert len(rig.rows("acc", "quiet1")) == 1
        assert rig.lines("ACC: transaction answered: ", "quiet1", n=1,
                         timeout=0.5) == []
    finally:
        rig.close()


@pytest.mark.parametrize("call, error", [
    ('do_accounting("aaa");', "accounting type 'aaa' is not supported"),
    ('do_accounting("log", "cdr");', "dialog module not loaded"),
    ('do_accounting("log", "sometimes");', "invalid accounting flag"),
    ('do_accounting("db");', "db accounting needs"),
    ('$var(x) = $acc_extra(nope);', "unknown extra tag"),
])
def test_bad_uses_are_config_errors_with_their_line(tmp_path, call, error):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(f"""socket=udp:127.0.0.1:{free_port()}
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "acc.so"
modparam("acc", "extra_fields", "log: a->b")
route {{
    {call}
}}
""")
    # fixups run when the server starts (not under -c): it refuses to
    r = run_opensipy(["-F", "-E", "-f", str(cfg)], timeout=30)
    assert r.returncode == 1
    assert f"{cfg}:7:" in r.stderr and error in r.stderr, r.stderr


def test_bad_module_parameters_stop_the_start(tmp_path):
    for param, error in [
            ('"extra_fields", "radius: a->b"', "unknown backend 'radius'"),
            ('"extra_fields", "log: a->b; c->b"', "'b' defined twice"),
            ('"log_facility", "LOG_NOWHERE"', "unknown syslog facility")]:
        cfg = tmp_path / "bad.cfg"
        cfg.write_text(f"""socket=udp:127.0.0.1:{free_port()}
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "acc.so"
modparam("acc", {param})
route {{ exit; }}
""")
        r = run_opensipy(["-F", "-E", "-f", str(cfg)], timeout=30)
        assert r.returncode == 1 and error in r.stderr, (param, r.stderr)


SEQ_SCRIPT = r"""
log_level=3
stderror_enabled=yes
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "db_sqlite.so"
loadmodule "acc.so"
modparam("tm", "wt_timer", 1)
modparam("rr", "append_fromtag", 1)
modparam("acc", "db_url", "{url}")
modparam("acc", "detect_direction", {direction})
modparam("acc", "report_cancels", {cancels})
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
        do_accounting("log");
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{
        do_accounting("log");
        if (t_check_trans())
            t_relay();
        exit;
    }}
    record_route();
    $(acc_leg(dst)[0]) = $rU;
    acc_new_leg();
    $(acc_leg(dst)[-1]) = "second";
    xlog("L_NOTICE", "current leg $acc_current_leg\n");
    do_accounting("log|db");
    $du = "sip:127.0.0.1:{callee}";
    t_relay();
}}
"""


class SeqRig(Rig):
    def __init__(self, server, tmp_path, direction=0, cancels=0):
        self.port = free_port()
        self.url = f"sqlite://{tmp_path}/acc.db"
        admin.create(self.url, ["acc"])
        con = db_bind_mod(self.url).init(self.url)
        try:
            con.raw_query("ALTER TABLE acc ADD COLUMN dst_col VARCHAR(64)")
        finally:
            con.close()
        self.callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.callee.bind(("127.0.0.1", 0))
        self.callee.settimeout(5)
        self.caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.caller.bind(("127.0.0.1", 0))
        self.caller.settimeout(5)
        self.server = server
        server.start(SEQ_SCRIPT.format(
            port=self.port, url=self.url, direction=direction,
            cancels=cancels, callee=self.callee.getsockname()[1]))

    def raw_lines(self, text, callid):
        return [l for l in self.server.stderr().splitlines()
                if text in l and f"call_id={callid};" in l]


def test_leg_fields_one_log_line_with_every_leg_and_a_row_per_leg(
        server, tmp_path):
    rig = SeqRig(server, tmp_path)
    try:
        rig.invite("bob", "leg1")
        req, addr = rig.at_callee()
        rig.answer(req, addr, 200, "OK")
        assert rig.final().status == 200
        rig.lines("ACC: transaction answered: ", "leg1")
        [line] = rig.raw_lines("ACC: transaction answered: ", "leg1")
        assert line.endswith("reason=OK;dst=bob;dst=second")
        assert "current leg 1" in rig.server.stderr()
        rows = rig.rows("acc", "leg1", n=2)
        assert sorted(r["dst_col"] for r in rows) == ["bob", "second"]
    finally:
        rig.close()


@pytest.mark.parametrize("direction", [0, 1])
def test_detect_direction_swaps_the_tags_of_a_bye_from_the_callee(
        server, tmp_path, direction):
    rig = SeqRig(server, tmp_path, direction=direction)
    try:
        rig.invite("bob", "dir1")
        req, addr = rig.at_callee()
        rr = req.hdr("Record-Route")
        assert "ftag=ftdir1" in rr
        rig.answer(req, addr, 200, "OK", tag="cal")
        assert rig.final().status == 200
        me = rig.callee.getsockname()[1]
        caller = rig.caller.getsockname()[1]
        rig.callee.sendto((
            f"BYE sip:alice@127.0.0.1:{caller} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKbye{direction}"
            f"\r\nMax-Forwards: 70\r\nRoute: {rr}\r\n"
            f"From: <sip:bob@127.0.0.1>;tag=cal\r\n"
            f"To: <sip:alice@127.0.0.1>;tag=ftdir1\r\nCall-ID: dir1\r\n"
            f"CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", rig.port))
        bye = SipMsg(rig.caller.recv(65535))
        assert bye.method == "BYE"
        vias = "".join(f"Via: {v}\r\n" for v in bye.hdrs("Via"))
        rig.caller.sendto((
            f"SIP/2.0 200 OK\r\n{vias}From: {bye.hdr('From')}\r\n"
            f"To: {bye.hdr('To')}\r\nCall-ID: dir1\r\nCSeq: 1 BYE\r\n"
            f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", rig.port))
        lines = rig.lines("ACC: transaction answered: ", "dir1", n=2)
        byes = [l for l in lines if l["method"] == "BYE"]
        assert len(byes) == 1
        tags = (byes[0]["from_tag"], byes[0]["to_tag"])
        # swapped back to the INVITE's direction only with detect_direction
        assert tags == (("ftdir1", "cal") if direction else
                        ("cal", "ftdir1"))
    finally:
        rig.close()


@pytest.mark.parametrize("cancels", [0, 1])
def test_report_cancels(server, tmp_path, cancels):
    rig = SeqRig(server, tmp_path, cancels=cancels)
    try:
        rig.invite("bob", "can1")
        req, addr = rig.at_callee()
        rig.answer(req, addr, 180, "Ringing")
        me = rig.caller.getsockname()[1]
        rig.caller.sendto((
            f"CANCEL sip:bob@127.0.0.1:{rig.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKcan1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=ftcan1"
            f"\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: can1\r\n"
            f"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", rig.port))
        c, caddr = rig.at_callee("CANCEL")
        rig.answer(c, caddr, 200, "OK")
        rig.answer(req, addr, 487, "Request Terminated")
        assert rig.final().status in (200, 487)
        lines = rig.lines("ACC: transaction answered: ", "can1",
                          n=1, timeout=2 if cancels else 1)
        cancel_lines = [l for l in lines if l["method"] == "CANCEL"]
        if cancels:
            assert [l["code"] for l in cancel_lines] == ["200"]
        else:
            assert cancel_lines == []
            assert "'report_cancels' modparam not set" in \
                rig.server.stderr()
    finally:
        rig.close()


DEV_LOG = "/dev/log"


@pytest.fixture
def dev_log():
    """A syslog socket of ours at /dev/log (only where no syslog daemon
    has one): yields a function returning the datagrams received."""
    import os
    if os.path.exists(DEV_LOG):
        pytest.skip("/dev/log belongs to a syslog daemon here")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind(DEV_LOG)
    except OSError as e:
        pytest.skip(f"cannot bind {DEV_LOG}: {e}")
    s.settimeout(0.2)
    got = []

    def read():
        while True:
            try:
                got.append(s.recv(65535).decode(errors="replace"))
            except (socket.timeout, BlockingIOError):
                return got
    try:
        yield read
    finally:
        s.close()
        os.unlink(DEV_LOG)


def test_log_facility_on_syslog(tmp_path, dev_log):
    import os
    import signal
    import subprocess
    import sys
    from server import REPO
    port = free_port()
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee.bind(("127.0.0.1", 0))
    callee.settimeout(5)
    cfg = tmp_path / "syslog.cfg"
    cfg.write_text(f"""
log_level=3
stderror_enabled=no
syslog_enabled=yes
syslog_facility=LOG_LOCAL0
udp_workers=1
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "acc.so"
modparam("acc", "log_facility", "LOG_LOCAL3")
route {{
    do_accounting("log", "failed");
    t_reply(404, "Not Here");
}}
""")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("NOTIFY_SOCKET", None)
    p = popen([sys.executable, "-m", "opensipy", "-F", "-f",
                          str(cfg)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not any("opensipy started" in m for m in dev_log()):
            assert p.poll() is None, p.stderr.read().decode()
            assert time.monotonic() < deadline, dev_log()
        me = callee.getsockname()[1]
        callee.sendto((
            f"OPTIONS sip:x@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKfac1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=fac\r\n"
            f"To: <sip:x@127.0.0.1>\r\nCall-ID: fac1\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", port))
        assert SipMsg(callee.recv(65535)).status == 404
        deadline = time.monotonic() + 5
        while True:
            acc = [m for m in dev_log() if "ACC: transaction answered:" in m]
            if acc or time.monotonic() > deadline:
                break
        # PRI = facility * 8 + severity: LOG_LOCAL3 (19), NOTICE (5)
        assert len(acc) == 1 and acc[0].startswith("<157>"), acc
        assert "call_id=fac1;code=404;reason=Not Here" in acc[0]
        # the rest of the log stays on the server's facility (LOG_LOCAL0)
        started = [m for m in dev_log() if "opensipy started" in m]
        assert started[0].startswith("<13"), started   # 128 + severity
    finally:
        callee.close()
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
