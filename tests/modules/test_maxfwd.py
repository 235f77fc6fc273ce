"""maxfwd over real parsed requests: add, decrement, cap, zero, bad value,
the fixup limits, is_maxfwd_lt, and the outgoing bytes."""
import pytest

from opensipy import error
from opensipy.parser import SipMsg

import modkit
import opensipy_modules.maxfwd as mf


@pytest.fixture(autouse=True)
def limit():
    mf.max_limit = mf.MAXFWD_UPPER_LIMIT
    yield
    mf.max_limit = mf.MAXFWD_UPPER_LIMIT


def msg(value="70", check=True):
    return modkit.parse(modkit.request(max_forwards=value), check=check)


def out_values(m):
    return SipMsg(m.build()).hdrs("Max-Forwards")


def test_decrement():
    m = msg("70")
    assert mf.w_process_maxfwd_header(m, 10) == 1
    assert out_values(m) == ["69"]
    assert m.maxfwd_value == 69


def test_missing_header_is_added_with_max():
    m = msg(None)
    assert mf.w_process_maxfwd_header(m, 10) == 2
    out = SipMsg(m.build())
    assert out.hdrs("Max-Forwards") == ["10"]
    # at the top of the header section
    assert out.headers[0].name == "Max-Forwards"
    assert mf.w_is_maxfwd_lt(m, 11) == 1 and mf.w_is_maxfwd_lt(m, 10) == -1


def test_zero_returns_minus_1_and_leaves_the_message():
    m = msg("0")
    assert mf.w_process_maxfwd_header(m, 10) == -1
    assert m.n_lumps == 0
    assert out_values(m) == ["0"]


def test_one_becomes_zero():
    m = msg("1")
    assert mf.w_process_maxfwd_header(m, 10) == 1
    assert out_values(m) == ["0"]


@pytest.mark.parametrize("value,limit,expect", [
    ("300", 256, "256"), ("70", 16, "16"), ("17", 16, "16"),
    ("16", 16, "15"), ("65535", 256, "256"),
])
def test_value_above_max_limit_is_capped(value, limit, expect):
    mf.max_limit = limit
    m = msg(value)
    assert mf.w_process_maxfwd_header(m, 10) == 1
    assert out_values(m) == [expect]


@pytest.mark.parametrize("bad", ["abc", "", "-1", "7x", "65536", "1 2"])
def test_bad_value_is_an_error_recorded_for_sl_reply_error(bad):
    m = msg(bad, check=False)
    assert mf.w_process_maxfwd_header(m, 10) == -2
    assert m.ser_error == error.E_BAD_REQ
    assert error.err2reason_phrase(m.ser_error) == (400,
                                                    "Bad Request (400/SL)")
    assert m.n_lumps == 0
    assert mf.w_is_maxfwd_lt(m, 5) == -3


def test_a_second_call_changes_nothing_more():
    m = msg("70")
    assert mf.w_process_maxfwd_header(m, 10) == 1
    assert mf.w_process_maxfwd_header(m, 10) == 1
    assert out_values(m) == ["69"]
    m = msg(None)
    assert mf.w_process_maxfwd_header(m, 10) == 2
    assert mf.w_process_maxfwd_header(m, 10) == 2
    assert out_values(m) == ["10"]


def test_is_maxfwd_lt():
    assert mf.w_is_maxfwd_lt(msg("5"), 6) == 1
    assert mf.w_is_maxfwd_lt(msg("5"), 5) == -1
    assert mf.w_is_maxfwd_lt(msg("5"), 1) == -1
    assert mf.w_is_maxfwd_lt(msg(None), 5) == -2
    m = msg("2")
    assert mf.w_is_maxfwd_lt(m, 2) == -1
    assert mf.w_process_maxfwd_header(m, 10) == 1
    assert mf.w_is_maxfwd_lt(m, 2) == 1      # sees the decremented value


def test_fixup_limits():
    assert mf.fixup_maxfwd(1) == 1 and mf.fixup_maxfwd(256) == 256
    for bad in (0, -5, 257):
        with pytest.raises(ValueError):
            mf.fixup_maxfwd(bad)
    mf.max_limit = 20
    with pytest.raises(ValueError, match="bigger than max limit"):
        mf.fixup_maxfwd(21)


def test_mod_init_checks_max_limit():
    for bad in (0, 257):
        mf.max_limit = bad
        assert mf.mod_init() < 0
    mf.max_limit = 70
    assert mf.mod_init() == 0


def test_header_after_a_via_added_by_forward():
    m = msg(None)
    assert mf.w_process_maxfwd_header(m, 10) == 2
    m.add_via("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours")
    out = SipMsg(m.build())
    assert [h.name for h in out.headers[:3]] == ["Via", "Max-Forwards", "Via"]


@pytest.mark.parametrize("value,rc,expect", [
    ("00070", 1, "69"),          # five digits: the parser's value, decremented
    ("000070", -2, "000070"),    # six: OpenSIPS's str2s refuses it
    ("70", 1, "69"),
])
def test_the_parsed_value_and_the_text_agree(value, rc, expect):
    """The fast path reads the value the parser read; the body length
    keeps OpenSIPS's five-digit limit, checked (SipMsg with check) or
    not (the same answers through the text)."""
    for check in (True, False):
        m = msg(value, check=check)
        assert (m.max_forwards_span() is not None) == check
        assert mf.w_process_maxfwd_header(m, 10) == rc
        assert out_values(m) == [expect]
