"""The deployment story: the systemd unit passes ``systemd-analyze verify``
and ``opensipyctl setup`` installs into a temporary root (``--root``)."""
import configparser
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from server import REPO, run_opensipy

UNIT = REPO / "etc" / "opensipy" / "opensipy.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
BIN = Path(sys.executable).parent


def ctl(*args, check=True):
    r = subprocess.run([str(BIN / "opensipyctl"), *args],
                       capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def verify(root: Path, unit: Path) -> str:
    """systemd-analyze verify in ``root`` (no running systemd needed: the
    root holds the system's units and the commands the unit runs)."""
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: apt-get install systemd"
    assert SYSTEM_UNITS.is_dir()
    dest = root / "usr" / "lib" / "systemd" / "system"
    if not dest.exists():
        shutil.copytree(SYSTEM_UNITS, dest, symlinks=True)
    r = subprocess.run([exe, "verify", "--man=no", f"--root={root}",
                        str(unit)], capture_output=True, text=True,
                       timeout=60)
    return (r.stdout + r.stderr).strip(), r.returncode


def unit_service(path: Path) -> dict:
    cp = configparser.ConfigParser(strict=False, interpolation=None,
                                   delimiters=("=",))
    cp.optionxform = str
    cp.read(path)
    return dict(cp["Service"])


def stub(root: Path, path: str) -> None:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755)


def test_shipped_unit_verifies_clean(tmp_path):
    root = tmp_path / "root"
    for cmd in ("opensipy", "opensipyctl"):
        stub(root, f"/usr/local/bin/{cmd}")
    dest = root / "etc" / "systemd" / "system" / "opensipy.service"
    dest.parent.mkdir(parents=True)
    shutil.copy(UNIT, dest)
    out, rc = verify(root, dest)
    assert rc == 0 and out == ""
    s = unit_service(dest)
    assert s["Type"] == "notify"
    assert s["ExecStart"].split()[1:4] == ["-F", "-f",
                                           "/etc/opensipy/opensipy.cfg"]
    assert "reload_routes" in s["ExecReload"]
    assert s["User"] == "opensipy"
    assert s["RuntimeDirectory"] == "opensipy"
    assert s["StateDirectory"] == "opensipy"
    assert s["EnvironmentFile"] == "-/etc/default/opensipy"
    assert int(s["LimitNOFILE"]) >= 4096
    for k, v in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                 ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
        assert s[k] == v


def test_a_broken_unit_is_reported(tmp_path):
    """The check can fail: an unknown key and a bad value are printed."""
    root = tmp_path / "root"
    for cmd in ("opensipy", "opensipyctl"):
        stub(root, f"/usr/local/bin/{cmd}")
    dest = root / "etc" / "systemd" / "system" / "opensipy.service"
    dest.parent.mkdir(parents=True)
    dest.write_text(UNIT.read_text().replace(
        "ProtectSystem=strict", "ProtectSystem=stricter"))
    out, rc = verify(root, dest)
    assert "ProtectSystem" in out or "protect system" in out


def test_setup_into_a_root(tmp_path):
    root = tmp_path / "root"
    r = ctl("setup", "--root", str(root))
    assert "user opensipy: not created" in r.stdout
    cfg = root / "etc" / "opensipy" / "opensipy.cfg"
    assert cfg.read_bytes() == (REPO / "etc/opensipy/opensipy.cfg") \
        .read_bytes()
    ctlcfg = (root / "etc/opensipy/opensipyctl.cfg").read_text()
    assert "\ndatabase_url = sqlite:///var/lib/opensipy/opensipy.db\n" \
        in ctlcfg
    assert "OPENSIPY_OPTS=" in (root / "etc/default/opensipy").read_text()
    for d in ("var/lib/opensipy", "run/opensipy"):
        assert (root / d).is_dir()
    # the installed unit runs the installed commands, and verifies clean
    unit = root / "etc/systemd/system/opensipy.service"
    s = unit_service(unit)
    assert s["ExecStart"].startswith(f"{BIN}/opensipy -F -f "
                                     f"/etc/opensipy/opensipy.cfg")
    assert s["ExecReload"].startswith(f"{BIN}/opensipyctl ")
    for cmd in ("opensipy", "opensipyctl"):
        stub(root, f"{BIN}/{cmd}")
    out, rc = verify(root, unit)
    assert rc == 0 and out == ""
    # the installed script is what ExecStartPre checks
    chk = run_opensipy(["-c", "-f", str(cfg)])
    assert chk.returncode == 0, chk.stderr
    # the database: every table with its version row
    db = sqlite3.connect(root / "var/lib/opensipy/opensipy.db")
    versions = dict(db.execute("SELECT table_name, table_version "
                               "FROM version"))
    db.close()
    from opensipy.db import schema
    assert versions["location"] == 1013
    for t in schema.all_tables():
        if t.name != "version":
            assert versions[t.name] == t.version, t.name


def test_setup_is_idempotent_and_never_overwrites_an_edited_file(tmp_path):
    root = tmp_path / "root"
    ctl("setup", "--root", str(root))
    db = root / "var/lib/opensipy/opensipy.db"
    con = sqlite3.connect(db)
    con.execute("INSERT INTO subscriber (username, domain, password) "
                "VALUES ('alice', 'example.com', 'x')")
    con.commit()
    con.close()
    again = ctl("setup", "--root", str(root)).stdout
    for p in ("opensipy.cfg", "opensipyctl.cfg", "opensipy.service",
              "/etc/default/opensipy"):
        assert any(l.endswith(": unchanged") and p in l
                   for l in again.splitlines()), again
    assert "schema up to date" in again
    con = sqlite3.connect(db)
    assert con.execute("SELECT username FROM subscriber").fetchall() == \
        [("alice",)]
    con.close()
    # the admin edits the script: kept, the shipped one goes beside it
    cfg = root / "etc/opensipy/opensipy.cfg"
    edited = cfg.read_text() + "\n# my change\n"
    cfg.write_text(edited)
    out = ctl("setup", "--root", str(root)).stdout
    assert "/etc/opensipy/opensipy.cfg: kept (changed locally)" in out
    assert cfg.read_text() == edited
    new = cfg.with_name("opensipy.cfg.new")
    assert new.read_bytes() == (REPO / "etc/opensipy/opensipy.cfg") \
        .read_bytes()
    # a file still as an older setup wrote it is upgraded in place
    dflt = root / "etc/default/opensipy"
    dflt.write_text("OPENSIPY_OPTS=-m 32\n")
    import hashlib
    import json
    sums_p = root / "var/lib/opensipy/setup.sums"
    sums = json.loads(sums_p.read_text())
    sums["/etc/default/opensipy"] = hashlib.sha256(
        dflt.read_bytes()).hexdigest()
    sums_p.write_text(json.dumps(sums))
    out = ctl("setup", "--root", str(root)).stdout
    assert "/etc/default/opensipy: upgraded" in out
    assert "OPENSIPY_OPTS=-m 64" in dflt.read_text()
    assert not dflt.with_name("opensipy.new").exists()
    # the edited script is still kept, its .new still there
    assert cfg.read_text() == edited and new.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                    reason="creating a user needs root and useradd")
def test_setup_creates_the_user_in_the_root_when_asked(tmp_path):
    root = tmp_path / "root"
    out = ctl("setup", "--root", str(root), "--create-user").stdout
    assert "user opensipy: created" in out
    entry = [l for l in (root / "etc/passwd").read_text().splitlines()
             if l.startswith("opensipy:")]
    assert len(entry) == 1
    f = entry[0].split(":")
    assert f[5] == "/var/lib/opensipy" and f[6] == "/usr/sbin/nologin"
    uid, gid = int(f[2]), int(f[3])
    st = (root / "var/lib/opensipy/opensipy.db").stat()
    assert (st.st_uid, st.st_gid) == (uid, gid)
    assert "user opensipy: exists" in \
        ctl("setup", "--root", str(root), "--create-user").stdout


def test_setup_makes_the_database_where_a_server_left_an_empty_file(tmp_path):
    """A server started before setup (the default script's db_url) leaves
    an SQLite file without tables; setup fills it instead of refusing it.
    A file that is not SQLite is still refused, untouched."""
    root = tmp_path / "root"
    db = root / "var/lib/opensipy/opensipy.db"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")     # a header, no table
    con.close()
    assert db.stat().st_size > 0
    out = ctl("setup", "--root", str(root)).stdout
    assert "opensipy.db: created with every table" in out
    con = sqlite3.connect(db)
    assert dict(con.execute("SELECT table_name, table_version FROM "
                            "version"))["location"] == 1013
    con.close()
    other = tmp_path / "other"
    bad = other / "var/lib/opensipy/opensipy.db"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a database at all\n" * 64)
    r = ctl("setup", "--root", str(other), check=False)
    assert r.returncode != 0 and "is not an opensipy database" in \
        r.stdout + r.stderr
    assert bad.read_bytes() == b"not a database at all\n" * 64
