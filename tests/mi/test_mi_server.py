"""The MI of a real server, over each transport: every core command's reply
shape, the error codes, statistics, log levels, the real OpenSIPS clients
and a flood of malformed requests."""
import json
import re
import stat
import subprocess
import sys
import time

import pytest

from mi_util import TRANSPORTS, Endpoints, run_ctl
from server import REPO, Server, wait_for

pytestmark = pytest.mark.slow

CORE = ("uptime", "version", "pwd", "arg", "which", "ps", "kill", "log_level",
        "get_statistics", "list_statistics", "reset_statistics", "shm_check",
        "mem_shm_dump", "help")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server with every MI transport for the read-mostly tests."""
    work = tmp_path_factory.mktemp("mi")
    ep = Endpoints(work)
    s = Server(work)
    try:
        s.start(ep.script())
        ep.server = s
        yield ep
    finally:
        s.cleanup()


def pids(ep):
    return {p["PID"]: p for p in
            ep.result("fifo", "ps")["Processes"]}


# ------------------------------------------------------------ core commands

@pytest.mark.parametrize("kind", TRANSPORTS)
def test_information_commands(srv, kind):
    up = srv.result(kind, "uptime")
    assert set(up) == {"Now", "Up since", "Up time"}
    assert re.fullmatch(r"\d+ \[sec\]", up["Up time"])
    assert time.strptime(up["Up since"], "%a %b %d %H:%M:%S %Y")
    assert srv.result(kind, "version")["Server"].startswith("opensipy (")
    assert srv.result(kind, "pwd") == {"WD": str(srv.workdir)}
    args = srv.result(kind, "arg")
    assert "-f" in args and args[args.index("-f") + 1].endswith(
        "opensipy.cfg")


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_which_and_help(srv, kind):
    names = srv.result(kind, "which")
    assert set(CORE) <= set(names)
    assert {"example_list", "httpd_list_root_path"} <= set(names)
    assert srv.result(kind, "which", {"command": "log_level"}) == \
        [[], ["level"], ["level", "pid"]]
    assert srv.result(kind, "which", ["get_statistics"]) == [["statistics"]]
    assert srv.result(kind, "help", ["example_list"]) == {
        "Help": "lists the configured destinations",
        "Exported by": "example"}
    assert "Usage: help mi_cmd" in srv.result(kind, "help")
    r = srv.call(kind, "help", ["nothing"])
    assert r["error"] == {"code": 404, "message": "unknown MI command"}


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_module_commands_by_bare_and_prefixed_name(srv, kind):
    want = {"Destinations": [{"id": 1, "group": 1, "ip": "127.0.0.1",
                              "port": 0, "enabled": 1}]}
    assert srv.result(kind, "example_list") == want
    assert srv.result(kind, "example:example_list") == want
    assert srv.result(kind, "httpd_list_root_path") == [
        {"http_root": "mi", "module": "mi_http"}]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_ps(srv, kind):
    procs = srv.result(kind, "ps")["Processes"]
    assert all(set(p) == {"ID", "PID", "Type", "Rank", "RSS", "CPU"}
               for p in procs)
    assert [p["ID"] for p in procs] == list(range(len(procs)))
    by_pid = {p["PID"]: p for p in procs}
    assert set(by_pid) == set(srv.server.children()) | {srv.server.pid}
    assert by_pid[srv.server.pid]["Type"] == "attendant"
    types = [p["Type"] for p in procs]
    for t in ("MI FIFO", "MI Datagram", "HTTPD", "timer"):
        assert types.count(t) == 1
    assert sum(t.startswith("SIP receiver") for t in types) == 2
    assert all(p["RSS"] > 1_000_000 and p["CPU"] >= 0 for p in procs)
    assert {p["Rank"] for p in procs if p["Type"].startswith("MI")} == {-2}


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_statistics(srv, kind):
    before = srv.result(kind, "get_statistics", [["example:example_checks"]])
    srv.send_sip(3)
    wait_for(lambda: srv.result(kind, "get_statistics",
                                [["example:example_checks"]])
             ["example:example_checks"]
             == before["example:example_checks"] + 3, what="3 checks")
    group = srv.result(kind, "get_statistics", {"statistics": ["example:"]})
    assert set(group) == {"example:example_stat", "example:example_checks"}
    assert group["example:example_stat"] >= 3
    # bare names are looked up in every group, unknown ones are skipped
    some = srv.result(kind, "get_statistics",
                      [["example_stat", "no_such_stat", "shmem:"]])
    assert "example:example_stat" in some and "shmem:total_size" in some
    allv = srv.result(kind, "get_statistics", [["all"]])
    for k in ("core:rcv_requests", "shmem:used_size", "load:load",
              "example:example_checks"):
        assert k in allv
    assert all(isinstance(v, int) for v in allv.values())
    assert allv["core:rcv_requests"] >= 3
    r = srv.call(kind, "get_statistics", [["nope", "nada:"]])
    assert r["error"] == {"code": 404, "message": "Statistics Not Found"}

    kinds = srv.result(kind, "list_statistics")
    assert kinds["example:example_stat"] == "incremental"
    assert kinds["core:timestamp"] == "non-incremental"
    assert kinds["shmem:total_size"] == "non-incremental"
    # every form keys its reply group:name, as OpenSIPS does
    assert srv.result(kind, "list_statistics", [["example_stat"]]) == \
        {"example:example_stat": "incremental"}
    some = srv.result(kind, "list_statistics",
                      [["core:rcv_requests", "example:"]])
    assert some["core:rcv_requests"] == "incremental"
    assert some["example:example_stat"] == "incremental"
    assert all(k.startswith(("core:", "example:")) for k in some)


def test_reset_statistics(srv):
    srv.send_sip(2)
    wait_for(lambda: srv.result("fifo", "get_statistics", [["example_stat"]])
             ["example:example_stat"] >= 2, what="matches")
    assert srv.result("datagram", "reset_statistics",
                      [["example_stat", "shmem:total_size"]]) == "OK"
    got = srv.result("http", "get_statistics",
                     [["example_stat", "shmem:total_size"]])
    assert got["example:example_stat"] == 0
    assert got["shmem:total_size"] > 0        # computed: not reset
    r = srv.call("fifo", "reset_statistics", [["missing"]])
    assert r["error"]["code"] == 404


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_memory_commands(srv, kind):
    assert srv.result(kind, "shm_check")["total_fragments"] >= 1
    assert srv.result(kind, "mem_shm_dump") == "OK"
    assert srv.result(kind, "mem_shm_dump", ["-1"]) == "OK"
    for bad in ("9", "-4", "5"):
        r = srv.call(kind, "mem_shm_dump", [bad])
        assert r["error"]["code"] == -32602, r
        assert "log_level" in r["error"]["data"]


def test_log_level_global_and_per_process(srv):
    procs = srv.result("fifo", "log_level")["Processes"]
    assert all(set(p) == {"PID", "Log level", "Type"} for p in procs)
    assert {p["Log level"] for p in procs} == {3}
    http_pid = next(p["PID"] for p in procs if p["Type"] == "HTTPD")

    assert srv.result("datagram", "log_level", ["4"]) == \
        {"New global log level": 4}
    assert {p["Log level"] for p in
            srv.result("http", "log_level")["Processes"]} == {4}
    # the HTTPD process applies it: its debug line for this request shows
    srv.result("http", "uptime")
    wait_for(lambda: f"[{http_pid}] DBG:httpd:" in srv.server.stderr(),
             what="httpd debug log")

    assert srv.result("fifo", "log_level", {"level": 2, "pid": http_pid}) \
        == {"Log level": 2}
    lv = {p["PID"]: p["Log level"] for p in
          srv.result("fifo", "log_level")["Processes"]}
    assert lv[http_pid] == 2 and lv[srv.server.pid] == 4
    r = srv.call("fifo", "log_level", ["3", "999999"])
    assert r["error"] == {"code": -32602, "message": "Invalid params",
                          "data": "Bad PID"}
    assert srv.result("fifo", "log_level", ["3"]) == \
        {"New global log level": 3}
    mark = len(srv.server.stderr())
    srv.result("http", "uptime")
    time.sleep(1.5)
    assert "DBG:httpd:" not in srv.server.stderr()[mark:]


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("kind", TRANSPORTS)
def test_error_codes(srv, kind):
    def err(data):
        r = json.loads(srv.raw(kind, data))
        assert r["jsonrpc"] == "2.0" and "result" not in r
        return r["error"], r["id"]

    assert err(b'{"jsonrpc":"2.0","method":') == \
        ({"code": -32700, "message": "Parse error"}, None)
    assert err(b'[1,2]')[0]["code"] == -32600
    assert err(b'{"jsonrpc":"2.0","id":5}') == \
        ({"code": -32600, "message": "Invalid Request"}, 5)
    assert err(b'{"jsonrpc":"2.0","method":"nope","id":"x"}') == \
        ({"code": -32601, "message": "Method not found"}, "x")
    e, _ = err(b'{"jsonrpc":"2.0","method":"uptime","params":[1],"id":1}')
    assert e == {"code": -32602, "message": "Invalid params",
                 "data": "Too few or too many parameters"}
    e, _ = err(b'{"jsonrpc":"2.0","method":"which","params":{"cmd":"ps"},'
               b'"id":1}')
    assert e["data"] == "Named parameters do not match"
    e, _ = err(b'{"jsonrpc":"2.0","method":"log_level","params":["high"],'
               b'"id":1}')
    assert e["code"] == -32602


def test_notification_gets_no_reply_over_datagram_and_http(srv):
    note = b'{"jsonrpc":"2.0","method":"uptime"}'
    assert srv.raw_datagram(note, timeout=0.5) is None
    assert srv.raw_http(note) is None


def test_http_methods_and_paths(srv):
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(srv.url, timeout=5)
    assert ei.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(urllib.request.Request(
            srv.url.replace("/mi", "/other"), b"{}"), timeout=5)
    assert ei.value.code == 404


def test_http_listens_on_loopback_only(srv):
    port = f"{srv.http_port:04X}"
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                local, st = line.split()[1], line.split()[3]
                if local.endswith(":" + port) and st == "0A":   # LISTEN
                    rows.append(local)
    assert rows == ["0100007F:" + port]


def test_fifo_is_private_by_default(srv):
    st = srv.fifo.stat()
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


# ------------------------------------------------------ the OpenSIPS clients

@pytest.mark.parametrize("kind", TRANSPORTS)
def test_opensips_python_package(srv, kind):
    from opensips.mi import OpenSIPSMI, OpenSIPSMIException
    conf = {
        "fifo": dict(fifo_file=str(srv.fifo), fifo_file_fallback="/nonexist",
                     fifo_reply_dir=str(srv.reply_dir)),
        "datagram": dict(datagram_ip="127.0.0.1",
                         datagram_port=str(srv.dgram_port),
                         datagram_timeout="5"),
        "http": dict(url=srv.url),
    }[kind]
    m = OpenSIPSMI(kind, **conf)
    procs = m.execute("ps")["Processes"]
    assert srv.server.pid in [p["PID"] for p in procs]
    st = m.execute("get_statistics", {"statistics": ["example:", "core:"]})
    assert "example:example_stat" in st and "core:rcv_requests" in st
    assert m.execute("log_level", [])["Processes"]
    with pytest.raises(OpenSIPSMIException):
        m.execute("no_such_command", [])


def _opensips_cli(srv, *args):
    opts = ["-o", "communication_type=fifo", "-o", f"fifo_file={srv.fifo}",
            "-o", f"fifo_reply_dir={srv.reply_dir}", "-o",
            "output_type=pretty-print"]
    code = ("import sys; from opensipscli.main import main; "
            "sys.argv[0] = 'opensips-cli'; sys.exit(main())")
    cfg = srv.workdir / "empty-opensips-cli.cfg"
    cfg.write_text("[default]\n")
    return subprocess.run([sys.executable, "-c", code, "-f", str(cfg),
                           *opts, "-x", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_opensips_cli(srv):
    pytest.importorskip("opensipscli")
    r = _opensips_cli(srv, "mi", "ps")
    assert r.returncode == 0, r.stderr
    procs = json.loads(r.stdout)["Processes"]
    assert srv.server.pid in [p["PID"] for p in procs]
    r = _opensips_cli(srv, "mi", "get_statistics", "example_stat",
                      "core:rcv_requests")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert set(got) == {"example:example_stat", "core:rcv_requests"}
    r = _opensips_cli(srv, "mi", "get_statistics", "statistics=shmem:")
    assert "shmem:total_size" in json.loads(r.stdout)


# ------------------------------------------------------------- opensipyctl

def test_opensipyctl_fifo_get_statistics_manual_example(srv):
    srv.send_sip(1)
    wait_for(lambda: srv.result("fifo", "get_statistics", [["example_stat"]])
             ["example:example_stat"] >= 1, what="a match")
    want = srv.result("fifo", "get_statistics", [["example_stat"]])
    r = run_ctl(["-f", str(srv.ctl_config("http")), "fifo",
                 "get_statistics", "example", "example_stat"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"example:example_stat: " \
                       f"{want['example:example_stat']}\n"


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_opensipyctl_commands(srv, kind):
    cfg = str(srv.ctl_config(kind))
    r = run_ctl(["-f", cfg, "-o", "json", "mi", "which", "command=ps"])
    assert (r.returncode, json.loads(r.stdout)) == (0, [[]])
    r = run_ctl(["-f", cfg, "ps"])
    assert r.returncode == 0 and str(srv.server.pid) in r.stdout
    assert r.stdout.splitlines()[0].split() == \
        ["ID", "PID", "Rank", "RSS(KB)", "CPU%", "Type"]
    r = run_ctl(["-f", cfg, "stats", "core:rcv_requests", "example:"])
    assert r.returncode == 0
    assert re.search(r"^core:rcv_requests = \d+$", r.stdout, re.M)
    assert re.search(r"^example:example_checks = \d+$", r.stdout, re.M)
    r = run_ctl(["-f", cfg, "version"])
    assert r.stdout.startswith("opensipy (")
    r = run_ctl(["-f", cfg, "uptime"])
    assert re.search(r"^Up time: \d+ \[sec\]$", r.stdout, re.M)
    r = run_ctl(["-f", cfg, "log-level"])
    assert r.returncode == 0 and "MI FIFO" in r.stdout
    r = run_ctl(["-f", cfg, "-o", "yaml", "mi", "pwd"])
    assert r.stdout == f"WD: {srv.workdir}\n"
    r = run_ctl(["-f", cfg, "mi", "no_such_cmd"])
    assert r.returncode == 1
    assert r.stderr == "opensipyctl: command failed: error -32601: " \
                       "Method not found\n"
    r = run_ctl(["-f", cfg, "mi", "log_level", "level=loud"])
    assert r.returncode == 1 and "-32602" in r.stderr


def test_opensipyctl_shell_under_a_pty(srv, tmp_path):
    import os
    import pty
    import select as sel
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OPENSIPYCTL_HISTORY"] = str(tmp_path / "history")
    env["TERM"] = "dumb"
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "opensipy.ctl",
                                   "-f", str(srv.ctl_config("fifo"))], env)
    out = b""

    def expect(what, timeout=15):
        nonlocal out
        deadline = time.monotonic() + timeout
        while what.encode() not in out:
            left = deadline - time.monotonic()
            assert left > 0, f"no {what!r} in {out[-2000:]!r}"
            r, _, _ = sel.select([fd], [], [], left)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return out

    try:
        expect("(opensipyctl): ")
        os.write(fd, b"get_statis\t")          # MI name completion
        expect("get_statistics")
        os.write(fd, b" example_checks\r")
        expect("example:example_checks")
        os.write(fd, b"upti\t\r")
        expect("Up time")
        os.write(fd, b"mi nope\r")
        expect("Method not found")
        os.write(fd, b"exit\r")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        hist = (tmp_path / "history").read_text()
        assert "uptime" in hist and "get_statistics example_checks" in hist
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def test_opensipyctl_when_the_server_is_not_running(tmp_path):
    ep = Endpoints(tmp_path)
    for kind in TRANSPORTS:
        r = run_ctl(["-f", str(ep.ctl_config(kind)), "ps"])
        assert r.returncode == 3, (kind, r.stderr)
        assert r.stderr.startswith("opensipyctl: cannot reach opensipy")
        assert r.stderr.count("\n") == 1 and "running?" in r.stderr
        assert r.stdout == ""
    # no command and no terminal for the shell: usage, exit 2
    r = run_ctl(["-f", str(ep.ctl_config("fifo"))])
    assert r.returncode == 2 and "no command given" in r.stderr


def test_a_respawned_process_starts_at_the_global_level(srv):
    """pt keeps OpenSIPS's current/default levels: a level set for one
    process does not survive its respawn, a global one does."""
    import os
    import signal

    def receiver():
        return next(p for p in srv.result("fifo", "log_level")["Processes"]
                    if p["Type"].startswith("SIP receiver"))

    try:
        victim = receiver()
        assert srv.result("fifo", "log_level",
                          {"level": 1, "pid": victim["PID"]}) == \
            {"Log level": 1}
        os.kill(victim["PID"], signal.SIGKILL)
        wait_for(lambda: receiver()["PID"] != victim["PID"],
                 what="the receiver's respawn")
        assert receiver()["Log level"] == 3
        srv.result("fifo", "log_level", ["4"])
        victim = receiver()
        os.kill(victim["PID"], signal.SIGKILL)
        wait_for(lambda: receiver()["PID"] != victim["PID"],
                 what="the receiver's respawn")
        assert receiver()["Log level"] == 4
    finally:
        srv.result("fifo", "log_level", ["3"])
