"""The parser: the top level as the core consumes it, tokens, and the
shapes of statements."""
from pathlib import Path

import pytest

from opensipy.script import ast as A
from opensipy.script import parse_file, parse_string
from opensipy.script.lexer import Lexer

# OpenSIPS's default script, in ../shared beside the repository
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CFG = str(REPO.parent / "shared" / "anchors" / "opensips-default.cfg")


def top_of(text):
    return parse_string(text, "t.cfg").top


@pytest.mark.parametrize("line,kind,value", [
    ("log_level=3", "int", 3),
    ("log_level = -1", "int", -1),
    ("fifo_mode=0666", "int", 0o666),
    ("x=0x1F", "int", 31),
    ("x=0", "int", 0),
    ('mpath="/usr/lib/x/"', "str", "/usr/lib/x/"),
    ("mpath='/usr/lib/y/'", "str", "/usr/lib/y/"),
    ("syslog_enabled=yes", "id", "yes"),
    ("syslog_facility=LOG_LOCAL0   # trailing", "id", "LOG_LOCAL0"),
    ("log_level=L_DBG", "id", "L_DBG"),
    ("socket=udp:127.0.0.1:5060   # CUSTOMIZE ME", "socket",
     "udp:127.0.0.1:5060"),
    ("socket=udp:[::1]:5060", "socket", "udp:[::1]:5060"),
    ("listen=udp:*:5060", "socket", "udp:*:5060"),
    ("socket=udp:127.0.0.1:5060 as 1.2.3.4:5060", "socket",
     "udp:127.0.0.1:5060 as 1.2.3.4:5060"),
    ("alias=example.com", "socket", "example.com"),
    ("listen=10.0.0.1", "socket", "10.0.0.1"),
    ("socket=tcp:eth0:5060 /* c */", "socket", "tcp:eth0:5060"),
])
def test_global_parameter_values(line, kind, value):
    (gp,) = top_of(line + "\n")
    assert isinstance(gp, A.GlobalParam)
    assert (gp.kind, gp.value) == (kind, value)
    assert gp.loc == ("t.cfg", 1, 1)


def test_top_level_items_in_order_with_locations():
    top = top_of(
        'socket=udp:127.0.0.1:5060\n'
        'socket=udp:127.0.0.1:5070\n'
        'loadmodule "tm.so"\n'
        'modparam("tm", "fr_timeout", 5)\n'
        '  modparam("tm", "x", -3)\n'
        'modparam("usrloc|registrar", "nat_bflag", "NAT")\n'
        'modparam("m", "w", yes)\n'
        'route { exit; }\n'
        'route[r1] { exit; }\n'
        'failure_route[missed] { exit; }\n'
        'timer_route[gc, 60] { exit; }\n'
        'event_route[E_CORE_PKG_THRESHOLD, sync] { exit; }\n'
        'request_route[x2] { exit; }\n')
    kinds = [type(t).__name__ for t in top]
    assert kinds == ["GlobalParam", "GlobalParam", "LoadModule", "ModParam",
                     "ModParam", "ModParam", "ModParam"] + ["RouteBlock"] * 6
    assert [t.value for t in top[:2]] == ["udp:127.0.0.1:5060",
                                          "udp:127.0.0.1:5070"]
    assert top[2].path == "tm.so" and top[2].loc == ("t.cfg", 3, 1)
    assert (top[3].module, top[3].param, top[3].value, top[3].kind) == (
        "tm", "fr_timeout", 5, "int")
    assert top[4].value == -3 and top[4].loc == ("t.cfg", 5, 3)
    assert (top[5].module, top[5].value, top[5].kind) == (
        "usrloc|registrar", "NAT", "str")
    assert (top[6].value, top[6].kind) == ("yes", "id")
    routes = [(r.kind, r.name, r.seconds, r.mode) for r in top[7:]]
    assert routes == [("route", None, None, None), ("route", "r1", None, None),
                      ("failure_route", "missed", None, None),
                      ("timer_route", "gc", 60, None),
                      ("event_route", "E_CORE_PKG_THRESHOLD", None, "sync"),
                      ("route", "x2", None, None)]


def test_the_opensips_default_script_parses():
    script = parse_file(DEFAULT_CFG)
    top = script.top
    params = {t.name: (t.kind, t.value) for t in top
              if isinstance(t, A.GlobalParam)}
    assert params["socket"] == ("socket", "udp:127.0.0.1:5060")
    assert params["syslog_facility"] == ("id", "LOG_LOCAL0")
    assert params["udp_workers"] == ("int", 4)
    mods = [t.path for t in top if isinstance(t, A.LoadModule)]
    assert mods[:3] == ["signaling.so", "sl.so", "tm.so"]
    assert len(mods) == 11 and mods[-1] == "proto_udp.so"
    mp = [(t.module, t.param, t.value) for t in top
          if isinstance(t, A.ModParam)]
    assert ("mi_fifo", "fifo_mode", 0o666) in mp
    routes = [(r.kind, r.name) for r in top if isinstance(r, A.RouteBlock)]
    assert routes == [("route", None), ("route", "relay"),
                      ("branch_route", "per_branch_ops"),
                      ("onreply_route", "handle_nat"),
                      ("failure_route", "missed_call")]
    main = top[[type(t) for t in top].index(A.RouteBlock)]
    assert main.loc == (DEFAULT_CFG, 101, 1)
    first = main.body.stmts[0]
    assert isinstance(first, A.If) and first.loc == (DEFAULT_CFG, 103, 2)
    assert isinstance(first.cond, A.Unary)
    assert first.cond.operand.name == "mf_process_maxfwd_header"


@pytest.mark.parametrize("token", [
    "$ru", "$hdr(From)", "$avp(x)[2]", "$var(a)", "$(ru{uri.user})",
    "$(hdr(Via)[1]{s.len})", "$(avp(a)[*]{s.select,1,:})", "$err.class",
    "$ct.fields(uri)", "$T_branch_idx", "$(var(x){re.subst,/(a)/\\1b/})",
])
def test_variable_tokens_are_cut_exactly(token):
    lx = Lexer(f"if ({token}== 1)", "t")
    toks = []
    while True:
        t = lx.next()
        if t.kind == "EOF":
            break
        toks.append((t.kind, t.value))
    assert toks[2] == ("PVAR", token)
    assert toks[3] == ("OP", "==")
    assert not lx.errors


def test_strings_decode_escapes_like_opensips():
    lx = Lexer(r'"a\r\nb" "q\"q" "\+1\d" "\x41\101" ' + "'x\\n'", "t")
    values = [lx.next().value for _ in range(5)]
    assert values == ["a\r\nb", 'q"q', "\\+1\\d", "AA", "x\\n"]


def test_comments_and_locations():
    text = ("# hash\n// slashes\n/* block\n   comment */ route {\n"
            "\t$var(a) = 1; # trailing\n}\n")
    (r,) = top_of(text)
    assert r.loc == ("t.cfg", 4, 15)
    (stmt,) = r.body.stmts
    assert isinstance(stmt, A.Assign) and stmt.loc == ("t.cfg", 5, 2)


def test_statement_shapes():
    (r,) = top_of(
        "route {\n"
        "  if (a() && !b() || c(1, \"x\", $var(v))) { d; } else if (e()) f();"
        " else { }\n"
        "  switch ($rU) { case 1: x(); case \"s\": break; default: y(); }\n"
        "  while ($var(i) < 3) $var(i) += 1;\n"
        "  for ($var(x) in $avp(list)[*]) { route(r, 1, $var(x)); }\n"
        "  $var(n) = NULL; return(-1); return; exit; drop;\n"
        "  g(1, , 3);\n"
        "}\n")
    s = r.body.stmts
    assert [type(x).__name__ for x in s] == [
        "If", "Switch", "While", "For", "Assign", "Return", "Return", "Exit",
        "Drop", "ExprStmt"]
    cond = s[0].cond
    assert cond.op == "||" and cond.left.op == "&&"
    assert cond.left.right.op == "!"
    assert [type(a).__name__ for a in cond.right.args] == ["Int", "Str",
                                                           "PVar"]
    assert isinstance(s[0].orelse.stmts[0], A.If)
    assert [(type(c.value).__name__) for c in s[1].cases] == [
        "Int", "Str", "NoneType"]
    assert isinstance(s[1].cases[1].body[0], A.Break)
    assert s[3].var.text == "$var(x)" and s[3].iterable.text == \
        "$avp(list)[*]"
    rc = s[3].body.stmts[0].expr
    assert isinstance(rc, A.RouteCall) and rc.name == "r"
    assert len(rc.args) == 2
    assert isinstance(s[4].value, A.Null)
    assert s[5].value.value == -1 and s[6].value is None
    assert [a.value if a else a for a in s[9].expr.args] == [1, None, 3]


def test_include_file_is_inlined_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.cfg").write_text(
        'loadmodule "rr.so"\nroute[inc] { exit; }\n')
    (tmp_path / "main.cfg").write_text(
        'loadmodule "tm.so"\ninclude_file "sub/inner.cfg"\n'
        'import_file "missing.cfg"\nroute { route(inc); }\n')
    top = parse_file(str(tmp_path / "main.cfg")).top
    assert [getattr(t, "path", getattr(t, "name", None)) for t in top] == [
        "tm.so", "rr.so", "inc", None]
    assert top[1].loc == (str(tmp_path / "sub" / "inner.cfg"), 1, 1)


@pytest.mark.parametrize("arg,text", [
    ("tcp:127.0.0.1:5060", "tcp:127.0.0.1:5060"),
    (" udp:[::1]:5070 ", "udp:[::1]:5070"),
    ("10.0.0.1", "10.0.0.1"),
    ('"tcp:127.0.0.1:5060"', "tcp:127.0.0.1:5060"),
])
def test_force_send_socket_takes_a_socket_unquoted_as_opensips(arg, text):
    [r] = top_of("route {\n  force_send_socket(%s); exit;\n}\n" % arg)
    call = r.body.stmts[0].expr
    assert call.name == "force_send_socket"
    assert [type(a).__name__ for a in call.args] == ["Str"]
    assert call.args[0].text == text


def test_force_send_socket_with_a_variable_is_still_an_expression():
    [r] = top_of("route {\n  force_send_socket($var(s)); exit;\n}\n")
    assert type(r.body.stmts[0].expr.args[0]).__name__ == "PVar"
