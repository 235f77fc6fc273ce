"""Operators group as OpenSIPS's grammar groups them, and ``-c`` warns where
that differs from what most languages do.

Where the expected values come from
-----------------------------------
OpenSIPS's ``cfg.y`` declares, loosest first::

    %nonassoc EQUAL EQUAL_T GT LT GTE LTE DIFF MATCH NOTMATCH ...
    %left OR AND
    %left BOR BAND BXOR BLSHIFT BRSHIFT
    %left PLUS MINUS SLASH MULT MODULO
    %right NOT BNOT

and its rules build a comparison only as ``script_var strop operand``
(``exp_cond``), an operand of its own inside both conditions (``exp``) and
assignments (``assignexp``).  So, tightest first: a comparison, then unary
``! ~``, then ``+ - * / %`` (one level, left to right), then
``| & ^ << >>`` (one level, left to right), then ``&& ||`` (one level, left
to right).  For ``a op1 b op2 c`` this gives ``(a op1 b) op2 c`` when op1's
level is at least op2's, else ``a op1 (b op2 c)``; :func:`opensips_value`
evaluates that grouping with C's integer operators (division truncates
toward zero, ``%`` takes the dividend's sign, a truth value is 1 or 0).
That model is written here from the grammar, independently of the parser
under test; the hand-written :data:`KNOWN` table pins a few of its values.
"""
import itertools
import operator

import pytest

from opensipy.script import ScriptErrors, parse_string

from script_helpers import run_script
from tests.server import run_opensipy

# --- OpenSIPS's grouping, from cfg.y --------------------------------------
LEVEL = {"&&": 0, "||": 0,
         "|": 1, "&": 1, "^": 1, "<<": 1, ">>": 1,
         "+": 2, "-": 2, "*": 2, "/": 2, "%": 2,
         "==": 4, "!=": 4, "<": 4, ">": 4, "<=": 4, ">=": 4}
UNARY_LEVEL = 3                      # %right NOT BNOT, below a comparison
COMPARE = ("==", "!=", "<", ">", "<=", ">=")
BINARY = tuple(LEVEL)

# --- the grouping of C (and most languages), for the warning --------------
C_RANK = {"||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6,
          "<": 7, ">": 7, "<=": 7, ">=": 7, "<<": 8, ">>": 8,
          "+": 9, "-": 9, "*": 10, "/": 10, "%": 10}


def _cdiv(a, b):
    q = abs(a) // abs(b)                 # ZeroDivisionError: case skipped
    return q if (a >= 0) == (b >= 0) else -q


def _shift(f):
    def shift(a, b):
        if b < 0:
            raise ValueError("negative shift")   # case skipped
        return f(a, b)
    return shift


C_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul,
         "/": _cdiv, "%": lambda a, b: a - b * _cdiv(a, b),
         "|": operator.or_, "&": operator.and_, "^": operator.xor,
         "<<": _shift(operator.lshift), ">>": _shift(operator.rshift),
         "&&": lambda a, b: int(bool(a) and bool(b)),
         "||": lambda a, b: int(bool(a) or bool(b)),
         "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
         "<": lambda a, b: int(a < b), ">": lambda a, b: int(a > b),
         "<=": lambda a, b: int(a <= b), ">=": lambda a, b: int(a >= b)}


def left_first(op1, op2, level) -> bool:
    return level[op1] >= level[op2]


def _int32(f):
    """f computed in a C int, as OpenSIPS's eval_elem does (ival is an
    int): the result wraps to 32 bits."""
    def g(a, b):
        return ((f(a, b) + 2 ** 31) % 2 ** 32) - 2 ** 31
    return g


def opensips_value(op1, op2, a, b, c) -> int:
    f1, f2 = _int32(C_OPS[op1]), _int32(C_OPS[op2])
    if left_first(op1, op2, LEVEL):
        return f2(f1(a, b), c)
    return f1(a, f2(b, c))


OPERANDS = [(7, 3, 2), (1, 1, 0), (12, 10, 3), (-7, 2, 5)]
PAIRS = [(o1, o2) for o1, o2 in itertools.product(BINARY, BINARY)
         if not (o1 in COMPARE and o2 in COMPARE)]


def _pair_cases():
    """(expression, expected) for every operator pair and operand set the
    model can evaluate (no division by zero, no negative shift)."""
    out = []
    for a, b, c in OPERANDS:
        for op1, op2 in PAIRS:
            try:
                want = opensips_value(op1, op2, a, b, c)
            except (ZeroDivisionError, ValueError):
                continue
            out.append(((a, b, c), f"$var(a) {op1} $var(b) {op2} $var(c)",
                        want))
    return out


def test_every_operator_pair_groups_as_in_opensips():
    cases = _pair_cases()
    assert len(cases) > 4 * 250      # every pair, with most operand sets
    by_operands = {}
    for abc, text, want in cases:
        by_operands.setdefault(abc, []).append((text, want))
    for (a, b, c), items in by_operands.items():
        body = f"$var(a) = {a}; $var(b) = {b}; $var(c) = {c};\n"
        body += "".join(f'$var(r) = {t}; log("$var(r)");\n'
                        for t, _ in items)
        _, logged = run_script("route {\n" + body + "}\n")
        got = dict(zip([t for t, _ in items], logged))
        wrong = [(t, got.get(t), w) for t, w in items if got.get(t) != str(w)]
        assert not wrong, f"a={a} b={b} c={c}: (expr, got, OpenSIPS) " \
            f"{wrong[:10]}"


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("unary", ["!", "~"])
def test_unary_with_every_binary_operator(unary, op):
    """``!``/``~`` bind tighter than arithmetic, looser than a
    comparison (cfg.y: NOT exp / BNOT assignexp over exp_cond)."""
    a, b = 5, 3
    u = (lambda x: int(x == 0)) if unary == "!" else (lambda x: ~x)
    if op in COMPARE:
        want = u(C_OPS[op](a, b))
    else:
        want = C_OPS[op](u(a), b)
    _, logged = run_script(
        "route {\n$var(a) = %d; $var(b) = %d;\n"
        '$var(r) = %s$var(a) %s $var(b); log("$var(r)");\n}\n'
        % (a, b, unary, op))
    assert logged == [str(want)]


# the values of a few, worked by hand from the rules above
KNOWN = [
    ("7 + 3 * 2", 20),            # (7 + 3) * 2: one arithmetic level
    ("2 * 3 + 1", 7),
    ("10 - 4 - 3", 3),            # left to right
    ("20 / 2 / 5", 2),
    ("20 - 7 / 2", 6),            # (20 - 7) / 2, truncated
    ("7 % 4 * 3", 9),
    ("2 * 7 % 4", 2),
    ("4 | 1 & 2", 0),             # (4 | 1) & 2: one bitwise level
    ("1 | 1 << 2", 4),            # (1 | 1) << 2
    ("6 ^ 3 & 5", 5),             # (6 ^ 3) & 5
    ("1 << 2 + 1", 8),            # arithmetic binds tighter: 1 << 3
    ("16 >> 1 + 1", 4),
    ("2 + 3 | 8", 13),
    ("1 || 1 && 0", 0),           # (1 || 1) && 0: one logical level
    ("0 && 0 || 1", 1),
    ("~5 + 1", -5),               # (~5) + 1
    ("1 - 2 - 3", -4),
    ("-7 / 2", -3),
    ("-7 % 3", -1),
]


@pytest.mark.parametrize("expr,value", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_values(expr, value):
    _, logged = run_script('route {\n$var(r) = %s; log("$var(r)");\n}\n'
                           % expr)
    assert logged == [str(value)]


def test_comparison_is_an_operand_in_conditions_too():
    # ! applies to the whole comparison: !($var(a) == 1)
    _, logged = run_script(
        'route {\n$var(a) = 5;\nif (!$var(a) == 1) log("a");\n'
        'if ($var(a) == 5 && $var(a) =~ "^5$" || $var(a) == 6) log("b");\n'
        'if ($var(a) == 6 || $var(a) == 5 && $var(a) == 6) log("c");\n}\n')
    # "c": (6 || 5) && 6 -> (0 || 1) && 0 -> false
    assert logged == ["a", "b"]


def test_comparisons_do_not_chain():
    with pytest.raises(ScriptErrors) as ei:
        parse_string("route {\n  if ($var(a) == $var(b) == 1) exit;\n}\n",
                     "x.cfg")
    assert "x.cfg:2:26: comparisons do not chain" in str(ei.value)


# --- the warning ------------------------------------------------------------

def _warnings(expr):
    s = parse_string("route {\n$var(r) = %s;\n}\n" % expr, "w.cfg")
    return [str(w) for w in s.warnings]


@pytest.mark.parametrize("op1,op2", PAIRS)
def test_warned_exactly_where_c_would_group_otherwise(op1, op2):
    """No warning where OpenSIPS and C agree; one where they do not."""
    differs = left_first(op1, op2, LEVEL) != left_first(op1, op2, C_RANK)
    warnings = _warnings(f"$var(a) {op1} $var(b) {op2} $var(c)")
    assert len(warnings) == int(differs), warnings
    if differs:
        how = (f"(($var(a) {op1} $var(b)) {op2} $var(c))"
               if left_first(op1, op2, LEVEL)
               else f"($var(a) {op1} ($var(b) {op2} $var(c)))")
        assert f"evaluated as {how}" in warnings[0]
        assert "add parentheses" in warnings[0]


def test_parentheses_silence_the_warning():
    assert _warnings("7 + 3 * 2")
    assert not _warnings("(7 + 3) * 2")
    assert not _warnings("7 + (3 * 2)")
    assert _warnings("!$var(a) == 1")
    assert not _warnings("!($var(a) == 1)")
    assert not _warnings("(!$var(a)) == 1")


def test_check_mode_prints_the_warning_and_still_succeeds(tmp_path):
    cfg = tmp_path / "prec.cfg"
    head = 'socket=udp:127.0.0.1:5999\nloadmodule "proto_udp.so"\n'
    body = ('route {\n    $var(x) = 7 + 3 * 2;\n'
            '    if ($var(x) == 1 || $var(x) == 2 && $var(x) == 3)\n'
            '        exit;\n}\n')
    cfg.write_text(head + body)
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert (f"{cfg}:4:21: warning: evaluated as ((7 + 3) * 2), because in "
            "OpenSIPS scripts + - * / % have one precedence and group left "
            "to right; add parentheses") in err
    assert f"{cfg}:5:38: warning: evaluated as ((($var(x) == 1) || " \
        "($var(x) == 2)) && ($var(x) == 3))" in err
    assert "is valid" in err
    # a warning changes no exit code: a script with an error still fails
    cfg.write_text(head + body + "route[x] { no_such_function(); }\n")
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 1
    assert f"{cfg}:4:21: warning: evaluated as ((7 + 3) * 2)" in r.stderr
    assert f"{cfg}:8:" in r.stderr and "no_such_function" in r.stderr
