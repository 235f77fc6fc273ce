"""forward() to names on the real server: RFC 3263 through a DNS server on
127.0.0.1 named by the dns_server parameter."""
import socket

import pytest

from opensipy.parser import SipMsg

from dnsserver import FakeDNS
from server import free_port

pytestmark = pytest.mark.slow


def udp_peer():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def options(peer, ruri, callid):
    host, port = peer.getsockname()
    return (f"OPTIONS {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{callid}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: {callid}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


@pytest.fixture
def rig(server):
    uas = udp_peer()
    uac = udp_peer()
    uas_port = uas.getsockname()[1]
    dns = FakeDNS({
        # a domain whose SIP service is found by NAPTR -> SRV -> A
        ("callee.test", "NAPTR"): (60, [
            '10 10 "s" "SIP+D2U" "" _sip._udp.callee.test.']),
        ("_sip._udp.callee.test", "SRV"): (60, [
            f"10 0 {uas_port} box.callee.test."]),
        ("box.callee.test", "A"): (60, ["127.0.0.1"]),
        # one found by SRV alone
        ("_sip._udp.srvonly.test", "SRV"): (60, [
            f"10 0 {uas_port} box.callee.test."]),
    })
    dead = FakeDNS({}, silent=True)
    port = free_port()
    server.start(f"""
udp_workers=2
socket=udp:127.0.0.1:{port}
dns_server="127.0.0.1:{dns.port}"
dns_retr_time=1
dns_retr_no=1
loadmodule "proto_udp.so"
loadmodule "sl.so"
route {{
    if ($rU == "srv") {{
        $du = "sip:srvonly.test";
    }}
    if (!forward()) {{
        sl_reply_error();
        exit;
    }}
}}
""")
    yield port, uac, uas, dns, dead
    uas.close()
    uac.close()
    dns.close()
    dead.close()


def test_request_for_a_domain_goes_where_naptr_and_srv_say(rig):
    port, uac, uas, dns, _ = rig
    uac.sendto(options(uac, "sip:bob@callee.test", "n1"), ("127.0.0.1", port))
    data, _ = uas.recvfrom(65535)
    m = SipMsg(data)
    assert m.callid == "n1" and m.ruri == "sip:bob@callee.test"
    assert dns.asked("callee.test", "NAPTR")
    assert dns.asked("_sip._udp.callee.test", "SRV")
    assert dns.asked("box.callee.test", "A")


def test_du_to_a_domain_with_srv_only(rig):
    port, uac, uas, dns, _ = rig
    uac.sendto(options(uac, "sip:srv@127.0.0.1", "s1"), ("127.0.0.1", port))
    data, _ = uas.recvfrom(65535)
    assert SipMsg(data).callid == "s1"
    assert dns.asked("_sip._udp.srvonly.test", "SRV")


def test_unknown_domain_gets_an_error_reply_and_the_server_goes_on(rig):
    port, uac, uas, dns, _ = rig
    uac.sendto(options(uac, "sip:bob@nowhere.test", "x1"), ("127.0.0.1", port))
    data, _ = uac.recvfrom(65535)
    reply = SipMsg(data)
    assert reply.status >= 400 and reply.callid == "x1"
    # still serving
    uac.sendto(options(uac, "sip:bob@callee.test", "n2"), ("127.0.0.1", port))
    data, _ = uas.recvfrom(65535)
    assert SipMsg(data).callid == "n2"


def test_dead_name_server_fails_the_request_not_the_worker(server):
    uas = udp_peer()
    uac = udp_peer()
    dead = FakeDNS({}, silent=True)
    port = free_port()
    try:
        server.start(f"""
udp_workers=1
socket=udp:127.0.0.1:{port}
dns_server="127.0.0.1:{dead.port}"
dns_retr_time=1
dns_retr_no=1
loadmodule "proto_udp.so"
loadmodule "sl.so"
route {{
    if ($rU == "ip") {{
        forward("127.0.0.1:{uas.getsockname()[1]}");
        exit;
    }}
    if (!forward()) {{
        sl_reply_error();
    }}
}}
""")
        uac.sendto(options(uac, "sip:bob@slow.test", "d1"),
                   ("127.0.0.1", port))
        data, _ = uac.recvfrom(65535)
        assert SipMsg(data).status >= 400
        assert dead.asked("slow.test")          # it did ask, once per try
        assert len(dead.asked("slow.test", "NAPTR")) == 1
        # the one worker is free again and serves the next request
        uac.sendto(options(uac, "sip:ip@127.0.0.1", "d2"),
                   ("127.0.0.1", port))
        data, _ = uas.recvfrom(65535)
        assert SipMsg(data).callid == "d2"
    finally:
        uas.close()
        uac.close()
        dead.close()
