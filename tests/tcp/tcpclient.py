"""A small SIP-over-TCP client for the tests: framed reads by
Content-Length, and a way to tell that the server closed the connection."""
import re
import select
import socket
import time

_CL = re.compile(rb"^(?:content-length|l)\s*:\s*(\d+)", re.I | re.M)


def request(port, i=0, method="OPTIONS", extra="", body=b"", via_port=None,
            via_params="", callid=None):
    vp = via_port or 5999
    head = (f"{method} sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{vp};branch=z9hG4bKt{i}"
            f"{via_params}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:t@127.0.0.1>;tag=f{i}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {callid or f'tcp{i}@test'}\r\nCSeq: 1 {method}\r\n"
            f"{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class Stream:
    def __init__(self, port, rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.connect(("127.0.0.1", port))
        self.port = port
        self.buf = b""
        self.eof = False

    @property
    def local_port(self):
        return self.s.getsockname()[1]

    def send(self, data):
        self.s.sendall(data)

    def _fill(self, timeout):
        r, _, _ = select.select([self.s], [], [], timeout)
        if not r:
            return False
        try:
            data = self.s.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_msg(self, timeout=5.0):
        """The next whole message (leading CRLFs kept apart: returned as
        b'\\r\\n' one at a time); None on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            if self.buf.startswith(b"\r\n"):
                self.buf = self.buf[2:]
                return b"\r\n"
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                m = _CL.search(self.buf[:end + 2])
                n = int(m.group(1)) if m else 0
                total = end + 4 + n
                if len(self.buf) >= total:
                    msg, self.buf = self.buf[:total], self.buf[total:]
                    return msg
            left = deadline - time.monotonic()
            if left <= 0 or self.eof or not self._fill(left):
                return None

    def closed_within(self, timeout):
        """True when the server closes the connection within timeout
        (whatever it sent before is read and kept)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._fill(left)
        return True

    def close(self):
        self.s.close()
