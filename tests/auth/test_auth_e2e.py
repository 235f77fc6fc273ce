"""auth + auth_db in the real server with the subscriber table on SQLite
(and once on PostgreSQL): REGISTER challenged with 401 and INVITE with 407,
then accepted; plain passwords (calculate_ha1) and stored HA1s; with and
without use_domain; wrong passwords, unknown users, stale and foreign
nonces, replays, auth-int over a body, every algorithm; the return codes
seen by the script (X-RC on the replies) and the statistics (MI)."""
import os
import subprocess
import sys
import time
import uuid

import pytest

from opensipy.db import admin

from digestclient import Phone, credentials
from server import REPO, free_port, mi_call

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=2
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "{driver}.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("auth", "nonce_expire", {expire})
modparam("auth", "secret", "{secret}")
modparam("auth_db", "db_url", "{url}")
modparam("auth_db", "calculate_ha1", {calc})
modparam("auth_db", "password_column", "{pwcol}")
modparam("auth_db", "use_domain", {use_domain})
modparam("auth_db", "load_credentials", "$avp(mail)=email_address;rpid")

route {{
    if (is_method("REGISTER")) {{
        www_authorize("", "subscriber");
        $var(rc) = $rc;
        if ($var(rc) < 0) {{
            append_to_reply("X-RC: $var(rc)\r\n");
            www_challenge("", "{qop}", "{algs}");
            exit;
        }}
        append_to_reply("X-User: $au\r\nX-Mail: $avp(mail)\r\n");
        send_reply(200, "OK");
        exit;
    }}
    if (is_method("INVITE|MESSAGE")) {{
        proxy_authorize("", "subscriber");
        $var(rc) = $rc;
        if ($var(rc) < 0) {{
            append_to_reply("X-RC: $var(rc)\r\n");
            proxy_challenge("", "{qop}", "{algs}");
            exit;
        }}
        if (is_rpid_user_e164())
            append_to_reply("X-E164: yes\r\n");
        send_reply(200, "Authorized");
        exit;
    }}
    send_reply(405, "Not Here");
}}
"""


def ctl(*args, url):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "opensipy.ctl", "user",
                           "-u", url, *args], capture_output=True,
                          text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def make_db(url, users):
    """The subscriber table, filled the way an operator does."""
    admin.create(url, ["auth_db"])
    for aor, pw in users:
        r = ctl("add", aor, pw, url=url)
        assert r.returncode == 0, r.stderr


def set_plain_passwords(url, users):
    from opensipy.db import db_bind_mod
    con = db_bind_mod(url).init(url)
    try:
        con.use_table("subscriber")
        for aor, pw in users:
            u, d = aor.split("@")
            con.update(["username", "domain"], ["=", "="], [u, d],
                       ["password", "email_address", "rpid"],
                       [pw, f"{u}@mail.test", "sip:+4915112345@x"])
    finally:
        con.close()


class Rig:
    def __init__(self, server, tmp_path, url=None, calc=0, use_domain=1,
                 qop="auth", algs="MD5", expire=30):
        self.url = url or f"sqlite://{tmp_path}/auth.db"
        self.users = [("alice@example.com", "wonderland"),
                      ("bob@other.org", "builder")]
        make_db(self.url, self.users)
        set_plain_passwords(self.url, self.users)
        self.sip, self.mi = free_port(), free_port()
        driver = "db_postgres" if self.url.startswith("postgres") \
            else "db_sqlite"
        server.start(SCRIPT.format(
            sip=self.sip, mi=self.mi, driver=driver, url=self.url,
            calc=calc, pwcol="password" if calc else "ha1",
            use_domain=use_domain, qop=qop, algs=algs, expire=expire,
            secret="s3cret"))
        self.phones = []

    def phone(self, user="alice", domain="example.com"):
        p = Phone(self.sip, user, domain)
        self.phones.append(p)
        return p

    def stat(self, name):
        return mi_call(self.mi, "get_statistics",
                       {"statistics": [f"auth:{name}"]})[f"auth:{name}"]

    def close(self):
        for p in self.phones:
            p.close()


@pytest.fixture
def rig_factory(server, tmp_path):
    rigs = []

    def make(**kw):
        r = Rig(server, tmp_path, **kw)
        rigs.append(r)
        return r
    yield make
    for r in rigs:
        r.close()


RURI = "sip:example.com"


@pytest.mark.parametrize("calc", [0, 1], ids=["ha1", "plain"])
@pytest.mark.parametrize("use_domain", [1, 0], ids=["domain", "nodomain"])
def test_register_and_invite_challenged_then_accepted(rig_factory, calc,
                                                      use_domain):
    rig = rig_factory(calc=calc, use_domain=use_domain)
    ph = rig.phone()
    first, ok = ph.auth_request("REGISTER", RURI, "wonderland")
    assert first.status == 401
    assert first.hdr("X-RC") == "-4"              # no credentials
    ch = ph.challenges(first)[0]
    assert ch["realm"] == "example.com" and ch["qop"] == "auth"
    assert ch.get("stale") is None
    assert ok.status == 200, ok.hdr("X-RC")
    assert ok.hdr("X-User") == "alice"
    assert ok.hdr("X-Mail") == "alice@mail.test"  # load_credentials
    first, ok = ph.auth_request("INVITE", "sip:bob@example.com",
                                "wonderland")
    assert first.status == 407 and first.hdr("X-RC") == "-4"
    assert ph.challenges(first)[0]["realm"] == "example.com"
    assert ok.status == 200 and ok.reason == "Authorized"
    assert ok.hdr("X-E164") == "yes"              # rpid loaded, e164
    assert rig.stat("challenges") == 2
    assert rig.stat("authorized") == 2


def test_use_domain_separates_users_of_two_domains(rig_factory):
    rig = rig_factory(use_domain=1)
    # bob exists in other.org only: as bob@example.com he is unknown
    ph = rig.phone("bob", "example.com")
    first, again = ph.auth_request("REGISTER", RURI, "builder")
    assert again.status == 401 and again.hdr("X-RC") == "-1"
    ph2 = rig.phone("bob", "other.org")
    first, ok = ph2.auth_request("REGISTER", "sip:other.org", "builder")
    assert ok.status == 200
    assert rig.stat("unknown_users") == 1


def test_without_use_domain_the_user_name_alone_finds_the_row(rig_factory):
    rig = rig_factory(use_domain=0, calc=1)
    # realm example.com, the row says other.org: with calculate_ha1 the
    # HA1 is made with the realm, so bob is accepted under any domain
    ph = rig.phone("bob", "example.com")
    first, ok = ph.auth_request("REGISTER", RURI, "builder")
    assert ok.status == 200


def test_wrong_password_unknown_user_and_foreign_nonce_get_new_challenges(
        rig_factory):
    rig = rig_factory()
    ph = rig.phone()
    first, bad = ph.auth_request("REGISTER", RURI, "not-the-password")
    assert bad.status == 401 and bad.hdr("X-RC") == "-2"
    assert ph.challenges(bad)[0].get("stale") is None
    ghost = rig.phone("ghost")
    first, bad = ghost.auth_request("REGISTER", RURI, "x")
    assert bad.status == 401 and bad.hdr("X-RC") == "-1"
    # a nonce made by another server (other secret): stale, re-challenged
    forged = {"realm": "example.com", "qop": "auth",
              "nonce": "%08x" % (int(time.time()) + 30) + "0" * 16 +
                       "ab" * 16}
    cred = credentials(forged, "alice", "wonderland", "REGISTER", RURI)
    r = ph.request("REGISTER", RURI, [f"Authorization: {cred}"])
    assert r.status == 401 and r.hdr("X-RC") == "-3"
    assert ph.challenges(r)[0]["stale"] == "true"
    assert rig.stat("invalid_passwords") == 1
    assert rig.stat("unknown_users") == 1
    assert rig.stat("invalid_nonces") == 1
    assert rig.stat("authorized") == 0


def test_stale_nonce_is_answered_with_stale_true(rig_factory):
    rig = rig_factory(expire=1)
    ph = rig.phone()
    first = ph.request("REGISTER", RURI)
    ch = ph.challenges(first)[0]
    time.sleep(2.2)
    cred = credentials(ch, "alice", "wonderland", "REGISTER", RURI)
    r = ph.request("REGISTER", RURI, [f"Authorization: {cred}"])
    assert r.status == 401 and r.hdr("X-RC") == "-3"
    ch2 = ph.challenges(r)[0]
    assert ch2["stale"] == "true" and ch2["nonce"] != ch["nonce"]
    # the client retries with the new nonce without asking the user
    cred = credentials(ch2, "alice", "wonderland", "REGISTER", RURI)
    assert ph.request("REGISTER", RURI,
                      [f"Authorization: {cred}"]).status == 200
    assert rig.stat("stale_nonces") == 1


def test_a_nonce_is_good_for_one_authentication_only(rig_factory):
    rig = rig_factory()
    ph = rig.phone()
    first = ph.request("REGISTER", RURI)
    ch = ph.challenges(first)[0]
    hdr = "Authorization: " + credentials(ch, "alice", "wonderland",
                                          "REGISTER", RURI)
    assert ph.request("REGISTER", RURI, [hdr]).status == 200
    # the same credentials replayed (a sniffer): stale
    replay = ph.request("REGISTER", RURI, [hdr])
    assert replay.status == 401 and replay.hdr("X-RC") == "-3"
    assert ph.challenges(replay)[0]["stale"] == "true"


def test_auth_int_covers_the_body(rig_factory):
    rig = rig_factory(qop="auth-int")
    ph = rig.phone()
    body = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
    first, ok = ph.auth_request("INVITE", "sip:bob@example.com",
                                "wonderland", body=body)
    assert ph.challenges(first)[0]["qop"] == "auth-int"
    assert ok.status == 200
    # the body changed on the way: the response no longer matches
    ch = ph.challenges(ph.request("INVITE", "sip:bob@example.com",
                                  body=body))[0]
    cred = credentials(ch, "alice", "wonderland", "INVITE",
                       "sip:bob@example.com", body, "auth-int")
    r = ph.request("INVITE", "sip:bob@example.com",
                   [f"Proxy-Authorization: {cred}"], body + b"m=audio\r\n")
    assert r.status == 407 and r.hdr("X-RC") == "-2"


@pytest.mark.parametrize("alg", ["MD5", "MD5-sess", "SHA-256",
                                 "SHA-256-sess", "SHA-512-256",
                                 "SHA-512-256-sess"])
def test_every_algorithm_with_stored_hashes(rig_factory, alg):
    rig = rig_factory(algs="SHA-512-256,SHA-256,MD5,MD5-sess,SHA-256-sess,"
                           "SHA-512-256-sess")
    ph = rig.phone()
    first, ok = ph.auth_request("REGISTER", RURI, "wonderland", alg=alg)
    # one challenge per algorithm, the preferred first (RFC 8760)
    assert [c["algorithm"] for c in ph.challenges(first)] == [
        "SHA-512-256", "SHA-256", "MD5", "MD5-sess", "SHA-256-sess",
        "SHA-512-256-sess"]
    assert ok.status == 200, ok.hdr("X-RC")


def test_no_qop_rfc2069_response(rig_factory):
    rig = rig_factory(qop="")
    ph = rig.phone()
    first, ok = ph.auth_request("REGISTER", RURI, "wonderland")
    assert "qop" not in ph.challenges(first)[0]
    assert ok.status == 200


@pytest.mark.parametrize("bad", [
    'Digest username="alice", realm="example.com", nonce="abc", uri="sip:x"',
    'Digest username="alice" realm="example.com"',
    'Digest username="alice, realm="example.com", nonce="n", uri="u", '
    'response="0123456789abcdef0123456789abcdef"',
    'Digest username="alice", realm="example.com", nonce="n", uri="u", '
    'response="0123456789abcdef0123456789abcdef", qop=auth',
    'Digest username="alice", realm="example.com", nonce="n", uri="u", '
    'response="xyz"',
    'Digest username="alice", realm="example.com", nonce="n", uri="u", '
    'response="0123456789abcdef0123456789abcdef", algorithm=RC4',
])
def test_malformed_authorization_gets_400(rig_factory, bad):
    rig = rig_factory()
    ph = rig.phone()
    r = ph.request("REGISTER", RURI, [f"Authorization: {bad}"])
    assert r.status == 400
    assert rig.stat("bad_credentials") == 1


def test_subscriber_table_on_postgresql(rig_factory, pg_cluster):
    # opensipyctl's way: `db create` makes the database itself
    url = pg_cluster.url("auth_" + uuid.uuid4().hex[:10])
    rig = rig_factory(url=url, algs="SHA-256")
    ph = rig.phone()
    first, ok = ph.auth_request("REGISTER", RURI, "wonderland")
    assert ph.challenges(first)[0]["algorithm"] == "SHA-256"
    assert ok.status == 200
    first, bad = ph.auth_request("INVITE", "sip:bob@example.com", "nope")
    assert bad.status == 407 and bad.hdr("X-RC") == "-2"
    # the password changed with opensipyctl: the new one is taken at once
    assert ctl("passwd", "alice@example.com", "newpass", url=url
               ).returncode == 0
    first, ok = ph.auth_request("INVITE", "sip:bob@example.com", "newpass")
    assert ok.status == 200
