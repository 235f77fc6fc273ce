"""Statements and operators of the script language, run end to end: each
case is a small script whose main route logs values (``log(s)`` records
its formatted argument) and the flags the route returns."""
import pytest

from opensipy import pvar
from opensipy import sr_module as S
from opensipy.script import ACT_FL_DROP, ACT_FL_EXIT

from script_helpers import compile_snippet, run_script, sip_msg

EXIT = ACT_FL_EXIT
DROP = ACT_FL_EXIT | ACT_FL_DROP

# (id, route body, expected log() arguments, expected flags)
CASES = [
    # --- if / else ---------------------------------------------------------
    ("if-true", 'if (t()) log("a"); else log("b");', ["a"], 0),
    ("if-false", 'if (n()) log("a"); else log("b");', ["b"], 0),
    ("if-not", 'if (!n()) log("a");', ["a"], 0),
    ("else-if", 'if (n()) log("a"); else if (t()) log("b"); else log("c");',
     ["b"], 0),
    ("if-block", 'if (t()) { log("a"); log("b"); } log("c");',
     ["a", "b", "c"], 0),
    ("nested-block", '{ log("a"); { log("b"); } }', ["a", "b"], 0),
    ("call-no-parens", 't; log("after");', ["after"], 0),
    # --- a function returning 0 stops the script, even inside if ------------
    ("zero-stops", 'log("a"); z(); log("b");', ["a"], EXIT),
    ("zero-in-if", 'if (z()) log("a"); else log("b"); log("c");', [], EXIT),
    ("zero-in-not", 'if (!z()) log("a"); log("c");', [], EXIT),
    ("zero-in-and", 'if (t() && z()) log("a"); log("c");', [], EXIT),
    ("zero-skipped-by-and", 'if (n() && z()) log("a"); log("c");',
     ["c"], 0),
    ("zero-skipped-by-or", 'if (t() || z()) log("a"); log("c");',
     ["a", "c"], 0),
    ("or-second", 'if (n() || t()) log("a");', ["a"], 0),
    ("and-both", 'if (t() && t()) log("a"); if (t() && n()) log("b");',
     ["a"], 0),
    ("not-paren", 'if (!(n() || n())) log("a");', ["a"], 0),
    # --- $rc / $retcode -----------------------------------------------------
    ("rc-after-call", 'n(); log("$rc"); ret(7); log("$retcode");',
     ["-1", "7"], 0),
    ("rc-after-true", 't(); log("$rc");', ["1"], 0),
    # --- exit / drop / return in the main route ---------------------------
    ("exit", 'log("a"); exit; log("b");', ["a"], EXIT),
    ("drop", 'log("a"); drop; log("b");', ["a"], DROP),
    ("return-main", 'log("a"); return(1); log("b");', ["a"], 0),
    ("return-zero-main", 'return(0); log("b");', [], EXIT),
    ("return-bare", 'return; log("b");', [], 0),
    # --- assignments ----------------------------------------------------------
    ("assign", '$var(a) = 5; $var(b) = "x"; log("$var(a)$var(b)");',
     ["5x"], 0),
    ("assign-plus", '$var(a) = 5; $var(a) += 3; log("$var(a)");', ["8"], 0),
    ("assign-minus", '$var(a) = 5; $var(a) -= 7; log("$var(a)");',
     ["-2"], 0),
    ("assign-colon", '$var(a) := 4; log("$var(a)");', ["4"], 0),
    ("assign-null", '$var(a) = 1; $var(a) = NULL; '
     'if ($var(a) == NULL) log("null"); log("$var(a)");',
     ["null", "<null>"], 0),
    ("assign-call", '$var(a) = ret(-3); log("$var(a)");', ["-3"], 0),
    ("assign-bool", '$var(a) = (1 < 2); $var(b) = (2 < 1); '
     'log("$var(a) $var(b)");', ["1 0"], 0),
    # --- arithmetic -----------------------------------------------------------
    # OpenSIPS's + - * / % share one precedence, left to right (cfg.y);
    # test_script_precedence.py has the whole table
    ("precedence", '$var(a) = 1 + 2 * 3; log("$var(a)");', ["9"], 0),
    ("parens", '$var(a) = 1 + (2 * 3); log("$var(a)");', ["7"], 0),
    ("minus-div-mod", '$var(a) = 20 - 7 / 2 - 10 % 4; log("$var(a)");',
     ["0"], 0),
    ("negative-div", '$var(a) = -7 / 2; log("$var(a)");', ["-3"], 0),
    ("bitwise", '$var(a) = (12 | 3) + (12 & 10) + (12 ^ 10); '
     'log("$var(a)");', ["29"], 0),
    ("bitnot-neg", '$var(a) = 5; $var(b) = ~$var(a); $var(c) = -$var(a); '
     'log("$var(b) $var(c)");', ["-6 -5"], 0),
    ("hex-octal", '$var(a) = 0x10 + 010; log("$var(a)");', ["24"], 0),
    ("div-zero", '$var(a) = 5 / 0; log("$var(a)");', ["0"], 0),
    ("var-arith", '$var(a) = 2; $var(b) = $var(a) * $var(a) + 1; '
     'log("$var(b)");', ["5"], 0),
    # a string on the left of * has no value in OpenSIPS (route.c
    # eval_elem: "Invalid operator"): the assignment is skipped
    ("numeric-string-arith", '$var(a) = "4"; $var(b) = $var(a) * 2; '
     'log("$var(b)");', ["<null>"], 0),
    # --- strings --------------------------------------------------------------
    ("concat", '$var(a) = "x"; $var(b) = "<" + $var(a) + ">"; '
     'log("$var(b)");', ["<x>"], 0),
    # a number constant has no text: "n" + 1 has no value (eval_elem:
    # "invalid string operands"); a variable holding 1 has
    ("concat-int", '$var(b) = "n" + 1; log("$var(b)"); $var(i) = 1; '
     '$var(b) = "n" + $var(i); log("$var(b)");', ["<null>", "n1"], 0),
    ("string-with-var", '$var(a) = "v"; $var(b) = "[$var(a)]"; '
     'log("$var(b)");', ["[v]"], 0),
    ("escapes", 'log("a\\tb\\\\n");', ["a\tb\\n"], 0),
    ("single-quotes", "$var(a) = 'it' + \"s\"; log('$var(a)');", ["its"],
     0),
    # --- comparisons ----------------------------------------------------------
    ("eq-int", 'if (1 == 1) log("a"); if (1 == 2) log("b"); '
     'if (1 != 2) log("c");', ["a", "c"], 0),
    ("eq-nocase", '$var(a) = "ABC"; if ($var(a) == "abc") log("a"); '
     'if ("abc" == $var(a)) log("b"); if ($var(a) != "abd") log("c");',
     ["a", "b", "c"], 0),
    # comp_scriptvar: a string variable against a number is an error
    # (false); an int variable against a string compares its text
    ("eq-mixed", '$var(a) = "12"; if ($var(a) == 12) log("a"); '
     '$var(b) = 12; if ($var(b) == "12") log("b"); '
     'if ($var(a) == $var(b)) log("c");', ["b", "c"], 0),
    ("eq-null", 'if ($var(nothing) == NULL) log("a"); '
     'if ($var(nothing) != NULL) log("b"); if (NULL == $var(nothing)) '
     'log("c"); if ($var(nothing) == "") log("d");', ["a", "c"], 0),
    ("ordering", '$var(a) = 3; if ($var(a) < 4) log("lt"); '
     'if ($var(a) > 4) log("gt"); if ($var(a) <= 3) log("le"); '
     'if ($var(a) >= 4) log("ge");', ["lt", "le"], 0),
    ("ordering-numeric-strings", '$var(a) = "10"; if ($var(a) > 9) log("a");'
     ' if ("b" > "A") log("b");', ["b"], 0),
    ("ordering-null", 'if ($var(nothing) < 1) log("a"); '
     'if ($var(nothing) >= 1) log("b");', [], 0),
    ("regex", '$var(a) = "Hello World"; if ($var(a) =~ "^hel") log("a"); '
     'if ($var(a) !~ "^world") log("b"); if ($var(a) =~ "x$") log("c");',
     ["a", "b"], 0),
    ("regex-dynamic", '$var(a) = "abc"; $var(r) = "B+C"; '
     'if ($var(a) =~ $var(r)) log("a"); $var(r) = "^c"; '
     'if ($var(a) =~ $var(r)) log("b");', ["a"], 0),
    ("regex-null", 'if ($var(nothing) =~ ".*") log("a");', [], 0),
    ("truth-of-values", '$var(a) = 0; $var(b) = "x"; $var(c) = ""; '
     'if ($var(a)) log("a"); if ($var(b)) log("b"); if ($var(c)) log("c");'
     ' if ($var(nothing)) log("d"); if (3) log("e"); if (!$var(a)) log("f");',
     ["b", "e", "f"], 0),
    ("logic-values", '$var(a) = 1; if ($var(a) == 1 && ($var(b) == NULL '
     '|| n())) log("a");', ["a"], 0),
    # --- switch ---------------------------------------------------------------
    ("switch-fallthrough", '$var(x) = 1; switch ($var(x)) { case 1: log("1");'
     ' case 2: log("2"); break; case 3: log("3"); default: log("d"); }'
     ' log("end");', ["1", "2", "end"], 0),
    ("switch-default-falls", '$var(x) = 3; switch ($var(x)) { case 1: '
     'log("1"); case 3: log("3"); default: log("d"); }', ["3", "d"], 0),
    ("switch-nomatch-default", '$var(x) = 9; switch ($var(x)) { case 1: '
     'log("1"); break; default: log("d"); }', ["d"], 0),
    ("switch-nomatch", '$var(x) = 9; switch ($var(x)) { case 1: log("1"); }'
     ' log("end");', ["end"], 0),
    ("switch-default-first", '$var(x) = 9; switch ($var(x)) { default: '
     'log("d"); case 1: log("1"); break; case 2: log("2"); }', ["d", "1"],
     0),
    ("switch-string", '$var(x) = "INVITE"; switch ($var(x)) { case "ack": '
     'log("ack"); break; case "invite": log("inv"); break; }', ["inv"], 0),
    ("switch-string-int", '$var(x) = "2"; switch ($var(x)) { case 1: '
     'log("1"); break; case 2: log("2"); break; }', ["2"], 0),
    ("switch-empty-case", '$var(x) = 1; switch ($var(x)) { case 1: case 2: '
     'log("12"); break; case 3: log("3"); }', ["12"], 0),
    ("switch-in-while-break", '$var(i) = 0; while ($var(i) < 3) { '
     'switch ($var(i)) { case 1: log("one"); break; default: log("x"); } '
     '$var(i) += 1; }', ["x", "one", "x"], 0),
    ("switch-exit", '$var(x) = 1; switch ($var(x)) { case 1: exit; } '
     'log("no");', [], EXIT),
    # --- while / for ----------------------------------------------------------
    ("while", '$var(i) = 0; while ($var(i) < 3) { log("$var(i)"); '
     '$var(i) = $var(i) + 1; }', ["0", "1", "2"], 0),
    ("while-break", '$var(i) = 0; while (1) { $var(i) += 1; '
     'if ($var(i) > 2) break; log("$var(i)"); } log("out");',
     ["1", "2", "out"], 0),
    ("while-call-cond", '$var(i) = 3; while (ret($var(i)) > 0) { '
     'log("$var(i)"); $var(i) -= 1; if ($var(i) == 1) $var(i) = -1; } '
     'log("end");', ["3", "2", "end"], 0),
    ("while-zero", 'while (z()) log("a"); log("b");', [], EXIT),
    ("while-limit", '$var(i) = 0; while (1) $var(i) += 1; log("$var(i)");',
     ["10000"], 0),
    ("for-list", 'for ($var(x) in 1, "b", 3) log("$var(x)");',
     ["1", "b", "3"], 0),
    ("for-paren-list", 'for ($var(x) in (4, 5)) { log("$var(x)"); }',
     ["4", "5"], 0),
    ("for-scalar", '$var(a) = "only"; for ($var(x) in $var(a)) '
     'log("$var(x)");', ["only"], 0),
    ("for-null", 'for ($var(x) in $var(nothing)) log("x"); log("end");',
     ["end"], 0),
    ("for-avp-all", '$avp(l) = "a"; $avp(l) = "b"; for ($var(x) in '
     '$avp(l)[*]) log("$var(x)"); for ($var(x) in $avp(none)[*]) log("n");',
     ["b", "a"], 0),
    ("for-header-all", 'for ($var(h) in $hdr(Via)[*]) log("$var(h)");',
     ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds"], 0),
    ("for-break", 'for ($var(x) in 1, 2, 3) { if ($var(x) == 2) break; '
     'log("$var(x)"); }', ["1"], 0),
    ("for-exit", 'for ($var(x) in 1, 2) { log("$var(x)"); exit; } '
     'log("no");', ["1"], EXIT),
]


@pytest.mark.parametrize("body,logged,flags", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_statement_runs_as_opensips_does(body, logged, flags):
    got_flags, got = run_script("route {\n" + body + "\n}\n")
    assert got == logged
    assert got_flags == flags


# --- sub-routes ------------------------------------------------------------

SUBROUTE_CASES = [
    ("return-zero-stops-all", 'route(a); log("after");',
     'route[a] { log("in"); return(0); log("no"); }', ["in"], EXIT),
    ("return-negative", 'route(a); log("$rc");',
     'route[a] { return(-1); }', ["-1"], 0),
    ("route-as-condition", 'if (route(a)) log("t"); else log("f"); '
     'if (!route(b)) log("nb");',
     'route[a] { return(2); } route[b] { return(-2); }', ["t", "nb"], 0),
    ("return-expression", '$var(v) = 3; route(a); log("$rc");',
     'route[a] { return($var(v) * 2); }', ["6"], 0),
    ("return-expression-zero", '$var(v) = 0; route(a); log("no");',
     'route[a] { return($var(v)); }', [], EXIT),
    ("exit-in-subroute", 'route(a); log("no");',
     'route[a] { exit; }', [], EXIT),
    ("drop-in-subroute", 'route(a); log("no");',
     'route[a] { drop; }', [], DROP),
    ("zero-in-subroute", 'route(a); log("no");',
     'route[a] { if (z()) log("x"); }', [], EXIT),
    ("nested-routes", 'route(a); log("main");',
     'route[a] { log("a"); route(b); log("a2"); } route[b] { log("b"); }',
     ["a", "b", "a2", "main"], 0),
    ("params", 'route(a, "x", 5); log("[$param(1)]");',
     'route[a] { log("$param(1)-$param(2)-$param(3)"); }',
     ["x-5-<null>", "[<null>]"], 0),
    ("params-nested", 'route(a, "outer");',
     'route[a] { route(b, $param(1) + "!"); log("$param(1)"); } '
     'route[b] { log("$param(1)"); }', ["outer!", "outer"], 0),
    ("params-expressions", '$var(n) = 2; route(a, $var(n) * 3, ret(4));',
     'route[a] { log("$param(1) $param(2)"); }', ["6 4"], 0),
    ("recursion-stops", 'route(a); log("end");',
     'route[a] { $var(d) += 1; route(a); }', [], EXIT),
    ("recursion-bounded", '$var(d) = 0; route(a); log("$var(d)");',
     'route[a] { $var(d) += 1; if ($var(d) < 50) route(a); }', ["50"], 0),
    # a route without return: its value is that of the last statement run
    # (OpenSIPS's run_action_list): 1 after an assignment, an empty body, an
    # if whose condition was false without else, a loop; a function's or a
    # route()'s own return code when one is last
    ("falloff-assign", 'n(); route(a); log("$rc");',
     'route[a] { $var(x) = 1; }', ["1"], 0),
    ("falloff-empty", 'n(); route(a); log("$retcode");',
     'route[a] { }', ["1"], 0),
    ("falloff-is-true", 'if (route(a)) log("t"); else log("f");',
     'route[a] { n(); $var(x) = 2; }', ["t"], 0),
    ("falloff-last-call", 'route(a); log("$rc");',
     'route[a] { t(); ret(-3); }', ["-3"], 0),
    ("falloff-if-false", 'route(a); log("$rc");',
     'route[a] { if (n()) ret(5); }', ["1"], 0),
    ("falloff-if-taken", 'route(a); log("$rc");',
     'route[a] { if (t()) ret(-4); }', ["-4"], 0),
    ("falloff-else", 'route(a); log("$rc");',
     'route[a] { if (n()) ret(5); else if (n()) ret(6); else { ret(-6); } }',
     ["-6"], 0),
    ("falloff-elif-false", 'route(a); log("$rc");',
     'route[a] { if (n()) ret(5); else if ($var(q) == 1) ret(6); }',
     ["1"], 0),
    ("falloff-while", 'route(a); log("$rc");',
     'route[a] { $var(i) = 0; while ($var(i) < 2) { $var(i) += 1; n(); } }',
     ["1"], 0),
    ("falloff-nested-route", 'route(a); log("$rc");',
     'route[a] { route(b); } route[b] { $var(x) = 1; }', ["1"], 0),
]


@pytest.mark.parametrize("main,subs,logged,flags",
                         [c[1:] for c in SUBROUTE_CASES],
                         ids=[c[0] for c in SUBROUTE_CASES])
def test_subroutes(main, subs, logged, flags):
    got_flags, got = run_script("route {\n" + main + "\n}\n" + subs + "\n")
    assert got == logged
    assert got_flags == flags


def test_recursion_is_cut_at_the_opensips_limit():
    from opensipy.script.compiler import MAX_REC_LEV
    run_script('route { $var(d) = 0; route(a); } '
               'route[a] { $var(d) += 1; route(a); }')
    assert pvar.script_vars["d"] == MAX_REC_LEV


# --- other route kinds -------------------------------------------------------

def test_drop_in_branch_route_is_reported_to_the_caller():
    cs, rec = compile_snippet(
        'route { log("main"); }\n'
        'branch_route[b1] { log("branch"); if (t()) drop; log("no"); }\n'
        'branch_route[b2] { log("kept"); }\n')
    msg = sip_msg()
    assert cs.request_route(msg) == 0
    assert cs.branch_routes["b1"](msg) & ACT_FL_DROP
    assert cs.branch_routes["b2"](msg) == 0
    assert [a[0] for n, a in rec.calls if n == "log"] == [
        "main", "branch", "kept"]


def test_every_route_kind_is_exposed_with_its_route_type():
    seen = []

    def where(msg):
        seen.append((pvar.ctx.route_type, pvar.ctx.route_name))
        return 1
    mods = {"w": {"where": ("", S.ALL_ROUTES, where)}}
    cs, _ = compile_snippet(
        "route { where(); }\n"
        "route[sub] { where(); }\n"
        "onreply_route { where(); }\n"
        "onreply_route[r1] { where(); route(sub); }\n"
        "failure_route[f1] { where(); route(sub); where(); }\n"
        "branch_route[b1] { where(); }\n"
        "error_route { where(); }\n"
        "local_route { where(); }\n"
        "startup_route { where(); }\n"
        "timer_route[tick, 5] { where(); }\n"
        "event_route[E_UL_AOR_INSERT] { where(); }\n"
        "event_route[E_X, async] { where(); }\n", mods)
    msg = sip_msg()
    runs = [(cs.request_route, (S.REQUEST_ROUTE, None)),
            (cs.onreply_routes[None], (S.ONREPLY_ROUTE, None)),
            (cs.onreply_routes["r1"], (S.ONREPLY_ROUTE, "r1")),
            (cs.failure_routes["f1"], (S.FAILURE_ROUTE, "f1")),
            (cs.branch_routes["b1"], (S.BRANCH_ROUTE, "b1")),
            (cs.error_route, (S.ERROR_ROUTE, None)),
            (cs.local_route, (S.LOCAL_ROUTE, None)),
            (cs.startup_route, (S.STARTUP_ROUTE, None)),
            (cs.timer_routes[0][2], (S.TIMER_ROUTE, "tick")),
            (cs.event_routes["E_UL_AOR_INSERT"],
             (S.EVENT_ROUTE, "E_UL_AOR_INSERT"))]
    for fn, expected in runs:
        seen.clear()
        assert fn(msg) == 0
        assert seen[0] == expected
        # the sub-route runs with the caller's route type; the context is
        # restored afterwards
        assert all(s == expected for s in seen)
    assert cs.timer_routes[0][:2] == ("tick", 5)
    assert cs.event_modes == {"E_UL_AOR_INSERT": None, "E_X": "async"}
    assert cs.find("failure_route", "f1") is cs.failure_routes["f1"]
    assert cs.find("route", "sub") is cs.routes["sub"]
    assert cs.find("route") is cs.request_route
    assert cs.find("branch_route", "nope") is None


def test_a_route_run_inside_a_function_leaves_the_caller_context_intact():
    holder = {}

    def relay(msg):
        # like t_relay running a branch_route synchronously
        holder["cs"].branch_routes["b"](msg)
        return 1
    mods = {"tm": {"relay": ("", S.REQUEST_ROUTE, relay)}}
    cs, rec = compile_snippet(
        'route { route(sub, "p"); }\n'
        'route[sub] { relay(); log("$param(1) $rc"); }\n'
        'branch_route[b] { log("[$param(1)]"); ret(-5); }\n', mods)
    holder["cs"] = cs
    cs.request_route(sip_msg())
    assert [a[0] for n, a in rec.calls if n == "log"] == ["[<null>]", "p 1"]
    assert pvar.ctx.route_type == S.REQUEST_ROUTE


# --- calls and parameters -------------------------------------------------------

def test_arguments_reach_the_function_fixed_up():
    fixups = []

    def upper(v):
        fixups.append(v)
        return v.upper()
    got = []
    from script_helpers import make_registry
    from opensipy.script import compile_script, parse_string
    reg, _ = make_registry({"basic": {}})
    cmd = S.CmdExport("f", lambda msg, *a: got.append(a) or 1,
                      [S.CmdParam(S.CMD_PARAM_STR, fixup=upper),
                       S.CmdParam(S.CMD_PARAM_INT | S.CMD_PARAM_OPT),
                       S.CmdParam(S.CMD_PARAM_STR | S.CMD_PARAM_OPT)],
                      S.ALL_ROUTES)
    from opensipy.modloader import LoadedModule
    reg.add(LoadedModule("m", S.ModuleExports("m", cmds=[cmd])))
    cs = compile_script(parse_string(
        'route { $var(n) = 41; f("abc", $var(n)); f("x", , "$var(n)!"); '
        'f("y", -2); }'), reg, activate=False)
    assert fixups == ["abc", "x", "y"]          # once, at compile time
    cs.request_route(sip_msg())
    cs.request_route(sip_msg())
    assert got[:3] == [("ABC", 41, None), ("X", None, "41!"),
                       ("Y", -2, None)]
    assert fixups == ["abc", "x", "y"]
    assert len(got) == 6


def test_a_parameter_that_cannot_be_evaluated_makes_the_call_false():
    got, logged = run_script(
        'route { if (!ret($var(nothing))) log("false $rc"); log("end"); }')
    assert logged == ["false -1", "end"]
    assert [n for n, a in run_script.last_calls if n == "ret"] == []


def test_an_exception_in_a_function_stops_the_script(capsys):
    def boom(msg):
        raise RuntimeError("kaput")
    from opensipy import log
    old = log.state.level
    log.state.level = log.L_ERR
    try:
        flags, logged = run_script(
            'route {\n log("a");\n  boom();\n log("b"); }',
            {"x": {"boom": ("", S.ALL_ROUTES, boom)}})
    finally:
        log.state.level = old
    assert flags == EXIT and logged == ["a"]
    assert "test.cfg:3:3: script stopped by RuntimeError: kaput" in \
        capsys.readouterr().err


def test_overload_is_chosen_by_argument_count():
    mods = {"x": {"xl": [("s", S.ALL_ROUTES, lambda m, a: 1),
                         ("ss", S.ALL_ROUTES, lambda m, a, b: 2)]}}
    flags, logged = run_script(
        'route { xl("one"); log("$rc"); xl("L_ERR", "two"); log("$rc"); }',
        mods)
    assert logged == ["1", "2"]


# --- real SIP variables ---------------------------------------------------------

def test_message_variables_read_and_write():
    msg = sip_msg()
    flags, logged = run_script(
        'route {\n'
        '  if ($rU == "BOB" && $rm == "INVITE") log("to bob");\n'
        '  if ($ru =~ "@example\\.com$") log("domain");\n'
        '  $ru = "sip:carol@example.org";\n'
        '  log("$rU@$rd $(ru{uri.user})");\n'
        '  if ($fU != NULL) log("$fU");\n'
        '}', msg=msg)
    assert logged == ["to bob", "domain", "carol@example.org carol",
                      "alice"]


# --- the route table modules use ---------------------------------------------

def test_modules_find_routes_by_name_before_and_after_compilation():
    from opensipy.script import (check, compile_script, find_route,
                                 parse_string, route_exists, runtime)
    from script_helpers import make_registry, BASIC
    reg, _ = make_registry({"basic": BASIC})
    script = parse_string('route { t(); }\nfailure_route[missed] { t(); }\n'
                          'route[relay] { t(); }\n')
    saved = runtime.compiled
    try:
        assert check(script, reg) == []
        # a fixup (before compilation) may check that a name exists
        assert route_exists("failure_route", "missed")
        assert route_exists("route", "relay")
        assert not route_exists("failure_route", "relay")
        cs = compile_script(script, reg)            # activates
        assert find_route("failure_route", "missed") is \
            cs.failure_routes["missed"]
        assert find_route("route", None) is cs.request_route
        assert find_route("branch_route", "missed") is None
    finally:
        runtime.compiled = saved


def test_include_file_inside_a_route_block(tmp_path):
    from opensipy.script import compile_script, parse_file
    from script_helpers import make_registry, BASIC
    (tmp_path / "part.cfg").write_text('log("included");\n$var(z) = 2;\n')
    (tmp_path / "main.cfg").write_text(
        'route {\n  log("before");\n  include_file "part.cfg"\n'
        '  log("$var(z)");\n}\n')
    reg, rec = make_registry({"basic": BASIC})
    cs = compile_script(parse_file(str(tmp_path / "main.cfg")), reg,
                        activate=False)
    cs.request_route(sip_msg())
    assert [a[0] for n, a in rec.calls] == ["before", "included", "2"]


def test_a_long_else_if_chain_compiles_flat():
    # 150 levels would exceed Python's indentation limit if each else-if
    # nested one level deeper
    chain = " else ".join(f'if ($var(x) == {i}) log("{i}");'
                          for i in range(150))
    flags, logged = run_script('route { $var(x) = 149; ' + chain + ' }')
    assert logged == ["149"]
    chain = " else ".join(f'if (ret({i}) == 3) log("{i}");'
                          for i in range(1, 6))
    flags, logged = run_script('route { ' + chain + ' }')
    assert logged == ["3"]


def test_a_value_fixed_up_at_run_time_is_freed_after_the_call():
    from opensipy.modloader import LoadedModule
    from opensipy.script import compile_script, parse_string
    from script_helpers import make_registry
    events = []
    reg, _ = make_registry({"basic": {}})
    reg.add(LoadedModule("fx", S.ModuleExports("fx", cmds=[S.CmdExport(
        "use", lambda msg, v: events.append(("call", v)) or 1,
        [S.CmdParam(S.CMD_PARAM_STR, fixup=lambda v: ("fixed", v),
                    free_fixup=lambda v: events.append(("free", v)))],
        S.ALL_ROUTES)])))
    cs = compile_script(parse_string(
        'route { use("const"); $var(v) = "x"; use($var(v)); }'), reg,
        activate=False)
    assert events == []
    cs.request_route(sip_msg())
    # the constant was fixed up once at compile time and is never freed
    assert events == [("call", ("fixed", "const")),
                      ("call", ("fixed", "x")), ("free", ("fixed", "x"))]
