"""Resolution of a parsed script against the loaded modules.

:func:`analyse` walks every route once and

* resolves each function call: ``registry.find_cmds(name)``, the overload
  whose ``min_args..max_args`` holds the argument count, then every
  argument through ``mod_fix.check_param`` (no fixup runs here);
* parses every variable (``pvar.parse_pv``) and every string literal used
  as a value (``pvar.parse_format``), compiles constant regexes;
* builds the call graph of ``route(name)``: a sub-route takes the route
  types of every route that reaches it (transitively), and each function
  call is checked against the route-type mask of its ``CmdExport.flags``
  only after the whole script is known.

The results are written into the tree (``Call.module``/``Call.cmd``,
``PVar.spec``, ``Str.fmt``) for the compiler.  Every problem becomes a
:class:`ScriptError`; nothing stops at the first one.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Set, Tuple

from .. import sr_module as S
from . import ast as A
from . import runtime
from .errors import ScriptError

# route kind -> route type (sr_module constants)
ROUTE_TYPES = {
    "route": S.REQUEST_ROUTE, "failure_route": S.FAILURE_ROUTE,
    "onreply_route": S.ONREPLY_ROUTE, "branch_route": S.BRANCH_ROUTE,
    "error_route": S.ERROR_ROUTE, "local_route": S.LOCAL_ROUTE,
    "startup_route": S.STARTUP_ROUTE, "timer_route": S.TIMER_ROUTE,
    "event_route": S.EVENT_ROUTE,
}


def route_title(r: A.RouteBlock) -> str:
    if r.name is None:
        return "the main route" if r.kind == "route" else r.kind
    return f"{r.kind}[{r.name}]"


def type_names(mask: int) -> str:
    return ", ".join(n for t, n in sorted(S.ROUTE_TYPE_NAMES.items())
                     if mask & t)


def compile_regex(text: str):
    """A script regex, with the flags of mod_fix (OpenSIPS's
    REG_EXTENDED|REG_ICASE|REG_NEWLINE)."""
    from ..mod_fix import REGEX_FLAGS
    return re.compile(text, REGEX_FLAGS)


class Analysis:
    """What the checker learnt: ``top_routes`` (RouteBlocks that are entry
    points), ``subroutes`` (name -> RouteBlock of ``route[name]``),
    ``sub_types`` (name -> route-type mask of every route that reaches
    it), ``recursive`` (names of sub-routes on a cycle of route() calls)
    and ``errors``."""

    def __init__(self):
        self.errors: List[ScriptError] = []
        self.top_routes: List[A.RouteBlock] = []
        self.subroutes: Dict[str, A.RouteBlock] = {}
        self.sub_types: Dict[str, int] = {}
        self.recursive: Set[str] = set()
        # route block -> [(Call, loc)] and [route names it calls]
        self.calls: Dict[int, List[A.Call]] = {}
        self.route_calls: Dict[int, List[str]] = {}


class Checker:
    def __init__(self, script: A.Script, registry):
        self.script = script
        self.registry = registry
        self.an = Analysis()
        from .. import mod_fix, pvar      # the PV layer's contracts
        self.mod_fix = mod_fix
        self.pv = pvar

    def error(self, loc, message: str):
        self.an.errors.append(ScriptError.at(loc, message))

    # --- the whole script ----------------------------------------------------
    def run(self) -> Analysis:
        an = self.an
        seen: Dict[Tuple[str, Optional[str]], A.RouteBlock] = {}
        for item in self.script.top:
            if not isinstance(item, A.RouteBlock):
                continue
            key = (item.kind, item.name)
            if key in seen:
                first = seen[key].loc
                self.error(item.loc, f"{route_title(item)} is defined twice "
                           f"(first at {first[0]}:{first[1]})")
                continue
            seen[key] = item
            if item.kind == "route" and item.name is not None:
                an.subroutes[item.name] = item
            else:
                an.top_routes.append(item)
        runtime.declare_routes(seen.keys())
        for r in list(seen.values()):
            self.current = r
            an.calls[id(r)] = []
            an.route_calls[id(r)] = []
            self.block(r.body, loops=0)
        self.route_types()
        an.errors.sort(key=lambda x: (x.file != self.script.file, x.file,
                                      x.line, x.col))
        return an

    def route_types(self):
        """Propagate route types into sub-routes, then check every call's
        route mask."""
        an = self.an
        sub_types = {name: 0 for name in an.subroutes}
        todo = []
        for r in an.top_routes:
            t = ROUTE_TYPES[r.kind]
            for name in an.route_calls[id(r)]:
                todo.append((name, t))
        while todo:
            name, t = todo.pop()
            if name not in sub_types or sub_types[name] & t == t:
                continue
            sub_types[name] |= t
            for callee in an.route_calls[id(an.subroutes[name])]:
                todo.append((callee, t))
        an.sub_types = sub_types
        an.recursive = self.cycles()
        for r in an.top_routes:
            self.check_masks(r, ROUTE_TYPES[r.kind], None)
        for name, r in an.subroutes.items():
            if sub_types[name]:
                self.check_masks(r, sub_types[name], name)

    def check_masks(self, r: A.RouteBlock, types: int, sub: Optional[str]):
        for call in self.an.calls[id(r)]:
            if call.cmd is None:
                continue
            bad = types & ~call.cmd.flags
            if bad:
                where = type_names(bad)
                if sub is not None:
                    where = (f"route[{sub}], which is called from "
                             f"{where}")
                self.error(call.loc, f"function '{call.name}' cannot be "
                           f"used in {where} (allowed in: "
                           f"{type_names(call.cmd.flags)})")

    def cycles(self) -> Set[str]:
        """Sub-routes that can reach themselves through route() calls."""
        an = self.an
        graph = {name: set(an.route_calls[id(r)])
                 for name, r in an.subroutes.items()}
        out = set()
        for start in graph:
            stack, seen = list(graph[start]), set()
            while stack:
                n = stack.pop()
                if n == start:
                    out.add(start)
                    break
                if n in seen or n not in graph:
                    continue
                seen.add(n)
                stack.extend(graph[n])
        return out

    # --- statements ----------------------------------------------------------
    def block(self, b: A.Block, loops: int):
        for s in b.stmts:
            self.stmt(s, loops)

    def stmt(self, s, loops: int):
        if isinstance(s, A.Block):
            self.block(s, loops)
        elif isinstance(s, A.ExprStmt):
            self.expr(s.expr)
        elif isinstance(s, A.Assign):
            self.pvar(s.target)
            if s.target.spec is not None and not s.target.spec.writable:
                self.error(s.target.loc, f"variable {s.target.text} is "
                           f"read-only")
            if isinstance(s.value, A.Null) and s.op != "=" and not (
                    s.op == ":=" and s.target.spec is not None
                    and s.target.spec.name == "avp"):
                # cfg.y: only "= NULL", and ":= NULL" on an AVP
                self.error(s.value.loc, f"NULL cannot be assigned with "
                           f"'{s.op}'" + (" (':= NULL' only deletes "
                                          "AVPs)" if s.op == ":=" else ""))
            self.expr(s.value)
        elif isinstance(s, A.If):
            self.expr(s.cond)
            self.block(s.then, loops)
            if s.orelse is not None:
                self.block(s.orelse, loops)
        elif isinstance(s, A.Switch):
            self.expr(s.expr)
            for c in s.cases:
                for x in c.body:
                    self.stmt(x, loops + 1)
        elif isinstance(s, A.While):
            self.expr(s.cond)
            self.block(s.body, loops + 1)
        elif isinstance(s, A.For):
            self.pvar(s.var)
            if s.var.spec is not None and not s.var.spec.writable:
                self.error(s.var.loc, f"variable {s.var.text} is read-only")
            self.expr(s.iterable)
            self.block(s.body, loops + 1)
        elif isinstance(s, A.Break):
            if loops == 0:
                self.error(s.loc, "'break' outside a switch or loop")
        elif isinstance(s, A.Return):
            if s.value is not None:
                self.expr(s.value)
        elif isinstance(s, (A.Exit, A.Drop)):
            pass
        elif isinstance(s, (A.Async, A.Launch)):
            self.async_stmt(s)
        else:                                   # pragma: no cover
            raise TypeError(f"unknown statement {s!r}")

    # --- expressions -------------------------------------------------------
    def expr(self, e):
        if isinstance(e, (A.Int, A.Null)):
            return
        if isinstance(e, A.Str):
            try:
                e.fmt = self.pv.parse_format(e.text, self.registry)
            except self.pv.PVError as err:
                self.error(e.loc, str(err))
        elif isinstance(e, A.PVar):
            self.pvar(e)
        elif isinstance(e, A.Call):
            self.call(e)
        elif isinstance(e, A.RouteCall):
            self.route_call(e)
        elif isinstance(e, A.Unary):
            self.expr(e.operand)
        elif isinstance(e, A.Binary):
            self.expr(e.left)
            self.expr(e.right)
            if e.op in ("=~", "!~") and isinstance(e.right, (A.Int,
                                                             A.Null)):
                # cfg.y: a regex is matched against a string or a variable
                self.error(e.right.loc, f"'{e.op}' needs a regular "
                           f"expression (a string or a variable) on its "
                           f"right")
            if e.op in ("=~", "!~") and isinstance(e.right, A.Str) \
                    and e.right.fmt is not None and e.right.fmt.is_constant:
                try:
                    compile_regex(e.right.fmt.value)
                except re.error as err:
                    self.error(e.right.loc, f"bad regular expression "
                               f"{e.right.text!r}: {err}")
        elif isinstance(e, A.ExprList):
            for x in e.items:
                self.expr(x)
        else:                                   # pragma: no cover
            raise TypeError(f"unknown expression {e!r}")

    def pvar(self, v: A.PVar):
        try:
            v.spec = self.pv.parse_pv(v.text, self.registry)
        except self.pv.PVError as err:
            v.spec = None
            self.error(v.loc, f"{err}")

    def route_call(self, e: A.RouteCall):
        if e.name not in self.an.subroutes:
            self.error(e.loc, f"unknown route '{e.name}' (no route[{e.name}]"
                       f" block)")
        else:
            self.an.route_calls[id(self.current)].append(e.name)
        for a in e.args:
            self.expr(a)

    def async_stmt(self, s):
        """async()/launch(): the call is resolved among the modules' async
        functions (cfg.y's async_func: anything else is an error there
        too), and the resume/report route must exist."""
        word = "async" if isinstance(s, A.Async) else "launch"
        e = s.call
        found = self.registry.find_acmds(e.name)
        if not found:
            if self.registry.find_cmds(e.name):
                why = (f"function '{e.name}' has no async form, so it "
                       f"cannot be used in {word}() (call it directly)")
            else:
                why = (f"unknown async function '{e.name}' in {word}() "
                       f"(missing loadmodule?)")
            self.error(e.loc, why)
            for a in e.args:
                if a is not None:
                    self.expr(a)
        else:
            self.call(e, found)
        name = s.resume if isinstance(s, A.Async) else s.report
        if name is not None:
            if name not in self.an.subroutes:
                self.error(s.loc, f"{word}(): unknown route '{name}' (no "
                           f"route[{name}] block)")
            else:
                self.an.route_calls[id(self.current)].append(name)
        if isinstance(s, A.Async) and s.timeout is not None \
                and s.timeout <= 0:
            self.error(s.loc, "async(): the timeout must be a positive "
                       "number of seconds")

    def call(self, e: A.Call, found=None):
        if found is None:
            found = self.registry.find_cmds(e.name)
        n = len(e.args)
        if not found:
            self.error(e.loc, f"unknown function '{e.name}'")
            for a in e.args:
                if a is not None:
                    self.expr(a)
            return
        match = [(m, c) for m, c in found if c.min_args <= n <= c.max_args]
        if not match:
            counts = sorted({(c.min_args, c.max_args) for _, c in found})
            want = " or ".join(str(lo) if lo == hi else f"{lo} to {hi}"
                               for lo, hi in counts)
            self.error(e.loc, f"function '{e.name}' takes {want} "
                       f"argument{'s' if counts[-1][1] != 1 else ''}, "
                       f"{n} given")
            for a in e.args:
                if a is not None:
                    self.expr(a)
            return
        e.module, e.cmd = match[0]
        self.an.calls[id(self.current)].append(e)
        for i, p in enumerate(e.cmd.params):
            a = e.args[i] if i < n else None
            if a is None:
                if not p.optional:
                    self.error(e.loc, f"function '{e.name}': argument "
                               f"{i + 1} may not be omitted")
                continue
            value = self.arg_value(e, i, a)
            if value is _BAD:
                continue
            msg = self.mod_fix.check_param(p, value, self.registry)
            if msg:
                self.error(a.loc, f"function '{e.name}' argument {i + 1}: "
                           f"{msg}")

    def arg_value(self, e: A.Call, i: int, a):
        """The value mod_fix sees for an argument: int, str (raw text) or
        PVSpec; _BAD when the argument is not one of those."""
        if isinstance(a, A.Int):
            return a.value
        if isinstance(a, A.Str):
            return a.text
        if isinstance(a, A.PVar):
            self.pvar(a)
            return a.spec if a.spec is not None else _BAD
        self.error(a.loc, f"function '{e.name}' argument {i + 1}: only a "
                   f"constant or a variable may be passed")
        return _BAD


_BAD = object()


def analyse(script: A.Script, registry) -> Analysis:
    return Checker(script, registry).run()


def check(script: A.Script, registry) -> List[ScriptError]:
    """Every resolution error of a parsed script (no fixup runs)."""
    return analyse(script, registry).errors
