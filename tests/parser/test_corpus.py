"""Every message of ../shared/sip-corpus gives the outcome its MANIFEST row
states: valid ones parse to the values written below (read off the .dat
files by hand), invalid ones raise ParseError with the status the core
answers (400/505) or 0 (drop: malformed replies)."""
import pytest

from opensipy.parser import (SipMsg, ParseError, frame_length, unescape,
                             METHOD_INVITE, METHOD_OTHER, METHOD_REGISTER,
                             METHOD_MESSAGE, OTHER_URI_T, SIP_URI_T, HDR_VIA_T,
                             HDR_OTHER_T, HDR_CONTACT_T, HDR_CALLID_T,
                             HDR_CONTENTTYPE_T, HDR_SUBJECT_T, HDR_CONTENTLENGTH_T)
from opensipy.parser._core import lib

from sipcorpus import corpus_rows, corpus_bytes, rfc5118_wire, need_corpus, CORPUS

pytestmark = need_corpus


# ---------------------------------------------------------------- RFC 4475 valid

def c_wsinv(m, raw):
    assert m.method == "INVITE" and m.method_id == METHOD_INVITE
    assert m.ruri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.parsed_uri.user == "vivekg"
    assert m.parsed_uri.host == "chair-dnrc.example.com"
    assert m.parsed_uri.param("unknownparam") == ""
    assert m.to.uri == "sip:vivekg@chair-dnrc.example.com"
    assert m.to.tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.from_.uri == "sip:jdrosen@example.com"
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.callid == "wsinv.ndaksdj@192.0.2.1"
    assert m.content_length == 150 and len(m.body) == 150
    assert m.body.startswith(b"v=0\r\n")
    assert (m.cseq.num, m.cseq.method) == (9, "INVITE")
    assert [(v.proto, v.version, v.transport, v.host, v.branch) for v in m.via] == [
        ("SIP", "2.0", "UDP", "192.0.2.2", "390skdjuw"),
        ("SIP", "2.0", "TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("SIP", "2.0", "UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert [v.hdr_index for v in m.via] == [6, 12, 12]   # "Via  :" and the folded "v:"
    assert m.hdr("s") == "" and m.hdr("Subject") == ""
    assert [h.type for h in m.headers if h.name == "s"] == [HDR_SUBJECT_T]
    assert m.hdr("newfangledheader") == "newfangled value continued newfangled value"
    assert m.hdr("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.content_type == "application/sdp"
    r = m.route
    assert len(r) == 1
    assert r[0].uri == "sip:services.example.com;lr;unknownwith=value;unknown-no-value"
    assert r[0].parsed_uri.lr and r[0].parsed_uri.param("unknownwith") == "value"
    assert r[0].parsed_uri.param("unknown-no-value") == ""
    (c,) = m.contacts
    assert c.display == 'Quoted string ""'
    assert c.uri == "sip:jdrosen@example.com"
    assert c.params == {"newparam": "newvalue", "secondparam": "", "q": "0.33"}
    assert c.q == "0.33"
    assert [h.name for h in m.headers][:4] == ["TO", "from", "MaX-fOrWaRdS", "Call-ID"]


def c_intmeth(m, raw):
    meth = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == meth and m.method_id == METHOD_OTHER
    u = m.parsed_uri
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.passwd == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert u.host == "example.com" and u.params_str is None
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.to.parsed_uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.uri == "sip:mundane@example.com"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.param("fromParam''~+*_!.-%") == "работающий"
    assert m.callid == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert (m.cseq.num, m.cseq.method) == (139122385, meth)
    assert m.via[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert m.via[0].transport == "TCP"
    assert m.max_forwards == 255
    assert m.hdr("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.content_length == 0 and m.body == b""


def c_esc01(m, raw):
    u = m.parsed_uri
    assert u.user == "sips%3Auser%40example.com"
    assert u.user_unescaped == "sips:user@example.com"
    assert u.host == "example.net"
    assert m.to.uri == "sip:%75se%72@example.com"
    assert m.to.parsed_uri.user_unescaped == "user"
    assert m.from_.parsed_uri.user_unescaped == "I have spaces"
    assert m.from_.tag == "938"
    assert m.callid == "esc01.239409asdfakjkn23onasd0-3234"      # compact i
    assert m.content_type == "application/sdp"                     # compact C
    (c,) = m.contacts
    cu = c.parsed_uri
    assert unescape(cu.user) == "caller"
    names = {unescape(k): unescape(v) for k, v in cu.params.items()}
    assert names == {"lr": "", "name": "value%41"}     # decoded once, not twice
    assert m.content_length == 150


def c_escnull(m, raw):
    assert m.to.parsed_uri.user_unescaped == "null-\x00-null"
    assert m.from_.parsed_uri.user_unescaped == "null-\x00-null"
    a, b = m.contacts
    assert a.parsed_uri.user_unescaped == "\x00"
    assert b.parsed_uri.user_unescaped == "\x00\x00"
    assert a.parsed_uri != b.parsed_uri
    assert m.content_length == 0


def c_esc02(m, raw):
    assert m.method == "RE%47IST%45R"
    assert m.method_id == METHOD_OTHER and m.method_id != METHOD_REGISTER
    assert m.cseq.method == "RE%47IST%45R"
    assert [c.uri for c in m.contacts] == ["sip:alias1@host1.example.com",
                                           "sip:alias3@host3.example.com"]
    ext = [h for h in m.headers if h.name == "C%6Fntact"]
    assert len(ext) == 1 and ext[0].type == HDR_OTHER_T
    assert m.hdr("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.to.display == "%Z%45" and m.from_.display == "%Z%45"
    assert m.via[0].branch == "z9hG4bK209%fzsnel234"


def c_lwsdisp(m, raw):
    assert m.from_.display == "caller"
    assert m.from_.uri == "sip:caller@example.com"
    assert m.from_.tag == "323"


def c_longreq(m, raw):
    assert len(m.via) == 34
    assert {h.name for h in m.headers if h.type == HDR_VIA_T} == {"Via", "v", "V", "viA"} \
        or {h.name.lower() for h in m.headers if h.type == HDR_VIA_T} == {"via", "v"}
    assert len(m.hdrs("via")) == len([h for h in m.headers if h.type == HDR_VIA_T])
    assert m.via[0].host == "sip33.example.com" and m.via[0].transport == "TCP"
    assert m.to.display.startswith("I have a user name of extremeextreme")
    assert m.to.parsed_uri.port == 6000
    assert m.to.parsed_uri.param("unknownparam1").startswith("verylonglonglong")
    assert m.to.parsed_uri.param(
        "verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong"
        "longlonglonglonglonglonglonglongParameterNameWithNoValue") == ""
    assert m.from_.tag.startswith("12982982982982") and len(m.from_.tag) > 150
    assert m.from_.parsed_uri.user.startswith("amazinglylongcallername")
    assert m.callid.startswith("longreq.onereallyreally")
    assert m.content_length == 150 and len(m.body) == 150
    assert m.contacts[0].uri.startswith("sip:amazinglylongcallername")


def c_dblreq(m, raw):
    assert m.method == "REGISTER"
    assert m.content_length == 0 and m.body == b""
    second = raw.index(b"INVITE sip:joe@example.com")
    assert m.msg_len < second and b"INVITE" not in m.raw
    assert m.raw.endswith(b"Content-Length: 0\r\n\r\n")
    assert m.callid == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"   # compact I
    assert m.contacts[0].uri == "sip:j.user@host.example.com"
    assert b"INVITE" not in m.build()


def c_semiuri(m, raw):
    u = m.parsed_uri
    assert u.user == "user;par=u%40example.net"
    assert u.host == "example.com" and u.params_str is None and u.params == {}
    assert m.hdr("Accept") == ("application/sdp, application/pkcs7-mime, multipart/mixed, "
                               "multipart/signed, message/sip, message/sipfrag")


def c_transports(m, raw):
    assert [v.transport for v in m.via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert [v.host for v in m.via] == [f"t{i}.example.com" for i in range(1, 6)]
    assert m.via1.branch == "z9hG4bKkdjuw"


def c_mpart01(m, raw):
    assert m.method_id == METHOD_MESSAGE
    assert m.content_length == 553 and len(m.body) == 553
    assert b"\x00" in m.body
    assert m.body == raw[raw.index(b"\r\n\r\n") + 4:][:553]
    assert m.content_type == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert m.via[0].rport == "" and m.via[0].port == 5070
    assert m.route[0].parsed_uri.host == "127.0.0.1" and m.route[0].parsed_uri.port == 5080
    assert m.date == "Sat, 15 Oct 2005 04:44:56 GMT"


def c_unreason(m, raw):
    assert not m.is_request and m.status == 200
    first = raw.split(b"\r\n", 1)[0]
    assert m.reason.encode("utf-8") == first[len(b"SIP/2.0 200 "):]
    assert m.reason.startswith("= 2**3 * 5**2 но сто девяносто девять")
    assert m.method == "INVITE" and m.method_id == METHOD_INVITE    # from CSeq
    assert m.to.tag == "2229" and m.content_length == 154


def c_noreason(m, raw):
    assert not m.is_request and m.status == 100 and m.reason == ""
    assert m.to.tag == "902jndnke3" and m.from_.tag == "39ansfi3"


def c_badbranch(m, raw):
    assert m.via[0].branch == "z9hG4bK"
    assert m.via[0].host == "192.0.2.1"


def c_unkscm(m, raw):
    u = m.parsed_uri
    assert u.type == OTHER_URI_T and u.scheme == "nobodyknowsthisscheme"
    assert u.opaque == "totallyopaquecontent" and u.host is None
    assert not m.ruri_scheme_supported()            # -> 416
    assert m.to.uri == "sip:user@example.com"


def c_novelsc(m, raw):
    u = m.parsed_uri
    assert u.type == OTHER_URI_T and u.scheme == "soap.beep"
    assert u.opaque == "//192.0.2.103:3002"
    assert not m.ruri_scheme_supported()
    assert m.ruri_scheme_supported(("sip", "soap.beep"))


def c_unksm2(m, raw):
    assert m.to.uri == "isbn:2983792873" and m.to.parsed_uri.type == OTHER_URI_T
    assert m.from_.uri == "http://www.example.com" and m.from_.tag == "3234233"
    assert m.contacts[0].uri == "name:John_Smith"
    assert not m.to.parsed_uri.is_sip                # a registrar answers 400
    assert m.parsed_uri.type == SIP_URI_T


def c_bext01(m, raw):
    assert m.require == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.unsupported_proxy_require(()) == ["noProxiesSupportThis",
                                               "norDoAnyProxiesSupportThis"]
    assert m.unsupported_proxy_require(["noproxiessupportthis"]) == [
        "norDoAnyProxiesSupportThis"]
    assert m.unsupported_require(["nothingSupportsThis"]) == ["nothingSupportsThisEither"]
    assert m.via[0].transport == "TLS"


def c_invut(m, raw):
    assert m.content_type == "application/unknownformat"
    assert m.content_length == 40 and m.body.startswith(b"<audio>")


def c_regaut01(m, raw):
    (cr,) = m.authorization
    assert cr.scheme == "NoOneKnowsThisScheme"
    assert cr.params == {"opaque-data": "here"}
    assert m.content_length == 0


def c_bcast(m, raw):
    assert m.status == 200
    assert [v.host for v in m.via] == ["192.0.2.198", "255.255.255.255"]


def c_zeromf(m, raw):
    assert m.max_forwards == 0


def c_cparam01(m, raw):
    (c,) = m.contacts
    assert c.uri == "sip:+19725552222@gw1.example.net" and not c.bracket
    assert c.params == {"unknownparam": ""}
    assert c.parsed_uri.params == {}


def c_cparam02(m, raw):
    (c,) = m.contacts
    assert c.uri == "sip:+19725552222@gw1.example.net;unknownparam" and c.bracket
    assert c.params == {}
    assert c.parsed_uri.param("unknownparam") == ""


def c_regescrt(m, raw):
    assert [h.type for h in m.headers if h.name == "M"] == [HDR_CONTACT_T]
    (c,) = m.contacts
    assert c.uri == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert c.parsed_uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert unescape(c.parsed_uri.headers) == "Route=<sip:sip.example.com>"
    assert [h.type for h in m.headers if h.name == "L"] == [HDR_CONTENTLENGTH_T]


def c_sdp01(m, raw):
    assert m.hdr("accept") == "text/nobodyKnowsThis"
    assert m.content_type == "application/sdp"


def c_inv2543(m, raw):
    assert m.content_length is None
    assert m.body == raw[raw.index(b"\r\n\r\n") + 4:] and m.body.startswith(b"v=0")
    assert m.via[0].branch is None and m.via[0].host == "iftgw.example.com"
    assert m.from_.tag is None and m.max_forwards is None
    assert m.record_route[0].parsed_uri.maddr == "ss1.example.com"
    assert m.from_.parsed_uri.user_param == "phone"        # inside <>: a URI param
    assert m.to.param("user") == "phone"                    # no <>: a header param
    assert m.to.parsed_uri.user_param is None
    out = m.build()
    assert b"Content-Length: %d\r\n" % len(m.body) in out
    assert SipMsg(out, stream=True).body == m.body


# ---------------------------------------------------------------- RFC 5118 valid

def c_ipv6_good(m, raw):
    assert m.parsed_uri.host == "[2001:db8::10]" and m.parsed_uri.port == 0
    assert m.via[0].host == "[2001:db8::9:1]"
    assert m.contacts[0].parsed_uri.host == "[2001:db8::1]"
    assert m.contacts[0].display == "Caller"


def c_port_ambiguous(m, raw):
    assert m.parsed_uri.host == "[2001:db8::10:5070]" and m.parsed_uri.port == 0


def c_port_unambiguous(m, raw):
    assert m.parsed_uri.host == "[2001:db8::10]" and m.parsed_uri.port == 5070


def c_recv_delim(m, raw):
    v = m.via[0]
    assert v.received == "[2001:db8::9:255]" and v.branch == "z9hG4bKas3-111"
    assert m.to.tag == "bd76ya"


def c_recv_nodelim(m, raw):
    v = m.via[0]
    assert v.host == "[2001:db8::9:1]"
    assert v.received == "2001:db8::9:255" and v.branch == "z9hG4bKas3"


def c_ipv6_in_sdp(m, raw):
    assert m.parsed_uri.host == "[2001:db8::10]"
    assert b"c=IN IP6 2001:db8::20\r\n" in m.body
    assert m.contacts[0].parsed_uri.host == "[2001:db8::20]"


def c_mult_ip_hdr(m, raw):
    assert [(v.transport, v.host, v.port) for v in m.via] == [
        ("UDP", "[2001:db8::9:1]", 6050), ("UDP", "192.0.2.1", 0),
        ("TCP", "[2001:db8::9:255]", 0)]
    assert m.via[2].received == "192.0.2.200"


def c_mult_ip_sdp(m, raw):
    assert b"c=IN IP4 192.0.2.1\r\n" in m.body and b"c=IN IP6 2001:db8::1\r\n" in m.body
    assert m.contacts[0].parsed_uri.host == "[2001:db8::9:1]"


def c_v4mapped(m, raw):
    assert [(v.host, v.port) for v in m.via] == [("[::ffff:192.0.2.10]", 19823),
                                                 ("[::ffff:192.0.2.2]", 0)]
    (c,) = m.contacts
    assert c.display == "T. desk phone" and c.parsed_uri.host == "[::ffff:192.0.2.2]"


def c_3colons(m, raw):
    assert m.parsed_uri.host == "[2001:db8:::192.0.2.1]"
    assert m.to.parsed_uri.host == "[2001:db8:::192.0.2.1]"


def c_2colons(m, raw):
    assert m.parsed_uri.host == "[2001:db8::192.0.2.1]"
    assert m.to.parsed_uri.host == "[2001:db8::192.0.2.1]"


VALID = {
    "wsinv": c_wsinv, "intmeth": c_intmeth, "esc01": c_esc01, "escnull": c_escnull,
    "esc02": c_esc02, "lwsdisp": c_lwsdisp, "longreq": c_longreq, "dblreq": c_dblreq,
    "semiuri": c_semiuri, "transports": c_transports, "mpart01": c_mpart01,
    "unreason": c_unreason, "noreason": c_noreason, "badbranch": c_badbranch,
    "unkscm": c_unkscm, "novelsc": c_novelsc, "unksm2": c_unksm2, "bext01": c_bext01,
    "invut": c_invut, "regaut01": c_regaut01, "bcast": c_bcast, "zeromf": c_zeromf,
    "cparam01": c_cparam01, "cparam02": c_cparam02, "regescrt": c_regescrt,
    "sdp01": c_sdp01, "inv2543": c_inv2543,
    "ipv6-good": c_ipv6_good, "port-ambiguous": c_port_ambiguous,
    "port-unambiguous": c_port_unambiguous,
    "via-received-param-with-delim": c_recv_delim,
    "via-received-param-no-delim": c_recv_nodelim, "ipv6-in-sdp": c_ipv6_in_sdp,
    "mult-ip-in-header": c_mult_ip_hdr, "mult-ip-in-sdp": c_mult_ip_sdp,
    "ipv4-mapped-ipv6": c_v4mapped, "ipv6-bug-abnf-3-colons": c_3colons,
    "ipv6-correct-abnf-2-colons": c_2colons,
}

# name -> (status the core answers, C error)
INVALID = {
    "badinv01": (400, lib.SP_E_VIA),
    "clerr": (400, lib.SP_E_BODY),
    "ncl": (400, lib.SP_E_CLEN),
    "scalar02": (400, lib.SP_E_CSEQ),
    "scalarlg": (0, lib.SP_E_CSEQ),
    "quotbal": (400, lib.SP_E_NAMEADDR),
    "ltgtruri": (400, lib.SP_E_RURI),
    "lwsruri": (400, lib.SP_E_FIRSTLINE),
    "lwsstart": (400, lib.SP_E_FIRSTLINE),
    "trws": (400, lib.SP_E_FIRSTLINE),
    "escruri": (400, lib.SP_E_RURI),
    "baddate": (400, lib.SP_E_DATE),
    "regbadct": (400, lib.SP_E_NAMEADDR),
    "badaspec": (400, lib.SP_E_NAMEADDR),
    "baddn": (400, lib.SP_E_TRUNC),        # archive copy: header section unterminated
    "badvers": (505, lib.SP_E_VERSION),
    "mismatch01": (400, lib.SP_E_MISMATCH),
    "mismatch02": (400, lib.SP_E_MISMATCH),
    "bigcode": (0, lib.SP_E_STATUS),
    "insuf": (400, lib.SP_E_MISSING),
    "multi01": (400, lib.SP_E_DUP),
    "mcl01": (400, lib.SP_E_DUP),
    "test": (400, lib.SP_E_FIRSTLINE),
    "ipv6-bad": (400, lib.SP_E_RURI),
}


def _load(folder, row):
    raw = corpus_bytes(folder, row["name"], row["sha256"])
    assert len(raw) == int(row["bytes"])
    return rfc5118_wire(raw) if folder == "rfc5118" else raw


ROWS = [(f, r) for f in ("rfc4475", "rfc5118") for r in corpus_rows(f)]


def test_every_manifest_row_has_an_expectation():
    names = {r["name"] for _, r in ROWS}
    assert len(names) == 62
    assert names == set(VALID) | set(INVALID)
    for _, r in ROWS:
        assert (r["expected"] == "valid") == (r["name"] in VALID), r["name"]


@pytest.mark.parametrize("folder,row", ROWS, ids=[r["name"] for _, r in ROWS])
def test_manifest_row(folder, row):
    raw = _load(folder, row)
    name = row["name"]
    if row["expected"] == "valid":
        m = SipMsg(raw)
        VALID[name](m, raw)
        # what is built without changes re-parses to the same message
        m2 = SipMsg(m.build())
        assert (m2.callid, m2.cseq.num, len(m2.via)) == (m.callid, m.cseq.num, len(m.via))
    else:
        code, err = INVALID[name]
        with pytest.raises(ParseError) as ei:
            SipMsg(raw)
        assert (ei.value.code, ei.value.err) == (code, err), ei.value.reason


def test_baddn_variant_display_name_fault():
    raw = (CORPUS / "rfc4475" / "variants" / "baddn.dat").read_bytes()
    assert len(raw) == 333
    with pytest.raises(ParseError) as ei:
        SipMsg(raw)
    assert (ei.value.code, ei.value.err) == (400, lib.SP_E_NAMEADDR)
    # the same message with the display names quoted is fine
    fixed = raw.replace(b"Bell, Alexander", b'"Bell, Alexander"').replace(
        b"Watson, Thomas", b'"Watson, Thomas"')
    m = SipMsg(fixed)
    assert m.from_.display == "Bell, Alexander" and m.to.display == "Watson, Thomas"


def test_clerr_on_a_stream_waits_for_more():
    raw = corpus_bytes("rfc4475", "clerr")
    assert frame_length(raw) == 0
    with pytest.raises(ParseError) as ei:
        SipMsg(raw, stream=True)
    assert ei.value.err == lib.SP_E_NEEDMORE


def test_ncl_and_mcl01_on_a_stream_are_framing_errors():
    for name in ("ncl", "mcl01"):
        with pytest.raises(ParseError) as ei:
            frame_length(corpus_bytes("rfc4475", name))
        assert ei.value.err == lib.SP_E_CLEN


def test_inv2543_on_a_stream_lacks_content_length():
    with pytest.raises(ParseError) as ei:
        SipMsg(corpus_bytes("rfc4475", "inv2543"), stream=True)
    assert (ei.value.code, ei.value.err) == (400, lib.SP_E_NOCLEN)


def test_dblreq_over_a_stream_frames_the_register_only():
    raw = corpus_bytes("rfc4475", "dblreq")
    n = frame_length(raw)
    assert raw[:n].startswith(b"REGISTER") and raw[:n].endswith(b"Content-Length: 0\r\n\r\n")
    assert SipMsg(raw[:n], stream=True).method == "REGISTER"


def test_rfc5118_bare_lf_parses_as_is_too():
    # the parser accepts bare LF line ends; with the archive's own bytes the
    # files that do end their headers parse (Content-Length permitting)
    raw = corpus_bytes("rfc5118", "ipv6-good")
    assert b"\r" not in raw
    m = SipMsg(raw)
    assert m.parsed_uri.host == "[2001:db8::10]" and m.callid == "SSG9559905523997077@hlau_4100"


def test_header_types_of_compact_forms():
    m = SipMsg(corpus_bytes("rfc4475", "esc01"))
    types = {h.name: h.type for h in m.headers}
    assert types["i"] == HDR_CALLID_T and types["C"] == HDR_CONTENTTYPE_T


def test_totag_crc_in_c_is_the_python_key_crc():
    """sp_totag_crc reads the parts of a local To tag's suffix off the
    parser's result; it must give the CRC-32 of the very key the Python
    fallback builds (for every valid corpus request that has the parts),
    and decline (-1) a folded Call-ID, which only the fallback unfolds."""
    import zlib
    from opensipy import totag
    from opensipy.parser import HDR_CALLID_T
    seen = 0
    for folder, row in ROWS:
        if row["expected"] != "valid":
            continue
        m = SipMsg(_load(folder, row))
        if not m.is_request:
            continue
        c = lib.sp_totag_crc(m._m, m._buf)
        v, f = m.via1, m.from_
        try:
            cs = m.cseq
        except ParseError:
            cs = None
        if v is None or f is None or cs is None:
            assert c == -1, row["name"]
            continue
        key = (f"{m.callid or ''}|{f.tag or ''}|{cs.num}|{v.host}:{v.port}"
               f"|{v.branch or ''}").encode("utf-8", "surrogateescape")
        if c == -1:
            # only a folded Call-ID makes the C side decline
            h = next(h for h in m.headers if h.type == HDR_CALLID_T)
            assert b"\n" in m._buf[h.start:h.end].rstrip(), row["name"]
        else:
            assert c == zlib.crc32(key), row["name"]
            seen += 1
        assert totag.request_suffix(m) == format(zlib.crc32(key), "08x")
    assert seen >= 15
    folded = SipMsg(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\n"
                    b"From: <sip:a@b>;tag=7\r\nTo: <sip:b@c>\r\n"
                    b"Call-ID: x\r\n y\r\nCSeq: 1 OPTIONS\r\n"
                    b"Content-Length: 0\r\n\r\n")
    assert lib.sp_totag_crc(folded._m, folded._buf) == -1
    assert totag.request_suffix(folded) == format(
        zlib.crc32(b"x y|7|1|h:0|1"), "08x")
