"""Smoke test of the load benchmark (bench/, see bench/README.md).

One fixed-rate step (2 s at 20 calls/s) of the ``stateless`` scenario with
opensipy only: SIPp UAC -> opensipy forward() -> SIPp UAS, on free ports.
It proves that the harness and opensipy's stateless forwarding work together
end to end: every call completes, the step record has SIPp's figures, the
proxy's receive buffer and CPU, the table is printed, and no process
outlives the run.  Not a measurement: the real one is ``bench/run.sh``.
The search logic (doubling, halving, bisection) is checked without SIPp.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server import free_port

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench.py"


def _ports(n):
    ports = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def _processes_mentioning(text):
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{d.name}: {cmd}")
    return found


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_opensipy_stateless_fixed_rate_step(tmp_path):
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed (apt-get install -y sip-tester); "
                    "the bench harness drives SIPp as UAC and UAS")
    proxy, uas, uac, uac_media, uas_media = _ports(5)
    cmd = [sys.executable, str(BENCH), "stateless",
           "--proxies", "opensipy", "--children", "2",
           "--rates", "20", "--step-seconds", "2", "--rounds", "1",
           "--settle", "0.3", "--shm-mb", "64",
           "--results", str(tmp_path),
           "--proxy-port", str(proxy), "--uas-port", str(uas),
           "--uac-port", str(uac), "--uac-media-port", str(uac_media),
           "--uas-media-port", str(uas_media)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=200,
                       start_new_session=True, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out

    runs = [d for d in tmp_path.iterdir() if d.is_dir()]
    assert len(runs) == 1, out
    steps = [json.loads(ln) for ln in
             (runs[0] / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 1, out
    s = steps[0]
    assert s["proxy"] == "opensipy" and s["rate"] == 20 and s["calls"] == 40
    assert s["pass"], f"{s['why']}\n{out}"
    assert s["successful"] == 40 and s["failed"] == 0 and s["uac_rc"] == 0
    assert s["uas_failed"] == 0
    # INVITE 180 200 ACK BYE 200 at the UAC; a 180 overtaken by the 200
    # (two workers) is not counted, so slightly under 6 is possible
    assert 5.0 <= s["uac_msgs_per_call"] <= 6.0
    assert s["proxy_rcvbuf"] and s["proxy_rcvbuf"] > 0
    # attendant + 2 receivers + timer, under the `timeout` wrapper
    assert s["proxy_procs"] >= 4
    assert s["cpu_proxy_pct"] >= 0 and s["cpu_set_pct"] >= s["cpu_proxy_pct"]
    assert s["proxy_exit"] == 0, (runs[0] / "opensipy-round1" / "r000020"
                                  / "proxy.log").read_text()

    search = json.loads((runs[0] / "searches.jsonl").read_text())
    assert search["max_cps"] == 20 and search["proxy"] == "opensipy"
    assert "max calls/s by round" in r.stdout and "opensipy" in r.stdout
    # every process group of the step was stopped
    assert _processes_mentioning(str(tmp_path)) == []


def _load_bench():
    import importlib.util
    spec = importlib.util.spec_from_file_location("osy_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("capacity, expect_rates, expect_max", [
    # doubles 250 -> 500 -> 1000 (fails), then bisects 4 times on a 10 cps
    # grid: 750 fails, 620 fails, 560 passes, 590 passes
    (600, [250, 500, 1000, 750, 620, 560, 590], 590),
    # the start rate fails: halve until a step passes (62), then bisect;
    # below 20 cps of distance the grid is 1 cps
    (100, [250, 125, 62, 90, 110, 100, 105], 100),
    # never fails: stops at max_rate
    (10 ** 6, [250, 500, 1000, 2000], 2000),
])
def test_search_doubles_then_bisects(tmp_path, monkeypatch, capacity,
                                     expect_rates, expect_max):
    bench = _load_bench()
    k = bench.parse_args(["stateless", "--max-rate", "2000", "--bisect", "4",
                          "--start-rate", "250"])
    tried = []

    def fake_step(k, proxy, scenario, rate, stepdir):
        tried.append(rate)
        return {"rate": rate, "pass": rate <= capacity, "why": "",
                "proxy": "x", "parse_error": "fake"}

    monkeypatch.setattr(bench, "run_step", fake_step)
    monkeypatch.setattr(bench, "step_line", lambda r: "")
    with open(tmp_path / "steps.jsonl", "w") as log:
        best, steps = bench.search(k, None, "stateless", str(tmp_path), 1,
                                   log)
    assert tried == expect_rates
    assert best == expect_max
