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
    yield reg, lm.pymod
    lm.pymod.destinations.clear()


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
