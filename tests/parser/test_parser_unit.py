"""Unit tests of the parser API on hand-written messages."""
import pytest

from opensipy.parser import (SipMsg, ParseError, parse_uri, UriError, unescape, hdr_type,
                             frame_length, method_name, SIP_URI_T, SIPS_URI_T, TEL_URI_T,
                             OTHER_URI_T, HDR_VIA_T, HDR_CONTACT_T, HDR_OTHER_T,
                             HDR_CALLID_T, HDR_SUPPORTED_T, HDR_EVENT_T, HDR_ALLOWEVENTS_T,
                             HDR_REFER_TO_T, HDR_SESSION_EXPIRES_T, HDR_IDENTITY_T,
                             HDR_ACCEPTCONTACT_T, HDR_REFERREDBY_T, HDR_REJECTCONTACT_T,
                             HDR_REQUESTDISPOSITION_T, HDR_IDENTITY_INFO_T,
                             HDR_CONTENTENCODING_T, HDR_SUBJECT_T, HDR_PATH_T,
                             METHOD_INVITE, METHOD_ACK, METHOD_BYE, METHOD_CANCEL,
                             METHOD_REGISTER, METHOD_OPTIONS, METHOD_OTHER, METHOD_PUBLISH,
                             ReceiveInfo)
from opensipy.parser._core import lib


def req(headers=b"", method=b"INVITE", ruri=b"sip:bob@example.com", body=b"",
        cl=True, extra_first=b""):
    base = (method + b" " + ruri + b" SIP/2.0\r\n" + extra_first +
            b"Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
            b"From: <sip:a@example.com>;tag=f1\r\n"
            b"To: <sip:b@example.com>\r\n"
            b"Call-ID: cid\r\n"
            b"CSeq: 7 " + method + b"\r\n" + headers)
    if cl:
        base += b"Content-Length: %d\r\n" % len(body)
    return base + b"\r\n" + body


# ---------------------------------------------------------------- URIs

@pytest.mark.parametrize("text,fields", [
    ("sip:alice@atlanta.com", dict(type=SIP_URI_T, user="alice", host="atlanta.com", port=0)),
    ("SIPS:alice:secretword@atlanta.com:5061;transport=tcp",
     dict(type=SIPS_URI_T, scheme="sips", user="alice", passwd="secretword", port=5061,
          transport="tcp")),
    ("sip:+1-212-555-1212:1234@gateway.com;user=phone",
     dict(user="+1-212-555-1212", passwd="1234", user_param="phone")),
    ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
     dict(user=None, host="atlanta.com", method="REGISTER", headers="to=alice%40atlanta.com")),
    ("sip:alice;day=tuesday@atlanta.com", dict(user="alice;day=tuesday", params_str=None)),
    ("sip:[2001:db8::1]:5070;lr;maddr=239.255.255.1;ttl=15",
     dict(host="[2001:db8::1]", port=5070, lr=True, maddr="239.255.255.1", ttl="15")),
    ("sip:192.0.2.4", dict(host="192.0.2.4", user=None)),
    ("tel:+358-555-1234567;postd=pp22", dict(type=TEL_URI_T, user="+358-555-1234567",
                                              params_str="postd=pp22", host=None)),
    ("mailto:a@b.c", dict(type=OTHER_URI_T, scheme="mailto", opaque="a@b.c", host=None)),
    ("sip:u@h;r2=on;gr=urn:uuid:1", dict(r2="on", gr="urn:uuid:1")),
])
def test_parse_uri_fields(text, fields):
    u = parse_uri(text)
    for k, v in fields.items():
        assert getattr(u, k) == v, k
    assert str(u) == text


@pytest.mark.parametrize("bad", [
    "", "sip:", "nocolon", "sip:user@", "sip:@host", "sip:host:99999", "sip:host:5x",
    "sip:host name", "<sip:host>", "sip:2001:db8::10", "sip:[2001:db8::10", "sip:h;;x",
    "sip:h%zz", "sip:h%4", "1sip:h", "sip:[zz::1]", "tel:",
])
def test_parse_uri_rejects(bad):
    with pytest.raises(UriError):
        parse_uri(bad)


def test_uri_params_and_unescape():
    u = parse_uri("sip:%61lice@h;Transport=UDP;lr;x=%41")
    assert u.params == {"transport": "UDP", "lr": "", "x": "%41"}
    assert u.param("TRANSPORT") == "UDP" and u.param("nope") is None
    assert u.user_unescaped == "alice"
    assert unescape("a%25%34%31") == "a%41" and unescape("%zz%4") == "%zz%4"
    assert parse_uri("sip:a@h") == parse_uri(b"sip:a@h")


# ---------------------------------------------------------------- first line

def test_request_first_line():
    m = SipMsg(req())
    assert m.is_request and m.method == "INVITE" and m.method_id == METHOD_INVITE
    assert m.ruri == "sip:bob@example.com" and m.version == "SIP/2.0"
    assert m.status == 0 and m.reason is None
    assert m.parsed_uri.user == "bob"


@pytest.mark.parametrize("meth,mid", [(b"ACK", METHOD_ACK), (b"BYE", METHOD_BYE),
                                      (b"CANCEL", METHOD_CANCEL), (b"OPTIONS", METHOD_OPTIONS),
                                      (b"REGISTER", METHOD_REGISTER),
                                      (b"PUBLISH", METHOD_PUBLISH), (b"invite", METHOD_OTHER),
                                      (b"FOO", METHOD_OTHER)])
def test_method_ids(meth, mid):
    assert SipMsg(req(method=meth)).method_id == mid
    assert method_name(METHOD_INVITE) == "INVITE"


def test_reply_first_line_and_method_from_cseq():
    raw = (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
           b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: x\r\n"
           b"CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n")
    m = SipMsg(raw)
    assert not m.is_request and m.status == 180 and m.reason == "Ringing"
    assert m.method == "BYE" and m.method_id == METHOD_BYE
    assert m.ruri is None and m.parsed_uri is None


@pytest.mark.parametrize("first,code,err", [
    (b"INVITE sip:b@h SIP/2.1", 505, lib.SP_E_VERSION),
    (b"INVITE sip:b@h SIP/3.0", 505, lib.SP_E_VERSION),
    (b"INVITE sip:b@h HTTP/1.1", 400, lib.SP_E_FIRSTLINE),
    (b"INVITE sip:b@h", 400, lib.SP_E_FIRSTLINE),
    (b"INVITE  sip:b@h SIP/2.0", 400, lib.SP_E_FIRSTLINE),
    (b"INVITE sip:b@h  SIP/2.0", 400, lib.SP_E_FIRSTLINE),
    (b"INV\x01TE sip:b@h SIP/2.0", 400, lib.SP_E_FIRSTLINE),
    (b"SIP/2.0 99 Too Low", 0, lib.SP_E_STATUS),
    (b"SIP/2.0 700 Too High", 0, lib.SP_E_STATUS),
    (b"SIP/2.0 20 OK", 0, lib.SP_E_STATUS),
    (b"SIP/2.0 200OK", 0, lib.SP_E_STATUS),
    (b"SIP/3.0 200 OK", 0, lib.SP_E_VERSION),
])
def test_first_line_errors(first, code, err):
    raw = req().split(b"\r\n", 1)[1]
    with pytest.raises(ParseError) as ei:
        SipMsg(first + b"\r\n" + raw)
    assert (ei.value.code, ei.value.err) == (code, err)


def test_leading_crlf_is_ignored():
    m = SipMsg(b"\r\n\r\n" + req())
    assert m.method == "INVITE"


# ---------------------------------------------------------------- headers

def test_header_names_types_and_lookup():
    m = SipMsg(req(b"X-Foo: 1\r\nx-foo: 2\r\nk: timer\r\nSupported:  100rel \r\n"
                   b"v: SIP/2.0/TCP second.example.com\r\n"))
    assert m.hdr("X-FOO") == "1" and m.hdrs("x-Foo") == ["1", "2"]
    assert m.hdrs("Supported") == ["timer", "100rel"] == m.supported
    assert m.hdrs("k") == ["timer", "100rel"]
    assert m.hdr("X-Bar") is None and m.hdrs("X-Bar") == []
    assert [v.host for v in m.via] == ["h.example.com", "second.example.com"]
    assert m.headers[-2].type == HDR_VIA_T and m.headers[-2].name == "v"
    assert m.n_headers == len(m.headers) == 11


@pytest.mark.parametrize("name,t", [
    ("i", HDR_CALLID_T), ("m", HDR_CONTACT_T), ("k", HDR_SUPPORTED_T), ("o", HDR_EVENT_T),
    ("u", HDR_ALLOWEVENTS_T), ("r", HDR_REFER_TO_T), ("x", HDR_SESSION_EXPIRES_T),
    ("y", HDR_IDENTITY_T), ("a", HDR_ACCEPTCONTACT_T), ("b", HDR_REFERREDBY_T),
    ("j", HDR_REJECTCONTACT_T), ("d", HDR_REQUESTDISPOSITION_T), ("n", HDR_IDENTITY_INFO_T),
    ("e", HDR_CONTENTENCODING_T), ("s", HDR_SUBJECT_T), ("PATH", HDR_PATH_T),
    ("X-Whatever", HDR_OTHER_T), ("Via", HDR_VIA_T), ("vIA", HDR_VIA_T),
])
def test_hdr_type_table(name, t):
    assert hdr_type(name) == t


def test_folding_and_lws():
    m = SipMsg(req(b"Subject: first\r\n  second\r\n\tthird\r\nX-E:\r\n"))
    assert m.hdr("subject") == "first second third"
    assert m.hdr("X-E") == ""


@pytest.mark.parametrize("hdrs,err", [
    (b"Bad Header: x\r\n", lib.SP_E_HDRNAME),
    (b"NoColon\r\n", lib.SP_E_HDRNAME),
    (b"Max-Forwards: 7x\r\n", lib.SP_E_MAXFWD),
    (b"Max-Forwards: 1\r\nMax-Forwards: 2\r\n", lib.SP_E_DUP),
    (b"Contact: *\r\nContact: <sip:a@b>\r\n", lib.SP_E_NAMEADDR),
    (b"Contact: <sip:a@b>,\r\n", lib.SP_E_NAMEADDR),
    (b"Contact: <sip:a@b>;expires=\r\n", lib.SP_E_NAMEADDR),
    (b"Date: Mon, 01 Jan 2010 16:00:00 GMT\r\n" b"Date: whenever\r\n", lib.SP_E_DATE),
    (b"Content-Length: 1\r\nl: 1\r\n", lib.SP_E_DUP),
])
def test_header_errors(hdrs, err):
    with pytest.raises(ParseError) as ei:
        SipMsg(req(hdrs, cl=False))
    assert (ei.value.code, ei.value.err) == (400, err)


def test_continuation_line_without_a_header():
    with pytest.raises(ParseError) as ei:
        SipMsg(req(extra_first=b" leading-space: x\r\n"))
    assert (ei.value.code, ei.value.err) == (400, lib.SP_E_HDRNAME)
    # after a header the same line is folding: it belongs to that header
    m = SipMsg(req(b"Subject: a\r\n leading-space: x\r\n"))
    assert m.hdr("Subject") == "a leading-space: x"


def test_limits_are_errors_not_truncation():
    many = b"".join(b"X-%d: v\r\n" % i for i in range(lib.SP_MAX_HDRS))
    with pytest.raises(ParseError) as ei:
        SipMsg(req(many))
    assert ei.value.err == lib.SP_E_TOOMANY
    vias = b"".join(b"Via: SIP/2.0/UDP h%d;branch=z9hG4bK%d\r\n" % (i, i)
                    for i in range(lib.SP_MAX_VIAS))
    with pytest.raises(ParseError) as ei:
        SipMsg(req(vias))
    assert ei.value.err == lib.SP_E_TOOMANY
    ok = b"".join(b"Via: SIP/2.0/UDP h%d;branch=z9hG4bK%d\r\n" % (i, i)
                  for i in range(lib.SP_MAX_VIAS - 1))
    assert len(SipMsg(req(ok)).via) == lib.SP_MAX_VIAS


def test_check_false_parses_bodies_on_demand():
    raw = req(b"Contact: <sip:c@h>;expires=30, \"X\" <sip:d@h>;q=0.5\r\n")
    m = SipMsg(raw, check=False)
    assert m.via[0].branch == "z9hG4bK1"
    assert m.from_.tag == "f1" and m.to.tag is None
    assert [c.uri for c in m.contacts] == ["sip:c@h", "sip:d@h"]
    assert m.contacts[0].expires == 30 and m.contacts[1].q == "0.5"
    assert m.cseq.num == 7 and m.parsed_uri.user == "bob"
    bad = SipMsg(req(b"Contact: <sip:c@h>;;\r\n"), check=False)
    with pytest.raises(ParseError):
        bad.contacts


# ---------------------------------------------------------------- bodies of headers

def test_via_fields():
    m = SipMsg(req(b"Via: SIP / 2.0 / tcp  [2001:db8::1] : 5061 ;rport;received=192.0.2.1;"
                   b"maddr=224.2.0.1;ttl=16;x=\"q v\", SIP/2.0/TLS h2;rport=5060;branch=b2\r\n"))
    v = m.via[1]
    assert (v.proto, v.version, v.transport, v.host, v.port) == \
        ("SIP", "2.0", "TCP", "[2001:db8::1]", 5061)
    assert v.rport == "" and v.received == "192.0.2.1" and v.branch is None
    assert v.maddr == "224.2.0.1" and v.ttl == "16"
    assert v.params == {"rport": "", "received": "192.0.2.1", "maddr": "224.2.0.1",
                        "ttl": "16", "x": "q v"}
    assert m.via[2].rport == "5060" and m.via[2].branch == "b2"
    assert m.via[2].text == "SIP/2.0/TLS h2;rport=5060;branch=b2"
    fresh = SipMsg(m.raw)
    assert fresh.via1.text == m.via[0].text == "SIP/2.0/UDP h.example.com;branch=z9hG4bK1"
    assert SipMsg(m.raw, check=False).via1.branch == "z9hG4bK1"


def test_contacts_star_expires_q():
    m = SipMsg(req(b"Contact: *\r\nExpires: 0\r\n", method=b"REGISTER"))
    assert m.contact_star and m.contacts[0].star and m.expires == 0
    m = SipMsg(req(b"m: \"A, B\" <sip:a@h>;expires=99999999999;q=1, sip:b@h;q=0.1\r\n"
                   b"Expires: 99999999999\r\n"))
    a, b = m.contacts
    assert a.display == "A, B" and a.expires == 0xFFFFFFFF and a.q == "1"
    assert b.uri == "sip:b@h" and b.q == "0.1" and not b.bracket
    assert m.expires is None


def test_a_star_display_name_is_not_the_star_contact():
    # found by the hypothesis property: "*" is a token, so "* <sip:x>" is a
    # name-addr whose display name is "*"; only a lone "*" is the star
    m = SipMsg(req(b"Contact: * <sip:a@h>\r\n"))
    assert not m.contact_star and m.contacts[0].display == "*"
    assert m.contacts[0].uri == "sip:a@h"
    m = SipMsg(req(b"Contact:  *  \r\nExpires: 0\r\n", method=b"REGISTER"))
    assert m.contact_star


def test_route_record_route_path():
    m = SipMsg(req(b"Route: <sip:p1;lr>, <sip:p2;lr>\r\nRoute: <sip:p3>\r\n"
                   b"Record-Route: <sip:rr;lr;ftag=x>\r\nPath: <sip:pa;lr>\r\n"))
    assert [r.parsed_uri.host for r in m.route] == ["p1", "p2", "p3"]
    assert [r.parsed_uri.lr for r in m.route] == [True, True, False]
    assert m.record_route[0].parsed_uri.param("ftag") == "x"
    assert m.path[0].uri == "sip:pa;lr"


def test_authorization_digest():
    m = SipMsg(req(b'Authorization: Digest username="bob", realm="biloxi.com",\r\n'
                   b' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.com",'
                   b' qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae4",'
                   b' opaque="5ccc069c403ebaf9f0171e9517f40e41", algorithm=MD5\r\n'
                   b'WWW-Authenticate: Digest realm="r\\"q", nonce="n", stale=TRUE\r\n'))
    (a,) = m.authorization
    assert a.scheme == "Digest" and a.username == "bob" and a.realm == "biloxi.com"
    assert a.uri == "sip:bob@biloxi.com" and a.qop == "auth" and a.nc == "00000001"
    assert a.cnonce == "0a4f113b" and a.algorithm == "MD5" and a.response == "6629fae4"
    assert m.proxy_authorization == []
    (w,) = m.www_authenticate
    assert w.realm == 'r"q' and w.stale == "TRUE"


def test_require_allow_event_content_type_date():
    m = SipMsg(req(b"Require: 100rel\r\nProxy-Require: foo, bar\r\n"
                   b"Allow: INVITE, ACK,BYE\r\nEvent: presence;id=7\r\n"
                   b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nContent-Type: text/plain\r\n",
                   body=b"hi"))
    assert m.require == ["100rel"] and m.allow == ["INVITE", "ACK", "BYE"]
    assert m.unsupported_proxy_require(["FOO"]) == ["bar"]
    assert m.unsupported_require(["100rel"]) == []
    assert m.event == ("presence", {"id": "7"})
    assert m.date == "Sat, 13 Nov 2010 23:29:00 GMT"
    assert m.content_type == "text/plain" and m.body == b"hi"


# ---------------------------------------------------------------- framing

def test_udp_and_stream_framing():
    raw = req(body=b"hello")
    assert SipMsg(raw + b"junk").body == b"hello"
    assert SipMsg(raw, stream=True).msg_len == len(raw)
    with pytest.raises(ParseError) as ei:
        SipMsg(raw[:-1], stream=True)
    assert ei.value.err == lib.SP_E_NEEDMORE
    with pytest.raises(ParseError) as ei:
        SipMsg(raw[:-1])
    assert (ei.value.code, ei.value.err) == (400, lib.SP_E_BODY)
    nocl = req(body=b"xyz", cl=False)
    assert SipMsg(nocl).body == b"xyz" and SipMsg(nocl).content_length is None
    with pytest.raises(ParseError) as ei:
        SipMsg(nocl, stream=True)
    assert ei.value.err == lib.SP_E_NOCLEN
    assert frame_length(raw[:10]) == 0
    with pytest.raises(ParseError):
        frame_length(nocl)


def test_truncated_headers():
    raw = req()
    with pytest.raises(ParseError) as ei:
        SipMsg(raw[:40])
    assert (ei.value.code, ei.value.err) == (400, lib.SP_E_TRUNC)


def test_per_message_attributes():
    m = SipMsg(req())
    assert (m.new_uri, m.dst_uri, m.flags, m.rcv, m.force_send_socket) == \
        (None, None, 0, None, None)
    m.flags |= 4
    m.dst_uri = "sip:10.0.0.1"
    m.rcv = ReceiveInfo("192.0.2.1", 5060, "192.0.2.2", 5060, "udp")
    m.avps = {}
    assert m.flags == 4 and m.rcv.src_port == 5060
    assert SipMsg(req()).flags == 0


def test_bytes_like_input_and_non_ascii():
    m = SipMsg(bytearray(req(b"Subject: caf\xc3\xa9\r\nX-Bin: \xff\r\n")))
    assert m.hdr("Subject") == "café"
    assert m.hdr("X-Bin").encode("utf-8", "surrogateescape") == b"\xff"
    assert m.via[0].branch == "z9hG4bK1"


@pytest.mark.parametrize("via,ruri,plain", [
    ("1.2.3.4:5070;branch=z9hG4bK1", "sip:a@b:5060", True),
    ("1.2.3.4;branch=z9hG4bK1", "sip:a@b", True),
    ("1.2.3.4:5070;rport;branch=z9hG4bK1", "sip:a@b", True),
    ("1.2.3.4:0;branch=z9hG4bK1", "sip:a@b", False),         # explicit 0
    ("1.2.3.4:5070;rport=5071;branch=z9hG4bK1", "sip:a@b", False),
    ("1.2.3.4:5070;branch=z9hG4bK1", "sip:a@b:0", False),
])
def test_plain_ports_is_the_fast_yes_of_the_port_checks(via, ruri, plain):
    """SipMsg.plain_ports: True only when no port needs a closer look;
    the receive path's full checks agree whenever it says True."""
    from opensipy import forward
    m = SipMsg((f"OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via}\r\n"
                "From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: c\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode())
    assert m.plain_ports() is plain
    if plain:
        assert forward.via_port_error(m.via1) is None
        assert forward.uri_port_error(m.parsed_uri) is None
    reply = SipMsg(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                   b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\n"
                   b"Call-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    assert reply.plain_ports() is False
