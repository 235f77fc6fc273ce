"""The client side of digest (what uac_auth sends) against the published
examples: RFC 2617 §3.5 and RFC 7616 §3.9.1 give the challenge, the cnonce
and nc a client chose and the response it must send; the challenge parser
and the credentials of uac_auth on good and bad input; uac's restore
encoding both ways and its refusal of a forged parameter."""
import pytest

from opensipy_modules.auth import digest
from opensipy_modules.auth.digest import DigestError
from opensipy_modules import uac, uac_auth


def _params(line):
    name, _, value = line.partition(": ")
    return name, digest.parse_credentials(value)


def test_rfc2617_client_answer():
    ch = digest.parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    assert ch.algorithm == "MD5" and ch.pick_qop() == "auth"
    ha1 = digest.calc_ha1("MD5", "Mufasa", "testrealm@host.com",
                          "Circle Of Life")
    line = digest.build_credentials("Authorization", ch, "Mufasa", ha1,
                                    "GET", "/dir/index.html",
                                    cnonce="0a4f113b", nc=1)
    name, c = _params(line)
    assert name == "Authorization"
    assert c.response == "6629fae49393a05397450978507c4ef1"
    assert (c.nc, c.cnonce, c.qop, c.opaque) == (
        "00000001", "0a4f113b", "auth", "5ccc069c403ebaf9f0171e9517f40e41")


@pytest.mark.parametrize("alg,expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256",
     "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_client_answer(alg, expected):
    ch = digest.parse_challenge(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", '
        f'algorithm={alg}, '
        f'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        f'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    ha1 = digest.calc_ha1(alg, "Mufasa", "http-auth@example.org",
                          "Circle of Life")
    line = digest.build_credentials(
        "Proxy-Authorization", ch, "Mufasa", ha1, "GET", "/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", nc=1)
    name, c = _params(line)
    assert name == "Proxy-Authorization"
    assert c.response == expected and c.algorithm == alg


def test_cnonce_is_fresh_and_nc_is_eight_hex_digits():
    ch = digest.parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    ha1 = digest.calc_ha1("MD5", "u", "r", "p")
    seen = set()
    for _ in range(50):
        _, c = _params(digest.build_credentials("Authorization", ch, "u",
                                                ha1, "INVITE", "sip:b@x"))
        assert c.nc == "00000001" and len(c.cnonce) == 16
        seen.add(c.cnonce)
        # the response is the one for that cnonce
        assert c.response == digest.calc_response(
            "MD5", ha1, "n", "INVITE", "sip:b@x", "auth", c.nc, c.cnonce)
    assert len(seen) == 50
    _, c = _params(digest.build_credentials("Authorization", ch, "u", ha1,
                                            "INVITE", "sip:b@x", nc=0x1a))
    assert c.nc == "0000001a"


def test_without_qop_no_cnonce_nc_and_rfc2069_response():
    ch = digest.parse_challenge('Digest realm="r", nonce="n"')
    ha1 = digest.calc_ha1("MD5", "u", "r", "p")
    line = digest.build_credentials("Authorization", ch, "u", ha1, "BYE",
                                    "sip:b@x")
    assert "cnonce" not in line and "nc=" not in line and "qop" not in line
    _, c = _params(line)
    assert c.response == digest.calc_response("MD5", ha1, "n", "BYE",
                                              "sip:b@x")


def test_auth_int_and_sess_on_the_client_side():
    ch = digest.parse_challenge(
        'Digest realm="r", nonce="n", qop="auth-int", algorithm=MD5-sess')
    ha1 = digest.calc_ha1("MD5", "u", "r", "p")
    body = b"v=0\r\n"
    _, c = _params(digest.build_credentials(
        "Authorization", ch, "u", ha1, "INVITE", "sip:b@x", body, "c0"))
    key = digest.sess_key("MD5-sess", ha1, "n", "c0")
    assert c.qop == "auth-int" and c.response == digest.calc_response(
        "MD5-sess", key, "n", "INVITE", "sip:b@x", "auth-int", "00000001",
        "c0", body)


@pytest.mark.parametrize("text,why", [
    ('Basic realm="r"', "not Digest"),
    ('Digest nonce="n"', "realm is missing"),
    ('Digest realm="r"', "nonce is missing"),
    ('Digest realm="r", nonce=""', "nonce is empty"),
    ('Digest realm="r" nonce="n"', "expected"),
])
def test_parse_challenge_refuses_unusable_ones(text, why):
    with pytest.raises(DigestError, match=why):
        digest.parse_challenge(text)


def test_unknown_algorithm_is_reported_not_answered():
    ch = digest.parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-1')
    assert ch.algorithm is None and ch.algorithm_raw == "SHA-1"
    with pytest.raises(DigestError, match="unsupported algorithm 'SHA-1'"):
        digest.build_credentials("Authorization", ch, "u", "0" * 32, "A",
                                 "b")


def test_credential_parameter():
    c = uac_auth.parse_credential(" alice : example.com : secret ")
    assert (c.user, c.realm, c.password, c.ha1) == ("alice", "example.com",
                                                   "secret", None)
    ha1 = digest.calc_ha1("MD5", "alice", "example.com", "secret")
    c = uac_auth.parse_credential(f"alice:example.com:0x{ha1}")
    assert c.password is None and c.ha1_for("MD5") == ha1
    with pytest.raises(DigestError, match="not usable with SHA-256"):
        c.ha1_for("SHA-256")
    for bad, why in (("alice:example.com", "user:realm:password"),
                     ("alice::pw", "realm is empty"),
                     (":r:pw", "user is empty"),
                     ("a:r:p w", "whitespace")):
        with pytest.raises(ValueError, match=why):
            uac_auth.parse_credential(bad)


@pytest.mark.parametrize("passwd", ["", "k3y"])
def test_restore_encoding_goes_both_ways(monkeypatch, passwd):
    monkeypatch.setattr(uac, "restore_passwd", passwd)
    old = '"Alice" <sip:alice@example.com>'
    new = "<sip:anonymous@anonymous.invalid>"
    v = uac.encode_restore(old, new)
    assert ";" not in v and "=" not in v and "alice" not in v
    assert uac.decode_restore(v, old) == new
    assert uac.decode_restore(v, new) == old


def test_restore_refuses_a_forged_or_foreign_parameter(monkeypatch):
    monkeypatch.setattr(uac, "restore_passwd", "")
    # a value made to turn the header into one that adds a line
    import base64
    cur = "<sip:a@x>"
    evil = "<sip:b@x>\r\nX-Injected: 1"
    x = bytes(a ^ b for a, b in zip(evil.encode(),
                                    cur.encode().ljust(len(evil), b"\0")))
    v = base64.urlsafe_b64encode(x).decode().rstrip("=")
    assert uac.decode_restore(v, cur) is None
    assert uac.decode_restore("!!!", cur) is None
    assert uac.decode_restore(uac.encode_restore("<sip:a@x>", "<sip:b@x>"),
                              "<sip:a-much-longer-uri@example.com>") is None


REQ = (b'INVITE sip:bob@example.com SIP/2.0\r\n'
       b'Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n'
       b'From: "Alice A." <sip:alice@example.com>;tag=f1\r\n'
       b'To: sip:bob@example.com\r\n'
       b'Call-ID: c1\r\nCSeq: 4 INVITE\r\nContent-Length: 0\r\n\r\n')


def _hdr_line(msg, name):
    from opensipy.parser import SipMsg
    out = SipMsg(msg.build())
    return out.hdr(name)


@pytest.fixture
def no_restore(monkeypatch):
    monkeypatch.setattr(uac, "_mode", uac.NO_RESTORE)


@pytest.mark.parametrize("display,uri,want", [
    (None, "sip:x@y", '"Alice A." <sip:x@y>;tag=f1'),   # display kept
    ("", "sip:x@y", "<sip:x@y>;tag=f1"),                # display removed
    ("Bob B", "", '"Bob B" <sip:alice@example.com>;tag=f1'),   # URI kept
    ('say "hi"', "sip:x@y", '"say \\"hi\\"" <sip:x@y>;tag=f1'),
    ("token", "sip:x@y", "token <sip:x@y>;tag=f1"),
])
def test_replace_from_texts(no_restore, display, uri, want):
    from opensipy.parser import SipMsg
    m = SipMsg(REQ)
    assert uac.replace_uri(m, "from", display, uri) == 1
    assert _hdr_line(m, "From") == want


def test_replace_to_without_brackets_keeps_the_rest(no_restore):
    from opensipy.parser import SipMsg
    m = SipMsg(REQ)
    assert uac.replace_uri(m, "to", "Callee", "sip:c@example.net") == 1
    assert _hdr_line(m, "To") == "Callee <sip:c@example.net>"


@pytest.mark.parametrize("display,uri", [
    ("x\r\nX-Injected: 1", "sip:x@y"),
    (None, "sip:x@y>\r\nX: 1"),
    (None, "sip:x y@z"),
])
def test_replace_refuses_header_injection(no_restore, display, uri):
    from opensipy.parser import SipMsg
    m = SipMsg(REQ)
    assert uac.replace_uri(m, "from", display, uri) == -1
    assert m.build() == REQ


def test_replace_twice_on_one_branch_fails_cleanly(no_restore):
    from opensipy.parser import SipMsg
    m = SipMsg(REQ)
    assert uac.replace_uri(m, "from", None, "sip:x@y") == 1
    assert uac.replace_uri(m, "from", None, "sip:z@y") == -1
    assert _hdr_line(m, "From") == '"Alice A." <sip:x@y>;tag=f1'
