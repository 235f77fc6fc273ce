"""What compiled routes use at run time, and the script's route table.

Values in the script are ``int``, ``str`` (or :class:`~opensipy.pvar.StrInt`)
or ``None`` (NULL).  The helpers here give the operators OpenSIPS's meaning
(its route.c and action.c; the full table is docs/script-typing.md):

* comparisons: NULL equals only NULL and is never ordered; a variable
  compared with a number must carry an integer (a string is an error that
  makes the whole condition false); compared with a string, or two
  variables not both carrying integers, compare as case-insensitive text;
* ``=~``/``!~``: a case-insensitive POSIX-like regex on the value's text;
* ``+``: the left operand decides: an integer adds (NULL on the right is
  0, a string is no value), a string or NULL concatenates (an integer
  computed by the script has no text: no value);
  ``- * / % & | ^ << >>`` need an integer on the left (``& | ^`` also
  work byte-wise on two strings of one length); results are C ints;
  division by zero logs an error and gives 0;
* an operation with no value (:class:`NoValue`) skips the assignment with
  a warning; a comparison error (:class:`ExprError`) is -1 as a value;
* truth of a value: NULL, 0 and "" are false.

The route table: the checker declares the routes a script defines
(:func:`declare_routes`) before fixups run, so a module's fixup may check a
name (``t_on_failure("x")``) with :func:`route_exists`; once the script is
compiled and activated, :func:`find_route` returns the callable.
"""
from __future__ import annotations

import re
from functools import lru_cache

from .. import log
from ..pvar import StrInt

# action flags: what a route's status / a top-level callable's result holds
ACT_FL_EXIT = 1            # exit, return(0), a function returned 0
ACT_FL_DROP = 4            # drop (always with ACT_FL_EXIT)
DROP = ACT_FL_EXIT | ACT_FL_DROP

MAX_REC_LEV = 100          # route() nesting depth (OpenSIPS's limit)
MAX_WHILE_LOOPS = 10000    # iterations of one while loop (max_while_loops)

_declared: set = set()
compiled = None        # the active CompiledScript (set by activate())


def declare_routes(keys) -> None:
    """keys: (kind, name) of every route block of the script."""
    global _declared
    _declared = set(keys)


def route_exists(kind: str, name) -> bool:
    """Whether the script defines ``kind[name]`` (kind as in the script:
    "route", "failure_route", "onreply_route", "branch_route", ...)."""
    return (kind, name) in _declared


def find_route(kind: str, name):
    """The compiled top-level callable of ``kind[name]``, or None."""
    cs = compiled
    if cs is None:
        return None
    return cs.find(kind, name)


# --- value helpers -------------------------------------------------------------
#
# OpenSIPS's typing rules (route.c eval_elem/comp_scriptvar, action.c
# do_assign), written down in docs/script-typing.md.  A value is None
# (NULL), an int or a str; an int read from a variable also has its text
# (PV_VAL_STR), an int computed by the script (a literal, an arithmetic
# result, a function's return code) has none, which the code generator
# knows statically and passes on by choosing the helper (``add_c`` and
# ``arith(..., b_text=False)`` take a right operand without text).  A
# StrInt is a string that also carries an integer.

class NoValue(Exception):
    """An operation OpenSIPS evaluates to no value at all (``"a" + 1``,
    ``"a" - "b"``, ``~"x"``): an assignment of it is skipped with a
    warning, a condition testing it is false."""


class ExprError(NoValue):
    """A comparison OpenSIPS cannot make (a string variable compared with
    a number): the comparison is an error (-1), which stops the whole
    condition as false; as a value it is -1."""


_INT_RE = re.compile(r"\s*[+-]?[0-9]+\s*\Z")
_M32 = 0xFFFFFFFF


def w32(n: int) -> int:
    """n as a C int (OpenSIPS computes in 32 bits)."""
    return ((n + 0x80000000) & _M32) - 0x80000000


def ival(v):
    """The integer a value carries (OpenSIPS's PV_VAL_INT), or None."""
    if type(v) is int:
        return v
    if type(v) is StrInt:
        return int(v)
    if isinstance(v, bool):
        return int(v)
    return None


def as_int_or_none(v):
    if type(v) is int:
        return v
    if isinstance(v, str) and _INT_RE.match(v):
        return int(v)
    if isinstance(v, bool):
        return int(v)
    return None


def to_int(v) -> int:
    """A return code from a value (``return $var(x)``): an integer as is,
    NULL -1, a string 1 (OpenSIPS's RETURN_T)."""
    if type(v) is int:
        return v
    if v is None:
        return -1
    i = ival(v)
    return 1 if i is None else i


def to_str(v) -> str:
    if v is None:
        return ""
    return v if type(v) is str else str(v)


def plain(v):
    """What a variable stores: a StrInt is stored as its text (OpenSIPS
    keeps the string of a value that is not primarily an integer)."""
    if type(v) is StrInt:
        return str.__str__(v)
    return v


def truth(v) -> bool:
    if v is None:
        return False
    if type(v) is int:
        return v != 0
    return v != ""


def _text(v) -> str:
    return v if type(v) is str else str(v)


def _low(s: str) -> str:
    # C's tolower: ASCII letters only
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}


# --- comparisons -----------------------------------------------------------
# op codes: "==" "!=" "<" ">" "<=" ">="

def _cmp(op, x, y) -> bool:
    if op == "==":
        return x == y
    if op == "!=":
        return x != y
    if op == "<":
        return x < y
    if op == ">":
        return x > y
    if op == "<=":
        return x <= y
    return x >= y


def cmp_vv(op, a, b) -> bool:
    """var op var: NULL equals only NULL (never ordered); both carrying an
    integer compare as numbers, else as case-insensitive text."""
    if a is None or b is None:
        if op == "==":
            return a is b
        return op == "!=" and a is not b
    if type(a) is int and type(b) is int:
        return _cmp(op, a, b)
    ia, ib = ival(a), ival(b)
    if ia is not None and ib is not None:
        return _cmp(op, ia, ib)
    return _cmp(op, _low(_text(a)), _low(_text(b)))


def cmp_vn(op, a, n) -> bool:
    """var op number: the variable must carry an integer (a string is an
    error); NULL is only different."""
    if type(a) is int:
        return _cmp(op, a, n)
    if a is None:
        return op == "!="
    i = ival(a)
    if i is None:
        raise ExprError(f"invalid {op} operation: a string ({a!r}) and an "
                        f"integer ({n})")
    return _cmp(op, i, n)


def cmp_vs(op, a, low: str) -> bool:
    """var op string (low: the string lowered): text comparison (an
    integer by its decimal text); NULL is only different."""
    if a is None:
        return op == "!="
    return _cmp(op, _low(_text(a)), low)


def eq_str(a, low: str) -> bool:
    """var == a constant string (low is the constant lowered)."""
    if type(a) is str:
        return len(a) == len(low) and _low(a) == low
    if a is None:
        return False
    return _low(_text(a)) == low


def eq_int(a, n: int) -> bool:
    """var == a constant int."""
    if type(a) is int:
        return a == n
    return cmp_vn("==", a, n)


def match(rx, v) -> bool:
    """v =~ a compiled regex (NULL never matches)."""
    if v is None:
        return False
    return rx.search(v if type(v) is str else str(v)) is not None


@lru_cache(maxsize=256)
def _regex(text: str):
    return re.compile(text, SCRIPT_REGEX_FLAGS)


# OpenSIPS compiles a script regex with REG_EXTENDED|REG_NOSUB|REG_ICASE
# (no REG_NEWLINE: '.' matches a line break, ^ and $ only the ends)
SCRIPT_REGEX_FLAGS = re.IGNORECASE | re.DOTALL


def match_dyn(v, pattern) -> bool:
    """v =~ a regex held by a variable: NULL =~ NULL is true, NULL and a
    value never match; a bad regex is an error."""
    if v is None or pattern is None:
        return v is pattern
    try:
        rx = _regex(_text(pattern))
    except re.error as e:
        raise ExprError(f"bad regular expression {pattern!r}: {e}") \
            from None
    return match(rx, v)


def cond_error(loc, e) -> bool:
    log.LM_WARN(f"{loc[0]}:{loc[1]}:{loc[2]}: error in expression: {e}")
    return False


def novalue(loc, e) -> None:
    log.LM_WARN(f"{loc[0]}:{loc[1]}:{loc[2]}: no value in right "
                f"expression ({e}), assignment skipped")


# --- arithmetic ------------------------------------------------------------

def add(a, b):
    """a + b where b is read from a variable (an integer has its text)."""
    if type(a) is int:
        if type(b) is int:
            return w32(a + b)
        if b is None:
            return a
        i = ival(b)
        if i is None:
            raise NoValue(f"invalid numeric operands: {a} + {b!r}")
        return w32(a + i)
    if b is None:
        b = ""
    elif type(b) is not str:
        b = str(b)
    if type(a) is str:
        return a + b
    if a is None:
        return str.__str__(b)
    return str.__str__(a) + b


def add_c(a, b):
    """a + b where b is computed by the script: an integer result has no
    text, so only an integer may be added to it."""
    if type(b) is int:
        if type(a) is int:
            return w32(a + b)
        raise NoValue(f"invalid string operands: {a!r} + {b}")
    return add(a, b)


def _iop(op, a, b):
    if op == "-":
        return w32(a - b)
    if op == "*":
        return w32(a * b)
    if op == "/" or op == "%":
        if b == 0:
            log.LM_ERR("script: divide by 0, using 0")
            return 0
        q = abs(a) // abs(b)           # C: truncate toward zero
        q = q if (a >= 0) == (b >= 0) else -q
        return w32(q if op == "/" else a - b * q)
    if op == "&":
        return a & b
    if op == "|":
        return a | b
    if op == "^":
        return a ^ b
    if op == "<<":                     # x86: the count is taken mod 32
        return w32(a << (b & 31))
    return a >> (b & 31)


def arith(op, a, b, b_text: bool = True):
    """a op b for - * / % & | ^ << >> (and + through add/add_c).
    b_text: b is read from a variable (an integer has its text)."""
    if type(a) is int:
        if type(b) is not int:
            if b is None:
                b = 0
            else:
                i = ival(b)
                if i is None:
                    raise NoValue(f"invalid numeric operands: {a} {op} "
                                  f"{b!r}")
                b = i
        return _iop(op, a, b)
    if op == "+":
        return add(a, b) if b_text else add_c(a, b)
    if a is not None and op in ("&", "|", "^") and b is not None and (
            b_text or type(b) is not int):
        x, y = _text(a).encode(), _text(b).encode()
        if len(x) != len(y):
            raise NoValue(f"different length string operands of {op}")
        f = {"&": int.__and__, "|": int.__or__, "^": int.__xor__}[op]
        return bytes(f(p, q) for p, q in zip(x, y)).decode(
            "utf-8", "replace")
    raise NoValue(f"only + and bitwise operators apply to strings: "
                  f"{a!r} {op} {b!r}")


def bnot(a):
    i = ival(a)
    if i is None:
        raise NoValue(f"binary NOT of a non-numeric value {a!r}")
    return ~i


def neg(a):
    i = ival(a)
    if i is None:
        raise NoValue(f"minus of a non-numeric value {a!r}")
    return w32(-i)


def compound(op, cur, val):
    """The value ``$x op= val`` stores (action.c do_assign): NULL on either
    side is an error; two strings only concatenate (+=); two values
    carrying integers compute in integers; anything else is an error."""
    if cur is None or val is None:
        raise NoValue(f"NULL value(s) in {op}")
    o = op[:-1]
    if isinstance(cur, str) and isinstance(val, str):
        if o != "+":
            raise NoValue(f"unsupported operand types for {op}: string and "
                          f"string")
        return str.__str__(cur) + val
    a, b = ival(cur), ival(val)
    if a is None or b is None:
        raise NoValue(f"unsupported operand types for {op}: "
                      f"{'string' if a is None else 'int'} and "
                      f"{'string' if b is None else 'int'}")
    if o == "+":
        return w32(a + b)
    return _iop(o, a, b)


def values(v):
    """What ``for (... in v)`` iterates: a list/tuple as is, NULL as
    nothing, any other value once."""
    if v is None:
        return ()
    if isinstance(v, (list, tuple)):
        return v
    return (v,)


def switch_index(v, table: dict, default: int) -> int:
    """The index of the first case matching v (table: key -> index, ints
    as ints and strings lowered), else default."""
    if type(v) is int:
        i = table.get(v)
        if i is None:
            i = table.get(str(v))
    elif type(v) is str:
        i = table.get(v.lower())
        if i is None:
            n = as_int_or_none(v)
            if n is not None:
                i = table.get(n)
    else:
        i = None
    return default if i is None else i


# --- errors met while a route runs ------------------------------------------

def too_deep(loc) -> int:
    log.LM_ERR(f"{loc[0]}:{loc[1]}:{loc[2]}: too many nested route() calls "
               f"(more than {MAX_REC_LEV}), script stopped")
    return ACT_FL_EXIT


def param_error(where, err) -> int:
    (file, line, col), name = where
    log.LM_ERR(f"{file}:{line}:{col}: {name}(): {err}")
    return -1


def loop_limit(loc) -> None:
    log.LM_ERR(f"{loc[0]}:{loc[1]}:{loc[2]}: while loop stopped after "
               f"{MAX_WHILE_LOOPS} iterations")


def set_error(loc, e) -> None:
    log.LM_ERR(f"{loc[0]}:{loc[1]}:{loc[2]}: assignment failed: {e}")


# the same comparisons for a condition where an error is simply false (a
# comparison alone or under &&: OpenSIPS stops the condition as false
# there), logged with the script location

def cmp_vn_s(op, a, n, loc) -> bool:
    if type(a) is int:
        return _cmp(op, a, n)
    try:
        return cmp_vn(op, a, n)
    except ExprError as e:
        return cond_error(loc, e)


def eq_int_s(a, n, loc) -> bool:
    if type(a) is int:
        return a == n
    try:
        return cmp_vn("==", a, n)
    except ExprError as e:
        return cond_error(loc, e)


def ne_int_s(a, n, loc) -> bool:
    if type(a) is int:
        return a != n
    try:
        return cmp_vn("!=", a, n)
    except ExprError as e:
        return cond_error(loc, e)


def match_dyn_s(v, pattern, loc) -> bool:
    try:
        return match_dyn(v, pattern)
    except ExprError as e:
        return cond_error(loc, e)


def nmatch_dyn_s(v, pattern, loc) -> bool:
    try:
        return not match_dyn(v, pattern)
    except ExprError as e:
        return cond_error(loc, e)
