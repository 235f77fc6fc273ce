"""Parser benchmarks (skipped in normal runs: pytest runs with
--benchmark-disable).  Run them with:

    python3 -m pytest tests/parser/test_bench_parser.py --benchmark-enable -q

Goals (one core): full parse of a typical 900-byte INVITE >= 300,000 msgs/s;
build of a message carrying 3 lumps >= 200,000 msgs/s.
"""
import pytest

from opensipy.parser import SipMsg

SDP = (b"v=0\r\n"
       b"o=alice 2890844526 2890844526 IN IP4 198.51.100.1\r\n"
       b"s=-\r\n"
       b"c=IN IP4 198.51.100.1\r\n"
       b"t=0 0\r\n"
       b"m=audio 49170 RTP/AVP 0 8 97\r\n"
       b"a=rtpmap:0 PCMU/8000\r\n"
       b"a=rtpmap:8 PCMA/8000\r\n"
       b"a=rtpmap:97 iLBC/8000\r\n")

INVITE = (b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
          b"Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds8;received=192.0.2.5\r\n"
          b"Max-Forwards: 69\r\n"
          b"To: Bob <sip:bob@biloxi.example.com>\r\n"
          b"From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
          b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
          b"CSeq: 314159 INVITE\r\n"
          b"Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>;expires=3600\r\n"
          b"Record-Route: <sip:p1.atlanta.example.com;lr>\r\n"
          b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, UPDATE\r\n"
          b"Supported: replaces, timer, 100rel\r\n"
          b"User-Agent: opensipy-bench/1.0\r\n"
          b"Content-Type: application/sdp\r\n"
          b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
          b"\r\n" + SDP)
# pad with an extension header to the typical size
INVITE = INVITE.replace(b"User-Agent", b"X-Pad: " + b"p" * (900 - len(INVITE) - 9)
                        + b"\r\nUser-Agent")


def test_invite_is_900_bytes():
    assert len(INVITE) == 900
    assert SipMsg(INVITE).content_length == len(SDP)


def full_parse(raw=INVITE):
    m = SipMsg(raw)
    # the values a proxy reads for every request
    return (m.method, m.ruri, m.via1.branch, m.from_.tag, m.to.tag, m.cseq.num,
            m.callid, m.contacts[0].uri, m.max_forwards, m.content_length)


def test_full_parse_values():
    assert full_parse() == ("INVITE", "sip:bob@biloxi.example.com", "z9hG4bK776asdhds",
                            "1928301774", None, 314159,
                            "a84b4c76e66710@pc33.atlanta.example.com",
                            "sip:alice@pc33.atlanta.example.com;transport=udp", 69, len(SDP))


def three_lumps():
    m = SipMsg(INVITE)
    m.add_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKproxy1")
    m.add_record_route("<sip:proxy.example.com;lr>")
    m.set_hdr_body("Max-Forwards", "68")
    return m


@pytest.mark.benchmark(group="parser")
def test_bench_full_parse_c(benchmark):
    """SipMsg(raw): first line, every header typed, Via/From/To/CSeq/Call-ID/
    Contact/Max-Forwards/Content-Length/Date/R-URI parsed and checked in C;
    no Python object made for any of them"""
    m = benchmark(SipMsg, INVITE)
    assert m.n_headers == 15


@pytest.mark.benchmark(group="parser")
def test_bench_full_parse(benchmark):
    """SipMsg(raw) and then the ten values a proxy reads (Python objects)"""
    r = benchmark(full_parse)
    assert r[2] == "z9hG4bK776asdhds"


@pytest.mark.benchmark(group="parser")
def test_bench_build_3_lumps(benchmark):
    m = three_lumps()
    out = benchmark(m.build)
    assert SipMsg(out).max_forwards == 68


@pytest.mark.benchmark(group="parser")
def test_bench_proxy_path(benchmark):
    """parse + 3 lumps + build: what a stateless proxy does per request"""
    def run():
        return three_lumps().build()
    out = benchmark(run)
    assert len(out) > len(INVITE)
