"""OpenSIPS's typing rules for every operator, table-driven.

Where the expected values come from (OpenSIPS 3.x core, read in its
source; the rules are written out in docs/script-typing.md):

* arithmetic: route.c ``eval_elem`` (case ``EXPR_O``): the LEFT operand
  decides.  An integer on the left computes in a C ``int``; NULL on the
  right counts 0; a right operand without an integer (a string) gives no
  value.  A string or NULL on the left only concatenates with ``+``
  (NULL on the right is ""; a right operand without text, i.e. a number
  written in the script or computed by it, gives no value) or combines
  byte-wise with ``& | ^`` when both strings have one length; anything
  else gives no value.  Division by 0 logs and gives 0.  ``~`` needs an
  integer.
* no value: action.c ``do_assign`` logs "no value in right expression"
  and leaves the variable untouched (the tables start it at "keep").
* compound assignments: action.c ``do_assign``: NULL on either side is an
  error; two strings only ``+=``; two values carrying integers compute;
  anything else is an error (the variable is untouched).
* comparisons: route.c ``comp_scriptvar``/``comp_s2s``/``comp_n2n``: a
  variable against a number must carry an integer, else the comparison is
  an error (-1) that stops the whole condition as false (``!`` keeps it
  false, ``||`` stops on it); against a string, or two variables not both
  carrying integers, compare as text (``str_strcasecmp``: case-insensitive,
  a prefix is smaller); NULL equals only NULL, is never ordered, and is
  different from every constant.
* a variable's truth: route.c ``eval_elem`` (``SCRIPTVAR_O``/``NO_OP``):
  NULL, "" and the integer 0 are false; the string "0" is true.
"""
import pytest

from script_helpers import run_script

SETUP = ('$var(i) = 6; $var(j) = 4; $var(z) = 0; $var(s) = "ab"; '
         '$var(t) = "xy"; $var(d) = "12"; $var(e) = ""; $var(zs) = "0";\n')

# (expression, what $var(r) holds after "$var(r) = expression;", starting
# from "keep")
ARITH = [
    # integer OP integer: C int arithmetic (eval_elem, PV_TYPE_INT left)
    ("$var(i) + $var(j)", "10"), ("$var(i) - $var(j)", "2"),
    ("$var(i) * $var(j)", "24"), ("$var(i) / $var(j)", "1"),
    ("$var(i) % $var(j)", "2"), ("$var(i) & $var(j)", "4"),
    ("$var(i) | $var(j)", "6"), ("$var(i) ^ $var(j)", "2"),
    ("$var(i) << $var(j)", "96"), ("$var(i) >> 1", "3"),
    ("$var(i) + 4", "10"), ("7 / 2", "3"), ("-7 / 2", "-3"),
    ("-7 % 2", "-1"), ("7 % -2", "1"),
    # a C int: results wrap at 32 bits, a shift count is taken mod 32
    # (x86-64, where OpenSIPS runs)
    ("2147483647 + 1", "-2147483648"), ("1 << 31", "-2147483648"),
    ("$var(i) * 1073741824", "-2147483648"), ("1 << 33", "2"),
    # division by zero: "divide by 0" logged, the result is 0
    ("5 / 0", "0"), ("5 % 0", "0"), ("$var(i) / $var(z)", "0"),
    # NULL on the right of an integer counts 0
    ("$var(i) + $var(n)", "6"), ("$var(i) * $var(n)", "0"),
    ("$var(i) - $var(n)", "6"),
    # a string on the right of an integer: "invalid numeric operands"
    ("$var(i) + $var(s)", "keep"), ("$var(i) + $var(d)", "keep"),
    ("$var(i) + \"1\"", "keep"), ("$var(i) - $var(d)", "keep"),
    # a string on the left: + concatenates (an integer variable by its
    # text; NULL as "")
    ("$var(s) + $var(t)", "abxy"), ("$var(s) + \"c\"", "abc"),
    ("$var(s) + $var(i)", "ab6"), ("$var(s) + $var(n)", "ab"),
    ("\"n\" + $var(i)", "n6"), ("$var(d) + $var(d)", "1212"),
    # ... but a number has no text: "invalid string operands"
    ("$var(s) + 1", "keep"), ("$var(d) + 1", "keep"),
    ("\"a\" + (1 + 1)", "keep"), ("$var(s) + ($var(i) + 1)", "keep"),
    ("$var(s) + $var(t) + 1", "keep"),
    # other operators on a string left: byte-wise & | ^ on equal lengths,
    # else no value
    ("$var(s) & $var(t)", "``"), ("$var(s) | $var(t)", "y{"),
    ("$var(s) & \"abc\"", "keep"), ("$var(s) - $var(t)", "keep"),
    ("$var(s) * 2", "keep"), ("$var(d) * 2", "keep"),
    ("$var(d) / $var(d)", "keep"), ("$var(s) << 1", "keep"),
    # NULL on the left: + concatenates, anything else has no value
    ("$var(n) + \"a\"", "a"), ("$var(n) + $var(i)", "6"),
    ("$var(n) + 1", "keep"), ("$var(n) - 1", "keep"),
    ("$var(n) * $var(i)", "keep"),
    # ~ needs an integer ("binary NOT on non-numeric value")
    ("~$var(i)", "-7"), ("~0", "-1"), ("~$var(s)", "keep"),
    ("~$var(n)", "keep"), ("~$var(d)", "keep"),
    # an integer computed by the script is an integer on the left
    ("$var(i) + ($var(i) * 2)", "18"), ("($var(i) - 1) * $var(j)", "20"),
    # a comparison as a value: 1, 0, or -1 when it is an error
    ("($var(i) == 6)", "1"), ("($var(i) == 7)", "0"),
    ("($var(d) == 12)", "-1"), ("($var(s) == \"AB\")", "1"),
]


def _run_values(items, setup=SETUP):
    body = setup
    for expr, _ in items:
        body += f'$var(r) = "keep"; $var(r) = {expr}; log("$var(r)");\n'
    _, logged = run_script("route {\n" + body + "}\n")
    return logged


def test_arithmetic_pairs_give_opensips_values():
    got = _run_values(ARITH)
    wrong = [(e, g, w) for (e, w), g in zip(ARITH, got) if g != w]
    assert len(got) == len(ARITH)
    assert not wrong, f"(expression, got, OpenSIPS): {wrong}"


# (start value, operator, right side, value after; "=keep" when OpenSIPS
# refuses the assignment and the variable keeps its start value)
COMPOUND = [
    ("6", "+=", "4", "10"), ("6", "-=", "4", "2"), ("6", "*=", "4", "24"),
    ("6", "/=", "4", "1"), ("6", "%=", "4", "2"), ("6", "&=", "4", "4"),
    ("6", "|=", "4", "6"), ("6", "^=", "4", "2"),
    ("6", "+=", "$var(j)", "10"), ("6", "-=", "-10", "16"),
    # two strings: only += (concatenation)
    ('"ab"', "+=", '"c"', "abc"), ('"ab"', "+=", "$var(t)", "abxy"),
    ('"ab"', "-=", '"a"', "=keep"), ('"ab"', "*=", '"a"', "=keep"),
    # a string and an integer, either way round: unsupported operands
    ('"ab"', "+=", "1", "=keep"), ('"ab"', "+=", "$var(i)", "=keep"),
    ("5", "+=", '"1"', "=keep"), ("5", "+=", "$var(d)", "=keep"),
    ('"12"', "+=", "1", "=keep"),
    # NULL on either side: "NULL value(s) in complex assignment"
    ("5", "+=", "$var(n)", "=keep"), ("NULL", "+=", "1", "=keep"),
    ("NULL", "+=", '"a"', "=keep"),
]


def test_compound_assignments_give_opensips_values():
    body = SETUP
    for start, op, right, _ in COMPOUND:
        body += (f"$var(x) = {start}; $var(x) {op} {right}; "
                 f'log("$var(x)");\n')
    _, logged = run_script("route {\n" + body + "}\n")
    want = []
    for start, op, right, after in COMPOUND:
        if after == "=keep":
            after = "<null>" if start == "NULL" else start.strip('"')
        want.append(after)
    wrong = [(c, g, w) for c, g, w in zip(COMPOUND, logged, want) if g != w]
    assert len(logged) == len(COMPOUND)
    assert not wrong, f"(case, got, OpenSIPS): {wrong}"


# (condition, whether the if is taken)
CONDITIONS = [
    # a variable against a number: it must carry an integer
    ("$var(i) == 6", True), ("$var(i) != 6", False), ("$var(i) < 10", True),
    ("$var(i) >= 7", False), ("6 == $var(i)", True), ("10 > $var(i)", True),
    # ... a string variable against a number is an error: false, and it
    # stays false under ! and stops || (eval_expr NOT_OP/OR_OP on -1)
    ("$var(d) == 12", False), ("$var(d) != 12", False),
    ("$var(s) > 1", False), ("!($var(d) == 12)", False),
    ("$var(d) == 12 || 1 == 1", False), ("1 == 1 || $var(d) == 12", True),
    ("1 == 1 && $var(d) == 12", False),
    # a variable against a string: text, case-insensitive (an integer by
    # its decimal text)
    ('$var(i) == "6"', True), ('$var(i) == "06"', False),
    ('$var(i) < "10"', False), ('$var(i) > "10"', True),
    ('$var(s) == "AB"', True), ('$var(s) != "AB"', False),
    ('$var(s) < "abc"', True), ('$var(s) > "AA"', True),
    ('$var(d) > "9"', False), ('"AB" == $var(s)', True),
    # two variables: numbers when both carry integers, else text
    ("$var(i) > $var(j)", True), ("$var(j) < $var(i)", True),
    ("$var(i) > $var(d)", True), ("$var(i) == $var(d)", False),
    ("$var(d) < $var(i)", True),
    # NULL equals only NULL, is never ordered, differs from every constant
    ("$var(n) == NULL", True), ("$var(n) != NULL", False),
    ("$var(n) == $var(m)", True), ("$var(n) == $var(i)", False),
    ("$var(n) != $var(i)", True), ("$var(n) < $var(i)", False),
    ("$var(n) >= $var(m)", False), ('$var(n) == ""', False),
    ('$var(n) != ""', True), ("$var(n) != 5", True), ("$var(n) < 5", False),
    ("$var(n) == 0", False),
    # regular expressions: case-insensitive, on the value's text
    ('$var(s) =~ "^A"', True), ('$var(s) !~ "^A"', False),
    ('$var(i) =~ "^6$"', True), ('$var(n) =~ "."', False),
    ('$var(n) !~ "."', True), ("$var(n) =~ $var(m)", True),
    ("$var(n) !~ $var(s)", True), ("$var(s) =~ $var(t)", False),
    # truth of a variable: NULL, "" and 0 are false, "0" is true
    ("$var(s)", True), ("$var(z)", False), ("$var(e)", False),
    ("$var(zs)", True), ("$var(n)", False), ("!$var(z)", True),
    # [ value ] tests an arithmetic value; one with no value is 0 there
    # (eval_elem returns 0), which ! turns true
    ("[$var(i) & 4]", True), ("[$var(i) & 1]", False),
    ('["a" - 1]', False), ('!["a" - 1]', True), ("[$var(s) + 1]", False),
]


@pytest.mark.parametrize("cond,taken", CONDITIONS,
                         ids=[c for c, _ in CONDITIONS])
def test_condition_as_opensips(cond, taken):
    script = ("route {\n" + SETUP + f'if ({cond}) log("T"); else log("F");'
              "\n}\n")
    _, logged = run_script(script)
    assert logged == ["T" if taken else "F"]


def test_a_long_chain_of_int_comparisons_stays_flat():
    """Comparisons that may be an error still compile to one if/elif
    chain (an error there can only make the condition false)."""
    arms = " else ".join(f'if ($var(x) == {k}) log("{k}");'
                         for k in range(120))
    _, logged = run_script('route {\n$var(x) = 97; ' + arms + '\n'
                           '$var(x) = "97"; ' + arms + '\nlog("end");\n}\n')
    assert logged == ["97", "end"]


def test_no_value_is_logged_with_the_location(capfd):
    run_script('route {\n  $var(r) = "a" + 1;\n}\n')
    err = capfd.readouterr().err
    assert "test.cfg:2:3: no value in right expression" in err


def test_a_comparison_error_is_logged_with_the_location(capfd):
    _, logged = run_script('route {\n  $var(d) = "x";\n'
                           '  if ($var(d) == 1) log("a");\n}\n')
    assert logged == []
    assert "test.cfg:3:15: error in expression" in capfd.readouterr().err


PORT_MSG = (b"INVITE sip:bob@example.com:5070 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n"
            b"From: <sip:alice@atlanta.com>;tag=1\r\n"
            b"To: <sip:bob@example.com>\r\n"
            b"Call-ID: c1\r\nCSeq: 314159 INVITE\r\n"
            b"X-Num: 42\r\nContent-Length: 0\r\n\r\n")

# variables carry OpenSIPS's types (pvar.c): $rp of a URI with a port is
# a string carrying an integer (pv_get_strintval), $cs a string
# (pv_get_cseq: pv_get_strval), $cl an integer (pv_get_intstrval), a
# header body a string, $hdrcnt an integer (pv_get_uintval)
VAR_TYPES = [
    ("if ($rp == 5070) log(\"T\");", "T"),
    ("if ($rp == \"5070\") log(\"T\");", "T"),
    ('$var(r) = "keep"; $var(r) = $rp + 1; log("$var(r)");', "keep"),
    ('$var(r) = 1 + $rp; log("$var(r)");', "5071"),
    ('$var(r) = $rp + "x"; log("$var(r)");', "5070x"),
    ('$var(r) = $rp; if ($var(r) == 5070) log("T"); else log("F");', "F"),
    ('if ($cs == 314159) log("T"); else log("F");', "F"),
    ('if ($cs == "314159") log("T"); else log("F");', "T"),
    ('if ($cl == 0) log("T"); else log("F");', "T"),
    ('if ($hdr(X-Num) == 42) log("T"); else log("F");', "F"),
    ('if ($hdr(X-Num) == "42") log("T"); else log("F");', "T"),
    ('$var(r) = $hdrcnt(Via) + 1; log("$var(r)");', "2"),
    ('$var(r) = $(hdr(X-Num){s.int}) + 1; log("$var(r)");', "43"),
]


@pytest.mark.parametrize("body,want", VAR_TYPES,
                         ids=[b for b, _ in VAR_TYPES])
def test_variables_carry_opensips_types(body, want):
    from script_helpers import sip_msg
    _, logged = run_script("route {\n" + body + "\n}\n",
                           msg=sip_msg(PORT_MSG))
    assert logged == [want]


@pytest.mark.parametrize("stmt,msg", [
    # cfg.y assign_cmd: "script_var EQUAL NULLV", and COLONEQ NULLV only for
    # an AVP ("invalid left operand in NULL assignment")
    ("$var(a) := NULL;", "test.cfg:2:12: NULL cannot be assigned with ':='"),
    ("$var(a) += NULL;", "test.cfg:2:12: NULL cannot be assigned with '+='"),
    # cfg.y: matchop only in "script_var strop (script_var|STRING)"
    ('if ($var(a) =~ 5) exit;', "test.cfg:2:16: '=~' needs a regular "
     "expression"),
])
def test_operator_misuse_is_a_check_error(stmt, msg):
    from opensipy.script import ScriptErrors
    from script_helpers import compile_snippet
    with pytest.raises(ScriptErrors) as ei:
        compile_snippet("route {\n" + stmt + "\n}\n")
    assert msg in str(ei.value)


def test_null_deletes_with_colon_eq_on_an_avp():
    _, logged = run_script('route {\n$avp(x) = 1; $avp(x) = 2; '
                           '$avp(x) := NULL; log("[$avp(x)]");\n}\n')
    assert logged == ["[<null>]"]
