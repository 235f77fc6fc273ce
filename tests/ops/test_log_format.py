"""stderror_log_format = json: every line one JSON object, even with four
receivers and other processes logging at once; plain stays as it was."""
from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from ops_util import Ports, http_mi, send_sip_options
from server import run_opensipy, wait_for

from opensipy import log


def _load(port, senders=4, each=100):
    def one(t):
        for k in range(0, each, 10):       # bursts of 10, not a flood
            send_sip_options(port, 10, f"json{t}-{k}")
            time.sleep(0.01)
    ths = [threading.Thread(target=one, args=(t,)) for t in range(senders)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return senders * each


def test_json_lines_under_load_from_four_receivers(server):
    p = Ports()
    long_text = "x" * 6000          # longer than a pipe's atomic size
    # every receiver on the socket (no standby): four writers at once
    server.start(p.script(workers=4, head="""
log_level=4
stderror_log_format=json
udp_workers_standby=off
""", route=f"""
    xlog("L_NOTICE", "req $ci from $si:$sp\\n");
    if ($ci =~ "^json0-0-1-") xlog("L_NOTICE", "{long_text}");
    sl_send_reply(200, "OK");
"""))
    sent = _load(p.sip)
    # UDP may drop a few under load: every request received is answered
    def settled():
        st = http_mi(p.http, "get_statistics",
                     [["core:rcv_requests", "sl:2xx_replies"]])
        return st["sl:2xx_replies"] == st["core:rcv_requests"] and \
            st["core:rcv_requests"] > sent * 0.9 and st["core:rcv_requests"]
    n = wait_for(settled, timeout=30, what="the requests answered")
    time.sleep(0.5)
    assert n == wait_for(settled)
    http_mi(p.http, "uptime")      # the HTTPD process logs (debug) too
    assert server.terminate() == 0
    text = server.stderr()
    lines = text.splitlines()
    assert len(lines) > n
    recs = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            pytest.fail(f"line {i + 1} is not JSON: {line[:200]!r}")
        assert isinstance(rec, dict)
        assert {"time", "level", "pid", "rank", "process", "module",
                "message"} <= set(rec)
        recs.append(rec)
    reqs = [r for r in recs if r["message"].startswith("req ")]
    assert len(reqs) == n
    for r in reqs:
        # the Call-ID of the request being handled, and who handled it
        assert r["message"].split()[1] == r["callid"]
        assert r["process"] == f"SIP receiver udp:127.0.0.1:{p.sip}"
        assert r["rank"] in (1, 2, 3, 4)
        assert r["level"] == "NOTICE" and r["module"] == "core"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00",
                            r["time"])
    assert len({r["pid"] for r in reqs}) >= 2
    assert sum(1 for r in recs if r["message"] == long_text) == 1
    # no Call-ID on lines logged outside any message
    assert any(r["process"] == "HTTPD" and "callid" not in r for r in recs)
    assert any(r["process"] == "attendant" for r in recs)


def test_module_field_names_the_module_that_logged(server):
    p = Ports()
    server.start(p.script(head="log_level=4\nstderror_log_format=json\n"))
    http_mi(p.http, "uptime")
    wait_for(lambda: any(
        json.loads(x).get("module") == "httpd" and
        "POST /mi" in json.loads(x)["message"]
        for x in server.stderr().splitlines()), what="httpd's own line")


def test_plain_format_is_unchanged(server):
    p = Ports()
    server.start(p.script(head="log_level=3\n",
                          route='    xlog("L_NOTICE", "plain $ci\\n");\n'
                                '    sl_send_reply(200, "OK");'))
    send_sip_options(p.sip, 3, "pl")
    wait_for(lambda: server.stderr().count(":plain pl-") == 3)
    for line in server.stderr().splitlines():
        assert re.match(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \[\d+\] "
                        r"(ALERT|CRITICAL|ERROR|WARNING|NOTICE|INFO|DBG):",
                        line), line


def test_bad_format_is_a_config_error_with_its_line(tmp_path):
    p = Ports()
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(p.script(head="stderror_log_format=xml\n"))
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode != 0
    assert re.search(r"bad\.cfg:5:\d+: .*stderror_log_format.*xml",
                     r.stderr), r.stderr


def test_json_line_shape_without_a_server():
    line = log.json_line(log.L_ERR, "boom\n")
    rec = json.loads(line)
    assert rec["level"] == "ERROR" and rec["message"] == "boom"
    assert "\n" not in line
    assert log.to_log_format("plain_text") == "plain"
    with pytest.raises(ValueError):
        log.to_log_format("yaml")


def test_syslog_json_is_sent_as_one_object(monkeypatch):
    sent = []

    class FakeSyslog:
        @staticmethod
        def syslog(prio, text):
            sent.append((prio, text))
    monkeypatch.setattr(log.state, "_syslog_mod", FakeSyslog)
    monkeypatch.setattr(log.state, "syslog", True)
    monkeypatch.setattr(log.state, "stderr", False)
    monkeypatch.setattr(log.state, "syslog_format", "json")
    log.emit(log.L_WARN, "to syslog")
    assert sent and sent[0][0] == 4
    assert json.loads(sent[0][1])["message"] == "to syslog"
    monkeypatch.setattr(log.state, "syslog_format", "plain")
    log.emit(log.L_WARN, "plain one")
    assert sent[1] == (4, "plain one")


def test_uncaught_exception_is_one_json_record(tmp_path):
    import subprocess
    import sys
    code = ("from opensipy import log\n"
            "log.configure(stderr=True, syslog=False, stderr_format='json')\n"
            "raise RuntimeError('boom')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    rec = json.loads(lines[0])
    assert rec["level"] == "CRITICAL"
    assert "RuntimeError: boom" in rec["message"]
    assert "Traceback" in rec["message"]
