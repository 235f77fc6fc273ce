"""sipmsgops over real parsed messages: every function, its fixup, bad
input, and lump conflicts reported as -1 (never an exception)."""
import pytest

from opensipy import mod_fix, pvar
from opensipy.mod_fix import FixupError, compile_regex, prepare_param
from opensipy.parser import SipMsg

import modkit
import opensipy_modules.sipmsgops as S

INVITE = (
    "INVITE sip:+4930123456@example.com;transport=udp;lr SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n"
    "Max-Forwards: 70\r\n"
    "f: \"Alice\" <sip:alice@example.com>;tag=a1\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: c1@example.com\r\n"
    "CSeq: 7 INVITE\r\n"
    "Subject: hello world\r\n"
    "X-Billing-Account: 1\r\n"
    "X-Billing-Price: 2\r\n"
    "x-gw1: a\r\n"
    "X-Other: b\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 24\r\n"
    "\r\n"
    "v=0\r\n"
    "o=alice 1 1 IN IP4 x\r\n").encode()

REPLY = ("SIP/2.0 200 OK\r\n"
         "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n"
         "From: <sip:alice@example.com>;tag=a1\r\n"
         "To: <sip:bob@example.com>;tag=b2\r\n"
         "Call-ID: c1@example.com\r\n"
         "CSeq: 7 REGISTER\r\n"
         "Content-Length: 0\r\n\r\n").encode()


def inv():
    return modkit.parse(INVITE)


def out(m):
    return SipMsg(m.build())


def fix(cmd_name, index, arg):
    """The fixed-up value the core hands the function for a constant."""
    for c in S.exports.cmds:
        if c.name == cmd_name and len(c.params) > index:
            return prepare_param(c.params[index], arg).value
    raise KeyError(cmd_name)


# ------------------------------------------------------------ is_method

@pytest.mark.parametrize("arg,expect", [
    ("INVITE", 1), ("invite", 1), ("INVITE|REGISTER", 1), ("BYE|ACK", -1),
    ("REGISTER", -1), ("FOO", -1),
])
def test_is_method_on_a_request(arg, expect):
    assert S.w_is_method(inv(), fix("is_method", 0, arg)) == expect


def test_is_method_list_is_a_mask_parsed_once():
    mask, name = fix("is_method", 0, "INVITE|REGISTER|BYE")
    assert name is None and mask == 1 | 128 | 8


def test_is_method_unknown_method_by_name():
    m = modkit.parse(modkit.request(method="FOO"))
    assert S.w_is_method(m, fix("is_method", 0, "foo")) == 1
    assert S.w_is_method(m, fix("is_method", 0, "BAR")) == -1
    assert S.w_is_method(m, fix("is_method", 0, "INVITE")) == -1


def test_is_method_on_a_reply_uses_cseq():
    r = SipMsg(REPLY)
    assert S.w_is_method(r, fix("is_method", 0, "REGISTER")) == 1
    assert S.w_is_method(r, fix("is_method", 0, "INVITE|BYE")) == -1


@pytest.mark.parametrize("bad", ["", "INVITE|FOO", "INVITE||BYE",
                                 "IN VITE"])
def test_is_method_bad_lists_fail_at_fixup(bad):
    with pytest.raises(FixupError):
        fix("is_method", 0, bad)


# ------------------------------------------------------------ has_totag

def test_has_totag():
    assert S.w_has_totag(inv()) == -1
    assert S.w_has_totag(SipMsg(REPLY)) == 1
    assert S.w_has_totag(modkit.parse(modkit.request(to_tag="x"))) == 1


# ------------------------------------------------------------ add headers

def test_append_hf_at_the_end_and_after_a_header():
    m = inv()
    assert S.w_append_hf(m, "X-End: 1\r\n") == 1
    assert S.w_append_hf(m, "X-After-From: 2\r\n",
                         fix("append_hf", 1, "From")) == 1
    names = [h.name for h in out(m).headers]
    assert names[-1] == "X-End"
    assert names[names.index("f") + 1] == "X-After-From"
    assert out(m).body == m.body


def test_append_hf_with_a_missing_anchor_goes_last():
    m = inv()
    assert S.w_append_hf(m, "X-A: 1\r\n", fix("append_hf", 1, "X-None")) == 1
    assert out(m).headers[-1].name == "X-A"


def test_insert_hf_first_and_before_a_header():
    m = inv()
    assert S.w_insert_hf(m, "X-Top: 1\r\n") == 1
    assert S.w_insert_hf(m, "X-Before-CSeq: 1\r\n",
                         fix("insert_hf", 1, "cseq")) == 1
    names = [h.name for h in out(m).headers]
    assert names[0] == "X-Top"
    assert names[names.index("CSeq") - 1] == "X-Before-CSeq"


def test_header_text_must_end_with_crlf():
    m = inv()
    assert S.w_append_hf(m, "X-Bad: 1") == -1
    assert S.w_insert_hf(m, "X-Bad: 1\n") == -1
    assert S.w_append_to_reply(m, "X-Bad: 1") == -1
    assert m.n_lumps == 0 and getattr(m, "reply_hdrs", None) is None


def test_append_hf_text_with_variables_goes_through_the_core_format():
    fmt = pvar.parse_format("X-From-User: $fU\r\n")
    m = inv()
    assert S.w_append_hf(m, fmt.eval(m)) == 1
    assert out(m).hdr("X-From-User") == "alice"


def test_append_to_reply_queues_lines_in_order():
    m = inv()
    assert S.w_append_to_reply(m, "A: 1\r\n") == 1
    assert S.w_append_to_reply(m, "B: 2\r\n") == 1
    assert m.reply_hdrs == ["A: 1\r\n", "B: 2\r\n"]
    assert m.n_lumps == 0


# ------------------------------------------------------------ remove

def test_remove_hf_by_name_type_and_again():
    m = inv()
    assert S.w_remove_hf(m, "Subject") == 1
    assert S.w_remove_hf(m, "subject") == -1   # already gone
    assert S.w_remove_hf(m, "From") == 1       # the compact "f" header
    assert S.w_remove_hf(m, "X-None") == -1
    o = SipMsg(m.build(), check=False)
    assert o.hdr("Subject") is None and o.hdr("From") is None
    assert o.hdr("X-Other") == "b" and o.hdr("To") == "<sip:bob@example.com>"


def test_remove_hf_glob_and_regex():
    m = inv()
    assert S.w_remove_hf(m, "x-billing*", fix("remove_hf", 1, "g")) == 1
    assert S.w_remove_hf(m, "^X-g.+[0-9]", fix("remove_hf", 1, "r")) == 1
    o = out(m)
    assert o.hdrs("X-Billing-Account") == [] and o.hdrs("X-Billing-Price") \
        == []
    assert o.hdr("x-gw1") is None and o.hdr("X-Other") == "b"
    m = inv()
    assert S.w_remove_hf_re(m, compile_regex("^x-bill")) == 1
    assert S.w_remove_hf_glob(m, "X-Oth?r") == 1
    assert S.w_remove_hf_glob(m, "Nope*") == -1
    o = out(m)
    assert o.hdr("X-Billing-Price") is None and o.hdr("X-Other") is None


def test_remove_hf_bad_flags_and_bad_regex():
    with pytest.raises(FixupError):
        fix("remove_hf", 1, "x")
    m = inv()
    assert S.w_remove_hf(m, "([", "r") == -1
    assert m.n_lumps == 0


def test_is_present_hf():
    m = inv()
    assert S.w_is_present_hf(m, fix("is_present_hf", 0, "From")) == 1
    assert S.w_is_present_hf(m, fix("is_present_hf", 0, "x-other")) == 1
    assert S.w_is_present_hf(m, fix("is_present_hf", 0, "Route")) == -1
    with pytest.raises(FixupError):
        fix("is_present_hf", 0, "Bad: name")


# ------------------------------------------------------------ bodies

@pytest.mark.parametrize("mime,expect", [
    (None, 1), ("application/sdp", 1), ("APPLICATION/SDP", 1),
    ("text/plain", -1), ("multipart/mixed", -1)])
def test_has_body(mime, expect):
    arg = fix("has_body", 0, mime) if mime else None
    assert S.w_has_body(inv(), arg) == expect


def test_has_body_without_body_and_bad_mime():
    m = modkit.parse(modkit.request())
    assert S.w_has_body(m) == -1
    for bad in ("sdp", "a/b, c/d", "a/"):
        with pytest.raises(FixupError):
            fix("has_body", 0, bad)


def test_has_body_multipart_parts():
    body = (b"--XX\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"
            b"--XX\r\nContent-Type: application/isup\r\n\r\nabc\r\n--XX--\r\n")
    m = modkit.parse(modkit.request(
        extra=["Content-Type: multipart/mixed;boundary=XX"], body=body))
    assert S.w_has_body(m, fix("has_body", 0, "application/isup")) == 1
    assert S.w_has_body(m, fix("has_body", 0, "application/sdp")) == 1
    assert S.w_has_body(m, fix("has_body", 0, "multipart/mixed")) == 1
    assert S.w_has_body(m, fix("has_body", 0, "text/html")) == -1


# ------------------------------------------------------------ search

def test_search_and_search_body():
    m = inv()
    assert S.w_search(m, compile_regex("^subject: hello")) == 1
    assert S.w_search(m, compile_regex("goodbye")) == -1
    assert S.w_search_body(m, compile_regex("^o=alice")) == 1
    assert S.w_search_body(m, compile_regex("Subject")) == -1
    assert S.w_search_body(modkit.parse(modkit.request()),
                           compile_regex(".*")) == -1


def test_search_append():
    m = inv()
    assert S.w_search_append(m, compile_regex("hello"), " there") == 1
    assert out(m).hdr("Subject") == "hello there world"
    assert S.w_search_append(m, compile_regex("nothing"), "x") == -1
    # the first line is not searched (search() looks at the whole message)
    assert S.w_search(m, compile_regex(r"\+4930")) == 1
    assert S.w_search_append(m, compile_regex(r"\+4930"), "x") == -1
    assert S.w_search_append(m, compile_regex("^X-Other: b"), "c") == 1
    assert out(m).hdr("X-Other") == "bc"


def test_search_append_inside_a_removed_header_is_a_conflict():
    m = inv()
    assert S.w_remove_hf(m, "Subject") == 1
    n = m.n_lumps
    assert S.w_search_append(m, compile_regex("hello"), " there") == -1
    assert m.n_lumps == n


# ------------------------------------------------------------ subst

def test_subst_first_and_global():
    m = inv()
    assert S.w_subst(m, fix("subst", 0,
                            r"/^(Subject:) hello (.*)$/\1 bye \2/")) == 1
    assert out(m).hdr("Subject") == "bye world"
    m = inv()
    assert S.w_subst(m, fix("subst", 0, "/example\\.com/example.org/g")) == 1
    o = out(m)
    assert o.from_.uri == "sip:alice@example.org"
    assert o.to.uri == "sip:bob@example.org"
    assert o.callid == "c1@example.org"
    # the first line is left alone
    assert o.ruri == "sip:+4930123456@example.com;transport=udp;lr"
    m = inv()
    assert S.w_subst(m, fix("subst", 0, "/example\\.com/example.org/")) == 1
    assert out(m).from_.uri == "sip:alice@example.org"
    assert out(m).to.uri == "sip:bob@example.com"


def test_subst_flags_and_escapes():
    m = inv()
    assert S.w_subst(m, fix("subst", 0, "/SUBJECT: HELLO/Subject: hi/")) \
        == -1
    assert S.w_subst(m, fix("subst", 0, "/SUBJECT: HELLO/Subject: hi/i")) \
        == 1
    assert out(m).hdr("Subject") == "hi world"
    m = inv()
    assert S.w_subst(m, fix("subst", 0, r"#^(X-Other: )b#\1\u#")) == 1
    assert out(m).hdr("X-Other") == INVITE.split(b" ")[1].decode()
    m = inv()
    # without s, . stops at a line end; with s it runs over lines
    assert S.w_subst(m, fix("subst", 0, "/v=0.*o=/X/")) == -1
    assert S.w_subst(m, fix("subst", 0, "/v=0.*o=/v=0\\r\\no=/s")) == 1


def test_subst_with_a_variable_in_the_replacement():
    m = inv()
    assert S.w_subst(m, fix("subst", 0, "/^Subject: .*$/Subject: $fU/")) \
        == 1
    assert out(m).hdr("Subject") == "alice"


@pytest.mark.parametrize("bad", ["", "/a/b", "/a/b/c/d", "/(/x/",
                                 "/a/b/z", "a1b1", r"/a/\9/", r"/a/\q/",
                                 "/a/$nosuchvar/"])
def test_subst_bad_expressions_fail_at_fixup(bad):
    with pytest.raises(FixupError):
        fix("subst", 0, bad)


def test_subst_expression_in_a_variable_is_parsed_per_call():
    pvar.script_vars["e"] = "/^Subject: .*$/Subject: x/"
    c = next(c for c in S.exports.cmds if c.name == "subst")
    p = prepare_param(c.params[0], pvar.parse_pv("$var(e)"))
    m = inv()
    assert S.w_subst(m, p.get(m)) == 1
    assert out(m).hdr("Subject") == "x"
    pvar.script_vars["e"] = "/(/x/"
    with pytest.raises(mod_fix.ParamError):
        p.get(m)


def test_subst_over_a_changed_region_is_a_conflict_and_all_or_nothing():
    m = inv()
    assert S.w_remove_hf(m, "X-Other") == 1
    n = m.n_lumps
    # two matches: one in Subject (free), one in the removed X-Other
    assert S.w_subst(m, fix("subst", 0, "/^(Subject|X-Other): .*$/Z: z/g")) \
        == -1
    assert m.n_lumps == n
    assert out(m).hdr("Subject") == "hello world"


def test_subst_uri_and_subst_user():
    m = inv()
    assert S.w_subst_uri(m, fix("subst_uri", 0,
                                r"/^sip:\+49(.*)@example\.com(.*)$/"
                                r"sip:0049\1@gw.example.net\2/")) == 1
    assert m.new_uri == "sip:004930123456@gw.example.net;transport=udp;lr"
    assert S.w_subst_uri(m, fix("subst_uri", 0, "/nomatch/x/")) == -1
    assert S.w_subst_user(m, fix("subst_user", 0, "/^0049/+49/")) == 1
    assert m.new_uri == "sip:+4930123456@gw.example.net;transport=udp;lr"
    assert out(m).ruri == m.new_uri
    # a result that is no URI is refused, the R-URI stays
    before = m.new_uri
    assert S.w_subst_uri(m, fix("subst_uri", 0, "/^.*$/not a uri/")) == -1
    assert m.new_uri == before
    assert S.w_subst_user(SipMsg(REPLY), fix("subst_user", 0, "/a/b/")) == -1


# ------------------------------------------------------------ URIs

@pytest.mark.parametrize("uri,expect", [
    ("sip:+4930123456@example.com", 1), ("sip:+12@x", 1),
    ("sip:+1@x", -1), ("sip:4930123456@x", -1),
    ("sip:+1234567890123456@x", -1), ("sip:+123456789012345@x", 1),
    ("sip:+49a@x", -1), ("tel:+4930123456", 1), ("", -1), ("not a uri", -1),
])
def test_is_uri_user_e164(uri, expect):
    assert S.w_is_uri_user_e164(inv(), uri) == expect


def test_ruri_params():
    m = inv()
    assert S.w_ruri_has_param(m, "transport", "udp") == 1
    assert S.w_ruri_has_param(m, "transport", "UDP") == -1
    assert S.w_ruri_has_param(m, "transport") == -1     # it has a value
    assert S.w_ruri_has_param(m, "lr") == 1
    assert S.w_ruri_has_param(m, "lr", "1") == -1
    assert S.w_ruri_has_param(m, "user") == -1
    assert S.w_ruri_add_param(m, "user=phone") == 1
    assert m.new_uri.endswith(";lr;user=phone")
    assert S.w_ruri_has_param(m, "user", "phone") == 1
    assert S.w_ruri_del_param(m, "transport") == 1
    assert m.new_uri == "sip:+4930123456@example.com;lr;user=phone"
    assert S.w_ruri_del_param(m, "transport") == -1
    assert S.w_ruri_add_param(m, "") == 1
    assert out(m).ruri == "sip:+4930123456@example.com;lr;user=phone"


def test_ruri_params_with_uri_headers_and_none():
    m = modkit.parse(modkit.request(ruri="sip:bob@example.com"))
    m.new_uri = "sip:bob@example.com?Subject=x"
    assert S.w_ruri_del_param(m, "lr") == -1
    assert S.w_ruri_add_param(m, "lr") == 1
    assert m.new_uri == "sip:bob@example.com;lr?Subject=x"
    assert S.w_ruri_has_param(m, "lr") == 1
    assert S.w_ruri_del_param(m, "lr") == 1
    assert m.new_uri == "sip:bob@example.com?Subject=x"


# ------------------------------------------------------------ no crash

def test_every_change_function_returns_minus_1_on_a_conflict():
    """A replace covering the whole header section: every later change
    inside it conflicts and is reported, never raised."""
    m = inv()
    m.replace(m.hdrs_start + 1, m.hdrs_end - m.hdrs_start - 2, "X")
    n = m.n_lumps
    assert S.w_append_hf(m, "A: 1\r\n", fix("append_hf", 1, "Subject")) \
        == -1
    assert S.w_insert_hf(m, "A: 1\r\n", fix("insert_hf", 1, "Subject")) \
        == -1
    assert S.w_remove_hf(m, "Subject") == -1
    assert S.w_search_append(m, compile_regex("hello"), "x") == -1
    assert S.w_subst(m, fix("subst", 0, "/hello/bye/")) == -1
    assert m.n_lumps == n


def test_offsets_in_a_message_with_utf8_text():
    m = modkit.parse(modkit.request(extra=["Subject: héllo wörld",
                                           "X-After: ü"]))
    assert S.w_subst(m, fix("subst", 0, "/wörld/world/")) == 1
    assert S.w_search_append(m, compile_regex("X-After: ü"), "!") == 1
    o = SipMsg(m.build())
    assert o.hdr("Subject") == "héllo world" and o.hdr("X-After") == "ü!"
