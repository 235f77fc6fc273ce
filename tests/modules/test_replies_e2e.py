"""sl, signaling, maxfwd and sipmsgops in the real server: UDP datagrams
from the test, the replies and forwarded requests checked on the wire, the
sl statistics read over MI (mi_datagram)."""
import json
import socket
import time

import pytest

from opensipy.parser import SipMsg

import modkit
from server import free_port, wait_for

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=2
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")

route {{
    if (!mf_process_maxfwd_header(10)) {{
        send_reply(483, "Too Many Hops");
        exit;
    }}
    if (is_method("ACK")) {{
        forward("udp:127.0.0.1:{probe}");
        exit;
    }}
    if (is_method("OPTIONS")) {{
        append_to_reply("Allow: INVITE, ACK, OPTIONS\r\n");
        append_to_reply("X-Seen-From: $si\r\n");
        sl_send_reply(200, "OK");
        exit;
    }}
    if (is_method("INVITE|MESSAGE") && $rU == "relay") {{
        append_hf("X-Method: $rm\r\n");
        remove_hf("X-Drop*", "g");
        subst('/^Subject: (.*)$/Subject: [relayed] \1/');
        forward("udp:127.0.0.1:{probe}");
        exit;
    }}
    if ($rU == "broken") {{
        $du = "tel:+123";
        if (!forward()) {{
            sl_reply_error();
            exit;
        }}
    }}
    send_reply(486, "Busy Here");
}}
"""


class Rig:
    def __init__(self, server):
        self.port = free_port()
        self.mi = free_port()
        self.probe = modkit.Peer()
        self.phone = modkit.Peer()
        server.start(SCRIPT.format(port=self.port, mi=self.mi,
                                   probe=self.probe.port))

    def send(self, **kw):
        kw.setdefault("via_port", self.phone.port)
        data = modkit.request(**kw)
        self.phone.send(data, self.port)
        return SipMsg(data)

    def stats(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        try:
            s.sendto(json.dumps({"jsonrpc": "2.0", "id": 1,
                                 "method": "get_statistics",
                                 "params": [["sl:"]]}).encode(),
                     ("127.0.0.1", self.mi))
            reply = json.loads(s.recv(65535))
        finally:
            s.close()
        return {k.split(":", 1)[1]: v for k, v in reply["result"].items()}

    def close(self):
        self.probe.close()
        self.phone.close()


@pytest.fixture
def rig(server):
    r = Rig(server)
    yield r
    r.close()


def test_maxfwd_zero_gets_483_from_send_reply(rig):
    req = rig.send(method="INVITE", max_forwards="0")
    r = rig.phone.recv()
    assert (r.status, r.reason) == (483, "Too Many Hops")
    assert r.callid == req.callid and r.via1.branch == req.via1.branch
    assert r.to.tag and len(r.to.tag) == 41
    assert rig.probe.nothing(0.3)


def test_maxfwd_decrements_and_adds_on_the_forwarded_request(rig):
    rig.send(method="MESSAGE", ruri="sip:relay@example.com",
             max_forwards="70")
    fwd = rig.probe.recv()
    assert fwd.hdrs("Max-Forwards") == ["69"]
    rig.send(method="MESSAGE", ruri="sip:relay@example.com",
             max_forwards=None, callid="c2@example.com")
    fwd = rig.probe.recv()
    assert fwd.hdrs("Max-Forwards") == ["10"]
    # above max_limit (256): capped
    rig.send(method="MESSAGE", ruri="sip:relay@example.com",
             max_forwards="3000", callid="c3@example.com")
    assert rig.probe.recv().hdrs("Max-Forwards") == ["256"]


def test_sipmsgops_changes_reach_the_wire(rig):
    rig.send(method="INVITE", ruri="sip:relay@example.com",
             extra=["Subject: lunch", "X-Drop-Me: 1", "X-drop-too: 2",
                    "X-Keep: 3"])
    fwd = rig.probe.recv()
    assert fwd.hdr("X-Method") == "INVITE"
    assert fwd.hdr("Subject") == "[relayed] lunch"
    assert fwd.hdr("X-Drop-Me") is None and fwd.hdr("X-drop-too") is None
    assert fwd.hdr("X-Keep") == "3"
    assert fwd.headers[-1].name == "X-Method"


def test_sl_reply_with_to_tag_and_append_to_reply_headers(rig):
    rig.send(method="OPTIONS")
    r = rig.phone.recv()
    assert (r.status, r.reason) == (200, "OK")
    assert r.hdr("Allow") == "INVITE, ACK, OPTIONS"
    assert r.hdr("X-Seen-From") == "127.0.0.1"
    tag = r.to.tag
    assert tag and len(tag) == 41 and tag[32] == "-"
    # a retransmission: same tag
    rig.phone.send(modkit.request(method="OPTIONS", via_port=rig.phone.port,
                                  branch="z9hG4bKsame"), rig.port)
    t1 = rig.phone.recv().to.tag
    rig.phone.send(modkit.request(method="OPTIONS", via_port=rig.phone.port,
                                  branch="z9hG4bKsame"), rig.port)
    assert rig.phone.recv().to.tag == t1


def test_sl_reply_error_after_a_failed_forward(rig):
    rig.send(method="INVITE", ruri="sip:broken@example.com")
    r = rig.phone.recv()
    assert (r.status, r.reason) == (475, "Bad URI (475/SL)")


def test_ack_to_an_sl_reply_is_absorbed_and_counted(rig):
    before = rig.stats()
    inv = rig.send(method="INVITE", callid="ack-test@example.com")
    r = rig.phone.recv()
    assert r.status == 486
    ack = modkit.request(method="ACK", via_port=rig.phone.port,
                         callid="ack-test@example.com", to_tag=r.to.tag,
                         branch=inv.via1.branch)
    rig.phone.send(ack, rig.port)
    wait_for(lambda: rig.stats()["received_ACKs"]
             == before["received_ACKs"] + 1, what="received_ACKs + 1")
    assert rig.probe.nothing(0.3)
    # an ACK with a tag sl did not make goes to the script (forwarded)
    other = modkit.request(method="ACK", via_port=rig.phone.port,
                           callid="ack-other@example.com", to_tag="abc")
    rig.phone.send(other, rig.port)
    assert rig.probe.recv().method == "ACK"
    assert rig.stats()["received_ACKs"] == before["received_ACKs"] + 1


def test_statistics_over_mi(rig):
    before = rig.stats()
    assert set(before) == {"1xx_replies", "2xx_replies", "3xx_replies",
                           "4xx_replies", "5xx_replies", "6xx_replies",
                           "sent_replies", "sent_err_replies",
                           "received_ACKs"}
    rig.send(method="OPTIONS")
    rig.phone.recv()
    rig.send(method="INVITE", callid="s2@example.com")
    rig.phone.recv()
    rig.send(method="INVITE", ruri="sip:broken@example.com",
             callid="s3@example.com")
    rig.phone.recv()
    # a worker counts a reply once sendto() returned: the phone may have
    # it a moment before the counter moves
    want = {"2xx_replies": 1, "4xx_replies": 2, "sent_replies": 3,
            "sent_err_replies": 1, "1xx_replies": 0, "received_ACKs": 0}

    def deltas():
        after = rig.stats()
        return {k: after[k] - before[k] for k in want}
    wait_for(lambda: deltas() == want, what=f"sl counters to move by {want}")
    time.sleep(0.2)
    assert deltas() == want


def test_signaling_without_sl_does_not_start(server):
    with pytest.raises(RuntimeError) as ei:
        server.start(f"""
socket=udp:127.0.0.1:{free_port()}
loadmodule "proto_udp.so"
loadmodule "signaling.so"
route {{ send_reply(404, "Not Found"); }}
""", timeout=20)
    assert ("cannot bind the API of module 'sl' (needed by 'signaling'): "
            "it is not loaded") in str(ei.value)


def test_bad_constant_arguments_stop_the_start_with_their_location(server):
    with pytest.raises(RuntimeError) as ei:
        server.start(f"""
socket=udp:127.0.0.1:{free_port()}
loadmodule "proto_udp.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
route {{
    mf_process_maxfwd_header(300);
    is_method("INVITE|FOO");
    subst('/a/b/q');
}}
""", timeout=20)
    err = str(ei.value)
    assert ":7:" in err and "invalid MAXFWD number <300>" in err
    assert ":8:" in err and "unknown method 'FOO'" in err
    assert ":9:" in err and "unknown subst flag 'q'" in err
