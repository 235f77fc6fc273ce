"""The C layer alone: tests/shm/c/shm_c_test.c linked with native/shm.c,
built with AddressSanitizer + UBSan (skipped without a C compiler)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


@pytest.mark.skipif(CC is None, reason="no C compiler")
def test_c_layer_under_asan_and_ubsan(tmp_path):
    exe = tmp_path / "shm_c_test"
    build = [CC, "-g", "-O1", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
             "-Wno-unused-parameter",
             "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-I", os.path.join(ROOT, "native"),
             os.path.join(ROOT, "native", "shm.c"),
             os.path.join(ROOT, "tests", "shm", "c", "shm_c_test.c"),
             "-o", str(exe), "-lpthread"]
    r = subprocess.run(build, capture_output=True, text=True, timeout=300)
    if r.returncode and "sanitize" in r.stderr and "cannot find" in r.stderr:
        pytest.skip("the compiler has no sanitizer runtime")
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    r = subprocess.run([str(exe)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("passed, 0 failed"), r.stdout
