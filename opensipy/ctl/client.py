"""MI clients for opensipyctl: FIFO (OpenSIPS 3.x framing), datagram (UDP
or Unix) and HTTP.  Each ``call(method, params)`` returns the JSON-RPC
``result`` or raises :class:`MIReplyError` (the server answered with an
error) or :class:`NotRunning` (nobody answers at that address)."""
from __future__ import annotations

import errno
import json
import os
import select
import socket
import stat
import tempfile
import time
import urllib.error
import urllib.request
from itertools import count

from ..mi.fifo import frame

_ids = count(1)


class CtlError(Exception):
    """A failure to report in one line; ``exit_code`` is the process's."""
    exit_code = 1


class NotRunning(CtlError):
    exit_code = 3


class MIReplyError(CtlError):
    exit_code = 1

    def __init__(self, code, message, data=None):
        self.code, self.message, self.data = code, message, data
        extra = f" ({data})" if data not in (None, "") else ""
        super().__init__(f"error {code}: {message}{extra}")


def request_text(method: str, params) -> str:
    req = {"jsonrpc": "2.0", "method": method, "id": next(_ids)}
    if params:
        req["params"] = params
    return json.dumps(req)


def parse_reply(text) -> object:
    try:
        reply = json.loads(text)
    except ValueError:
        raise CtlError(f"the server sent a reply that is not JSON: "
                       f"{text[:200]!r}") from None
    if not isinstance(reply, dict):
        raise CtlError("the server sent a reply that is not a JSON object")
    err = reply.get("error")
    if isinstance(err, dict):
        raise MIReplyError(err.get("code"), err.get("message"),
                           err.get("data"))
    if "result" not in reply:
        raise CtlError("the server's reply has neither result nor error")
    return reply["result"]


class FifoClient:
    def __init__(self, fifo_file: str, reply_dir: str = "/tmp",
                 timeout: float = 10.0):
        self.fifo_file = fifo_file
        self.reply_dir = reply_dir
        self.timeout = timeout

    def describe(self) -> str:
        return f"FIFO {self.fifo_file}"

    def call(self, method: str, params=None):
        try:
            st = os.stat(self.fifo_file)
        except FileNotFoundError:
            raise NotRunning(f"cannot reach opensipy: FIFO {self.fifo_file} "
                             f"does not exist (is opensipy running?)") \
                from None
        except PermissionError:
            raise CtlError(f"no permission to reach {self.fifo_file}") \
                from None
        if not stat.S_ISFIFO(st.st_mode):
            raise CtlError(f"{self.fifo_file} is not a FIFO")
        name = f"opensipyctl_reply_{os.getpid()}_{time.time_ns()}"
        path = os.path.join(self.reply_dir, name)
        os.mkfifo(path, 0o600)
        try:
            if os.geteuid() == 0 and st.st_uid != 0:
                # root talking to a server that runs as its own user (the
                # systemd unit's User=opensipy): the server must be able to
                # open our reply FIFO, which stays private to the two
                os.chown(path, st.st_uid, -1)
            try:
                wfd = os.open(self.fifo_file, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    raise NotRunning(f"cannot reach opensipy: nobody reads "
                                     f"{self.fifo_file} (is opensipy "
                                     f"running?)") from None
                raise CtlError(f"cannot open {self.fifo_file}: "
                               f"{e.strerror}") from None
            try:
                os.write(wfd, frame(name, request_text(method, params)))
            finally:
                os.close(wfd)
            return parse_reply(self._read(path))
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    def _read(self, path: str) -> str:
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            data = b""
            deadline = time.monotonic() + self.timeout
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CtlError(f"no reply from opensipy within "
                                   f"{self.timeout:g}s")
                r, _, _ = select.select([rfd], [], [], left)
                if not r:
                    continue
                chunk = os.read(rfd, 65536)
                if not chunk:
                    if data:
                        break
                    time.sleep(0.005)   # writer not connected yet
                    continue
                data += chunk
            return data.decode("utf-8", "replace")
        finally:
            os.close(rfd)


class DatagramClient:
    def __init__(self, address, timeout: float = 5.0):
        """address: (host, port) or the path of a Unix socket."""
        self.address = address
        self.timeout = timeout

    def describe(self) -> str:
        a = self.address
        return f"datagram {a[0]}:{a[1]}" if isinstance(a, tuple) \
            else f"datagram {a}"

    def call(self, method: str, params=None):
        unix = isinstance(self.address, str)
        own = None
        if unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            own = os.path.join(tempfile.gettempdir(),
                               f"opensipyctl_{os.getpid()}_{time.time_ns()}")
            s.bind(own)
        else:
            info = socket.getaddrinfo(self.address[0], self.address[1],
                                      type=socket.SOCK_DGRAM)[0]
            s = socket.socket(info[0], socket.SOCK_DGRAM)
            s.connect(info[4])
        try:
            s.settimeout(self.timeout)
            data = request_text(method, params).encode()
            try:
                if unix:
                    s.sendto(data, self.address)
                else:
                    s.send(data)
                reply = s.recv(65536)
            except (ConnectionRefusedError, FileNotFoundError):
                raise NotRunning(f"cannot reach opensipy at "
                                 f"{self.describe()} (is opensipy "
                                 f"running?)") from None
            except socket.timeout:
                raise CtlError(f"no reply from {self.describe()} within "
                               f"{self.timeout:g}s") from None
            return parse_reply(reply.decode("utf-8", "replace"))
        finally:
            s.close()
            if own:
                try:
                    os.unlink(own)
                except OSError:
                    pass


class HttpClient:
    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url
        self.timeout = timeout

    def describe(self) -> str:
        return self.url

    def call(self, method: str, params=None):
        body = request_text(method, params).encode()
        req = urllib.request.Request(
            self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                text = r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            raise CtlError(f"{self.url} answered HTTP {e.code} "
                           f"{e.reason}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                raise NotRunning(f"cannot reach opensipy at {self.url} (is "
                                 f"opensipy running?)") from None
            raise CtlError(f"cannot reach {self.url}: {e.reason}") from None
        except socket.timeout:
            raise CtlError(f"no reply from {self.url} within "
                           f"{self.timeout:g}s") from None
        return parse_reply(text)
