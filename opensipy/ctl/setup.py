"""``opensipyctl setup``: install opensipy as a service on this machine.

    opensipyctl setup [--root DIR] [--create-user] [--no-db]

What it does, each step idempotent (run it again after an upgrade):

* installs ``etc/opensipy/opensipy.cfg`` (the default script),
  ``opensipyctl.cfg`` (with ``database_url`` set), ``/etc/default/opensipy``
  and the systemd unit ``/etc/systemd/system/opensipy.service`` (its
  ``ExecStart``/``ExecReload`` pointing at the installed ``opensipy`` and
  ``opensipyctl``);
* a file already there is never overwritten when it was edited: the new
  version is written beside it as ``FILE.new`` (Debian's rule).  A file
  still as setup wrote it is upgraded in place; setup keeps the checksums
  of what it wrote in ``/var/lib/opensipy/setup.sums``;
* creates the ``opensipy`` system user and group (skipped with ``--root``
  unless ``--create-user``, which writes into DIR's ``/etc/passwd``), the
  runtime folder ``/run/opensipy`` and the state folder
  ``/var/lib/opensipy``;
* creates the SQLite database ``/var/lib/opensipy/opensipy.db`` with every
  table of the schema and its ``version`` rows; an existing database is
  kept, and one with older table versions is named for ``opensipyctl db
  migrate``.

``--root DIR`` installs under DIR (packaging, tests); the files still name
the real paths (``/var/lib/opensipy/...``) the service sees once DIR is the
system's root.
"""
from __future__ import annotations

import argparse
import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List, Optional

USER = "opensipy"
CFG_DIR = "/etc/opensipy"
STATE_DIR = "/var/lib/opensipy"
RUN_DIR = "/run/opensipy"
DB_PATH = f"{STATE_DIR}/opensipy.db"
DB_URL = f"sqlite://{DB_PATH}"
UNIT_PATH = "/etc/systemd/system/opensipy.service"
DEFAULTS_PATH = "/etc/default/opensipy"
SUMS = f"{STATE_DIR}/setup.sums"
SHIPPED_BIN = "/usr/local/bin"       # the bin folder the shipped unit names

DEFAULTS_TEXT = """\
# /etc/default/opensipy: read by the opensipy systemd unit
# (EnvironmentFile=-/etc/default/opensipy).
#
# OPENSIPY_OPTS: extra flags for `opensipy -F -f /etc/opensipy/opensipy.cfg`,
# e.g. -m 128 for 128 MB of shared memory (default 64).
OPENSIPY_OPTS=-m 64
"""


class SetupError(Exception):
    pass


def data_dir() -> Path:
    """Where the shipped etc/opensipy files are: a checkout's (editable
    install), else the installed data files (``<prefix>/share/opensipy``)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "etc" / "opensipy",
                  Path(sys.prefix) / "share" / "opensipy",
                  Path(sysconfig.get_path("data")) / "share" / "opensipy"]
    for c in candidates:
        if (c / "opensipy.cfg").is_file() and \
                (c / "opensipy.service").is_file():
            return c
    raise SetupError("cannot find the shipped opensipy.cfg and "
                     "opensipy.service (looked in "
                     + ", ".join(str(c) for c in candidates) + ")")


def bin_dir() -> str:
    """The folder of the installed ``opensipy`` and ``opensipyctl``."""
    for d in (sysconfig.get_path("scripts"),
              os.path.dirname(shutil.which("opensipy") or ""),
              os.path.dirname(sys.executable)):
        if d and os.access(os.path.join(d, "opensipy"), os.X_OK) and \
                os.access(os.path.join(d, "opensipyctl"), os.X_OK):
            return d
    raise SetupError("cannot find the installed opensipy and opensipyctl "
                     "commands (pip install opensipy first)")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Setup:
    def __init__(self, root: str = "/", create_user: Optional[bool] = None,
                 make_db: bool = True, out=None):
        self.root = Path(root).resolve()
        self.staged = self.root != Path("/")
        self.create_user = (not self.staged) if create_user is None \
            else create_user
        self.make_db = make_db
        self.out = out or sys.stdout
        self.done: List[str] = []
        self.sums: Dict[str, str] = {}

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def say(self, text: str) -> None:
        self.done.append(text)
        print(text, file=self.out)

    # ------------------------------------------------------------ steps
    def run(self) -> List[str]:
        src = data_dir()
        bins = bin_dir()
        self._load_sums()
        self.ensure_user()
        self.ensure_dir(CFG_DIR, 0o755, owned=False)
        self.ensure_dir(STATE_DIR, 0o750)
        self.ensure_dir(RUN_DIR, 0o750)
        self.install(f"{CFG_DIR}/opensipy.cfg",
                     (src / "opensipy.cfg").read_bytes(), 0o640)
        self.install(f"{CFG_DIR}/opensipyctl.cfg",
                     self.ctl_cfg((src / "opensipyctl.cfg").read_text()),
                     0o644)
        self.install(DEFAULTS_PATH, DEFAULTS_TEXT.encode(), 0o644)
        self.install(UNIT_PATH, self.unit((src / "opensipy.service")
                                          .read_text(), bins), 0o644)
        if self.make_db:
            self.ensure_db()
        self._save_sums()
        self.say(self.next_steps())
        return self.done

    def ctl_cfg(self, text: str) -> bytes:
        out = []
        seen = False
        for line in text.splitlines():
            if line.lstrip("# ").startswith("database_url"):
                if not seen:
                    out.append(f"database_url = {DB_URL}")
                    seen = True
                continue
            out.append(line)
        if not seen:
            out.append(f"database_url = {DB_URL}")
        return ("\n".join(out) + "\n").encode()

    @staticmethod
    def unit(text: str, bins: str) -> bytes:
        for cmd in ("opensipy", "opensipyctl"):
            text = text.replace(f"{SHIPPED_BIN}/{cmd} ",
                                f"{bins}/{cmd} ")
        return text.encode()

    # ------------------------------------------------------------ user
    def owner(self):
        """(uid, gid) of the opensipy user when files should be given to
        it, else None."""
        if os.geteuid() != 0:
            return None
        if self.staged:
            return self._staged_ids()
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            return None
        return pw.pw_uid, pw.pw_gid

    def _staged_ids(self):
        passwd = self.path("/etc/passwd")
        if not passwd.is_file():
            return None
        for line in passwd.read_text().splitlines():
            f = line.split(":")
            if len(f) > 3 and f[0] == USER:
                return int(f[2]), int(f[3])
        return None

    def ensure_user(self) -> None:
        if not self.create_user:
            self.say(f"user {USER}: not created (--root without "
                     f"--create-user); create it on the target system")
            return
        if self.staged:
            exists = self._staged_ids() is not None
        else:
            try:
                pwd.getpwnam(USER)
                exists = True
            except KeyError:
                exists = False
        if exists:
            self.say(f"user {USER}: exists")
            return
        if os.geteuid() != 0:
            raise SetupError(f"creating the user {USER} needs root (run "
                             f"opensipyctl setup as root)")
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        cmd = [useradd, "--system", "--user-group", "--home-dir", STATE_DIR,
               "--no-create-home", "--shell", "/usr/sbin/nologin",
               "--comment", "opensipy SIP server", USER]
        if self.staged:
            for f in ("passwd", "group", "shadow", "gshadow"):
                p = self.path(f"/etc/{f}")
                if not p.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch(mode=0o640 if "sh" in f else 0o644)
            cmd[1:1] = ["--prefix", str(self.root)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SetupError(f"useradd failed: {r.stderr.strip()}")
        self.say(f"user {USER}: created (system user, group {USER})")

    # ------------------------------------------------------------ files
    def ensure_dir(self, p: str, mode: int, owned: bool = True) -> None:
        d = self.path(p)
        existed = d.is_dir()
        d.mkdir(parents=True, exist_ok=True)
        if not existed:
            os.chmod(d, mode)
        ids = self.owner() if owned else None
        if ids is not None:
            os.chown(d, *ids)
        self.say(f"{p}: {'exists' if existed else 'created'}")

    def install(self, p: str, data: bytes, mode: int) -> None:
        """Write p unless the admin changed it: then p.new."""
        dest = self.path(p)
        dest.parent.mkdir(parents=True, exist_ok=True)
        new_sum = _sha(data)
        if dest.exists():
            cur = dest.read_bytes()
            cur_sum = _sha(cur)
            if cur_sum == new_sum:
                self.sums[p] = new_sum
                self._drop_stale_new(dest)
                self.say(f"{p}: unchanged")
                return
            if self.sums.get(p) != cur_sum:
                # edited by the admin (or not ours): keep it
                newp = dest.with_name(dest.name + ".new")
                self._write(newp, data, mode)
                self.say(f"{p}: kept (changed locally); the new version "
                         f"is {p}.new")
                return
            self._write(dest, data, mode)
            self.sums[p] = new_sum
            self._drop_stale_new(dest)
            self.say(f"{p}: upgraded")
            return
        self._write(dest, data, mode)
        self.sums[p] = new_sum
        self.say(f"{p}: installed")

    @staticmethod
    def _drop_stale_new(dest: Path) -> None:
        stale = dest.with_name(dest.name + ".new")
        if stale.exists():
            stale.unlink()

    def _write(self, dest: Path, data: bytes, mode: int) -> None:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        if mode & 0o040 and not mode & 0o004:   # group-readable config
            ids = self.owner()
            if ids is not None:
                os.chown(tmp, 0, ids[1])
        os.replace(tmp, dest)

    def _load_sums(self) -> None:
        p = self.path(SUMS)
        try:
            self.sums = json.loads(p.read_text())
        except (OSError, ValueError):
            self.sums = {}

    def _save_sums(self) -> None:
        p = self.path(SUMS)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.sums, indent=1, sort_keys=True) + "\n")

    # ------------------------------------------------------------ database
    def ensure_db(self) -> None:
        """The SQLite database with every table: made when missing (or an
        SQLite file without a single table: a server started before setup
        leaves one), completed when groups are missing, never dropped."""
        from ..db import DBError, admin, schema
        path = self.path(DB_PATH)
        url = f"sqlite://{path}"
        ids = self.owner()
        if path.exists() and path.stat().st_size > 0 and \
                not _empty_sqlite(path):
            try:
                present = admin.tables(url)
            except DBError as e:
                raise SetupError(f"{DB_PATH} exists but is not an opensipy "
                                 f"database: {e}") from None
            old = [f"{n} (version {v}, this opensipy needs "
                   f"{schema.TABLES[n].version})"
                   for n, v in present.items()
                   if n in schema.TABLES and v is not None
                   and v != schema.TABLES[n].version]
            missing = [g for g, ts in schema.GROUPS.items()
                       if not any(t.name in present for t in ts)]
            if missing:
                admin.create(url, missing, create_database=False)
                self.say(f"{DB_PATH}: added the tables of "
                         f"{', '.join(missing)}")
            if old:
                self.say(f"{DB_PATH}: tables of an older schema: "
                         f"{', '.join(old)}; upgrade them with: opensipyctl "
                         f"db migrate {DB_URL}")
            else:
                self.say(f"{DB_PATH}: exists, schema up to date")
        else:
            admin.create(url)
            self.say(f"{DB_PATH}: created with every table")
        if ids is not None:
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(path) + suffix)
                if p.exists():
                    os.chown(p, *ids)
            os.chmod(path, 0o640)

    def next_steps(self) -> str:
        if self.staged:
            return (f"installed under {self.root}; on the target system: "
                    f"systemctl daemon-reload && systemctl enable --now "
                    f"opensipy")
        return ("next: systemctl daemon-reload && systemctl enable --now "
                "opensipy   (then: systemctl status opensipy, "
                "journalctl -u opensipy)")


def run_setup(argv: List[str], usage_error, fail_error) -> None:
    p = argparse.ArgumentParser(prog="opensipyctl setup",
                                description="install opensipy as a service")
    p.add_argument("--root", default="/", metavar="DIR",
                   help="install under DIR instead of / (packaging, tests)")
    p.add_argument("--create-user", action="store_true", default=None,
                   help="with --root: create the opensipy user in DIR's "
                        "/etc/passwd")
    p.add_argument("--no-db", action="store_true",
                   help="do not create the SQLite database")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        if e.code:
            raise usage_error("setup [--root DIR] [--create-user] "
                              "[--no-db]") from None
        raise
    try:
        Setup(args.root, args.create_user, not args.no_db).run()
    except (SetupError, OSError) as e:
        raise fail_error(f"setup: {e}") from None


def _empty_sqlite(path) -> bool:
    """An SQLite file that holds no table at all (sqlite3 makes the file
    on a first connection: a server started before setup leaves one)."""
    import sqlite3
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            n = con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return False            # not SQLite: ensure_db says so
    return n[0] == 0
