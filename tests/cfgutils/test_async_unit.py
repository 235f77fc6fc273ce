"""The async()/launch() statements without sockets: syntax and resolution
errors with file:line:col, the synchronous fallback where no reactor runs,
suspension and resumption through async_engine (deadline, descriptor,
timeout), the deferred post-script callbacks, launch's report route."""
import os
import time

import pytest

from opensipy import async_engine, receive
from opensipy import sr_module as S
from opensipy.modloader import LoadedModule
from opensipy.script import ScriptErrors, compile_script, parse_string
from opensipy.script.runtime import ACT_FL_EXIT

import modkit
from opensipy import pvar


class PipeOp:
    """An async function waiting on a pipe: resume reads one byte and
    returns its value."""

    def __init__(self):
        self.r, self.w = os.pipe()
        self.timeouts = 0

    def start(self, msg, actx, tag):
        actx.fd = self.r
        actx.resume_f = self.resume
        actx.resume_param = tag
        actx.timeout_f = self.timeout
        return 1

    def resume(self, msg, tag):
        b = os.read(self.r, 1)
        msg.avps.setdefault("resumed", []).insert(0, tag)
        return b[0]

    def timeout(self, msg, tag):
        self.timeouts += 1

    def close(self):
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def pipe_reg(reg):
    op = PipeOp()
    reg.add(LoadedModule("pipes", S.ModuleExports(
        "pipes", acmds=[S.CmdExport("wait_pipe", op.start,
                                    [S.CmdParam(S.CMD_PARAM_STR)],
                                    S.ALL_ROUTES)])))
    yield reg, op
    op.close()


def compile_(reg, text):
    return compile_script(parse_string(text, "t.cfg"), reg, activate=True)


def msg():
    m = modkit.parse(modkit.request())
    m.avps = {}
    return m


def errors_of(reg, text):
    with pytest.raises(ScriptErrors) as ei:
        compile_(reg, text)
    return str(ei.value)


# ------------------------------------------------------------ config errors

@pytest.mark.parametrize("text,where,what", [
    ("route {\n  async(usleep(1));\n}\n", "t.cfg:2:18", "resume route"),
    ("route {\n  async(route(x), r);\n}\nroute[r] {}\n", "t.cfg:2:9",
     "function call"),
    ("route {\n  launch(usleep, r);\n}\nroute[r] {}\n", "t.cfg:2:10",
     "parentheses"),
    ("route {\n  async(usleep(1), r, x);\n}\nroute[r] {}\n", "t.cfg:2:23",
     "timeout"),
])
def test_syntax_errors(reg, text, where, what):
    e = errors_of(reg, text)
    assert e.startswith(where + ":"), e
    assert what in e


def test_a_function_without_async_form_is_a_config_error(reg):
    e = errors_of(reg, "route {\n  async(rand_event(), r);\n}\n"
                       "route[r] { exit; }\n")
    assert e.startswith("t.cfg:2:9:")
    assert "'rand_event' has no async form" in e


def test_unknown_async_function_and_route(reg):
    e = errors_of(reg, "route {\n  launch(nosuch(1), r);\n"
                       "  async(usleep(5), missing);\n"
                       "  async(usleep(5), r, 0);\n}\nroute[r] {}\n")
    assert "t.cfg:2:10: unknown async function 'nosuch'" in e
    assert "t.cfg:3:3: async(): unknown route 'missing'" in e
    assert "t.cfg:4:3: async(): the timeout must be a positive" in e


def test_bad_argument_of_the_async_function(reg):
    e = errors_of(reg, 'route {\n  async(usleep("soon"), r);\n}\n'
                       'route[r] {}\n')
    assert e.startswith("t.cfg:2:")
    assert "usleep" in e


# ------------------------------------------------------------ no reactor

SCRIPT = """
route {
    $avp(before) = 1;
    async(usleep(30000), resume);
    $avp(after_async) = 1;
}
route[resume] {
    $avp(rc) = $rc;
    $avp(rt) = "resumed";
}
"""


def test_without_a_reactor_the_wait_is_inline(reg):
    cs = compile_(reg, SCRIPT)
    m = msg()
    t0 = time.monotonic()
    flags = cs.request_route(m)
    assert time.monotonic() - t0 >= 0.03
    assert flags & ACT_FL_EXIT
    assert m.avps["rc"] == [1] and m.avps["rt"] == ["resumed"]
    assert "after_async" not in m.avps        # the route ended at async()


# ------------------------------------------------------------ the reactor

class _NoStats:
    def __getattr__(self, name):
        return self

    def inc(self, n=1):
        pass


def test_suspended_request_resumes_later_with_its_message(reg, monkeypatch):
    finished = []
    monkeypatch.setattr(receive, "_post_script_cbs",
                        [lambda m: finished.append(m)])
    async_engine.reactor = True
    cs = compile_(reg, SCRIPT)
    monkeypatch.setattr(receive, "compiled", cs)
    monkeypatch.setattr(receive, "stats", _NoStats())
    m = msg()
    m.rcv = modkit.parse(modkit.request()).rcv
    receive._dispatch(m)
    # suspended: nothing after async(), post-script callbacks deferred
    assert m.async_suspended and finished == []
    assert "rt" not in m.avps and "after_async" not in m.avps
    assert len(async_engine.tasks) == 1
    assert async_engine.run_ready() == 0      # not due yet
    wait = async_engine.poll_timeout(time.monotonic())
    assert 0 < wait <= 0.03
    time.sleep(wait + 0.005)
    assert async_engine.run_ready() == 1
    assert m.avps["rt"] == ["resumed"] and m.avps["rc"] == [1]
    assert m.avps["before"] == [1]            # the same message object
    assert finished == [m] and not m.async_suspended
    assert async_engine.tasks == []


def test_descriptor_resume_and_nested_async(pipe_reg):
    reg, op = pipe_reg
    async_engine.reactor = True
    cs = compile_(reg, """
route {
    async(wait_pipe("first"), second);
}
route[second] {
    $avp(rc1) = $rc;
    async(wait_pipe("second"), third);
}
route[third] {
    $avp(rc2) = $rc;
}
""")
    m = msg()
    m.rcv = modkit.parse(modkit.request()).rcv
    cs.request_route(m)
    assert async_engine.fds() == [op.r]
    assert async_engine.poll_timeout(time.monotonic()) is None
    os.write(op.w, bytes([7]))
    assert async_engine.run_ready([op.r]) == 1
    assert m.avps["rc1"] == [7] and m.async_suspended   # waiting again
    os.write(op.w, bytes([9]))
    async_engine.run_ready([op.r])
    assert m.avps["rc2"] == [9] and m.avps["resumed"] == ["second", "first"]
    assert not m.async_suspended and async_engine.tasks == []


def test_timeout_resumes_with_minus_one(pipe_reg):
    reg, op = pipe_reg
    async_engine.reactor = True
    cs = compile_(reg, """
route {
    async(wait_pipe("t"), done, 1);
}
route[done] {
    $avp(rc) = $rc;
}
""")
    m = msg()
    m.rcv = modkit.parse(modkit.request()).rcv
    cs.request_route(m)
    task = async_engine.tasks[0]
    task.expires = time.monotonic() - 0.001     # the second has passed
    async_engine.run_ready()
    assert m.avps["rc"] == [-1] and op.timeouts == 1


def test_launch_goes_on_and_reports(reg):
    async_engine.reactor = True
    cs = compile_(reg, """
route {
    launch(usleep(20000), report);
    $avp(after_launch) = $rc;
}
route[report] {
    $shv(launch_report) = $rc + 41;
}
""")
    import opensipy_modules.cfgutils as cfg
    cfg.shv_set("launch_report", 0)
    m = msg()
    cs.request_route(m)
    assert m.avps["after_launch"] == [1]
    assert cfg.shv_get("launch_report") == 0
    time.sleep(0.025)
    assert async_engine.run_ready() == 1
    assert cfg.shv_get("launch_report") == 42


def test_launch_without_reactor_runs_inline(reg):
    cs = compile_(reg, """
route {
    launch(usleep(1000), report);
    launch(usleep(1000));
    $var(after) = 1;
}
route[report] {
    $var(reported) = $rc;
}
""")
    cs.request_route(msg())
    assert pvar.script_vars["reported"] == 1
    assert pvar.script_vars["after"] == 1


def test_async_outside_request_route_runs_synchronously(reg):
    async_engine.reactor = True
    cs = compile_(reg, """
route {
    exit;
}
failure_route[f] {
    async(usleep(1000), r);
}
route[r] {
    $var(fr) = "done";
}
""")
    cs.failure_routes["f"](msg())
    assert pvar.script_vars["fr"] == "done"
    assert async_engine.tasks == []


def test_run_blocking_with_a_descriptor(pipe_reg):
    reg, op = pipe_reg
    a = async_engine.AsyncCtx()
    m = msg()
    op.start(m, a, "b")
    os.write(op.w, bytes([3]))
    assert async_engine.run_blocking(a, m) == 3
    a2 = async_engine.AsyncCtx()
    op.start(m, a2, "c")
    assert async_engine.run_blocking(a2, m, time.monotonic() + 0.02) == -1
    assert op.timeouts == 1
