"""$hdr exposes a header body as OpenSIPS does (parse/parse_hdr.c
get_hdr_field): the white space after the colon is eaten (eat_lws_end,
line folding included), the line end is cut by trim_r -- which removes
only CR, LF and NUL, so spaces and tabs before the line end stay -- and a
folded line stays as written.  {s.len} and {s.trim*} therefore count what
OpenSIPS counts.  $hdr(X)[*] joins every body with ", " (pvar.c
PV_FIELD_DELIM); [-1] is the last one."""
import pytest

from opensipy.parser import SipMsg
from opensipy.pvar import parse_pv

RAW = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
       b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1 \r\n"
       b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
       b"Call-ID:   c1@h  \r\nCSeq: 1 INVITE\r\n"
       b"X-A:   spaced value \t \r\n"
       b"X-B:\tfolded\r\n  line\r\n"
       b"X-A: second\r\n"
       b"X-Empty:\r\n"
       b"X-Blank:    \r\n"
       b"X-Fold-First:\r\n  after fold\r\n"
       b"x-a:third  \r\n"
       b"Content-Length: 0\r\n\r\n")

# (variable, value OpenSIPS gives)
ROWS = [
    ("$hdr(X-A)", "spaced value \t "),
    ("$(hdr(X-A){s.len})", 15),
    ("$(hdr(X-A){s.trimr})", "spaced value"),
    ("$(hdr(X-A){s.trimr}{s.len})", 12),
    ("$(hdr(X-A){s.triml}{s.len})", 15),       # nothing left to trim there
    ("$(hdr(X-A){s.trim}{s.len})", 12),
    ("$hdr(X-A)[0]", "spaced value \t "),
    ("$hdr(X-A)[1]", "second"),
    ("$hdr(X-A)[2]", "third  "),               # names match in any case
    ("$hdr(X-A)[-1]", "third  "),
    ("$hdr(X-A)[-3]", "spaced value \t "),
    ("$hdr(X-A)[3]", None),
    ("$hdr(X-A)[*]", "spaced value \t , second, third  "),
    ("$(hdr(X-A)[*]{s.len})", 32),
    ("$(hdr(X-A)[1]{s.len})", 6),
    ("$(hdr(X-A)[-1]{s.trim}{s.toupper})", "THIRD"),
    ("$hdr(X-B)", "folded\r\n  line"),         # folding kept as written
    ("$(hdr(X-B){s.len})", 14),
    ("$hdr(X-Empty)", ""), ("$(hdr(X-Empty){s.len})", 0),
    ("$hdr(X-Blank)", ""),                     # all of it eaten as LWS
    ("$hdr(X-Fold-First)", "after fold"),      # a fold right after ':'
    ("$hdr(Call-ID)", "c1@h  "), ("$hdr(i)", "c1@h  "),
    ("$(hdr(Call-ID){s.len})", 6),
    ("$hdr(Via)", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1 "),
    ("$hdr(CSeq)", "1 INVITE"),
    ("$hdr(X-None)", None), ("$(hdr(X-None){s.len})", None),
    ("$hdrcnt(X-A)", 3),
]


@pytest.mark.parametrize("var,want", ROWS, ids=[v for v, _ in ROWS])
def test_header_body_as_opensips(var, want):
    assert parse_pv(var).get(SipMsg(RAW)) == want


def test_for_each_over_every_body():
    spec = parse_pv("$hdr(X-A)[*]")
    assert spec.get_all(SipMsg(RAW)) == ["spaced value \t ", "second",
                                         "third  "]
