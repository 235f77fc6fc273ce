"""The script's syntax tree.

Every node carries ``loc = (file, line, col)`` (1-based line and column of
its first character).  The top level of a script is the ordered list
``Script.top`` of :class:`GlobalParam`, :class:`LoadModule`,
:class:`ModParam` and :class:`RouteBlock`; ``include_file``/``import_file``
are replaced by the items of the included file, in place.

Expressions are :class:`Int`, :class:`Str`, :class:`Null`, :class:`PVar`,
:class:`Call`, :class:`RouteCall`, :class:`Unary`, :class:`Binary`
(and :class:`ExprList`, only after ``for (... in``).  The checker fills the
resolution fields (``PVar.spec``, ``Call.cmd`` ...); the parser leaves them
None.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple, Union

Loc = Tuple[str, int, int]

# route block kinds (the keyword that opens the block); the main request
# route is kind "route" with name None
ROUTE_KINDS = ("route", "failure_route", "onreply_route", "branch_route",
               "error_route", "local_route", "startup_route", "timer_route",
               "event_route")


# --- top level ---------------------------------------------------------------

@dataclass
class GlobalParam:
    """``name = value``.  ``kind`` tells how the value was written:
    ``"int"`` (value is an int: decimal, 0x hex, 0 octal, signed),
    ``"str"`` (a quoted string, value is its decoded contents),
    ``"id"`` (a bareword such as yes, LOG_LOCAL0, L_DBG; value is the word),
    ``"socket"`` (anything else, typically ``udp:127.0.0.1:5060 as
    1.2.3.4:5060``; value is the text as written, comment stripped).
    ``raw`` is always the text after ``=`` as written (comment stripped)."""
    loc: Loc
    name: str
    value: Union[int, str]
    kind: str
    raw: str


@dataclass
class LoadModule:
    """``loadmodule "path"`` (``path`` as written, e.g. ``tm.so``)."""
    loc: Loc
    path: str


@dataclass
class ModParam:
    """``modparam("module", "param", value)``; ``value`` is an int or a
    str; ``kind`` is "int", "str" or "id" (a bareword)."""
    loc: Loc
    module: str
    param: str
    value: Union[int, str]
    kind: str


@dataclass
class RouteBlock:
    """A route block.  ``kind`` is one of :data:`ROUTE_KINDS`; ``name`` is
    the text in brackets (None for ``route{}`` and ``onreply_route{}``...);
    ``seconds`` for ``timer_route[name, seconds]``; ``mode`` "sync" or
    "async" for ``event_route[E_X, async]`` (None when not given)."""
    loc: Loc
    kind: str
    name: Optional[str]
    body: "Block"
    seconds: Optional[int] = None
    mode: Optional[str] = None


@dataclass
class Script:
    """``warnings``: :class:`~.errors.ScriptError` items that do not stop
    the script (``opensipy -c`` prints them), e.g. an expression whose
    operators OpenSIPS groups otherwise than most languages do."""
    file: str
    top: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def routes(self, kind: str) -> List[RouteBlock]:
        return [t for t in self.top if isinstance(t, RouteBlock)
                and t.kind == kind]


# --- expressions -------------------------------------------------------------

@dataclass
class Int:
    loc: Loc
    value: int


@dataclass
class Str:
    """A string literal; ``text`` is the decoded contents (it may hold
    variables: the checker sets ``fmt`` from pvar.parse_format)."""
    loc: Loc
    text: str
    fmt: Any = None


@dataclass
class Null:
    loc: Loc


@dataclass
class PVar:
    """A variable token exactly as written (``$hdr(From)``,
    ``$(ru{uri.user})``); the checker sets ``spec`` (pvar.PVSpec)."""
    loc: Loc
    text: str
    spec: Any = None


@dataclass
class Call:
    """``name(args)`` or ``name`` (no parentheses).  Arguments are
    :class:`Int`, :class:`Str`, :class:`PVar` or :class:`Null`.  The checker
    sets ``module`` (LoadedModule) and ``cmd`` (CmdExport) of the chosen
    overload."""
    loc: Loc
    name: str
    args: List[Any]
    module: Any = None
    cmd: Any = None


@dataclass
class RouteCall:
    """``route(name, args...)``; its value is the sub-route's return."""
    loc: Loc
    name: str
    args: List[Any]


@dataclass
class Unary:
    """``paren``: written inside parentheses (only the ``-c`` precedence
    warnings look at it)."""
    loc: Loc
    op: str          # "!", "-", "~"
    operand: Any
    paren: bool = False


@dataclass
class Binary:
    """``op`` is one of == != < > <= >= =~ !~ && || + - * / % | & ^ << >>;
    ``loc`` is the operator's place; ``paren`` as for :class:`Unary`."""
    loc: Loc
    op: str
    left: Any
    right: Any
    paren: bool = False


@dataclass
class ExprList:
    loc: Loc
    items: List[Any]


# --- statements --------------------------------------------------------------

@dataclass
class Block:
    loc: Loc
    stmts: List[Any]


@dataclass
class ExprStmt:
    """An expression used as a statement (a function or route call)."""
    loc: Loc
    expr: Any


@dataclass
class Assign:
    loc: Loc
    target: PVar
    op: str          # = := += -= /= *= %= &= |= ^=
    value: Any


@dataclass
class If:
    loc: Loc
    cond: Any
    then: Block
    orelse: Optional[Block] = None


@dataclass
class Case:
    """``case value:`` (``value`` an Int or Str) or ``default:`` (None)."""
    loc: Loc
    value: Any
    body: List[Any]


@dataclass
class Switch:
    loc: Loc
    expr: Any
    cases: List[Case]


@dataclass
class Break:
    loc: Loc


@dataclass
class While:
    loc: Loc
    cond: Any
    body: Block


@dataclass
class For:
    """``for ($var(x) in $avp(a)[*])`` / ``for ($var(x) in 1, 2, "a")``."""
    loc: Loc
    var: PVar
    iterable: Any
    body: Block


@dataclass
class Return:
    loc: Loc
    value: Any = None    # None: ``return`` alone (returns 1)


@dataclass
class Exit:
    loc: Loc


@dataclass
class Drop:
    loc: Loc


@dataclass
class Async:
    """``async(call, route[, timeout])``: ``call`` (a :class:`Call`, the
    checker resolves it among the modules' async functions) runs; the
    route goes on in ``route[resume]`` once it is done."""
    loc: Loc
    call: Call
    resume: str
    timeout: Optional[int] = None


@dataclass
class Launch:
    """``launch(call[, route])``: ``call`` runs in the background; the
    route goes on at once; ``route[report]`` runs when it is done."""
    loc: Loc
    call: Call
    report: Optional[str] = None
