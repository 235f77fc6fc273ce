"""Fork helpers for the shared-memory tests: every child is reaped, and
killed when it overruns its time."""
import os
import signal
import sys
import time
import traceback


def spawn(target, *args):
    """Fork a child running target(*args); exit status 0 when it returns,
    1 when it raises (traceback on stderr).  Never returns in the child."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        target(*args)
        code = 0
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)


def reap(pids, timeout=60.0):
    """Wait for every pid; SIGKILL those still running at the deadline.
    Returns {pid: exit code, or -signal}."""
    deadline = time.monotonic() + timeout
    left = set(pids)
    codes = {}
    while left:
        for pid in list(left):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                              else -os.WTERMSIG(status))
                left.discard(pid)
        if left:
            if time.monotonic() > deadline:
                for pid in left:
                    os.kill(pid, signal.SIGKILL)
                for pid in left:
                    _, status = os.waitpid(pid, 0)
                    codes[pid] = "timeout"
                left.clear()
            else:
                time.sleep(0.005)
    return codes


def run_children(n, target, timeout=60.0):
    """Run target(i) in n forked children; fail unless all exit 0."""
    pids = []
    try:
        for i in range(n):
            pids.append(spawn(target, i))
    finally:
        codes = reap(pids, timeout)
    bad = {p: c for p, c in codes.items() if c != 0}
    assert not bad, f"children failed: {bad}"


def wait_until(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)
