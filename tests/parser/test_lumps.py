"""Lumps (changes recorded against the original buffer) and message building."""
import itertools

import pytest

from opensipy.parser import SipMsg, ParseError, build_reply, frame_length
from opensipy.parser._core import lib

INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
          b"Max-Forwards: 70\r\n"
          b"From: <sip:alice@example.com>;tag=a1\r\n"
          b"To: <sip:bob@example.com>\r\n"
          b"Call-ID: c1@h\r\n"
          b"CSeq: 1 INVITE\r\n"
          b"Contact: <sip:alice@10.0.0.1>\r\n"
          b"Content-Type: text/plain\r\n"
          b"Content-Length: 4\r\n"
          b"\r\n"
          b"abcd")


def msg(raw=INVITE):
    return SipMsg(raw)


def at(raw, marker):
    return raw.index(marker)


# ---------------------------------------------------------------- each kind

def test_no_lumps_builds_the_original():
    assert msg().build() == INVITE


def test_insert_before():
    m = msg()
    off = at(INVITE, b"Call-ID")
    m.insert_before(off, b"X-A: 1\r\n")
    assert m.build() == INVITE[:off] + b"X-A: 1\r\n" + INVITE[off:]


def test_insert_after():
    m = msg()
    off = at(INVITE, b"Call-ID")
    m.insert_after(off, "X-B: 2\r\n")
    assert m.build() == INVITE[:off] + b"X-B: 2\r\n" + INVITE[off:]


def test_delete():
    m = msg()
    off = at(INVITE, b"Max-Forwards")
    m.delete(off, len(b"Max-Forwards: 70\r\n"))
    out = m.build()
    assert out == INVITE.replace(b"Max-Forwards: 70\r\n", b"")
    assert SipMsg(out).max_forwards is None


def test_replace():
    m = msg()
    off = at(INVITE, b"70")
    m.replace(off, 2, b"69")
    out = m.build()
    assert out == INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 69")
    assert SipMsg(out).max_forwards == 69


def test_insert_at_start_and_end():
    m = msg()
    m.insert_before(len(INVITE), b"ef")
    m.insert_after(0, b"")
    m.insert_before(0, b"\r\n")
    assert m.build() == b"\r\n" + INVITE + b"ef"


# ---------------------------------------------------------------- same offset

def test_order_at_one_offset_is_before_replace_after_whatever_the_add_order():
    off = at(INVITE, b"Call-ID")
    n = len(b"Call-ID: c1@h\r\n")
    ops = [("b", b"[B1]"), ("b", b"[B2]"), ("r", b"[R]"), ("a", b"[A1]"), ("a", b"[A2]")]
    expected = INVITE[:off] + b"[B1][B2][R][A1][A2]" + INVITE[off + n:]
    for perm in itertools.permutations(range(5)):
        # keep B1 before B2 and A1 before A2 (insertion order within a kind)
        if perm.index(0) > perm.index(1) or perm.index(3) > perm.index(4):
            continue
        m = msg()
        for i in perm:
            kind, data = ops[i]
            if kind == "b":
                m.insert_before(off, data)
            elif kind == "a":
                m.insert_after(off, data)
            else:
                m.replace(off, n, data)
        assert m.build() == expected, perm


def test_same_kind_same_offset_keeps_insertion_order():
    m = msg()
    off = at(INVITE, b"CSeq")
    for i in range(5):
        m.insert_before(off, b"%d" % i)
    m2 = msg()
    for i in range(5):
        m2.insert_after(off, b"%d" % i)
    assert m.build() == m2.build() == INVITE[:off] + b"01234" + INVITE[off:]


def test_insert_at_end_of_deleted_range_comes_after_it():
    m = msg()
    off = at(INVITE, b"Call-ID")
    n = len(b"Call-ID: c1@h\r\n")
    m.insert_before(off + n, b"[E]")
    m.replace(off, n, b"[R]")
    assert m.build() == INVITE[:off] + b"[R][E]" + INVITE[off + n:]


def test_adjacent_deletes():
    m = msg()
    a = at(INVITE, b"Call-ID")
    b = at(INVITE, b"CSeq")
    c = at(INVITE, b"Contact")
    m.delete(b, c - b)
    m.delete(a, b - a)
    assert m.build() == INVITE[:a] + INVITE[c:]


@pytest.mark.parametrize("first,second", [
    (("replace", 100, 10), ("replace", 105, 10)),     # overlapping ranges
    (("replace", 100, 10), ("replace", 95, 6)),
    (("replace", 100, 10), ("replace", 100, 3)),      # two changes at one offset
    (("replace", 100, 10), ("before", 105)),          # insert inside a removed range
    (("after", 105), ("replace", 100, 10)),
])
def test_conflicts_are_refused(first, second):
    m = msg()

    def apply(op):
        if op[0] == "replace":
            m.replace(op[1], op[2], b"x")
        elif op[0] == "before":
            m.insert_before(op[1], b"y")
        else:
            m.insert_after(op[1], b"y")
    apply(first)
    with pytest.raises(ValueError):
        apply(second)
    assert m.n_lumps == 1       # the refused one left nothing behind
    assert len(m.build()) == len(INVITE) - (first[2] if first[0] == "replace" else 0) + 1


@pytest.mark.parametrize("off,n", [(-1, 0), (len(INVITE) + 1, 0), (len(INVITE) - 2, 3)])
def test_out_of_range(off, n):
    with pytest.raises(ValueError):
        msg().replace(off, n, b"")


def test_too_many_lumps():
    m = msg()
    for i in range(lib.SP_MAX_LUMPS):
        m.insert_before(0, b"")
    with pytest.raises(ValueError):
        m.insert_before(0, b"")


def test_build_does_not_consume_lumps_and_sees_new_uri_changes():
    m = msg()
    m.insert_hdr("X-Top: 1")
    m.new_uri = "sip:carol@example.net"
    a = m.build()
    assert a == m.build()
    m.new_uri = "sip:dave@example.org"
    b = m.build()
    assert SipMsg(a).ruri == "sip:carol@example.net"
    assert SipMsg(b).ruri == "sip:dave@example.org"
    assert SipMsg(b).hdr("X-Top") == "1"
    assert m.n_lumps == 1


# ---------------------------------------------------------------- high level

def test_add_via_and_record_route_on_top():
    m = msg()
    m.add_record_route("<sip:10.0.0.9;lr>")
    m.add_via("SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKnew")
    out = m.build()
    first_hdrs = out.split(b"\r\n")[1:3]
    assert first_hdrs == [b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKnew",
                          b"Record-Route: <sip:10.0.0.9;lr>"]
    r = SipMsg(out)
    assert [v.branch for v in r.via] == ["z9hG4bKnew", "z9hG4bK1"]
    assert r.record_route[0].parsed_uri.lr
    assert r.body == b"abcd"


def test_add_via_goes_before_a_via_that_is_not_the_first_header():
    raw = INVITE.replace(b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n", b"")
    raw = raw.replace(b"Call-ID: c1@h\r\n",
                      b"Call-ID: c1@h\r\nVia: SIP/2.0/TCP a.example;branch=z9hG4bKa\r\n")
    m = SipMsg(raw)
    m.add_via("SIP/2.0/UDP top.example;branch=z9hG4bKtop")
    r = SipMsg(m.build())
    assert [v.host for v in r.via] == ["top.example", "a.example"]


def test_remove_first_via_whole_line():
    raw = INVITE.replace(b"Max-Forwards", b"Via: SIP/2.0/TCP b.example;branch=z9hG4bKb\r\n"
                                          b"Max-Forwards")
    m = SipMsg(raw)
    m.remove_via()
    r = SipMsg(m.build())
    assert [v.host for v in r.via] == ["b.example"]
    assert b"10.0.0.1:5060" not in m.build()


def test_remove_first_via_of_a_multi_value_line():
    raw = INVITE.replace(b"branch=z9hG4bK1\r\n",
                         b"branch=z9hG4bK1 ,\r\n SIP/2.0/TCP c.example;branch=z9hG4bKc\r\n")
    m = SipMsg(raw)
    assert [v.host for v in m.via] == ["10.0.0.1", "c.example"]
    m.remove_via()
    out = m.build()
    r = SipMsg(out)
    assert [(v.host, v.branch) for v in r.via] == [("c.example", "z9hG4bKc")]
    assert r.hdrs("Via") == ["SIP/2.0/TCP c.example;branch=z9hG4bKc"]


def test_remove_via_then_add_via():
    m = msg()
    m.remove_via()
    m.add_via("SIP/2.0/UDP new.example;branch=z9hG4bKn")
    r = SipMsg(m.build())
    assert [v.host for v in r.via] == ["new.example"]


def test_new_uri_rewrites_the_request_line():
    m = msg()
    m.new_uri = "sip:bob@10.1.1.1:5070;transport=tcp"
    out = m.build()
    assert out.startswith(b"INVITE sip:bob@10.1.1.1:5070;transport=tcp SIP/2.0\r\n")
    r = SipMsg(out)
    assert r.parsed_uri.port == 5070 and r.parsed_uri.transport == "tcp"
    assert r.to.uri == "sip:bob@example.com"


def test_append_insert_remove_headers():
    m = msg()
    m.append_hdr("X-Last: z")
    m.insert_hdr(b"X-First: a\r\n")
    assert m.remove_hdr("contact") == 1
    assert m.remove_hdr("X-None") == 0
    out = m.build()
    r = SipMsg(out)
    names = [h.name for h in r.headers]
    assert names[0] == "X-First" and names[-1] == "X-Last"
    assert "Contact" not in names and r.contacts == []
    assert r.hdr("x-last") == "z" and r.body == b"abcd"


def test_set_hdr_body():
    m = msg()
    m.set_hdr_body("Max-Forwards", "69")
    assert SipMsg(m.build()).max_forwards == 69
    with pytest.raises(KeyError):
        m.set_hdr_body("X-Nope", "1")


def test_set_body_fixes_content_length_and_type():
    m = msg()
    m.set_body(b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n", content_type="application/sdp")
    out = m.build()
    r = SipMsg(out, stream=True)
    assert r.body == b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n"
    assert r.content_length == len(r.body)
    assert r.content_type == "application/sdp"
    assert frame_length(out + b"INVITE ...") == len(out)
    with pytest.raises(ValueError):
        m.set_body(b"again")


def test_set_body_without_content_length_header():
    raw = INVITE.replace(b"Content-Length: 4\r\n", b"")
    m = SipMsg(raw)
    assert m.content_length is None and m.body == b"abcd"
    m.set_body("")
    r = SipMsg(m.build(), stream=True)
    assert r.content_length == 0 and r.body == b""


def test_build_drops_octets_after_the_message():
    m = SipMsg(INVITE + b"garbage after content-length")
    assert m.body == b"abcd"
    assert m.build() == INVITE


def test_many_changes_reparse():
    m = msg()
    m.add_via("SIP/2.0/UDP p.example;branch=z9hG4bKp;rport")
    m.add_record_route("<sip:p.example;lr>")
    m.set_hdr_body("Max-Forwards", "69")
    m.new_uri = "sip:bob@192.0.2.7"
    m.remove_hdr("Content-Type")
    m.set_body("hello")
    m.append_hdr("X-Proxy: yes")
    r = SipMsg(m.build())
    assert r.ruri == "sip:bob@192.0.2.7"
    assert [v.host for v in r.via] == ["p.example", "10.0.0.1"]
    assert r.via[0].rport == ""
    assert r.max_forwards == 69 and r.content_type is None
    assert r.body == b"hello" and r.content_length == 5
    assert r.hdr("X-Proxy") == "yes"
    assert (r.callid, r.cseq.num, r.from_.tag) == ("c1@h", 1, "a1")


# ---------------------------------------------------------------- replies

def test_reply_copies_vias_from_to_callid_cseq_and_adds_to_tag():
    raw = INVITE.replace(b"branch=z9hG4bK1\r\n",
                         b"branch=z9hG4bK1, SIP/2.0/TCP c.example;branch=z9hG4bKc\r\n"
                         b"Via: SIP/2.0/UDP d.example;branch=z9hG4bKd\r\n")
    m = SipMsg(raw)
    out = build_reply(m, 486, to_tag="tt1", headers=["Retry-After: 30"], body=b"busy")
    r = SipMsg(out)
    assert not r.is_request and (r.status, r.reason) == (486, "Busy Here")
    assert [v.branch for v in r.via] == ["z9hG4bK1", "z9hG4bKc", "z9hG4bKd"]
    assert r.from_.tag == "a1" and r.to.tag == "tt1" and r.to.uri == "sip:bob@example.com"
    assert (r.callid, r.cseq.num, r.cseq.method) == ("c1@h", 1, "INVITE")
    assert r.hdr("Retry-After") == "30"
    assert r.body == b"busy" and r.content_length == 4
    assert r.hdr("Contact") is None and r.hdr("Max-Forwards") is None


def test_reply_keeps_an_existing_to_tag_and_100_gets_none():
    m = SipMsg(INVITE.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x"))
    r = SipMsg(m.build_reply(200, "OK", to_tag="new"))
    assert r.to.tag == "x" and r.hdrs("To") == ["<sip:bob@example.com>;tag=x"]
    r100 = SipMsg(msg().build_reply(100))
    assert r100.reason == "Trying" and r100.to.tag is None


def test_reply_default_to_tag_is_stable():
    a = SipMsg(msg().build_reply(404)).to.tag
    b = SipMsg(msg().build_reply(404)).to.tag
    assert a and a == b


def test_cannot_reply_to_a_reply_or_with_a_bad_code():
    rep = SipMsg(msg().build_reply(200))
    with pytest.raises(ValueError):
        build_reply(rep, 200)
    with pytest.raises(ValueError):
        build_reply(msg(), 99)


def test_stream_framing_of_back_to_back_messages():
    a = msg().build()
    b = msg().build_reply(180)
    buf = a + b
    n = frame_length(buf)
    assert n == len(a)
    assert frame_length(buf[n:]) == len(b)
    assert frame_length(buf[:n - 1]) == 0
    assert frame_length(b"\r\n\r\n" + a) == len(a) + 4
    with pytest.raises(ParseError):
        frame_length(a.replace(b"Content-Length: 4", b"Content-Length: x"))


def test_checkpoint_rollback_and_listing():
    m = msg()
    m.insert_hdr("X-Keep: 1")
    cp = m.lump_checkpoint()
    m.append_hdr("X-Drop: 1")
    m.delete(at(INVITE, b"Call-ID"), 4)
    assert [(k, d) for k, _, _, d in m.lumps()] == [
        (lib.LUMP_INS_AFTER, b"X-Keep: 1\r\n"), (lib.LUMP_INS_BEFORE, b"X-Drop: 1\r\n"),
        (lib.LUMP_REPLACE, b"")]
    m.lump_rollback(cp)
    assert m.n_lumps == 1
    out = m.build()
    assert b"X-Drop" not in out and b"X-Keep: 1\r\n" in out and b"Call-ID: c1@h" in out


# ------------------------------------------------- sizes and offsets (#19)

def test_a_delete_whose_end_overflows_int32_is_refused():
    # off + del wrapped round to a negative int and passed the bound check
    m = msg()
    with pytest.raises(ValueError):
        m.delete(10, 2**31 - 10)
    with pytest.raises(ValueError):
        m.replace(len(INVITE) - 1, 2**31 - 1, b"x")
    assert m.n_lumps == 0 and m._m.lump_bytes == 0
    assert m.build() == INVITE


def test_lump_text_that_would_overflow_the_built_size_is_refused():
    # lump_bytes += data_l - del must not wrap: the built size stays an int
    m = msg()
    rc = lib.sp_lump_add(m._m, lib.LUMP_INS_BEFORE, 0, 0, 0, 2**31 - 1)
    assert rc == lib.SP_E_TOOBIG
    assert m.n_lumps == 0 and m._m.lump_bytes == 0
    m.insert_hdr("X-A: 1")
    rc = lib.sp_lump_add(m._m, lib.LUMP_INS_BEFORE, 0, 0, 0,
                         2**31 - 1 - len(INVITE) - m._m.lump_bytes + 1)
    assert rc == lib.SP_E_TOOBIG and m.n_lumps == 1


def test_build_refuses_lumps_whose_text_is_outside_the_data():
    m = msg()
    m.insert_hdr("X-A: 1")
    m._m.lumps[0].data_s = 5          # 8 octets from 5 in an 8-octet blob
    with pytest.raises(ValueError, match="build"):
        m.build()
    m._m.lumps[0].data_s = 0
    m._m.lumps[0].off = len(INVITE) + 1
    with pytest.raises(ValueError, match="build"):
        m.build()


def test_build_refuses_a_buffer_shorter_than_the_message():
    m = msg()
    from opensipy.parser._core import ffi
    out = ffi.new("char[]", 2 * len(INVITE))
    assert lib.sp_build(m._m, m._buf, len(INVITE) - 1, b"", 0, out, len(out)) < 0
    assert lib.sp_build(m._m, m._buf, len(INVITE), b"", 0, out, len(out)) == len(INVITE)


def test_rollback_validates_the_checkpoint_against_the_lumps():
    m = msg()
    cp0 = m.lump_checkpoint()
    m.insert_hdr("X-A: 1")
    m.delete(at(INVITE, b"Call-ID"), 4)
    cp2 = m.lump_checkpoint()
    m.lump_rollback(cp0)
    assert m.n_lumps == 0 and m.build() == INVITE
    # a stale checkpoint would bring back lumps whose text is gone
    with pytest.raises(ValueError):
        m.lump_rollback(cp2)
    for bad in (-1, (0, 0, -1000, 0), "0", None):
        with pytest.raises(ValueError):
            m.lump_rollback(bad)
    assert m.n_lumps == 0 and m._m.lump_bytes == 0 and m.build() == INVITE
    # the counters come from the lumps that stay, not from the caller
    m.insert_hdr("X-B: 22")
    cp = m.lump_checkpoint()
    m.replace(at(INVITE, b"c1@h"), 4, b"other")
    m.lump_rollback(cp)
    assert m._m.lump_bytes == len(b"X-B: 22\r\n")
    assert m._m.lump_seq == 1
    first_line = INVITE.index(b"\r\n") + 2
    assert m.build() == INVITE[:first_line] + b"X-B: 22\r\n" + INVITE[first_line:]


def test_parser_helpers_refuse_spans_outside_the_buffer():
    from opensipy.parser._core import ffi
    b = b"Mon, 01 Jan 2024 00:00:00 GMT"
    n = len(b)
    assert lib.sp_check_date(b, n, 0, n) == 0
    assert lib.sp_check_date(b, n - 1, 0, n) == lib.SP_E_RANGE
    assert lib.sp_check_date(b, n, 1, n) == lib.SP_E_RANGE
    assert lib.sp_check_date(b, n, -1, 2) == lib.SP_E_RANGE
    assert lib.sp_check_date(b, n, 2, 2**31 - 1) == lib.SP_E_RANGE
    u = ffi.new("sp_uri *")
    assert lib.sp_parse_uri(b"sip:a@b", 7, 0, 7, u) == 0
    assert lib.sp_parse_uri(b"sip:a@b", 7, 4, 100, u) == lib.SP_E_RANGE
    assert u.type == lib.ERROR_URI_T
    v = ffi.new("sp_via[]", 2)
    via = b"SIP/2.0/UDP h;branch=z9hG4bK1"
    assert lib.sp_parse_via(via, len(via), 0, len(via), 0, v, 2) == 1
    assert lib.sp_parse_via(via, len(via), 0, len(via) + 1, 0, v, 2) == lib.SP_E_RANGE
    na = ffi.new("sp_nameaddr[]", 1)
    assert lib.sp_parse_nameaddrs(b"<sip:a@b>", 9, 5, 9, 0, 0, 0, na, 1) == lib.SP_E_RANGE
    p = ffi.new("sp_param[]", 4)
    assert lib.sp_parse_params(b"a=1", 3, 3, 1, ord(";"), p, 4) == lib.SP_E_RANGE
    x = ffi.new("uint32_t *")
    assert lib.sp_parse_uint(b"12", 2, 0, 2, x) == 0 and x[0] == 12
    assert lib.sp_parse_uint(b"12", 2, 1, 2, x) == lib.SP_E_RANGE
    out = ffi.new("char[]", 4)
    assert lib.sp_unescape(b"a%41b", 5, out, 4) == 3 and ffi.unpack(out, 3) == b"aAb"
    assert lib.sp_unescape(b"abcdef", 6, out, 4) == lib.SP_E_SPACE
