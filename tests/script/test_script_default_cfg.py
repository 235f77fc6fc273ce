"""OpenSIPS's default script and a sample of ours: they parse, resolve and
run with the right functions called."""
import os


from opensipy.script import (ACT_FL_DROP, ACT_FL_EXIT, check, compile_script,
                             parse_file)

from default_cfg import DEFAULT_CFG, default_registry
from script_helpers import make_registry, sip_msg, BASIC
from opensipy import sr_module as S

HERE = os.path.dirname(__file__)

BYE_IN_DIALOG = (b"BYE sip:alice@10.0.0.1:5060 SIP/2.0\r\n"
                 b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKbye1\r\n"
                 b"Max-Forwards: 70\r\n"
                 b"From: Bob <sip:bob@example.com>;tag=b1\r\n"
                 b"To: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
                 b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
                 b"CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
REGISTER = (b"REGISTER sip:example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 10.0.0.3:5060;branch=z9hG4bKreg1\r\n"
            b"Max-Forwards: 70\r\n"
            b"From: <sip:carol@example.com>;tag=c1\r\n"
            b"To: <sip:carol@example.com>\r\n"
            b"Call-ID: reg1@10.0.0.3\r\nCSeq: 1 REGISTER\r\n"
            b"Contact: <sip:carol@10.0.0.3:5060>\r\n"
            b"Content-Length: 0\r\n\r\n")


def compiled_default(answers=None):
    reg, rec = default_registry(answers)
    script = parse_file(DEFAULT_CFG)
    assert check(script, reg) == []
    return compile_script(script, reg, activate=False), rec


def test_default_script_resolves_against_opensips_declarations():
    cs, _ = compiled_default()
    assert cs.request_route is not None
    assert set(cs.routes) == {"relay"}
    assert set(cs.branch_routes) == {"per_branch_ops"}
    assert set(cs.onreply_routes) == {"handle_nat"}
    assert set(cs.failure_routes) == {"missed_call"}


def test_default_script_invite_to_a_local_user_is_relayed():
    cs, rec = compiled_default()
    flags = cs.request_route(sip_msg())
    assert flags == ACT_FL_EXIT                  # route[relay] ends in exit
    assert rec.names() == [
        "mf_process_maxfwd_header", "has_totag", "is_method",
        "t_check_trans", "is_method", "is_myself", "loose_route",
        "is_method", "record_route", "is_method", "do_accounting",
        "is_myself", "is_method", "is_method", "lookup", "do_accounting",
        "is_method", "t_on_branch", "t_on_reply", "t_on_failure", "t_relay"]
    calls = dict((n, a) for n, a in rec.calls)
    assert calls["is_myself"] == ("example.com",)     # "$rd" at run time
    assert calls["t_on_failure"] == ("missed_call",)
    assert calls["lookup"] == ("location", "method-filtering", None)


def test_default_script_unknown_user_gets_404():
    cs, rec = compiled_default({"lookup": -1})
    assert cs.request_route(sip_msg()) == ACT_FL_EXIT
    assert rec.calls[-1] == ("t_reply", (404, "Not Found"))
    assert "t_relay" not in rec.names()


def test_default_script_in_dialog_bye_is_accounted_and_relayed():
    cs, rec = compiled_default({"loose_route": 1})
    assert cs.request_route(sip_msg(BYE_IN_DIALOG)) == ACT_FL_EXIT
    assert rec.names() == ["mf_process_maxfwd_header", "has_totag",
                           "is_method", "loose_route", "is_method",
                           "do_accounting", "is_method", "t_relay"]
    assert rec.calls[5] == ("do_accounting", ("log", "failed", None))


def test_default_script_register_is_saved_and_a_retransmission_absorbed():
    cs, rec = compiled_default()
    assert cs.request_route(sip_msg(REGISTER)) == ACT_FL_EXIT
    assert rec.calls[-1] == ("save", ("location", None, None))
    cs, rec = compiled_default({"t_check_trans": 0})
    assert cs.request_route(sip_msg(REGISTER)) == ACT_FL_EXIT
    assert rec.names()[-1] == "t_check_trans"


def test_default_script_too_many_hops():
    cs, rec = compiled_default({"mf_process_maxfwd_header": -1})
    assert cs.request_route(sip_msg()) == ACT_FL_EXIT
    assert rec.calls == [("mf_process_maxfwd_header", (10,)),
                         ("send_reply", (483, "Too Many Hops"))]


def test_default_script_failure_and_branch_routes_run():
    cs, rec = compiled_default({"t_was_cancelled": 1})
    msg = sip_msg()
    assert cs.failure_routes["missed_call"](msg) == ACT_FL_EXIT
    assert cs.branch_routes["per_branch_ops"](msg) == 0
    assert rec.calls[-1] == ("xlog", ("new branch at sip:bob@example.com\n",))


def test_default_script_relay_route_is_request_only():
    # t_on_branch() is not allowed in onreply_route: calling route[relay]
    # from one is an error found after the whole script is read
    import shutil
    import tempfile
    d = tempfile.mkdtemp()
    try:
        path = os.path.join(d, "x.cfg")
        with open(DEFAULT_CFG) as f:
            text = f.read()
        text = text.replace('xlog("incoming reply\\n");',
                            'xlog("incoming reply\\n"); route(relay);')
        with open(path, "w") as f:
            f.write(text)
        reg, _ = default_registry()
        errors = [str(e) for e in check(parse_file(path), reg)]
    finally:
        shutil.rmtree(d)
    onreply = "which is called from onreply_route"
    assert errors == [
        f"{path}:223:3: function 't_on_branch' cannot be used in "
        f"route[relay], {onreply} (allowed in: request_route, "
        f"failure_route)",
        f"{path}:224:3: function 't_on_reply' cannot be used in "
        f"route[relay], {onreply} (allowed in: request_route, "
        f"failure_route, branch_route)",
        f"{path}:225:3: function 't_on_failure' cannot be used in "
        f"route[relay], {onreply} (allowed in: request_route, "
        f"failure_route, branch_route)",
        f"{path}:228:7: function 't_relay' cannot be used in route[relay], "
        f"{onreply} (allowed in: request_route, failure_route)",
        f"{path}:229:3: function 'send_reply' cannot be used in "
        f"route[relay], {onreply} (allowed in: request_route, "
        f"failure_route, error_route)"]


def test_our_sample_script_parses_checks_and_runs():
    mods = {"basic": BASIC, "x": {
        "is_method": ("s", S.ALL_ROUTES, lambda m, s: 1 if m.method in
                      s.split("|") else -1),
        "sl_send_reply": ("is", S.REQUEST_ROUTE | S.FAILURE_ROUTE, 1),
        "xlog": [("s", S.ALL_ROUTES, 1), ("ss", S.ALL_ROUTES, 1)],
        "t_relay": ("", S.REQUEST_ROUTE | S.FAILURE_ROUTE, 1)}}
    reg, rec = make_registry(mods)
    script = parse_file(os.path.join(HERE, "data", "sample.cfg"))
    assert check(script, reg) == []
    cs = compile_script(script, reg, activate=False)
    assert [t[:2] for t in cs.timer_routes] == [("cleanup", 60)]
    assert set(cs.event_routes) == {"E_UL_CONTACT_INSERT"}
    assert cs.startup_route is not None and cs.error_route is not None
    flags = cs.request_route(sip_msg())
    logged = [a for n, a in rec.calls if n in ("log", "xlog")]
    assert logged == [
        ("L_INFO", "INVITE from alice to bob\n"),
        ("codes",), ("3 hops left after 2 steps",),
        ("route to sip:bob@example.com via 2",),
        ("SEEN A",), ("SEEN B",), ("SEEN C",),
    ]
    assert rec.calls[-1][0] == "t_relay" and flags == ACT_FL_EXIT
    rec.calls.clear()
    assert cs.request_route(sip_msg(REGISTER)) == ACT_FL_EXIT | ACT_FL_DROP
    assert rec.calls[-1] == ("sl_send_reply", (200, "OK"))
