#!/usr/bin/env python3
"""opensipy load benchmark: the highest call rate a proxy sustains with no
failed call, kamailio and opensipy measured side by side.

    bench/run.sh [knobs] stateless|stateful|register|stateless-tcp
    bench/run.sh --report bench/results/<run directory>

Topology (UDP, 127.0.0.1 only):

    SIPp UAC :5070  ->  proxy :5060  ->  SIPp UAS :5080

A *step* runs one SIPp UAC at a fixed rate for a fixed number of calls
(rate x step seconds) against a freshly started UAS and proxy, then stops
every process group.  A step passes when SIPp exits 0, every call succeeded,
retransmissions are at most --max-retrans-pct % of the calls and the
achieved rate is at least --min-rate-ratio x the target.  A *search* doubles
the rate from --start-rate until a step fails, then bisects --bisect times
between the last pass and the first failure (or runs exactly --rates).  A
*round* is one search per proxy; --rounds repeats it, interleaved
(kamailio, opensipy, kamailio, opensipy, ...), and the table at the end
gives every round's result, the median, the spread and the
opensipy/kamailio ratio.  Every knob is a flag or an environment variable
(see --help and bench/README.md).
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from lib import procs, report, sipp  # noqa: E402
from lib.proxies import (HOST, PROXIES, SCENARIOS,  # noqa: E402
                         ProxyUnavailable)

# (flag, env, type, default, help)
KNOBS = [
    ("proxies", "BENCH_PROXIES", str, "kamailio,opensipy",
     "comma list, run in this order each round: kamailio, opensipy, direct"),
    ("children", "BENCH_CHILDREN", int, 2,
     "SIP worker processes of each proxy (kamailio -n, opensipy udp_workers)"),
    ("rounds", "BENCH_ROUNDS", int, 1,
     "how many times the whole set of searches is repeated, interleaved"),
    ("step_seconds", "BENCH_STEP_SECONDS", int, 10,
     "length of one step: the UAC makes rate x this many calls"),
    ("start_rate", "BENCH_START_RATE", int, 250,
     "first rate of a search (calls/s); doubled until a step fails"),
    ("max_rate", "BENCH_MAX_RATE", int, 40000,
     "the search never tries more than this (calls/s)"),
    ("bisect", "BENCH_BISECT", int, 4,
     "bisection steps between the last passing and the first failing rate"),
    ("max_steps", "BENCH_MAX_STEPS", int, 14, "step limit per search"),
    ("max_seconds", "BENCH_MAX_SECONDS", int, 420,
     "time limit per search (s): no new step once a passing one would "
     "not fit"),
    ("rates", "BENCH_RATES", str, "",
     "comma list of rates: run exactly these steps, no search"),
    ("max_retrans_pct", "BENCH_MAX_RETRANS_PCT", float, 0.5,
     "retransmissions allowed in a passing step, % of calls"),
    ("min_rate_ratio", "BENCH_MIN_RATE_RATIO", float, 0.95,
     "achieved/target rate required in a passing step"),
    ("proxy_port", "BENCH_PROXY_PORT", int, 5060, "proxy UDP port"),
    ("uas_port", "BENCH_UAS_PORT", int, 5080, "SIPp UAS UDP port"),
    ("uac_port", "BENCH_UAC_PORT", int, 5070, "SIPp UAC UDP port"),
    ("uac_media_port", "BENCH_UAC_MEDIA_PORT", int, 16000,
     "SIPp UAC media port (-mp; SIPp binds it even without RTP)"),
    ("uas_media_port", "BENCH_UAS_MEDIA_PORT", int, 17000,
     "SIPp UAS media port"),
    ("settle", "BENCH_SETTLE", float, 1.0,
     "seconds to wait after the proxy is ready before the UAC starts"),
    ("port_wait", "BENCH_PORT_WAIT", float, 10.0,
     "seconds to wait for a port to become free before giving up"),
    ("shm_mb", "BENCH_SHM_MB", int, 1024,
     "shared memory of each proxy in MB (-m)"),
    ("kamailio_maxbuffer", "BENCH_KAMAILIO_MAXBUFFER", int, 0,
     "kamailio maxbuffer (UDP SO_RCVBUF probe ceiling); 0 = its default"),
    ("tag", "BENCH_TAG", str, "", "label added to the result directory"),
    ("results", "BENCH_RESULTS", str, os.path.join(HERE, "results"),
     "where results go"),
]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run.sh", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every flag also reads an environment variable (shown in "
               "brackets); the flag wins.")
    ap.add_argument("scenario", nargs="?", choices=SCENARIOS)
    ap.add_argument("--report", metavar="RUNDIR",
                    help="print the table of an earlier run and exit")
    for name, env, typ, default, hlp in KNOBS:
        v = os.environ.get(env)
        if v not in (None, ""):
            try:
                default = typ(v)
            except ValueError:
                ap.error("%s=%r is not a %s" % (env, v, typ.__name__))
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=typ,
                        default=default,
                        help="%s [%s, default %r]" % (hlp.replace("%", "%%"), env,
                                                     default))
    a = ap.parse_args(argv)
    if a.report:
        return a
    if not a.scenario:
        ap.error("a scenario is required (%s)" % "|".join(SCENARIOS))
    a.proxy_list = [p.strip() for p in a.proxies.split(",") if p.strip()]
    for p in a.proxy_list:
        if p not in PROXIES:
            ap.error("unknown proxy %r (known: %s)" % (p, ", ".join(PROXIES)))
    a.rate_list = [int(x) for x in a.rates.split(",") if x.strip()]
    ports = [a.proxy_port, a.uas_port, a.uac_port, a.uac_media_port,
             a.uas_media_port]
    if len(set(ports)) != len(ports):
        ap.error("proxy, UAS, UAC and media ports must all differ")
    if a.children < 1 or a.rounds < 1 or a.step_seconds < 1:
        ap.error("children, rounds and step seconds must be at least 1")
    return a


class Abort(Exception):
    """Stop the whole run (environment problem, not a proxy result)."""


# ---------------------------------------------------------------- one step

def run_step(k, proxy, scenario, rate, stepdir):
    """Run one fixed-rate step; returns its record (judged)."""
    os.makedirs(stepdir, exist_ok=True)
    secs = k.step_seconds
    calls = max(1, int(round(rate * secs)))
    # SIPp's own global timeout: the step, plus room for the last calls'
    # retransmissions to time out; the `timeout` wrappers sit above it
    uac_limit = 2 * secs + 30
    life = uac_limit + 30 + k.settle + 30      # proxy / UAS hard bound
    rec = {"proxy": proxy.name, "scenario": scenario, "rate": rate,
           "calls": calls, "step_seconds": secs, "children": k.children,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    ports = [k.proxy_port, k.uas_port, k.uac_port, k.uac_media_port,
             k.uas_media_port]
    proto = sipp.transport(scenario)
    for port in ports:
        if not procs.wait_port(port, False, k.port_wait):
            raise Abort("UDP port %d is still in use after %.0f s: %s" % (
                port, k.port_wait, procs.who_holds(port)))
        if proto == "tcp" and not procs.wait_port(port, False, k.port_wait,
                                                  "tcp"):
            raise Abort("TCP port %d is still listened on after %.0f s" % (
                port, k.port_wait))
    with_uas = scenario != "register"
    uas = prx = None
    try:
        if with_uas:
            uas = procs.start_group(
                "uas", sipp.uas_cmd(HOST, k.uas_port, k.uas_media_port, life,
                                    proto),
                stepdir, os.path.join(stepdir, "uas.log"), life)
            if not procs.wait_port(k.uas_port, True, 10, proto):
                raise Abort("the SIPp UAS did not bind port %d (see %s)" % (
                    k.uas_port, os.path.join(stepdir, "uas.log")))
        if proxy.has_process:
            rundir = os.path.join(stepdir, "proxy")
            os.makedirs(rundir, exist_ok=True)
            cmd, env = proxy.prepare(scenario, rundir)
            rec["proxy_cmd"] = " ".join(cmd)
            prx = procs.start_group("proxy", cmd, rundir,
                                    os.path.join(stepdir, "proxy.log"), life,
                                    env)
            if not proxy.wait_ready(prx, rundir, 30):
                raise Abort("%s did not become ready on port %d (rc=%s); "
                            "see %s" % (proxy.name, k.proxy_port, prx.poll(),
                                        os.path.join(stepdir, "proxy.log")))
            time.sleep(k.settle)
            if prx.poll() is not None:
                raise Abort("%s exited right after start (rc=%s); see %s" % (
                    proxy.name, prx.returncode,
                    os.path.join(stepdir, "proxy.log")))
            mem = procs.socket_mem(k.proxy_port)
            rec["proxy_rcvbuf"] = mem.get("rb")
        target = k.proxy_port if proxy.has_process else k.uas_port
        cmd = sipp.uac_cmd(scenario, HOST, target, k.uac_port,
                           k.uac_media_port, rate, calls, uac_limit)
        rec["uac_cmd"] = " ".join(cmd)
        t0, udp0 = procs.proc_table(), procs.udp_counters()
        uac = procs.start_group("uac", cmd, stepdir,
                                os.path.join(stepdir, "uac.log"),
                                uac_limit + 10)
        rc, uac_cpu, wall = procs.wait_exit(uac, uac_limit + 20)
        t1, udp1 = procs.proc_table(), procs.udp_counters()
        if prx is not None:
            mem = procs.socket_mem(k.proxy_port)
            rec["proxy_socket_drops"] = mem.get("d")
            if prx.poll() is not None:
                rec["proxy_died"] = prx.returncode
        rec["uac_rc"] = rc
        rec["wall_s"] = round(wall, 3)
        # datagrams dropped on a full receive buffer, any socket (only our
        # loopback traffic in practice)
        rec["udp_rcvbuf_errors"] = (udp1.get("RcvbufErrors", 0)
                                    - udp0.get("RcvbufErrors", 0))
        mine = {os.getpid()}
        prx_pids = (procs.tree(t0, prx.pid) | procs.tree(t1, prx.pid)) \
            if prx else set()
        uas_pids = (procs.tree(t0, uas.pid) | procs.tree(t1, uas.pid)) \
            if uas else set()
        mine |= prx_pids | uas_pids
        c_proxy = procs.cpu_delta(t0, t1, prx_pids)
        c_uas = procs.cpu_delta(t0, t1, uas_pids)
        c_box = procs.cpu_delta(t0, t1, set(t1)) + uac_cpu

        def pct(x):
            return round(100.0 * x / max(wall, 1e-3), 1)
        rec.update({
            "proxy_procs": len([p for p in prx_pids if p in t1]),
            # % of ONE core; the box has os.cpu_count() cores
            "cpu_proxy_pct": pct(c_proxy),
            "cpu_proxy_by_process": procs.cpu_by_process(t0, t1, prx_pids,
                                                         wall),
            "cpu_uas_pct": pct(c_uas),
            "cpu_uac_pct": pct(uac_cpu),
            "cpu_sipp_pct": pct(c_uas + uac_cpu),
            "cpu_set_pct": pct(c_proxy + c_uas + uac_cpu),
            "cpu_box_pct": pct(c_box),
            "cpu_cores": os.cpu_count(),
            "others_busy": procs.others_busy(t0, t1, mine, wall),
        })
        try:
            rec.update(sipp.parse_uac(stepdir))
        except (OSError, ValueError, KeyError, IndexError) as e:
            rec["parse_error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if prx is not None:
            rec["proxy_exit"] = procs.stop_group(prx)
        if uas is not None:
            procs.stop_group(uas)
    if uas is not None:
        rec["uas_failed"] = sipp.uas_failed(stepdir)
    return judge(k, rec, stepdir)


def judge(k, r, stepdir):
    why = []
    n = r["calls"]
    if "parse_error" in r:
        why.append("no SIPp statistics (%s)" % r["parse_error"])
    else:
        if r["uac_rc"] != 0:
            why.append("sipp exit %s" % r["uac_rc"])
        if r["successful"] != n:
            why.append("%d/%d calls succeeded" % (r["successful"], n))
        if r["failed"]:
            why.append("%d failed" % r["failed"])
        if r["retrans"] > n * k.max_retrans_pct / 100.0:
            why.append("%d retransmissions" % r["retrans"])
        achieved = r["successful"] / max(r["elapsed_ms"] / 1000.0, 1e-3)
        r["achieved_cps"] = round(achieved, 1)
        if achieved < k.min_rate_ratio * r["rate"]:
            why.append("achieved %.0f cps" % achieved)
        r["uac_msgs_per_call"] = round(r["uac_msgs"] / max(1, r["successful"]),
                                       2)
    if r.get("proxy_died") is not None:
        why.append("proxy exited during the step (rc=%s)" % r["proxy_died"])
    r["pass"] = not why
    r["why"] = "; ".join(why)
    if not r["pass"]:
        errs = sipp.first_errors(stepdir, "uac_errors.log", 2)
        if errs:
            r["uac_first_errors"] = errs
    return r


def step_line(r):
    if "parse_error" in r:
        return "%-8s rate %6d  FAIL  %s" % (r["proxy"], r["rate"], r["why"])
    s = ("%-8s rate %6d  %s  ok %d/%d fail %d retr %d  %.0f cps  rt %.2f ms  "
         "cpu proxy %.0f%% sipp %.0f%% box %.0f%%/%d00  drops %s/%s" % (
             r["proxy"], r["rate"], "PASS" if r["pass"] else "FAIL",
             r["successful"], r["calls"], r["failed"], r["retrans"],
             r.get("achieved_cps", 0), r["rt_avg_ms"], r["cpu_proxy_pct"],
             r["cpu_sipp_pct"], r["cpu_box_pct"], r["cpu_cores"],
             r.get("proxy_socket_drops", "-"), r["udp_rcvbuf_errors"]))
    if r["why"]:
        s += "  (" + r["why"] + ")"
    if r["others_busy"]:
        s += "  [other load: " + ", ".join(r["others_busy"][:4]) + "]"
    return s


# ---------------------------------------------------------------- search

def search(k, proxy, scenario, outdir, rnd, steps_log):
    steps = []
    deadline = time.monotonic() + k.max_seconds

    def budget():
        # start a step only while a passing one (step + ~5 s of start and
        # stop) still fits; a failing one may overrun by SIPp's timeout
        return (len(steps) < k.max_steps
                and time.monotonic() + k.step_seconds + 5 <= deadline)

    def step(rate):
        r = run_step(k, proxy, scenario, rate,
                     os.path.join(outdir, "r%06d" % rate))
        r["round"] = rnd
        steps.append(r)
        steps_log.write(json.dumps(r) + "\n")
        steps_log.flush()
        print("  " + step_line(r), flush=True)
        return r["pass"]

    if k.rate_list:
        for rate in k.rate_list:
            if not budget():
                break
            step(rate)
        passed = [s["rate"] for s in steps if s["pass"]]
        return (max(passed) if passed else 0), steps
    lo, hi, rate = 0, None, min(k.start_rate, k.max_rate)
    while budget():
        if step(rate):
            lo = rate
            if rate >= k.max_rate:
                break
            rate = min(2 * rate, k.max_rate)
        else:
            hi = rate
            break
    if hi is not None and lo == 0:        # the start rate failed: halve
        rate = hi // 2
        while rate >= 5 and budget():
            if step(rate):
                lo = rate
                break
            hi, rate = rate, rate // 2
    for _ in range(k.bisect):
        if hi is None or lo == 0 or not budget():
            break
        gran = 10 if hi - lo > 20 else 1
        mid = int(round((lo + hi) / 2.0 / gran) * gran)
        if mid <= lo or mid >= hi:
            break
        if step(mid):
            lo = mid
        else:
            hi = mid
    return lo, steps


def summarize(k, proxy, scenario, rnd, best, steps, outdir):
    at = [s for s in steps if s["pass"] and s["rate"] == best]
    s = at[-1] if at else {}
    fails = [x["rate"] for x in steps if not x["pass"] and x["rate"] > best]
    return {
        "proxy": proxy.name, "scenario": scenario, "round": rnd,
        "children": k.children, "tag": k.tag,
        "mode": "rates" if k.rate_list else "search",
        "max_cps": best, "first_fail": min(fails) if fails else None,
        "steps": len(steps),
        "proxy_rcvbuf": next((x.get("proxy_rcvbuf") for x in steps
                              if x.get("proxy_rcvbuf")), None),
        "uac_msgs_per_call": s.get("uac_msgs_per_call"),
        "rt_avg_ms": s.get("rt_avg_ms"),
        "cpu_proxy_pct": s.get("cpu_proxy_pct"),
        "cpu_sipp_pct": s.get("cpu_sipp_pct"),
        "cpu_set_pct": s.get("cpu_set_pct"),
        "cpu_box_pct": s.get("cpu_box_pct"),
        "proxy_procs": s.get("proxy_procs"),
        "others_busy_steps": sum(1 for x in steps if x.get("others_busy")),
        "outdir": outdir,
    }


# ---------------------------------------------------------------- main

def _on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv=None):
    k = parse_args(sys.argv[1:] if argv is None else argv)
    if k.report:
        print(report.render_dir(k.report))
        return 0
    for tool in ("sipp", "timeout", "ss"):
        if shutil.which(tool) is None:
            print("bench: %s is not installed%s" % (
                tool, " (apt-get install -y sip-tester)" if tool == "sipp"
                else ""), file=sys.stderr)
            return 2
    # explicit, also when started with SIGINT ignored (background job)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(procs.stop_all)

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = "%s-%s-c%d%s" % (stamp, k.scenario, k.children,
                            "-" + k.tag if k.tag else "")
    rundir = os.path.join(os.path.abspath(k.results), name)
    proxies = [PROXIES[n](k) for n in k.proxy_list]
    try:
        # refuse before anything starts when a proxy cannot run the scenario
        for p in proxies:
            pre = tempfile.mkdtemp(prefix="bench-check-")
            try:
                p.check(k.scenario, pre)
            except ProxyUnavailable as e:
                print("bench: %s" % e, file=sys.stderr)
                return 3
            finally:
                shutil.rmtree(pre, ignore_errors=True)
        os.makedirs(rundir, exist_ok=True)
        meta = {
            "scenario": k.scenario, "started": stamp,
            "knobs": {n: getattr(k, n) for n, *_ in KNOBS},
            "versions": {p.name: p.version() for p in proxies
                         if p.has_process},
            "sipp": procs_first_line(["sipp", "-v"]),
            "rcvbuf_setting": {p.name: p.rcvbuf_setting() for p in proxies
                               if p.has_process},
            "notes": [n for p in proxies for n in p.notes(k.scenario)],
            "cpu_cores": os.cpu_count(),
            "kernel": os.uname().release,
            "python": sys.version.split()[0],
        }
        with open(os.path.join(rundir, "run.json"), "w") as f:
            json.dump(meta, f, indent=1)
        print("== %s: %s, %d worker(s) each, %d round(s), %s -> %s" % (
            k.scenario, " / ".join(k.proxy_list), k.children, k.rounds,
            "rates " + k.rates if k.rate_list else
            "search from %d cps, %d s steps" % (k.start_rate, k.step_seconds),
            rundir), flush=True)
        for note in meta["notes"]:
            print("   note: " + note)
        searches = []
        with open(os.path.join(rundir, "steps.jsonl"), "a") as steps_log, \
                open(os.path.join(rundir, "searches.jsonl"), "a") as s_log:
            for rnd in range(1, k.rounds + 1):
                for p in proxies:
                    outdir = os.path.join(rundir, "%s-round%d" % (p.name, rnd))
                    print("-- round %d/%d: %s" % (rnd, k.rounds, p.name),
                          flush=True)
                    best, steps = search(k, p, k.scenario, outdir, rnd,
                                         steps_log)
                    row = summarize(k, p, k.scenario, rnd, best, steps,
                                    outdir)
                    searches.append(row)
                    s_log.write(json.dumps(row) + "\n")
                    s_log.flush()
                    with open(os.path.join(os.path.abspath(k.results),
                                           "summary.jsonl"), "a") as f:
                        f.write(json.dumps(dict(row, run=name)) + "\n")
                    print("   => %s max %d cps" % (p.name, best), flush=True)
        print()
        print(report.render_dir(rundir))
        return 0
    except Abort as e:
        procs.stop_all()
        print("bench: aborted: %s" % e, file=sys.stderr)
        _partial(rundir)
        return 4
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping every process we started",
              file=sys.stderr)
        procs.stop_all()
        _partial(rundir)
        return 130
    finally:
        procs.stop_all()
        for p in proxies:
            p.cleanup()


def _partial(rundir):
    """The table of the searches that finished before a stop, if any."""
    if os.path.exists(os.path.join(rundir, "searches.jsonl")):
        print("\n(partial run)\n" + report.render_dir(rundir))


def procs_first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    lines = [x.strip() for x in out.splitlines() if x.strip()]
    return lines[0] if lines else "?"


if __name__ == "__main__":
    sys.exit(main())
