"""The stateless core on the wire: real UDP sockets on 127.0.0.1 play the
caller and the callee, the real server sits between them."""
import socket

import pytest

from opensipy.parser import SipMsg

from server import free_port

pytestmark = pytest.mark.slow


def udp_peer():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def request(peer, proxy_port, method="OPTIONS", ruri=None, extra="",
            branch="z9hG4bKtest1", rport=False, via_host=None):
    host, port = peer.getsockname()
    ruri = ruri or f"sip:bob@127.0.0.1:{proxy_port}"
    via = f"SIP/2.0/UDP {via_host or host}:{port};branch={branch}"
    if rport:
        via += ";rport"
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: {via}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            f"To: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: c1@test\r\n"
            f"CSeq: 1 {method}\r\n"
            f"{extra}"
            f"Content-Length: 0\r\n\r\n").encode()


@pytest.fixture
def proxy(server):
    port = free_port()
    uas = udp_peer()
    uac = udp_peer()
    server.start(f"""
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
route {{
    if ($rU == "drop") {{ drop; }}
    forward("127.0.0.1:{uas.getsockname()[1]}");
}}
""")
    yield port, uac, uas
    uas.close()
    uac.close()


def test_request_is_forwarded_with_our_via_and_reply_comes_back(proxy):
    port, uac, uas = proxy
    uac.sendto(request(uac, port), ("127.0.0.1", port))
    data, src = uas.recvfrom(65535)
    fwd = SipMsg(data)
    assert fwd.method == "OPTIONS"
    assert src == ("127.0.0.1", port)
    assert len(fwd.via) == 2
    ours = fwd.via[0]
    assert (ours.host, ours.port) == ("127.0.0.1", port)
    assert ours.branch.startswith("z9hG4bK") and ours.branch != "z9hG4bKtest1"
    assert fwd.via[1].branch == "z9hG4bKtest1"
    # the callee answers to the top Via: the proxy relays to the caller
    reply = (b"SIP/2.0 200 OK\r\n"
             + b"".join(b"Via: " + v.text.encode() + b"\r\n" for v in fwd.via)
             + b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
               b"To: <sip:bob@127.0.0.1>;tag=b1\r\n"
               b"Call-ID: c1@test\r\nCSeq: 1 OPTIONS\r\n"
               b"Content-Length: 0\r\n\r\n")
    uas.sendto(reply, ("127.0.0.1", port))
    data, src = uac.recvfrom(65535)
    rep = SipMsg(data)
    assert rep.status == 200 and len(rep.via) == 1
    assert rep.via[0].branch == "z9hG4bKtest1"


def test_retransmission_gets_the_same_branch(proxy):
    port, uac, uas = proxy
    branches = set()
    for _ in range(2):
        uac.sendto(request(uac, port), ("127.0.0.1", port))
        branches.add(SipMsg(uas.recvfrom(65535)[0]).via[0].branch)
    assert len(branches) == 1
    uac.sendto(request(uac, port, branch="z9hG4bKother"), ("127.0.0.1", port))
    assert SipMsg(uas.recvfrom(65535)[0]).via[0].branch not in branches


def test_received_and_rport_are_added_to_the_senders_via(proxy):
    port, uac, uas = proxy
    uac.sendto(request(uac, port, rport=True, via_host="192.0.2.7"),
               ("127.0.0.1", port))
    sender = SipMsg(uas.recvfrom(65535)[0]).via[1]
    assert sender.received == "127.0.0.1"
    assert sender.rport == str(uac.getsockname()[1])


def test_reply_whose_top_via_is_not_ours_is_dropped(proxy):
    port, uac, uas = proxy
    reply = (b"SIP/2.0 200 OK\r\n"
             b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKx\r\n"
             b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\n"
             b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
             % uac.getsockname()[1])
    uas.sendto(reply, ("127.0.0.1", port))
    uac.settimeout(0.5)
    with pytest.raises(socket.timeout):
        uac.recvfrom(65535)


def test_drop_forwards_nothing(proxy):
    port, uac, uas = proxy
    uac.sendto(request(uac, port, ruri=f"sip:drop@127.0.0.1:{port}"),
               ("127.0.0.1", port))
    uas.settimeout(0.5)
    with pytest.raises(socket.timeout):
        uas.recvfrom(65535)


@pytest.mark.parametrize("ruri,extra,code", [
    ("tel:+15551234", "", None),           # tel: is routable: forwarded
    ("nope:bob@example.com", "", 416),
    (None, "Proxy-Require: foo, bar\r\n", 420),
])
def test_proxy_checks_answer_416_and_420(proxy, ruri, extra, code):
    port, uac, uas = proxy
    uac.sendto(request(uac, port, ruri=ruri, extra=extra),
               ("127.0.0.1", port))
    if code is None:
        assert SipMsg(uas.recvfrom(65535)[0]).method == "OPTIONS"
        return
    rep = SipMsg(uac.recvfrom(65535)[0])
    assert rep.status == code
    assert rep.to.tag
    if code == 420:
        assert rep.hdr("Unsupported").replace(" ", "") == "foo,bar"


def test_malformed_request_gets_400_and_server_goes_on(proxy):
    port, uac, uas = proxy
    bad = request(uac, port).replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
    uac.sendto(bad, ("127.0.0.1", port))
    # the reply copies the request's (bad) CSeq as it was: split it only
    rep = SipMsg(uac.recvfrom(65535)[0], check=False)
    assert rep.status == 400 and rep.callid == "c1@test"
    assert "bad CSeq" in rep.reason
    uac.sendto(request(uac, port), ("127.0.0.1", port))
    assert SipMsg(uas.recvfrom(65535)[0]).method == "OPTIONS"
