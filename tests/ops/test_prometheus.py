"""The prometheus module: /metrics scraped from a running server and read
with prometheus_client's own parser; values agree with MI get_statistics."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops_util import Ports, http_get, http_mi, send_sip_options
from server import REPO, run_opensipy, wait_for

HAVE_TM = (REPO / "modules" / "tm" / "__init__.py").is_file()


def scrape(port, path="/metrics"):
    status, ctype, body = http_get(port, path)
    assert status == 200, body
    assert ctype.startswith("text/plain; version=0.0.4")
    text = body.decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    return text, fams


def samples(fams, name):
    """[(labels, value)] of a family (counter names lose '_total')."""
    return [(s.labels, s.value) for s in fams[name].samples]


def one(fams, name, **want):
    got = [v for lab, v in samples(fams, name)
           if all(lab.get(k) == str(x) for k, x in want.items())]
    assert len(got) == 1, (name, want, samples(fams, name))
    return got[0]


def script(p, extra=""):
    loads = 'loadmodule "prometheus.so"\n'
    stats = "core: shmem: sl: pkmem: load:"
    if HAVE_TM:
        loads = 'loadmodule "tm.so"\n' + loads
        stats += " tm:"
    return p.script(workers=4, loads=loads, extra=f"""
modparam("prometheus", "statistics", "{stats}")
{extra}""")


@pytest.fixture
def srv(server):
    p = Ports()
    server.start(script(p))
    server.ports = p
    return server


def test_metrics_parse_and_match_get_statistics(srv):
    p = srv.ports
    send_sip_options(p.sip, 7, "prom")
    wait_for(lambda: http_mi(p.http, "get_statistics",
                             [["sl:2xx_replies"]])["sl:2xx_replies"] == 7,
             what="7 replies counted")
    text, fams = scrape(p.http)
    mi = http_mi(p.http, "get_statistics", [["core:", "sl:", "shmem:"]])
    assert text.count("# TYPE opensips_rcv_requests counter") == 1
    assert "# HELP opensips_rcv_requests statistic core:rcv_requests" in text
    # counters: exact, they do not move without traffic
    assert fams["opensips_rcv_requests"].type == "counter"
    assert one(fams, "opensips_rcv_requests", module="core") == \
        mi["core:rcv_requests"] == 7
    for name in ("2xx_replies", "sent_replies", "1xx_replies"):
        assert one(fams, f"opensips_{name}", module="sl") == mi[f"sl:{name}"]
    assert one(fams, "opensips_2xx_replies", module="sl") == 7
    # gauges: computed on read, same figure class as MI
    assert fams["opensips_total_size"].type == "gauge"
    assert one(fams, "opensips_total_size", module="core") == \
        mi["shmem:total_size"]
    assert abs(one(fams, "opensips_used_size", module="core")
               - mi["shmem:used_size"]) < mi["shmem:total_size"] * 0.01
    assert "opensips_load" in fams
    if HAVE_TM:
        tm = http_mi(p.http, "get_statistics", [["tm:"]])
        assert tm
        for full, v in tm.items():
            name = "opensips_" + full.split(":", 1)[1]
            assert one(fams, name, module="tm") == v


def test_per_process_labels_and_extra_metrics(srv):
    p = srv.ports
    _, fams = scrape(p.http)
    ps = http_mi(p.http, "ps")["Processes"]
    receivers = [x for x in ps if x["Type"].startswith("SIP receiver")]
    assert len(receivers) == 4
    # pkmem: one sample per process, labelled, no id inside the name
    rss = samples(fams, "opensips_pkmem_real_used_size")
    assert fams["opensips_pkmem_real_used_size"].documentation == \
        "statistic pkmem:<process id>-real_used_size, one sample per process"
    by_pid = {int(lab["pid"]): lab for lab, _ in rss}
    for x in ps:
        lab = by_pid[x["PID"]]
        assert lab["process"] == x["Type"] and lab["rank"] == str(x["Rank"])
        assert lab["module"] == "core"
    assert {lab["process"] for lab, _ in rss} >= {
        f"SIP receiver udp:127.0.0.1:{p.sip}", "HTTPD", "timer",
        "attendant"}
    # process RSS and CPU through psutil, for every process of `ps`
    mem = samples(fams, "opensips_process_resident_memory_bytes")
    cpu = samples(fams, "opensips_process_cpu_seconds")
    assert fams["opensips_process_cpu_seconds"].type == "counter"
    assert {int(lab["pid"]) for lab, _ in mem} == {x["PID"] for x in ps}
    assert {int(lab["pid"]) for lab, _ in cpu} == {x["PID"] for x in ps}
    assert all(v > 1 << 20 for _, v in mem)
    ranks = {lab["rank"] for lab, _ in mem
             if lab["process"].startswith("SIP receiver")}
    assert ranks == {"1", "2", "3", "4"}
    # shm per module: the arena's owners, adding up to shmem:used_size
    shm = {lab["module"]: v for lab, v in
           samples(fams, "opensips_shm_module_used_bytes")}
    assert shm["statistics"] > 0 and shm["core"] > 0
    used = http_mi(p.http, "get_statistics", [["shmem:used_size"]])
    assert abs(sum(shm.values()) - used["shmem:used_size"]) < 65536


def test_group_modes_prefixes_and_label_rules(server):
    p = Ports()
    server.start(script(p, extra="""
modparam("prometheus", "root", "prom")
modparam("prometheus", "prefix", "osy")
modparam("prometheus", "group_prefix", "g")
modparam("prometheus", "delimiter", "_")
modparam("prometheus", "group_mode", 1)
modparam("prometheus", "extra_metrics", 0)
modparam("prometheus", "labels", 'sl: /^([0-9])xx_replies$/replies:class="\\1xx"/')
"""))
    send_sip_options(p.sip, 3, "gm")
    wait_for(lambda: http_mi(p.http, "get_statistics",
                             [["sl:2xx_replies"]])["sl:2xx_replies"] == 3)
    assert http_get(p.http, "/metrics")[0] == 404
    text, fams = scrape(p.http, "/prom")
    assert one(fams, "osy_gcore_rcv_requests", module="core") == 3
    # the rule turned six statistics into one family with a label
    assert one(fams, "osy_gsl_replies", **{"class": "2xx"}) == 3
    assert len(samples(fams, "osy_gsl_replies")) == 6
    assert "osy_gsl_2xx_replies" not in fams
    assert "osy_gsl_sent_replies" in fams        # no match: kept as is
    assert "process_resident_memory_bytes" not in text
    assert "shm_module_used_bytes" not in text


def test_group_mode_2_puts_the_group_in_a_label(server):
    p = Ports()
    server.start(script(p, extra="""
modparam("prometheus", "group_mode", 2)
modparam("prometheus", "group_label", "grp")
"""))
    _, fams = scrape(p.http)
    assert one(fams, "opensips_rcv_requests", grp="core") == 0
    assert one(fams, "opensips_2xx_replies", grp="sl", module="sl") == 0
    assert http_get(p.http, "/metrics/")[0] == 200
    c = __import__("http.client").client.HTTPConnection("127.0.0.1", p.http,
                                                         timeout=5)
    c.request("POST", "/metrics", b"x")
    assert c.getresponse().status == 405
    c.close()


@pytest.mark.parametrize("param, value, why", [
    ("group_mode", "3", "group_mode must be 0, 1 or 2"),
    ("labels", '"core /x/y/"', "bad labels rule"),
    ("labels", '"core: /(/y/"', "bad regular expression"),
    ("labels", '"core: /x/y/q"', "unknown flag"),
])
def test_bad_parameters_are_start_errors(tmp_path, param, value, why):
    p = Ports()
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(script(p, extra=f'modparam("prometheus", "{param}", '
                                   f'{value})'))
    r = run_opensipy(["-F", "-E", "-f", str(cfg)], timeout=60)
    assert r.returncode != 0
    assert why in r.stderr


def test_scrapes_and_mi_answer_under_200_idle_and_a_slow_client(srv):
    """200 idle connections and a client sending its headers byte by byte
    are held open while /metrics is scraped and MI is called: both answer
    every time."""
    import socket
    import time
    p = srv.ports
    held = []
    try:
        for _ in range(200):
            held.append(socket.create_connection(("127.0.0.1", p.http)))
        slow = socket.create_connection(("127.0.0.1", p.http))
        held.append(slow)
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        for i in range(6):
            slow.sendall(b"X-Slow-%d: 1\r\n" % i)
            _, fams = scrape(p.http)
            assert "opensips_rcv_requests" in fams
            assert "Up time" in http_mi(p.http, "uptime", timeout=3)
            time.sleep(0.2)
        # the idle ones are still open (conn_timeout default 10 s)
        held[0].settimeout(0)
        try:
            assert held[0].recv(1) != b""
        except BlockingIOError:
            pass
    finally:
        for s in held:
            s.close()
