"""Benchmark (not a timed test): from ``opensipy -F`` to READY=1 with four
SIP receivers.  Run with ``python3 -m pytest tests/core/test_bench_startup.py
--benchmark-enable``; normal runs start it once and check it got ready."""
import pytest

from server import Server, free_port

pytestmark = pytest.mark.slow


def test_time_to_ready_with_4_receivers(benchmark, tmp_path):
    script = f"""
udp_workers=4
socket=udp:127.0.0.1:{free_port()}
loadmodule "proto_udp.so"
route {{ drop; }}
"""
    servers = []

    def setup():
        d = tmp_path / f"run{len(servers)}"
        d.mkdir()
        servers.append(Server(d))
        return (servers[-1],), {}

    def teardown(s):
        assert len(s.children()) == 5      # 4 receivers + the timer
        assert s.terminate() == 0
        s.cleanup()

    try:
        benchmark.pedantic(lambda s: s.start(script), setup=setup,
                           teardown=teardown, rounds=5, iterations=1)
    finally:
        for s in servers:
            s.cleanup()
