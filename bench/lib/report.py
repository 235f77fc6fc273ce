"""The comparison table of one run (bench/results/<run>/), from its
run.json and searches.jsonl."""
from __future__ import annotations

import json
import os
import statistics


def _load(rundir):
    with open(os.path.join(rundir, "run.json")) as f:
        meta = json.load(f)
    rows = []
    path = os.path.join(rundir, "searches.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            rows = [json.loads(ln) for ln in f if ln.strip()]
    return meta, rows


def _kib(b):
    return "-" if not b else "%d KiB" % (b // 1024)


def _med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _f(v, fmt="%.0f"):
    return "-" if v is None else fmt % v


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])]
                     + [line(r) for r in rows])


def render(meta, rows):
    k = meta["knobs"]
    out = []
    mode = ("fixed rates " + k["rates"]) if k.get("rates") else (
        "step-up search from %s cps" % k["start_rate"])
    out.append("scenario %s | %s worker(s) per proxy | %s, %s s steps | "
               "run %s" % (meta["scenario"], k["children"], mode,
                           k["step_seconds"], meta["started"]))
    for name, v in sorted(meta.get("versions", {}).items()):
        out.append("  %-9s %s" % (name, v))
    out.append("  %-9s %s | %s cores | kernel %s" % (
        "sipp", meta.get("sipp", "?"), meta.get("cpu_cores"),
        meta.get("kernel")))
    out.append("")
    order = []
    for r in rows:
        if r["proxy"] not in order:
            order.append(r["proxy"])
    table = []
    by = {p: sorted([r for r in rows if r["proxy"] == p],
                    key=lambda r: r["round"]) for p in order}
    for p in order:
        rs = by[p]
        cps = [r["max_cps"] for r in rs]
        # a search that never failed only gives a lower bound
        shown = ["%d%s" % (r["max_cps"], "+" if r.get("first_fail") is None
                           and r.get("mode") == "search" else "")
                 for r in rs]
        med = _med(cps)
        spread = ("%d-%d" % (min(cps), max(cps))) if cps else "-"
        if cps and med:
            spread += " (%.0f%%)" % (100.0 * (max(cps) - min(cps)) / med)
        table.append([
            p, _kib(_med([r.get("proxy_rcvbuf") for r in rs])),
            " / ".join(shown), _f(med), spread,
            " / ".join(_f(r.get("first_fail")) for r in rs),
            _f(_med([r.get("cpu_proxy_pct") for r in rs])),
            _f(_med([r.get("cpu_sipp_pct") for r in rs])),
            _f(_med([r.get("cpu_set_pct") for r in rs])),
            _f(_med([r.get("cpu_box_pct") for r in rs])),
            _f(_med([r.get("uac_msgs_per_call") for r in rs]), "%.2f"),
            _f(_med([r.get("rt_avg_ms") for r in rs]), "%.2f"),
        ])
    if table:
        out.append(_table(["proxy", "rcvbuf", "max calls/s by round",
                           "median", "min-max (spread)", "first fail",
                           "proxy CPU%", "SIPp CPU%", "set CPU%",
                           "box CPU%", "msgs/call", "rt ms"], table))
    else:
        out.append("(no search finished)")
    if k.get("rates"):
        out.append("")
        out.append("fixed-rate mode: 'max' is the highest listed rate that "
                   "passed, not a capacity; use the search for the ratio")
    if "kamailio" in by and "opensipy" in by:
        kam = {r["round"]: r["max_cps"] for r in by["kamailio"]}
        osy = {r["round"]: r["max_cps"] for r in by["opensipy"]}
        ratios = [osy[i] / kam[i] for i in sorted(kam)
                  if i in osy and kam[i]]
        out.append("")
        if ratios:
            mk = _med(list(kam.values()))
            mo = _med(list(osy.values()))
            out.append(
                "opensipy/kamailio: by round %s | median %.3f | min %.3f "
                "max %.3f | ratio of medians %s" % (
                    " / ".join("%.3f" % r for r in ratios), _med(ratios),
                    min(ratios), max(ratios),
                    "%.3f" % (mo / mk) if mk else "-"))
        else:
            out.append("opensipy/kamailio: no round with a kamailio result "
                       "above 0")
    if any(r.get("first_fail") is None and r.get("mode") == "search"
           for r in rows):
        out.append("")
        out.append("N+ = the search never failed (it stopped at --max-rate, "
                   "--max-steps or --max-seconds): a lower bound only")
    out.append("")
    out.append("UDP receive buffer of the proxy socket (rcvbuf column: "
               "kernel rb from `ss -uam`, i.e. after the kernel doubled the "
               "request):")
    for name, v in sorted(meta.get("rcvbuf_setting", {}).items()):
        out.append("  %-9s %s" % (name, v))
    for n in meta.get("notes", []):
        out.append("note: " + n)
    busy = sum(r.get("others_busy_steps", 0) for r in rows)
    if busy:
        out.append("note: %d step(s) saw other processes using >2%% of a "
                   "core (others_busy in steps.jsonl); this box is shared"
                   % busy)
    out.append("CPU columns: %% of one core at each round's max rate, median "
               "over rounds; proxy = its whole process tree, SIPp = UAC+UAS, "
               "set = proxy+SIPp, box = every process on the machine "
               "(%s00%% = all cores busy). Values at failing rates are not "
               "meaningful." % meta.get("cpu_cores", "?"))
    return "\n".join(out)


def render_dir(rundir):
    meta, rows = _load(rundir)
    return render(meta, rows)
