"""MI ``reload_routes``: the script's routes again, in every process.

OpenSIPS's command, reply and limits (cfg_reload.c): only the route blocks
are reloaded; global parameters, ``loadmodule`` and ``modparam`` lines are
not applied again (OpenSIPS skips them silently; we log a warning for each
changed line: restart the server to change them); one reload at a time.
Where we differ: OpenSIPS has every process parse the new script and
switches only when all succeeded, before the MI reply; here the MI process
compiles it (the same code, modules and fixups every process runs), and
the others switch before their next message; the MI error carries the
errors (``data``), which OpenSIPS only logs.

How it runs:

* the attendant calls :func:`setup` before the fork: a generation counter
  (:class:`~opensipy.shm.AtomicCounter`) and a one-entry shm hash table that
  will hold the text of the last script that compiled;
* the MI process that receives ``reload_routes`` reads the script file,
  parses it, resolves every call, runs the fixups and compiles the routes
  (:func:`build`), exactly as the start-up does.  Any error (with its
  FILE:LINE:COL) is the MI error reply and nothing changes anywhere.  When
  it compiled, the text is stored in shm, the generation bumped and the
  MI process switches at once;
* every other process (SIP receivers before their next message, in
  ``receive.receive_msg``, the timer process at its next tick, module
  processes at their next MI request) calls :func:`poll`: one read of
  the counter; when it moved, the process compiles the stored text
  itself and switches (a process that cannot,
  which the MI process's own compilation makes unlikely, logs why and
  keeps its routes).  Files the script includes are read again by each
  process.
* timer routes are registered at start-up with the timer process: a
  reloaded script may change their bodies but not add, remove or re-time
  them (refused with the route's location).
"""
from __future__ import annotations

import os
import time
from typing import List, Optional

from .. import log

_gen = None            # shm AtomicCounter: the reload generation
_busy = None           # shm AtomicCounter: 1 while a reload is compiling
_store = None          # shm HashTable: b"script" -> the text that compiled
_path: Optional[str] = None
_mine = 0              # the generation this process runs
_timer_sig = ()        # ((name, seconds), ...) of the start-up script
_top_sig = ()          # the start-up script's non-route items

_KEY = b"script"


class ReloadError(Exception):
    """The script cannot replace the running one; ``errors`` are
    ``FILE:LINE:COL: message`` strings."""

    def __init__(self, errors: List[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def _item_signature(item) -> Optional[tuple]:
    """What a global parameter, loadmodule or modparam line sets."""
    kind = type(item).__name__
    if kind == "GlobalParam":
        return (kind, item.name, str(item.value))
    if kind == "LoadModule":
        return (kind, item.path)
    if kind == "ModParam":
        return (kind, item.module, item.param, str(item.value))
    return None


def _top_signature(script) -> tuple:
    return tuple(s for s in map(_item_signature, script.top)
                 if s is not None)


def _timer_signature(script) -> tuple:
    return tuple(sorted((r.name, r.seconds) for r in script.top
                        if type(r).__name__ == "RouteBlock"
                        and r.kind == "timer_route"))


def setup(path: str, script) -> None:
    """In the attendant, after the start-up compilation, before the fork."""
    global _gen, _busy, _store, _path, _mine, _timer_sig, _top_sig
    from .. import shm
    _path = os.path.abspath(path)
    _gen = shm.AtomicCounter(0)
    _busy = shm.AtomicCounter(0)
    _store = shm.HashTable(1)
    _mine = 0
    _timer_sig = _timer_signature(script)
    _top_sig = _top_signature(script)


def enabled() -> bool:
    return _gen is not None


def build(text: str):
    """Parse, check, fix up and compile ``text`` as the script; returns the
    CompiledScript without activating it (raise ReloadError)."""
    from .. import evi, modloader
    from . import compile_script, parse_string, runtime
    from .errors import ScriptErrors
    try:
        script = parse_string(text, _path)
    except ScriptErrors as e:
        raise ReloadError([str(x) for x in e.errors]) from None
    errors = []
    if _timer_signature(script) != _timer_sig:
        loc = next((f"{r.loc[0]}:{r.loc[1]}:{r.loc[2]}: "
                    for r in script.top if type(r).__name__ == "RouteBlock"
                    and r.kind == "timer_route"), f"{_path}:1:1: ")
        errors.append(f"{loc}timer routes cannot be added, removed or "
                      f"re-timed by reload_routes (restart the server)")
    for r in script.top:
        if type(r).__name__ == "RouteBlock" and r.kind == "event_route" \
                and r.name not in evi._by_name:
            errors.append(f"{r.loc[0]}:{r.loc[1]}:{r.loc[2]}: "
                          f"event_route[{r.name}]: event {r.name} is not "
                          f"published")
    if errors:
        raise ReloadError(errors)
    declared = runtime._declared
    try:
        cs = compile_script(script, modloader.registry, activate=False)
    except ScriptErrors as e:
        runtime._declared = declared
        raise ReloadError([str(x) for x in e.errors]) from None
    except Exception as e:          # a fixup that failed
        runtime._declared = declared
        raise ReloadError([f"{_path}: {type(e).__name__}: {e}"]) from None
    running = set(_top_sig)
    for item in script.top:
        sig = _item_signature(item)
        if sig is not None and sig not in running:
            log.LM_WARN(f"{item.loc[0]}:{item.loc[1]}:{item.loc[2]}: "
                        f"reload_routes does not apply this {sig[0]} line "
                        f"(restart the server to change it)")
    return cs


def activate(cs) -> None:
    """Make ``cs`` the routes this process runs."""
    from .. import evi, receive
    from . import runtime
    runtime.compiled = cs
    receive.compiled = cs
    evi._routes.clear()
    evi._routes.update(cs.event_routes)


def poll() -> None:
    """Switch to the last reloaded script when the generation moved."""
    global _mine
    if _gen is None:
        return
    g = _gen.get()
    if g == _mine:
        return
    _mine = g
    raw = _store.get(_KEY)
    if raw is None:
        return
    t0 = time.monotonic()
    try:
        cs = build(raw.decode("utf-8", "surrogateescape"))
    except ReloadError as e:
        log.LM_ERR(f"reload_routes: this process keeps its routes: {e}")
        return
    activate(cs)
    log.LM_INFO(f"reload_routes: routes of generation {g} active "
                f"({(time.monotonic() - t0) * 1000:.0f} ms)")


def reload_routes() -> int:
    """What the MI command runs; returns the new generation or raises
    ReloadError (nothing changed)."""
    global _mine
    if _gen is None:
        raise ReloadError(["reload_routes: the server did not set up "
                           "route reloading"])
    if not _busy.compare_and_set(0, 1):       # one reload at a time
        raise ReloadError(["reload_routes: a reload is already in "
                           "progress"])
    try:
        try:
            with open(_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise ReloadError([f"{_path}:0:0: cannot open script: "
                               f"{e.strerror or e}"]) from None
        cs = build(text)
        _store.put(_KEY, text.encode("utf-8", "surrogateescape"))
        g = _gen.inc()
    finally:
        _busy.set(0)
    activate(cs)
    _mine = g
    log.LM_NOTICE(f"reload_routes: {_path} compiled, generation {g}")
    return g


def mi_reload_routes(params):
    """MI ``reload_routes``: "OK", or OpenSIPS's error 500 "reload failed"
    (with every error found as ``data``, which OpenSIPS only logs)."""
    from .. import sdnotify
    from ..mi.dispatch import MIError
    sdnotify.notify(f"RELOADING=1\nMONOTONIC_USEC="
                    f"{time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
                    f"\nSTATUS=reloading routes")
    try:
        reload_routes()
    except ReloadError as e:
        log.LM_ERR(f"reload_routes failed, the running routes stay:\n{e}")
        raise MIError(500, "reload failed", data=e.errors) from None
    finally:
        sdnotify.notify("READY=1\nSTATUS=serving")
    return "OK"
