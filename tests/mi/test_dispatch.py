"""The MI dispatch core without a server: recipes, JSON-RPC errors, the
FIFO framing parser, opensipyctl's parameter rules and output formats."""
import json

import pytest

from opensipy import mi
from opensipy.ctl.main import build_params, load_config, UsageError
from opensipy.ctl.output import OutputError, render
from opensipy.mi.fifo import FifoParser, valid_reply_name
from opensipy.modloader import LoadedModule, Registry
from opensipy.sr_module import (MI_NAMED_PARAMS_ONLY, MIExport, MIRecipe,
                                ModuleExports)


def _exports(name, mi_cmds):
    return ModuleExports(name=name, mi_cmds=mi_cmds)


@pytest.fixture
def disp():
    calls = []

    def rec(tag):
        def h(params):
            calls.append((tag, params))
            return {"tag": tag, "params": params}
        return h

    def boom(params):
        raise RuntimeError("kaput")

    def null(params):
        return None

    def own_error(params):
        raise mi.MIError(404, "Thing Not Found")

    reg = Registry()
    reg.add(LoadedModule("alpha", _exports("alpha", [
        MIExport("greet", "says hello", recipes=[
            MIRecipe(rec("none")),
            MIRecipe(rec("one"), ("name",)),
            MIRecipe(rec("two"), ("name", "lang")),
            MIRecipe(rec("two_other"), ("name", "style")),
        ]),
        MIExport("shared", "", recipes=[MIRecipe(rec("alpha_shared"))]),
        MIExport("named_only", "", MI_NAMED_PARAMS_ONLY,
                 recipes=[MIRecipe(rec("n"), ("x",))]),
        MIExport("boom", "", recipes=[MIRecipe(boom)]),
        MIExport("null", "", recipes=[MIRecipe(null)]),
        MIExport("own_error", "", recipes=[MIRecipe(own_error)]),
    ])))
    reg.add(LoadedModule("beta", _exports("beta", [
        MIExport("shared", "", recipes=[MIRecipe(rec("beta_shared"))]),
    ])))
    d = mi.build_dispatcher(reg)
    d.calls = calls
    return d


def req(method, params=None, rid=7, **extra):
    r = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        r["params"] = params
    r.update(extra)
    return json.dumps(r)


def error_of(reply):
    assert "result" not in reply, reply
    return reply["error"]


def test_no_params_picks_the_recipe_without_parameters(disp):
    r = disp.handle(req("greet"))
    assert r == {"jsonrpc": "2.0", "result": {"tag": "none", "params": {}},
                 "id": 7}
    assert disp.handle(req("greet", []))["result"]["tag"] == "none"
    assert disp.handle(req("greet", {}))["result"]["tag"] == "none"


def test_positional_params_map_onto_the_recipe_order(disp):
    r = disp.handle(req("greet", ["ann"]))["result"]
    assert r == {"tag": "one", "params": {"name": "ann"}}


def test_named_params_choose_the_recipe_by_names(disp):
    assert disp.handle(req("greet", {"name": "a", "style": "b"}))[
        "result"]["tag"] == "two_other"
    assert disp.handle(req("greet", {"lang": "ro", "name": "a"}))[
        "result"] == {"tag": "two", "params": {"lang": "ro", "name": "a"}}


def test_two_positional_params_matching_two_recipes_is_ambiguous(disp):
    e = error_of(disp.handle(req("greet", ["a", "b"])))
    assert e == {"code": -32602, "message": "Invalid params",
                 "data": "Ambiguous call, use named parameters instead"}


def test_wrong_parameter_count_and_names(disp):
    e = error_of(disp.handle(req("greet", ["a", "b", "c"])))
    assert (e["code"], e["data"]) == (-32602,
                                       "Too few or too many parameters")
    e = error_of(disp.handle(req("greet", {"name": "a", "colour": "b"})))
    assert (e["code"], e["data"]) == (-32602,
                                       "Named parameters do not match")
    e = error_of(disp.handle(req("named_only", ["x"])))
    assert e["data"] == "Command only supports named parameters"
    assert disp.handle(req("named_only", {"x": 1}))["result"]["tag"] == "n"


def test_module_prefix_and_ambiguous_bare_names(disp):
    assert disp.handle(req("alpha:greet"))["result"]["tag"] == "none"
    assert disp.handle(req("beta:shared"))["result"]["tag"] == "beta_shared"
    e = error_of(disp.handle(req("shared")))
    assert e["code"] == -32601 and "alpha:shared" in e["data"]
    names = disp.call("which")
    assert "greet" in names and "alpha:shared" in names \
        and "beta:shared" in names and "shared" not in names
    assert "uptime" in names and "core:uptime" not in names
    assert disp.handle(req("core:uptime"))["result"]["Up time"].endswith(
        "[sec]")


@pytest.mark.parametrize("text,code", [
    ("{not json", -32700),
    ("", -32700),
    (b"\xff\xfe", -32700),
    ("[]", -32600),
    ('[{"jsonrpc":"2.0","method":"uptime","id":1}]', -32600),
    ('"uptime"', -32600),
    ('{"method":"uptime","id":1}', -32600),
    ('{"jsonrpc":"1.0","method":"uptime","id":1}', -32600),
    ('{"jsonrpc":"2.0","method":5,"id":1}', -32600),
    ('{"jsonrpc":"2.0","method":"uptime","params":"x","id":1}', -32600),
    ('{"jsonrpc":"2.0","method":"uptime","id":{"a":1}}', -32600),
])
def test_malformed_requests(disp, text, code):
    r = disp.handle(text)
    assert r["jsonrpc"] == "2.0"
    assert error_of(r)["code"] == code
    # the id is echoed when one could be read, else null
    readable = isinstance(text, str) and text.startswith("{") \
        and '"id":1' in text
    assert r["id"] == (1 if readable else None)


def test_unknown_method_echoes_the_id(disp):
    r = disp.handle(req("no_such_cmd", rid="abc"))
    assert r == {"jsonrpc": "2.0", "id": "abc",
                 "error": {"code": -32601, "message": "Method not found"}}


def test_handler_failures_are_server_errors(disp):
    e = error_of(disp.handle(req("boom")))
    assert e == {"code": -32000, "message": "Server error",
                 "data": "RuntimeError: kaput"}
    e = error_of(disp.handle(req("null")))
    assert e["data"] == "Command handler returned null"
    assert error_of(disp.handle(req("own_error"))) == {
        "code": 404, "message": "Thing Not Found"}


def test_notifications_get_no_reply_but_run(disp):
    text = json.dumps({"jsonrpc": "2.0", "method": "greet",
                       "params": ["n"]})
    assert disp.handle(text) is None
    assert disp.calls[-1] == ("one", {"name": "n"})
    assert disp.handle(json.dumps({"jsonrpc": "2.0", "method": "x"})) is None
    # unparsable: answered even without an id
    assert disp.handle("{") is not None


def test_reply_text_is_one_line(disp):
    text = disp.handle_text(req("help", ["greet"]))
    assert "\n" not in text
    assert json.loads(text)["result"] == {"Help": "says hello",
                                          "Exported by": "alpha"}


def test_core_commands_in_process(disp):
    assert disp.call("help") == \
        "Usage: help mi_cmd - returns information about 'mi_cmd'"
    assert disp.call("which", {"command": "log_level"}) == \
        [[], ["level"], ["level", "pid"]]
    with pytest.raises(mi.MIError) as ei:
        disp.call("which", ["nothing_like_it"])
    assert (ei.value.code, ei.value.message) == (404, "unknown MI command")
    assert disp.call("version")["Server"].startswith("opensipy (")
    assert isinstance(disp.call("arg"), list)
    with pytest.raises(mi.MIError) as ei:
        disp.call("log_level", ["9"])
    assert ei.value.code == -32602
    with pytest.raises(mi.MIError) as ei:
        disp.call("log_level", {"level": "2", "pid": "1"})
    assert ei.value.data == "Bad PID"


def test_parameter_getters():
    assert mi.get_int({"a": "12"}, "a") == 12
    assert mi.get_int({"a": -3}, "a") == -3
    for bad in ("x", True, None, [1], "1.5"):
        with pytest.raises(mi.MIError) as ei:
            mi.get_int({"a": bad}, "a")
        assert ei.value.code == -32602
    assert mi.get_str({"a": 5}, "a") == "5"
    assert mi.get_array({"a": "x"}, "a") == ["x"]
    with pytest.raises(mi.MIError):
        mi.get_array({"a": 3}, "a")


# ------------------------------------------------------------- FIFO framing

def test_fifo_parser_cuts_frames_even_split_across_reads():
    p = FifoParser()
    req1 = b'{"jsonrpc":"2.0","method":"a","params":["}{\\"]"],"id":1}'
    stream = b":r1:" + req1 + b"\n:r2:" + b'{"x":[1,{"y":2}]}'
    out = []
    for i in range(0, len(stream), 5):
        out += p.feed(stream[i:i + 5])
    assert out == [(b"r1", req1), (b"r2", b'{"x":[1,{"y":2}]}')]
    assert p.buf == bytearray() and p.dropped == 0


def test_fifo_parser_junk_and_broken_frames():
    p = FifoParser()
    out = p.feed(b"garbage line\n:bad/name:{}\n:r3:not json\n:r4:{}")
    assert out == [(b"r3", None), (b"r4", b"{}")]
    assert p.dropped == 3


def test_fifo_parser_gives_up_on_a_stale_frame():
    now = [100.0]
    p = FifoParser(stale_after=2.0, clock=lambda: now[0])
    assert p.feed(b':r5:{"jsonrpc":') == []
    assert p.expire() == []
    now[0] += 3
    assert p.expire() == [(b"r5", None)]
    assert p.feed(b":r6:{}") == [(b"r6", b"{}")]


def test_fifo_parser_refuses_oversized_frames():
    p = FifoParser(max_request=100)
    out = p.feed(b":big:{" + b'"a":' * 50)
    assert out == [(b"big", None)] and not p.buf


def test_reply_names():
    assert valid_reply_name(b"opensips_fifo_reply_1_2_3")
    for bad in (b"..", b"a/b", b"x" * 300, b"a b", b"."):
        assert not valid_reply_name(bad)


# --------------------------------------------------------------- opensipyctl

def test_ctl_params_follow_opensips_cli():
    assert build_params("ps", []) is None
    assert build_params("log_level", ["4", "123"]) == ["4", "123"]
    assert build_params("log_level", ["level=4"]) == {"level": "4"}
    assert build_params("get_statistics", ["example", "example_stat"]) == \
        [["example", "example_stat"]]
    assert build_params("get_statistics", ["statistics=core: shmem:"]) == \
        {"statistics": ["core:", "shmem:"]}
    assert build_params("core:reset_statistics", ["a"]) == [["a"]]


def test_ctl_output_formats():
    res = {"Processes": [{"ID": 0, "Type": "attendant"}], "n": 1}
    assert json.loads(render(res, "json")) == res
    assert render(res, "pretty") == json.dumps(res, indent=4)
    assert render(res, "lines") == \
        "Processes:\n    ID: 0\n    Type: attendant\nn: 1"
    assert render(res, "none") == ""
    with pytest.raises(OutputError):
        render(res, "xml")


def test_ctl_yaml_needs_pyyaml(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_yaml(name, *a, **k):
        if name == "yaml":
            raise ImportError("no yaml")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    with pytest.raises(OutputError, match="PyYAML"):
        render({"a": 1}, "yaml")


def test_ctl_config_file(tmp_path):
    p = tmp_path / "c.cfg"
    p.write_text("[default]\ncommunication_type = http\nurl = http://x/mi\n")
    cfg = load_config(str(p))
    assert cfg["communication_type"] == "http" and cfg["url"] == "http://x/mi"
    assert cfg["fifo_file"] == "/run/opensipy/opensipy_fifo"
    with pytest.raises(UsageError):
        load_config(str(tmp_path / "missing.cfg"))


def test_fifo_parser_resyncs_on_the_next_frame_after_a_broken_one():
    p = FifoParser()
    out = p.feed(b":r7:[[[[{\n:r8:{\"ok\":1}\n:r9:{\n\n:r10:{}")
    assert out == [(b"r7", None), (b"r8", b'{"ok":1}'), (b"r9", None),
                   (b"r10", b"{}")]
    assert p.partial_since is None
    # a request spread over lines is still one request
    assert p.feed(b':r11:{"a":\n [1,\n 2]}') == [(b"r11", b'{"a":\n [1,\n 2]}')]
