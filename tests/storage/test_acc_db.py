"""acc's rows on both engines: the acc and missed_calls tables made by
``opensipyctl db create``'s code (SQLite, PostgreSQL), an answered call and
a missed one relayed by the real server, the rows read back; a database
made without the acc tables stops the start with the reason."""
import datetime
import socket
import time

import pytest

from opensipy.db import admin, db_bind_mod
from opensipy.parser import SipMsg

from server import free_port

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=2
udp_workers=2
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "{driver}.so"
loadmodule "acc.so"
modparam("tm", "wt_timer", 1)
modparam("acc", "db_url", "{url}")
route {{
    if (is_method("ACK")) {{
        if (t_check_trans())
            t_relay();
        exit;
    }}
    do_accounting("db", "missed");
    $du = "sip:127.0.0.1:{callee}";
    t_relay();
}}
"""


def _start(server, url, callee):
    sip = free_port()
    driver = "db_postgres" if url.startswith("postgres") else "db_sqlite"
    server.start(SCRIPT.format(sip=sip, driver=driver, url=url,
                               callee=callee))
    return sip


def _sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def _call(sip, caller, callee, callid, code, reason):
    me = caller.getsockname()[1]
    caller.sendto((
        f"INVITE sip:bob@127.0.0.1:{sip} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{callid}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=f-{callid}\r\n"
        f"To: <sip:bob@127.0.0.1>\r\nCall-ID: {callid}\r\n"
        f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode(),
        ("127.0.0.1", sip))
    while True:
        data, addr = callee.recvfrom(65535)
        req = SipMsg(data)
        if req.is_request and req.method == "INVITE":
            break
    vias = "".join(f"Via: {v}\r\n" for v in req.hdrs("Via"))
    callee.sendto((
        f"SIP/2.0 {code} {reason}\r\n{vias}From: {req.hdr('From')}\r\n"
        f"To: {req.hdr('To')};tag=t-{callid}\r\nCall-ID: {callid}\r\n"
        f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode(), addr)
    while True:
        r = SipMsg(caller.recv(65535))
        if r.status >= 200:
            return r


def _rows(url, table, callid, timeout=5):
    con = db_bind_mod(url).init(url)
    try:
        con.use_table(table)
        deadline = time.monotonic() + timeout
        while True:
            r = con.query(["callid"], ["="], [callid]).dicts()
            if r or time.monotonic() > deadline:
                return r
            time.sleep(0.05)
    finally:
        con.close()


def test_answered_and_missed_calls_are_rows_on_both_engines(server,
                                                              db_url):
    admin.create(db_url, ["acc"], create_database=False)
    caller, callee = _sock(), _sock()
    try:
        sip = _start(server, db_url, callee.getsockname()[1])
        assert _call(sip, caller, callee, "db-ok", 200, "OK").status == 200
        assert _call(sip, caller, callee, "db-busy", 486,
                     "Busy Here").status == 486
        [row] = _rows(db_url, "acc", "db-ok")
        assert (row["method"], row["from_tag"], row["to_tag"],
                row["sip_code"], row["sip_reason"]) == \
            ("INVITE", "f-db-ok", "t-db-ok", "200", "OK")
        assert isinstance(row["time"], datetime.datetime)
        assert abs((row["time"] - datetime.datetime.now())
                   .total_seconds()) < 60
        # CDR columns keep their defaults: no CDR without a dialog module
        assert (row["duration"], row["setuptime"], row["created"]) == \
            (0, 0, None)
        [row] = _rows(db_url, "missed_calls", "db-busy")
        assert (row["sip_code"], row["sip_reason"], row["to_tag"]) == \
            ("486", "Busy Here", "t-db-busy")
        assert _rows(db_url, "acc", "db-busy", timeout=0) == []
    finally:
        caller.close()
        callee.close()


def test_a_database_without_the_acc_tables_stops_the_start(server,
                                                            tmp_path):
    url = f"sqlite://{tmp_path}/noacc.db"
    admin.create(url, ["standard"])
    with pytest.raises(RuntimeError) as e:
        _start(server, url, free_port())
    assert "acc" in str(e.value) and "Traceback" not in str(e.value)
