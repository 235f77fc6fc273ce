"""Stream framing without sockets: whatever way the bytes are cut into
reads, the worker hands the same SIP messages on, in order, and a
stream it cannot frame is refused."""
from hypothesis import given, settings, strategies as st

from opensipy.net import tcp


def msg(i, body=b""):
    return (f"MESSAGE sip:a@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bK{i}\r\n"
            f"Call-ID: {i}\r\nCSeq: 1 MESSAGE\r\n"
            f"{'l' if i % 2 else 'Content-Length'}: {len(body)}\r\n\r\n"
            ).encode() + body


class Fake:
    """A _Conn stand-in (no socket: nothing is answered)."""

    def __init__(self):
        self.c = tcp._Conn(7, None, ("127.0.0.1", 5), None)
        tcp._held[7] = self.c
        self.got = []

    def feed(self, data):
        return tcp._frame(self.c, data,
                          lambda m, src, si, cid: self.got.append(m))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6),
       st.lists(st.booleans(), min_size=6, max_size=6),
       st.lists(st.integers(1, 400), min_size=1, max_size=40))
def test_any_cut_gives_the_same_messages(bodies, crlf, cuts):
    tcp.crlf_pingpong = False
    try:
        msgs = [msg(i, b) for i, b in enumerate(bodies)]
        stream = b"".join((b"\r\n" if crlf[i] else b"") + m
                          for i, m in enumerate(msgs))
        f = Fake()
        pos = 0
        for n in cuts:
            if pos >= len(stream):
                break
            assert f.feed(stream[pos:pos + n]) is None
            pos += n
        if pos < len(stream):
            assert f.feed(stream[pos:]) is None
        assert f.got == msgs
        assert f.c.buf == b"" and f.c.started == 0.0
    finally:
        tcp.crlf_pingpong = True
        tcp._held.pop(7, None)


def test_refusals(monkeypatch):
    sent = []
    monkeypatch.setattr(tcp, "_send_on",
                        lambda cid, sock, data: sent.append(data) or True)
    f = Fake()
    try:
        no_cl = msg(1).replace(b"l: 0\r\n", b"")
        assert f.feed(no_cl) == "no Content-Length"
        assert sent[-1].startswith(b"SIP/2.0 400 Bad Request (missing")
        f = Fake()
        assert f.feed(msg(2).replace(b"Length: 0", b"Length: -5")) == \
            "bad Content-Length"
        f = Fake()
        big = msg(4, b"x" * (tcp.max_msg_size + 1))
        assert f.feed(big[:2000]).startswith("message of")
        assert sent[-1].startswith(b"SIP/2.0 513 ")
        f = Fake()                       # headers that never end
        assert f.feed(b"INVITE " + b"a" * (tcp.max_msg_size + 10)) == \
            "headers larger than the maximum message size"
        f = Fake()                       # a ping is answered, then a msg
        assert f.feed(b"\r\n\r\n" + msg(6)) is None
        assert sent[-1] == b"\r\n" and f.got == [msg(6)]
    finally:
        tcp._held.pop(7, None)


def test_content_length_edge_cases(monkeypatch):
    """Leading zeros and blanks are read as the number; the same value
    twice (long and compact forms) is one length; two different values
    are refused with 400 and the connection closed (a proxy behind us
    could frame the body by the other one: request smuggling); a body
    holding CRLFCRLF is cut by its length, not by the blank line."""
    sent = []
    monkeypatch.setattr(tcp, "_send_on",
                        lambda cid, sock, data: sent.append(data) or True)
    head = msg(2).split(b"Content-Length")[0]
    try:
        f = Fake()
        assert f.feed(head + b"Content-Length:  0005 \r\n\r\nabcde") is None
        assert f.got == [head + b"Content-Length:  0005 \r\n\r\nabcde"]
        f = Fake()
        two = head + b"l: 5\r\nContent-Length: 5\r\n\r\nabcde"
        assert f.feed(two) is None and f.got == [two]
        f = Fake()
        body = b"ab\r\n\r\ncd"
        assert f.feed(head + b"Content-Length: 8\r\n\r\n" + body + msg(3)) \
            is None
        assert f.got == [head + b"Content-Length: 8\r\n\r\n" + body, msg(3)]
        f = Fake()
        sent.clear()
        bad = head + b"Content-Length: 5\r\nl: 3\r\n\r\nabcde"
        assert f.feed(bad) == "conflicting Content-Length headers"
        assert f.got == [] and sent[-1].startswith(b"SIP/2.0 400 ")
    finally:
        tcp._held.pop(7, None)
