"""topology_hiding through the real server, with two small Python UAs on
127.0.0.1 standing for the caller and the callee (so every header each side
receives can be checked exactly), and the codec without sockets.

Each side has a record-routing proxy of its own in front of it (its
Record-Route names the UA's own socket, so the route set can be followed
and checked): the caller sends two Vias and a Record-Route, the callee
answers with a Record-Route.  Through topology_hiding, each side must see
only the proxy: its own Vias on replies, no Record-Route, the proxy's
Contact; and the proxy must route ACK, re-INVITE (both ways) and BYE (both
ways) to the right Contact along the right route set."""
import re
import socket
import time

import pytest

from server import free_port

SCRIPT = """
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "topology_hiding.so"
modparam("topology_hiding", "th_callid_passwd", "cid-secret")
modparam("topology_hiding", "th_contact_encode_passwd", "ct-secret")
modparam("topology_hiding", "th_passed_contact_uri_params", "pass-me")
modparam("topology_hiding", "th_passed_contact_params", "+sip.instance")
route {{
    if (has_totag()) {{
        if (topology_hiding_match()) {{
            xlog("L_NOTICE", "TH matched $rm ci=$ci callee_ci=$TH_callee_callid\\n");
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans())
                t_relay();
            exit;
        }}
        sl_send_reply(404, "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        t_relay();
        exit;
    }}
    if ($rU == "hidecid")
        topology_hiding("UC");
    else if ($rU == "nouser")
        topology_hiding();
    else
        topology_hiding("U");
    $du = "sip:127.0.0.1:{callee}";
    t_relay();
}}
"""


# ------------------------------------------------------------ a tiny UA

def parse(data: bytes):
    text = data.decode()
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    hdrs = []
    for ln in lines[1:]:
        name, _, value = ln.partition(":")
        hdrs.append((name.strip().lower(), value.strip()))
    return lines[0], hdrs, text


def hv(msg, name):
    """every value of header ``name`` (comma-separated values split for
    Via, Route and Record-Route)"""
    out = []
    for n, v in msg[1]:
        if n == name.lower():
            if n in ("via", "route", "record-route"):
                out += [x.strip() for x in re.split(r",(?![^<]*>)", v)]
            else:
                out.append(v)
    return out


def h1(msg, name):
    v = hv(msg, name)
    assert len(v) == 1, (name, msg[2])
    return v[0]


class UA:
    def __init__(self, name):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.n = 0
        self.behind = []        # addresses of the proxies on its side

    def close(self):
        self.sock.close()

    def send(self, text, to):
        self.sock.sendto(text.encode(), to)

    def recv(self, first=None, timeout=5.0):
        """the next message whose first line contains ``first``, skipping
        100 Trying and retransmissions of what came before"""
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise AssertionError(f"{self.name}: nothing like "
                                     f"{first!r} arrived")
            self.sock.settimeout(left)
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            m = parse(data)
            if m[0].startswith("SIP/2.0 100 "):
                continue
            if first is None or first in m[0]:
                return m, src

    def branch(self):
        self.n += 1
        return f"z9hG4bK-{self.name}-{self.n}-{time.time_ns()}"

    def reply(self, req, code, reason, totag, contact=None, extra=""):
        """a response to ``req`` sent where its top Via says"""
        to = h1(req, "to")
        if ";tag=" not in to:
            to += f";tag={totag}"
        vias = "".join(f"Via: {v}\r\n" for v in hv(req, "via"))
        ct = f"Contact: {contact}\r\n" if contact else ""
        text = (f"SIP/2.0 {code} {reason}\r\n{vias}"
                f"From: {h1(req, 'from')}\r\nTo: {to}\r\n"
                f"Call-ID: {h1(req, 'call-id')}\r\nCSeq: {h1(req, 'cseq')}\r\n"
                f"{ct}{extra}Content-Length: 0\r\n\r\n")
        top = hv(req, "via")[0]
        hp = top.split()[1].split(";")[0]
        host, port = hp.rsplit(":", 1)
        self.send(text, (host, int(port)))

    def request(self, method, ruri, to_proxy, callid, from_, to, cseq,
                contact=None, routes=(), extra_vias=(), extra=""):
        b = self.branch()
        vias = f"Via: SIP/2.0/UDP {self.addr};branch={b}\r\n"
        if method == "INVITE":
            self.last_invite_via = f"SIP/2.0/UDP {self.addr};branch={b}"
        vias += "".join(f"Via: {v}\r\n" for v in extra_vias)
        rt = "".join(f"Route: {r}\r\n" for r in routes)
        ct = f"Contact: {contact}\r\n" if contact else ""
        text = (f"{method} {ruri} SIP/2.0\r\n{vias}{rt}Max-Forwards: 70\r\n"
                f"From: {from_}\r\nTo: {to}\r\nCall-ID: {callid}\r\n"
                f"CSeq: {cseq} {method}\r\n{ct}{extra}"
                f"Content-Length: 0\r\n\r\n")
        self.send(text, to_proxy)
        return b


@pytest.fixture
def call_setup(server):
    port = free_port()
    caller, callee = UA("caller"), UA("callee")
    caller.behind = ["10.1.1.1", "10.2.2.2"]
    try:
        server.start(SCRIPT.format(port=port, callee=callee.port))
        yield server, port, caller, callee
    finally:
        caller.close()
        callee.close()


def only_proxy(msg, proxy_port, hidden_ua):
    """nothing of the other side's addresses in the message"""
    for a in [hidden_ua.addr] + hidden_ua.behind:
        assert a not in msg[2], (a, msg[2])


def proxy_contact(msg, proxy_port, user=None):
    ct = h1(msg, "contact")
    u = f"{user}@" if user else ""
    m = re.fullmatch(rf"<sip:{u}127\.0\.0\.1:{proxy_port};thinfo=([A-Za-z0-9_-]+)"
                     r"(;[^>]*)?>(;.*)?", ct)
    assert m, ct
    return ct[1:ct.index(">")]


def invite(caller, proxy, user, callid):
    """the caller's INVITE, behind a proxy of its own (two Vias, one
    Record-Route naming the caller's own socket)"""
    caller.request(
        "INVITE", f"sip:{user}@example.com", proxy, callid,
        "<sip:alice@example.com>;tag=al1", f"<sip:{user}@example.com>", 1,
        contact=f"<sip:alice@{caller.addr};pass-me=1;drop-me=2>"
                ";+sip.instance=\"<urn:x>\";drop-hp=1",
        extra_vias=["SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-upstream"],
        extra=f"Record-Route: <sip:{caller.addr};lr;side=caller>\r\n"
              f"Record-Route: <sip:10.2.2.2;lr>\r\n")


def test_call_both_ways_sees_only_the_proxy(call_setup):
    server, port, caller, callee = call_setup
    proxy = ("127.0.0.1", port)
    callid = "cid-1@caller-host"
    invite(caller, proxy, "bob", callid)

    # ---- the INVITE at the callee: one Via (ours), no Record-Route, our
    # Contact with the user kept and the passed params only
    inv, src = callee.recv("INVITE")
    assert src == proxy
    assert hv(inv, "via") and len(hv(inv, "via")) == 1
    assert hv(inv, "via")[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{port};")
    assert hv(inv, "record-route") == []
    assert hv(inv, "route") == []
    ct_for_callee = proxy_contact(inv, port, "alice")
    assert ";pass-me=1" in ct_for_callee and "drop-me" not in ct_for_callee
    assert h1(inv, "contact").endswith(';+sip.instance="<urn:x>"')
    assert "drop-hp" not in inv[2]
    only_proxy(inv, port, caller)
    assert h1(inv, "call-id") == callid

    # ---- 180 and 200 with the callee's own proxy's Record-Route
    rr = f"Record-Route: <sip:{callee.addr};lr;side=callee>\r\n"
    callee.reply(inv, 180, "Ringing", "bb1",
                 contact=f"<sip:bob@{callee.addr}>", extra=rr)
    r180, _ = caller.recv("180")
    callee.reply(inv, 200, "OK", "bb1", contact=f"<sip:bob@{callee.addr}>",
                 extra=rr)
    ok, _ = caller.recv("200 OK")
    for r in (r180, ok):
        assert hv(r, "via") == [
            hv(r, "via")[0], "SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-upstream"]
        assert hv(r, "via")[0].startswith(f"SIP/2.0/UDP {caller.addr};")
        assert hv(r, "record-route") == []
        only_proxy(r, port, callee)
    ct_for_caller = proxy_contact(ok, port, "bob")
    to = h1(ok, "to")

    # ---- ACK from the caller: to the proxy's Contact, no Route set
    caller.request("ACK", ct_for_caller, proxy, callid,
                   "<sip:alice@example.com>;tag=al1", to, 1)
    ack, _ = callee.recv("ACK")
    assert ack[0] == f"ACK sip:bob@{callee.addr} SIP/2.0"
    assert hv(ack, "route") == [f"<sip:{callee.addr};lr;side=callee>"]
    assert len(hv(ack, "via")) == 1
    only_proxy(ack, port, caller)

    # ---- re-INVITE from the caller, with a new Contact
    caller.request("INVITE", ct_for_caller, proxy, callid,
                   "<sip:alice@example.com>;tag=al1", to, 2,
                   contact=f"<sip:alice2@{caller.addr}>")
    rinv, _ = callee.recv("INVITE")
    assert rinv[0] == f"INVITE sip:bob@{callee.addr} SIP/2.0"
    assert hv(rinv, "route") == [f"<sip:{callee.addr};lr;side=callee>"]
    assert len(hv(rinv, "via")) == 1
    proxy_contact(rinv, port, "alice2")
    only_proxy(rinv, port, caller)
    callee.reply(rinv, 200, "OK", "bb1", contact=f"<sip:bob@{callee.addr}>")
    rok, _ = caller.recv("200 OK")
    assert len(hv(rok, "via")) == 1
    assert hv(rok, "via")[0].startswith(f"SIP/2.0/UDP {caller.addr};")
    ct_for_caller = proxy_contact(rok, port, "bob")
    only_proxy(rok, port, callee)
    caller.request("ACK", ct_for_caller, proxy, callid,
                   "<sip:alice@example.com>;tag=al1", to, 2)
    ack2, _ = callee.recv("ACK")
    assert ack2[0] == f"ACK sip:bob@{callee.addr} SIP/2.0"

    # ---- re-INVITE from the callee, to its remote target: the Contact of
    # the caller's re-INVITE; the caller's route set was not in that
    # re-INVITE (no Record-Route) but comes from the token
    ct_for_callee = proxy_contact(rinv, port, "alice2")
    callee.request("INVITE", ct_for_callee, proxy, callid, to,
                   "<sip:alice@example.com>;tag=al1", 1,
                   contact=f"<sip:bob3@{callee.addr}>")
    cinv, _ = caller.recv("INVITE")
    assert cinv[0] == f"INVITE sip:alice2@{caller.addr} SIP/2.0"
    assert hv(cinv, "route") == [f"<sip:{caller.addr};lr;side=caller>",
                                 "<sip:10.2.2.2;lr>"]
    assert len(hv(cinv, "via")) == 1
    assert hv(cinv, "via")[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{port};")
    proxy_contact(cinv, port, "bob3")
    only_proxy(cinv, port, callee)
    caller.reply(cinv, 200, "OK", "al1", contact=f"<sip:alice2@{caller.addr}>")
    cok, _ = callee.recv("200 OK")
    assert len(hv(cok, "via")) == 1
    assert hv(cok, "via")[0].startswith(f"SIP/2.0/UDP {callee.addr};")
    assert hv(cok, "record-route") == []
    ct_for_callee = proxy_contact(cok, port, "alice2")
    only_proxy(cok, port, caller)
    callee.request("ACK", ct_for_callee, proxy, callid, to,
                   "<sip:alice@example.com>;tag=al1", 1)
    cack, _ = caller.recv("ACK")
    assert cack[0] == f"ACK sip:alice2@{caller.addr} SIP/2.0"

    # ---- BYE from the callee
    callee.request("BYE", ct_for_callee, proxy, callid, to,
                   "<sip:alice@example.com>;tag=al1", 2)
    bye, _ = caller.recv("BYE")
    assert bye[0] == f"BYE sip:alice2@{caller.addr} SIP/2.0"
    assert hv(bye, "route") == [f"<sip:{caller.addr};lr;side=caller>",
                                "<sip:10.2.2.2;lr>"]
    only_proxy(bye, port, callee)
    caller.reply(bye, 200, "OK", "al1")
    bok, _ = callee.recv("200 OK")
    assert hv(bok, "cseq") == ["2 BYE"]
    assert hv(bok, "via")[0].startswith(f"SIP/2.0/UDP {callee.addr};")
    assert "TH matched BYE" in server.stderr()


def test_callid_hidden_and_restored_bye_from_caller(call_setup):
    server, port, caller, callee = call_setup
    proxy = ("127.0.0.1", port)
    callid = "secret-cid-2@10.1.1.1"
    invite(caller, proxy, "hidecid", callid)
    inv, _ = callee.recv("INVITE")
    hidden = h1(inv, "call-id")
    assert hidden.startswith("DLGCH_") and "10.1.1.1" not in hidden
    assert callid not in inv[2]
    callee.reply(inv, 200, "OK", "bb2", contact=f"<sip:bob@{callee.addr}>")
    ok, _ = caller.recv("200 OK")
    assert h1(ok, "call-id") == callid
    ct = proxy_contact(ok, port, "bob")
    to = h1(ok, "to")
    caller.request("ACK", ct, proxy, callid,
                   "<sip:alice@example.com>;tag=al1", to, 1)
    ack, _ = callee.recv("ACK")
    assert h1(ack, "call-id") == hidden
    # the callee's side: a re-INVITE carries the hidden Call-ID, the caller
    # gets its own back
    ct_callee = proxy_contact(inv, port, "alice")
    callee.request("INVITE", ct_callee, proxy, hidden, to,
                   "<sip:alice@example.com>;tag=al1", 1,
                   contact=f"<sip:bob@{callee.addr}>")
    cinv, _ = caller.recv("INVITE")
    assert h1(cinv, "call-id") == callid
    caller.reply(cinv, 200, "OK", "al1", contact=f"<sip:alice@{caller.addr}>")
    cok, _ = callee.recv("200 OK")
    assert h1(cok, "call-id") == hidden
    ct_callee = proxy_contact(cok, port, "alice")
    callee.request("ACK", ct_callee, proxy, hidden, to,
                   "<sip:alice@example.com>;tag=al1", 1)
    assert h1(caller.recv("ACK")[0], "call-id") == callid
    # BYE from the caller
    caller.request("BYE", ct, proxy, callid,
                   "<sip:alice@example.com>;tag=al1", to, 2)
    bye, _ = callee.recv("BYE")
    assert h1(bye, "call-id") == hidden
    assert bye[0] == f"BYE sip:bob@{callee.addr} SIP/2.0"
    callee.reply(bye, 200, "OK", "bb2")
    bok, _ = caller.recv("200 OK")
    assert h1(bok, "call-id") == callid
    assert f"callee_ci={hidden}" in server.stderr()


def test_without_u_flag_the_contact_has_no_user(call_setup):
    server, port, caller, callee = call_setup
    proxy = ("127.0.0.1", port)
    invite(caller, proxy, "nouser", "cid-3")
    inv, _ = callee.recv("INVITE")
    proxy_contact(inv, port, None)
    callee.reply(inv, 486, "Busy Here", "bb3")
    busy, _ = caller.recv("486")
    assert hv(busy, "via")[0].startswith(f"SIP/2.0/UDP {caller.addr};")
    assert len(hv(busy, "via")) == 2
    # the hop-by-hop ACK of the 486 is absorbed by tm
    caller.request("ACK", "sip:nouser@example.com", proxy, "cid-3",
                   "<sip:alice@example.com>;tag=al1", h1(busy, "to"), 1)


def tamper(token: str) -> str:
    i = len(token) // 2
    c = "A" if token[i] != "A" else "B"
    return token[:i] + c + token[i + 1:]


def test_tampered_contact_is_refused(call_setup):
    server, port, caller, callee = call_setup
    proxy = ("127.0.0.1", port)
    invite(caller, proxy, "bob", "cid-4")
    inv, _ = callee.recv("INVITE")
    callee.reply(inv, 200, "OK", "bb4", contact=f"<sip:bob@{callee.addr}>")
    ok, _ = caller.recv("200 OK")
    ct = proxy_contact(inv, port, "alice")
    to = h1(ok, "to")
    tok = re.search(r"thinfo=([A-Za-z0-9_-]+)", ct).group(1)
    for bad in (ct.replace(tok, tamper(tok)), ct.replace(tok, tok[:-3]),
                ct.replace(tok, "!!notbase64"), ct.replace(tok, "")):
        callee.request("BYE", bad, proxy, "cid-4", to,
                       "<sip:alice@example.com>;tag=al1", 2)
        r, _ = callee.recv("SIP/2.0")
        assert r[0] == "SIP/2.0 404 Not here", (bad, r[0])
    err = server.stderr()
    assert err.count("topology_hiding: refused BYE from "
                     f"127.0.0.1:{callee.port}") >= 3
    # the caller got nothing of it; the real token still works
    callee.request("BYE", ct, proxy, "cid-4", to,
                   "<sip:alice@example.com>;tag=al1", 3)
    bye, _ = caller.recv("BYE")
    assert bye[0] == f"BYE sip:alice@{caller.addr};pass-me=1;drop-me=2 SIP/2.0"
    assert server.proc.poll() is None


def test_encoding_parameters(server):
    """th_contact_encode_scheme base32, another th_contact_encode_param
    name and th_callid_prefix: the tokens and Call-IDs the peers see
    follow them, and the call still routes."""
    port = free_port()
    caller, callee = UA("caller"), UA("callee")
    try:
        script = SCRIPT.format(port=port, callee=callee.port).replace(
            'modparam("topology_hiding", "th_passed_contact_uri_params"',
            'modparam("topology_hiding", "th_contact_encode_scheme", '
            '"base32")\n'
            'modparam("topology_hiding", "th_contact_encode_param", "osyth")\n'
            'modparam("topology_hiding", "th_callid_prefix", "HID-")\n'
            'modparam("topology_hiding", "th_passed_contact_uri_params"')
        server.start(script)
        proxy = ("127.0.0.1", port)
        invite(caller, proxy, "hidecid", "cid-5")
        inv, _ = callee.recv("INVITE")
        ct = h1(inv, "contact")
        assert re.fullmatch(rf"<sip:alice@127\.0\.0\.1:{port};osyth=[a-z2-7]+"
                            r";pass-me=1>.*", ct), ct
        assert "thinfo" not in inv[2]
        hidden = h1(inv, "call-id")
        assert hidden.startswith("HID-")
        callee.reply(inv, 200, "OK", "bb5", contact=f"<sip:bob@{callee.addr}>")
        ok, _ = caller.recv("200 OK")
        assert h1(ok, "call-id") == "cid-5"
        to = h1(ok, "to")
        ours = ct[1:ct.index(">")]
        callee.request("BYE", ours, proxy, hidden, to,
                       "<sip:alice@example.com>;tag=al1", 2)
        bye, _ = caller.recv("BYE")
        assert h1(bye, "call-id") == "cid-5"
        caller.reply(bye, 200, "OK", "al1")
        assert h1(callee.recv("200 OK")[0], "call-id") == hidden
    finally:
        caller.close()
        callee.close()


def test_cancel_and_487_through_the_hiding(call_setup):
    """A CANCEL goes out of tm from the hidden INVITE (only our Via), the
    stored 487 comes back to the caller with its own Vias and without the
    callee's Record-Route."""
    server, port, caller, callee = call_setup
    proxy = ("127.0.0.1", port)
    invite(caller, proxy, "bob", "cid-6")
    inv, _ = callee.recv("INVITE")
    rr = f"Record-Route: <sip:{callee.addr};lr>\r\n"
    callee.reply(inv, 180, "Ringing", "bb6", contact=f"<sip:bob@{callee.addr}>",
                 extra=rr)
    caller.recv("180")
    top = f"SIP/2.0/UDP {caller.addr};branch=z9hG4bK-caller-1-"
    first_via = [v for v in hv(inv, "via")]
    assert len(first_via) == 1
    # the CANCEL carries the INVITE's top Via (the caller's branch)
    text = (f"CANCEL sip:bob@example.com SIP/2.0\r\n"
            f"Via: {caller.last_invite_via}\r\n"
            f"Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-upstream\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=al1\r\n"
            f"To: <sip:bob@example.com>\r\nCall-ID: cid-6\r\n"
            f"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n")
    assert caller.last_invite_via.startswith(top)
    caller.send(text, proxy)
    assert caller.recv("200")[0][0].startswith("SIP/2.0 200")
    cancel, _ = callee.recv("CANCEL")
    assert hv(cancel, "via") == first_via
    only_proxy(cancel, port, caller)
    callee.reply(cancel, 200, "OK", "bb6")
    callee.reply(inv, 487, "Request Terminated", "bb6", extra=rr)
    r487, _ = caller.recv("487")
    assert hv(r487, "via") == [caller.last_invite_via,
                               "SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-upstream"]
    assert hv(r487, "record-route") == []
    only_proxy(r487, port, callee)
    ack, _ = callee.recv("ACK")           # tm's hop-by-hop ACK
    assert hv(ack, "via") == first_via


def test_a_contact_that_cannot_be_hidden_does_not_leak(call_setup):
    """Two Contacts in a 200: the reply still reaches the caller with its
    Vias, but without the callee's Contacts (an error logged)."""
    server, port, caller, callee = call_setup
    proxy = ("127.0.0.1", port)
    invite(caller, proxy, "bob", "cid-7")
    inv, _ = callee.recv("INVITE")
    callee.reply(inv, 200, "OK", "bb7",
                 contact=f"<sip:bob@{callee.addr}>, <sip:bob2@{callee.addr}>")
    ok, _ = caller.recv("200 OK")
    assert hv(ok, "contact") == []
    assert len(hv(ok, "via")) == 2
    only_proxy(ok, port, callee)
    assert "the Contact of the 200 reply cannot be hidden" in server.stderr()


SERIAL = """
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "topology_hiding.so"
route {{
    if (has_totag()) {{
        if (topology_hiding_match()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans())
                t_relay();
            exit;
        }}
        sl_send_reply(404, "Not here");
        exit;
    }}
    topology_hiding("U");
    t_on_failure("next");
    $du = "sip:127.0.0.1:{first}";
    t_relay();
}}
failure_route[next] {{
    if (t_check_status("486")) {{
        {again}
        $du = "sip:127.0.0.1:{second}";
        t_relay();
    }}
}}
"""


@pytest.mark.parametrize("again", ['topology_hiding("U");', ""])
def test_serial_forking_from_failure_route(server, again):
    """The request a failure_route relays again keeps the changes made
    before the first t_relay (as OpenSIPS's faked request): the second
    callee sees no Via of the caller's whether or not the script calls
    topology_hiding() again there (a second call does nothing), and the
    replies are changed once (the callback is not armed twice)."""
    port = free_port()
    caller, busy, callee = UA("caller"), UA("busy"), UA("callee")
    caller.behind = ["10.1.1.1", "10.2.2.2"]
    try:
        server.start(SERIAL.format(port=port, first=busy.port,
                                   second=callee.port,
                                   again=again))
        proxy = ("127.0.0.1", port)
        invite(caller, proxy, "bob", "cid-8")
        inv1, _ = busy.recv("INVITE")
        busy.reply(inv1, 486, "Busy Here", "bz")
        inv, _ = callee.recv("INVITE")
        assert len(hv(inv, "via")) == 1 and hv(inv, "record-route") == []
        proxy_contact(inv, port, "alice")
        only_proxy(inv, port, caller)
        callee.reply(inv, 200, "OK", "bb8", contact=f"<sip:bob@{callee.addr}>")
        ok, _ = caller.recv("200 OK")
        assert hv(ok, "via") == [caller.last_invite_via,
                                 "SIP/2.0/UDP 10.1.1.1:5060;"
                                 "branch=z9hG4bK-upstream"]
        ct = proxy_contact(ok, port, "bob")
        only_proxy(ok, port, callee)
        caller.request("BYE", ct, proxy, "cid-8",
                       "<sip:alice@example.com>;tag=al1", h1(ok, "to"), 2)
        bye, _ = callee.recv("BYE")
        assert bye[0] == f"BYE sip:bob@{callee.addr} SIP/2.0"
        assert "topology_hiding: cannot" not in server.stderr()
    finally:
        for ua in (caller, busy, callee):
            ua.close()
