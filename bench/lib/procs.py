"""Process control and /proc measurements for the bench harness.

Every process the harness starts is wrapped in coreutils ``timeout`` (a hard
bound that holds even if the harness itself is killed), runs in a session and
process group of its own, and is registered in :data:`LIVE` until its group
has been stopped.  :func:`stop_all` is called at the end of each step, from
``finally`` blocks, on SIGINT/SIGTERM and at exit, so nothing outlives a step.

CPU figures come from /proc/<pid>/stat (utime + stime, exact per process),
never from the tick-sampled totals in /proc/stat.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1

# pgid -> (Popen, label) of every group we started and have not stopped yet
LIVE: dict = {}


def _die_with_parent():
    """preexec_fn: new session, and SIGTERM when the harness goes away
    (``timeout`` passes the signal on to its command)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def start_group(label, cmd, cwd, log_path, limit_s, env=None):
    """Start ``timeout -k 5 <limit_s> cmd...`` in a new process group."""
    out = open(log_path, "ab")
    try:
        p = subprocess.Popen(
            ["timeout", "-k", "5", "%ds" % max(1, int(limit_s))] + list(cmd),
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=_die_with_parent)
    finally:
        out.close()
    LIVE[p.pid] = (p, label)
    return p


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(p, grace=5.0):
    """SIGTERM the whole group, SIGKILL what is left after ``grace`` s.
    Returns the leader's exit code (None when it had to be killed)."""
    if p is None:
        return None
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _group_alive(p.pid):
            break
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end:
            p.poll()                    # reap the leader so the group can go
            if not _group_alive(p.pid):
                break
            time.sleep(0.02)
    p.poll()
    LIVE.pop(p.pid, None)
    return p.returncode


def stop_all():
    for pgid in list(LIVE):
        stop_group(LIVE[pgid][0], grace=2.0)


def wait_exit(p, limit_s):
    """Wait for the leader of a group (collecting rusage); kill the group at
    the limit.  Returns (exit code, user+sys CPU s of the leader and every
    descendant it reaped, wall s)."""
    t0 = time.monotonic()
    deadline = t0 + limit_s
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = -9
            break
        time.sleep(0.01)
    wall = time.monotonic() - t0
    # the group may still hold stragglers (it should not): stop them too
    stop_group(p, grace=1.0)
    return p.returncode, ru.ru_utime + ru.ru_stime, wall


# ------------------------------------------------------------------ /proc

def proc_table():
    """{pid: (ppid, cpu_s, comm, starttime)} for every process on the box."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        close = s.rindex(")")
        f = s[close + 2:].split()
        # after "pid (comm) ": state(#3) ppid(#4) ... utime(#14) stime(#15)
        # ... starttime(#22), which tells a reused pid from the old one
        table[int(d)] = (int(f[1]), (int(f[11]) + int(f[12])) / CLK_TCK,
                         s[s.index("(") + 1:close], int(f[19]))
    return table


def tree(table, root):
    """The pids of root and all its descendants in ``table``."""
    kids = {}
    for pid, (ppid, *_) in table.items():
        kids.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p in table and p not in seen:
            seen.add(p)
            todo.extend(kids.get(p, ()))
    return seen


def cpu_delta(t0, t1, pids):
    """CPU seconds used between two tables by the given pids (a process
    that started in between counts from zero; one that ended is lost, so
    sample trees before stopping them)."""
    total = 0.0
    for pid in pids:
        if pid in t1:
            same = pid in t0 and t0[pid][3] == t1[pid][3]
            before = t0[pid][1] if same else 0.0
            total += t1[pid][1] - before
    return total


def cpu_by_process(t0, t1, pids, wall):
    """{"comm[pid]": % of a core} for the given pids (the proxy tree)."""
    out = {}
    for pid in sorted(pids):
        if pid in t1:
            same = pid in t0 and t0[pid][3] == t1[pid][3]
            used = t1[pid][1] - (t0[pid][1] if same else 0.0)
            out["%s[%d]" % (t1[pid][2], pid)] = round(
                100.0 * used / max(wall, 1e-3), 1)
    return out


def others_busy(t0, t1, mine, wall, floor_pct=2.0):
    """Processes outside our trees that used more than floor_pct of a core
    (somebody else's build or test run distorts the step)."""
    out = []
    for pid, (_, cpu, comm, start) in t1.items():
        if pid in mine:
            continue
        before = t0[pid][1] if pid in t0 and t0[pid][3] == start else 0.0
        pct = 100.0 * (cpu - before) / max(wall, 1e-3)
        if pct > floor_pct:
            out.append("%s[%d] %.0f%%" % (comm, pid, pct))
    return out


def udp_counters():
    """System-wide UDP counters (/proc/net/snmp, Udp: rows)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [ln.split() for ln in f if ln.startswith("Udp:")]
        return dict(zip(rows[0][1:], map(int, rows[1][1:])))
    except (OSError, IndexError, ValueError):
        return {}


# ------------------------------------------------------------------ ports

def _bound_ports(proto="udp"):
    ports = {}
    for name in (proto, proto + "6"):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for ln in f:
                    local = ln.split()[1]
                    addr, port = local.rsplit(":", 1)
                    ports.setdefault(int(port, 16), []).append(addr)
        except (OSError, StopIteration):
            continue
    return ports


def udp_port_bound(port):
    return port in _bound_ports()


def tcp_port_listening(port):
    """A TCP socket listens on port (state 0A in /proc/net/tcp*)."""
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for ln in f:
                    parts = ln.split()
                    if parts[3] == "0A" and \
                            int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return False


def wait_port(port, bound, timeout, proto="udp"):
    check = tcp_port_listening if proto == "tcp" else udp_port_bound
    end = time.monotonic() + timeout
    while True:
        if check(port) == bound:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def who_holds(port):
    """`ss` line(s) naming the process holding a UDP port (diagnostics)."""
    try:
        out = subprocess.run(["ss", "-uanpH", "sport = :%d" % port],
                             capture_output=True, text=True, timeout=5).stdout
        return out.strip() or "(unknown owner)"
    except (OSError, subprocess.SubprocessError):
        return "(ss not available)"


_SKMEM = re.compile(r"skmem:\(([^)]*)\)")


def socket_mem(port, host="127.0.0.1"):
    """Kernel memory figures of the UDP socket bound to host:port, from
    ``ss -uamn``: {'rb': receive buffer bytes, 'r': queued bytes,
    'd': datagrams dropped because the buffer was full, ...} or {}."""
    try:
        out = subprocess.run(["ss", "-uamnH", "src %s:%d" % (host, port)],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    m = _SKMEM.search(out)
    if not m:
        return {}
    vals = {}
    for item in m.group(1).split(","):
        k = item.rstrip("0123456789")
        try:
            vals[k] = int(item[len(k):])
        except ValueError:
            continue
    return vals
