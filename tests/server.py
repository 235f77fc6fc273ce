"""Start the real ``opensipy`` for end-to-end tests, and always stop it.

A test gets a :class:`Server` from the ``server`` fixture (tests/conftest.py);
``start()`` runs ``python -m opensipy -F -E -f <script>`` in its own process
group with ``NOTIFY_SOCKET`` pointing at a socket of ours, and returns once
the server sent ``READY=1`` (or raises with its stderr when it exits first).
The fixture's finalizer stops whatever is still running: SIGTERM to the
process group, then SIGKILL.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, so a
    killed pytest (a CI timeout, ^C twice, SIGKILL) leaves no server,
    SIPp or database engine behind (PR_SET_PDEATHSIG)."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def popen(*args, **kwargs) -> subprocess.Popen:
    """subprocess.Popen for everything a test starts: the child ends with
    the test process (see _die_with_parent)."""
    kwargs.setdefault("preexec_fn", _die_with_parent)
    return subprocess.Popen(*args, **kwargs)


REPO = Path(__file__).resolve().parents[1]


def free_port(kind=socket.SOCK_DGRAM, host="127.0.0.1") -> int:
    """A port that is free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM \
            else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s2:
                s2.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


class Server:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.proc = None
        self.stderr_path = self.workdir / "opensipy.stderr"
        self.notify_path = None
        self.notify_sock = None
        self.notifications = []

    def write_script(self, text: str, name="opensipy.cfg") -> Path:
        p = self.workdir / name
        p.write_text(text)
        return p

    def start(self, script: str, args=(), timeout=30.0, env=None):
        """Start (or, after terminate(), start again: the notifications of
        the previous run are forgotten, its notify socket closed)."""
        path = self.write_script(script)
        self.notifications = []
        if self.notify_sock is not None:
            self.notify_sock.close()
        self.notify_path = tempfile.mktemp(prefix="osy-notify-",
                                           dir=str(self.workdir))
        self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_sock.bind(self.notify_path)
        e = dict(os.environ)
        e["NOTIFY_SOCKET"] = self.notify_path
        e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
        if env:
            e.update(env)
        cmd = [sys.executable, "-m", "opensipy", "-F", "-E", "-f", str(path),
               *args]
        self._stderr = open(self.stderr_path, "wb")
        self.proc = popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env=e,
                                     start_new_session=True,
                                     cwd=str(self.workdir))
        self.wait_notify("READY=1", timeout)
        return self

    def _drain_notify(self, wait: float) -> None:
        self.notify_sock.settimeout(wait)
        while True:
            try:
                self.notifications.append(
                    self.notify_sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return
            self.notify_sock.settimeout(0)

    def wait_notify(self, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = self.proc.poll() is not None
            self._drain_notify(0 if exited else 0.1)
            if any(what in n for n in self.notifications):
                return
            if exited:
                raise RuntimeError(f"opensipy exited with "
                                   f"{self.proc.returncode} before {what}:\n"
                                   f"{self.stderr()}")
        raise RuntimeError(f"no {what} within {timeout}s:\n{self.stderr()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def children(self):
        """{pid: title} of the attendant's children."""
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid != self.pid:
                    continue
                title = (d / "cmdline").read_bytes().split(b"\0")[0]
                out[int(d.name)] = title.decode(errors="replace").strip()
            except (FileNotFoundError, ProcessLookupError, IndexError,
                    ValueError):
                continue
        return out

    def terminate(self, timeout=15.0) -> int:
        """SIGTERM the attendant and wait for it; returns its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            try:   # whatever is left in the group (children) goes too
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self.proc.poll() is None:
                self.proc.wait(5)
            self._stderr.close()
        if self.notify_sock is not None:
            self.notify_sock.close()


def run_opensipy(args, timeout=60, cwd=None, env=None):
    """Run the opensipy command to completion (for -c, -V, daemon mode)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("NOTIFY_SOCKET", None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "opensipy", *args],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=e)


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def mi_call(port: int, method: str, params=None, timeout=5.0):
    """One JSON-RPC request to the mi_datagram module at 127.0.0.1:port;
    returns the result (raises AssertionError with the error object)."""
    import json
    req = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        req["params"] = params
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(json.dumps(req).encode(), ("127.0.0.1", port))
        reply = json.loads(s.recv(65535))
    assert "error" not in reply, reply["error"]
    return reply["result"]
