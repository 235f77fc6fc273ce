"""The PV layer through the script compiler: core functions, variables,
the run context ($rc, $param) as a compiled route uses them."""
from pvkit import make
from opensipy import log
from opensipy.core_cmds import core_exports
from opensipy.modloader import LoadedModule, Registry

SCRIPT = r'''
route {
    setflag("NAT");
    $avp(a) = "one";
    $avp(a) = "two";
    $var(n) = 1;
    $var(n) += 2;
    if (isflagset("NAT"))
        xlog("L_INFO", "mf=$mf avp=$avp(a) all=$avp(a)[*] n=$var(n)\n");
    $rU = "carol";
    append_branch();
    xlog("ru=$ru br=$br rc=$rc user=$(ru{uri.user}{s.toupper})\n");
    route(sub, "p1", 2);
    xlog("after sub rc=$rc\n");
}
route[sub] {
    xlog("in sub: $param(1) $param(2) $param(3)\n");
    return(-3);
}
'''


def test_core_functions_and_variables_in_a_compiled_route(capsys):
    from opensipy.script import compile_script, parse_string
    reg = Registry()
    reg.add(LoadedModule("core", core_exports))
    cs = compile_script(parse_string(SCRIPT, "t.cfg"), reg, activate=False)
    saved = (log.state.xlog_level, log.state.stderr, log.state.syslog)
    log.state.xlog_level, log.state.stderr, log.state.syslog = \
        log.L_DBG, True, False
    try:
        m = make("INVITE")
        cs.request_route(m)
    finally:
        log.state.xlog_level, log.state.stderr, log.state.syslog = saved
    err = capsys.readouterr().err
    lines = [ln.split("]", 1)[-1].strip() for ln in err.splitlines()]
    assert lines == [
        "INFO:mf=NAT avp=two all=two, one n=3",
        "ERROR:ru=sip:carol@biloxi.example.com:5070;transport=tcp;lr "
        "br=sip:carol@biloxi.example.com:5070;transport=tcp;lr rc=1 "
        "user=CAROL",
        "ERROR:in sub: p1 2 <null>",
        "ERROR:after sub rc=-3",
    ]
    assert m.new_uri == "sip:carol@biloxi.example.com:5070;transport=tcp;lr"
    assert m.avps == {"a": ["two", "one"]}
