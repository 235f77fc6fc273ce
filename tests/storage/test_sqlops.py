"""sqlops on both engines: sql_query into AVPs (several rows, NULLs, empty
result -2, a statement without rows 1, a bad query -1), sql_query_one into
any variables, db_id selecting the URL, the async forms (inline on sqlite,
suspended on the query's socket on PostgreSQL), and the config errors."""
import os
import select
import sys
import time

import pytest

from opensipy import async_engine, db, modloader, pvar
from opensipy.core_cmds import core_exports
from opensipy.script import ScriptErrors, compile_script, parse_string

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "modules"))
import modkit  # noqa: E402
import opensipy_modules.db_postgres as db_postgres  # noqa: E402
import opensipy_modules.db_sqlite as db_sqlite  # noqa: E402
import opensipy_modules.sqlops as sqlops  # noqa: E402


@pytest.fixture
def reg(db_url, tmp_path):
    """The core and sqlops with db_url as id 0 and a second SQLite
    database as id 2; table t filled on both."""
    saved = modloader.registry
    r = modloader.Registry()
    r.add(modloader.LoadedModule("core", core_exports))
    for name, mod in (("db_sqlite", db_sqlite), ("db_postgres", db_postgres),
                      ("sqlops", sqlops)):
        r.add(modloader.LoadedModule(name, mod.exports, mod))
    modloader.registry = r
    sqlops._urls.clear()
    sqlops._dbf.clear()
    sqlops._cons.clear()
    other = f"sqlite://{tmp_path}/other.db"
    sqlops.param_db_url(db_url)
    sqlops.param_db_url(f"2 {other}")
    for url, rows in ((db_url, [(1, "one", None), (2, "two", "x")]),
                      (other, [(7, "seven", None)])):
        con = db.db_bind_mod(url).init(url)
        con.raw_query("CREATE TABLE t (id INTEGER, name VARCHAR(20), "
                      "extra VARCHAR(20))")
        for row in rows:
            con.raw_query("INSERT INTO t VALUES (?, ?, ?)", row)
        con.close()
    assert sqlops.mod_init() == 0
    pvar.script_vars.clear()
    async_engine._reset_for_tests()
    yield r
    for con in sqlops._cons.values():
        con.close()
    sqlops._cons.clear()
    modloader.registry = saved
    async_engine._reset_for_tests()


def run(reg, body, extra=""):
    cs = compile_script(parse_string("route {\n" + body + "\n}\n" + extra,
                                     "t.cfg"), reg, activate=True)
    m = modkit.parse(modkit.request())
    m.avps = {}
    cs.request_route(m)
    return m


def test_sql_query_into_avps(reg):
    m = run(reg, 'sql_query("SELECT id, name, extra FROM t ORDER BY id", '
                 '"$avp(id);$avp(name);$avp(extra)"); $var(rc) = $rc;')
    assert pvar.script_vars["rc"] == 1
    # one AVP per row, the last row on top (as AVPs are added in order)
    assert m.avps["id"] == [2, 1]
    assert m.avps["name"] == ["two", "one"]
    assert m.avps["extra"] == ["x", "<null>"]


def test_default_avp_names_empty_result_and_errors(reg):
    m = run(reg, 'sql_query("SELECT name FROM t WHERE id = 1");\n'
                 'sql_query("SELECT name FROM t WHERE id = 99"); '
                 '$var(empty) = $rc;\n'
                 'sql_query("DELETE FROM t WHERE id = 99"); '
                 '$var(del) = $rc;\n'
                 'sql_query("SELECT nope FROM no_table"); $var(bad) = $rc;')
    assert m.avps["1"] == ["one"]
    v = pvar.script_vars
    assert (v["empty"], v["del"], v["bad"]) == (-2, 1, -1)


def test_sql_query_one_and_db_id(reg):
    run(reg, 'sql_query_one("SELECT name, extra FROM t WHERE id = 1", '
             '"$var(n);$var(e)");\n'
             'sql_query_one("SELECT name FROM t", "$var(o)", 2);\n'
             '$var(id) = 2; sql_query_one("SELECT id FROM t", "$var(i)", '
             '$var(id));\n'
             'sql_query_one("SELECT id, name FROM t", "$var(x)"); '
             '$var(mismatch) = $rc;\n'
             'sql_query_one("SELECT 1", "$var(z)", 5); $var(noid) = $rc;')
    v = pvar.script_vars
    assert v["n"] == "one" and v.get("e") is None    # NULL stays NULL
    assert v["o"] == "seven" and v["i"] == 7
    assert v["mismatch"] == -1 and v["noid"] == -1


@pytest.mark.parametrize("call,what", [
    ('sql_query("SELECT 1", "$var(a)");', "not an $avp"),
    ('sql_query("SELECT 1", "$rm");', "read-only"),
    ('sql_query("SELECT 1", "$avp(a");', "bad variable"),
])
def test_result_variables_are_checked_when_the_script_loads(reg, call,
                                                             what):
    with pytest.raises(ScriptErrors) as ei:
        run(reg, "    " + call)
    assert str(ei.value).startswith("t.cfg:2:")
    assert what in str(ei.value)


def test_db_url_parameter_errors():
    saved = dict(sqlops._urls)
    try:
        sqlops._urls.clear()
        sqlops.param_db_url("3 sqlite:///tmp/x.db")
        with pytest.raises(ValueError, match="set twice"):
            sqlops.param_db_url("3 sqlite:///tmp/y.db")
        with pytest.raises(ValueError, match="no URL"):
            sqlops.param_db_url("  ")
        sqlops._urls.clear()
        assert sqlops.mod_init() == -1                # no db_url at all
    finally:
        sqlops._urls.clear()
        sqlops._urls.update(saved)


ASYNC = """
route[done] {
    $var(rc) = $rc;
    $var(name) = $avp(name);
}
"""


def test_async_sql_query(reg, db_url):
    if db_url.startswith("sqlite"):
        # no async queries on SQLite: the resume route follows at once
        m = run(reg, 'async(sql_query("SELECT name FROM t WHERE id = 2", '
                     '"$avp(name)"), done);', ASYNC)
        assert pvar.script_vars["name"] == "two"
        assert async_engine.tasks == [] and m.avps["name"] == ["two"]
        return
    async_engine.reactor = True
    m = modkit.parse(modkit.request())
    m.avps = {}
    cs = compile_script(parse_string(
        'route {\n async(sql_query("SELECT name, pg_sleep(0.2)::text AS z '
        'FROM t WHERE id = 2", "$avp(name);$avp(z)"), done);\n}\n' + ASYNC,
        "t.cfg"), reg, activate=True)
    cs.request_route(m)
    assert m.async_suspended and "name" not in m.avps
    fds = async_engine.fds()
    assert len(fds) == 1
    deadline = time.monotonic() + 5
    while async_engine.tasks:
        assert time.monotonic() < deadline
        ready, _, _ = select.select(fds, [], [], 1)
        async_engine.run_ready(ready)
    assert pvar.script_vars["rc"] == 1
    assert pvar.script_vars["name"] == "two" and m.avps["name"] == ["two"]


def test_async_query_timeout_cancels(reg, db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite runs queries at once")
    async_engine.reactor = True
    m = modkit.parse(modkit.request())
    m.avps = {}
    cs = compile_script(parse_string(
        'route {\n async(sql_query("SELECT pg_sleep(1.5)::text", '
        '"$avp(name)"), done, 1);\n}\n' + ASYNC, "t.cfg"), reg,
        activate=True)
    cs.request_route(m)
    async_engine.tasks[0].expires = time.monotonic()
    async_engine.run_ready()
    assert pvar.script_vars["rc"] == -1
    # the connection pool is usable again afterwards
    run(reg, 'sql_query_one("SELECT name FROM t WHERE id = 1", '
             '"$var(after)");')
    assert pvar.script_vars["after"] == "one"
