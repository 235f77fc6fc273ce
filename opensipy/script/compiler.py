"""Compilation of a checked script into Python functions.

:func:`compile_script` runs after every module's mod_init: it resolves the
script again (:mod:`.checker`), runs every parameter fixup
(``mod_fix.prepare_param``) and generates the Python source of all routes
(:mod:`.codegen`), compiled once.  Prepared constants, fixed-up
parameters, variable getters and the helpers of :mod:`.runtime` are
parameters of one factory function, so the generated routes see them as
closure names: a message runs straight through plain Python statements,
nothing walks the tree at run time and no exception is raised on the
common path.

The calling convention
----------------------
Inside the generated code every route is ``_r<N>(msg) -> status``: 0 when
it ended normally (end of block or ``return``), otherwise action flags that
unwind every caller: :data:`ACT_FL_EXIT` (``exit``, ``return(0)``, or a
function that returned 0, also inside an ``if``) or
``ACT_FL_EXIT | ACT_FL_DROP`` (``drop``).

The callables of :class:`CompiledScript` (``request_route``,
``failure_routes[name]`` ...) take the message and return those flags, so
the caller tests ``flags & ACT_FL_DROP`` to know whether the script
dropped the message (a dropped request is not forwarded, a dropped reply is
not relayed, a dropped branch is not sent).  Nothing is ever forwarded by
the script engine itself: only functions such as t_relay() send.

The per-run context (:data:`opensipy.pvar.ctx`)
-----------------------------------------------
* ``ctx.retcode`` holds the last return code (``$rc``/``$retcode``): it is
  set after every function call, after ``route()`` and by ``return``.  A
  route that ends without ``return`` has, as in OpenSIPS, the value of the
  last statement it ran: a function's or route()'s return code, else 1
  (so ``if (route(x))`` is true after an assignment or an empty body);
* ``ctx.params`` is the tuple of evaluated arguments of the running
  ``route(name, a1, a2)`` (``$param(1)`` ...); ``()`` in a top-level route;
  it is saved and restored around every route() call;
* ``ctx.route_type`` (sr_module.REQUEST_ROUTE ...) and ``ctx.route_name``
  (None for the main routes) are set when a top-level callable starts;
  all three are restored when it returns, so a route run from inside a
  function (a branch_route run by t_relay) leaves the caller's intact.

An exception escaping a module function is logged with the script location
of the call and ends the script (``ACT_FL_EXIT``).
"""
from __future__ import annotations

import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import evi, log
from .. import sr_module as S
from ..shm import ShmOutOfMemory
from . import ast as A
from . import runtime
from .checker import ROUTE_TYPES, analyse
from .codegen import SOURCE_NAME, Generator
from .errors import ScriptError, ScriptErrors
from .runtime import (ACT_FL_DROP, ACT_FL_EXIT, DROP, MAX_REC_LEV,
                      MAX_WHILE_LOOPS)

__all__ = ["CompiledScript", "compile_script", "ACT_FL_EXIT", "ACT_FL_DROP",
           "DROP", "MAX_REC_LEV", "MAX_WHILE_LOOPS"]


class CompiledScript:
    """The compiled routes.  Every callable is ``f(msg) -> flags``.

    ``request_route`` (None when the script has no ``route{}``), ``routes``
    (sub-routes by name), ``onreply_routes`` (name -> f; the main
    ``onreply_route{}`` under None), ``failure_routes``, ``branch_routes``,
    ``error_route``, ``local_route``, ``startup_route`` (each None when
    absent), ``timer_routes`` (list of ``(name, seconds, f)``),
    ``event_routes`` (name -> f; ``event_modes`` name -> "sync"/"async"/
    None).  ``source`` is the generated Python text."""

    def __init__(self):
        self.request_route: Optional[Callable] = None
        self.routes: Dict[str, Callable] = {}
        self.onreply_routes: Dict[Optional[str], Callable] = {}
        self.failure_routes: Dict[str, Callable] = {}
        self.branch_routes: Dict[str, Callable] = {}
        self.error_route: Optional[Callable] = None
        self.local_route: Optional[Callable] = None
        self.startup_route: Optional[Callable] = None
        self.timer_routes: List[Tuple[str, int, Callable]] = []
        self.event_routes: Dict[str, Callable] = {}
        self.event_modes: Dict[str, Optional[str]] = {}
        self.source = ""
        self.prepared: List[Any] = []     # every mod_fix.Prepared

    def find(self, kind: str, name=None) -> Optional[Callable]:
        """The callable of ``kind[name]`` (kind as written in the script)."""
        if kind == "route":
            return self.request_route if name is None \
                else self.routes.get(name)
        if kind in ("error_route", "local_route", "startup_route"):
            return getattr(self, kind)
        if kind == "timer_route":
            return next((f for n, _, f in self.timer_routes if n == name),
                        None)
        table = {"onreply_route": self.onreply_routes,
                 "failure_route": self.failure_routes,
                 "branch_route": self.branch_routes,
                 "event_route": self.event_routes}.get(kind)
        return None if table is None else table.get(name)


def _place(cs: CompiledScript, r: A.RouteBlock, top):
    k = r.kind
    if k == "route":
        cs.request_route = top
    elif k == "onreply_route":
        cs.onreply_routes[r.name] = top
    elif k == "failure_route":
        cs.failure_routes[r.name] = top
    elif k == "branch_route":
        cs.branch_routes[r.name] = top
    elif k == "timer_route":
        cs.timer_routes.append((r.name, r.seconds, top))
    elif k == "event_route":
        cs.event_routes[r.name] = top
        cs.event_modes[r.name] = r.mode
    else:
        setattr(cs, k, top)


def _script_loc(tb, linemap):
    """The script location of the innermost generated frame of tb."""
    loc = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == SOURCE_NAME:
            loc = linemap.get(tb.tb_lineno, loc)
        tb = tb.tb_next
    return loc


def _make_top(fn, route_type: int, name, linemap):
    """The callable of a top-level route: sets and restores the context,
    returns the action flags."""
    from ..pvar import ctx
    logst = log.state
    # routes over a real SIP message name it in the logs (json's callid)
    real_msg = bool(route_type & (S.REQUEST_ROUTE | S.FAILURE_ROUTE
                                  | S.ONREPLY_ROUTE | S.BRANCH_ROUTE
                                  | S.ERROR_ROUTE | S.LOCAL_ROUTE))

    evs = evi.state

    def run(msg, params=()):
        saved = ctx.params, ctx.route_type, ctx.route_name, logst.msg
        ctx.params = params         # an event_route's event parameters
        ctx.route_type = route_type
        ctx.route_name = name
        if real_msg:
            logst.msg = msg
            if evs.msg_threshold_us:
                t0 = time.monotonic_ns()
                try:
                    return fn(msg)
                finally:
                    took = (time.monotonic_ns() - t0) // 1000
                    if took > evs.msg_threshold_us:
                        evi.msg_threshold_exceeded(took, msg)
        try:
            return fn(msg)
        except Exception as e:
            loc = _script_loc(e.__traceback__, linemap)
            where = f"{loc[0]}:{loc[1]}:{loc[2]}: " if loc else ""
            log.LM_ERR(f"{where}script stopped by {type(e).__name__}: {e}")
            log.LM_DBG("".join(traceback.format_exception(e)))
            if isinstance(e, ShmOutOfMemory):
                raise               # the receive path answers 500 / drops
            return ACT_FL_EXIT
        finally:
            ctx.params, ctx.route_type, ctx.route_name, logst.msg = saved
    run.route_type = route_type
    run.route_name = name
    return run


def compile_script(script: A.Script, registry,
                   activate: bool = True) -> CompiledScript:
    """Resolve, fix up and compile every route; raise ScriptErrors with
    every problem found.  With activate, the result becomes the one
    :func:`runtime.find_route` answers from."""
    an = analyse(script, registry)
    if an.errors:
        raise ScriptErrors(an.errors)
    gen = Generator(an, registry)
    fns = gen.generate()
    cs = CompiledScript()
    cs.source = gen.source
    cs.prepared = gen.prepared
    for r in an.top_routes:
        top = _make_top(fns[id(r)], ROUTE_TYPES[r.kind], r.name, gen.linemap)
        _place(cs, r, top)
    for name, r in an.subroutes.items():
        # a sub-route run on its own takes the first type it is used in
        types = an.sub_types.get(name) or S.REQUEST_ROUTE
        cs.routes[name] = _make_top(fns[id(r)], types & -types, name,
                                    gen.linemap)
    errs = evi.bind_script(
        cs.event_routes, [(r.name, r.loc) for r in an.top_routes
                          if r.kind == "event_route"], registry,
        _settings()) if activate else []
    if errs:
        raise ScriptErrors([ScriptError.at(loc or (script.file, 1, 1), m)
                            for loc, m in errs])
    if activate:
        runtime.compiled = cs
    return cs


def _settings():
    from .. import config
    return config.settings
