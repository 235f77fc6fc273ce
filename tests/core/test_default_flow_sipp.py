"""The residential flow with real SIPp phones, through both default
scripts: ours (etc/opensipy/opensipy.cfg: digest authentication against
the embedded SQLite database, accounting to the log and to the database)
and OpenSIPS's own default script, copied with only mpath, the FIFO path
and the socket changed (no authentication, accounting to the log).

Each test runs on both: users register, one calls another (INVITE, 100,
180, 200, ACK, then BYE and its 200 along the Record-Route set), a call is
cancelled while it rings (487), a call to an unknown user (404), a request
whose Max-Forwards is exhausted (483), a relay to a foreign domain (403), a
request with a preloaded Route (403); the accounting lines (and, for ours,
rows) each leaves are checked; and 1,000 users register in a burst, then
10 of them, sampled, are called.
"""
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from opensipy.ctl.user import ha1s
from opensipy.db import admin, db_bind_mod

from server import REPO, free_port, popen
from shareddata import require_shared
from test_default_scripts import opensips_default_text, our_default_text

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

DOMAIN = "127.0.0.1"
PASSWORD = "s3cret-{}"

# ---- SIPp scenarios (written per test: AUTH parts only for our script) ----

HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
"""

REGISTER = """
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@127.0.0.1>;tag=[pid]r[call_number]
      To: <sip:[field0]@127.0.0.1>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:[field0]@127.0.0.1:[field2]>
      Expires: 600
      Max-Forwards: 70{auth}
      Content-Length: 0

    ]]>
  </send>
"""
AUTH_LINE = "\n      [authentication]"


def register_xml(auth: bool) -> str:
    x = HEAD.format(name="register")
    if auth:
        x += REGISTER.format(cseq=1, auth="")
        x += '  <recv response="401" auth="true"/>\n'
        x += REGISTER.format(cseq=2, auth=AUTH_LINE)
    else:
        x += REGISTER.format(cseq=1, auth="")
    return x + '  <recv response="200"/>\n</scenario>\n'


def _invite(n, ruri, extra="", auth=False, maxfwd=70, from_dom=DOMAIN):
    a = AUTH_LINE if auth else ""
    return f"""
  <send retrans="500">
    <![CDATA[
      INVITE {ruri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-{n}
      From: <sip:[field0]@{from_dom}>;tag=[pid]c[call_number]
      To: <{ruri}>
      Call-ID: [call_id]
      CSeq: {n} INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: {maxfwd}{extra}{a}
      Content-Length: 0

    ]]>
  </send>
"""


def _ack(n, ruri, from_dom=DOMAIN):
    """The ACK of a negative reply: the INVITE's branch, hop by hop."""
    return f"""
  <send>
    <![CDATA[
      ACK {ruri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-{n}
      From: <sip:[field0]@{from_dom}>;tag=[pid]c[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {n} ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""


def _invite_maybe_auth(ruri, auth, **kw):
    """The INVITE (challenged first with our script); returns (xml, the
    CSeq/branch number of the INVITE that counts)."""
    x = _invite(1, ruri, **kw)
    if not auth:
        return x, 1
    x += '  <recv response="100" optional="true"/>\n'
    x += '  <recv response="407" auth="true"/>\n'
    x += _ack(1, ruri)
    x += _invite(2, ruri, auth=True, **kw)
    return x, 2


def call_xml(auth: bool) -> str:
    """INVITE, 100, 180, 200, ACK and BYE along the Route set, 200."""
    ruri = "sip:[field3]@[remote_ip]:[remote_port]"
    x, n = _invite_maybe_auth(ruri, auth)
    x = HEAD.format(name="call") + x + f"""
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:[field0]@127.0.0.1>;tag=[pid]c[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {n} ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="100"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:[field0]@127.0.0.1>;tag=[pid]c[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {n + 1} BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""
    return x


def cancel_xml(auth: bool) -> str:
    """INVITE, 180, CANCEL (the INVITE's branch), 200, 487, ACK."""
    ruri = "sip:[field3]@[remote_ip]:[remote_port]"
    x, n = _invite_maybe_auth(ruri, auth)
    return HEAD.format(name="cancel") + x + f"""
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <send retrans="500">
    <![CDATA[
      CANCEL {ruri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-{n}
      From: <sip:[field0]@127.0.0.1>;tag=[pid]c[call_number]
      To: <{ruri}>
      Call-ID: [call_id]
      CSeq: {n} CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv response="487"/>
""" + _ack(n, ruri) + """  <pause milliseconds="100"/>
</scenario>
"""


def refused_xml(code, ruri, auth=False, extra="", maxfwd=70,
                from_dom=DOMAIN) -> str:
    """One INVITE refused with ``code`` (challenged first when ``auth``)."""
    if auth:
        x, n = _invite_maybe_auth(ruri, True, extra=extra, maxfwd=maxfwd)
    else:
        x, n = _invite(1, ruri, extra=extra, maxfwd=maxfwd,
                       from_dom=from_dom), 1
    return (HEAD.format(name=f"refused-{code}") + x
            + '  <recv response="100" optional="true"/>\n'
            + f'  <recv response="{code}"/>\n'
            + _ack(n, ruri, from_dom) + "</scenario>\n")


CALLEE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="callee">
  <recv request="INVITE" crlf="true" rrs="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <!-- it rings a little: a 180 and a 200 sent at once may be relayed in
       either order by two receivers (UDP keeps no order either) -->
  <pause milliseconds="50"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

RING_CANCEL = (REPO / "tests" / "tm" / "scenarios" / "uas_ring_cancel.xml")


# ---- the proxy under test ------------------------------------------------

class Proxy:
    """One of the two default scripts, started by the test's server."""

    def __init__(self, kind, server, tmp_path, auth=True):
        self.kind = kind
        self.auth = kind == "ours" and auth
        self.tmp = Path(tmp_path)
        self.port = free_port()
        self.server = server
        self.url = None
        if kind == "ours":
            self.url = f"sqlite://{tmp_path}/opensipy.db"
            admin.create(self.url)             # what `opensipyctl db create`
            text = our_default_text(self.tmp, self.port, self.url)
            if not auth:      # the documented switch
                assert text.count("\n\troute(auth);\n") == 1
                text = text.replace("\n\troute(auth);\n",
                                    "\n\t#route(auth);\n")
        else:
            require_shared("anchors", "opensips-default.cfg")
            text = opensips_default_text(f"{tmp_path}/modules/",
                                         self.tmp / "opensips_fifo",
                                         self.port)
        self.fifo = self.tmp / ("fifo" if kind == "ours" else
                                "opensips_fifo")
        # mi_fifo's reply_dir: ours moved into the test's folder (from
        # /run/opensipy/), OpenSIPS's script keeps the default /tmp/
        self.reply_dir = str(self.tmp) if kind == "ours" else "/tmp"
        server.start(text)

    def mi(self, method, params=None):
        """The script's own FIFO, as opensipyctl talks to it."""
        from opensipy.ctl.client import FifoClient
        # the reply FIFO goes to mi_fifo's reply_dir
        return FifoClient(str(self.fifo), self.reply_dir).call(
            method, params)

    def add_users(self, users):
        """Subscribers with their HA1s, as `opensipyctl user add` stores
        them (ours only: OpenSIPS's default script does not authenticate)."""
        if not self.url:
            return
        con = db_bind_mod(self.url).init(self.url)
        try:
            con.use_table("subscriber")
            for u in users:
                cols = ha1s(u, DOMAIN, PASSWORD.format(u))
                con.insert(["username", "domain"] + list(cols),
                           [u, DOMAIN] + list(cols.values()))
        finally:
            con.close()

    # -- SIPp --------------------------------------------------------------
    def write(self, name, text):
        p = self.tmp / name
        p.write_text(text)
        return p

    def csv(self, name, rows):
        return self.write(name, "SEQUENTIAL\n" + "".join(
            ";".join(str(f) for f in r) + "\n" for r in rows))

    def sipp(self, scenario, port, calls, inf=None, rate=50, limit=None,
             uas=False, timeout="30s", au=None, trace=None):
        args = ["sipp", "-sf", str(scenario), "-i", "127.0.0.1",
                "-p", str(port), "-mp", str(free_port()), "-m", str(calls),
                "-nostdin", "-timeout", timeout, "-timeout_error",
                "-trace_err", "-error_file", str(self.tmp / f"err-{port}")]
        if not uas:
            args[3:3] = [f"127.0.0.1:{self.port}"]
            args += ["-r", str(rate)]
            if limit:
                args += ["-l", str(limit)]
        if inf is not None:
            args += ["-inf", str(inf)]
        if trace is not None:
            args += ["-trace_msg", "-message_file", str(trace)]
        if au is not None:
            # SIPp 3.6 cannot take the digest user from an injection file
            # ([authentication username=[field0]] does not nest): one
            # user per SIPp, given with -au/-ap
            args += ["-au", au, "-ap", PASSWORD.format(au)]
        return popen(args, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(self.tmp))

    def register(self, users, contact_port, rate=50, limit=None):
        """Every user registers with contact_port as its contact (with
        authentication: one user, its own password)."""
        assert len(users) == 1 or not self.auth
        inf = self.csv("reg.csv", [(u, "", contact_port) for u in users])
        p = self.sipp(self.write("register.xml", register_xml(self.auth)),
                      free_port(), len(users), inf, rate=rate, limit=limit,
                      au=users[0] if self.auth else None)
        finish(p, timeout=90)

    def caller(self, scenario_xml, rows, port=None, rate=20):
        """Calls from the first field's user (one caller per SIPp)."""
        assert len({r[0] for r in rows}) == 1
        inf = self.csv("calls.csv", rows)
        return self.sipp(self.write("caller.xml", scenario_xml),
                         port or free_port(), len(rows), inf, rate=rate,
                         au=rows[0][0] if self.auth else None)

    # -- accounting ----------------------------------------------------------
    def acc_lines(self, text, n=0, timeout=5, **want):
        """The ``text`` accounting lines whose fields hold ``want``."""
        pat = re.compile(re.escape(text)
                         + r"((?:timestamp|created)=\d+;\S.*)$", re.M)

        def found():
            out = []
            for m in pat.finditer(self.server.stderr()):
                rec = dict(kv.split("=", 1) for kv in m.group(1).split(";"))
                if all(rec.get(k) == v for k, v in want.items()):
                    out.append(rec)
            return out
        deadline = time.monotonic() + timeout
        while True:
            r = found()
            if len(r) >= n or time.monotonic() > deadline:
                return r
            time.sleep(0.1)

    def rows(self, table, n=0, timeout=5, **want):
        """The rows of ``table`` holding ``want`` (waiting for ``n``: the
        row is written after the log line)."""
        con = db_bind_mod(self.url).init(self.url)
        try:
            con.use_table(table)
            keys = list(want)
            deadline = time.monotonic() + timeout
            while True:
                r = con.query(keys, ["="] * len(keys),
                              [want[k] for k in keys]).dicts()
                if len(r) >= n or time.monotonic() > deadline:
                    return r
                time.sleep(0.1)
        finally:
            con.close()


def finish(*procs, timeout=60):
    """Wait for every SIPp; each must end with success."""
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            assert p.returncode == 0, out.decode(errors="replace")[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture(params=["ours", "opensips"])
def kind(request):
    return request.param


@pytest.fixture
def proxy(kind, server, tmp_path):
    return Proxy(kind, server, tmp_path)


def _callid_of(line):
    return line["call_id"]


def test_two_users_register_and_call_then_cancel_then_refusals(proxy):
    callee_port, caller_port = free_port(), free_port()
    proxy.add_users(["alice", "bob"])
    proxy.register(["alice"], caller_port)
    proxy.register(["bob"], callee_port)

    # --- a call: INVITE/100/180/200/ACK, BYE/200 along the Route set ----
    uas = proxy.sipp(proxy.write("callee.xml", CALLEE), callee_port, 1,
                     uas=True)
    time.sleep(0.3)
    uac = proxy.caller(call_xml(proxy.auth),
                       [("alice", PASSWORD.format("alice"), "", "bob")],
                       port=caller_port)
    finish(uac, uas)
    if proxy.kind == "ours":
        # create_dialog + the cdr flag: the call is one CDR at its end
        # (SIPp holds it 100 ms between the ACK and the BYE)
        [inv] = proxy.acc_lines("ACC: call ended: ", 1, method="INVITE",
                                code="200")
        assert inv["duration"] == "0"
        assert 100 <= int(inv["ms_duration"]) < 5000
        assert 0 <= int(inv["setuptime"]) <= 5
        assert int(inv["created"]) <= int(inv["call_start_time"]) \
            <= time.time()
        assert proxy.acc_lines("ACC: transaction answered: ", 0, 0,
                               method="INVITE") == []
    else:
        [inv] = proxy.acc_lines("ACC: transaction answered: ", 1,
                                method="INVITE", code="200")
    cid = inv["call_id"]
    assert inv["reason"] == "OK" and inv["to_tag"] and inv["from_tag"]
    [bye] = proxy.acc_lines("ACC: transaction answered: ", 1,
                            method="BYE", call_id=cid)
    assert bye["code"] == "200"
    if proxy.kind == "ours":
        # detect_direction: the caller's BYE has the INVITE's tags
        assert (bye["from_tag"], bye["to_tag"]) == \
            (inv["from_tag"], inv["to_tag"])
        rows = proxy.rows("acc", 2, callid=cid)
        assert sorted((r["method"], r["sip_code"]) for r in rows) == \
            [("BYE", "200"), ("INVITE", "200")]
        [cdr] = [r for r in rows if r["method"] == "INVITE"]
        assert (cdr["duration"], cdr["ms_duration"], cdr["setuptime"]) == \
            (0, int(inv["ms_duration"]), int(inv["setuptime"]))
        assert cdr["created"] <= cdr["time"]
        # the call's dialog is gone with its BYE
        assert proxy.mi("dlg_list")["Dialogs"] == []
        # the challenged first INVITE is not accounted
        assert proxy.rows("missed_calls", 0, 0, callid=cid) == []

    # --- CANCEL while it rings: 487, accounted as a missed call ---------
    uas = proxy.sipp(RING_CANCEL, callee_port, 1, uas=True)
    time.sleep(0.3)
    uac = proxy.caller(cancel_xml(proxy.auth),
                       [("alice", PASSWORD.format("alice"), "", "bob")],
                       port=caller_port)
    finish(uac, uas)
    [missed] = proxy.acc_lines("ACC: call missed: ", 1, code="487")
    assert missed["method"] == "INVITE" and missed["call_id"] != cid
    assert proxy.acc_lines("ACC: transaction answered: ", 0, timeout=0,
                           call_id=missed["call_id"]) == []
    if proxy.kind == "ours":
        [row] = proxy.rows("missed_calls", 1, callid=missed["call_id"])
        assert (row["sip_code"], row["sip_reason"]) == \
            ("487", "Request Terminated")

    # --- refusals -------------------------------------------------------
    here = f"127.0.0.1:{proxy.port}"
    cases = [
        # an unknown user: 404 (after the challenge with ours)
        (404, refused_xml(404, f"sip:nobody@{here}", auth=proxy.auth)),
        # Max-Forwards exhausted
        (483, refused_xml(483, f"sip:bob@{here}", maxfwd=0)),
        # a foreign caller relaying to a foreign domain
        (403, refused_xml(403, "sip:bob@example.com",
                          from_dom="example.org")),
        # a preloaded Route
        (403, refused_xml(403, f"sip:bob@{here}",
                          extra="\n      Route: <sip:proxy.example.net;lr>")),
    ]
    before = proxy.server.stderr()
    for code, xml in cases:
        finish(proxy.caller(xml, [("alice", PASSWORD.format("alice"),
                                   "", "x")]))
    time.sleep(0.5)
    new = proxy.server.stderr()[len(before):]
    # OpenSIPS's script accounts none of them; ours writes the 404 to
    # missed_calls (acc_db_request) and logs nothing
    assert "ACC: " not in new
    assert "Attempt to route with preloaded Route's" in new
    if proxy.kind == "ours":
        rows = proxy.rows("missed_calls", 1, sip_code="404")
        assert [(r["method"], r["sip_reason"]) for r in rows] == \
            [("INVITE", "Not Found")]
        assert proxy.rows("acc", 0, 0, sip_code="403") == []
        assert proxy.rows("acc", 0, 0, sip_code="483") == []


def test_a_burst_of_1000_registrations_then_calls_to_10_of_them(
        kind, server, tmp_path):
    # ours with its authentication switched off: SIPp 3.6 answers a
    # challenge for one user per process only (see Proxy.sipp)
    proxy = Proxy(kind, server, tmp_path, auth=False)
    users = [f"u{i:04d}" for i in range(1000)]
    callee_port = free_port()
    proxy.add_users(users + ["alice"])
    proxy.register(users, callee_port, rate=400, limit=100)
    st = proxy.mi("get_statistics", {"statistics": ["usrloc:"]})
    assert st["usrloc:registered_users"] == 1000
    sample = random.Random(16).sample(users, 10)
    trace = proxy.tmp / "callee-messages.log"
    uas = proxy.sipp(proxy.write("callee.xml", CALLEE), callee_port, 10,
                     uas=True, trace=trace)
    time.sleep(0.3)
    uac = proxy.caller(call_xml(proxy.auth),
                       [("alice", PASSWORD.format("alice"), "", u)
                        for u in sample], rate=10)
    finish(uac, uas)
    lines = proxy.acc_lines("ACC: call ended: " if kind == "ours" else
                            "ACC: transaction answered: ", 10,
                            method="INVITE", code="200")
    assert len({l["call_id"] for l in lines}) == 10
    # each sampled user was reached at its registered contact
    reached = re.findall(r"^INVITE sip:(u\d{4})@127\.0\.0\.1:" +
                         str(callee_port) + " ", trace.read_text(), re.M)
    assert sorted(reached) == sorted(sample)
    if proxy.kind == "ours":
        assert len(proxy.rows("acc", 10, method="INVITE",
                              sip_code="200")) == 10
