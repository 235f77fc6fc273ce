"""The example module's exports, driven as a script writer uses them: its
pseudo-variable and its function through the real loader, fixups and
script compiler (its statistic and MI command are checked end to end in
tests/mi)."""
import pytest

from opensipy import modloader, pvar, script
from opensipy.core_cmds import core_exports
from opensipy.parser import ReceiveInfo, SipMsg
from opensipy.sr_module import ModuleError

REQ = (b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
       b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKx\r\n"
       b"From: <sip:a@h>;tag=1\r\nTo: <sip:bob@h>\r\nCall-ID: c\r\n"
       b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def example():
    reg = modloader.Registry()
    reg.add(modloader.LoadedModule("core", core_exports))
    lm = modloader.load_module(reg, "example")
    lm.pymod.destinations.clear()
    lm.pymod.enabled.clear()
    yield reg, lm.pymod
    lm.pymod.destinations.clear()
    lm.pymod.enabled.clear()


def msg_from(ip, port):
    m = SipMsg(REQ)
    m.rcv = ReceiveInfo(ip, port, "127.0.0.1", 5060, "udp", None)
    return m


def test_example_count_variable_follows_the_repeated_parameter(example):
    reg, mod = example
    spec = pvar.parse_pv("$example_count", reg)
    assert spec.get(msg_from("10.0.0.1", 5070)) == 0
    for d in ("1:10.0.0.1:5070", "2:10.0.0.2:5060", "2:10.0.0.3:0"):
        modloader.set_mod_param(reg, "example", "destination", d, "str")
    assert spec.get(msg_from("10.0.0.1", 5070)) == 3


def test_bad_destination_is_a_modparam_error(example):
    reg, _ = example
    with pytest.raises(ModuleError, match="group:ip:port"):
        modloader.set_mod_param(reg, "example", "destination", "nonsense",
                                "str", ("t.cfg", 3, 1))


@pytest.mark.parametrize("args,src,expected", [
    ("$si, $sp, 1", ("10.0.0.1", 5070), 1),
    ("$si, $sp, 2", ("10.0.0.1", 5070), -1),     # wrong group
    ("$si, $sp", ("10.0.0.1", 5070), 1),          # any group
    ("$si, $sp, -1", ("10.0.0.9", 5070), -1),     # unknown address
    ("$si", ("10.0.0.2", 1234), 1),               # no port: any port
])
def test_is_example_destination_through_a_compiled_route(example, args, src,
                                                          expected):
    reg, mod = example
    for d in ("1:10.0.0.1:5070", "2:10.0.0.2:5060"):
        modloader.set_mod_param(reg, "example", "destination", d, "str")
    s = script.parse_string(
        f"route {{ if (is_example_destination({args})) $var(r) = 1; "
        f"else $var(r) = -1; }}")
    compiled = script.compile_script(s, reg)
    pvar.script_vars.clear()
    compiled.request_route(msg_from(*src))
    assert pvar.parse_pv("$var(r)").get(None) == expected


def test_the_uint_fixup_rejects_a_negative_constant(example):
    reg, _ = example
    s = script.parse_string("route { is_example_destination($si, $sp, 1, -2); }")
    with pytest.raises(script.ScriptErrors, match="unsigned"):
        script.compile_script(s, reg)


def test_active_checks_only_the_destinations_enabled_over_mi(example):
    """A destination disabled with MI example_status no longer counts for
    is_example_destination(..., active=1); active=0 still sees it; the
    state is in shm, so a change made in another process is seen."""
    import os

    from opensipy import shm
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    reg, mod = example
    for d in ("1:10.0.0.1:5070", "2:10.0.0.2:5060"):
        modloader.set_mod_param(reg, "example", "destination", d, "str")
    assert mod.mod_init() == 0
    s = script.parse_string(
        "route { $var(a) = 0; $var(b) = 0;"
        " if (is_example_destination($si, $sp, -1, 1)) $var(a) = 1;"
        " if (is_example_destination($si, $sp, -1, 0)) $var(b) = 1; }")
    compiled = script.compile_script(s, reg)

    def check(src):
        pvar.script_vars.clear()
        compiled.request_route(msg_from(*src))
        return (pvar.parse_pv("$var(a)").get(None),
                pvar.parse_pv("$var(b)").get(None))

    assert check(("10.0.0.2", 5060)) == (1, 1)
    pid = os.fork()                    # the MI process disables id 2
    if pid == 0:
        code = 1
        try:
            code = 0 if mod.mi_example_status_set(
                {"id": "2", "status": "0"}) == "OK" else 1
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert mod.mi_example_status({"id": 2}) == {"enabled": 0}
    assert check(("10.0.0.2", 5060)) == (0, 1)
    assert check(("10.0.0.1", 5070)) == (1, 1)
    assert [d["enabled"] for d in
            mod.mi_example_list({})["Destinations"]] == [1, 0]
    mod.mi_example_status_set({"id": 2, "status": 1})
    assert check(("10.0.0.2", 5060)) == (1, 1)


def test_example_status_errors(example):
    from opensipy.mi import MIError
    reg, mod = example
    modloader.set_mod_param(reg, "example", "destination", "1:10.0.0.1:1",
                            "str")
    with pytest.raises(MIError) as ei:
        mod.mi_example_status({"id": 5})
    assert ei.value.code == 404
    with pytest.raises(MIError) as ei:
        mod.mi_example_status_set({"id": 1, "status": 7})
    assert ei.value.code == -32602
