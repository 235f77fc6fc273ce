"""loadmodule / modparam / exports checks / dependency order / module APIs,
without forking: the loader is driven the way the attendant drives it."""
import textwrap

import pytest

from opensipy import modloader, sr_module
from opensipy.modloader import (LoadedModule, Registry, load_api, load_module,
                                set_mod_param)
from opensipy.sr_module import (CMD_PARAM_INT, CMD_PARAM_OPT, CMD_PARAM_STR,
                                DEP_ABORT, DEP_REVERSE, DEP_SILENT, DEP_WARN,
                                INT_PARAM, REQUEST_ROUTE, STR_PARAM,
                                USE_FUNC_PARAM, CmdExport, CmdParam,
                                DepExport, ModuleDep, ModuleError,
                                ModuleExports, ParamExport)

LOC = ("t.cfg", 7, 1)


def make_module(root, name, body):
    d = root / name
    d.mkdir(parents=True)
    (d / "__init__.py").write_text(textwrap.dedent(body))
    return d


def test_loadmodule_finds_an_installed_module_with_or_without_so():
    for spec in ("example.so", "example"):
        reg = Registry()
        lm = load_module(reg, spec)
        assert lm.name == "example" and reg.get("example") is lm


def test_loadmodule_searches_mpath_first(tmp_path):
    make_module(tmp_path, "example", """
        from opensipy.sr_module import ModuleExports
        exports = ModuleExports(name="example")
        WHERE = "mpath"
    """)
    lm = load_module(Registry(), "example.so", str(tmp_path))
    assert lm.pymod.WHERE == "mpath"


def test_loadmodule_by_path(tmp_path):
    d = make_module(tmp_path, "mymod", """
        from opensipy.sr_module import ModuleExports
        exports = ModuleExports(name="mymod")
    """)
    assert load_module(Registry(), str(d) + ".so").name == "mymod"


def test_unknown_module_is_an_error_with_location():
    with pytest.raises(ModuleError) as e:
        load_module(Registry(), "nosuch.so", "", LOC)
    assert "nosuch" in str(e.value) and e.value.loc == LOC


def test_loading_a_module_twice_is_an_error():
    reg = Registry()
    load_module(reg, "example.so")
    with pytest.raises(ModuleError, match="loaded twice"):
        load_module(reg, "example")


def test_missing_python_dependency_names_the_extra(tmp_path):
    make_module(tmp_path, "needsdb", """
        from opensipy.sr_module import ModuleExports, DepExport
        exports = ModuleExports(name="needsdb", deps=DepExport(
            python=[("surely_not_installed_pkg", "postgres")]))
    """)
    with pytest.raises(ModuleError) as e:
        load_module(Registry(), "needsdb", str(tmp_path), LOC)
    assert "surely_not_installed_pkg" in str(e.value)
    assert "opensipy[postgres]" in str(e.value)


def test_import_time_missing_package_is_a_clear_error(tmp_path):
    make_module(tmp_path, "eager", """
        import surely_not_installed_pkg
    """)
    with pytest.raises(ModuleError, match="surely_not_installed_pkg"):
        load_module(Registry(), "eager", str(tmp_path))


@pytest.mark.parametrize("body,msg", [
    ("exports = 3", "not a ModuleExports"),
    ("exports = ModuleExports(name='badver', version='0.0.0')", "version"),
    ("exports = ModuleExports(name='badver', cmds=[CmdExport('f', len, "
     "[CmdParam(CMD_PARAM_INT)] * 9)])", "at most 8"),
    ("exports = ModuleExports(name='badver', cmds=[CmdExport('f', len, "
     "[CmdParam(CMD_PARAM_INT | CMD_PARAM_STR)])])", "exactly one"),
    ("exports = ModuleExports(name='badver', params=[ParamExport('p', "
     "INT_PARAM | USE_FUNC_PARAM, 'notcallable')])", "needs a callable"),
    ("exports = ModuleExports(name='badver', cmds=["
     "CmdExport('f', len, [CmdParam(CMD_PARAM_INT)]),"
     "CmdExport('f', len, [CmdParam(CMD_PARAM_INT|CMD_PARAM_OPT)])])",
     "overlapping"),
    ("exports = ModuleExports(name='other')", "exports a module named"),
])
def test_bad_exports_fail_at_load(tmp_path, body, msg):
    make_module(tmp_path, "badver", "from opensipy.sr_module import *\n"
                + body + "\n")
    with pytest.raises(ModuleError, match=msg):
        load_module(Registry(), "badver", str(tmp_path))


def _params_module(tmp_path):
    make_module(tmp_path, "pm", """
        from opensipy.sr_module import *
        count = 0
        name = "x"
        either = None
        seen = []
        def add(v):
            if v == "bad":
                return -1
            seen.append(v)
            return 0
        exports = ModuleExports(name="pm", params=[
            ParamExport("count", INT_PARAM, "count"),
            ParamExport("name", STR_PARAM, "name"),
            ParamExport("either", INT_PARAM | STR_PARAM, "either"),
            ParamExport("item", STR_PARAM | USE_FUNC_PARAM, add),
        ])
    """)
    reg = Registry()
    load_module(reg, "pm", str(tmp_path))
    return reg, reg.get("pm").pymod


@pytest.mark.parametrize("value,kind,expected", [
    (10, "int", 10), ("0x1f", "str", 31), ("010", "str", 8),
    ("yes", "id", 1), ("off", "id", 0), (-3, "int", -3),
])
def test_int_modparam_values(tmp_path, value, kind, expected):
    reg, mod = _params_module(tmp_path)
    set_mod_param(reg, "pm", "count", value, kind, LOC)
    assert mod.count == expected


def test_str_and_mixed_modparam_values(tmp_path):
    reg, mod = _params_module(tmp_path)
    set_mod_param(reg, "PM", "name", "hello", "str", LOC)
    assert mod.name == "hello"
    set_mod_param(reg, "pm", "either", 5, "int", LOC)
    assert mod.either == 5
    set_mod_param(reg, "pm", "either", "text", "str", LOC)
    assert mod.either == "text"


def test_use_func_param_runs_for_every_occurrence(tmp_path):
    reg, mod = _params_module(tmp_path)
    for v in ("a", "b", "c"):
        set_mod_param(reg, "pm", "item", v, "str", LOC)
    assert mod.seen == ["a", "b", "c"]
    with pytest.raises(ModuleError, match="rejected") as e:
        set_mod_param(reg, "pm", "item", "bad", "str", LOC)
    assert e.value.loc == LOC


@pytest.mark.parametrize("module,param,value,kind,msg", [
    ("pm", "count", "three", "str", "expects an integer"),
    ("pm", "name", 5, "int", "expects a string"),
    ("pm", "nosuch", 1, "int", "no parameter 'nosuch'"),
    ("nomod", "count", 1, "int", "no loaded module matches"),
    ("pm(", "count", 1, "int", "bad module regex"),
])
def test_bad_modparams_are_errors_with_location(tmp_path, module, param,
                                                value, kind, msg):
    reg, _ = _params_module(tmp_path)
    with pytest.raises(ModuleError, match=msg) as e:
        set_mod_param(reg, module, param, value, kind, LOC)
    assert e.value.loc == LOC


def test_modparam_before_loadmodule_says_so(tmp_path):
    with pytest.raises(ModuleError, match="comes before the loadmodule"):
        set_mod_param(Registry(), "usrloc|registrar", "p", 1, "int", LOC,
                      later_modules=["registrar"])


def test_modparam_regex_sets_every_matching_module(tmp_path):
    for n in ("aa", "ab"):
        make_module(tmp_path, n, f"""
            from opensipy.sr_module import *
            v = 0
            exports = ModuleExports(name="{n}", params=[
                ParamExport("v", INT_PARAM, "v")])
        """)
    reg = Registry()
    load_module(reg, "aa", str(tmp_path))
    load_module(reg, "ab", str(tmp_path))
    assert set_mod_param(reg, "aa|AB", "v", 4, "int", LOC) == 2
    assert reg.get("aa").pymod.v == 4 and reg.get("ab").pymod.v == 4
    assert set_mod_param(reg, "a.", "v", 5, "int", LOC) == 2
    # the regex matches whole names only
    with pytest.raises(ModuleError):
        set_mod_param(reg, "a", "v", 1, "int", LOC)


def _mod(name, deps=()):
    return LoadedModule(name, ModuleExports(
        name=name, deps=DepExport(md=[ModuleDep(n, t) for n, t in deps])))


def test_init_order_follows_dependencies():
    reg = Registry()
    reg.add(_mod("registrar", [("usrloc", DEP_ABORT)]))
    reg.add(_mod("tm"))
    reg.add(_mod("usrloc", [("tm", DEP_SILENT)]))
    reg.add(_mod("first", [("tm", DEP_REVERSE)]))
    order = [m.name for m in reg.init_order()]
    assert order.index("usrloc") < order.index("registrar")
    assert order.index("tm") < order.index("usrloc")
    assert order.index("first") < order.index("tm")


def test_missing_abort_dependency_is_an_error_and_warn_is_not():
    reg = Registry()
    reg.add(_mod("registrar", [("usrloc", DEP_ABORT), ("nat", DEP_WARN),
                               ("opt", DEP_SILENT)]))
    errors = reg.check_deps()
    assert errors == [(None, "module 'registrar' depends on module "
                             "'usrloc', which is not loaded")]


def test_dependency_cycle_is_reported():
    reg = Registry()
    reg.add(_mod("a", [("b", DEP_ABORT)]))
    reg.add(_mod("b", [("a", DEP_ABORT)]))
    with pytest.raises(ModuleError, match="cycle"):
        reg.init_order()


def test_function_overloads_and_clashes():
    f = CmdExport("f", lambda m: 1, [], REQUEST_ROUTE)
    f2 = CmdExport("f", lambda m, a, b: 1,
                   [CmdParam(CMD_PARAM_INT), CmdParam(CMD_PARAM_STR)],
                   REQUEST_ROUTE)
    reg = Registry()
    reg.add(LoadedModule("m1", ModuleExports(name="m1", cmds=[f, f2])))
    assert [c.max_args for _, c in reg.find_cmds("f")] == [0, 2]
    clash = CmdExport("f", lambda m, a: 1,
                      [CmdParam(CMD_PARAM_INT), CmdParam(CMD_PARAM_INT |
                                                          CMD_PARAM_OPT)])
    with pytest.raises(ModuleError, match="clashes"):
        reg.add(LoadedModule("m2", ModuleExports(name="m2", cmds=[clash])))


def test_load_api_binds_a_loaded_module_and_fails_clearly_otherwise(tmp_path):
    make_module(tmp_path, "provider", """
        from opensipy.sr_module import ModuleExports
        class API:
            def hello(self):
                return "hi"
        def load_api():
            return API()
        exports = ModuleExports(name="provider")
    """)
    reg = Registry()
    old = modloader.registry
    modloader.registry = reg
    try:
        with pytest.raises(ModuleError, match="not loaded"):
            load_api("provider", needed_by="consumer")
        load_module(reg, "provider", str(tmp_path))
        assert load_api("provider").hello() == "hi"
        load_module(reg, "example")
        with pytest.raises(ModuleError, match="publishes no API"):
            load_api("example")
    finally:
        modloader.registry = old
