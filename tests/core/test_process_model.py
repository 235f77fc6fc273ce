"""The process model, driven as an operator runs it: the real ``opensipy``
command, a script using the example module, and what the module recorded,
``/proc`` and the exit codes show."""
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from server import free_port, run_opensipy, wait_for

pytestmark = pytest.mark.slow


def example_script(port, trace, workers=3, procs=2, extra=""):
    return f"""
log_level=3
udp_workers={workers}
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "example.so"
modparam("example", "trace_file", "{trace}")
modparam("example", "proc_no", {procs})
modparam("example", "destination", "1:127.0.0.1:5060")
modparam("example", "destination", "2:10.0.0.1:5070")
{extra}
route {{
    if (is_example_destination($si, $sp, 1))
        xlog("L_INFO", "known destination\\n");
    drop;
}}
"""


def read_trace(path):
    lines = []
    for line in Path(path).read_text().splitlines():
        hook, *kv = line.split()
        d = dict(x.split("=") for x in kv)
        lines.append((hook, int(d["pid"]), int(d["ppid"]),
                      None if d["rank"] == "None" else int(d["rank"])))
    return lines


def test_mod_init_runs_once_in_the_attendant_before_any_fork(server, tmp_path):
    trace = tmp_path / "trace"
    server.start(example_script(free_port(), trace))
    lines = read_trace(trace)
    inits = [x for x in lines if x[0] == "mod_init"]
    assert len(inits) == 1
    assert inits[0][1] == server.pid
    assert lines[0][0] == "mod_init"
    child_pids = {x[1] for x in lines if x[0] == "child_init"} - {server.pid}
    assert child_pids and all(p != server.pid for p in child_pids)


def test_child_init_runs_once_in_every_process_with_its_rank(server, tmp_path):
    trace = tmp_path / "trace"
    server.start(example_script(free_port(), trace, workers=3, procs=2))
    wait_for(lambda: len([x for x in read_trace(trace)
                          if x[0] == "proc"]) == 2, what="module procs")
    ci = [x for x in read_trace(trace) if x[0] == "child_init"]
    ranks = Counter(x[3] for x in ci)
    # receivers 1..3, the timer (-1), two module processes (-2), and the
    # attendant itself with PROC_MAIN (0) once everything is forked
    assert ranks == Counter({1: 1, 2: 1, 3: 1, -1: 1, -2: 2, 0: 1})
    by_pid = Counter(x[1] for x in ci)
    assert all(n == 1 for n in by_pid.values())
    main = [x for x in ci if x[3] == 0]
    assert main[0][1] == server.pid
    others = [x for x in ci if x[3] != 0]
    assert all(x[2] == server.pid for x in others)
    assert set(x[1] for x in others) == set(server.children())


@pytest.mark.parametrize("procs", [1, 3])
def test_module_process_count_follows_the_parameter(server, tmp_path, procs):
    trace = tmp_path / "trace"
    server.start(example_script(free_port(), trace, workers=1, procs=procs))
    titles = Counter(server.children().values())
    assert titles["opensipy: example worker"] == procs


def test_process_titles_name_each_process(server, tmp_path):
    port = free_port()
    server.start(example_script(port, tmp_path / "trace", workers=2,
                                procs=1))
    titles = Counter(server.children().values())
    assert titles[f"opensipy: SIP receiver udp:127.0.0.1:{port}"] == 2
    assert titles["opensipy: timer"] == 1
    assert titles["opensipy: example worker"] == 1
    own = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")[0]
    assert own.decode().strip() == "opensipy: attendant"


def test_sigterm_runs_destroy_once_and_exits_0(server, tmp_path):
    trace = tmp_path / "trace"
    server.start(example_script(free_port(), trace))
    children = set(server.children())
    assert server.terminate() == 0
    destroys = [x for x in read_trace(trace) if x[0] == "destroy"]
    assert len(destroys) == 1 and destroys[0][1] == server.pid
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or \
            "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    server.wait_notify("STOPPING=1", 5)


def test_a_killed_receiver_comes_back_with_the_same_rank(server, tmp_path):
    trace = tmp_path / "trace"
    port = free_port()
    server.start(example_script(port, trace, workers=2, procs=1))
    ci = {x[1]: x[3] for x in read_trace(trace) if x[0] == "child_init"}
    victim = next(pid for pid, t in server.children().items()
                  if "SIP receiver" in t)
    rank = ci[victim]
    os.kill(victim, signal.SIGKILL)

    def respawned():
        for hook, pid, ppid, r in read_trace(trace):
            if hook == "child_init" and r == rank and pid != victim:
                return pid
    newpid = wait_for(respawned, what="respawned receiver")
    assert server.children().get(newpid) == \
        f"opensipy: SIP receiver udp:127.0.0.1:{port}"
    assert server.proc.poll() is None
    err = server.stderr()
    assert f"rank {rank})" in err and "SIGKILL" in err
    assert server.terminate() == 0


def test_too_many_deaths_stop_the_server(server, tmp_path):
    server.start(example_script(free_port(), tmp_path / "trace", workers=1,
                                procs=1))
    for _ in range(6):
        victims = [p for p, t in server.children().items()
                   if "SIP receiver" in t]
        if not victims or server.proc.poll() is not None:
            break
        os.kill(victims[0], signal.SIGKILL)
        time.sleep(0.3)
    assert server.proc.wait(15) == 1
    assert "processes died within" in server.stderr()


def test_a_returning_module_process_stops_the_server(server, tmp_path):
    mods = tmp_path / "mods" / "quitter"
    mods.mkdir(parents=True)
    (mods / "__init__.py").write_text(
        "from opensipy.sr_module import ModuleExports, ProcExport\n"
        "def proc(rank):\n"
        "    import time; time.sleep(0.5)\n"
        "exports = ModuleExports(name='quitter', procs=[\n"
        "    ProcExport('quitter proc', function=proc, no=1)])\n")
    port = free_port()
    server.start(f"""
mpath="{tmp_path / 'mods'}"
socket=udp:127.0.0.1:{port}
udp_workers=1
loadmodule "proto_udp.so"
loadmodule "quitter.so"
route {{ drop; }}
""")
    assert server.proc.wait(15) == 1
    err = server.stderr()
    assert "quitter proc" in err and "must never return" in err


def test_check_mode_accepts_a_good_script(tmp_path):
    cfg = tmp_path / "good.cfg"
    cfg.write_text(example_script(free_port(), tmp_path / "trace"))
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "trace").exists()   # -c runs no mod_init


def test_check_mode_reports_every_error_with_file_line_col(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("""socket=udp:127.0.0.1:5999
loadmodule "proto_udp.so"
modparam("example", "trace_file", "/tmp/x")
loadmodule "example.so"
loadmodule "nosuchmodule.so"
modparam("example", "no_such_param", 1)
modparam("example", "proc_no", "three")
no_such_global = 1
route {
    no_such_function();
}
""")
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 1
    err = r.stderr
    f = str(cfg)
    assert f"{f}:3:1: " in err and "comes before the loadmodule" in err
    assert f"{f}:5:1: " in err and "nosuchmodule" in err
    assert f"{f}:6:1: " in err and "no parameter 'no_such_param'" in err
    assert f"{f}:7:1: " in err and "expects an integer" in err
    assert f"{f}:8:1: " in err and "unknown global parameter" in err
    assert f"{f}:10:5: " in err and "no_such_function" in err


def test_daemon_mode_returns_after_init(tmp_path):
    trace = tmp_path / "trace"
    pidfile = tmp_path / "opensipy.pid"
    cfg = tmp_path / "d.cfg"
    cfg.write_text(example_script(free_port(), trace, workers=2, procs=1))
    r = run_opensipy(["-f", str(cfg), "-P", str(pidfile)])
    pid = None
    try:
        assert r.returncode == 0, r.stderr
        pid = int(pidfile.read_text())
        # every process finished child_init before the command returned
        ranks = Counter(x[3] for x in read_trace(trace)
                        if x[0] == "child_init")
        assert ranks == Counter({1: 1, 2: 1, -1: 1, -2: 1, 0: 1})
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 15,
                 what="daemon exit")
        assert not pidfile.exists()
    finally:
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def test_daemon_mode_fails_truthfully_when_mod_init_fails(tmp_path):
    mods = tmp_path / "mods" / "broken"
    mods.mkdir(parents=True)
    (mods / "__init__.py").write_text(
        "from opensipy.sr_module import ModuleExports\n"
        "def mod_init():\n"
        "    raise RuntimeError('cannot reach the database')\n"
        "exports = ModuleExports(name='broken', init_f=mod_init)\n")
    cfg = tmp_path / "d.cfg"
    cfg.write_text(f"""
mpath="{tmp_path / 'mods'}"
socket=udp:127.0.0.1:{free_port()}
loadmodule "proto_udp.so"
loadmodule "broken.so"
route {{ drop; }}
""")
    pidfile = tmp_path / "p.pid"
    r = run_opensipy(["-f", str(cfg), "-P", str(pidfile)])
    assert r.returncode == 1
    assert "mod_init of module 'broken' failed" in r.stderr
    assert "cannot reach the database" in r.stderr
    assert not pidfile.exists()


def test_version_flag():
    r = run_opensipy(["-V"])
    assert r.returncode == 0 and "opensipy" in r.stdout


def test_fork_hooks_run_in_the_attendant_and_initchild_is_honoured(server,
                                                                   tmp_path):
    mods = tmp_path / "mods" / "hooks"
    mods.mkdir(parents=True)
    trace = tmp_path / "hooks.trace"
    (mods / "__init__.py").write_text(f"""
import os, time
from opensipy.sr_module import ModuleExports, ProcExport, PROC_FLAG_INITCHILD
def note(what):
    with open({str(trace)!r}, "a") as f:
        f.write(f"{{what}} {{os.getpid()}}\\n")
def pre():
    note("pre_fork"); return 0
def post():
    note("post_fork"); return 0
def plain(rank):
    note(f"plain {{rank}}")
    while True: time.sleep(3600)
def child_init(rank):
    note(f"child_init {{rank}}"); return 0
exports = ModuleExports(name="hooks", init_child_f=child_init, procs=[
    ProcExport("plain proc", pre, post, plain, 1, 0),
    ProcExport("init proc", None, None, plain, 1, PROC_FLAG_INITCHILD)])
""")
    server.start(f"""
mpath="{tmp_path / 'mods'}"
socket=udp:127.0.0.1:{free_port()}
udp_workers=1
loadmodule "proto_udp.so"
loadmodule "hooks.so"
route {{ drop; }}
""")
    wait_for(lambda: trace.read_text().count("plain") == 2, what="procs")
    lines = [l.split() for l in trace.read_text().splitlines()]
    by_what = {}
    for *what, pid in lines:
        by_what.setdefault(" ".join(what), []).append(int(pid))
    assert by_what["pre_fork"] == [server.pid]
    assert by_what["post_fork"] == [server.pid]
    titles = {t: p for p, t in server.children().items()}
    plain_pid = titles["opensipy: plain proc"]
    init_pid = titles["opensipy: init proc"]
    ci_pids = by_what["child_init -2"]
    # PROC_FLAG_INITCHILD: child_init runs in "init proc", not in "plain proc"
    assert init_pid in ci_pids and plain_pid not in ci_pids


def test_startup_route_runs_once_in_rank_1_and_timer_route_in_the_timer(
        server, tmp_path):
    port = free_port()
    trace = tmp_path / "trace"
    server.start(f"""
log_level=3
xlog_level=3
udp_workers=3
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "example.so"
modparam("example", "trace_file", "{trace}")
modparam("example", "proc_no", 0)
startup_route {{ xlog("L_NOTICE", "startup ran\\n"); }}
timer_route[tick, 1] {{ xlog("L_NOTICE", "tick ran\\n"); }}
route {{ drop; }}
""")
    wait_for(lambda: server.stderr().count("tick ran") >= 2, 10,
             what="two timer_route runs")
    titles = {p: t for p, t in server.children().items()}

    def pids(text):
        return {int(l.split("[")[1].split("]")[0])
                for l in server.stderr().splitlines() if text in l}
    startup = pids("startup ran")
    assert len(startup) == 1 and server.stderr().count("startup ran") == 1
    rank_of = {pid: rank for hook, pid, ppid, rank in read_trace(trace)
               if hook == "child_init"}
    pid = startup.pop()
    assert rank_of[pid] == 1
    assert titles[pid].startswith("opensipy: SIP receiver")
    assert {titles[p] for p in pids("tick ran")} == {"opensipy: timer"}


def test_timer_workers_runs_timer_routes_in_handler_processes(server):
    """timer_workers=3 (OpenSIPS's global parameter): the timer process
    forks three handler processes and the timer_route runs in them."""
    port = free_port()
    server.start(f"""
log_level=3
xlog_level=3
udp_workers=1
timer_workers=3
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
timer_route[tick, 1] {{ xlog("L_NOTICE", "tick ran\\n"); }}
route {{ drop; }}
""")
    wait_for(lambda: server.stderr().count("tick ran") >= 2, 10,
             what="two timer_route runs")
    titles = server.children()
    timer_pid = next(p for p, t in titles.items() if t == "opensipy: timer")
    kids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                st = (d / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(st.rsplit(")", 1)[1].split()[1]) == timer_pid:
                kids.add(int(d.name))
    assert len(kids) == 3
    ran = {int(line.split("[")[1].split("]")[0])
           for line in server.stderr().splitlines() if "tick ran" in line}
    assert ran and ran <= kids


def test_check_mode_points_socket_and_dependency_errors_at_their_lines(
        tmp_path):
    mods = tmp_path / "mods" / "needy"
    mods.mkdir(parents=True)
    (mods / "__init__.py").write_text(
        "from opensipy.sr_module import *\n"
        "exports = ModuleExports(name='needy', deps=DepExport(md=["
        "ModuleDep('usrloc', DEP_ABORT)]))\n")
    cfg = tmp_path / "deps.cfg"
    cfg.write_text(f"""mpath="{tmp_path / 'mods'}"
socket=tls:127.0.0.1:5999
socket=tcp:127.0.0.1:5998
loadmodule "needy.so"
route {{ drop; }}
""")
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 1
    f = str(cfg)
    assert f"{f}:2:1: socket tls:127.0.0.1:5999: protocol 'tls'" in r.stderr
    assert f"{f}:3:1: socket tcp:127.0.0.1:5998 needs loadmodule " \
        f"\"proto_tcp.so\"" in r.stderr
    assert f"{f}:4:1: module 'needy' depends on module 'usrloc'" in r.stderr
    cfg.write_text('route { drop; }\n')
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert f"{f}:1:1: no socket= (listen=) is defined" in r.stderr
