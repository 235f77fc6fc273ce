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
    "_eq": runtime.eq, "_eq_str": runtime.eq_str, "_eq_int": runtime.eq_int,
    "_lt": runtime.lt, "_gt": runtime.gt, "_le": runtime.le,
    "_ge": runtime.ge, "_match": runtime.match,
    "_match_dyn": runtime.match_dyn, "_add": runtime.add,
    "_div": runtime.div, "_mod": runtime.mod, "_to_int": runtime.to_int,
    "_shl": runtime.shl, "_shr": runtime.shr,
    "_truth": runtime.truth, "_values": runtime.values,
    "_switch_index": runtime.switch_index,
    "_too_deep": runtime.too_deep, "_loop_limit": runtime.loop_limit,
    "_param_error": runtime.param_error,
}
_CMP_HELPER = {"<": "_lt", ">": "_gt", "<=": "_le", ">=": "_ge"}
_INT_OPS = ("-", "*", "|", "&", "^")
_SHIFT = {"<<": "_shl", ">>": "_shr"}


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
        self._const_ids: Dict[int, str] = {}
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
            pre, code = self.value(s.value)
            self.emit_pre(ind, pre, loc)
            setter = self.const(s.target.spec.set)
            self.emit(ind, f"{setter}(msg, {code}, {s.op!r})", loc)
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
            else:
                pre, code = self.value(s.iterable)
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
        else:                                   # pragma: no cover
            raise TypeError(f"unknown statement {s!r}")

    def if_stmt(self, s: A.If, ind: int, tail: bool = False):
        """An else-if chain whose conditions need no prelude becomes one
        if/elif/else (a long chain must not nest deeper at each step)."""
        pre, cond = self.cond(s.cond)
        self.emit_pre(ind, pre, s.loc)
        self.emit(ind, f"if {cond}:", s.loc)
        self.block(s.then.stmts, ind + 1, tail)
        while s.orelse is not None:
            nxt = s.orelse.stmts[0] if len(s.orelse.stmts) == 1 else None
            if isinstance(nxt, A.If) and not _has_call(nxt.cond):
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
        pre, code = self.value(s.expr)
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
        pre, code, kind = self.expr(s.value)
        self.emit_pre(ind, pre, s.loc)
        t = self.f.tmp()
        if kind in ("rc", "int"):
            self.emit(ind, f"{t} = {code}", s.loc)
        elif kind == "bool":
            self.emit(ind, f"{t} = 1 if {code} else -1", s.loc)
        else:
            self.emit(ind, f"{t} = _to_int({code})", s.loc)
        self.emit(ind, f"ctx.retcode = {t}", s.loc)
        self.emit(ind, f"return 0 if {t} else {ACT_FL_EXIT}", s.loc)

    # --- calls ---------------------------------------------------------------
    def call(self, e: A.Call):
        """Prelude running the function (exit on 0, $rc stored) and the name
        holding its return code.

        Arguments known at fixup time are closure constants; the others
        are evaluated into temporaries first: when one cannot be evaluated
        (``mod_fix.ParamError``: NULL where a string is needed, a bad
        run-time regex ...) the error is logged with the script location
        and the call returns -1 without running the function, as OpenSIPS
        does.  A value fixed up at run time is freed after the call when
        the parameter has a free_fixup."""
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
        call = f"{r} = {fn}(msg{''.join(', ' + a for a in args)})"
        if evals:
            where = self.literal((e.loc, e.name))
            pre.append((0, "try:"))
            pre.extend((1, x) for x in evals)
            pre.append((0, "except _ParamError as _e:"))
            pre.append((1, f"{r} = _param_error({where}, _e)"))
            pre.append((0, "else:"))
            pre.append((1, call))
            pre.extend((1, x) for x in frees)
            pre.append((0, f"ctx.retcode = {r}"))
        else:
            pre.append((0, f"ctx.retcode = {call}"))
        pre.append((0, f"if not {r}: return {ACT_FL_EXIT}"))
        return pre, r

    def route_call(self, e: A.RouteCall, want_value: bool = True):
        pre, vals = self.values_in_order(e.args)
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
            if e.op == "!":
                pre, code, kind = self.expr(e.operand)
                if kind == "rc":            # 0 has already stopped the script
                    return pre, f"{code} < 0", "bool"
                return pre, f"(not {self._truth(code, kind)})", "bool"
            pre, code, kind = self.expr(e.operand)
            if kind not in ("int", "rc"):
                code = f"_to_int({code})"
            return pre, f"({e.op}{code})", "int"
        if isinstance(e, A.Binary):
            return self.binary(e)
        if isinstance(e, A.ExprList):
            pre, codes = self.values_in_order(e.items)
            return pre, "(" + "".join(c + ", " for c in codes) + ")", "val"
        raise TypeError(f"unknown expression {e!r}")   # pragma: no cover

    def value(self, e):
        """(prelude, expression giving an int, str or None)."""
        pre, code, kind = self.expr(e)
        if kind == "bool":
            code = f"(1 if {code} else 0)"
        return pre, code

    def cond(self, e):
        """(prelude, python expression that is true when e is)."""
        pre, code, kind = self.expr(e)
        return pre, self._truth(code, kind)

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

    def values_in_order(self, items):
        """Values of several expressions evaluated left to right."""
        pre: List[Tuple[int, str]] = []
        codes: List[str] = []
        for item in items:
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

    def binary(self, e: A.Binary):
        op = e.op
        if op in ("&&", "||"):
            pl, cl = self.cond(e.left)
            pr, cr = self.cond(e.right)
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
            return pre, f"({neg}_match_dyn({left}, {right}))", "bool"
        pre, (left, right) = self.values_in_order([e.left, e.right])
        lkind, rkind = _kind(e.left), _kind(e.right)
        if op in ("==", "!="):
            neg = "not " if op == "!=" else ""
            if isinstance(e.left, A.Null) or isinstance(e.right, A.Null):
                other = right if isinstance(e.left, A.Null) else left
                if isinstance(e.left, A.Null) and isinstance(e.right, A.Null):
                    other = "None"
                isop = "is not" if op == "!=" else "is"
                return pre, f"({other} {isop} None)", "bool"
            if lkind == "int" and rkind == "int":
                return pre, f"({left} {op} {right})", "bool"
            if _const_str(e.right) is not None:
                low = repr(_const_str(e.right).lower())
                return pre, f"({neg}_eq_str({left}, {low}))", "bool"
            if _const_str(e.left) is not None:
                low = repr(_const_str(e.left).lower())
                return pre, f"({neg}_eq_str({right}, {low}))", "bool"
            if isinstance(e.right, A.Int):
                return pre, f"({neg}_eq_int({left}, {right}))", "bool"
            if isinstance(e.left, A.Int):
                return pre, f"({neg}_eq_int({right}, {left}))", "bool"
            return pre, f"({neg}_eq({left}, {right}))", "bool"
        if op in _CMP_HELPER:
            if lkind == "int" and rkind == "int":
                return pre, f"({left} {op} {right})", "bool"
            return pre, f"{_CMP_HELPER[op]}({left}, {right})", "bool"
        if op == "+":
            if lkind == "int" and rkind == "int":
                return pre, f"({left} + {right})", "int"
            return pre, f"_add({left}, {right})", "val"
        if op == "/":
            return pre, f"_div({left}, {right})", "int"
        if op == "%":
            return pre, f"_mod({left}, {right})", "int"
        if op in _SHIFT:
            return pre, f"{_SHIFT[op]}({left}, {right})", "int"
        if op in _INT_OPS:
            if lkind != "int":
                left = f"_to_int({left})"
            if rkind != "int":
                right = f"_to_int({right})"
            return pre, f"({left} {op} {right})", "int"
        raise TypeError(f"unknown operator {op}")   # pragma: no cover


def _kind(e) -> str:
    """The static kind of an expression without generating code."""
    if isinstance(e, A.Int):
        return "int"
    if isinstance(e, (A.Call, A.RouteCall)):
        return "int"
    if isinstance(e, A.Unary) and e.op in ("-", "~"):
        return "int"
    if isinstance(e, A.Binary) and (e.op in _INT_OPS
                                    or e.op in ("/", "%", "<<", ">>")
                                    or (e.op == "+" and _kind(e.left) == "int"
                                        and _kind(e.right) == "int")):
        return "int"
    return "val"


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
