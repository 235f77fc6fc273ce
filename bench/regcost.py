#!/usr/bin/env python3
"""The cost of one REGISTER, measured in ways a busy machine does not skew.

    python3 bench/regcost.py inproc N
        N REGISTERs for new AORs through the receive path in this process
        (parse, script ``save("location")``, the 200 built and sent), as
        tests/modules/test_bench_registrar.py does.  Meant to run under
        callgrind twice with different N: the difference of the two
        instruction counts divided by the difference of N is the cost of
        one REGISTER, start-up excluded:

            for n in 500 2500; do PYTHONHASHSEED=0 valgrind --tool=callgrind \\
                --callgrind-out-file=/tmp/cg.$n python3 bench/regcost.py \\
                inproc $n 2>&1 | grep 'Collected'; done

    python3 bench/regcost.py server [--rate 500] [--seconds 20] [--workers 2]
        The real server (bench/opensipy/register.cfg, ports rendered as the
        harness does) under a SIPp register_uac.xml run at a modest fixed
        rate; prints the CPU time (utime + stime of every process of the
        server, from /proc) used during the run divided by the REGISTERs
        answered.  CPU time per request barely moves with contention,
        unlike the throughput the harness searches for.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# bench/opensipy/ (the scripts) must not shadow the package
if sys.path and os.path.abspath(sys.path[0]) == HERE:
    del sys.path[0]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register(n: int, port: int) -> bytes:
    # the same message as the SIPp scenario register_uac.xml sends
    return (f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r{n}\r\n"
            f"From: <sip:bench{n}@127.0.0.1>;tag=1234r{n}\r\n"
            f"To: <sip:bench{n}@127.0.0.1>\r\n"
            f"Call-ID: {n}-1234@127.0.0.1\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:bench{n}@127.0.0.1:5070>;expires=3600\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def inproc(n: int) -> None:
    from opensipy import config, modloader, receive, script, shm, statistics
    from opensipy import timer
    from opensipy.core_cmds import core_exports
    from opensipy.net import udp

    shm.shm_init(shm.DEFAULT_SHM_SIZE)
    statistics.register_core_stats()
    config.reset()
    config.settings.set("socket", f"udp:127.0.0.1:{_free_port()}")
    si = config.settings.sockets[0]
    udp.open_udp(si)
    reg = modloader.Registry()
    modloader.registry = reg
    reg.add(modloader.LoadedModule("core", core_exports))
    timer.open_registration()
    for name in ("sl", "signaling", "maxfwd", "usrloc", "registrar"):
        lm = modloader.load_module(reg, name)
        lm.stats = statistics.register_module_stats(name, lm.exports.stats)
        for se in lm.exports.stats:
            st = statistics.get_stat(f"{name}:{se.name}")
            if isinstance(se.stat_pointer, str) and st is not None:
                setattr(lm.pymod, se.stat_pointer, st)
    with open(os.path.join(HERE, "opensipy", "register.cfg")) as f:
        text = f.read()
    # the script's modparams (usrloc's hash_size above all: the chains of a
    # 512-bucket table would dominate the measurement)
    for item in script.parse_string(text).top:
        if type(item).__name__ == "ModParam":
            modloader.set_mod_param(reg, item.module, item.param,
                                    item.value, item.kind, item.loc, [])
    for lm in reg.init_order():
        if lm.exports.init_f:
            lm.exports.init_f()
    route = os.environ.get("REGCOST_ROUTE") or text[text.index("route {"):]
    compiled = script.compile_script(script.parse_string(route), reg)
    timer.close_registration()
    receive.child_start(2, compiled, reg)
    src = ("127.0.0.1", 5070)
    msgs = [register(i, si.port) for i in range(n)]
    recv = receive.receive_msg
    for m in msgs:
        recv(m, src, si)
    accepted = statistics.get_stat("registrar:accepted_regs").get()
    if accepted != n:
        sys.exit(f"only {accepted} of {n} REGISTERs accepted")
    print(f"{n} REGISTERs accepted")


def server(rate: int, seconds: int, workers: int, callgrind: bool) -> None:
    if not callgrind:
        ok, cpu = _server_run(rate, seconds, workers, False)
        print(f"server CPU {cpu:.2f} s = {1e6 * cpu / max(ok, 1):.1f} us "
              f"per REGISTER")
        return
    # two runs as long, the second with 4 times the REGISTERs: start-up,
    # timers and shutdown cancel out of the difference
    ok1, n1 = _server_run(rate // 4, seconds, workers, True)
    ok2, n2 = _server_run(rate, seconds, workers, True)
    print(f"server: ({n2} - {n1}) instructions / ({ok2} - {ok1}) REGISTERs "
          f"= {(n2 - n1) / max(ok2 - ok1, 1):.0f} per REGISTER")


def _server_run(rate, seconds, workers, callgrind):
    """One server, one SIPp run; (REGISTERs answered 200, CPU s of the
    server during the run), or with callgrind (answered, instructions of
    every server process from start to stop)."""
    sys.path.append(HERE)
    from lib import procs
    from lib.proxies import render_ports
    port, uac_port = _free_port(), _free_port()
    work = tempfile.mkdtemp(prefix="regcost-")
    with open(os.path.join(HERE, "opensipy", "register.cfg")) as f:
        text = render_ports(f.read(), port, 0)
    text = text.replace("udp_workers=2", f"udp_workers={workers}")
    cfg = os.path.join(work, "register.cfg")
    with open(cfg, "w") as f:
        f.write(text)
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    env.pop("NOTIFY_SOCKET", None)
    cmd = [sys.executable, "-m", "opensipy", "-F", "-E", "-m", "256",
           "-f", cfg]
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind",
               f"--callgrind-out-file={work}/cg.%p"] + cmd
    p = procs.start_group("opensipy", cmd, work,
                          os.path.join(work, "opensipy.log"),
                          2 * seconds + 600, env)
    try:
        if not procs.wait_port(port, True, 300 if callgrind else 60):
            sys.exit("opensipy did not start; see " + work)
        time.sleep(10 if callgrind else 2)
        calls = rate * seconds
        t0 = _proc_table(procs)
        r = subprocess.run(
            ["sipp", "-sf", os.path.join(HERE, "scenarios",
                                         "register_uac.xml"),
             f"127.0.0.1:{port}", "-i", "127.0.0.1", "-p", str(uac_port),
             "-r", str(rate), "-m", str(calls), "-l", str(5 * rate),
             "-nostdin", "-timeout", f"{seconds + 60}s", "-timeout_error",
             "-trace_stat", "-stf", "uac.csv", "-fd", "1"],
            cwd=work, capture_output=True, text=True, timeout=seconds + 90)
        t1 = _proc_table(procs)
        ok, retrans = _successful(os.path.join(work, "uac.csv"))
        print(f"sipp exit {r.returncode}; {ok} of {calls} REGISTERs "
              f"answered 200, {retrans} retransmissions")
        if retrans:
            print("  WARNING: retransmissions were processed too; use a "
                  "lower rate")
        pids = procs.tree(t1, p.pid)
        if not callgrind:
            for pid in sorted(pids):
                if pid in t0 and pid in t1:
                    print(f"  {t1[pid][2]}[{pid}]: "
                          f"user {t1[pid][4] - t0[pid][4]:.2f} s, "
                          f"system {t1[pid][5] - t0[pid][5]:.2f} s")
            return ok, procs.cpu_delta(t0, t1, pids)
    finally:
        procs.stop_group(p, grace=60.0)
    total = 0
    for name in sorted(os.listdir(work)):
        if name.startswith("cg."):
            n = _callgrind_total(os.path.join(work, name))
            print(f"  {name}: {n} instructions")
            total += n
    return ok, total


def _callgrind_total(path):
    """The instructions in one callgrind dump file (its totals line)."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    return 0


def _proc_table(procs):
    """procs.proc_table() with user and system time apart (items 4, 5)."""
    table = procs.proc_table()
    for pid in list(table):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            del table[pid]
            continue
        table[pid] += (int(fields[11]) / procs.CLK_TCK,
                       int(fields[12]) / procs.CLK_TCK)
    return table


def _successful(path):
    with open(path, encoding="latin-1") as f:
        rows = [ln.rstrip("\r\n;").split(";") for ln in f if ln.strip()]
    last = dict(zip(rows[0], rows[-1]))
    return int(last["SuccessfulCall(C)"]), int(last["Retransmissions(C)"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("inproc")
    a.add_argument("n", type=int)
    b = sub.add_parser("server")
    b.add_argument("--rate", type=int, default=500)
    b.add_argument("--seconds", type=int, default=20)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--callgrind", action="store_true",
                   help="run the server under callgrind and count the "
                   "instructions of the SIPp run instead of CPU time")
    args = ap.parse_args()
    if args.mode == "inproc":
        inproc(args.n)
    else:
        server(args.rate, args.seconds, args.workers, args.callgrind)


if __name__ == "__main__":
    main()
