"""tests/server.py's popen: what a test starts ends with the test process,
even when that process is killed and no fixture's cleanup runs."""
import os
import signal
import subprocess
import sys
import time

from server import REPO

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from server import popen
p = popen(["sleep", "60"], start_new_session=True)
print(p.pid, flush=True)
time.sleep(60)
"""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_a_child_ends_when_the_test_process_is_killed():
    t = subprocess.Popen([sys.executable, "-c", CHILD, str(REPO / "tests")],
                         stdout=subprocess.PIPE, text=True)
    try:
        pid = int(t.stdout.readline())
        assert _alive(pid)
        t.send_signal(signal.SIGKILL)       # no cleanup runs in the parent
        t.wait()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        t.kill()
        t.wait()
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass
