"""A small SIP digest client for the tests: it reads a challenge, computes
the response with its own code (hashlib directly, not the module under
test) and builds the request again with credentials."""
from __future__ import annotations

import hashlib
import re
import socket
import uuid
from typing import Dict, Optional

from opensipy.parser import SipMsg

_HASH = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def h(alg: str, text) -> str:
    base = alg[:-5] if alg.endswith("-sess") else alg
    if isinstance(text, str):
        text = text.encode()
    return hashlib.new(_HASH[base], text).hexdigest()


def parse_challenge(value: str) -> Dict[str, str]:
    """The params of a ``Digest ...`` challenge (names lower case)."""
    assert value.startswith("Digest "), value
    out = {}
    for m in re.finditer(r'(\w+)=("((?:[^"\\]|\\.)*)"|[^,\s]+)', value[7:]):
        out[m.group(1).lower()] = m.group(3) if m.group(3) is not None \
            else m.group(2)
    return out


def credentials(ch: Dict[str, str], user: str, password: str, method: str,
                uri: str, body: bytes = b"", qop: Optional[str] = None,
                cnonce: str = "0a4f113b", nc: str = "00000001",
                ha1: Optional[str] = None, username: Optional[str] = None,
                response: Optional[str] = None) -> str:
    """The credentials value answering challenge ``ch``.  ``qop`` None:
    the first the challenge offers (none when it offers none)."""
    alg = ch.get("algorithm", "MD5")
    realm, nonce = ch["realm"], ch["nonce"]
    if qop is None and "qop" in ch:
        qop = ch["qop"].split(",")[0].strip()
    username = username or user
    if ha1 is None:
        ha1 = h(alg, f"{username}:{realm}:{password}")
    if alg.endswith("-sess"):
        ha1 = h(alg, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = h(alg, f"{method}:{uri}:{h(alg, body)}")
    else:
        ha2 = h(alg, f"{method}:{uri}")
    if qop:
        resp = h(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    else:
        resp = h(alg, f"{ha1}:{nonce}:{ha2}")
    if response is not None:
        resp = response
    v = (f'Digest username="{username}", realm="{realm}", '
         f'nonce="{nonce}", uri="{uri}", response="{resp}", '
         f'algorithm={alg}')
    if qop:
        v += f', qop={qop}, cnonce="{cnonce}", nc={nc}'
    return v


class Phone:
    """A UDP phone on 127.0.0.1 talking to the server at ``port``."""

    def __init__(self, port: int, user: str = "alice",
                 domain: str = "example.com"):
        self.port = port
        self.user = user
        self.domain = domain
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.lport = self.sock.getsockname()[1]
        self.cseq = 0
        self.callid = uuid.uuid4().hex + "@phone"

    def build(self, method: str, ruri: str, extra=(), body: bytes = b"",
              to_user: Optional[str] = None) -> bytes:
        self.cseq += 1
        to_user = to_user or (self.user if method == "REGISTER" else "bob")
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.lport};branch=z9hG4bK"
                 f"{uuid.uuid4().hex[:16]}",
                 "Max-Forwards: 70",
                 f"From: <sip:{self.user}@{self.domain}>;tag=ft{self.cseq}",
                 f"To: <sip:{to_user}@{self.domain}>",
                 f"Call-ID: {self.callid}",
                 f"CSeq: {self.cseq} {method}",
                 f"Contact: <sip:{self.user}@127.0.0.1:{self.lport}>"]
        lines += list(extra)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def request(self, method: str, ruri: str, extra=(), body: bytes = b"",
                to_user: Optional[str] = None) -> SipMsg:
        self.sock.sendto(self.build(method, ruri, extra, body, to_user),
                         ("127.0.0.1", self.port))
        return self.recv()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def recv(self, timeout: float = 5.0) -> SipMsg:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65535)
        return SipMsg(data)

    def challenges(self, reply: SipMsg):
        name = "WWW-Authenticate" if reply.status == 401 \
            else "Proxy-Authenticate"
        return [parse_challenge(v) for v in reply.hdrs(name)]

    def auth_request(self, method: str, ruri: str, password: str,
                     extra=(), body: bytes = b"", qop=None, alg=None,
                     ha1=None, username=None, to_user=None,
                     response=None, wait=True):
        """Send, answer the challenge, return (challenge reply, final
        reply)."""
        first = self.request(method, ruri, extra, body, to_user)
        if first.status not in (401, 407):
            return first, first
        chs = self.challenges(first)
        ch = next(c for c in chs if c.get("algorithm", "MD5") ==
                  (alg or chs[0].get("algorithm", "MD5")))
        hname = "Authorization" if first.status == 401 \
            else "Proxy-Authorization"
        cred = credentials(ch, username or self.user, password, method,
                           ruri, body, qop, ha1=ha1, response=response)
        data = self.build(method, ruri, list(extra) + [f"{hname}: {cred}"],
                          body, to_user)
        self.send_raw(data)
        return first, (self.recv() if wait else None)

    def close(self):
        self.sock.close()
