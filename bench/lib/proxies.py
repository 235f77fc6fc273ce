"""The proxies the bench can put between the SIPp UAC and UAS.

Each one knows which scenarios it can run, how to render its script for a
step (ports, workers), the command that starts it in the foreground, when it
is ready, and what it does about the UDP receive buffer.

* ``kamailio``  bench/kamailio/<scenario>.cfg (+ common.cfg), ``-n`` workers
* ``opensipy``  bench/opensipy/<scenario>.cfg, ``udp_workers=`` workers,
                the checkout this file lives in (PYTHONPATH=<repo>)
* ``direct``    no proxy: the UAC talks straight to the UAS (the ceiling of
                the SIPp pair on this box)
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from . import procs

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)
HOST = "127.0.0.1"

SCENARIOS = ("stateless", "stateful", "stateful-dialog", "register",
             "stateless-tcp")

# the literal addresses the scripts are written with, replaced per step
_ADDR = re.compile(r'127\.0\.0\.1:(5060|5080)\b|"127\.0\.0\.1",\s*(5080)\b')


class ProxyUnavailable(Exception):
    """The proxy cannot run this scenario (message says why)."""


def render_ports(text, proxy_port, uas_port):
    def sub(m):
        port = m.group(1) or m.group(2)
        new = proxy_port if port == "5060" else uas_port
        if m.group(2):
            return '"127.0.0.1", %d' % new
        return "127.0.0.1:%d" % new
    return _ADDR.sub(sub, text)


def _first_line(cmd, env=None):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20,
                           env=env)
        out = (r.stdout or r.stderr).strip().splitlines()
        return out[0] if out else "?"
    except (OSError, subprocess.SubprocessError) as e:
        return "? (%s)" % e


class Proxy:
    name = "?"
    has_process = True

    def __init__(self, knobs):
        self.k = knobs

    def check(self, scenario, workdir):
        """Raise ProxyUnavailable when the scenario cannot run; may run a
        syntax check of the rendered script in workdir."""

    def notes(self, scenario):
        """Lines for the output: what differs from the other proxies."""
        return []

    def version(self):
        return ""

    def rcvbuf_setting(self):
        return ""

    def prepare(self, scenario, rundir):
        """(command, env) that start the proxy for one step in rundir; only
        called when has_process (each such class defines it)."""
        raise TypeError(f"'{self.name}' runs no proxy process to start")

    def wait_ready(self, p, rundir, timeout):
        """True once the proxy serves SIP (False: gave up)."""
        return procs.wait_port(self.k.proxy_port, True, timeout)

    def cleanup(self):
        pass


class Direct(Proxy):
    name = "direct"
    has_process = False

    def check(self, scenario, workdir):
        if scenario == "register":
            raise ProxyUnavailable("'direct' has no registrar: the register "
                                   "scenario needs a proxy")

    def notes(self, scenario):
        return ["direct = SIPp UAC -> SIPp UAS with no proxy: the ceiling "
                "of the load generator on this box"]


class Kamailio(Proxy):
    name = "kamailio"
    cfgdir = os.path.join(BENCH, "kamailio")

    def check(self, scenario, workdir):
        if shutil.which("kamailio") is None:
            raise ProxyUnavailable("kamailio is not installed "
                                   "(apt-get install -y kamailio)")
        cfg = self._render(scenario, workdir)
        r = subprocess.run(["kamailio", "-c", "-f", cfg] + self._defines(),
                           cwd=workdir, capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            raise ProxyUnavailable("kamailio -c rejects %s:\n%s" % (
                cfg, (r.stderr + r.stdout)[-2000:]))

    def _defines(self):
        if self.k.kamailio_maxbuffer:
            return ["-A", "BENCH_MAXBUFFER=%d" % self.k.kamailio_maxbuffer]
        return []

    def _render(self, scenario, rundir):
        src = os.path.join(self.cfgdir, scenario + ".cfg")
        if not os.path.exists(src):
            raise ProxyUnavailable("no kamailio script %s" % src)
        for name in os.listdir(self.cfgdir):
            if name.endswith(".cfg"):
                with open(os.path.join(self.cfgdir, name)) as f:
                    text = f.read()
                with open(os.path.join(rundir, name), "w") as f:
                    f.write(render_ports(text, self.k.proxy_port,
                                         self.k.uas_port))
        return os.path.join(rundir, scenario + ".cfg")

    def prepare(self, scenario, rundir):
        cfg = self._render(scenario, rundir)
        # -DD: the first process stays in the foreground; -E: log to stderr;
        # -n: UDP workers; -m/-M: shared / private memory in MB
        cmd = ["kamailio", "-f", cfg, "-n", str(self.k.children),
               "-m", str(self.k.shm_mb), "-M", "16", "-DD", "-E",
               "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"),
               "-w", rundir] + self._defines()
        return cmd, None

    def version(self):
        return _first_line(["kamailio", "-v"])

    def rcvbuf_setting(self):
        if self.k.kamailio_maxbuffer:
            return "maxbuffer=%d (SO_RCVBUF probed up to it)" % \
                self.k.kamailio_maxbuffer
        return "default maxbuffer 262144 (SO_RCVBUF probed up to it; " \
               "the kernel doubles it: 512 KiB)"

    def notes(self, scenario):
        return []


class Opensipy(Proxy):
    name = "opensipy"
    cfgdir = os.path.join(BENCH, "opensipy")

    def __init__(self, knobs):
        super().__init__(knobs)
        self._notify_dir = tempfile.mkdtemp(prefix="osy-bench-")
        self._notify = None

    def _src(self, scenario):
        return os.path.join(self.cfgdir, scenario + ".cfg")

    def _modules(self, text):
        """Modules the script loads: [(name, present in modules/?)]."""
        out = []
        for m in re.finditer(r'^\s*loadmodule\s+"([^"]+)"', text, re.M):
            name = os.path.basename(m.group(1))
            if name.endswith(".so"):
                name = name[:-3]
            out.append((name, os.path.isdir(os.path.join(REPO, "modules",
                                                         name))))
        return out

    def check(self, scenario, workdir):
        src = self._src(scenario)
        if not os.path.exists(src):
            raise ProxyUnavailable("no opensipy script %s" % src)
        with open(src) as f:
            text = f.read()
        missing = [n for n, ok in self._modules(text) if not ok]
        if missing:
            raise ProxyUnavailable(
                "opensipy cannot run the '%s' scenario yet: %s loads %s, "
                "not in modules/ yet. It runs once those modules exist "
                "(kamailio can run it now: --proxies kamailio)." % (
                    scenario, os.path.relpath(src, REPO),
                    ", ".join(missing)))
        cfg = self._render(scenario, workdir)
        r = subprocess.run([sys.executable, "-m", "opensipy", "-c", "-f", cfg],
                           cwd=workdir, capture_output=True, text=True,
                           timeout=60, env=self._env())
        if r.returncode != 0:
            raise ProxyUnavailable("opensipy -c rejects %s:\n%s" % (
                cfg, (r.stderr + r.stdout)[-2000:]))

    def notes(self, scenario):
        with open(self._src(scenario)) as f:
            text = f.read()
        loaded = {n for n, _ in self._modules(text)}
        out = []
        if "maxfwd" not in loaded:
            out.append("WARNING: bench/opensipy/%s.cfg does not check "
                       "Max-Forwards, kamailio's script does: the two do "
                       "different work" % scenario)
        return out

    def _env(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        env.pop("NOTIFY_SOCKET", None)
        return env

    def _render(self, scenario, rundir):
        with open(self._src(scenario)) as f:
            text = f.read()
        text = render_ports(text, self.k.proxy_port, self.k.uas_port)
        text, n = re.subn(r"^(\s*)(udp_workers|children)\s*=\s*\d+",
                          r"\g<1>udp_workers=%d" % self.k.children, text,
                          flags=re.M)
        if n != 1:
            raise ProxyUnavailable("%s must set udp_workers= exactly once "
                                   "(found %d)" % (self._src(scenario), n))
        # a TCP scenario: the same knob sets the TCP workers (kamailio's
        # -n sets children, and tcp_children follows it)
        text = re.sub(r"^(\s*)tcp_workers\s*=\s*\d+",
                      r"\g<1>tcp_workers=%d" % self.k.children, text,
                      flags=re.M)
        dst = os.path.join(rundir, "opensipy-%s.cfg" % scenario)
        with open(dst, "w") as f:
            f.write(text)
        return dst

    def prepare(self, scenario, rundir):
        cfg = self._render(scenario, rundir)
        # readiness: the attendant sends READY=1 to $NOTIFY_SOCKET once every
        # process finished its initialisation (a short path: AF_UNIX limit)
        path = os.path.join(self._notify_dir, "notify")
        if self._notify is not None:
            self._notify.close()
        if os.path.exists(path):
            os.unlink(path)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(path)
        env = self._env()
        env["NOTIFY_SOCKET"] = path
        cmd = [sys.executable, "-m", "opensipy", "-F", "-E",
               "-m", str(self.k.shm_mb), "-f", cfg]
        return cmd, env

    def wait_ready(self, p, rundir, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if p.poll() is not None:
                return False
            self._notify.settimeout(0.1)
            try:
                if b"READY=1" in self._notify.recv(4096):
                    return procs.udp_port_bound(self.k.proxy_port)
            except socket.timeout:
                continue
        return False

    def version(self):
        v = _first_line([sys.executable, "-m", "opensipy", "-V"], self._env())
        try:
            rev = subprocess.run(["git", "-C", REPO, "describe", "--always",
                                  "--dirty"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            rev = "?"
        return "%s (git %s)" % (v, rev)

    def rcvbuf_setting(self):
        from opensipy import config
        default = next(x.default for x in config.SETTINGS
                       if x.name == "maxbuffer")
        return ("maxbuffer %d by default (SO_RCVBUF; the kernel doubles it, "
                "up to net.core.rmem_max)" % default)

    def cleanup(self):
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        shutil.rmtree(self._notify_dir, ignore_errors=True)


PROXIES = {"kamailio": Kamailio, "opensipy": Opensipy, "direct": Direct}
