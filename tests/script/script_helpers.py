"""Helpers for the script tests: a registry of small recording modules,
a SIP message, and :func:`run_script` to compile and run a snippet.

``make_registry(decls)`` builds an ``opensipy.modloader.Registry`` with one
module per name in ``decls``; each function is declared as
``"name": (params, flags, result)`` where ``params`` is a string of
parameter kinds (``i`` int, ``s`` string, ``v`` variable, ``r`` regex,
``c`` constant string; an upper-case letter is optional), ``flags`` the route mask and ``result``
the int it returns, or a callable ``f(msg, *args) -> int``.  Every call is
appended to ``calls`` as ``(name, args)``.
"""
from __future__ import annotations

from opensipy import sr_module as S
from opensipy.modloader import LoadedModule, Registry

KINDS = {"i": S.CMD_PARAM_INT, "s": S.CMD_PARAM_STR, "v": S.CMD_PARAM_VAR,
         "r": S.CMD_PARAM_REGEX, "c": S.CMD_PARAM_STR | S.CMD_PARAM_STATIC}


class Recorder:
    """Records every call; with recording=False the functions only answer
    (for benchmarks)."""

    def __init__(self, recording: bool = True):
        self.recording = recording
        self.calls = []

    def names(self):
        return [c[0] for c in self.calls]

    def make(self, name, result):
        if not self.recording:
            if callable(result):
                return result
            return lambda msg, *args: result
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


INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n"
          b"Max-Forwards: 70\r\n"
          b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
          b"To: Bob <sip:bob@example.com>\r\n"
          b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
          b"CSeq: 314159 INVITE\r\n"
          b"Contact: <sip:alice@10.0.0.1:5060>\r\n"
          b"Content-Length: 0\r\n\r\n")


def sip_msg(buf: bytes = INVITE):
    from opensipy.parser import SipMsg
    return SipMsg(buf)


def _log_fn(msg, *args):
    return 1


# the functions every snippet may call: t() true, n() false, z() stops,
# log(s) records its (formatted) argument, ret(i) returns its argument
BASIC = {
    "t": ("", S.ALL_ROUTES, 1),
    "n": ("", S.ALL_ROUTES, -1),
    "z": ("", S.ALL_ROUTES, 0),
    "log": ("s", S.ALL_ROUTES, 1),
    "ret": ("i", S.ALL_ROUTES, lambda msg, i: i),
}


def compile_snippet(text: str, modules: dict = None, file="test.cfg"):
    from opensipy.script import compile_script, parse_string
    mods = {"basic": BASIC}
    mods.update(modules or {})
    reg, rec = make_registry(mods)
    cs = compile_script(parse_string(text, file), reg, activate=False)
    return cs, rec


def run_script(text: str, modules: dict = None, msg=None):
    """Compile text (a whole script) and run its main route once.
    Returns (flags, logged) where logged is the list of log() arguments;
    the Recorder's full call list is ``run_script.last_calls``."""
    cs, rec = compile_snippet(text, modules)
    flags = cs.request_route(msg if msg is not None else sip_msg())
    run_script.last_calls = rec.calls
    return flags, [a[0] for n, a in rec.calls if n == "log"]
