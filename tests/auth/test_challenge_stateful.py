"""Challenges go out through the signaling API: with a transaction (tm's
hook, here a stand-in with its shape) the 401/407 is tm's reply and
carries the WWW-/Proxy-Authenticate headers queued on the request, as
OpenSIPS's add_lump_rpl + sigb.reply do; without one, sl sends it."""
import pytest

import modkit
import opensipy_modules.auth as auth
import opensipy_modules.signaling as sig
from opensipy_modules.auth import nonce as nm


class FakeTm:
    def __init__(self):
        self.replies = []

    def t_gett(self, msg):
        return "T"

    def t_reply(self, msg, code, reason):
        # tm sends what is queued on the request, as sl does
        self.replies.append((code, reason, list(msg.reply_hdrs)))
        return 1

    def t_gen_totag(self, msg):
        return "tm-tag"


@pytest.fixture
def with_tm():
    saved = (sig.tm_api, sig.sl_api, auth.sig, auth._secret, auth._index)
    tm = FakeTm()
    sig.tm_api, sig.sl_api = tm, None
    auth.sig = sig.load_api()
    auth._secret = b"k"
    auth._index = nm.NonceIndex(size=128)
    yield tm
    auth._index.destroy()
    sig.tm_api, sig.sl_api, auth.sig, auth._secret, auth._index = saved


def test_www_and_proxy_challenges_are_stateful_with_tm(with_tm):
    msg = modkit.parse(modkit.request(method="REGISTER",
                                      ruri="sip:example.com"))
    assert auth.www_challenge(msg, "", 1, ["SHA-256", "MD5"]) == 0
    (code, reason, hdrs), = with_tm.replies
    assert (code, reason) == (401, "Unauthorized")
    assert [h.split(",")[-1].strip() for h in hdrs] == [
        "algorithm=SHA-256", "algorithm=MD5"]
    assert all(h.startswith('WWW-Authenticate: Digest realm="example.com"')
               and h.endswith("\r\n") for h in hdrs)
    inv = modkit.parse(modkit.request(method="INVITE"))
    assert auth.proxy_challenge(inv, "example.org") == 0
    code, reason, hdrs = with_tm.replies[1]
    assert (code, reason) == (407, "Proxy Authentication Required")
    assert hdrs[0].startswith('Proxy-Authenticate: Digest '
                              'realm="example.org", nonce="')
    assert "qop" not in hdrs[0]
