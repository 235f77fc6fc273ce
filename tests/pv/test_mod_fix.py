"""mod_fix: CMD_PARAM kinds, module fixup/free_fixup calls, run-time errors."""
import re

import pytest

from pvkit import make
from opensipy import log, mod_fix, pvar
from opensipy.mod_fix import (FixupError, ParamError, bind_call, check_param,
                              prepare_param)
from opensipy.pvar import parse_pv
from opensipy.sr_module import (CMD_PARAM_FIX_NULL, CMD_PARAM_INT,
                                CMD_PARAM_NO_EXPAND, CMD_PARAM_OPT,
                                CMD_PARAM_REGEX, CMD_PARAM_STATIC,
                                CMD_PARAM_STR, CMD_PARAM_VAR, CmdExport,
                                CmdParam, ModuleError)


class Recorder:
    """A module fixup/free_fixup pair that records its calls."""

    def __init__(self):
        self.calls = []

    def fixup(self, v):
        self.calls.append(("fixup", v))
        return ("fixed", v)

    def free(self, v):
        self.calls.append(("free", v))


def P(flags, rec=None):
    if rec is None:
        return CmdParam(flags)
    return CmdParam(flags, rec.fixup, rec.free)


# --- check_param: (flags, arg, error substring or None) -------------------

def _var(t):
    return parse_pv(t)


CHECKS = [
    (CMD_PARAM_INT, 5, None),
    (CMD_PARAM_INT, "12", None),
    (CMD_PARAM_INT, "-3", None),
    (CMD_PARAM_INT, "abc", "expected an integer or a variable, got the "
                           "string 'abc'"),
    (CMD_PARAM_INT, "$var(x)", "expected an integer"),
    (CMD_PARAM_INT, _var("$var(x)"), None),
    (CMD_PARAM_INT | CMD_PARAM_STATIC, _var("$var(x)"),
     "expected a constant, got the variable $var(x)"),
    (CMD_PARAM_INT, None, "mandatory"),
    (CMD_PARAM_INT | CMD_PARAM_OPT, None, None),
    (CMD_PARAM_STR, "plain", None),
    (CMD_PARAM_STR, "with $ru", None),
    (CMD_PARAM_STR, 7, None),
    (CMD_PARAM_STR, "bad $nosuch", "unknown variable $nosuch"),
    (CMD_PARAM_STR | CMD_PARAM_NO_EXPAND, "bad $nosuch", None),
    (CMD_PARAM_STR | CMD_PARAM_STATIC, "with $ru", "expected a constant "
                                                    "string"),
    (CMD_PARAM_STR, _var("$ru"), None),
    (CMD_PARAM_VAR, _var("$avp(x)"), None),
    (CMD_PARAM_VAR, "$avp(x)", "expected a variable, got the string"),
    (CMD_PARAM_VAR, 3, "expected a variable"),
    (CMD_PARAM_REGEX, "^sip:.*@example", None),
    (CMD_PARAM_REGEX, "([", "bad regular expression"),
    (CMD_PARAM_REGEX, "^$rU", None),
    (CMD_PARAM_REGEX, 5, "expected a regular expression"),
    (CMD_PARAM_REGEX, _var("$var(re)"), None),
]


@pytest.mark.parametrize("flags,arg,err", CHECKS)
def test_check_param(flags, arg, err):
    got = check_param(CmdParam(flags), arg)
    if err is None:
        assert got is None
    else:
        assert got is not None and err in got


def test_check_runs_no_module_fixup():
    rec = Recorder()
    assert check_param(P(CMD_PARAM_STR, rec), "x") is None
    assert check_param(P(CMD_PARAM_INT | CMD_PARAM_OPT | CMD_PARAM_FIX_NULL,
                         rec), None) is None
    assert rec.calls == []


# --- INT ------------------------------------------------------------------

def test_int_constant_with_fixup_runs_once():
    rec = Recorder()
    p = prepare_param(P(CMD_PARAM_INT, rec), "42")
    assert p.const and p.value == ("fixed", 42)
    assert rec.calls == [("fixup", 42)]
    m = make("INVITE")
    assert p.get(m) == ("fixed", 42)
    assert rec.calls == [("fixup", 42)]
    assert not p.needs_free


def test_int_variable_at_run_time():
    rec = Recorder()
    p = prepare_param(P(CMD_PARAM_INT, rec), parse_pv("$var(n)"))
    assert not p.const and p.needs_free
    m = make("INVITE")
    pvar.script_vars["n"] = 7
    assert p.get(m) == ("fixed", 7)
    pvar.script_vars["n"] = " 12"           # numeric string converts
    assert p.get(m) == ("fixed", 12)
    assert rec.calls == [("fixup", 7), ("fixup", 12)]
    pvar.script_vars["n"] = "abc"
    with pytest.raises(ParamError, match=r"\$var\(n\) is not an integer"):
        p.get(m)
    del pvar.script_vars["n"]
    with pytest.raises(ParamError, match="NULL"):
        p.get(m)


def test_int_message_variable():
    p = prepare_param(CmdParam(CMD_PARAM_INT), parse_pv("$rs"))
    assert p.get(make("OK200")) == 200
    p = prepare_param(CmdParam(CMD_PARAM_INT), parse_pv("$cs"))
    assert p.get(make("INVITE")) == 314159


# --- STR ------------------------------------------------------------------

def test_str_constant_and_int():
    rec = Recorder()
    p = prepare_param(P(CMD_PARAM_STR, rec), "hello")
    assert p.const and p.value == ("fixed", "hello")
    p = prepare_param(CmdParam(CMD_PARAM_STR), 15)
    assert p.const and p.value == "15"


def test_str_format_evaluated_per_call_with_fixup_and_free():
    rec = Recorder()
    p = prepare_param(P(CMD_PARAM_STR, rec), "user=$rU/$var(t)")
    assert not p.const
    pvar.script_vars["t"] = 1
    assert p.get(make("INVITE")) == ("fixed", "user=bob/1")
    assert p.get(make("REGISTER")) == ("fixed", "user=<null>/1")
    assert [c for c in rec.calls if c[0] == "fixup"] == \
        [("fixup", "user=bob/1"), ("fixup", "user=<null>/1")]


def test_str_no_expand_keeps_dollars():
    p = prepare_param(CmdParam(CMD_PARAM_STR | CMD_PARAM_NO_EXPAND),
                      "cost $5 $ru")
    assert p.const and p.value == "cost $5 $ru"


def test_str_bare_variable():
    p = prepare_param(CmdParam(CMD_PARAM_STR), parse_pv("$sp"))
    assert p.get(make("INVITE")) == "5062"         # int printed
    p = prepare_param(CmdParam(CMD_PARAM_STR), parse_pv("$rU"))
    with pytest.raises(ParamError, match=r"\$rU is NULL"):
        p.get(make("REGISTER"))


# --- VAR ------------------------------------------------------------------

def test_var_param_gets_the_spec():
    spec = parse_pv("$avp(dst)")
    p = prepare_param(CmdParam(CMD_PARAM_VAR), spec)
    assert p.const and p.value is spec
    rec = Recorder()
    p = prepare_param(P(CMD_PARAM_VAR, rec), spec)
    assert p.value == ("fixed", spec) and rec.calls == [("fixup", spec)]


# --- REGEX ----------------------------------------------------------------

def test_regex_constant_is_case_insensitive_and_multiline():
    p = prepare_param(CmdParam(CMD_PARAM_REGEX), "^bob$")
    assert p.const and isinstance(p.value, re.Pattern)
    assert p.value.search("BOB")
    assert p.value.search("alice\nbob\ncarol")
    assert p.value.flags & re.IGNORECASE and p.value.flags & re.MULTILINE


def test_regex_from_variable_compiled_per_call_and_freed():
    rec = Recorder()
    p = prepare_param(P(CMD_PARAM_REGEX, rec), parse_pv("$var(re)"))
    assert not p.const
    pvar.script_vars["re"] = "^a.c$"
    fixed = p.get(make("INVITE"))
    assert fixed[0] == "fixed" and fixed[1].search("AbC")
    pvar.script_vars["re"] = "(("
    with pytest.raises(ParamError, match="bad regular expression"):
        p.get(make("INVITE"))


def test_regex_format_with_variables():
    p = prepare_param(CmdParam(CMD_PARAM_REGEX), "^$rU@")
    assert p.get(make("INVITE")).search("Bob@host")
    assert not p.get(make("INVITE")).search("alice@host")


# --- OPT / FIX_NULL ---------------------------------------------------------

def test_omitted_optional():
    rec = Recorder()
    p = prepare_param(P(CMD_PARAM_STR | CMD_PARAM_OPT, rec), None)
    assert p.const and p.value is None and rec.calls == []
    p = prepare_param(P(CMD_PARAM_STR | CMD_PARAM_OPT | CMD_PARAM_FIX_NULL,
                        rec), None)
    assert p.const and p.value == ("fixed", None)
    assert rec.calls == [("fixup", None)]
    with pytest.raises(FixupError, match="mandatory"):
        prepare_param(CmdParam(CMD_PARAM_STR), None)


def test_module_fixup_error_becomes_fixup_error():
    def bad(v):
        raise ModuleError("no such table")
    with pytest.raises(FixupError, match="no such table"):
        prepare_param(CmdParam(CMD_PARAM_STR, bad), "t1")
    assert issubclass(FixupError, ModuleError)


# --- bind_call ----------------------------------------------------------------

def test_bind_call_frees_runtime_values_after_the_call():
    rec = Recorder()
    seen = []

    def fn(msg, a, b):
        seen.append((a, b))
        rec.calls.append(("call",))
        return 1
    cmd = CmdExport("f", fn, [P(CMD_PARAM_STR, rec), P(CMD_PARAM_INT, rec)])
    preps = [prepare_param(cmd.params[0], "const"),
             prepare_param(cmd.params[1], parse_pv("$var(n)"))]
    rec.calls.clear()
    call = bind_call(cmd, preps)
    pvar.script_vars["n"] = 3
    assert call(make("INVITE")) == 1
    assert seen == [(("fixed", "const"), ("fixed", 3))]
    # the constant is never freed; the run-time value is, after the call
    assert rec.calls == [("fixup", 3), ("call",), ("free", ("fixed", 3))]


def test_bind_call_runtime_error_returns_minus_one(capsys):
    calls = []
    cmd = CmdExport("g", lambda msg, n: calls.append(n) or 1,
                    [CmdParam(CMD_PARAM_INT)])
    call = bind_call(cmd, [prepare_param(cmd.params[0],
                                         parse_pv("$var(n)"))], "x.cfg:3")
    pvar.script_vars["n"] = "twelve"
    old = log.state.level
    log.state.level = log.L_ERR
    try:
        assert call(make("INVITE")) == -1
    finally:
        log.state.level = old
    assert calls == []
    err = capsys.readouterr().err
    assert "x.cfg:3: g(): parameter 1:" in err and "not an integer" in err


def test_bind_call_all_constant():
    cmd = CmdExport("h", lambda msg, a, b: (a, b), [CmdParam(CMD_PARAM_INT),
                                                   CmdParam(CMD_PARAM_STR)])
    call = bind_call(cmd, [prepare_param(cmd.params[0], 1),
                           prepare_param(cmd.params[1], "s")])
    assert call(make("INVITE")) == (1, "s")


# --- manual helpers ------------------------------------------------------------

def test_manual_helpers():
    m = make("INVITE")
    pvar.script_vars["n"] = "9"
    assert mod_fix.fixup_get_ivalue(m, mod_fix.fixup_igp("$var(n)")) == 9
    assert mod_fix.fixup_get_ivalue(m, mod_fix.fixup_igp(4)) == 4
    assert mod_fix.fixup_get_svalue(m, mod_fix.fixup_spve("u=$rU")) == "u=bob"
    spec = mod_fix.fixup_pvar("$avp(a)")
    assert spec.writable
    with pytest.raises(FixupError, match="unknown variable"):
        mod_fix.fixup_pvar("$nosuch")
    assert mod_fix.fixup_regexp("ab").search("xABy")
    assert mod_fix.fixup_uint("10") == 10
    with pytest.raises(ValueError):
        mod_fix.fixup_uint(-1)
    with pytest.raises(ValueError):
        mod_fix.fixup_uint("x")
    assert mod_fix.fixup_get_svalue(m, parse_pv("$rp")) == "5070"
    with pytest.raises(ParamError):
        mod_fix.fixup_get_ivalue(m, parse_pv("$var(none)"))
