"""Helpers for the script tests: a registry of small recording modules.

``make_registry(decls)`` builds an ``opensipy.modloader.Registry`` with one
module per name in ``decls``; each function is declared as
``"name": (params, flags, result)`` where ``params`` is a string of
parameter kinds (``i`` int, ``s`` string, ``v`` variable, ``r`` regex; an
upper-case letter is optional), ``flags`` the route mask and ``result``
the int it returns, or a callable ``f(msg, *args) -> int``.  Every call is
appended to ``calls`` as ``(name, args)``.
"""
from __future__ import annotations

import pytest

from opensipy import sr_module as S
from opensipy.modloader import LoadedModule, Registry

KINDS = {"i": S.CMD_PARAM_INT, "s": S.CMD_PARAM_STR, "v": S.CMD_PARAM_VAR,
         "r": S.CMD_PARAM_REGEX}


class Recorder:
    def __init__(self):
        self.calls = []

    def names(self):
        return [c[0] for c in self.calls]

    def make(self, name, result):
        calls = self.calls

        def fn(msg, *args):
            calls.append((name, args))
            if callable(result):
                return result(msg, *args)
            return result
        fn.__name__ = name
        return fn


def params_of(kinds: str):
    out = []
    for k in kinds:
        flags = KINDS[k.lower()]
        if k.isupper():
            flags |= S.CMD_PARAM_OPT
        out.append(S.CmdParam(flags))
    return out


def make_registry(modules: dict, rec: Recorder = None):
    """modules: {module_name: {func_name: (kinds, flags, result) or a list
    of such tuples (overloads)}}."""
    rec = rec if rec is not None else Recorder()
    reg = Registry()
    for mod, funcs in modules.items():
        cmds = []
        for fname, decl in funcs.items():
            for kinds, flags, result in (decl if isinstance(decl, list)
                                         else [decl]):
                cmds.append(S.CmdExport(fname, rec.make(fname, result),
                                        params_of(kinds), flags))
        reg.add(LoadedModule(mod, S.ModuleExports(mod, cmds=cmds)))
    return reg, rec


@pytest.fixture
def recorder():
    return Recorder()
