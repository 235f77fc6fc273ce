"""The module interface: what a module exports, under the names of the
OpenSIPS module-development manual.

A module is a Python package whose ``__init__.py`` binds ``exports`` to a
:class:`ModuleExports`.  The core reads that declaration when the script says
``loadmodule "name.so"`` and checks its shape at once (pluggy's lesson: a bad
declaration fails at load, with a precise message, never while traffic flows).

Mapping to the manual (``sr_module.h`` / ``cmds.h``):

========================  ==============================================
``struct module_exports``  :class:`ModuleExports`
``cmd_export_t``           :class:`CmdExport` (params: :class:`CmdParam`)
``param_export_t``         :class:`ParamExport`
``stat_export_t``          :class:`StatExport`
``mi_export_t``            :class:`MIExport` (recipes: :class:`MIRecipe`)
``pv_export_t``            :class:`PVExport`
``proc_export_t``          :class:`ProcExport`
``dep_export_t``           :class:`DepExport` (:class:`ModuleDep`)
events (``evi_publish_event`` in mod_init)  :class:`EventExport`
========================  ==============================================
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from . import __version__

# --- route types (route_struct.h) -----------------------------------------
REQUEST_ROUTE = 1
FAILURE_ROUTE = 2
ONREPLY_ROUTE = 4
BRANCH_ROUTE = 8
ERROR_ROUTE = 16
LOCAL_ROUTE = 32
STARTUP_ROUTE = 64
TIMER_ROUTE = 128
EVENT_ROUTE = 256
ALL_ROUTES = (REQUEST_ROUTE | FAILURE_ROUTE | ONREPLY_ROUTE | BRANCH_ROUTE
              | ERROR_ROUTE | LOCAL_ROUTE | STARTUP_ROUTE | TIMER_ROUTE
              | EVENT_ROUTE)

ROUTE_TYPE_NAMES = {
    REQUEST_ROUTE: "request_route", FAILURE_ROUTE: "failure_route",
    ONREPLY_ROUTE: "onreply_route", BRANCH_ROUTE: "branch_route",
    ERROR_ROUTE: "error_route", LOCAL_ROUTE: "local_route",
    STARTUP_ROUTE: "startup_route", TIMER_ROUTE: "timer_route",
    EVENT_ROUTE: "event_route",
}

# --- script function parameter kinds (cmds.h) ------------------------------
CMD_PARAM_INT = 1 << 0        # integer (or a variable holding one)
CMD_PARAM_STR = 1 << 1        # string (formatted with pvars unless NO_EXPAND)
CMD_PARAM_VAR = 1 << 2        # a pseudo-variable spec (the variable itself)
CMD_PARAM_REGEX = 1 << 3      # regular expression (constant or variable)
CMD_PARAM_OPT = 1 << 4        # the parameter may be omitted
CMD_PARAM_FIX_NULL = 1 << 5   # run the fixup even when the parameter is omitted
CMD_PARAM_NO_EXPAND = 1 << 6  # keep a string as written, no pvar expansion
CMD_PARAM_STATIC = 1 << 7     # constants only: no variable, no formatted string
# opensipy extension (no OpenSIPS flag): in a string that mixes text and
# variables, a variable's value holding CR, LF or NUL refuses the call (-1,
# logged): header templates such as "X-User: $fU\r\n" cannot grow lines;
# the parameter's fixup only validates, so -c runs it on constants too
CMD_PARAM_NO_CRLF = 1 << 8
MAX_CMD_PARAMS = 8

# --- module parameters (sr_module.h) ---------------------------------------
STR_PARAM = 1 << 0
INT_PARAM = 1 << 1
USE_FUNC_PARAM = 1 << 31
PARAM_TYPE_MASK = STR_PARAM | INT_PARAM

# --- statistics (statistics.h) ---------------------------------------------
STAT_NO_RESET = 1
STAT_NO_SYNC = 2
STAT_SHM_NAME = 4
STAT_IS_FUNC = 8

# --- processes (sr_module.h, pt.h) -----------------------------------------
PROC_FLAG_INITCHILD = 1 << 0
PROC_FLAG_HAS_IPC = 1 << 1
PROC_FLAG_NEEDS_SCRIPT = 1 << 2

PROC_MAIN = 0
PROC_TIMER = -1
PROC_MODULE = -2
PROC_TCP_MAIN = -4
PROC_BIN = -8

# --- dependencies (sr_module_deps.h) ---------------------------------------
DEP_SILENT = 1 << 0   # load order only; a missing module is fine
DEP_WARN = 1 << 1     # a missing module is logged
DEP_ABORT = 1 << 2    # a missing module stops the start
DEP_REVERSE = 1 << 3  # this module must be initialised *after* the other

# --- MI ----------------------------------------------------------------------
MI_ASYNC_RPL_FLAG = 1 << 0
MI_NAMED_PARAMS_ONLY = 1 << 1
MAX_MI_RECIPES = 10

MODULE_VERSION = __version__


class ModuleError(Exception):
    """A module's declaration or a use of it is wrong.  ``loc`` (when known)
    is the script location ``(file, line, col)`` that triggered it."""

    def __init__(self, message: str, loc: Optional[tuple] = None):
        super().__init__(message)
        self.loc = loc


@dataclass
class CmdParam:
    """One script parameter of a function: ``{flags, fixup, free_fixup}``.

    ``fixup(value)`` runs once when the script is fixed up and returns what
    the function will receive at run time (or raises ``ModuleError``/
    ``ValueError`` with the reason).  Without a fixup the core applies the
    default one for the kind (see :mod:`opensipy.mod_fix`)."""
    flags: int
    fixup: Optional[Callable[[Any], Any]] = None
    free_fixup: Optional[Callable[[Any], None]] = None

    @property
    def optional(self) -> bool:
        return bool(self.flags & CMD_PARAM_OPT)


@dataclass
class CmdExport:
    """A script function.  ``function(msg, *params)`` returns an int:
    > 0 true, < 0 false, 0 stops the script."""
    name: str
    function: Callable[..., int]
    params: Sequence[CmdParam] = ()
    flags: int = REQUEST_ROUTE

    @property
    def max_args(self) -> int:
        return len(self.params)

    @property
    def min_args(self) -> int:
        n = len(self.params)
        while n and self.params[n - 1].optional:
            n -= 1
        return n


@dataclass
class ParamExport:
    """A ``modparam`` target.  ``param_pointer`` is either the name of a
    module-level attribute (a str) that receives the value, or, with
    ``USE_FUNC_PARAM``, a callable ``f(value) -> int`` run for every
    occurrence (a negative return is a config error)."""
    name: str
    type: int
    param_pointer: Any


@dataclass
class StatExport:
    """A statistic registered under the module's group.  With
    ``STAT_IS_FUNC``, ``stat_pointer`` is a callable computing the value on
    read; otherwise the core stores the created statistic in the module
    attribute named by ``stat_pointer`` (or leaves it reachable by name)."""
    name: str
    flags: int = 0
    stat_pointer: Any = None


@dataclass
class MIRecipe:
    """One way to call an MI command: the handler and the names of the
    parameters it takes (``handler(params: dict) -> result``)."""
    handler: Callable[..., Any]
    params: Sequence[str] = ()


@dataclass
class MIExport:
    name: str
    help: str
    flags: int = 0
    init_f: Optional[Callable[[], int]] = None
    recipes: Sequence[MIRecipe] = ()


@dataclass
class PVExport:
    """A pseudo-variable ``$name`` / ``$name(arg)`` added to the script.

    ``getf(msg, param) -> value`` (None means NULL), ``setf(msg, param, op,
    value)``; ``parse_name(text) -> param`` runs at compile time on the
    ``(arg)`` part and may raise to reject it."""
    name: str
    getf: Callable[..., Any]
    setf: Optional[Callable[..., int]] = None
    parse_name: Optional[Callable[[str], Any]] = None
    parse_index: Optional[Callable[[str], Any]] = None
    init_param: Optional[Callable[[], Any]] = None
    iparam: int = 0


@dataclass
class ProcExport:
    """A dedicated process.  ``function(rank)`` must never return: if it
    does, the whole server stops (the manual's rule).  ``no`` is the number
    of processes, or the name of a module attribute holding it (so a
    ``modparam`` may change it)."""
    name: str
    pre_fork_function: Optional[Callable[[], int]] = None
    post_fork_function: Optional[Callable[[], int]] = None
    function: Optional[Callable[[int], None]] = None
    no: Any = 1
    flags: int = 0


@dataclass
class ModuleDep:
    mod_name: str
    type: int = DEP_ABORT


@dataclass
class DepExport:
    """``md``: other modules; ``python``: pip requirements as
    ``(import_name, extra)`` pairs: a missing one is a load error that names
    the extra to install (``pip install opensipy[extra]``)."""
    md: Sequence[ModuleDep] = ()
    python: Sequence[tuple] = ()


@dataclass
class EventExport:
    """An event the module raises (``E_MODULE_WHAT``), published before
    fork so the script's ``event_route`` and MI ``subscribe_event`` may
    name it; the module raises it with ``evi.evi_raise_event``."""
    name: str


@dataclass
class ModuleExports:
    name: str
    version: str = MODULE_VERSION
    compile_flags: str = ""
    dlflags: int = 0
    deps: DepExport = field(default_factory=DepExport)
    cmds: Sequence[CmdExport] = ()
    params: Sequence[ParamExport] = ()
    stats: Sequence[StatExport] = ()
    mi_cmds: Sequence[MIExport] = ()
    items: Sequence[PVExport] = ()
    procs: Sequence[ProcExport] = ()
    init_f: Optional[Callable[[], int]] = None
    response_f: Optional[Callable[[Any], int]] = None
    destroy_f: Optional[Callable[[], None]] = None
    init_child_f: Optional[Callable[[int], int]] = None
    events: Sequence[EventExport] = ()
    # async functions (acmd_export_t): function(msg, actx, *params), used
    # inside async()/launch() (opensipy.async_engine)
    acmds: Sequence[CmdExport] = ()


_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_exports(exp: Any, where: str) -> None:
    """Check a module's declaration as it is loaded; raise ModuleError with
    a precise message for the first thing that is wrong."""
    if not isinstance(exp, ModuleExports):
        raise ModuleError(f"{where}: 'exports' is not a ModuleExports")

    def bad(msg: str) -> ModuleError:
        return ModuleError(f"module '{exp.name}' ({where}): {msg}")

    if not isinstance(exp.name, str) or not _NAME_RE.match(exp.name):
        raise ModuleError(f"{where}: bad module name {exp.name!r}")
    if exp.version != MODULE_VERSION:
        raise bad(f"version {exp.version} does not match the core's "
                  f"{MODULE_VERSION}")
    _check_cmds(exp.cmds, bad)
    _check_cmds(exp.acmds, bad, "async ")
    names = set()
    for p in exp.params:
        if not isinstance(p, ParamExport):
            raise bad(f"bad param export {p!r}")
        base = p.type & PARAM_TYPE_MASK
        if base not in (STR_PARAM, INT_PARAM, STR_PARAM | INT_PARAM):
            raise bad(f"parameter {p.name}: type must be INT_PARAM or "
                      f"STR_PARAM")
        if p.type & USE_FUNC_PARAM and not callable(p.param_pointer):
            raise bad(f"parameter {p.name}: USE_FUNC_PARAM needs a callable")
        if not p.type & USE_FUNC_PARAM and not isinstance(p.param_pointer,
                                                          str):
            raise bad(f"parameter {p.name}: param_pointer must name a module "
                      f"attribute")
        if p.name in names:
            raise bad(f"parameter {p.name} exported twice")
        names.add(p.name)
    for s in exp.stats:
        if not isinstance(s, StatExport) or not s.name:
            raise bad(f"bad stat export {s!r}")
        if s.flags & STAT_IS_FUNC and not callable(s.stat_pointer):
            raise bad(f"statistic {s.name}: STAT_IS_FUNC needs a callable")
    for m in exp.mi_cmds:
        if not isinstance(m, MIExport) or not m.recipes:
            raise bad(f"MI command {getattr(m, 'name', m)!r} has no recipe")
        if len(m.recipes) > MAX_MI_RECIPES:
            raise bad(f"MI command {m.name} has too many recipes")
    for pv in exp.items:
        if not isinstance(pv, PVExport) or not callable(pv.getf):
            raise bad(f"bad pseudo-variable export {pv!r}")
    for pr in exp.procs:
        if not isinstance(pr, ProcExport) or not callable(pr.function):
            raise bad(f"process {getattr(pr, 'name', pr)!r} has no function")
    for ev in exp.events:
        if not isinstance(ev, EventExport) or not _NAME_RE.match(ev.name):
            raise bad(f"bad event export {ev!r}")
    for f in ("init_f", "response_f", "destroy_f", "init_child_f"):
        v = getattr(exp, f)
        if v is not None and not callable(v):
            raise bad(f"{f} is not callable")


def _check_cmds(cmds, bad, kind="") -> None:
    seen_cmds: dict = {}
    for c in cmds:
        if not isinstance(c, CmdExport) or not callable(c.function):
            raise bad(f"bad cmd export {c!r}")
        if not _NAME_RE.match(c.name):
            raise bad(f"bad {kind}function name {c.name!r}")
        if len(c.params) > MAX_CMD_PARAMS:
            raise bad(f"function {c.name} has {len(c.params)} parameters "
                      f"(at most {MAX_CMD_PARAMS})")
        for i, p in enumerate(c.params):
            pk = p.flags & (CMD_PARAM_INT | CMD_PARAM_STR | CMD_PARAM_VAR
                            | CMD_PARAM_REGEX)
            if bin(pk).count("1") != 1:
                raise bad(f"function {c.name} parameter {i + 1}: exactly one "
                          f"of CMD_PARAM_INT/STR/VAR/REGEX is needed")
        if not c.flags & ALL_ROUTES:
            raise bad(f"function {c.name} is allowed in no route")
        nparams = len(c.params)
        other = seen_cmds.setdefault(c.name, [])
        for o in other:
            if o.min_args <= nparams and c.min_args <= o.max_args:
                raise bad(f"function {c.name} is exported twice with "
                          f"overlapping parameter counts")
        other.append(c)


def replace(exp: ModuleExports, **kw) -> ModuleExports:
    """dataclasses.replace, re-exported for tests and module authors."""
    return dataclasses.replace(exp, **kw)
