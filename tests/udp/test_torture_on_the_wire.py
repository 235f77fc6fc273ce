"""RFC 4475 on the wire: every torture message of ../shared/sip-corpus sent
over UDP to a running proxy gets the answer (or the silence) its manifest
row states, and the proxy keeps serving after the whole corpus.

The messages' Via headers name hosts such as host5.example.net without a
port, so a reply to them goes to the source address at port 5060 (RFC 3261
§18.2.2).  The test therefore sends from 127.0.0.2 and listens on 127.0.0.2
at every port a reply may use.
"""
import csv
import select
import socket

import pytest

from opensipy.parser import SipMsg

from server import free_port
from shareddata import require_shared, shared_path

pytestmark = pytest.mark.slow

CORPUS = shared_path("sip-corpus", "rfc4475")

FWD = "forwarded"
SILENT = "silence"

# What a stateless proxy running the script below must do with each message
# (the manifest's action column, for a proxy): FWD, SILENT, or the statuses
# that are acceptable answers.
EXPECT = {
    "wsinv": FWD, "intmeth": FWD, "esc01": FWD, "escnull": FWD,
    "esc02": FWD, "lwsdisp": FWD, "longreq": FWD, "dblreq": FWD,
    "semiuri": FWD, "transports": FWD, "mpart01": FWD,
    "unreason": SILENT, "noreason": SILENT,          # replies, not ours
    "badinv01": {400}, "clerr": {400}, "ncl": {400}, "scalar02": {400},
    "scalarlg": SILENT, "quotbal": {400}, "ltgtruri": {400},
    "lwsruri": {400}, "lwsstart": {400}, "trws": {400}, "escruri": {400},
    "baddate": {400}, "regbadct": {400}, "badaspec": {400},
    "baddn": {400}, "badvers": {505}, "mismatch01": {400},
    "mismatch02": {400, 501}, "bigcode": SILENT,
    "badbranch": FWD, "insuf": {400}, "unkscm": {416}, "novelsc": {416},
    "unksm2": FWD, "bext01": {420}, "invut": FWD, "regaut01": FWD,
    "multi01": {400}, "mcl01": {400}, "bcast": SILENT,
    "zeromf": {483}, "cparam01": FWD, "cparam02": FWD, "regescrt": FWD,
    "sdp01": FWD, "inv2543": FWD,
    "test": SILENT,     # no Via at all: there is nowhere to answer
}


def manifest():
    require_shared("sip-corpus", "rfc4475", "MANIFEST.tsv")
    with open(CORPUS / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_every_manifest_row_has_an_expectation():
    names = {r["name"] for r in manifest()}
    assert names | {"test"} == set(EXPECT)


@pytest.fixture(scope="module")
def corpus_proxy(tmp_path_factory):
    from server import Server
    rows = manifest()
    try:
        listeners = {}
        src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        src.bind(("127.0.0.2", 0))
        listeners[src.getsockname()[1]] = src
        for port in (5060, 5050, 5070):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.2", port))
            listeners[port] = s
    except OSError as e:
        for s in listeners.values():
            s.close()
        pytest.skip(f"cannot listen on 127.0.0.2: {e}")
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.bind(("127.0.0.1", 0))
    port = free_port()
    server = Server(tmp_path_factory.mktemp("corpus"))
    try:
        server.start(f"""
udp_workers=1
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
route {{
    if (!mf_process_maxfwd_header(10)) {{
        sl_send_reply(483, "Too Many Hops");
        exit;
    }}
    forward("127.0.0.1:{uas.getsockname()[1]}");
}}
""")
        yield server, port, src, listeners, uas, rows
    finally:
        server.cleanup()
        for s in list(listeners.values()) + [uas]:
            s.close()


def collect(socks, wait):
    """Every datagram that arrives on socks within wait seconds of quiet."""
    got = []
    while True:
        r, _, _ = select.select(socks, [], [], wait)
        if not r:
            return got
        for s in r:
            got.append((s, s.recvfrom(65535)[0]))


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_torture_message_gets_its_answer(corpus_proxy, name):
    server, port, src, listeners, uas, rows = corpus_proxy
    data = (CORPUS / f"{name}.dat").read_bytes()
    src.sendto(data, ("127.0.0.1", port))
    got = collect(list(listeners.values()) + [uas], 0.4)
    to_uas = [d for s, d in got if s is uas]
    answers = [d for s, d in got if s is not uas]
    expect = EXPECT[name]
    if expect == FWD:
        assert not answers, answers
        assert len(to_uas) == 1, f"{name}: {len(to_uas)} forwarded"
        fwd = SipMsg(to_uas[0])
        orig = SipMsg(data)
        assert fwd.callid == orig.callid and fwd.method == orig.method
        assert fwd.body == orig.body
        assert len(fwd.via) == len(orig.via) + 1
        if name == "dblreq":
            assert fwd.method == "REGISTER"
    elif expect == SILENT:
        assert not got, got
    else:
        assert not to_uas
        assert len(answers) == 1, answers
        rep = SipMsg(answers[0], check=False)
        assert rep.status in expect, (name, rep.status, rep.reason)
        if rep.status == 420:
            assert "Unsupported" in answers[0].decode("latin-1")


def test_the_proxy_still_serves_after_the_corpus(corpus_proxy):
    server, port, src, listeners, uas, rows = corpus_proxy
    for name in sorted(EXPECT):
        src.sendto((CORPUS / f"{name}.dat").read_bytes(),
                   ("127.0.0.1", port))
    collect(list(listeners.values()) + [uas], 0.5)
    assert server.proc.poll() is None
    data = (CORPUS / "wsinv.dat").read_bytes()
    src.sendto(data, ("127.0.0.1", port))
    got = collect([uas], 1.0)
    assert len(got) == 1 and SipMsg(got[0][1]).callid == SipMsg(data).callid
