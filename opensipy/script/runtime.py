"""What compiled routes use at run time, and the script's route table.

Values in the script are ``int``, ``str`` or ``None`` (NULL).  The helpers
here give OpenSIPS's meaning to the operators:

* ``==``/``!=`` and the orderings: two ints compare as numbers; two strings
  compare case-insensitively (OpenSIPS uses strcasecmp); an int and a
  string compare as numbers when the string is an integer, else as strings;
  NULL equals only NULL and is never ordered;
* ``=~``/``!~``: ``re.search`` with mod_fix's flags (case-insensitive,
  ``^``/``$`` at line breaks) on the text of the value (NULL never
  matches);
* ``+`` adds two ints and concatenates otherwise (NULL is "");
  ``- * / % | & ^ ~`` work on integers (a non-numeric string is an error
  logged once per evaluation, and counts as 0); division by zero logs an
  error and gives 0;
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

_INT_RE = re.compile(r"\s*[+-]?[0-9]+\s*\Z")


def as_int_or_none(v):
    if type(v) is int:
        return v
    if isinstance(v, str) and _INT_RE.match(v):
        return int(v)
    if isinstance(v, bool):
        return int(v)
    return None


def to_int(v) -> int:
    if type(v) is int:
        return v
    if v is None:
        return 0
    i = as_int_or_none(v)
    if i is None:
        log.LM_ERR(f"script: {v!r} is not an integer, using 0")
        return 0
    return i


def to_str(v) -> str:
    if v is None:
        return ""
    return v if type(v) is str else str(v)


def truth(v) -> bool:
    if v is None:
        return False
    if type(v) is int:
        return v != 0
    return v != ""


def _pair(a, b):
    """Two comparable forms of a and b (both ints, or both lowered str)."""
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        return a, b
    if ta is str and tb is str:
        return a.lower(), b.lower()
    ia, ib = as_int_or_none(a), as_int_or_none(b)
    if ia is not None and ib is not None:
        return ia, ib
    return to_str(a).lower(), to_str(b).lower()


def eq(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if type(a) is str and type(b) is str:
        return a.lower() == b.lower()
    x, y = _pair(a, b)
    return x == y


def eq_str(a, low: str) -> bool:
    """a == a constant string (low is the constant lowered)."""
    if type(a) is str:
        return a.lower() == low
    if a is None:
        return False
    return eq(a, low)


def eq_int(a, n: int) -> bool:
    """a == a constant int."""
    if type(a) is int:
        return a == n
    if a is None:
        return False
    return eq(a, n)


def lt(a, b) -> bool:
    if a is None or b is None:
        return False
    x, y = _pair(a, b)
    return x < y


def gt(a, b) -> bool:
    if a is None or b is None:
        return False
    x, y = _pair(a, b)
    return x > y


def le(a, b) -> bool:
    if a is None or b is None:
        return False
    x, y = _pair(a, b)
    return x <= y


def ge(a, b) -> bool:
    if a is None or b is None:
        return False
    x, y = _pair(a, b)
    return x >= y


def match(rx, v) -> bool:
    """v =~ a compiled regex."""
    if v is None:
        return False
    return rx.search(v if type(v) is str else str(v)) is not None


@lru_cache(maxsize=256)
def _regex(text: str):
    from ..mod_fix import REGEX_FLAGS
    return re.compile(text, REGEX_FLAGS)


def match_dyn(v, pattern) -> bool:
    """v =~ a regex computed at run time (a bad one logs and is false)."""
    if v is None or pattern is None:
        return False
    try:
        rx = _regex(to_str(pattern))
    except re.error as e:
        log.LM_ERR(f"script: bad regular expression {pattern!r}: {e}")
        return False
    return match(rx, v)


def add(a, b):
    if type(a) is int and type(b) is int:
        return a + b
    return to_str(a) + to_str(b)


def div(a, b) -> int:
    a, b = to_int(a), to_int(b)
    if b == 0:
        log.LM_ERR("script: division by zero, using 0")
        return 0
    q = abs(a) // abs(b)           # C semantics: truncate toward zero
    return q if (a >= 0) == (b >= 0) else -q


def mod(a, b) -> int:
    a, b = to_int(a), to_int(b)
    if b == 0:
        log.LM_ERR("script: modulo by zero, using 0")
        return 0
    return a - b * div(a, b)


def shl(a, b) -> int:
    a, b = to_int(a), to_int(b)
    if b < 0:
        log.LM_ERR(f"script: shift by a negative count ({b}), using 0")
        return 0
    return a << b


def shr(a, b) -> int:
    a, b = to_int(a), to_int(b)
    if b < 0:
        log.LM_ERR(f"script: shift by a negative count ({b}), using 0")
        return 0
    return a >> b


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
