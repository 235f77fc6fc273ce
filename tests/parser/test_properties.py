"""Hypothesis properties: generated valid messages parse to what was
generated; mutated corpus messages never crash (a message or a ParseError
with a status); lumps build what a per-octet reference model builds."""
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from opensipy.parser import SipMsg, ParseError, parse_uri, frame_length, unescape

from sipcorpus import CORPUS, corpus_rows, corpus_bytes
from shareddata import need_shared

ALNUM = string.ascii_letters + string.digits
TOKEN = ALNUM + "-.!%*_+`'~"
SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

token = st.text(TOKEN, min_size=1, max_size=10)
word = st.text(ALNUM, min_size=1, max_size=10)
lws = st.sampled_from(["", " ", "  ", "\t", "\r\n ", " \r\n\t"])
ws = st.sampled_from(["", " ", "\t ", "  "])       # before ':' only SP/HTAB (HCOLON)
lws1 = st.sampled_from([" ", "  ", "\t", "\r\n ", " \r\n\t"])     # at least one


@st.composite
def hosts(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:
        labels = draw(st.lists(st.text(string.ascii_lowercase + string.digits, min_size=1,
                                       max_size=8), min_size=1, max_size=4))
        return ".".join(labels)
    if kind == 1:
        return ".".join(str(draw(st.integers(0, 255))) for _ in range(4))
    groups = draw(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=8))
    return "[" + ":".join("%x" % g for g in groups[:-1]) + "::%x]" % groups[-1]


@st.composite
def users(draw):
    parts = draw(st.lists(st.one_of(st.text(ALNUM + "-_.!~*'()&=+$,;?/", min_size=1,
                                            max_size=6),
                                    st.integers(0, 255).map(lambda b: "%%%02X" % b)),
                          min_size=1, max_size=4))
    return "".join(parts)


@st.composite
def sip_uris(draw, with_headers=True):
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.none() | users())
    passwd = draw(st.none() | word) if user else None
    host = draw(hosts())
    port = draw(st.integers(0, 65535))
    names = draw(st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=8),
                          unique=True, max_size=4))
    params = [(n, draw(st.none() | word)) for n in names]
    headers = draw(st.none() | st.text(ALNUM + "=&", min_size=1, max_size=10)) \
        if with_headers else None
    text = scheme + ":"
    if user:
        text += user + (":" + passwd if passwd else "") + "@"
    text += host + (":%d" % port if port else "")
    for n, v in params:
        text += ";" + n + ("=" + v if v is not None else "")
    if headers:
        text += "?" + headers
    return dict(text=text, scheme=scheme, user=user, passwd=passwd, host=host, port=port,
                params={n: (v if v is not None else "") for n, v in params}, headers=headers)


@given(sip_uris())
@SETTINGS
def test_generated_uris_parse_to_their_parts(g):
    u = parse_uri(g["text"])
    assert (u.scheme, u.user, u.passwd, u.host, u.port) == \
        (g["scheme"], g["user"], g["passwd"], g["host"], g["port"])
    assert u.params == g["params"] and u.headers == g["headers"]
    assert str(u) == g["text"]
    if g["user"]:
        assert u.user_unescaped == unescape(g["user"])


def randcase(draw, name):
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(name, flips))


@st.composite
def displays(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return None, ""
    if kind == 1:
        words = draw(st.lists(st.text(ALNUM + "-.!%*_+`'~", min_size=1, max_size=6),
                              min_size=1, max_size=3))
        return " ".join(words), " ".join(words) + " "
    text = draw(st.text(string.printable.replace("\r", "").replace("\n", "")
                        .replace("\x0b", "").replace("\x0c", ""), max_size=15))
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text, quoted + draw(lws)


@st.composite
def nameaddrs(draw, tag_kind):
    u = draw(sip_uris(with_headers=False))
    disp, disp_text = draw(displays())
    tag = draw(token) if tag_kind == "yes" else draw(st.none() | token)
    # RFC 3261 20.10: a URI with ',', '?' or ';' must be inside <>
    bracket = disp is not None or draw(st.booleans()) or any(c in u["text"] for c in ",?;")
    text = disp_text + ("<" + u["text"] + ">" if bracket else u["text"])
    if tag is not None:
        text += draw(lws) + ";" + draw(lws) + "tag" + draw(lws) + "=" + draw(lws) + tag
    return dict(text=text, uri=u["text"], display=disp, tag=tag)


@st.composite
def vias(draw):
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]))
    host = draw(hosts())
    port = draw(st.integers(0, 65535))
    branch = "z9hG4bK" + draw(word)
    rport = draw(st.booleans())
    text = ("SIP" + draw(lws) + "/" + draw(lws) + "2.0" + draw(lws) + "/" + draw(lws) +
            transport + draw(lws1) + host + (draw(lws) + ":" + draw(lws) + "%d" % port
                                             if port else ""))
    text += draw(lws) + ";" + draw(lws) + "branch" + draw(lws) + "=" + draw(lws) + branch
    if rport:
        text += ";rport"
    return dict(text=text, transport=transport, host=host, port=port, branch=branch,
                rport="" if rport else None)


@st.composite
def requests(draw):
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE"]) | token)
    ruri = draw(sip_uris(with_headers=False))
    via_list = draw(st.lists(vias(), min_size=1, max_size=5))
    frm = draw(nameaddrs("yes"))
    to = draw(nameaddrs("maybe"))
    callid = draw(st.text(ALNUM + "-.!%*_+~", min_size=1, max_size=20)) + \
        draw(st.sampled_from(["", "@host.example"]))
    cseq = draw(st.integers(0, 2**32 - 1))
    maxf = draw(st.none() | st.integers(0, 255))
    contacts = draw(st.lists(nameaddrs("no"), max_size=3))
    ext = draw(st.lists(st.tuples(st.text(ALNUM, min_size=1, max_size=8),
                                  st.text(string.ascii_letters + string.digits + " ,;=",
                                          max_size=20).map(str.strip)), max_size=3))
    body = draw(st.binary(max_size=120))
    compact = draw(st.booleans())

    def name(long, short):
        return short if compact else randcase(draw, long)

    lines = []
    # Vias: one line each, or all on one comma-separated line
    if draw(st.booleans()):
        lines.append("\r\n".join(name("Via", "v") + draw(ws) + ":" + draw(lws) + v["text"]
                                for v in via_list))
    else:
        lines.append(name("Via", "v") + ":" +
                     (draw(lws) + "," + draw(lws)).join(v["text"] for v in via_list))
    lines.append(name("From", "f") + ":" + draw(lws) + frm["text"])
    lines.append(name("To", "t") + ":" + draw(lws) + to["text"])
    lines.append(name("Call-ID", "i") + ": " + callid)
    lines.append(randcase(draw, "CSeq") + ":" + draw(lws) + "%d" % cseq + draw(lws1) + method)
    if maxf is not None:
        lines.append(randcase(draw, "Max-Forwards") + ": %d" % maxf)
    if contacts:
        lines.append(name("Contact", "m") + ": " + ", ".join(c["text"] for c in contacts))
    for n, v in ext:
        lines.append("X-" + n + ": " + v)
    lines = draw(st.permutations(lines))
    lines.append(name("Content-Length", "l") + ": %d" % len(body))
    raw = ((method + " " + ruri["text"] + " SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n")
           .encode("utf-8", "surrogateescape") + body)
    return dict(raw=raw, method=method, ruri=ruri, vias=via_list, frm=frm, to=to,
                callid=callid, cseq=cseq, maxf=maxf, contacts=contacts, ext=ext, body=body)


@given(requests())
@SETTINGS
def test_generated_requests_parse_to_what_was_generated(g):
    m = SipMsg(g["raw"])
    assert m.method == g["method"] and m.ruri == g["ruri"]["text"]
    assert m.parsed_uri.host == g["ruri"]["host"] and m.parsed_uri.port == g["ruri"]["port"]
    assert [(v.transport, v.host, v.port, v.branch, v.rport) for v in m.via] == \
        [(v["transport"], v["host"], v["port"], v["branch"], v["rport"]) for v in g["vias"]]
    for got, want in ((m.from_, g["frm"]), (m.to, g["to"])):
        assert (got.uri, got.display, got.tag) == (want["uri"], want["display"], want["tag"])
    assert m.callid == g["callid"]
    assert (m.cseq.num, m.cseq.method) == (g["cseq"], g["method"])
    assert m.max_forwards == g["maxf"]
    assert [(c.uri, c.display) for c in m.contacts] == \
        [(c["uri"], c["display"]) for c in g["contacts"]]
    for n, v in g["ext"]:
        assert v in m.hdrs("x-" + n.lower())
    assert m.body == g["body"] and m.content_length == len(g["body"])
    # over a stream the same bytes frame to exactly one message
    assert frame_length(g["raw"] + b"OPTIONS ") == len(g["raw"])
    # a rebuilt message with a Via added re-parses to the same values plus it
    m.add_via("SIP/2.0/UDP added.example;branch=z9hG4bKadded")
    r = SipMsg(m.build())
    assert [v.branch for v in r.via] == ["z9hG4bKadded"] + [v["branch"] for v in g["vias"]]
    assert (r.callid, r.cseq.num, r.body) == (g["callid"], g["cseq"], g["body"])


# ---------------------------------------------------------------- corpus mutations

def _corpus():
    out = []
    for folder in ("rfc4475", "rfc5118"):
        for row in corpus_rows(folder):
            out.append(corpus_bytes(folder, row["name"]))
    return out


CORPUS_MSGS = _corpus()


@st.composite
def mutated(draw):
    raw = bytearray(draw(st.sampled_from(CORPUS_MSGS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(raw)))
        if op == 0 and pos < len(raw):
            raw[pos] = draw(st.sampled_from(b" \t\r\n:;,<>\"\\@%=/[]0\x00\xff") |
                            st.integers(0, 255))
        elif op == 1:
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del raw[pos:pos + draw(st.integers(1, 20))]
        else:
            del raw[pos:]
    return bytes(raw)


def _touch_everything(m):
    for name in ("method", "ruri", "parsed_uri", "headers", "via", "from_", "to", "callid",
                 "cseq", "contacts", "max_forwards", "content_length", "body", "route",
                 "record_route", "path", "require", "proxy_require", "supported", "allow",
                 "authorization", "www_authenticate", "expires", "event", "content_type"):
        try:
            v = getattr(m, name)
        except ParseError as e:        # on-demand headers may be malformed
            assert e.code == 400
            continue
        if isinstance(v, list):
            for x in v:
                for f in ("uri", "display", "tag", "params", "host", "branch", "parsed_uri"):
                    try:
                        getattr(x, f, None)
                    except ParseError:
                        pass
    try:
        m.add_via("SIP/2.0/UDP x;branch=z9hG4bKx")
        m.build()
    except ValueError:
        pass
    if m.is_request:
        m.build_reply(400)


@need_shared("sip-corpus", "rfc4475", "MANIFEST.tsv")
@given(mutated(), st.booleans())
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_corpus_never_crashes(raw, stream):
    try:
        m = SipMsg(raw, stream=stream)
    except ParseError as e:
        assert e.code in (0, 400, 505) and e.err < 0
    else:
        assert m.msg_len <= len(raw)
        _touch_everything(m)
    try:
        n = frame_length(raw)
        assert 0 <= n <= len(raw)
    except ParseError as e:
        assert e.code == 400


# ---------------------------------------------------------------- lumps vs a model

BASE = (b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n")


@st.composite
def lump_ops(draw):
    n = len(BASE)
    ops = []
    for i in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["before", "after", "replace"]))
        off = draw(st.integers(0, n))
        length = draw(st.integers(0, min(15, n - off))) if kind == "replace" else 0
        ops.append((kind, off, length, b"<%d>" % i))
    return ops


def model(ops):
    """per original octet: inserts-before, replacement, inserts-after, octet"""
    accepted = []
    for op in ops:
        kind, off, ln, data = op
        ok = True
        for k2, o2, l2, _ in accepted:
            if kind == "replace" and k2 == "replace" and (o2 == off or (o2 < off + ln and
                                                                         off < o2 + l2)):
                ok = False
            if kind == "replace" and k2 != "replace" and off < o2 < off + ln:
                ok = False
            if kind != "replace" and k2 == "replace" and o2 < off < o2 + l2:
                ok = False
        if ok:
            accepted.append(op)
    deleted = set()
    for k, o, ln, _ in accepted:
        if k == "replace":
            deleted.update(range(o, o + ln))
    out = b""
    for p in range(len(BASE) + 1):
        out += b"".join(d for k, o, _, d in accepted if k == "before" and o == p)
        out += b"".join(d for k, o, _, d in accepted if k == "replace" and o == p)
        out += b"".join(d for k, o, _, d in accepted if k == "after" and o == p)
        if p < len(BASE) and p not in deleted:
            out += BASE[p:p + 1]
    return out, len(accepted)


@given(lump_ops())
@SETTINGS
def test_lumps_build_what_the_model_builds(ops):
    m = SipMsg(BASE)
    for kind, off, ln, data in ops:
        try:
            if kind == "before":
                m.insert_before(off, data)
            elif kind == "after":
                m.insert_after(off, data)
            else:
                m.replace(off, ln, data)
        except ValueError:
            pass
    want, n = model(ops)
    assert m.n_lumps == n
    assert m.build() == want
