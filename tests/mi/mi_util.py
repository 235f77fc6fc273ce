"""Helpers for the MI end-to-end tests: a script with every MI transport,
raw clients that send exact bytes over each transport, and a SIP sender."""
from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from server import REPO, free_port

TRANSPORTS = ("fifo", "datagram", "http")


class Endpoints:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.sip_port = free_port()
        self.dgram_port = free_port()
        self.http_port = free_port(socket.SOCK_STREAM)
        self.fifo = self.workdir / "run" / "opensipy_fifo"
        self.reply_dir = self.workdir / "replies"
        self.reply_dir.mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/mi"

    def script(self, extra: str = "", workers: int = 2) -> str:
        return f"""
log_level=3
udp_workers={workers}
socket=udp:127.0.0.1:{self.sip_port}
loadmodule "proto_udp.so"
loadmodule "example.so"
loadmodule "mi_fifo.so"
loadmodule "mi_datagram.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"
modparam("example", "destination", "1:127.0.0.1:0")
modparam("mi_fifo", "fifo_name", "{self.fifo}")
modparam("mi_fifo", "reply_dir", "{self.reply_dir}/")
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{self.dgram_port}")
modparam("httpd", "port", {self.http_port})
{extra}
route {{
    is_example_destination($si, $var(nope), 1);
    drop;
}}
"""

    def ctl_config(self, kind: str = "fifo") -> Path:
        p = self.workdir / f"ctl-{kind}.cfg"
        p.write_text(f"""[default]
communication_type = {kind}
fifo_file = {self.fifo}
fifo_reply_dir = {self.reply_dir}
datagram_ip = 127.0.0.1
datagram_port = {self.dgram_port}
url = {self.url}
timeout = 10
""")
        return p

    # ---- raw transports: bytes in, reply text out (None: no reply)
    def raw(self, kind: str, data: bytes, timeout: float = 10.0):
        return getattr(self, f"raw_{kind}")(data, timeout)

    def raw_fifo(self, data: bytes, timeout: float = 10.0, name=None):
        name = name or f"test_reply_{os.getpid()}_{time.time_ns()}"
        path = self.reply_dir / name
        os.mkfifo(path, 0o600)
        try:
            rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                with open(self.fifo, "wb") as f:
                    f.write(b":" + name.encode() + b":" + data)
                return _read_line(rfd, timeout)
            finally:
                os.close(rfd)
        finally:
            os.unlink(path)

    def raw_datagram(self, data: bytes, timeout: float = 10.0):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, ("127.0.0.1", self.dgram_port))
            try:
                return s.recv(65536).decode()
            except socket.timeout:
                return None

    def raw_http(self, data: bytes, timeout: float = 10.0):
        req = urllib.request.Request(self.url, data,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read().decode()
            return body or None

    def call(self, kind: str, method: str, params=None, rid=1):
        req = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params is not None:
            req["params"] = params
        text = self.raw(kind, json.dumps(req).encode())
        return json.loads(text)

    def result(self, kind: str, method: str, params=None):
        reply = self.call(kind, method, params)
        assert "error" not in reply, reply
        return reply["result"]

    # ---- SIP
    def send_sip(self, n: int = 1) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            for i in range(n):
                msg = (f"OPTIONS sip:ping@127.0.0.1:{self.sip_port} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{i}x\r\n"
                       f"From: <sip:t@127.0.0.1>;tag={i}\r\n"
                       f"To: <sip:ping@127.0.0.1>\r\n"
                       f"Call-ID: mi-test-{i}-{time.time_ns()}\r\n"
                       f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                       f"Content-Length: 0\r\n\r\n")
                s.sendto(msg.encode(), ("127.0.0.1", self.sip_port))


def _read_line(fd: int, timeout: float):
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if data:
                break
            time.sleep(0.005)
            continue
        data += chunk
    return data.decode()


def run_ctl(args, timeout=30, env=None, cwd=None):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "opensipy.ctl", *args],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=cwd)
