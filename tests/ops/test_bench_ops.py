"""Benchmarks (not timed tests): a /metrics scrape and an MI call over a
kept-alive HTTP connection against a running server, and one JSON log
record.  Run with ``python3 -m pytest tests/ops/test_bench_ops.py
--benchmark-enable``; normal runs do each once and check the answer."""
from __future__ import annotations

import http.client
import json

import pytest

from ops_util import Ports

from opensipy import log


@pytest.fixture
def running(server):
    p = Ports()
    server.start(p.script(workers=2, loads='loadmodule "prometheus.so"\n',
                          extra='modparam("prometheus", "statistics", '
                                '"core: shmem: sl: pkmem: load:")'))
    c = http.client.HTTPConnection("127.0.0.1", p.http, timeout=5)
    try:
        yield c
    finally:
        c.close()


def test_bench_metrics_scrape(benchmark, running):
    def scrape():
        running.request("GET", "/metrics")
        r = running.getresponse()
        return r.status, r.read()
    status, body = benchmark(scrape)
    assert status == 200 and b"opensips_rcv_requests" in body


def test_bench_mi_over_keep_alive(benchmark, running):
    req = json.dumps({"jsonrpc": "2.0", "method": "uptime", "id": 1})

    def call():
        running.request("POST", "/mi", req)
        return json.loads(running.getresponse().read())
    assert "Up time" in benchmark(call)["result"]


def test_bench_json_log_line(benchmark):
    line = benchmark(log.json_line, log.L_NOTICE, "a log message\n")
    assert json.loads(line)["message"] == "a log message"
