"""The management interface (MI) core.

Commands come from the core (:mod:`opensipy.mi.core`) and from every loaded
module's ``exports.mi_cmds`` (read from :data:`opensipy.modloader.registry`,
the running server's registry).  Transports (the ``mi_fifo``,
``mi_datagram`` and ``mi_http`` modules) hand each request's text to
:func:`handle_text` and send back what it returns; they run in their own
module processes, so a slow or broken MI client never blocks SIP.

A module's handler is ``handler(params: dict) -> result``: ``params`` maps
the recipe's parameter names to the given values (positional parameters
are mapped onto the recipe's order).  The result is any JSON value; return
:data:`OK` for OpenSIPS's plain "OK".  Returning ``None`` is a failure
(OpenSIPS's NULL reply: ``-32000 Server error``); raise :class:`MIError`
to answer with a specific error, and use :func:`get_int`, :func:`get_str`,
:func:`get_array` to read parameters (they raise ``-32602 Invalid params``).

A transport process calls :func:`init_child` once (it builds the table and
runs the commands' ``init_f``), then for every request
:func:`handle_text`, sends the reply, and calls :func:`run_after_reply`.
Its loop calls :func:`opensipy.log.refresh` so ``log_level`` reaches it.
"""
from __future__ import annotations

from typing import Any, Optional

from .dispatch import (INVALID_PARAMS, INVALID_REQUEST, MAX_REQUEST,
                       METHOD_NOT_FOUND, OK, PARSE_ERROR, SERVER_ERROR,
                       Command, CommandTable, Dispatcher, MIError,
                       choose_recipe, get_array, get_int, get_str,
                       param_error, parse_request)

__all__ = [
    "MIError", "OK", "PARSE_ERROR", "INVALID_REQUEST", "METHOD_NOT_FOUND",
    "INVALID_PARAMS", "SERVER_ERROR", "MAX_REQUEST", "Command",
    "CommandTable", "Dispatcher", "choose_recipe", "parse_request",
    "get_int", "get_str", "get_array", "param_error", "build_dispatcher",
    "dispatcher", "init_child", "handle_text", "call", "run_after_reply",
]

_dispatcher: Optional[Dispatcher] = None


def build_dispatcher(registry=None) -> Dispatcher:
    """A dispatcher with the core commands and, when a registry is given,
    every loaded module's ``mi_cmds`` (in load order)."""
    from .core import CoreCommands
    table = CommandTable()
    disp = Dispatcher(table)
    table.register_module("core", CoreCommands(disp).exports())
    from .. import evi          # the event interface's core commands
    table.register_module("core", evi.mi_exports())
    if registry is not None:
        for lm in registry.modules:
            if lm.exports.mi_cmds:
                table.register_module(lm.name, lm.exports.mi_cmds)
    return disp


def dispatcher() -> Dispatcher:
    """This process's dispatcher, built on first use from the running
    server's registry."""
    global _dispatcher
    if _dispatcher is None:
        from .. import modloader
        _dispatcher = build_dispatcher(modloader.registry)
    return _dispatcher


def init_child() -> Dispatcher:
    """For a process that serves MI: build the table, run every command's
    ``init_f``."""
    d = dispatcher()
    d.table.init_child()
    return d


def handle_text(text) -> Optional[str]:
    """One request (str or bytes) in, one line of JSON out (None for a
    notification)."""
    from ..script.reload import poll
    poll()              # an earlier reload_routes (in another MI process)
    return dispatcher().handle_text(text)


def call(method: str, params: Any = None) -> Any:
    """Run a command in this process (raises MIError)."""
    return dispatcher().call(method, params)


def run_after_reply() -> None:
    dispatcher().run_after_reply()


def _reset_for_tests() -> None:
    global _dispatcher
    _dispatcher = None
