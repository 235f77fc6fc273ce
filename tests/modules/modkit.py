"""Helpers for the module tests: real parsed requests with receive info on
a real UDP socket, a UDP peer that plays the phone, and SIP text builders."""
from __future__ import annotations

import socket
import uuid

from opensipy import config
from opensipy.net import udp
from opensipy.parser import ReceiveInfo, SipMsg


def request(method="INVITE", ruri="sip:bob@example.com", via_port=5062,
            via_host="127.0.0.1", to_tag=None, extra=(), body=b"",
            branch=None, callid="call-1@example.com", cseq=1,
            from_tag="ftag1", check=True, max_forwards="70"):
    """The bytes of a request (CRLF, Content-Length set)."""
    branch = branch or "z9hG4bK" + uuid.uuid4().hex[:12]
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/UDP {via_host}:{via_port};branch={branch}"]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [f"From: <sip:alice@example.com>;tag={from_tag}",
              f"To: {to}",
              f"Call-ID: {callid}",
              f"CSeq: {cseq} {method}"]
    lines += list(extra)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse(buf, src=("127.0.0.1", 5062), si=None, check=True):
    m = SipMsg(buf, check=check)
    m.rcv = ReceiveInfo(src[0], src[1], si.host if si else "127.0.0.1",
                        si.port if si else 5060, "udp", si)
    return m


class Peer:
    """A UDP socket on 127.0.0.1 standing for the phone."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes, port: int):
        self.sock.sendto(data, ("127.0.0.1", port))

    def recv(self, timeout=5.0) -> SipMsg:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65535)
        return SipMsg(data)

    def nothing(self, timeout=0.5) -> bool:
        """True when no datagram arrives within timeout."""
        self.sock.settimeout(timeout)
        try:
            self.sock.recvfrom(65535)
        except socket.timeout:
            return True
        return False

    def close(self):
        self.sock.close()


def server_socket():
    """A bound server-side SocketInfo (as the core opens them)."""
    si = config.SocketInfo("udp", "127.0.0.1", 0)
    udp.open_udp(si)
    return si
