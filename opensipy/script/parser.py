"""The script's parser: tokens to the syntax tree of :mod:`.ast`.

Recursive descent over the OpenSIPS 3.x grammar.  A syntax error is recorded
and the parser resynchronises (at the next ``;`` or ``}`` inside a block, at
the next top-level keyword outside), so one run reports every error;
:func:`parse_file` raises :class:`ScriptErrors` when there was any.

Operators group exactly as in OpenSIPS's grammar (its cfg.y), loosest
first:

* ``&&`` ``||``: one precedence, left to right (``a || b && c`` is
  ``(a || b) && c``);
* ``|`` ``&`` ``^`` ``<<`` ``>>``: one precedence, left to right;
* ``+`` ``-`` ``*`` ``/`` ``%``: one precedence, left to right
  (``7 + 3 * 2`` is 20);
* unary ``!`` ``~`` (and ``-``), right to left;
* comparisons ``== != < > <= >= =~ !~``: in OpenSIPS a comparison is an
  operand of its own (a variable compared with a variable, string, number
  or NULL), so it binds tighter than every other operator:
  ``!$a == 1`` is ``!($a == 1)`` and ``$a == 1 + 1`` is ``($a == 1) + 1``.
  Comparisons do not chain (``a == b == c`` is a syntax error there too).

Where two operators meet without parentheses and OpenSIPS groups them
otherwise than C-like languages do (the usual source of a wrong script),
the parser adds a warning to ``Script.warnings`` saying how the expression
is evaluated; ``opensipy -c`` prints them.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional

from . import ast as A
from .errors import ScriptError, ScriptErrors
from .lexer import Lexer, Token, parse_number

TOP_WORDS = {"loadmodule", "modparam", "include_file", "import_file",
             "request_route"} | set(A.ROUTE_KINDS)
MAX_INCLUDE_DEPTH = 10

# cfg.y: %left OR AND / %left BOR BAND BXOR BLSHIFT BRSHIFT /
# %left PLUS MINUS SLASH MULT MODULO / %right NOT BNOT, loosest first
_PRECEDENCE = [("||", "&&"), ("|", "&", "^", "<<", ">>"),
               ("+", "-", "*", "/", "%")]
_COMPARE = ("==", "!=", "<", ">", "<=", ">=", "=~", "!~")
# how C (and most languages) rank the same operators: a warning is given
# where OpenSIPS's grouping differs from the one these ranks give
_C_RANK = {"||": 1, "&&": 2, "|": 3, "^": 4, "&": 5,
           "==": 6, "!=": 6, "=~": 6, "!~": 6,
           "<": 7, ">": 7, "<=": 7, ">=": 7, "<<": 8, ">>": 8,
           "+": 9, "-": 9, "*": 10, "/": 10, "%": 10}
_RULE = {0: "&& and || have one precedence and group left to right",
         1: "| & ^ << >> have one precedence and group left to right",
         2: "+ - * / % have one precedence and group left to right"}
_RULE_CMP = "a comparison binds tighter than any other operator"
# cfg.y assignop: EQUAL COLONEQ PLUSEQ MINUSEQ SLASHEQ MULTEQ MODULOEQ
# BANDEQ BOREQ BXOREQ (there is no <<= or >>=)
_ASSIGN_OPS = ("=", ":=", "+=", "-=", "/=", "*=", "%=", "&=", "|=", "^=")
_SOCKET_RE = re.compile(r"(?:[A-Za-z_]+:)?(?:\[[0-9A-Fa-f:.]*\]|\*|"
                        r"[A-Za-z0-9_.\-]+)(?::(?:[0-9]+|\*))?(?:\s|\Z)")
_ID_VALUE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SOCKET_ARG_CMDS = ("force_send_socket",)


class _Sync(Exception):
    """A syntax error was recorded; unwind to the nearest resync point."""


class Parser:
    def __init__(self, text: str, file: str, errors: List[ScriptError],
                 includes: tuple = (), warnings: Optional[list] = None):
        self.file = file
        self.errors = errors
        self.warnings: List[ScriptError] = [] if warnings is None \
            else warnings
        self.lexer = Lexer(text, file, errors)
        self.includes = includes + (os.path.abspath(file),)
        self.buf: List[Token] = []
        self.prev: Optional[Token] = None
        self.tok = self._lex()
        self.for_list = 0
        self.mark = self.tok.mark

    # --- token stream ------------------------------------------------------
    def _lex(self) -> Token:
        return self.buf.pop(0) if self.buf else self._lex_new()

    def _lex_new(self) -> Token:
        n = len(self.errors)
        t = self.lexer.next()
        t.mark = n
        return t

    def advance(self) -> Token:
        t = self.tok
        self.prev = t
        self.tok = self._lex()
        return t

    def peek(self) -> Token:
        if not self.buf:
            self.buf.append(self._lex_new())
        return self.buf[0]

    def fail(self, loc, message: str):
        # one error per statement: one already recorded since the statement
        # began (often the lexer's) explains this one
        if len(self.errors) <= self.mark:
            self.errors.append(ScriptError.at(loc, message))
        raise _Sync()

    def after_prev(self):
        p = self.prev
        if p is None:
            return self.tok.loc
        return (p.loc[0], p.loc[1], p.loc[2] + (p.end - p.start))

    def expect_op(self, op: str, what: str = "") -> Token:
        if self.tok.is_op(op):
            return self.advance()
        where = f" {what}" if what else ""
        if op == ";":
            self.fail(self.after_prev(), f"missing ';'{where}")
        self.fail(self.tok.loc,
                  f"expected '{op}'{where}, found {self.tok.describe()}")

    def expect_kind(self, kind: str, what: str) -> Token:
        if self.tok.kind == kind:
            return self.advance()
        self.fail(self.tok.loc, f"expected {what}, found {self.tok.describe()}")

    def skip_semicolons(self):
        while self.tok.is_op(";"):
            self.advance()

    # --- top level -----------------------------------------------------------
    def parse_top(self) -> list:
        top = []
        while self.tok.kind != "EOF":
            try:
                self.top_item(top)
            except _Sync:
                self.resync_top()
        return top

    def resync_top(self):
        """Skip to the next token that may start a top-level item."""
        depth = 0
        while self.tok.kind != "EOF":
            t = self.tok
            if depth <= 0 and t.kind == "ID" and t.loc[2] == 1 and (
                    t.value in TOP_WORDS or self.peek().is_op("=")):
                return
            if t.is_op("{"):
                depth += 1
            elif t.is_op("}"):
                depth -= 1
            self.advance()

    def top_item(self, top: list):
        t = self.tok
        self.mark = t.mark
        if t.is_op(";"):
            self.advance()
            return
        if t.kind != "ID":
            self.fail(t.loc, f"unexpected {t.describe()} at top level")
        word = t.value
        if word == "loadmodule":
            self.advance()
            path = self.expect_kind("STR", "the module file name")
            top.append(A.LoadModule(t.loc, path.value))
            self.skip_semicolons()
        elif word == "modparam":
            top.append(self.modparam())
        elif word in ("include_file", "import_file"):
            self.advance()
            path = self.expect_kind("STR", "a file name")
            self.skip_semicolons()
            sub = self.open_include(t.loc, path.value, word == "import_file")
            if sub is not None:
                top.extend(sub.parse_top())
        elif word in A.ROUTE_KINDS or word == "request_route":
            top.append(self.route_block())
        elif self.peek().is_op("="):
            top.append(self.global_param())
        else:
            self.fail(t.loc, f"unexpected '{word}' at top level")

    def global_param(self) -> A.GlobalParam:
        name = self.advance()
        assert self.tok.is_op("=")
        # the value is read raw from the lexer: nothing is buffered past '='
        self.prev = self.tok
        value = self.lexer.raw_value()
        if isinstance(value, Token):            # a quoted string
            self.tok = self._lex()
            self.skip_semicolons()
            return A.GlobalParam(name.loc, name.value, value.value, "str",
                                 self.lexer.text[value.start:value.end])
        raw, loc = value
        self.tok = self._lex()
        if not raw:
            self.fail(loc, f"missing value for global parameter "
                      f"'{name.value}'")
        num = raw[1:] if raw[:1] in "+-" else raw
        if num[:1].isdigit() and parse_number(num) is not None:
            v = parse_number(num)
            return A.GlobalParam(name.loc, name.value,
                                 -v if raw[0] == "-" else v, "int", raw)
        if num[:1].isdigit() and _ID_VALUE_RE.match("_" + num) \
                and raw[:1] in "+-0123456789":
            self.fail(loc, f"bad number '{raw}'")
        if _ID_VALUE_RE.match(raw):
            return A.GlobalParam(name.loc, name.value, raw, "id", raw)
        if not _SOCKET_RE.match(raw):
            self.fail(loc, f"bad value '{raw}' for global parameter "
                      f"'{name.value}'")
        return A.GlobalParam(name.loc, name.value, raw, "socket", raw)

    def modparam(self) -> A.ModParam:
        start = self.advance()
        self.expect_op("(", "after modparam")
        mod = self.expect_kind("STR", "the module name (a string)")
        self.expect_op(",", "after the module name")
        param = self.expect_kind("STR", "the parameter name (a string)")
        self.expect_op(",", "after the parameter name")
        t = self.tok
        if t.kind == "STR":
            value, kind = t.value, "str"
        elif t.kind == "INT":
            value, kind = t.value, "int"
        elif t.is_op("-") and self.peek().kind == "INT":
            self.advance()
            value, kind = -self.tok.value, "int"
        elif t.kind == "ID":
            value, kind = t.value, "id"
        else:
            self.fail(t.loc, "modparam value must be an integer or a "
                      f"string, found {t.describe()}")
        self.advance()
        self.expect_op(")", "to close modparam")
        self.skip_semicolons()
        return A.ModParam(start.loc, mod.value, param.value, value, kind)

    def open_include(self, loc, path: str, optional: bool):
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(self.file), path)
        if os.path.abspath(path) in self.includes:
            self.errors.append(ScriptError.at(
                loc, f"file '{path}' includes itself"))
            return None
        if len(self.includes) > MAX_INCLUDE_DEPTH:
            self.errors.append(ScriptError.at(loc, "includes nested too deep"))
            return None
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            if not optional:
                self.errors.append(ScriptError.at(
                    loc, f"cannot open included file '{path}': "
                    f"{e.strerror or e}"))
            return None
        return Parser(text, path, self.errors, self.includes, self.warnings)

    def route_name(self) -> str:
        t = self.tok
        if t.kind in ("ID", "STR"):
            self.advance()
            return t.value
        if t.kind == "INT":
            self.advance()
            return str(t.value)
        self.fail(t.loc, f"expected a route name, found {t.describe()}")

    def route_block(self) -> A.RouteBlock:
        start = self.advance()
        kind = "route" if start.value == "request_route" else start.value
        name = seconds = mode = None
        if self.tok.is_op("["):
            self.advance()
            name = self.route_name()
            if kind == "timer_route":
                self.expect_op(",", "between the timer name and its interval")
                t = self.expect_kind("INT", "the timer interval (seconds)")
                seconds = t.value
                if seconds <= 0:
                    self.fail(t.loc, "the timer interval must be at least "
                              "1 second")
            elif kind == "event_route" and self.tok.is_op(","):
                self.advance()
                t = self.tok
                if t.kind != "ID" or t.value.lower() not in ("sync", "async"):
                    self.fail(t.loc, "event_route mode must be sync or async")
                mode = self.advance().value.lower()
            self.expect_op("]", f"after the {kind} name")
        if name is None and kind in ("failure_route", "branch_route",
                                     "timer_route", "event_route"):
            self.fail(self.tok.loc, f"{kind} needs a name: {kind}[name]")
        if name is not None and kind in ("error_route", "local_route",
                                         "startup_route"):
            self.fail(start.loc, f"{kind} takes no name")
        body = self.block(f"{kind}")
        return A.RouteBlock(start.loc, kind, name, body, seconds, mode)

    # --- statements ----------------------------------------------------------
    def block(self, what: str) -> A.Block:
        opening = self.expect_op("{", f"to open the {what} block")
        stmts = self.statements(opening)
        return A.Block(opening.loc, stmts)

    def statements(self, opening: Optional[Token]) -> list:
        """Statements up to the '}' matching opening (consumed), or up to
        the end of the file when opening is None."""
        stmts = []
        while True:
            t = self.tok
            if t.is_op("}") and opening is not None:
                self.advance()
                return stmts
            if t.kind == "EOF" or (opening is not None and self.starts_top()):
                if opening is not None:
                    self.errors.append(ScriptError.at(
                        opening.loc, "unclosed block: '{' has no matching "
                        "'}'"))
                    raise _Sync()
                return stmts
            if t.is_op("}"):
                self.errors.append(ScriptError.at(t.loc, "unexpected '}'"))
                self.advance()
                continue
            try:
                self.statement(stmts)
            except _Sync:
                self.resync_stmt()

    def starts_top(self) -> bool:
        """A route block or loadmodule/modparam at the start of a line:
        the block before it was not closed."""
        t = self.tok
        if t.kind != "ID" or t.loc[2] != 1 or t.value not in TOP_WORDS:
            return False
        nxt = self.peek()
        if t.value == "route":
            return nxt.is_op("[") or nxt.is_op("{")
        return t.value != "include_file" and t.value != "import_file"

    def resync_stmt(self):
        depth = 0
        while self.tok.kind != "EOF":
            t = self.tok
            if depth == 0 and self.starts_top():
                return
            if t.is_op("{"):
                depth += 1
            elif t.is_op("}"):
                if depth == 0:
                    return
                depth -= 1
                if depth == 0:
                    self.advance()
                    return
            elif t.is_op(";") and depth == 0:
                self.advance()
                return
            self.advance()

    def body(self, what: str) -> A.Block:
        """The body of if/else/while/for: a block or a single statement."""
        if self.tok.is_op("{"):
            return self.block(what)
        loc = self.tok.loc
        stmts = []
        self.statement(stmts)
        return A.Block(loc, stmts)

    def statement(self, out: list):
        t = self.tok
        loc = t.loc
        self.mark = t.mark
        if t.is_op(";"):
            self.advance()
            return
        if t.is_op("{"):
            out.append(self.block("nested"))
            return
        if t.kind == "PVAR":
            target = A.PVar(loc, self.advance().value)
            if not (self.tok.kind == "OP" and self.tok.value in _ASSIGN_OPS):
                self.fail(self.tok.loc, "expected an assignment operator "
                          f"({' '.join(_ASSIGN_OPS)}) after {target.text}, "
                          "found "
                          f"{self.tok.describe()}")
            op = self.advance().value
            value = self.expr()
            self.expect_op(";", "after the assignment")
            out.append(A.Assign(loc, target, op, value))
            return
        if t.kind != "ID":
            self.fail(loc, f"unexpected {t.describe()}")
        word = t.value
        if word == "if":
            out.append(self.if_stmt())
        elif word == "switch":
            out.append(self.switch_stmt())
        elif word == "while":
            self.advance()
            cond = self.paren_cond("while")
            out.append(A.While(loc, cond, self.body("while")))
        elif word == "for":
            out.append(self.for_stmt())
        elif word in ("break", "exit", "drop"):
            self.advance()
            self.expect_op(";", f"after '{word}'")
            out.append({"break": A.Break, "exit": A.Exit,
                        "drop": A.Drop}[word](loc))
        elif word == "return":
            self.advance()
            value = None
            if not self.tok.is_op(";"):
                value = self.expr()
            self.expect_op(";", "after 'return'")
            out.append(A.Return(loc, value))
        elif word in ("include_file", "import_file"):
            self.advance()
            path = self.expect_kind("STR", "a file name")
            self.skip_semicolons()
            sub = self.open_include(loc, path.value, word == "import_file")
            if sub is not None:
                out.extend(sub.statements(None))
        elif word in ("async", "launch") and self.peek().is_op("("):
            out.append(self.async_stmt(word))
        elif word in ("else", "case", "default"):
            self.fail(loc, f"'{word}' without "
                      f"{'if' if word == 'else' else 'switch'}")
        else:
            nxt = self.peek()
            if nxt.kind == "OP" and nxt.value in _ASSIGN_OPS:
                self.fail(loc, f"cannot assign to '{word}': only variables "
                          f"($var(x), $avp(y), ...) can be assigned")
            e = self.call_or_route()
            self.expect_op(";", f"after {e.name}()")
            out.append(A.ExprStmt(loc, e))

    def async_stmt(self, word: str):
        """``async(f(...), route[, timeout])`` / ``launch(f(...)[, route])``
        (cfg.y's ASYNC_TOKEN / LAUNCH_TOKEN)."""
        loc = self.advance().loc
        self.expect_op("(", f"after '{word}'")
        t = self.tok
        if t.kind != "ID" or t.value == "route":
            self.fail(t.loc, f"{word}() needs a function call first, found "
                      f"{t.describe()}")
        call = self.call_or_route()
        if not isinstance(call, A.Call) or not self.prev.is_op(")"):
            self.fail(t.loc, f"{word}(): '{t.value}' must be called "
                      f"with parentheses")
        route = timeout = None
        if self.tok.is_op(","):
            self.advance()
            route = self.route_name()
            if word == "async" and self.tok.is_op(","):
                self.advance()
                n = self.expect_kind("INT", "a timeout (seconds)")
                timeout = n.value
        elif word == "async":
            self.fail(self.tok.loc, "async() needs a resume route: "
                      "async(function(...), route_name)")
        self.expect_op(")", f"to close {word}(")
        self.expect_op(";", f"after {word}()")
        if word == "async":
            return A.Async(loc, call, route, timeout)
        return A.Launch(loc, call, route)

    def paren_cond(self, what: str):
        self.expect_op("(", f"after '{what}'")
        cond = self.expr()
        self.expect_op(")", f"to close the {what} condition")
        return cond

    def if_stmt(self) -> A.If:
        loc = self.advance().loc
        cond = self.paren_cond("if")
        then = self.body("if")
        orelse = None
        if self.tok.is_id("else"):
            self.advance()
            orelse = self.body("else")
        return A.If(loc, cond, then, orelse)

    def switch_stmt(self) -> A.Switch:
        loc = self.advance().loc
        value = self.paren_cond("switch")
        opening = self.expect_op("{", "to open the switch block")
        cases: List[A.Case] = []
        seen = {}
        while not self.tok.is_op("}"):
            t = self.tok
            if t.kind == "EOF" or self.starts_top():
                self.errors.append(ScriptError.at(
                    opening.loc, "unclosed block: '{' has no matching '}'"))
                raise _Sync()
            try:
                if t.is_id("case"):
                    self.advance()
                    v = self.case_value()
                    key = v.text.lower() if isinstance(v, A.Str) else v.value
                    if key in seen:
                        self.errors.append(ScriptError.at(
                            v.loc, f"duplicate case value {v.value!r}"))
                    seen[key] = True
                    self.expect_op(":", "after the case value")
                    cases.append(A.Case(t.loc, v, []))
                elif t.is_id("default"):
                    self.advance()
                    if any(c.value is None for c in cases):
                        self.errors.append(ScriptError.at(
                            t.loc, "duplicate default in switch"))
                    self.expect_op(":", "after 'default'")
                    cases.append(A.Case(t.loc, None, []))
                elif not cases:
                    self.fail(t.loc, "expected 'case' or 'default' in "
                              f"switch, found {t.describe()}")
                else:
                    self.statement(cases[-1].body)
            except _Sync:
                self.resync_stmt()
        self.advance()
        return A.Switch(loc, value, cases)

    def case_value(self):
        t = self.tok
        if t.kind == "INT":
            self.advance()
            return A.Int(t.loc, t.value)
        if t.is_op("-") and self.peek().kind == "INT":
            self.advance()
            return A.Int(t.loc, -self.advance().value)
        if t.kind == "STR":
            self.advance()
            return A.Str(t.loc, t.value)
        self.fail(t.loc, "case value must be an integer or a string, found "
                  f"{t.describe()}")

    def for_stmt(self) -> A.For:
        loc = self.advance().loc
        self.expect_op("(", "after 'for'")
        t = self.expect_kind("PVAR", "a variable after 'for ('")
        var = A.PVar(t.loc, t.value)
        if not self.tok.is_id("in"):
            self.fail(self.tok.loc, f"expected 'in', found {self.tok.describe()}")
        self.advance()
        first = self.tok.loc
        self.for_list += 1
        try:
            items = [self.expr()]
            while self.tok.is_op(","):
                self.advance()
                items.append(self.expr())
        finally:
            self.for_list -= 1
        iterable = items[0] if len(items) == 1 else A.ExprList(first, items)
        self.expect_op(")", "to close the for header")
        return A.For(loc, var, iterable, self.body("for"))

    def call_or_route(self):
        t = self.advance()
        name = t.value
        args = []
        if name == "route":
            self.expect_op("(", "after 'route'")
            rname = self.route_name()
            while self.tok.is_op(","):
                self.advance()
                args.append(self.expr())
            self.expect_op(")", "to close route()")
            return A.RouteCall(t.loc, rname, args)
        if name in ("if", "else", "switch", "case", "default", "while",
                    "for", "break", "return", "exit", "drop", "in"):
            self.fail(t.loc, f"unexpected '{name}'")
        if self.tok.is_op("("):
            raw = self.raw_socket_arg() if name in _SOCKET_ARG_CMDS else None
            self.advance()
            if raw is not None:
                args.append(raw)
            elif not self.tok.is_op(")"):
                # an empty argument (``f(a, , c)``) is an omitted one: None
                args.append(self.call_arg())
                while self.tok.is_op(","):
                    self.advance()
                    args.append(self.call_arg())
            self.expect_op(")", f"to close {name}(")
        return A.Call(t.loc, name, args)

    def raw_socket_arg(self):
        """OpenSIPS's grammar takes a socket unquoted as the argument of
        force_send_socket (``force_send_socket(tcp:10.0.0.1:5060)``): read
        it raw, as a string, when what follows '(' up to ')' is one."""
        if self.buf:
            return None
        lx = self.lexer
        text, pos = lx.text, lx.pos
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        end = text.find(")", pos)
        if end < 0 or text[pos:pos + 1] in ("\"", "'", "$"):
            return None
        raw = text[pos:end].rstrip()
        if "\n" in raw or not _SOCKET_RE.match(raw + " ") or \
                _ID_VALUE_RE.match(raw):
            return None
        loc = lx.loc_at(pos)
        lx._advance_to(pos + len(raw))
        return A.Str(loc, raw)

    def call_arg(self):
        if self.tok.is_op(",") or self.tok.is_op(")"):
            return None
        return self.expr()

    # --- expressions -------------------------------------------------------
    def expr(self, level: int = 0):
        if level == len(_PRECEDENCE):
            return self.unary()
        ops = _PRECEDENCE[level]
        left = self.expr(level + 1)
        while self.tok.kind == "OP" and self.tok.value in ops:
            op = self.advance()
            right = self.expr(level + 1)
            left = A.Binary(op.loc, op.value, left, right)
            self.lint(left, _RULE[level])
        return left

    def unary(self):
        t = self.tok
        if t.kind == "OP" and t.value in ("!", "~", "-") and not (
                t.value == "-" and self.peek().kind == "INT"):
            self.advance()
            node = A.Unary(t.loc, t.value, self.unary())
            self.lint(node, _RULE_CMP)
            return node
        return self.comparison()

    def comparison(self):
        left = self.operand()
        if self.tok.kind == "OP" and self.tok.value in _COMPARE:
            op = self.advance()
            left = A.Binary(op.loc, op.value, left, self.operand())
            t = self.tok
            if t.kind == "OP" and t.value in _COMPARE:
                self.fail(t.loc, f"comparisons do not chain: put "
                          f"'{render(left)}' in parentheses")
        return left

    def operand(self):
        t = self.tok
        if t.is_op("-") and self.peek().kind == "INT":
            self.advance()
            return A.Int(t.loc, -self.advance().value)
        return self.primary()

    def lint(self, node, rule: str):
        """Warn where node groups an operand written without parentheses
        otherwise than C's precedence would."""
        if isinstance(node, A.Unary):
            bad = [node.operand]        # a comparison: unary() reads those
        else:
            rank = _C_RANK[node.op]
            bad = [x for x, worse in ((node.left, rank - 1), (node.right, rank))
                   if isinstance(x, A.Binary) and _C_RANK[x.op] <= worse]
        bad = [x for x in bad if isinstance(x, A.Binary) and not x.paren]
        if not bad:
            return
        if any(x.op in _COMPARE for x in bad):
            rule = _RULE_CMP
        self.warnings.append(ScriptError.at(
            node.loc, f"warning: evaluated as {render(node)}, because in "
            f"OpenSIPS scripts {rule}; add parentheses"))

    def primary(self):
        t = self.tok
        if t.kind == "INT":
            self.advance()
            return A.Int(t.loc, t.value)
        if t.kind == "STR":
            self.advance()
            return A.Str(t.loc, t.value)
        if t.kind == "PVAR":
            self.advance()
            return A.PVar(t.loc, t.value)
        if t.is_op("("):
            self.advance()
            e = self.expr()
            if self.for_list and self.tok.is_op(","):
                items = [e]
                while self.tok.is_op(","):
                    self.advance()
                    items.append(self.expr())
                e = A.ExprList(t.loc, items)
            self.expect_op(")", "to close '('")
            if isinstance(e, (A.Binary, A.Unary)):
                e.paren = True
            return e
        if t.is_op("["):
            # cfg.y: exp: LBRACK assignexp RBRACK, an arithmetic value
            # tested as a condition (if ([$var(a) & 4]) ...)
            self.advance()
            e = self.expr()
            self.expect_op("]", "to close '['")
            if isinstance(e, (A.Binary, A.Unary)):
                e.paren = True
            return e
        if t.kind == "ID":
            if t.value == "NULL":
                self.advance()
                return A.Null(t.loc)
            return self.call_or_route()
        self.fail(t.loc, f"expected an expression, found {t.describe()}")


def render(e) -> str:
    """An expression as text with every operation in parentheses, as it is
    grouped (for messages)."""
    if isinstance(e, A.Binary):
        return f"({render(e.left)} {e.op} {render(e.right)})"
    if isinstance(e, A.Unary):
        return f"{e.op}{render(e.operand)}"
    if isinstance(e, A.Int):
        return str(e.value)
    if isinstance(e, A.Str):
        return '"' + e.text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(e, A.PVar):
        return e.text
    if isinstance(e, A.Null):
        return "NULL"
    if isinstance(e, A.RouteCall):
        return f"route({', '.join([e.name] + [render(a) for a in e.args])})"
    if isinstance(e, A.Call):
        args = ", ".join("" if a is None else render(a) for a in e.args)
        return f"{e.name}({args})"
    if isinstance(e, A.ExprList):
        return "(" + ", ".join(render(x) for x in e.items) + ")"
    return "?"                                   # pragma: no cover


def parse_string(text: str, file: str = "<string>") -> A.Script:
    """Parse script text; raise ScriptErrors with every syntax error.
    Warnings (no error) are in the result's ``warnings``."""
    errors: List[ScriptError] = []
    p = Parser(text, file, errors)
    top = p.parse_top()
    if errors:
        raise ScriptErrors(errors)
    return A.Script(file, top, p.warnings)


def parse_file(path: str) -> A.Script:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise ScriptErrors([ScriptError(path, 0, 0, f"cannot open script: "
                                        f"{e.strerror or e}")]) from None
    return parse_string(text, path)
