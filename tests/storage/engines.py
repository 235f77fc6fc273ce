"""Real database engines for the storage tests: a throw-away PostgreSQL
cluster (initdb/pg_ctl from the Debian package, on a free 127.0.0.1 port in
a temporary folder, run as the unprivileged ``postgres`` user when the tests
run as root) and a redis-server (free port, no persistence).  Both are
stopped and removed afterwards.  An engine that cannot start is an error,
never a skip."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

from server import free_port, popen

PG_SUPERUSER = "postgres"


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if
                   p.split("/")[4].isdigit() else 0)
    if cands:
        return cands[-1]
    raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get "
                       f"install -y postgresql)")


class PgCluster:
    """One PostgreSQL cluster: ``start()``, ``stop()``, ``url(db)``."""

    def __init__(self):
        self.port = free_port(socket.SOCK_STREAM)
        self.dir = tempfile.mkdtemp(prefix="osy-pg-")
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "pg.log")
        self.run_as = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no "
                                   "'postgres' user to run PostgreSQL as "
                                   "(apt-get install -y postgresql)")
            self.run_as = pw.pw_name
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)

    def _cmd(self, args, check=True, timeout=120):
        if self.run_as:
            args = ["runuser", "-u", self.run_as, "--"] + args
        r = subprocess.run(args, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}):\n"
                               f"{r.stdout}\n{r.stderr}\n{self.log()}")
        return r

    def log(self) -> str:
        try:
            with open(self.logfile) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def init(self):
        self._cmd([_pg_bin("initdb"), "-D", self.data, "-U", PG_SUPERUSER,
                   "--auth=trust", "-E", "UTF8", "--locale=C", "-N"])
        return self

    def start(self):
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                f"-c fsync=off -c synchronous_commit=off "
                f"-c full_page_writes=off -c max_connections=100")
        self._cmd([_pg_bin("pg_ctl"), "-D", self.data, "-l", self.logfile,
                   "-o", opts, "-w", "-t", "60", "start"])
        return self

    def stop(self, mode="fast"):
        self._cmd([_pg_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w",
                   "-t", "60", "stop"], check=False)

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def admin_url(self) -> str:
        return f"postgres://{PG_SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, user: str = PG_SUPERUSER,
            password: str = None) -> str:
        cred = user + (f":{password}" if password else "")
        return f"postgres://{cred}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str):
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port,
                             user=PG_SUPERUSER, dbname="postgres",
                             autocommit=True) as c:
            c.execute(sql)

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.admin(f"CREATE DATABASE {name}")
        return name


class RedisServer:
    def __init__(self):
        self.port = free_port(socket.SOCK_STREAM)
        self.dir = tempfile.mkdtemp(prefix="osy-redis-")
        self.proc = None

    def start(self):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get "
                               "install -y redis-server)")
        self.proc = popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--daemonize", "no", "--protected-mode", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: "
                                   + self.proc.stdout.read().decode())
            try:
                with socket.create_connection(("127.0.0.1", self.port),
                                              0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 20 s")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self):
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)

    def halt(self):
        """Stop the server process (start() runs it again, same port)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
