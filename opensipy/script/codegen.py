"""Code generation: a checked script to the Python source of its routes.

Every route becomes ``_r<N>(msg) -> status`` inside one factory function
whose parameters are the prepared constants, the fixed-up parameters'
getters, the variables' getters/setters and the helpers of
:mod:`.runtime`, so the generated code reaches all of them as closure
names.  The factory is compiled and run once.

Statements map to plain Python: ``if``/``while``/``for`` to the same
statements; ``switch`` to a one-pass ``while True`` whose cases are
``if k <= i`` tests on the index of the matching case (so fall-through and
``break`` behave as in C); a function call to one assignment and one test::

    ctx.retcode = _t3 = _k2(msg, 'INVITE')
    if not _t3: return 1              # a function returning 0 stops all

OpenSIPS's typing rules live in :mod:`.runtime` (docs/script-typing.md):
an operation with no value raises ``NoValue``, caught where OpenSIPS
decides what it means (an assignment is skipped and logged, a condition
is false, a route() argument is NULL); a comparison error is false in a
condition and -1 as a value.  The ``try`` blocks are only generated where
the operand kinds allow such an error, and comparisons alone (or under
``&&``) use helpers that answer false themselves, so else-if chains stay
flat.

Expressions compile to ``(prelude, python expression, kind)``: the prelude
holds the statements that must run first (function calls, route calls),
and ``&&``/``||`` whose right side has a prelude become nested ``if``s to
keep short-circuit evaluation.  ``kind`` ("bool", "rc", "int", "str",
"null", "val") lets the generator skip conversions it can prove useless.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from . import ast as A
from . import runtime
from .checker import compile_regex
from .errors import ScriptError, ScriptErrors
from .runtime import ACT_FL_EXIT, DROP, MAX_REC_LEV, MAX_WHILE_LOOPS

SOURCE_NAME = "<opensipy-script>"

# helpers of runtime.py the generated code uses, under these names
_HELPERS = {
    "_eq_str": runtime.eq_str, "_eq_int": runtime.eq_int,
    "_cmp_vv": runtime.cmp_vv, "_cmp_vn": runtime.cmp_vn,
    "_cmp_vs": runtime.cmp_vs, "_low": runtime._low,
    "_match": runtime.match, "_match_dyn": runtime.match_dyn,
    "_add": runtime.add, "_add_c": runtime.add_c, "_arith": runtime.arith,
    "_bnot": runtime.bnot, "_neg": runtime.neg, "_w32": runtime.w32,
    "_compound": runtime.compound, "_plain": runtime.plain,
    "_to_int": runtime.to_int, "_truth": runtime.truth,
    "_values": runtime.values, "_switch_index": runtime.switch_index,
    "_too_deep": runtime.too_deep, "_loop_limit": runtime.loop_limit,
    "_param_error": runtime.param_error,
    "_cond_error": runtime.cond_error, "_novalue": runtime.novalue,
    "_set_error": runtime.set_error,
    "_NoValue": runtime.NoValue,
    "_cmp_vn_s": runtime.cmp_vn_s, "_eq_int_s": runtime.eq_int_s,
    "_ne_int_s": runtime.ne_int_s, "_match_dyn_s": runtime.match_dyn_s,
    "_nmatch_dyn_s": runtime.nmatch_dyn_s,
}
_COMPARE = ("==", "!=", "<", ">", "<=", ">=")
_MIRROR = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=",
           ">=": "<="}
_ARITH = ("+", "-", "*", "/", "%", "|", "&", "^", "<<", ">>")
_WRAP = ("+", "-", "*", "<<")            # may leave the C int range


class _Func:
    """The code of one generated function: lines with indent and the
    script location they come from."""

    def __init__(self):
        self.lines: List[Tuple[int, str, Any]] = []
        self.ntmp = 0

    def tmp(self, prefix="_t") -> str:
        self.ntmp += 1
        return f"{prefix}{self.ntmp}"


class Generator:
    def __init__(self, an, registry):
        self.an = an
        self.registry = registry
        from .. import mod_fix
        self.mod_fix = mod_fix
        self.env: Dict[str, Any] = dict(_HELPERS)
        self.env["ctx"] = None           # bound at factory call time
        self.env["_depth"] = [0]
        self.env["_ParamError"] = mod_fix.ParamError
        from ..pvar import PVError
        self.env["_PVError"] = PVError
        self._const_ids: Dict[int, str] = {}
        self.soft = 0
        self.errors: List[ScriptError] = []
        self.prepared: List[Any] = []
        self.route_fn: Dict[int, str] = {}     # id(RouteBlock) -> name
        self.sub_fn: Dict[str, str] = {}
        self.source = ""
        self.linemap: Dict[int, Any] = {}
        self.f: _Func = _Func()

    # --- names bound in the closure ------------------------------------------
    def const(self, value) -> str:
        key = id(value)
        name = self._const_ids.get(key)
        if name is None or self.env.get(name) is not value:
            name = f"_k{len(self._const_ids)}"
            self._const_ids[key] = name
            self.env[name] = value
        return name

    def literal(self, value) -> str:
        if value is None or type(value) in (int, str):
            return repr(value)
        return self.const(value)

    # --- code emission -------------------------------------------------------
    def emit(self, ind: int, text: str, loc=None):
        self.f.lines.append((ind, text, loc))

    def emit_pre(self, ind: int, pre, loc):
        for rel, text in pre:
            self.emit(ind + rel, text, loc)

    # --- the whole script ------------------------------------------------
    def generate(self) -> Dict[int, Callable]:
        """Generate and compile every route; returns id(RouteBlock) -> the
        generated function ``f(msg) -> status`` (``source`` and
        ``linemap``, generated line -> script location, are kept)."""
        an = self.an
        blocks = list(an.top_routes) + list(an.subroutes.values())
        for i, r in enumerate(blocks):
            self.route_fn[id(r)] = f"_r{i}"
        for name, r in an.subroutes.items():
            self.sub_fn[name] = self.route_fn[id(r)]
        funcs = []
        for r in blocks:
            self.f = _Func()
            self.current = r
            self.emit(1, f"def {self.route_fn[id(r)]}(msg):", r.loc)
            self.block(r.body.stmts, 2, tail=True)
            self.emit(2, "return 0", r.loc)
            funcs.append(self.f)
        params = sorted(self.env)
        src = [(0, f"def _factory({', '.join(params)}):", None)]
        for f in funcs:
            src.extend(f.lines)
        names = ", ".join(f"{n!r}: {n}" for n in self.route_fn.values())
        src.append((1, f"return {{{names}}}", None))
        text_lines, linemap = [], {}
        for n, (ind, text, loc) in enumerate(src, 1):
            text_lines.append("    " * ind + text)
            if loc is not None:
                linemap[n] = loc
        source = "\n".join(text_lines) + "\n"
        if self.errors:
            raise ScriptErrors(self.errors)
        code = compile(source, SOURCE_NAME, "exec")
        ns: Dict[str, Any] = {}
        exec(code, {"__builtins__": __builtins__}, ns)
        from .. import pvar
        self.env["ctx"] = pvar.ctx
        fns = ns["_factory"](**self.env)
        self.source = source
        self.linemap = linemap
        return {id(r): fns[name] for r in blocks
                for name in (self.route_fn[id(r)],)}

    # --- statements ----------------------------------------------------------
    def block(self, stmts, ind: int, tail: bool = False):
        """With tail, stmts end the route: falling off them leaves in $rc
        the value OpenSIPS gives a route without ``return``, the value of
        the last statement run (a function's or route()'s return code; 1
        for anything else, an empty block, an ``if`` whose condition was
        false and has no else, a loop or a switch)."""
        n = len(self.f.lines)
        last = len(stmts) - 1
        for i, s in enumerate(stmts):
            self.stmt(s, ind, tail and i == last)
        if tail and not stmts:
            self.emit(ind, "ctx.retcode = 1")
        if len(self.f.lines) == n:
            self.emit(ind, "pass")

    def stmt(self, s, ind: int, tail: bool = False):
        loc = s.loc
        if tail and not isinstance(s, (A.Block, A.ExprStmt, A.If, A.Break,
                                       A.Return, A.Exit, A.Drop)):
            self.stmt(s, ind)
            self.emit(ind, "ctx.retcode = 1", loc)
            return
        if isinstance(s, A.Block):
            self.block(s.stmts, ind, tail)
        elif isinstance(s, A.ExprStmt):
            e = s.expr
            if isinstance(e, A.Call):
                pre, _ = self.call(e)
            else:
                pre, _ = self.route_call(e, want_value=False)
            self.emit_pre(ind, pre, loc)
        elif isinstance(s, A.Assign):
            self.assign(s, ind)
        elif isinstance(s, A.If):
            self.if_stmt(s, ind, tail)
        elif isinstance(s, A.Switch):
            self.switch_stmt(s, ind)
        elif isinstance(s, A.While):
            self.while_stmt(s, ind)
        elif isinstance(s, A.For):
            if isinstance(s.iterable, A.PVar):
                # every value of $avp(x)[*], $hdr(Via)[*] ...
                pre = []
                code = f"{self.const(s.iterable.spec.get_all)}(msg)"
            elif isinstance(s.iterable, A.ExprList):
                pre, codes = self.values_in_order(s.iterable.items, True)
                code = "(" + "".join(c + ", " for c in codes) + ")"
            else:
                pre, code = self.value_or_null(s.iterable, s.loc)
                code = f"_values({code})"
            self.emit_pre(ind, pre, loc)
            v = self.f.tmp("_v")
            setter = self.const(s.var.spec.set)
            self.emit(ind, f"for {v} in {code}:", loc)
            self.emit(ind + 1, f"{setter}(msg, {v}, '=')", loc)
            self.block(s.body.stmts, ind + 1)
        elif isinstance(s, A.Break):
            self.emit(ind, "break", loc)
        elif isinstance(s, A.Return):
            self.return_stmt(s, ind)
        elif isinstance(s, A.Exit):
            self.emit(ind, f"return {ACT_FL_EXIT}", loc)
        elif isinstance(s, A.Drop):
            self.emit(ind, f"return {DROP}", loc)
        elif isinstance(s, (A.Async, A.Launch)):
            self.async_stmt(s, ind)
        else:                                   # pragma: no cover
            raise TypeError(f"unknown statement {s!r}")

    def assign(self, s: A.Assign, ind: int):
        """``$x = v``: as OpenSIPS's do_assign, a value that is none (an
        operation with no result) or a compound assignment OpenSIPS refuses
        is logged and skipped, the script goes on; so is a value the
        variable cannot store."""
        loc = s.loc
        pre, code = self.value(s.value)
        if isinstance(s.value, A.PVar):
            code = f"_plain({code})"
        setter = self.const(s.target.spec.set)
        op = s.op
        if op not in ("=", ":="):
            getter = self.const(s.target.spec.get)
            code = f"_compound({op!r}, {getter}(msg), {code})"
            op = "="
        where = self.literal(loc)
        self.emit(ind, "try:", loc)
        self.emit_pre(ind + 1, pre, loc)
        self.emit(ind + 1, f"{setter}(msg, {code}, {op!r})", loc)
        self.emit(ind, "except _NoValue as _e:", loc)
        self.emit(ind + 1, f"_novalue({where}, _e)", loc)
        self.emit(ind, "except _PVError as _e:", loc)
        self.emit(ind + 1, f"_set_error({where}, _e)", loc)

    def if_stmt(self, s: A.If, ind: int, tail: bool = False):
        """An else-if chain whose conditions need no prelude becomes one
        if/elif/else (a long chain must not nest deeper at each step)."""
        pre, cond = self.cond(s.cond)
        self.emit_pre(ind, pre, s.loc)
        self.emit(ind, f"if {cond}:", s.loc)
        self.block(s.then.stmts, ind + 1, tail)
        while s.orelse is not None:
            nxt = s.orelse.stmts[0] if len(s.orelse.stmts) == 1 else None
            if isinstance(nxt, A.If) and not _has_call(nxt.cond) and (
                    _soft(nxt.cond) or not _may_raise(nxt.cond)):
                _, cond = self.cond(nxt.cond)
                self.emit(ind, f"elif {cond}:", nxt.loc)
                self.block(nxt.then.stmts, ind + 1, tail)
                s = nxt
                continue
            self.emit(ind, "else:", s.orelse.loc)
            self.block(s.orelse.stmts, ind + 1, tail)
            return
        if tail:                    # false, no else: the if's value is 1
            self.emit(ind, "else:", s.loc)
            self.emit(ind + 1, "ctx.retcode = 1", s.loc)

    def while_stmt(self, s: A.While, ind: int):
        pre, cond = self.cond(s.cond)
        count = self.f.tmp("_w")
        self.emit(ind, f"{count} = 0", s.loc)
        if pre:
            self.emit(ind, "while True:", s.loc)
            self.emit_pre(ind + 1, pre, s.loc)
            self.emit(ind + 1, f"if not ({cond}): break", s.loc)
        else:
            self.emit(ind, f"while {cond}:", s.loc)
        self.emit(ind + 1, f"{count} += 1", s.loc)
        self.emit(ind + 1, f"if {count} > {MAX_WHILE_LOOPS}:", s.loc)
        self.emit(ind + 2, f"_loop_limit({self.literal(s.loc)}); break",
                  s.loc)
        self.block(s.body.stmts, ind + 1)

    def switch_stmt(self, s: A.Switch, ind: int):
        pre, code = self.value_or_null(s.expr, s.loc)
        self.emit_pre(ind, pre, s.loc)
        table: Dict[Any, int] = {}
        default = len(s.cases)
        for i, c in enumerate(s.cases):
            if c.value is None:
                default = i
            elif isinstance(c.value, A.Int):
                table.setdefault(c.value.value, i)
            else:
                table.setdefault(c.value.text.lower(), i)
        k = self.f.tmp("_s")
        self.emit(ind, f"{k} = _switch_index({code}, {self.const(table)}, "
                  f"{default})", s.loc)
        self.emit(ind, "while True:", s.loc)
        for i, c in enumerate(s.cases):
            if not c.body:
                continue
            self.emit(ind + 1, f"if {k} <= {i}:", c.loc)
            self.block(c.body, ind + 2)
        self.emit(ind + 1, "break", s.loc)

    def return_stmt(self, s: A.Return, ind: int):
        if s.value is None:
            self.emit(ind, "ctx.retcode = 1", s.loc)
            self.emit(ind, "return 0", s.loc)
            return
        if isinstance(s.value, A.Int):
            self.emit(ind, f"ctx.retcode = {s.value.value}", s.loc)
            self.emit(ind, "return 0" if s.value.value
                      else f"return {ACT_FL_EXIT}", s.loc)
            return
        kind = _kind(s.value)
        t = self.f.tmp()
        if kind == "bool":
            pre, code = self.cond(s.value)
            self.emit_pre(ind, pre, s.loc)
            self.emit(ind, f"{t} = 1 if {code} else -1", s.loc)
        else:
            pre, code = self.value_or_null(s.value, s.loc)
            self.emit_pre(ind, pre, s.loc)
            if kind != "int":
                code = f"_to_int({code})"
            self.emit(ind, f"{t} = {code}", s.loc)
        self.emit(ind, f"ctx.retcode = {t}", s.loc)
        self.emit(ind, f"return 0 if {t} else {ACT_FL_EXIT}", s.loc)

    # --- calls ---------------------------------------------------------------
    def async_stmt(self, s, ind: int):
        """``async(f(...), r[, t])`` ends the route with the flags
        async_engine.script_async returns (the script goes on in route[r]);
        ``launch(f(...)[, r])`` is a call returning 1."""
        e = s.call
        if isinstance(s, A.Async):
            helper = self.const(_async_engine().script_async)
            tail = f"{s.resume!r}, {s.timeout!r}"
        else:
            helper = self.const(_async_engine().script_launch)
            tail = repr(s.report)
        where = self.literal(f"{e.loc[0]}:{e.loc[1]}")

        def invoke(fn, args):
            tup = "(" + "".join(a + ", " for a in args) + ")"
            return f"{helper}(msg, {fn}, {tup}, {tail}, {where})"
        pre, r = self.call(e, invoke, isinstance(s, A.Async))
        self.emit_pre(ind, pre, s.loc)
        if isinstance(s, A.Async):
            self.emit(ind, f"return {r} or {ACT_FL_EXIT}", s.loc)

    def call(self, e: A.Call, invoke=None, flags=False):
        """Prelude running the function (exit on 0, $rc stored) and the name
        holding its return code.

        Arguments known at fixup time are closure constants; the others
        are evaluated into temporaries first: when one cannot be evaluated
        (``mod_fix.ParamError``: NULL where a string is needed, a bad
        run-time regex ...) the error is logged with the script location
        and the call returns -1 without running the function, as OpenSIPS
        does.  A value fixed up at run time is freed after the call when
        the parameter has a free_fixup.

        ``invoke(fn, args) -> code`` replaces the plain call (async() and
        launch() hand the function to their helper); with ``flags`` the
        result is action flags, not a return code ($rc and the stop on 0
        are left to the helper)."""
        pre: List[Tuple[int, str]] = []
        evals: List[str] = []
        frees: List[str] = []
        args = []
        n = len(e.args)
        for i, p in enumerate(e.cmd.params):
            a = e.args[i] if i < n else None
            if a is None:
                value, loc = None, e.loc
            elif isinstance(a, A.Int):
                value, loc = a.value, a.loc
            elif isinstance(a, A.Str):
                value, loc = a.text, a.loc
            else:
                value, loc = a.spec, a.loc
            try:
                prep = self.mod_fix.prepare_param(p, value, self.registry)
            except Exception as err:            # a fixup refused the value
                self.errors.append(ScriptError.at(
                    loc, f"function '{e.name}' argument {i + 1}: {err}"))
                args.append("None")
                continue
            self.prepared.append(prep)
            if prep.const:
                args.append(self.literal(prep.value))
                continue
            t = self.f.tmp("_a")
            evals.append(f"{t} = {self.const(prep.get)}(msg)")
            if prep.needs_free:
                frees.append(f"{self.const(prep.free)}({t})")
            args.append(t)
        fn = self.const(e.cmd.function)
        r = self.f.tmp()
        if invoke is None:
            call = f"{r} = {fn}(msg{''.join(', ' + a for a in args)})"
        else:
            call = f"{r} = {invoke(fn, args)}"
        if evals:
            where = self.literal((e.loc, e.name))
            pre.append((0, "try:"))
            pre.extend((1, x) for x in evals)
            pre.append((0, "except _ParamError as _e:"))
            pre.append((1, f"{r} = _param_error({where}, _e)"))
            if flags:       # async(): the route ends either way
                pre.append((1, f"{r} = {ACT_FL_EXIT}"))
            pre.append((0, "else:"))
            pre.append((1, call))
            pre.extend((1, x) for x in frees)
            if not flags:
                pre.append((0, f"ctx.retcode = {r}"))
        elif flags:
            pre.append((0, call))
        else:
            pre.append((0, f"ctx.retcode = {call}"))
        if not flags:
            pre.append((0, f"if not {r}: return {ACT_FL_EXIT}"))
        return pre, r

    def route_call(self, e: A.RouteCall, want_value: bool = True):
        pre, vals = self.values_in_order(e.args, null=True)
        fn = self.sub_fn[e.name]
        saved, st = self.f.tmp("_p"), self.f.tmp("_st")
        tup = "(" + "".join(v + ", " for v in vals) + ")"
        deep = e.name in self.an.recursive
        pre.append((0, f"{saved} = ctx.params"))
        pre.append((0, f"ctx.params = {tup}"))
        if deep:
            pre.append((0, f"if _depth[0] >= {MAX_REC_LEV}: "
                        f"return _too_deep({self.literal(e.loc)})"))
            pre.append((0, "_depth[0] += 1"))
        pre.append((0, "try:"))
        pre.append((1, f"{st} = {fn}(msg)"))
        pre.append((0, "finally:"))
        pre.append((1, f"ctx.params = {saved}"))
        if deep:
            pre.append((1, "_depth[0] -= 1"))
        pre.append((0, f"if {st}: return {st}"))
        if not want_value:
            return pre, None
        r = self.f.tmp()
        pre.append((0, f"{r} = ctx.retcode"))
        return pre, r

    # --- expressions -------------------------------------------------------
    def expr(self, e):
        """(prelude, python expression, kind); kind is "bool", "rc" (a
        return code: true when > 0), "int", "str", "null" or "val" (any
        script value)."""
        if isinstance(e, A.Int):
            return [], repr(e.value), "int"
        if isinstance(e, A.Str):
            if e.fmt.is_constant:
                return [], repr(e.fmt.value), "str"
            return [], f"{self.const(e.fmt.eval)}(msg)", "str"
        if isinstance(e, A.Null):
            return [], "None", "null"
        if isinstance(e, A.PVar):
            return [], f"{self.const(e.spec.get)}(msg)", "val"
        if isinstance(e, A.Call):
            pre, r = self.call(e)
            return pre, r, "rc"
        if isinstance(e, A.RouteCall):
            pre, r = self.route_call(e)
            return pre, r, "rc"
        if isinstance(e, A.Unary):
            return self.unary(e)
        if isinstance(e, A.Binary):
            return self.binary(e)
        if isinstance(e, A.ExprList):
            pre, codes = self.values_in_order(e.items)
            return pre, "(" + "".join(c + ", " for c in codes) + ")", "val"
        raise TypeError(f"unknown expression {e!r}")   # pragma: no cover

    def value(self, e):
        """(prelude, expression giving an int, str or None); the
        expression may raise NoValue (an operation OpenSIPS gives no value:
        the caller decides what that means).  A comparison or a logical
        operator used as a value is 1, 0, or -1 when OpenSIPS cannot
        evaluate it."""
        pre, code, kind = self.expr(e)
        if kind == "bool":
            if _may_raise(e):
                t = self.f.tmp()
                pre = [(0, "try:")] + [(r + 1, x) for r, x in pre]
                pre += [(1, f"{t} = 1 if {code} else 0"),
                        (0, "except _NoValue:"), (1, f"{t} = -1")]
                return pre, t
            code = f"(1 if {code} else 0)"
        return pre, code

    def value_or_null(self, e, loc):
        """A value where no value is NULL (logged): route() arguments,
        return, switch, for lists."""
        pre, code = self.value(e)
        if not _may_raise(e):
            return pre, code
        t = self.f.tmp()
        out = [(0, "try:")] + [(r + 1, x) for r, x in pre]
        out += [(1, f"{t} = {code}"), (0, "except _NoValue as _e:"),
                (1, f"{t} = None"),
                (1, f"_cond_error({self.literal(loc)}, _e)")]
        return out, t

    def cond(self, e):
        """(prelude, python expression that is true when e is).  As in
        OpenSIPS, an error in a comparison makes the whole condition
        false (logged)."""
        if _soft(e):
            # an error can only end the condition as false: the helpers
            # that log it and answer false need no try block
            self.soft += 1
            try:
                pre, code, kind = self.expr(e)
            finally:
                self.soft -= 1
            return pre, self._truth(code, kind)
        pre, code, kind = self.expr(e)
        code = self._truth(code, kind)
        if not _may_raise(e):
            return pre, code
        t = self.f.tmp("_c")
        out = [(0, "try:")] + [(r + 1, x) for r, x in pre]
        out += [(1, f"{t} = {code}"), (0, "except _NoValue as _e:"),
                (1, f"{t} = _cond_error({self.literal(e.loc)}, _e)")]
        return out, t

    @staticmethod
    def _truth(code: str, kind: str) -> str:
        if kind == "bool":
            return code
        if kind == "rc":
            return f"{code} > 0"
        if kind == "int":
            return f"{code} != 0"
        if kind == "null":
            return "False"
        return f"_truth({code})"

    def values_in_order(self, items, null: bool = False):
        """Values of several expressions evaluated left to right (with
        null, an operation with no value gives NULL)."""
        pre: List[Tuple[int, str]] = []
        codes: List[str] = []
        for item in items:
            if null:
                p, code = self.value_or_null(item, item.loc)
            else:
                p, code = self.value(item)
            if p and codes:
                for i, c in enumerate(codes):
                    if not _simple(c):
                        t = self.f.tmp()
                        pre.append((0, f"{t} = {c}"))
                        codes[i] = t
            pre.extend(p)
            codes.append(code)
        return pre, codes

    def truth_of(self, e):
        """(prelude, code) of e's truth inside a condition: an operation
        with no value is false there (OpenSIPS's eval_elem gives 0)."""
        pre, code, kind = self.expr(e)
        code = self._truth(code, kind)
        if kind == "bool" or not _may_raise(e):
            return pre, code
        t = self.f.tmp("_c")
        out = [(0, "try:")] + [(r + 1, x) for r, x in pre]
        out += [(1, f"{t} = {code}"), (0, "except _NoValue:"),
                (1, f"{t} = False")]
        return out, t

    def unary(self, e: A.Unary):
        if e.op == "!":
            if isinstance(e.operand, (A.Call, A.RouteCall)):
                # 0 has already stopped the script
                pre, code, _ = self.expr(e.operand)
                return pre, f"{code} < 0", "bool"
            pre, code = self.truth_of(e.operand)
            return pre, f"(not {code})", "bool"
        pre, code, kind = self.expr(e.operand)
        if kind == "bool":
            code, kind = f"(1 if {code} else 0)", "int"
        if kind in ("int", "rc"):
            if e.op == "~":
                return pre, f"(~{code})", "int"
            return pre, f"_w32(-{code})", "int"
        fn = "_bnot" if e.op == "~" else "_neg"
        return pre, f"{fn}({code})", "int"

    def binary(self, e: A.Binary):
        op = e.op
        if op in ("&&", "||"):
            pl, cl = self.truth_of(e.left)
            pr, cr = self.truth_of(e.right)
            if not pr:
                py = "and" if op == "&&" else "or"
                return pl, f"({cl} {py} {cr})", "bool"
            t = self.f.tmp("_c")
            pre = pl + [(0, f"{t} = {cl}"),
                        (0, f"if {t}:" if op == "&&" else f"if not {t}:")]
            pre += [(rel + 1, text) for rel, text in pr]
            pre.append((1, f"{t} = {cr}"))
            return pre, t, "bool"
        if op in ("=~", "!~"):
            pre, (left, right) = self.values_in_order([e.left, e.right])
            neg = "not " if op == "!~" else ""
            r = e.right
            if isinstance(r, A.Str) and r.fmt.is_constant:
                rx = self.const(compile_regex(r.fmt.value))
                return pre, f"({neg}_match({rx}, {left}))", "bool"
            if self.soft:
                fn = "_nmatch_dyn_s" if neg else "_match_dyn_s"
                return pre, f"{fn}({left}, {right}, " \
                    f"{self.literal(e.loc)})", "bool"
            return pre, f"({neg}_match_dyn({left}, {right}))", "bool"
        pre, (left, right) = self.values_in_order([e.left, e.right])
        lkind, rkind = _kind(e.left), _kind(e.right)
        lkind = "int" if lkind == "bool" else lkind
        rkind = "int" if rkind == "bool" else rkind
        if op in _COMPARE:
            return pre, self.compare(e, left, right, lkind, rkind), "bool"
        if lkind == "int" and rkind == "int":
            if op in _WRAP:
                if op == "<<":
                    return pre, f"_w32({left} << ({right} & 31))", "int"
                return pre, f"_w32({left} {op} {right})", "int"
            if op == ">>":
                return pre, f"({left} >> ({right} & 31))", "int"
            if op in ("&", "|", "^"):
                return pre, f"({left} {op} {right})", "int"
            return pre, f"_arith({op!r}, {left}, {right}, False)", "int"
        text = _has_text(e.right)
        if op == "+":
            fn = "_add" if text else "_add_c"
            return pre, f"{fn}({left}, {right})", "val"
        return pre, f"_arith({op!r}, {left}, {right}, {text})", "val"

    def compare(self, e, left, right, lkind, rkind) -> str:
        """The code of a comparison (== != < > <= >=), OpenSIPS's
        comp_scriptvar: see runtime.cmp_*."""
        op = e.op
        ln, rn = isinstance(e.left, A.Null), isinstance(e.right, A.Null)
        if ln or rn:
            if ln and rn:
                return "True" if op == "==" else "False"
            other = right if ln else left
            if op == "==":
                return f"({other} is None)"
            if op == "!=":
                return f"({other} is not None)"
            return "False"                   # NULL is never ordered
        if lkind == "int" and rkind == "int":
            return f"({left} {op} {right})"
        if rkind == "int" or lkind == "int":
            if rkind != "int":
                left, right, op = right, left, _MIRROR[op]
            if self.soft:
                where = self.literal(e.loc)
                if op == "==":
                    return f"_eq_int_s({left}, {right}, {where})"
                if op == "!=":
                    return f"_ne_int_s({left}, {right}, {where})"
                return f"_cmp_vn_s({op!r}, {left}, {right}, {where})"
            if op == "==":
                return f"_eq_int({left}, {right})"
            return f"_cmp_vn({op!r}, {left}, {right})"
        cr, cl = _const_str(e.right), _const_str(e.left)
        if cr is not None:
            low = repr(runtime._low(cr))
            if op in ("==", "!="):
                neg = "not " if op == "!=" else ""
                return f"({neg}_eq_str({left}, {low}))"
            return f"_cmp_vs({op!r}, {left}, {low})"
        if cl is not None:
            low = repr(runtime._low(cl))
            return f"_cmp_vs({_MIRROR[op]!r}, {right}, {low})"
        return f"_cmp_vv({op!r}, {left}, {right})"


def _async_engine():
    from .. import async_engine
    return async_engine


def _kind(e) -> str:
    """The static kind of an expression without generating code: "int"
    (an integer computed by the script: it has no text), "str", "null",
    "bool" or "val" (anything)."""
    if isinstance(e, (A.Int, A.Call, A.RouteCall)):
        return "int"
    if isinstance(e, A.Str):
        return "str"
    if isinstance(e, A.Null):
        return "null"
    if isinstance(e, A.Unary):
        return "bool" if e.op == "!" else "int"
    if isinstance(e, A.Binary):
        if e.op in _ARITH:
            if _kind(e.left) in ("int", "bool") and \
                    _kind(e.right) in ("int", "bool"):
                return "int"
            return "val"
        return "bool"
    return "val"


def _soft(e) -> bool:
    """Whether an error in condition e can only make it false: e is a
    comparison (or several under &&) whose operands cannot fail."""
    if isinstance(e, A.Binary):
        if e.op == "&&":
            return (_soft(e.left) or not _may_raise(e.left)) and \
                (_soft(e.right) or not _may_raise(e.right))
        if e.op in _COMPARE or e.op in ("=~", "!~"):
            return not _may_raise(e.left) and not _may_raise(e.right)
    return False


def _has_text(e) -> bool:
    """Whether an integer value of e has its text (OpenSIPS's PV_VAL_STR):
    only one read from a variable does."""
    return isinstance(e, (A.PVar, A.Str, A.Null))


def _may_raise(e) -> bool:
    """Whether evaluating e may raise NoValue (an operation with no value,
    a comparison OpenSIPS cannot make)."""
    if isinstance(e, A.Unary):
        if e.op == "!":
            return _may_raise(e.operand)
        return _kind(e.operand) not in ("int", "bool") or \
            _may_raise(e.operand)
    if isinstance(e, A.Binary):
        if _may_raise(e.left) or _may_raise(e.right):
            return True
        op = e.op
        lk, rk = _kind(e.left), _kind(e.right)
        if op in _ARITH:
            return not (lk in ("int", "bool") and rk in ("int", "bool"))
        if op in ("=~", "!~"):
            return not (isinstance(e.right, A.Str) and e.right.fmt
                        is not None and e.right.fmt.is_constant)
        if op in _COMPARE:
            if isinstance(e.left, A.Null) or isinstance(e.right, A.Null):
                return False
            # a number on one side: the other must carry an integer
            return (lk in ("int", "bool")) != (rk in ("int", "bool"))
        return False                        # && ||
    if isinstance(e, A.ExprList):
        return any(_may_raise(x) for x in e.items)
    return False


def _has_call(e) -> bool:
    """Whether evaluating e runs a function or a route (needs a prelude)."""
    if isinstance(e, (A.Call, A.RouteCall)):
        return True
    if isinstance(e, A.Unary):
        return _has_call(e.operand)
    if isinstance(e, A.Binary):
        return _has_call(e.left) or _has_call(e.right)
    if isinstance(e, A.ExprList):
        return any(_has_call(x) for x in e.items)
    return False


def _const_str(e) -> Optional[str]:
    if isinstance(e, A.Str) and e.fmt.is_constant:
        return e.fmt.value
    return None


def _simple(code: str) -> bool:
    """A Python expression with no side effect and no call."""
    return "(" not in code
