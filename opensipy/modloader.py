"""Loading modules: ``loadmodule``, ``modparam``, dependency order, module APIs.

``loadmodule "tm.so"`` and ``loadmodule "tm"`` both name the module ``tm``.
The loader looks for a package folder ``tm/`` (with ``__init__.py``) in each
``mpath`` directory, then among the modules installed with opensipy (the
package ``opensipy_modules``).  An absolute or relative path names the folder
directly.  The package must bind ``exports`` to a ``ModuleExports``; the
declaration is checked at once (:func:`opensipy.sr_module.check_exports`).

A module that needs a Python package declares it in
``exports.deps.python`` as ``(import_name, extra)`` and imports it lazily; a
missing one is a load error naming the extra (``pip install opensipy[extra]``).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import log
from .sr_module import (DEP_ABORT, DEP_REVERSE, DEP_SILENT, DEP_WARN,
                        INT_PARAM, STR_PARAM, USE_FUNC_PARAM, CmdExport,
                        ModuleError, ModuleExports, PVExport, check_exports)
from .config import BOOL_WORDS, parse_int

BUILTIN_PACKAGE = "opensipy_modules"
EXT_PACKAGE = "opensipy_ext_modules"


def _source_tree_modules() -> None:
    """Running from a source tree without an install: the modules/ folder
    beside the opensipy package serves as the installed modules."""
    if importlib.util.find_spec(BUILTIN_PACKAGE) is not None:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(os.path.dirname(here), "modules")
    if not os.path.isfile(os.path.join(folder, "__init__.py")):
        return
    spec = importlib.util.spec_from_file_location(
        BUILTIN_PACKAGE, os.path.join(folder, "__init__.py"),
        submodule_search_locations=[folder])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[BUILTIN_PACKAGE] = pkg
    spec.loader.exec_module(pkg)


_source_tree_modules()


@dataclass
class LoadedModule:
    name: str
    exports: ModuleExports
    pymod: Any = None
    path: Optional[str] = None
    loc: Optional[tuple] = None
    stats: Dict[str, Any] = field(default_factory=dict)


class Registry:
    """The modules a script loaded, in load order, and lookups over them."""

    def __init__(self):
        self.modules: List[LoadedModule] = []
        self._by_name: Dict[str, LoadedModule] = {}
        self._cmds: Dict[str, List[Tuple[LoadedModule, CmdExport]]] = {}
        self._pvs: Dict[str, PVExport] = {}
        self._acmds: Dict[str, List[Tuple[LoadedModule, CmdExport]]] = {}

    def add(self, lm: LoadedModule) -> LoadedModule:
        if lm.name in self._by_name:
            raise ModuleError(f"module '{lm.name}' is loaded twice", lm.loc)
        check_exports(lm.exports, lm.path or lm.name)
        for c in lm.exports.cmds:
            for olm, oc in self._cmds.get(c.name, ()):
                if oc.min_args <= c.max_args and c.min_args <= oc.max_args:
                    raise ModuleError(
                        f"function {c.name}() of module '{lm.name}' clashes "
                        f"with the one of module '{olm.name}'", lm.loc)
        for pv in lm.exports.items:
            if pv.name in self._pvs:
                raise ModuleError(f"pseudo-variable ${pv.name} of module "
                                  f"'{lm.name}' is already defined", lm.loc)
        self.modules.append(lm)
        self._by_name[lm.name] = lm
        for c in lm.exports.cmds:
            self._cmds.setdefault(c.name, []).append((lm, c))
        for pv in lm.exports.items:
            self._pvs[pv.name] = pv
        for c in lm.exports.acmds:
            self._acmds.setdefault(c.name, []).append((lm, c))
        return lm

    def get(self, name: str) -> Optional[LoadedModule]:
        return self._by_name.get(name)

    def is_loaded(self, name: str) -> bool:
        return name in self._by_name

    def find_cmds(self, name: str) -> List[Tuple[LoadedModule, CmdExport]]:
        return list(self._cmds.get(name, ()))

    def find_acmds(self, name: str) -> List[Tuple[LoadedModule, CmdExport]]:
        """The async forms of function ``name`` (for async()/launch())."""
        return list(self._acmds.get(name, ()))

    def find_pv(self, name: str) -> Optional[PVExport]:
        return self._pvs.get(name)

    def match(self, regex: str) -> List[LoadedModule]:
        """Modules whose name matches a modparam module regex (whole name,
        case-insensitive, as OpenSIPS anchors it)."""
        try:
            r = re.compile(r"(?:%s)\Z" % regex, re.I)
        except re.error as e:
            raise ValueError(f"bad module regex {regex!r}: {e}") from None
        return [m for m in self.modules if r.match(m.name)]

    def check_deps(self) -> List[Tuple[Optional[tuple], str]]:
        """(loc of the loadmodule, error) for every missing DEP_ABORT
        dependency (missing DEP_WARN ones are logged)."""
        errors = []
        for m in self.modules:
            for d in m.exports.deps.md:
                if d.mod_name in self._by_name:
                    continue
                if d.type & DEP_ABORT:
                    errors.append((m.loc, f"module '{m.name}' depends on "
                                          f"module '{d.mod_name}', which is "
                                          f"not loaded"))
                elif d.type & DEP_WARN:
                    log.LM_WARN(f"module '{m.name}' works better with module "
                                f"'{d.mod_name}', which is not loaded")
        return errors

    def init_order(self) -> List[LoadedModule]:
        """Load order, rearranged so that a module comes after the modules it
        depends on (before them with DEP_REVERSE).  A cycle is an error."""
        after: Dict[str, set] = {m.name: set() for m in self.modules}
        for m in self.modules:
            for d in m.exports.deps.md:
                if d.mod_name not in self._by_name:
                    continue
                if d.type & DEP_REVERSE:
                    after[d.mod_name].add(m.name)
                else:
                    after[m.name].add(d.mod_name)
        order: List[LoadedModule] = []
        done: set = set()
        visiting: set = set()

        def visit(m: LoadedModule, chain):
            if m.name in done:
                return
            if m.name in visiting:
                raise ModuleError("module dependency cycle: "
                                  + " -> ".join(chain + [m.name]))
            visiting.add(m.name)
            for dep in sorted(after[m.name],
                              key=lambda n: self.modules.index(self._by_name[n])):
                visit(self._by_name[dep], chain + [m.name])
            visiting.discard(m.name)
            done.add(m.name)
            order.append(m)

        for m in self.modules:
            visit(m, [])
        return order


# The registry of the running server (set by the attendant), so that a
# module's mod_init can bind another module's API.
registry: Optional[Registry] = None


def load_api(name: str, needed_by: str = "") -> Any:
    """Bind another module's API (OpenSIPS's ``load_tm_api()`` pattern).

    The module publishes it with a ``load_api()`` function in its package.
    Call this from mod_init; a module that is not loaded is a clear error."""
    who = f" (needed by '{needed_by}')" if needed_by else ""
    lm = registry.get(name) if registry else None
    if lm is None:
        raise ModuleError(f"cannot bind the API of module '{name}'{who}: "
                          f"it is not loaded (add loadmodule \"{name}.so\")")
    fn = getattr(lm.pymod, "load_api", None)
    if fn is None:
        raise ModuleError(f"module '{name}' publishes no API{who}")
    return fn()


def module_name_of(spec: str) -> str:
    base = os.path.basename(spec.rstrip("/"))
    if base.endswith(".so"):
        base = base[:-3]
    elif base.endswith(".py"):
        base = base[:-3]
    return base


def find_module(spec: str, mpath: str = "") -> Tuple[str, Optional[str]]:
    """Return (module name, folder) for a loadmodule argument.  folder is
    None for a module shipped with opensipy (imported as a package)."""
    name = module_name_of(spec)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ModuleError(f"bad module name {name!r} in loadmodule \"{spec}\"")
    candidates = []
    if os.sep in spec or spec.startswith("."):
        d = spec[:-3] if spec.endswith(".so") else spec
        candidates.append(d)
        candidates.append(os.path.join(os.path.dirname(d), name))
    else:
        for p in [x for x in mpath.split(":") if x]:
            candidates.append(os.path.join(p, name))
    for c in candidates:
        if os.path.isfile(os.path.join(c, "__init__.py")):
            return name, os.path.abspath(c)
    if os.sep in spec and not spec.startswith("."):
        raise ModuleError(f"module folder not found for \"{spec}\"")
    if importlib.util.find_spec(f"{BUILTIN_PACKAGE}.{name}") is not None:
        return name, None
    where = f" (searched mpath {mpath!r} and the installed modules)" \
        if mpath else " (not an installed module)"
    raise ModuleError(f"module '{name}' not found{where}")


def import_module(name: str, folder: Optional[str]):
    if folder is None:
        return importlib.import_module(f"{BUILTIN_PACKAGE}.{name}")
    if EXT_PACKAGE not in sys.modules:
        pkg = importlib.util.module_from_spec(
            importlib.machinery.ModuleSpec(EXT_PACKAGE, None, is_package=True))
        pkg.__path__ = []
        sys.modules[EXT_PACKAGE] = pkg
    full = f"{EXT_PACKAGE}.{name}"
    spec = importlib.util.spec_from_file_location(
        full, os.path.join(folder, "__init__.py"),
        submodule_search_locations=[folder])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[full] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[full]
        raise
    return mod


def load_module(reg: Registry, spec: str, mpath: str = "",
                loc=None) -> LoadedModule:
    """``loadmodule``: find, import, check and register one module."""
    try:
        name, folder = find_module(spec, mpath)
    except ModuleError as e:
        e.loc = loc
        raise
    if reg.is_loaded(name):
        raise ModuleError(f"module '{name}' is loaded twice", loc)
    try:
        pymod = import_module(name, folder)
    except ModuleNotFoundError as e:
        raise ModuleError(f"module '{name}' cannot be loaded: Python package "
                          f"'{e.name}' is missing", loc) from None
    except Exception as e:  # a broken module must not take the core down
        raise ModuleError(f"module '{name}' failed to import: "
                          f"{type(e).__name__}: {e}", loc) from None
    exp = getattr(pymod, "exports", None)
    if exp is None:
        raise ModuleError(f"module '{name}' has no 'exports'", loc)
    try:
        check_exports(exp, folder or f"{BUILTIN_PACKAGE}.{name}")
    except ModuleError as e:
        e.loc = loc
        raise
    if exp.name != name:
        raise ModuleError(f"module folder '{name}' exports a module named "
                          f"'{exp.name}'", loc)
    for import_name, extra in exp.deps.python:
        if importlib.util.find_spec(import_name) is None:
            raise ModuleError(
                f"module '{name}' needs the Python package '{import_name}': "
                f"install it with pip install 'opensipy[{extra}]'", loc)
    lm = LoadedModule(name, exp, pymod, folder, loc)
    try:
        reg.add(lm)
    except ModuleError as e:
        e.loc = loc
        raise
    return lm


def convert_param(ptype: int, value: Any, kind: str):
    """Check/convert a modparam value for a parameter of type ptype.
    kind is the script token kind: 'int', 'str' or 'id' (a bareword)."""
    base = ptype & (INT_PARAM | STR_PARAM)
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if base & INT_PARAM:
            return value
        raise ValueError("expects a string, got an integer")
    s = str(value)
    if base & STR_PARAM and kind != "id":
        return s
    if base & INT_PARAM:
        low = s.strip().lower()
        if low in BOOL_WORDS:
            return int(BOOL_WORDS[low])
        if kind == "id":
            raise ValueError(f"expects an integer, got {s!r}")
        try:
            return parse_int(s)
        except ValueError:
            if base & STR_PARAM:
                return s
            raise ValueError(f"expects an integer, got string {s!r}") \
                from None
    return s


def set_mod_param(reg: Registry, module_regex: str, param: str, value: Any,
                  kind: str = "str", loc=None,
                  later_modules: Optional[List[str]] = None) -> int:
    """``modparam``: set param in every loaded module matching the regex.
    Returns how many modules took it; raises ModuleError otherwise."""
    try:
        mods = reg.match(module_regex)
    except ValueError as e:
        raise ModuleError(f"modparam: {e}", loc) from None
    if not mods:
        if later_modules:
            r = re.compile(r"(?:%s)\Z" % module_regex, re.I)
            if any(r.match(n) for n in later_modules):
                raise ModuleError(
                    f"modparam(\"{module_regex}\", \"{param}\") comes before "
                    f"the loadmodule of that module", loc)
        raise ModuleError(f"modparam: no loaded module matches "
                          f"\"{module_regex}\"", loc)
    count = 0
    for m in mods:
        pe = next((p for p in m.exports.params if p.name == param), None)
        if pe is None:
            continue
        try:
            v = convert_param(pe.type, value, kind)
        except ValueError as e:
            raise ModuleError(f"modparam(\"{module_regex}\", \"{param}\"): "
                              f"parameter of module '{m.name}' {e}",
                              loc) from None
        if pe.type & USE_FUNC_PARAM:
            try:
                rc = pe.param_pointer(v)
            except Exception as e:
                raise ModuleError(
                    f"modparam(\"{m.name}\", \"{param}\"): {e}", loc) from None
            if rc is not None and rc < 0:
                raise ModuleError(f"modparam(\"{m.name}\", \"{param}\"): "
                                  f"value {value!r} rejected", loc)
        else:
            setattr(m.pymod, pe.param_pointer, v)
        count += 1
    if not count:
        names = ", ".join(m.name for m in mods)
        raise ModuleError(f"modparam: module '{names}' has no parameter "
                          f"'{param}'", loc)
    return count
