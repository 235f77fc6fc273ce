"""SIPp command lines and the parsing of SIPp's statistics files.

The UAC runs with a fixed rate (-r) and a fixed number of calls (-m), writes
its cumulative statistics (-trace_stat, the last CSV row is the final one)
and its per-message counters (-trace_counts: sent / received /
retransmitted / timed out / unexpected, per scenario line).
"""
from __future__ import annotations

import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(os.path.dirname(HERE), "scenarios")
SOCKBUF = 1 << 20          # SIPp -buff_size (rmem_max here is 4 MiB)
LOG_CAP = 1 << 20          # -max_log_size for the error logs of failing steps


def transport(scenario):
    """'tcp' for the scenarios over TCP (name ends in -tcp), else 'udp'."""
    return "tcp" if scenario.endswith("-tcp") else "udp"


def _t(proto):
    # over TCP SIPp keeps one connection per side (-t t1), as a trunk does
    return ["-t", "t1"] if proto == "tcp" else []


def uas_cmd(host, port, ctrl_port, limit_s, proto="udp"):
    return ["sipp", "-sf", os.path.join(SCENARIOS, "invite_uas.xml"),
            *_t(proto),
            "-i", host, "-p", str(port), "-mi", host, "-mp", str(ctrl_port),
            "-nostdin", "-buff_size", str(SOCKBUF),
            "-timeout", "%ds" % int(limit_s), "-timeout_error",
            "-trace_stat", "-stf", "uas_stat.csv", "-fd", "1",
            "-trace_err", "-error_file", "uas_errors.log",
            "-max_log_size", str(LOG_CAP)]


def uac_cmd(scenario, host, target_port, port, ctrl_port, rate, calls,
            limit_s):
    xml = "register_uac.xml" if scenario == "register" else "invite_uac.xml"
    return ["sipp", "-sf", os.path.join(SCENARIOS, xml),
            "%s:%d" % (host, target_port), *_t(transport(scenario)),
            "-i", host, "-p", str(port), "-mi", host, "-mp", str(ctrl_port),
            "-r", str(rate), "-rp", "1000", "-m", str(calls),
            # enough concurrent calls that the limit never throttles the rate
            "-l", str(max(2000, 5 * rate)),
            "-d", "0", "-nostdin", "-buff_size", str(SOCKBUF),
            "-timeout", "%ds" % int(limit_s), "-timeout_error",
            "-trace_stat", "-stf", "uac_stat.csv", "-fd", "1",
            "-trace_counts", "-trace_screen", "-screen_file", "uac_screen.log",
            "-trace_err", "-error_file", "uac_errors.log",
            "-max_log_size", str(LOG_CAP)]


def _last_row(path):
    with open(path, encoding="latin-1") as f:
        rows = [ln.rstrip("\r\n") for ln in f if ln.strip()]
    if len(rows) < 2:
        raise ValueError("%s has no data row" % os.path.basename(path))
    head = rows[0].rstrip(";").split(";")
    last = rows[-1].rstrip(";").split(";")
    return dict(zip(head, last))


def duration_ms(text):
    """SIPp durations: 'HH:MM:SS' or 'HH:MM:SS:micro' -> milliseconds."""
    p = [int(x) for x in text.split(":")]
    ms = ((p[0] * 60 + p[1]) * 60 + p[2]) * 1000.0
    if len(p) > 3:
        ms += p[3] / 1000.0
    return ms


def parse_uac(stepdir):
    """The UAC's final figures for one step (raises OSError/ValueError/
    KeyError when SIPp left no usable statistics)."""
    st = _last_row(os.path.join(stepdir, "uac_stat.csv"))
    counts_files = glob.glob(os.path.join(stepdir, "*_counts.csv"))
    counts = _last_row(counts_files[0]) if counts_files else {}

    def total(suffix):
        return sum(int(v) for k, v in counts.items() if k.endswith(suffix))

    out = {
        "successful": int(st["SuccessfulCall(C)"]),
        "failed": int(st["FailedCall(C)"]),
        "created": int(st["TotalCallCreated"]),
        "sipp_retrans": int(st["Retransmissions(C)"]),
        "out_of_call_msgs": int(st["OutOfCallMsgs(C)"]),
        "rt_avg_ms": round(duration_ms(st["ResponseTime1(C)"]), 3),
        "rt_stdev_ms": round(duration_ms(st["ResponseTime1StDev(C)"]), 3),
        "call_len_avg_ms": round(duration_ms(st["CallLength(C)"]), 3),
        "rt_histogram": {k[len("ResponseTimeRepartition1_"):]: int(v)
                         for k, v in st.items()
                         if k.startswith("ResponseTimeRepartition1_")},
        "elapsed_ms": duration_ms(counts.get("ElapsedTime")
                                  or st["ElapsedTime(C)"]),
    }
    # per-message counters, retransmissions excluded from the message count
    out["uac_msgs"] = total("_Sent") + total("_Recv")
    out["retrans"] = total("_Retrans")
    out["msg_timeouts"] = total("_Timeout")
    out["unexpected"] = total("_Unexp")
    if not counts:
        out["retrans"] = out["sipp_retrans"]
    return out


def uas_failed(stepdir):
    """FailedCall(C) of the UAS, or None when it left no statistics."""
    try:
        return int(_last_row(os.path.join(stepdir, "uas_stat.csv"))
                   ["FailedCall(C)"])
    except (OSError, ValueError, KeyError):
        return None


def first_errors(stepdir, name, n=3):
    """The first few lines of a SIPp error file (for the step's 'why')."""
    path = os.path.join(stepdir, name)
    try:
        with open(path, encoding="latin-1") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return []
    return lines[:n]
