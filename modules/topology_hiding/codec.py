"""The keyed encodings of topology_hiding.

``Sealer`` seals the routing state topology_hiding keeps in our Contact
(the ``thinfo`` URI parameter) when no dialog stores it: encrypt-then-MAC
with keys derived from ``th_contact_encode_passwd``:

    token = enc(version | nonce(12) | ciphertext | tag(16))
    ciphertext = plaintext XOR HMAC-SHA256(k_enc, nonce | counter) blocks
    tag = HMAC-SHA256(k_mac, version | nonce | ciphertext)[:16]

so a peer can neither read the other side's addresses nor change them: a
token that was altered, cut or made with another password fails
:meth:`Sealer.open` with :class:`ThinfoError` (checked in constant time
before anything is decrypted or parsed).

``CallidCodec`` hides a Call-ID the same way but deterministically (the
nonce is a MAC of the Call-ID itself, a synthetic IV), so every message
of a call gets the same hidden Call-ID with no state kept, and the hidden
one decodes back only with the password (``th_callid_passwd``).

Both use the standard library only (hmac, hashlib, base64).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

VERSION = b"\x01"
NONCE = 12
TAG = 16
SIV = 12


class ThinfoError(ValueError):
    """A sealed value that is malformed or fails authentication."""


def _keys(password: str, label: bytes):
    k = password.encode("utf-8")
    return (hmac.new(k, label + b"/enc", hashlib.sha256).digest(),
            hmac.new(k, label + b"/mac", hashlib.sha256).digest())


def _stream(key: bytes, nonce: bytes, n: int) -> bytes:
    out = bytearray()
    ctr = 0
    while len(out) < n:
        out += hmac.new(key, nonce + ctr.to_bytes(4, "big"),
                        hashlib.sha256).digest()
        ctr += 1
    return bytes(out[:n])


def _xor(data: bytes, ks: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(ks, "big")).to_bytes(
        len(data), "big")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    pad = "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode((text + pad).encode("ascii"))


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).rstrip(b"=").decode("ascii").lower()


def _unb32(text: str) -> bytes:
    pad = "=" * (-len(text) % 8)
    return base64.b32decode((text.upper() + pad).encode("ascii"))


SCHEMES = {"base64": (_b64, _unb64), "base32": (_b32, _unb32)}


def _decode(dec, text: str) -> bytes:
    try:
        if not text.isascii():
            raise ValueError("not ASCII")
        return dec(text)
    except (ValueError, binascii.Error) as e:
        raise ThinfoError(f"not a valid encoding ({e})") from None


class Sealer:
    def __init__(self, password: str, scheme: str = "base64",
                 label: bytes = b"opensipy-thinfo"):
        if not password:
            raise ValueError("empty password")
        if scheme not in SCHEMES:
            raise ValueError(f"unknown encoding scheme {scheme!r} "
                             f"(base64 or base32)")
        self._ek, self._mk = _keys(password, label)
        self._enc, self._dec = SCHEMES[scheme]

    def seal(self, plain: bytes) -> str:
        nonce = os.urandom(NONCE)
        ct = _xor(plain, _stream(self._ek, nonce, len(plain)))
        tag = hmac.new(self._mk, VERSION + nonce + ct,
                       hashlib.sha256).digest()[:TAG]
        return self._enc(VERSION + nonce + ct + tag)

    def open(self, token: str) -> bytes:
        raw = _decode(self._dec, token)
        if len(raw) < 1 + NONCE + TAG:
            raise ThinfoError("too short")
        if raw[:1] != VERSION:
            raise ThinfoError(f"unknown version {raw[0]}")
        nonce, ct, tag = raw[1:1 + NONCE], raw[1 + NONCE:-TAG], raw[-TAG:]
        want = hmac.new(self._mk, VERSION + nonce + ct,
                        hashlib.sha256).digest()[:TAG]
        if not hmac.compare_digest(tag, want):
            raise ThinfoError("authentication failed")
        return _xor(ct, _stream(self._ek, nonce, len(ct)))


class CallidCodec:
    """Call-ID ↔ ``prefix`` + base64url(siv | ciphertext)."""

    def __init__(self, password: str, prefix: str):
        if not password:
            raise ValueError("empty password")
        self._ek, self._mk = _keys(password, b"opensipy-callid")
        self.prefix = prefix

    def encode(self, callid: str) -> str:
        p = callid.encode("utf-8", "surrogateescape")
        siv = hmac.new(self._mk, p, hashlib.sha256).digest()[:SIV]
        return self.prefix + _b64(siv + _xor(p, _stream(self._ek, siv,
                                                         len(p))))

    def is_encoded(self, callid: str) -> bool:
        return callid.startswith(self.prefix)

    def decode(self, hidden: str) -> str:
        if not hidden.startswith(self.prefix):
            raise ThinfoError("no prefix")
        raw = _decode(_unb64, hidden[len(self.prefix):])
        if len(raw) <= SIV:
            raise ThinfoError("too short")
        siv, ct = raw[:SIV], raw[SIV:]
        p = _xor(ct, _stream(self._ek, siv, len(ct)))
        want = hmac.new(self._mk, p, hashlib.sha256).digest()[:SIV]
        if not hmac.compare_digest(siv, want):
            raise ThinfoError("authentication failed")
        return p.decode("utf-8", "surrogateescape")
