"""topology_hiding's keyed encodings without sockets, and the start-up
checks of its parameters and flags through the real ``opensipy -c``."""
import base64

import pytest

from opensipy_modules.topology_hiding.codec import (CallidCodec, Sealer,
                                                    ThinfoError)

from server import free_port


@pytest.mark.parametrize("scheme", ["base64", "base32"])
def test_seal_open_round_trip_and_alphabet(scheme):
    s = Sealer("pw", scheme)
    plain = b'{"c":"sip:a@10.0.0.1:5060","r":["sip:p;lr"]}'
    t1, t2 = s.seal(plain), s.seal(plain)
    assert t1 != t2                      # a fresh nonce each time
    assert s.open(t1) == plain and s.open(t2) == plain
    assert b"10.0.0.1" not in t1.encode()
    ok = set("abcdefghijklmnopqrstuvwxyz234567") if scheme == "base32" \
        else set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                 "0123456789-_")
    assert set(t1) <= ok
    if scheme == "base32":               # a peer that upper-cases it
        assert s.open(t1.upper()) == plain


def test_every_changed_byte_is_refused():
    s = Sealer("pw")
    raw = base64.urlsafe_b64decode(s.seal(b"hello world") + "==")
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        tok = base64.urlsafe_b64encode(bytes(bad)).rstrip(b"=").decode()
        with pytest.raises(ThinfoError):
            s.open(tok)


@pytest.mark.parametrize("tok", ["", "A", "!!!", "é", "AAAA" * 3,
                                 "AQ" + "A" * 60])
def test_garbage_is_refused(tok):
    with pytest.raises(ThinfoError):
        Sealer("pw").open(tok)


def test_another_password_cannot_open():
    with pytest.raises(ThinfoError, match="authentication"):
        Sealer("other").open(Sealer("pw").seal(b"x"))


def test_callid_codec_is_deterministic_and_keyed():
    c = CallidCodec("pw", "DLGCH_")
    h = c.encode("abc@10.0.0.1")
    assert h == c.encode("abc@10.0.0.1") and h.startswith("DLGCH_")
    assert "10.0.0.1" not in h
    assert c.decode(h) == "abc@10.0.0.1"
    assert c.encode("abd@10.0.0.1") != h
    with pytest.raises(ThinfoError):
        CallidCodec("other", "DLGCH_").decode(h)
    with pytest.raises(ThinfoError):
        c.decode(h[:-2] + ("A" if h[-2] != "A" else "B") + h[-1])
    with pytest.raises(ThinfoError):
        c.decode("X" + h)


BASE = """
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "topology_hiding.so"
{extra}
route {{
    {call}
    t_relay();
}}
"""


@pytest.mark.parametrize("call,extra,err", [
    ('topology_hiding("UX");', "", "unknown topology_hiding flag"),
    ('topology_hiding("D");', "", "needs the dialog module"),
    ("topology_hiding();",
     'modparam("topology_hiding", "force_dialog", 1)', "force_dialog"),
    ("topology_hiding();",
     'modparam("topology_hiding", "th_contact_encode_scheme", "rot13")',
     "unknown encoding scheme"),
    ("topology_hiding();",
     'modparam("topology_hiding", "th_contact_encode_passwd", "")',
     "empty password"),
    ("topology_hiding();",
     'modparam("topology_hiding", "th_contact_encode_param", "a b")',
     "bad th_contact_encode_param"),
])
def test_bad_flags_and_parameters_stop_the_start(server, call, extra, err):
    with pytest.raises(RuntimeError):
        server.start(BASE.format(port=free_port(), extra=extra, call=call),
                     timeout=20)
    assert err in server.stderr()
