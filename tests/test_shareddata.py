"""A test that needs ../shared skips with one clear reason when it is
missing, and fails instead under CI (tests/shareddata.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

USER = '''
import pytest
from shareddata import need_shared, require_shared

need = need_shared("no-such-folder", "MANIFEST.tsv")

@need
@pytest.mark.parametrize("row", [])       # rows read from the missing data
def test_rows(row):
    pass

@need
def test_marked():
    pass

def test_inside():
    require_shared("no-such-folder", "x.cfg")
'''


def _run(tmp_path, ci):
    (tmp_path / "test_user.py").write_text(USER)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "shareddata", "-rsf", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path / "test_user.py")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_missing_shared_data_skips_with_one_reason(tmp_path):
    r = _run(tmp_path, ci=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 skipped" in r.stdout
    assert "../shared/no-such-folder/MANIFEST.tsv not found" in r.stdout
    assert "../shared/no-such-folder/x.cfg not found" in r.stdout
    assert "these tests need the project's shared data beside the clone" \
        in r.stdout


def test_under_ci_missing_shared_data_fails(tmp_path):
    r = _run(tmp_path, ci=True)
    assert r.returncode == 1, r.stdout + r.stderr
    # the marked ones fail in their setup (errors), the other in its body
    assert "1 failed, 2 errors" in r.stdout and "skipped" not in r.stdout
    assert "CI is set, so this is a failure, not a skip" in r.stdout
