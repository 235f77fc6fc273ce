"""Ports read from a message (Via sent-by, rport, URIs) must be 1..65535:
a request naming another is answered 400 and counted, a reply whose next
hop names one is dropped and counted, and none reaches the resolver (which
would wrap 70000 to 4464 or raise on "abc")."""
import socket

import pytest

from opensipy import config, forward, modloader, receive, shm, statistics
from opensipy.net import udp
from opensipy.parser import SipMsg

from server import free_port


@pytest.fixture
def path(monkeypatch):
    """receive_msg over a real socket; the script forwards to a sink; every
    getaddrinfo call is recorded."""
    from opensipy import script
    from opensipy.core_cmds import core_exports
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    if statistics.get_stat("core:rcv_requests") is None:
        statistics.register_core_stats()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2)
    config.reset()
    config.settings.set("socket", f"udp:127.0.0.1:{free_port()}")
    si = config.settings.sockets[0]
    udp.open_udp(si)
    reg = modloader.Registry()
    reg.add(modloader.LoadedModule("core", core_exports))
    s = script.parse_string(
        f'route {{ forward("127.0.0.1:{sink.getsockname()[1]}"); }}')
    receive.child_start(2, script.compile_script(s, reg), reg)
    calls = []
    from opensipy import resolve
    real_sip, real_reply = resolve.sip_resolve, resolve.reply_targets

    def spy_sip(host, port=None, *a, **kw):
        calls.append((host, port))
        return real_sip(host, port, *a, **kw)

    def spy_reply(host, port, *a, **kw):
        calls.append((host, port))
        return real_reply(host, port, *a, **kw)
    # every resolution the forwarding code asks for goes through these
    monkeypatch.setattr(resolve, "sip_resolve", spy_sip)
    monkeypatch.setattr(resolve, "reply_targets", spy_reply)
    resolve._sip_cache.clear()
    yield si, sink, peer, calls
    si.sock.close()
    sink.close()
    peer.close()
    config.reset()


def stat(name):
    return statistics.get_stat(f"core:{name}").get()


def nothing(sock, timeout=0.3):
    sock.settimeout(timeout)
    try:
        sock.recv(65535)
    except socket.timeout:
        return True
    return False


def request(peer, via_tail="", ruri="sip:bob@127.0.0.1", sent_by=None):
    port = peer.getsockname()[1]
    sent_by = sent_by or f"127.0.0.1:{port}"
    return (f"OPTIONS {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {sent_by};branch=z9hG4bKp1{via_tail}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            "To: <sip:bob@127.0.0.1>\r\n"
            "Call-ID: ports@test\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("via_tail,ruri,sent_by,counter", [
    (";rport=abc", "sip:bob@127.0.0.1", None, "bad_msg_hdr"),
    (";rport=70000", "sip:bob@127.0.0.1", None, "bad_msg_hdr"),
    (";rport=0", "sip:bob@127.0.0.1", None, "bad_msg_hdr"),
    (";rport=0000000000000000000005060", "sip:bob@127.0.0.1", None,
     "bad_msg_hdr"),
    ("", "sip:bob@127.0.0.1", "127.0.0.1:0", "bad_msg_hdr"),
    ("", "sip:bob@127.0.0.1:0", None, "bad_URIs_rcvd"),
])
def test_a_request_with_a_bad_port_gets_400_and_is_counted(
        path, via_tail, ruri, sent_by, counter):
    si, sink, peer, calls = path
    before = (stat("err_requests"), stat(counter))
    src = peer.getsockname()
    receive.receive_msg(request(peer, via_tail, ruri, sent_by), src, si)
    r = SipMsg(peer.recv(65535))           # answered to the source address
    assert r.status == 400 and "bad" in r.reason
    assert (stat("err_requests"), stat(counter)) == \
        (before[0] + 1, before[1] + 1)
    assert nothing(sink)                   # not forwarded
    assert calls == []


def test_a_good_request_still_goes_through(path):
    si, sink, peer, calls = path
    receive.receive_msg(request(peer, ";rport=5060"), peer.getsockname(), si)
    assert SipMsg(sink.recv(65535)).method == "OPTIONS"


def reply(si, next_via):
    return (f"SIP/2.0 200 OK\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{si.port};branch=z9hG4bKours\r\n"
            f"Via: SIP/2.0/UDP {next_via}\r\n"
            "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            "To: <sip:bob@127.0.0.1>;tag=b1\r\n"
            "Call-ID: ports@test\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("tail", [";rport=abc", ";rport=70000", ";rport=0",
                                  ";rport=-5", ";rport=1e3"])
def test_a_reply_with_a_bad_rport_is_dropped_and_counted(path, tail):
    si, sink, peer, calls = path
    port = peer.getsockname()[1]
    before = (stat("drop_replies"), stat("fwd_replies"))
    receive.receive_msg(
        reply(si, f"127.0.0.1:{port};branch=z9hG4bKp1;received=127.0.0.1"
                  f"{tail}"), ("127.0.0.1", 5080), si)
    assert (stat("drop_replies"), stat("fwd_replies")) == \
        (before[0] + 1, before[1])
    assert calls == []                     # never handed to the resolver
    assert nothing(peer)


def test_a_reply_to_port_0_is_dropped(path):
    si, sink, peer, calls = path
    before = stat("drop_replies")
    receive.receive_msg(reply(si, "127.0.0.1:0;branch=z9hG4bKp1"),
                        ("127.0.0.1", 5080), si)
    assert stat("drop_replies") == before + 1
    assert calls == []


def test_a_reply_with_a_good_rport_is_relayed_there(path):
    si, sink, peer, calls = path
    port = peer.getsockname()[1]
    receive.receive_msg(
        reply(si, f"127.0.0.1:9;branch=z9hG4bKp1;received=127.0.0.1"
                  f";rport={port}"), ("127.0.0.1", 5080), si)
    assert SipMsg(peer.recv(65535)).status == 200


def test_a_uri_with_port_0_cannot_be_routed_to():
    with pytest.raises(forward.ForwardError, match="port '0'"):
        forward.uri_dest("sip:bob@127.0.0.1:0")
    assert forward.uri_dest("sip:bob@127.0.0.1:65535")[2] == 65535


@pytest.mark.parametrize("text,port", [
    ("1", 1), ("65535", 65535), ("5060", 5060), ("0", 0), ("65536", 0),
    ("", 0), ("abc", 0), ("-1", 0), ("+5", 0), ("\u00b2", 0),
    ("9" * 5000, 0), ("１２", 0)])
def test_port_value(text, port):
    assert forward.port_value(text) == port
