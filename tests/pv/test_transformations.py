"""Transformations: a table of (input value, transformation, expected).

The expected values follow OpenSIPS's transformations.c (3.x:
tr_eval_string, tr_eval_uri, tr_eval_paramlist, tr_eval_nameaddr,
tr_eval_csv, tr_eval_re) and its "Script Transformations" manual (3.5 /
4.x: s.sha*, s.*_hmac, s.eval, s.date2unix, {nameaddr.N.x}); each family
below names what it follows."""
import hashlib
import hmac
import zlib

import pytest

from pvkit import make
from opensipy import pvar
from opensipy.pvar import PVError, parse_pv
from opensipy.transformations import (TrError, compile_tr, parse_nameaddr,
                                      parse_params, parse_uri)

VIA = "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK77;rport;received=1.2.3.4" \
      " (note)"
SDP = ("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 0 8\r\n"
       "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
       "m=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")
URI = "sip:alice:secret@atlanta.example.com:5070;transport=TCP;ttl=15;" \
      "user=phone;maddr=10.0.0.1;method=INVITE;lr;r2=on?Subject=hi&X=1"

TABLE = [
    # s.*
    ("hello", "s.len", 5),
    ("", "s.len", 0),
    (12345, "s.len", 5),
    ("42", "s.int", 42),
    ("-7", "s.int", -7),
    # str2sint up to the first non-digit; nothing numeric is 0
    ("4x2", "s.int", 4), ("abc", "s.int", 0), ("", "s.int", 0),
    ("+5", "s.int", 5), (7, "s.int", 7),
    ("abcdef", "s.substr,1,2", "bc"),
    ("abcdef", "s.substr,2,0", "cdef"),
    ("abcdef", "s.substr,-3,2", "de"),
    ("abcdef", "s.substr,1,-2", "bcd"),
    ("abcdef", "s.substr,9,1", None),
    ("a,b,c", "s.select,1,,", "b"),
    ("a:b:c", "s.select,-1,:", "c"),
    ("a:b:c", "s.select,5,:", None),
    ("MiXeD", "s.tolower", "mixed"),
    ("MiXeD", "s.toupper", "MIXED"),
    ("  pad \t", "s.trim", "pad"),
    ("  pad \t", "s.trimr", "  pad"),
    ("  pad \t", "s.triml", "pad \t"),
    ("AB", "s.encode.hexa", "4142"),
    ("4142", "s.decode.hexa", "AB"),
    ("414", "s.decode.hexa", "A"),        # an odd last digit is ignored
    ("4G", "s.decode.hexa", None),
    ("it's \"q\" \\", "s.escape.common", "it\\'s \\\"q\\\" \\\\"),
    ("it\\'s \\\"q\\\" \\\\", "s.unescape.common", "it's \"q\" \\"),
    # strcommon.c: escape_user keeps alnum -_.!~*'()&=+$,;? ('/' is
    # escaped), escape_param escapes only space ? & = , ; and '"'; hex is
    # lower case; a non-printable character, a bad or non-printable %XX is
    # an error
    ("a b@c#d;e", "s.escape.user", "a%20b%40c%23d;e"),
    ("a/b?c", "s.escape.user", "a%2fb?c"),
    ("a\tb", "s.escape.user", None), ("\u00e9", "s.escape.user", None),
    ("a%20b%40c", "s.unescape.user", "a b@c"),
    ("a%2Fb%2f", "s.unescape.user", "a/b/"),
    ("a%zz", "s.unescape.user", None), ("a%0a", "s.unescape.user", None),
    ("a%2", "s.unescape.user", None),
    ("a b;c=d", "s.escape.param", "a%20b%3bc%3dd"),
    ('x"y@z/[]', "s.escape.param", "x%22y@z/[]"),
    ("a%20b%3Bc%3Dd", "s.unescape.param", "a b;c=d"),
    ("abc", "s.md5", hashlib.md5(b"abc").hexdigest()),
    ("hello world", "s.index,o", 4),
    ("hello world", "s.index,o,5", 7),
    # not found, a start past the end, a needle longer than what is left:
    # NULL; a negative start counts from the end, modulo the length
    ("hello world", "s.index,z", None),
    ("hello world", "s.index,o,20", None),
    ("hello world", "s.index,d,-1", 10),
    ("hello world", "s.index,o,-15", 7),
    ("abc", "s.index,abcd", None),
    ("hello world", "s.rindex,z", None),
    ("hello world", "s.rindex,o,-5", 4),
    ("hello world", "s.rindex,o", 7),
    ("hello world", "s.rindex,o,6", 4),
    # uri.*
    (URI, "uri.user", "alice"),
    (URI, "uri.passwd", "secret"),
    (URI, "uri.host", "atlanta.example.com"),
    (URI, "uri.port", 5070),                 # an integer with its text
    (URI, "uri.params",
     "transport=TCP;ttl=15;user=phone;maddr=10.0.0.1;method=INVITE;lr;r2=on"),
    (URI, "uri.param,ttl", "15"),
    (URI, "uri.param,nosuch", None),        # absent: <null> in OpenSIPS
    ("sip:a@b;lr;x=1", "uri.param,lr", ""),   # present without a value
    (URI, "uri.headers", "Subject=hi&X=1"),
    (URI, "uri.transport", "TCP"),
    (URI, "uri.ttl", "15"),
    (URI, "uri.uparam", "phone"),
    (URI, "uri.maddr", "10.0.0.1"),
    (URI, "uri.method", "INVITE"),
    (URI, "uri.lr", None),             # empty: OpenSIPS sets PV_VAL_NULL
    (URI, "uri.r2", "on"),
    (URI, "uri.schema", "sip"),
    ("sips:[2001:db8::1]:5061", "uri.host", "[2001:db8::1]"),
    ("sips:[2001:db8::1]:5061", "uri.port", 5061),
    # an absent or empty part is NULL (tr_eval_uri: PV_VAL_NULL)
    ("sip:example.com", "uri.user", None),
    ("sip:example.com", "uri.port", None),
    ("sip:example.com", "uri.params", None),
    ("sip:example.com", "uri.headers", None),
    ("sip:example.com", "uri.passwd", None),
    ("sip:example.com", "uri.transport", None),
    ("sip:a@h;transport=", "uri.transport", None),
    ("sips:a@h", "uri.schema", "sips"),
    ("tel:+1555", "uri.schema", "tel"),
    ("sip:a@h;TTL=3", "uri.param,ttl", "3"),
    ("tel:+15551234;phone-context=x", "uri.user", "+15551234"),
    ("not a uri", "uri.user", None),
    # param.*
    ("a=1;b=2;flag;c=x y", "param.value,b", "2"),
    (";a=1;b=2", "param.value,a", "1"),
    ("a=1;b=2", "param.value,z", None),
    ("a=1;flag", "param.value,flag", ""),
    ("a=1&b=2", "param.value,b,&", "2"),
    ("a=1;b=2;c=3", "param.valueat,2", "3"),
    ("a=1;b=2;c=3", "param.valueat,-1", "3"),
    ("a=1;b=2;c=3", "param.name,1", "b"),
    ("a=1;b=2;c=3", "param.count", 3),
    ("a=1&b=2", "param.count,&", 2),
    ("", "param.count", 0),
    ("a=1;b", "param.exist,b", 1),
    ("a=1;b", "param.exist,c", 0),
    ('q="x;y";z=1', "param.value,q", '"x;y"'),
    # nameaddr.*
    ('"Alice" <sip:a@x.com>;tag=88;foo=bar', "nameaddr.name", '"Alice"'),
    ('"Alice" <sip:a@x.com>;tag=88;foo=bar', "nameaddr.uri", "sip:a@x.com"),
    ('"Alice" <sip:a@x.com>;tag=88;foo=bar', "nameaddr.param,tag", "88"),
    ('"Alice" <sip:a@x.com>;tag=88;foo=bar', "nameaddr.param,foo", "bar"),
    ('"Alice" <sip:a@x.com>;tag=88;foo=bar', "nameaddr.params",
     "tag=88;foo=bar"),
    ('"Alice" <sip:a@x.com>;tag=88;foo=bar', "nameaddr.len", 21),
    ("Bob <sip:b@y>", "nameaddr.name", "Bob"),
    ("sip:b@y;tag=1", "nameaddr.uri", "sip:b@y"),
    ("sip:b@y;tag=1", "nameaddr.param,tag", "1"),
    ("sip:b@y", "nameaddr.param,tag", None),
    # csv.*
    ("a, b ,c", "csv.count", 3),
    ("a, b ,c", "csv.value,1", "b"),
    ("a, b ,c", "csv.value,-1", "c"),
    ("a, b ,c", "csv.value,3", None),
    # RFC 4180 (tr_eval_csv: _parse_csv_record(CSV_RFC_4180)); an empty
    # value is an error
    ('"x,y",z', "csv.count", 2), ('"x,y",z', "csv.value,0", "x,y"),
    ('"say ""hi""",z', "csv.value,0", 'say "hi"'), ("", "csv.count", None),
    ("a,b", "csv.value,-3", None),
    # s.* added in 2.x-4.x (transformations.c tr_eval_string; manual 3.5 for
    # the hashes, 4.x for date2unix)
    ("abc", "s.reverse", "cba"), (123, "s.reverse", "321"),
    ("3", "s.fill.left,0,5", "00003"), ("3", "s.fill.left, 0, 5", "00003"),
    ("abc", "s.fill.left,xy,7", "xyxyabc"),
    ("abc", "s.fill.left,xy,6", "yxyabc"),     # the odd piece: pad's tail
    ("abcdef", "s.fill.left,0,3", "abcdef"),
    ("abc", "s.fill.right,xy,6", "abcxyx"), ("7", "s.fill.right,0,3", "700"),
    ("abc", "s.width,5", "abc  "), ("abcdef", "s.width,3", "abc"),
    (255, "s.dec2hex", "ff"), ("255", "s.dec2hex", "ff"),
    ("-1", "s.dec2hex", "ffffffff"), ("x1", "s.dec2hex", None),
    ("ff", "s.hex2dec", 255), ("FF", "s.hex2dec", 255),
    ("0x1", "s.hex2dec", None), (255, "s.hex2dec", 255),
    ("Thu, 13 Jun 2024 12:48:00 GMT", "s.date2unix", 1718282880),
    ("yesterday", "s.date2unix", None),
    ("hello", "s.b64encode", "aGVsbG8="), ("aGVsbG8=", "s.b64decode", "hello"),
    ("ab", "s.xor,x", "\x19\x1a"),
    ("hello", "s.crc32", str(zlib.crc32(b"hello"))),
    ("abc", "s.sha1", hashlib.sha1(b"abc").hexdigest()),
    ("abc", "s.sha224", hashlib.sha224(b"abc").hexdigest()),
    ("abc", "s.sha256", hashlib.sha256(b"abc").hexdigest()),
    ("abc", "s.sha384", hashlib.sha384(b"abc").hexdigest()),
    ("abc", "s.sha512", hashlib.sha512(b"abc").hexdigest()),
    ("abc", "s.sha1_hmac,key", hmac.new(b"key", b"abc", "sha1").hexdigest()),
    ("abc", "s.sha256_hmac,key",
     hmac.new(b"key", b"abc", "sha256").hexdigest()),
    ("abc", "s.sha512_hmac,k2",
     hmac.new(b"k2", b"abc", "sha512").hexdigest()),
    ("\u00c4B", "s.tolower", "\u00c4b"),      # ASCII letters only, as C
    ("abc", "s.substr,1,-2", ""), ("", "s.substr,0,1", None),
    # re.subst (tr_eval_re, subst_parser): sed-like, no match leaves the
    # value, an empty value is an error
    ("abcabc", "re.subst,/b/X/", "aXcabc"),
    ("abcabc", "re.subst,/b/X/g", "aXcaXc"),
    ("ABC", "re.subst,/b/x/i", "AxC"), ("abc", "re.subst,/z/x/", "abc"),
    ("user@host", "re.subst,/^(.*)@(.*)$/\\2:\\1/", "host:user"),
    ("a,b", "re.subst,#,#;#g", "a;b"), ("", "re.subst,/a/b/", None),
    # param.* names match whatever their case (strncasecmp); an empty list
    # is an error
    ("A=1;b=2", "param.value,a", "1"), ("a=1;B", "param.exist,b", 1),
    ("", "param.value,a", None),
    # nameaddr.*: absent parts are NULL; {nameaddr.N.x} picks from a list
    ("<sip:a@b>", "nameaddr.name", None),
    ("<sip:a@b>", "nameaddr.params", None),
    ("<sip:a@b>;flag;x=1", "nameaddr.param,flag", None),   # no value
    ("<sip:a@b>;x=1", "nameaddr.param,X", None),         # strncmp
    ("<sip:a@b>;x=1", "nameaddr.param,x", "1"),
    ('"first" <sip:first@o.org>, "second" <sip:second@o.org>',
     "nameaddr.1.name", '"second"'),
    ('"first" <sip:first@o.org>, "second" <sip:second@o.org>',
     "nameaddr.-1.uri", "sip:second@o.org"),
    ('"first" <sip:first@o.org>, "second" <sip:second@o.org>',
     "nameaddr.0.uri", "sip:first@o.org"),
    ('"first" <sip:first@o.org>', "nameaddr.2.uri", None),
    # names in any case (tr_parse_*: strncasecmp)
    ("abc", "S.LEN", 3), ("sip:U@h", "uri.USER", "U"),
    # via.* (tr_parse_via / tr_eval_via)
    (VIA, "via.name", "SIP"), (VIA, "via.version", "2.0"),
    (VIA, "via.transport", "UDP"), (VIA, "via.host", "10.0.0.1"),
    (VIA, "via.domain", "10.0.0.1"), (VIA, "via.port", 5062),
    (VIA, "via.params", "branch=z9hG4bK77;rport;received=1.2.3.4"),
    (VIA, "via.param,received", "1.2.3.4"), (VIA, "via.param,x", None),
    (VIA, "via.branch", "z9hG4bK77"), (VIA, "via.received", "1.2.3.4"),
    (VIA, "via.rport", None), (VIA, "via.comment", "note"),
    ("SIP/2.0/TCP h.example", "via.port", None),
    ("SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK1", "via.host",
     "[2001:db8::1]"),
    ("garbage", "via.host", None),
    # ip.* (tr_eval_ip)
    ("10.1.2.3", "ip.isip", 1), ("::1", "ip.isip", 1), ("x", "ip.isip", 0),
    ("10.1.2.3", "ip.isip4", 1), ("::1", "ip.isip4", 0),
    ("::1", "ip.isip6", 1), ("10.1.2.3", "ip.isprivate", 1),
    ("8.8.8.8", "ip.isprivate", 0), ("192.168.1.9", "ip.isprivate", 1),
    ("10.1.2.3", "ip.matches,10.0.0.0/8", 1),
    ("11.1.2.3", "ip.matches,10.0.0.0/8", 0),
    ("10.1.2.3", "ip.matches,10.0.0.0", None),
    ("10.1.2.3", "ip.pton", "\n\x01\x02\x03"),
    ("\n\x01\x02\x03", "ip.ntop", "10.1.2.3"),
    ("\n\x01\x02\x03", "ip.family", "INET"), ("abc", "ip.family", None),
    ("127.0.0.1", "ip.resolve", "127.0.0.1"),
    # sdp.* (tr_eval_sdp)
    (SDP, "sdp.line,c", "c=IN IP4 10.0.0.1"),
    (SDP, "sdp.line,a,1", "a=rtpmap:8 PCMA/8000"),
    (SDP, "sdp.line,a,9", None), (SDP, "sdp.line,z", None),
    (SDP, "sdp.stream,video", "m=video 5002 RTP/AVP 96\r\n"
     "a=rtpmap:96 H264/90000\r\n"),
    (SDP, "sdp.stream,0", "m=audio 5000 RTP/AVP 0 8\r\n"
     "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"),
    (SDP, "sdp.stream,text", None),
    (SDP, "sdp.stream-delete,video", "v=0\r\nc=IN IP4 10.0.0.1\r\n"
     "m=audio 5000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
     "a=rtpmap:8 PCMA/8000\r\n"),
    # NULL in, NULL out
    (None, "s.toupper", None),
    (None, "uri.user", None),
    (None, "s.len", None),
]


@pytest.mark.parametrize("value,tr,expected", TABLE,
                         ids=[f"{t}:{v!r}"[:60] for v, t, _ in TABLE])
def test_transformation(value, tr, expected):
    f = compile_tr(tr, parse_pv)
    assert f(None, value) == expected


@pytest.mark.parametrize("value,chain,expected", [
    ("sip:Bob@X.com", "$(var(v){uri.user}{s.tolower})", "bob"),
    ("a;b=1", "$(var(v){param.value,b}{s.int})", 1),
    ("  x  ", "$(var(v){s.trim}{s.len})", 1),
    ("Hello World", "$(var(v){s.substr,1,2}{s.tolower})", "el"),
    ('"A" <sip:u@h:5080>', "$(var(v){nameaddr.uri}{uri.port}{s.int})", 5080),
])
def test_chains_on_var(value, chain, expected):
    m = make("INVITE")
    pvar.script_vars["v"] = value
    assert parse_pv(chain).get(m) == expected


def test_arguments_may_be_variables():
    m = make("INVITE")
    pvar.script_vars.update(s="abcdef", off=2, ln=3, sep=":", name="b")
    assert parse_pv("$(var(s){s.substr,$var(off),$var(ln)})").get(m) == "cde"
    pvar.script_vars["off"] = 0
    assert parse_pv("$(var(s){s.substr,$var(off),$var(ln)})").get(m) == "abc"
    pvar.script_vars["s"] = "x:y:z"
    assert parse_pv("$(var(s){s.select,1,$var(sep)})").get(m) == "y"
    pvar.script_vars["s"] = "a=1;b=2"
    assert parse_pv("$(var(s){param.value,$var(name)})").get(m) == "2"
    # a NULL argument makes the result NULL
    del pvar.script_vars["name"]
    assert parse_pv("$(var(s){param.value,$var(name)})").get(m) is None
    # transformation argument from a message variable
    assert parse_pv("$(ci{s.index,$fd})").get(m) == len("a84b4c76e66710@pc33.")


def test_s_eval_reads_the_value_as_a_format():
    m = make("INVITE")
    pvar.script_vars["f"] = "$rm to $rU"
    assert parse_pv("$(var(f){s.eval})").get(m) == "INVITE to bob"
    pvar.script_vars["f"] = "plain"
    assert parse_pv("$(var(f){s.eval}{s.len})").get(m) == 5


def test_chains_and_indexes_over_avp_and_hdr():
    """Transformations apply to one value of an indexed variable."""
    m = make("INVITE")
    m.avps = {"a": ["sip:x@one.example", "sip:y@two.example"]}
    assert parse_pv("$(avp(a)[1]{uri.host}{s.toupper})").get(m) == \
        "TWO.EXAMPLE"
    assert parse_pv("$(avp(a){uri.user})").get(m) == "x"
    assert parse_pv("$(avp(a)[-1]{uri.user}{s.len})").get(m) == 1
    assert parse_pv("$(avp(a)[5]{uri.user})").get(m) is None
    assert parse_pv('$(hdr(Via)[0]{s.select,0," "})').get(m) == \
        "SIP/2.0/UDP"
    assert parse_pv("$(hdr(From){nameaddr.uri}{uri.user})").get(m) is not None


@pytest.mark.parametrize("body,err", [
    ("s.nope", "unknown transformation"),
    ("s.width,0", "at least 1"),
    ("s.fill.left,,5", "may not be empty"),
    ("s.fill.left,0,x", "must be an integer"),
    ("re.subst,/*a/b/", "bad regular expression"),
    ("re.subst,abc", "bad substitution"),
    ("re.subst,/a/b/z", "flag"),
    ("s.sha1_hmac", "takes 1 argument"),
    ("nameaddr.x.uri", "unknown transformation"),
    ("nameaddr.tag", "unknown transformation"),    # not OpenSIPS's
    ("via.nope", "unknown transformation"),
    ("uri.user,x", "takes no argument"),
    ("s.substr,1", "takes 2 argument"),
    ("s.substr,1,2,3", "must be an integer"),
    ("s.select,x,;", "must be an integer"),
    ("param.value", "takes 1 to 2 argument"),
    ("s.substr,$nosuch,1", "bad argument"),
])
def test_bad_transformations(body, err):
    with pytest.raises(TrError, match=err):
        compile_tr(body, parse_pv)
    with pytest.raises(PVError, match=err):
        parse_pv("$(ru{" + body + "})")


def test_uri_and_nameaddr_come_from_the_c_parser():
    """{uri.*}/{nameaddr.*} read URIs with opensipy.parser: the same parse
    as the message's own, and its builder rewrites one."""
    from opensipy import parser, transformations
    assert transformations.parse_uri is parser.parse_uri
    u = parse_uri("sip:bob@h.com:5080;transport=udp;lr")
    assert (u.user, u.host, u.port, u.port_str, u.param("LR"),
            u.param("x")) == ("bob", "h.com", 5080, "5080", "", None)
    assert str(u.copy(user="", port="")) == "sip:h.com;transport=udp;lr"
    with pytest.raises(ValueError):
        parse_uri("sip:a@h.com:port")
    t = parse_uri("tel:+15551234;phone-context=x")
    assert str(t.copy(user="+15550000")) == "tel:+15550000;phone-context=x"
    na = parse_nameaddr('"A \\"q\\"" <sip:a@b>;x=1')
    assert na.display_raw == '"A \\"q\\""' and na.uri == "sip:a@b" and \
        na.param("x") == "1"
    assert parse_params(' a = 1 ; b ') == [("a", "1"), ("b", "")]


@pytest.mark.parametrize("text", [
    "sip:a@h.com:port", "sip:@h", "sip:a@b;;x=1", "<sip:a@b>", "sip:a@[::1",
])
def test_a_uri_the_message_parser_refuses_is_no_uri_here_either(text):
    from opensipy.parser import SipMsg, ParseError
    raw = (f"INVITE {text} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
           "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\n"
           "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()
    try:
        ok = SipMsg(raw).parsed_uri is not None
    except (ParseError, ValueError):
        ok = False
    assert not ok
    assert compile_tr("uri.user", parse_pv)(None, text) is None
    assert compile_tr("uri.host", parse_pv)(None, text) is None


# --- NULL through every transformation -------------------------------------

def _args_for(name, n):
    """n constant arguments that the transformation accepts."""
    from opensipy.transformations import _numeric_arg
    if name == "re.subst":
        return ["/u/v/"]
    return ["1" if _numeric_arg(name, i) else ";" if name.startswith(
        "param.") and i == 1 else "x" for i in range(n)]


def _bodies():
    from opensipy.transformations import TRANSFORMATIONS
    out = []
    for name, (_, amin, amax) in sorted(TRANSFORMATIONS.items()):
        for n in sorted({amin, amax}):
            out.append(",".join([name] + _args_for(name, n)))
    return out


@pytest.mark.parametrize("body", _bodies())
def test_every_transformation_of_null_is_null(body):
    """OpenSIPS fails a transformation given NULL, and the variable prints
    <null>: none of ours may make a value out of nothing."""
    f = compile_tr(body, parse_pv)
    assert f(None, None) is None
    # and it does work on a value (the arguments above are accepted)
    f(None, "sip:u@h;x=1")


@pytest.mark.parametrize("body", [b for b in _bodies() if "," in b])
def test_a_null_variable_argument_gives_null(body):
    name, *args = body.split(",")
    pvar.script_vars.pop("nothing", None)
    dyn = ",".join([name, "$var(nothing)"] + args[1:])
    f = compile_tr(dyn, parse_pv)
    assert f(make("INVITE"), "sip:u@h;x=1") is None


@pytest.mark.parametrize("fmt,printed", [
    ("[$(rb{s.len})]", "[<null>]"),                 # REGISTER has no body
    ("[$(rb{s.len}{s.int})]", "[<null>]"),
    ("[$(ru{uri.param,nosuch})]", "[<null>]"),
    ("[$(ru{uri.param,nosuch}{s.len})]", "[<null>]"),
    ("[$(hdr(X-None){s.len})]", "[<null>]"),
    ("[$(var(nothing){uri.user})]", "[<null>]"),
    ("[$(ru{uri.host}{s.len})]", "[28]"),           # a value still counts
])
def test_null_prints_as_opensips_prints_it(fmt, printed):
    from opensipy.pvar import parse_format
    pvar.script_vars.pop("nothing", None)
    assert parse_format(fmt).eval(make("REGISTER")) == printed
