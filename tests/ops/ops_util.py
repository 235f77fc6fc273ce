"""Helpers for the ops tests: a script with httpd + mi_http + mi_datagram,
and small raw HTTP clients."""
from __future__ import annotations

import http.client
import json
import socket
import time

from server import free_port


class Ports:
    def __init__(self):
        self.sip = free_port()
        self.mi = free_port()
        self.http = free_port(socket.SOCK_STREAM)

    def script(self, extra: str = "", workers: int = 2, route: str = "",
               head: str = "", httpd: str = "", loads: str = "") -> str:
        return f"""
log_level=3
udp_workers={workers}
socket=udp:127.0.0.1:{self.sip}
{head}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "mi_datagram.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"
{loads}
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{self.mi}")
modparam("httpd", "port", {self.http})
{httpd}
{extra}
route {{
{route or '    sl_send_reply(200, "OK");'}
}}
"""


def http_mi(port: int, method: str, params=None, timeout: float = 5.0):
    """One MI call over HTTP on a fresh connection; returns the result."""
    req = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        req["params"] = params
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/mi", json.dumps(req),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.status
        reply = json.loads(r.read())
    finally:
        c.close()
    assert "error" not in reply, reply
    return reply["result"]


def http_get(port: int, path: str, timeout: float = 5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        c.close()


def read_reply(s: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or the timeout)."""
    s.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        out += d
    return out


def send_sip_options(port: int, n: int = 1, tag: str = "o") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        for i in range(n):
            msg = (f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{tag}{i}\r\n"
                   f"From: <sip:t@127.0.0.1>;tag={i}\r\n"
                   f"To: <sip:ping@127.0.0.1>\r\n"
                   f"Call-ID: {tag}-{i}-{time.time_ns()}\r\n"
                   f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                   f"Content-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), ("127.0.0.1", port))
