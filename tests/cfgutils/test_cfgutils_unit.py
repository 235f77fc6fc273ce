"""cfgutils and mi_script functions one by one, through compiled scripts
over real messages (no sockets), and the shm state hammered from forked
processes."""
import datetime
import json
import os
import time

import pytest

from opensipy import pvar
from opensipy.script import ScriptErrors, compile_script, parse_string

import modkit
import opensipy_modules.cfgutils as cfg
from opensipy_modules.cfgutils import timerec
from shm_forking import run_children


def compile_(reg, body, extra=""):
    return compile_script(parse_string("route {\n" + body + "\n}\n" + extra,
                                       "t.cfg"), reg, activate=True)


def run(reg, body, extra="", msg=None):
    cs = compile_(reg, body, extra)
    m = msg if msg is not None else modkit.parse(modkit.request())
    cs.request_route(m)
    return m


def var(name):
    return pvar.script_vars.get(name)


# ------------------------------------------------------------ probability

def test_rand_event_with_probability_bounds(reg):
    run(reg, "$var(a) = 0; $var(b) = 0;\n"
             "$var(i) = 0; while ($var(i) < 200) { $var(i) += 1;\n"
             "if (rand_event(100)) $var(a) += 1;\n"
             "if (rand_event(0)) $var(b) += 1; }")
    assert (var("a"), var("b")) == (200, 0)


def test_rand_event_statistics_loose_bound(reg):
    run(reg, "rand_set_prob(25); $var(n) = 0; $var(i) = 0;\n"
             "while ($var(i) < 2000) { $var(i) += 1;\n"
             "if (rand_event()) $var(n) += 1; }")
    # 25 % of 2000 = 500, sd ~19
    assert 400 < var("n") < 600
    run(reg, "rand_reset_prob();")
    assert cfg._prob.get() == cfg.initial_probability


def test_rand_probability_out_of_range_is_a_config_error(reg):
    with pytest.raises(ScriptErrors) as ei:
        compile_(reg, "    rand_event(101);")
    assert str(ei.value).startswith("t.cfg:2:")
    m = run(reg, '$var(p) = 150; if (!rand_set_prob($var(p))) '
                 '$var(r) = "refused";')
    assert var("r") == "refused" and m is not None


def test_rand_get_prob_logs_the_probability(reg, capsys):
    from opensipy import log
    saved = (log.state.level, log.state.stderr, log.state.syslog)
    log.state.level, log.state.stderr, log.state.syslog = log.L_INFO, \
        True, False
    try:
        run(reg, "rand_set_prob(33); rand_get_prob();")
    finally:
        log.state.level, log.state.stderr, log.state.syslog = saved
    assert "the probability is 33 percent" in capsys.readouterr().err


# ------------------------------------------------------------ sleeping

def test_sleep_and_usleep_block_outside_async(reg):
    t0 = time.monotonic()
    run(reg, "usleep(50000); sleep(0);")
    assert time.monotonic() - t0 >= 0.05


# ------------------------------------------------------------ values

def test_ts_usec_delta_both_outputs(reg):
    run(reg, "ts_usec_delta(10, 500, 12, 250, $var(s), $var(i));")
    assert var("s") == "1999750" and var("i") == 1999750
    run(reg, "ts_usec_delta(12, 0, 10, 1, , $var(j));")
    assert var("j") == 1999999
    # the text output also compares as a number (3.1's single output)
    run(reg, "ts_usec_delta(1, 0, 1, 300, $var(d));\n"
             "if ($var(d) > 200 && $var(d) < 400) $var(ok) = 1;")
    assert var("ok") == 1


def test_get_accurate_time(reg):
    before = time.time()
    run(reg, "get_accurate_time($var(s), $var(u), $var(su));")
    assert abs(var("s") - before) < 5 and 0 <= var("u") < 1_000_000
    assert var("su") == f"{var('s')}.{var('u'):06d}"


def test_set_count_and_shuffle_avps(reg):
    body = ('$avp(x) = 1; $avp(x) = 2; $avp(x) = 3; $avp(x) = 4; '
            '$avp(x) = 5; $avp(x) = 6;\n'
            'set_count($avp(x), $var(n));\n'
            'set_count($avp(nothing), $var(z));\n'
            'shuffle_avps($avp(x));\n'
            'if (!shuffle_avps($avp(nothing))) $var(empty) = 1;')
    orders = set()
    for _ in range(20):
        m = run(reg, body)
        assert sorted(m.avps["x"]) == [1, 2, 3, 4, 5, 6]
        orders.add(tuple(m.avps["x"]))
    assert var("n") == 6 and var("z") == 0 and var("empty") == 1
    assert len(orders) > 1          # 720 orders: 20 draws are not all one


def test_shuffle_avps_needs_an_avp(reg):
    run(reg, "if (!shuffle_avps($var(x))) $var(r) = -1;")
    assert var("r") == -1


def test_env_random_ctime(reg, monkeypatch):
    monkeypatch.setenv("OSY_TEST_ENV", "hello")
    run(reg, '$var(e) = $env(OSY_TEST_ENV); $var(r) = $RANDOM; '
             '$var(y) = $ctime(year); $var(w) = $ctime(wday);')
    assert var("e") == "hello"
    assert 0 <= var("r") < 2 ** 31
    assert var("y") == time.localtime().tm_year
    assert 1 <= var("w") <= 7
    with pytest.raises(ScriptErrors, match="ctime"):
        compile_(reg, "$var(x) = $ctime(century);")


# ------------------------------------------------------------ check_time_rec

def ts(text):
    return time.mktime(datetime.datetime.strptime(
        text, "%Y-%m-%d %H:%M").timetuple())


@pytest.mark.parametrize("rec,when,expect", [
    ("20120101T000000|20121231T235959", "2012-06-01 12:00", True),
    ("20120101T000000|20121231T235959", "2013-01-01 00:01", False),
    ("20121101T000000||p30d", "2012-11-30 23:00", True),
    ("20121101T000000||p30d", "2012-12-01 00:01", False),
    ("20121101T000000", "2030-01-01 00:00", True),
    ("20121101T000000", "2012-10-01 00:00", False),
    # office hours, weekdays
    ("20240101T080000|20240101T170000||weekly|||MO,TU,WE,TH,FR",
     "2026-11-30 09:00", True),            # a Monday
    ("20240101T080000|20240101T170000||weekly|||MO,TU,WE,TH,FR",
     "2026-11-29 09:00", False),           # a Sunday
    ("20240101T080000|20240101T170000||weekly|||MO,TU,WE,TH,FR",
     "2026-11-30 17:30", False),
    # every other day
    ("20240101T000000||PT1H|daily||2", "2024-01-03 00:30", True),
    ("20240101T000000||PT1H|daily||2", "2024-01-04 00:30", False),
    # the last Friday of each month, all day
    ("20240105T000000||P1D|monthly|||-1FR", "2024-02-23 10:00", True),
    ("20240105T000000||P1D|monthly|||-1FR", "2024-02-16 10:00", False),
    # yearly on 25 December, until 2025
    ("20201225T000000||P1D|yearly|20251231T000000", "2024-12-25 18:00",
     True),
    ("20201225T000000||P1D|yearly|20251231T000000", "2026-12-25 18:00",
     False),
    ("20201225T000000||P1D|yearly|20251231T000000", "2024-12-24 18:00",
     False),
    # bymonth and bymday: the 1st and the 15th of March and April
    ("20240101T000000||P1D|monthly||||1,15|||3,4", "2025-04-15 03:00",
     True),
    ("20240101T000000||P1D|monthly||||1,15|||3,4", "2025-05-15 03:00",
     False),
])
def test_time_recurrences(rec, when, expect):
    assert timerec.parse(rec).matches(ts(when)) is expect


LUNCH = ("20210104T080000|20210104T180000||weekly|20211231T235959||"
         "MO,TU,WE,TH,FR & !20210104T120000|20210104T140000||daily")


@pytest.mark.parametrize("rec,when,expect", [
    (LUNCH, "2021-03-01 09:00", True),        # Monday morning
    (LUNCH, "2021-03-01 12:30", False),       # lunch break
    (LUNCH, "2021-03-06 09:00", False),       # Saturday
    ("(20210101T000000|20210102T000000 / 20210301T000000|20210302T000000)"
     " & !20210301T120000|20210301T130000", "2021-03-01 12:30", False),
    ("(20210101T000000|20210102T000000 / 20210301T000000|20210302T000000)"
     " & !20210301T120000|20210301T130000", "2021-01-01 12:30", True),
    (LUNCH, "2022-03-01 09:00", False),       # after until
    ("!!20210101T000000", "2021-06-01 00:00", True),
    # freq without an end: until the end of dtstart's day
    ("20210101T200000|||daily", "2021-03-01 23:59", True),
    ("20210101T200000|||daily", "2021-03-01 19:59", False),
    # (from the 5th to the end of dtstart's month: 27 days)
    ("20210105T000000|||monthly", "2021-03-31 23:00", True),
    ("20210105T000000|||monthly", "2021-03-04 12:00", False),
    ("20210105T000000|||monthly", "2021-03-05 23:00", True),
])
def test_time_recurrence_expressions(rec, when, expect):
    assert timerec.parse(rec).matches(ts(when)) is expect


def test_time_zones():
    import calendar
    utc = calendar.timegm((2021, 4, 27, 12, 0, 0))
    # King's Day in Amsterdam (UTC+2 in April) ...
    nl = "Europe/Amsterdam|20210427T000000|20210428T000000"
    assert timerec.parse(nl).matches(utc)
    assert not timerec.parse(nl).matches(
        calendar.timegm((2021, 4, 27, 22, 30, 0)))     # 00:30 on the 28th
    # ... a '/' in a zone name is part of it, a spaced one is "or"
    ny = "America/New_York|20210427T000000|20210427T010000"
    both = f"{ny} / {nl}"
    assert timerec.parse(both).matches(utc)
    assert timerec.parse(ny).matches(calendar.timegm((2021, 4, 27, 4, 30,
                                                      0)))
    # a Z time is UTC whatever the zone
    z = "Asia/Tokyo|20210427T000000Z|20210427T010000Z"
    assert timerec.parse(z).matches(calendar.timegm((2021, 4, 27, 0, 30,
                                                     0)))
    with pytest.raises(ValueError, match="timezone"):
        timerec.parse("Mars/Olympus|20210101T000000")


@pytest.mark.parametrize("bad,why", [
    ("", "dtstart"), ("2012|x", "dtstart"),
    ("20120101T000000|20110101T000000", "dtend"),
    ("20120101T000000||P", "duration"),
    ("20120101T000000|||hourly", "freq"),
    ("20120101T000000|||daily||0", "interval"),
    ("20120101T000000|||weekly|||XX", "byday"),
    ("20120101T000000|||monthly||||32", "bymday"),
    ("1|b|c|d|e|f|g|h|i|j|k|l", "too many"),
    ("(20120101T000000", "missing"), ("20120101T000000 &", "ends"),
    ("& 20120101T000000", "unexpected"),
    ("20120101T000000 20120101T000000", "unexpected"),
    ("20120101T000000 & 20120101T000000 / 20120101T000000", "mixed"),
    ("20120101T000000||||20130101T000000", "freq is missing"),
    ("20120101T000000||||||MO", "freq is missing"),
])
def test_bad_time_recurrences(bad, why):
    with pytest.raises(ValueError, match=why):
        timerec.parse(bad)


def test_check_time_rec_in_a_script(reg):
    run(reg, '$var(a) = 0; $var(b) = 0;\n'
             'if (check_time_rec("20120101T000000|20121231T235959", '
             '1341100800)) $var(a) = 1;\n'
             'if (!check_time_rec("20120101T000000|20121231T235959")) '
             '$var(b) = 1;\n'
             '$var(r) = "20120101T000000|x"; check_time_rec($var(r)); '
             '$var(rc) = $rc;')
    # a bad value at run time: the call fails, logged with its place
    assert (var("a"), var("b"), var("rc")) == (1, 1, -1)
    assert cfg.w_check_time_rec(None, "20120101T000000|x") == -2
    with pytest.raises(ScriptErrors) as ei:
        compile_(reg, '    check_time_rec("20120101T000000|||hourly");')
    assert str(ei.value).startswith("t.cfg:2:")
    assert "freq" in str(ei.value)


# ------------------------------------------------------------ $shv

def test_shv_defaults_types_and_shvset(reg):
    cfg._shvset[:] = [("a", 5), ("b", "text")]
    assert cfg.mod_init() == 0
    run(reg, '$var(a) = $shv(a); $var(b) = $shv(b); $var(n) = $shv(never);'
             '$shv(c) = "x" + $shv(b); $shv(d) = NULL;')
    assert (var("a"), var("b"), var("n")) == (5, "text", 0)
    assert cfg.shv_get("c") == "xtext" and cfg.shv_get("d") == 0
    with pytest.raises(ValueError):
        cfg.param_shvset("x=f:1")
    with pytest.raises(ValueError):
        cfg.param_shvset("x=i:abc")


def test_shv_mi_shapes_and_errors(reg):
    from opensipy import mi
    assert mi.call("shv_set", ["m1", "int", "12"]) == "OK"
    assert mi.call("shv_get", {"name": "m1"}) == {
        "VAR": {"name": "m1", "type": "integer", "value": 12}}
    assert {"name": "m1", "type": "integer", "value": 12} in \
        mi.call("shv_get")["VARs"]
    with pytest.raises(mi.MIError) as ei:
        mi.call("shv_get", {"name": "no-such"})
    assert ei.value.code == 404
    with pytest.raises(mi.MIError) as ei:
        mi.call("shv_set", ["m1", "int", "twelve"])
    assert ei.value.code == 500
    with pytest.raises(mi.MIError) as ei:
        mi.call("rand_set_prop", {"prob_proc": "x"})
    assert ei.value.code == -32602


def _shv_hammer(i):
    for _ in range(200):
        cfg.w_get_dynamic_lock(None, "k")
        v = cfg.shv_get("hammer")
        cfg.shv_set("hammer", v + 1)
        cfg.w_release_dynamic_lock(None, "k")


def test_dynamic_lock_and_shv_hammered_by_forked_processes(reg):
    cfg.shv_set("hammer", 0)
    run_children(4, _shv_hammer)
    assert cfg.shv_get("hammer") == 800


def _static_hammer(i, lk):
    for _ in range(200):
        cfg.w_get_static_lock(None, lk)
        v = cfg.shv_get("shammer")
        time.sleep(0)
        cfg.shv_set("shammer", v + 1)
        cfg.w_release_static_lock(None, lk)


def test_static_lock_hammered_by_forked_processes(reg):
    lk = cfg.fixup_static_lock("zone")
    assert cfg.fixup_static_lock("zone") is lk
    assert cfg.fixup_static_lock("other") is not lk
    cfg.shv_set("shammer", 0)
    run_children(4, lambda i: _static_hammer(i, lk))
    assert cfg.shv_get("shammer") == 800


def test_release_of_a_lock_not_held_does_nothing(reg):
    lk = cfg.fixup_static_lock("free")
    assert cfg.w_release_static_lock(None, lk) == 1
    assert cfg.w_get_static_lock(None, lk) == 1
    assert lk.owner == os.getpid()
    assert cfg.w_release_static_lock(None, lk) == 1
    assert lk.owner == 0


def test_strings_share_lock(reg):
    assert cfg.w_strings_share_lock(None, "a", "a") == 1
    pairs = [(f"key-{i}", f"other{i * 13}") for i in range(200)]
    shares = sum(cfg.w_strings_share_lock(None, a, b) == 1
                 for a, b in pairs)
    assert 0 < shares < 40          # 1/32 of 200 on average


def test_lock_pool_size_must_be_a_power_of_two(reg, monkeypatch):
    monkeypatch.setattr(cfg, "lock_pool_size", 24)
    assert cfg.mod_init() == -1


def test_config_hash(reg, tmp_path, monkeypatch):
    from opensipy import mi
    f = tmp_path / "x.cfg"
    f.write_text("route { exit; }\n")
    monkeypatch.setattr(cfg, "hash_file", str(f))
    assert cfg.mod_init() == 0
    assert len(mi.call("get_config_hash")) == 32
    assert mi.call("check_config_hash") == "OK"
    f.write_text("route { drop; }\n")
    with pytest.raises(mi.MIError) as ei:
        mi.call("check_config_hash")
    assert ei.value.code == 400
    monkeypatch.setattr(cfg, "hash_file", "")
    with pytest.raises(mi.MIError) as ei:
        mi.call("get_config_hash")
    assert ei.value.code == 404


# ------------------------------------------------------------ mi_script

def test_mi_with_named_indexed_and_inline_params(reg):
    cfg.shv_set("mi_named", 0)
    run(reg, '$avp(p) = "name"; $avp(p) = "type"; $avp(p) = "value";\n'
             '$avp(v) = "mi_named"; $avp(v) = "str"; $avp(v) = "abc";\n'
             'mi("shv_set", $var(r1), $avp(p), $avp(v)); $var(rc1) = $rc;\n'
             '$avp(i) = "mi_indexed"; $avp(i) = "int"; $avp(i) = "9";\n'
             'mi("shv_set", , $avp(i));\n'
             'mi("shv_set inline int 3");\n'
             'mi("shv_get mi_named", $var(got));')
    assert cfg.shv_get("mi_named") == "abc"
    assert cfg.shv_get("mi_indexed") == 9
    assert cfg.shv_get("inline") == 3
    assert var("r1") == '"OK"' and var("rc1") == 1
    assert json.loads(var("got")) == {
        "VAR": {"name": "mi_named", "type": "string", "value": "abc"}}


def test_mi_errors(reg):
    run(reg, 'mi("nope", $var(e1)); $var(rc1) = $rc;\n'
             'mi("shv_get never_set", $var(e2)); $var(rc2) = $rc;\n'
             '$avp(p) = "a"; $avp(p) = "b"; $avp(v) = "1";\n'
             'mi("shv_set", $var(e3), $avp(p), $avp(v)); $var(rc3) = $rc;')
    assert (var("rc1"), var("e1")) == (-32601, "Method not found")
    assert (var("rc2"), var("e2")) == (-404, "Not found")
    assert var("rc3") == -2


def test_mi_array_value(reg):
    import opensipy_modules.mi_script as mis
    m = modkit.parse(modkit.request())
    m.avps = {"n": ["statistics"], "v": ["__array(core:a core:b)"]}
    from opensipy.pvar import parse_pv
    cmd, params = mis._params(m, "get_statistics", parse_pv("$avp(n)"),
                              parse_pv("$avp(v)"))
    assert (cmd, params) == ("get_statistics",
                             {"statistics": ["core:a", "core:b"]})


def test_mi_pretty_printing(reg, monkeypatch):
    import opensipy_modules.mi_script as mis
    monkeypatch.setattr(mis, "pretty_printing", 1)
    cfg.shv_set("pp", 1)
    run(reg, 'mi("shv_get pp", $var(out));')
    assert "\n" in var("out") and json.loads(var("out"))["VAR"]["value"] \
        == 1


def _die_holding(i, lk):
    cfg.w_get_static_lock(None, lk)
    os._exit(0)                     # never released


def test_a_lock_whose_holder_died_is_recovered(reg):
    lk = cfg.fixup_static_lock("dies")
    run_children(1, lambda i: _die_holding(i, lk))
    assert cfg.w_get_static_lock(None, lk) == 1
    assert lk.owner == os.getpid()
    cfg.w_release_static_lock(None, lk)


def test_shm_and_pkg_status_log_figures(reg, capsys):
    from opensipy import log
    saved = (log.state.level, log.state.stderr, log.state.syslog)
    log.state.level, log.state.stderr, log.state.syslog = log.L_NOTICE, \
        True, False
    try:
        run(reg, "shm_status(); pkg_status();")
    finally:
        log.state.level, log.state.stderr, log.state.syslog = saved
    err = capsys.readouterr().err
    assert "shm status: " in err and "used_size=" in err
    assert "largest_free_block=" in err
    assert f"pkg status: pid={os.getpid()} rss=" in err


def test_abort_kills_the_process_with_sigabrt(reg):
    import signal
    cs = compile_(reg, "    abort();")
    pid = os.fork()
    if pid == 0:                        # pragma: no cover (the child)
        try:
            import faulthandler         # no tracebacks from pytest's
            faulthandler.disable()      # handler on SIGABRT
            os.close(2)
            cs.request_route(modkit.parse(modkit.request()))
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGABRT
