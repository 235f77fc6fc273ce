"""Speed of a compiled script: OpenSIPS's default request_route on a
typical INVITE, every module function answering at once (is_method and
has_totag look at the message, the others return a constant chosen so the
INVITE takes the longest path: to route[relay] and t_relay).

    python -m pytest tests/script/test_bench_script.py --benchmark-enable

The target is < 10 us per message."""
from opensipy.script import ACT_FL_EXIT, check, compile_script, parse_file

from default_cfg import DEFAULT_CFG, default_registry
from script_helpers import Recorder, sip_msg


def test_default_request_route_on_an_invite(benchmark):
    reg, _ = default_registry(rec=Recorder(recording=False))
    script = parse_file(DEFAULT_CFG)
    assert check(script, reg) == []
    cs = compile_script(script, reg, activate=False)
    msg = sip_msg()
    route = cs.request_route
    assert route(msg) == ACT_FL_EXIT
    result = benchmark(route, msg)
    assert result == ACT_FL_EXIT
