"""Broken scripts: every error is reported, each as FILE:LINE:COL."""
import pytest

from opensipy import sr_module as S
from opensipy.script import ScriptErrors, check, compile_script, parse_file
from opensipy.script import parse_string

from script_helpers import BASIC, make_registry

R = S.REQUEST_ROUTE
MODS = {"basic": BASIC,
        "m": {"only_req": ("", R, 1), "rx": ("r", S.ALL_ROUTES, 1),
              "num": ("i", S.ALL_ROUTES, 1), "two": ("sS", S.ALL_ROUTES, 1),
              "vr": ("v", S.ALL_ROUTES, 1), "st": ("c", S.ALL_ROUTES, 1)}}


def errors_of(text, file="bad.cfg"):
    """Syntax errors when there are any, else the resolution errors."""
    reg, _ = make_registry(MODS)
    try:
        script = parse_string(text, file)
    except ScriptErrors as e:
        return [str(x) for x in e.errors]
    return [str(x) for x in check(script, reg)]


CASES = [
    ("unclosed-block",
     'route {\n  if (t()) {\n    log("a");\n}\nroute[x] {\n  exit;\n}\n',
     ["bad.cfg:1:7: unclosed block: '{' has no matching '}'"]),
    ("unclosed-at-eof", 'route {\n  log("a");\n',
     ["bad.cfg:1:7: unclosed block: '{' has no matching '}'"]),
    ("unknown-function", 'route {\n  nosuch(1);\n}\n',
     ["bad.cfg:2:3: unknown function 'nosuch'"]),
    ("unknown-function-in-expression", 'route {\n  if (!nosuch) exit;\n}\n',
     ["bad.cfg:2:8: unknown function 'nosuch'"]),
    ("wrong-arity", 'route {\n  log();\n  two("a", "b", "c");\n}\n',
     ["bad.cfg:2:3: function 'log' takes 1 argument, 0 given",
      "bad.cfg:3:3: function 'two' takes 1 to 2 arguments, 3 given"]),
    ("missing-mandatory-middle", 'route {\n  two(, "b");\n}\n',
     ["bad.cfg:2:3: function 'two': argument 1 may not be omitted"]),
    ("forbidden-route",
     'route { route(s); }\nfailure_route[f] {\n  route(s);\n}\n'
     'route[s] {\n    only_req();\n}\nfailure_route[g] { only_req(); }\n',
     ["bad.cfg:6:5: function 'only_req' cannot be used in route[s], which "
      "is called from failure_route (allowed in: request_route)",
      "bad.cfg:8:20: function 'only_req' cannot be used in failure_route "
      "(allowed in: request_route)"]),
    ("forbidden-route-transitive",
     'onreply_route[r] { route(a); }\nroute[a] { route(b); }\n'
     'route[b] { only_req(); }\nroute { route(b); }\n',
     ["bad.cfg:3:12: function 'only_req' cannot be used in route[b], which "
      "is called from onreply_route (allowed in: request_route)"]),
    ("unused-subroute-is-not-masked", 'route[unused] { only_req(); }\n', []),
    ("unknown-variable",
     'route {\n  $var(a) = $nosuch;\n  log("x $bad(");\n}\n',
     ["bad.cfg:2:13: unknown variable $nosuch",
      "bad.cfg:3:7: function 'log' argument 1: unknown variable $bad"]),
    ("bad-regex",
     'route {\n  if ($var(a) =~ "a(") exit;\n  rx("b[");\n}\n',
     ["bad.cfg:2:18: bad regular expression 'a(': missing ), unterminated "
      "subpattern at position 1",
      "bad.cfg:3:6: function 'rx' argument 1: bad regular expression 'b[': "
      "unterminated character set at position 1"]),
    ("modparam-syntax",
     'modparam("tm" "x", 1)\nmodparam("tm", "y", )\nloadmodule tm\n',
     ["bad.cfg:1:15: expected ',' after the module name, found string \"x\"",
      "bad.cfg:2:21: modparam value must be an integer or a string, "
      "found ')'",
      "bad.cfg:3:12: expected the module file name, found 'tm'"]),
    ("bad-number",
     'log_level=3x\nroute {\n  $var(a) = 12abc;\n  $var(b) = 09;\n}\n',
     ["bad.cfg:1:11: bad number '3x'", "bad.cfg:3:13: bad number '12abc'",
      "bad.cfg:4:13: bad number '09'"]),
    ("non-integer-for-int-param", 'route {\n  num("x");\n}\n',
     ["bad.cfg:2:7: function 'num' argument 1: expected an integer or a "
      "variable, got the string 'x'"]),
    ("variable-where-a-constant-is-needed",
     'route {\n  st($ru);\n  st("a$ru");\n  st("ok");\n}\n',
     ["bad.cfg:2:6: function 'st' argument 1: expected a constant, got the "
      "variable $ru",
      "bad.cfg:3:6: function 'st' argument 1: expected a constant string, "
      "got the string 'a$ru' (it holds variables)"]),
    ("missing-semicolon", 'route {\n  log("a")\n  log("b");\n}\n',
     ["bad.cfg:2:11: missing ';' after log()"]),
    ("bad-assignment", 'route {\n  x = 1;\n}\n',
     ["bad.cfg:2:3: cannot assign to 'x': only variables ($var(x), "
      "$avp(y), ...) can be assigned"]),
    ("unbalanced-parens", 'route {\n  if (t() {\n    log("a");\n  }\n'
     '  log("b"\n}\n',
     ["bad.cfg:2:11: expected ')' to close the if condition, found '{'",
      "bad.cfg:6:1: expected ')' to close log(, found '}'"]),
    ("unterminated-string", 'route { "unterminated\n}\n',
     ["bad.cfg:1:9: unterminated string",
      "bad.cfg:1:7: unclosed block: '{' has no matching '}'"]),
    ("unclosed-comment", 'route { /* never closed\n',
     ["bad.cfg:1:9: unclosed comment /*",
      "bad.cfg:1:7: unclosed block: '{' has no matching '}'"]),
    ("unclosed-variable", 'route {\n  $var(a = 1;\n}\n',
     ["bad.cfg:2:3: unclosed variable (missing ')')"]),
    ("switch-duplicates", 'route { switch ($var(a)) { case 1: case 1: exit;'
     ' default: ; default: ; } }',
     ["bad.cfg:1:41: duplicate case value 1",
      "bad.cfg:1:61: duplicate default in switch"]),
    ("route-names", 'branch_route { exit; }\nerror_route[x] { exit; }\n'
     'timer_route[t] { exit; }\ntimer_route[u, 0] { exit; }\n',
     ["bad.cfg:1:14: branch_route needs a name: branch_route[name]",
      "bad.cfg:2:1: error_route takes no name",
      "bad.cfg:3:14: expected ',' between the timer name and its interval, "
      "found ']'",
      "bad.cfg:4:16: the timer interval must be at least 1 second"]),
    ("resolution-errors-all-reported",
     'route {\n  $fd = "x";\n  break;\n  route(nowhere);\n  vr("s");\n'
     '  if ($var(a) == 1) { while (1) { break; } '
     'switch(1) { case 1: break; } }\n}\n'
     'route {}\nroute[a] { break; }\nroute[a] {}\n',
     ["bad.cfg:2:3: variable $fd is read-only",
      "bad.cfg:3:3: 'break' outside a switch or loop",
      "bad.cfg:4:3: unknown route 'nowhere' (no route[nowhere] block)",
      "bad.cfg:5:6: function 'vr' argument 1: expected a variable, got the "
      "string 's'",
      "bad.cfg:8:1: the main route is defined twice (first at bad.cfg:1)",
      "bad.cfg:9:12: 'break' outside a switch or loop",
      "bad.cfg:10:1: route[a] is defined twice (first at bad.cfg:9)"]),
    ("syntax-errors-all-reported",
     'log_level=\nloadmodule "x.so"\nroute {\n  if t() exit;\n  log("ok");\n'
     '  $var(a) == 1;\n}\nfailure_route[f] {\n  exit\n}\nfoo bar\n',
     ["bad.cfg:1:11: missing value for global parameter 'log_level'",
      "bad.cfg:4:6: expected '(' after 'if', found 't'",
      "bad.cfg:6:11: expected an assignment operator "
      "(= := += -= /= *= %= &= |= ^=) after "
      "$var(a), found '=='",
      "bad.cfg:9:7: missing ';' after 'exit'",
      "bad.cfg:11:1: unexpected 'foo' at top level"]),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_broken_script_reports(text, expected):
    assert errors_of(text) == expected


def test_script_errors_print_one_line_per_error():
    with pytest.raises(ScriptErrors) as ei:
        parse_string("route {\n  exit\n}\nroute[x] { drop }\n", "f.cfg")
    assert str(ei.value) == ("f.cfg:2:7: missing ';' after 'exit'\n"
                             "f.cfg:4:16: missing ';' after 'drop'")
    e = ei.value.errors[0]
    assert (e.file, e.line, e.col) == ("f.cfg", 2, 7)


def test_compile_refuses_a_script_with_resolution_errors():
    reg, _ = make_registry(MODS)
    script = parse_string('route {\n  nosuch();\n}\n', "c.cfg")
    with pytest.raises(ScriptErrors) as ei:
        compile_script(script, reg, activate=False)
    assert [str(e) for e in ei.value.errors] == [
        "c.cfg:2:3: unknown function 'nosuch'"]


def test_a_fixup_error_is_reported_at_the_argument():
    from opensipy.modloader import LoadedModule

    def fix(v):
        raise ValueError(f"no such thing {v!r}")
    reg, _ = make_registry(MODS)
    reg.add(LoadedModule("fx", S.ModuleExports("fx", cmds=[S.CmdExport(
        "needs_fix", lambda msg, a: 1, [S.CmdParam(S.CMD_PARAM_STR, fix)],
        S.ALL_ROUTES)])))
    script = parse_string('route {\n  needs_fix("a");\n  needs_fix("b");\n}\n',
                          "c.cfg")
    assert check(script, reg) == []          # check runs no fixup
    with pytest.raises(ScriptErrors) as ei:
        compile_script(script, reg, activate=False)
    assert [str(e) for e in ei.value.errors] == [
        "c.cfg:2:13: function 'needs_fix' argument 1: fixup failed: no such "
        "thing 'a'",
        "c.cfg:3:13: function 'needs_fix' argument 1: fixup failed: no such "
        "thing 'b'"]


def test_errors_point_into_included_files(tmp_path):
    (tmp_path / "inc.cfg").write_text('route[a] {\n  log("x")\n}\n')
    (tmp_path / "main.cfg").write_text(
        'include_file "inc.cfg"\ninclude_file "none.cfg"\n'
        'import_file "none.cfg"\nroute {\n  exit\n}\n')
    with pytest.raises(ScriptErrors) as ei:
        parse_file(str(tmp_path / "main.cfg"))
    inc, main = tmp_path / "inc.cfg", tmp_path / "main.cfg"
    assert [str(e) for e in ei.value.errors] == [
        f"{inc}:2:11: missing ';' after log()",
        f"{main}:2:1: cannot open included file '{tmp_path}/none.cfg': "
        f"No such file or directory",
        f"{main}:5:7: missing ';' after 'exit'"]


def test_resolution_errors_point_into_included_files(tmp_path):
    (tmp_path / "inc.cfg").write_text('route[a] {\n  nosuch();\n}\n')
    (tmp_path / "main.cfg").write_text(
        'route {\n  route(a);\n  nosuch2();\n}\ninclude_file "inc.cfg"\n')
    reg, _ = make_registry(MODS)
    script = parse_file(str(tmp_path / "main.cfg"))
    assert [str(e) for e in check(script, reg)] == [
        f"{tmp_path}/main.cfg:3:3: unknown function 'nosuch2'",
        f"{tmp_path}/inc.cfg:2:3: unknown function 'nosuch'"]


def test_an_include_cycle_is_an_error(tmp_path):
    (tmp_path / "a.cfg").write_text('include_file "b.cfg"\n')
    (tmp_path / "b.cfg").write_text('include_file "a.cfg"\n')
    with pytest.raises(ScriptErrors) as ei:
        parse_file(str(tmp_path / "a.cfg"))
    assert [str(e) for e in ei.value.errors] == [
        f"{tmp_path}/b.cfg:1:1: file '{tmp_path}/a.cfg' includes itself"]


def test_a_damaged_default_script_gives_errors_never_a_crash():
    """Truncations and one-character damages of the default script: each
    either parses or raises ScriptErrors with real locations; a parsed one
    checks (and compiles when clean) without any other exception."""
    import random
    from default_cfg import DEFAULT_CFG, default_registry
    with open(DEFAULT_CFG) as f:
        text = f.read()
    reg, _ = default_registry()
    rnd = random.Random(7)
    variants = [text[:n] for n in range(0, len(text), 211)]
    for _ in range(120):
        i = rnd.randrange(len(text))
        variants.append(text[:i] + text[i + rnd.randrange(1, 4):])
        variants.append(text[:i] + rnd.choice('{}()[];"\'$#/*=!,\n') +
                        text[i:])
    failed = 0
    for v in variants:
        try:
            script = parse_string(v, "d.cfg")
        except ScriptErrors as e:
            failed += 1
            assert e.errors
            assert all(x.file == "d.cfg" and x.line >= 1 and x.col >= 1
                       for x in e.errors)
            continue
        try:
            if not check(script, reg):
                compile_script(script, reg, activate=False)
        except ScriptErrors:
            failed += 1
    assert failed > len(variants) // 3
