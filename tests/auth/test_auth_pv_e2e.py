"""auth alone in the real server: pv_www_authorize / pv_proxy_authorize with
the password from an $avp (plain and HA1), consume_credentials() and
append_rpid_hf() seen on the request forwarded to the next hop, the
challenge realm made from To/From, disable_nonce_check."""
import hashlib

import pytest

from digestclient import Phone
from server import free_port, mi_call
import modkit

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=2
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "auth.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("auth", "username_spec", "$var(user)")
modparam("auth", "password_spec", "$avp(pass)")
modparam("auth", "calculate_ha1", {calc})
modparam("auth", "disable_nonce_check", {nocheck})
modparam("auth", "realm_prefix", "sip.")

route {{
    $var(user) = "alice";
    $avp(pass) = "{secret}";
    if (is_method("REGISTER")) {{
        if (!pv_www_authorize("")) {{
            www_challenge("", "auth");
            exit;
        }}
        send_reply(200, "OK");
        exit;
    }}
    if (!pv_proxy_authorize("")) {{
        append_to_reply("X-RC: $rc\r\n");
        proxy_challenge("", "auth", "SHA-256");
        exit;
    }}
    consume_credentials();
    $avp(rpid) = "<sip:+123456@example.com>";
    append_rpid_hf("", ";screen=yes");
    forward("udp:127.0.0.1:{next_hop}");
}}
"""


class Rig:
    def __init__(self, server, calc=1, nocheck=0):
        self.sip, self.mi = free_port(), free_port()
        self.next_hop = modkit.Peer()
        ha1 = hashlib.md5(b"alice:example.com:wonderland").hexdigest()
        server.start(SCRIPT.format(
            sip=self.sip, mi=self.mi, calc=calc, nocheck=nocheck,
            secret="wonderland" if calc else ha1,
            next_hop=self.next_hop.port))
        self.phone = Phone(self.sip, "alice", "sip.example.com")

    def close(self):
        self.phone.close()
        self.next_hop.close()


@pytest.fixture
def rig_factory(server):
    rigs = []

    def make(**kw):
        r = Rig(server, **kw)
        rigs.append(r)
        return r
    yield make
    for r in rigs:
        r.close()


@pytest.mark.parametrize("calc", [1, 0], ids=["plain", "ha1"])
def test_pv_www_authorize_with_avp_password(rig_factory, calc):
    rig = rig_factory(calc=calc)
    ph = rig.phone
    first, ok = ph.auth_request("REGISTER", "sip:sip.example.com",
                                "wonderland")
    # the realm comes from the To host, less realm_prefix
    assert first.status == 401
    assert ph.challenges(first)[0]["realm"] == "example.com"
    assert ok.status == 200
    first, bad = ph.auth_request("REGISTER", "sip:sip.example.com", "x")
    assert bad.status == 401


def test_proxy_authorize_consumes_credentials_and_adds_rpid(rig_factory):
    rig = rig_factory(calc=1)
    ph = rig.phone
    first = ph.request("INVITE", "sip:bob@example.com")
    assert first.status == 407
    assert ph.challenges(first)[0]["algorithm"] == "SHA-256"
    first, _ = ph.auth_request("INVITE", "sip:bob@example.com",
                               "wonderland", wait=False)
    got = rig.next_hop.recv()
    assert got.method == "INVITE"
    assert got.hdr("Proxy-Authorization") is None        # consumed
    assert got.hdr("Remote-Party-ID") == \
        "<sip:+123456@example.com>;screen=yes"
    # a user the variables do not name: -1
    other = Phone(rig.sip, "mallory", "example.com")
    try:
        _, r = other.auth_request("INVITE", "sip:bob@example.com",
                                  "wonderland")
        assert r.status == 407 and r.hdr("X-RC") == "-1"
    finally:
        other.close()
    st = mi_call(rig.mi, "get_statistics", {"statistics": ["auth:"]})
    assert st["auth:authorized"] == 1 and st["auth:unknown_users"] == 1


def test_disable_nonce_check_lets_a_nonce_be_reused(rig_factory):
    rig = rig_factory(nocheck=1)
    ph = rig.phone
    first = ph.request("REGISTER", "sip:sip.example.com")
    from digestclient import credentials
    ch = ph.challenges(first)[0]
    hdr = "Authorization: " + credentials(ch, "alice", "wonderland",
                                          "REGISTER", "sip:sip.example.com")
    assert ph.request("REGISTER", "sip:sip.example.com", [hdr]).status == 200
    assert ph.request("REGISTER", "sip:sip.example.com", [hdr]).status == 200
