"""Header injection: no text a script or a module gives to a reply or a
request can add a header or split the status line.  A constant is refused
when the script is fixed up (with its file:line:col); a variable's value
makes the call fail at run time (-1, logged, nothing sent or changed)."""
import pytest

from opensipy import log, modloader
from opensipy.core_cmds import core_exports
from opensipy.parser import SipMsg, check_hdr_lines, check_reason
from opensipy.script import ScriptErrors, compile_script, parse_string

import modkit
import opensipy_modules.signaling as sig
import opensipy_modules.sipmsgops as ops_mod
import opensipy_modules.sl as sl

INJECT = "Nope\r\nX-Injected: 1"


def req(peer=None, srv_sock=None):
    if peer is None:
        return modkit.parse(modkit.request())
    return modkit.parse(modkit.request(via_port=peer.port),
                        ("127.0.0.1", peer.port), srv_sock)


# ------------------------------------------------------------ build_reply

def test_build_reply_refuses_a_reason_that_adds_a_header():
    m = req()
    with pytest.raises(ValueError, match="reason phrase"):
        m.build_reply(404, INJECT)
    for bad in ("a\rb", "a\nb", "a\0b"):
        with pytest.raises(ValueError):
            m.build_reply(404, bad)
    # HTAB and UTF-8 are allowed in a reason phrase
    assert SipMsg(m.build_reply(404, "Not\tFound \u00e9")).reason == \
        "Not\tFound \u00e9"


@pytest.mark.parametrize("headers", [
    ["X-A: 1\r\nX-Injected"],            # a line that is no header
    ["X-A: 1\r\n\r\nbody"],              # an empty line ends the headers
    ["X-A: 1\nX-B: 2"],                  # bare LF
    ["X-A: 1\rX-B: 2"],                  # bare CR
    ["X-A: \x00"],                       # NUL
    "X-A: 1\r\n",                        # a block must be whole lines ...
    "X-A: 1",                            # ... ending with CRLF
    [": no name\r\n"],
])
def test_build_reply_refuses_headers_that_are_not_whole_lines(headers):
    m = req()
    if headers == "X-A: 1\r\n":          # the good block, for contrast
        assert SipMsg(m.build_reply(200, "OK", headers=headers)).hdr(
            "X-A") == "1"
        return
    with pytest.raises(ValueError, match="header line"):
        m.build_reply(200, "OK", headers=headers)


def test_build_reply_refuses_a_to_tag_with_crlf():
    with pytest.raises(ValueError, match="To tag"):
        req().build_reply(200, "OK", to_tag="x\r\nX-Injected: 1")


def test_checkers_accept_the_good_and_name_the_bad():
    assert check_reason("Temporarily Unavailable") is None
    assert check_hdr_lines("A: 1\r\nB-C:2\r\n") is None
    assert "\\r" in check_reason("a\rb")
    assert "empty" in check_hdr_lines("A: 1\r\n\r\n")


def test_sl_api_refuses_injected_headers_and_sends_nothing(peer, srv_sock):
    m = req(peer, srv_sock)
    assert sl.load_api().send_reply(m, 404, INJECT) == -1
    m.reply_hdrs = ["X-Ok: 1\r\nX-Injected\r\n"]
    assert sl.load_api().send_reply(m, 404, "Not Found") == -1
    assert peer.nothing()


# ------------------------------------------------------------ the script

def registry():
    reg = modloader.Registry()
    reg.add(modloader.LoadedModule("core", core_exports))
    for name, pymod in (("sl", sl), ("signaling", sig),
                        ("sipmsgops", ops_mod)):
        reg.add(modloader.LoadedModule(name, pymod.exports, pymod))
    return reg


@pytest.fixture
def reg():
    saved = modloader.registry
    r = modloader.registry = registry()
    sig.mod_init()
    yield r
    modloader.registry = saved
    sig.sl_api = sig.tm_api = None


def compile_(reg, body):
    return compile_script(parse_string("route {\n" + body + "\n}\n", "t.cfg"),
                          reg, activate=False)


@pytest.mark.parametrize("call,col,arg", [
    (r'sl_send_reply(404, "Nope\r\nX-Injected: 1");', 24, 2),
    (r'send_reply(404, "Nope\r\nX-Injected: 1");', 21, 2),
    (r'append_hf("X-A: 1\r\nbroken\r\n");', 15, 1),
    (r'insert_hf("X-A: 1\r\n\r\nv=0\r\n");', 15, 1),
    (r'append_to_reply("X-A: 1");', 21, 1),
])
def test_a_constant_is_refused_when_the_script_is_fixed_up(reg, call, col,
                                                          arg):
    with pytest.raises(ScriptErrors) as ei:
        compile_(reg, "    " + call)
    text = str(ei.value)
    assert text.startswith(f"t.cfg:2:{col}: ")
    assert f"argument {arg}: fixup failed: the " in text


def run_logged(cs, msg, capsys):
    saved = (log.state.level, log.state.stderr, log.state.syslog)
    log.state.level, log.state.stderr, log.state.syslog = log.L_ERR, True, \
        False
    try:
        cs.request_route(msg)
    finally:
        log.state.level, log.state.stderr, log.state.syslog = saved
    return capsys.readouterr().err


def test_a_reason_from_a_variable_is_refused_at_run_time(reg, peer, srv_sock,
                                                         capsys):
    cs = compile_(reg, r'''
    $var(r) = "Nope\r\nX-Injected: 1";
    if (!sl_send_reply(404, $var(r))) xlog("L_ERR", "sl refused\n");
    if (!send_reply(404, "x $var(r)")) xlog("L_ERR", "sig refused\n");
    $var(r) = "Not Found";
    sl_send_reply(404, $var(r));''')
    err = run_logged(cs, req(peer, srv_sock), capsys)
    assert "sl refused" in err and "sig refused" in err
    assert "control character" in err
    r = peer.recv()                      # only the clean reply went out
    assert (r.status, r.reason) == (404, "Not Found")
    assert r.hdr("X-Injected") is None
    assert peer.nothing()


def test_a_variable_cannot_add_lines_to_a_header_template(reg, capsys):
    cs = compile_(reg, r'''
    $var(u) = "alice\r\nX-Injected: 1";
    if (!append_hf("X-User: $var(u)\r\n")) xlog("L_ERR", "hf refused\n");
    if (!insert_hf("X-User: $var(u)\r\n")) xlog("L_ERR", "ins refused\n");
    if (!append_to_reply("X-User: $var(u)\r\n"))
        xlog("L_ERR", "rpl refused\n");
    $var(h) = "X-A: 1\r\n\r\nv=0\r\n";
    if (!append_hf($var(h))) xlog("L_ERR", "whole refused\n");
    $var(u) = "bob";
    append_hf("X-User: $var(u)\r\nX-Two: 2\r\n");''')
    m = req()
    err = run_logged(cs, m, capsys)
    for what in ("hf", "ins", "rpl", "whole"):
        assert f"{what} refused" in err
    assert "$var(u) holds CR, LF or NUL" in err
    assert getattr(m, "reply_hdrs", None) is None
    out = SipMsg(m.build())
    assert out.hdrs("X-User") == ["bob"] and out.hdr("X-Two") == "2"
    assert out.hdr("X-Injected") is None


def test_check_mode_reports_a_constant_with_its_location(tmp_path):
    """opensipy -c runs these validating fixups on constant text."""
    from server import free_port, run_opensipy
    cfg = tmp_path / "inject.cfg"
    cfg.write_text(f"""socket=udp:127.0.0.1:{free_port()}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
route {{
    append_hf("X-A: 1\\r\\n\\r\\nv=0\\r\\n");
    sl_send_reply(404, "Nope\\r\\nX-Injected: 1");
    append_hf("X-Fine: $fU\\r\\n");
}}
""")
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 1, r.stderr
    assert f"{cfg}:6:15: function 'append_hf' argument 1: fixup failed: " \
           f"the header line" in r.stderr
    assert f"{cfg}:7:24: function 'sl_send_reply' argument 2: fixup " \
           f"failed: the reason phrase" in r.stderr
    assert ":8:" not in r.stderr


# ------------------------------------------------------------ the R-URI

def test_the_request_line_cannot_be_split(reg, capfd):
    cs = compile_(reg, r'''
    $var(u) = "u\r\nX-Injected: 1";
    $rU = $var(u);''')
    m = req()
    cs.request_route(m)
    assert m.new_uri is None                 # the assignment was refused
    cs = compile_(reg, r'''
    $var(p) = "p=1\r\nX-Injected: 2";
    if (!ruri_add_param($var(p))) xlog("L_ERR", "param refused\n");
    $rp = 70000;''')
    err = run_logged(cs, m, capfd)
    assert "param refused" in err and "bad port '70000'" in err
    assert m.new_uri is None
    # whatever sets new_uri, the request is not built with a split line
    m.new_uri = "sip:bob@example.com\r\nX-Injected: 3"
    with pytest.raises(ValueError, match="Request-URI"):
        m.build()
    with pytest.raises(ScriptErrors, match="URI parameter"):
        compile_(reg, r'    ruri_add_param("a=1 X");')
