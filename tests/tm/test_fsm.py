"""The RFC 3261 §17 machines of modules/tm/fsm.py: every transition of the
four tables, and the timers on a fake clock (no sockets)."""
import pytest

from opensipy_modules.tm import fsm
from opensipy_modules.tm.fsm import (ACK, COMPLETED, CONFIRMED, INIT,
                                     PROCEEDING, R1XX, R2XX, REQUEST, RFINAL,
                                     SEND, TERMINATED, TRYING, TU1XX, TU2XX,
                                     TUFINAL, Machine, timer)


class Clock:
    def __init__(self):
        self.now = 0

    def __call__(self):
        return self.now

    def set(self, t):
        self.now = t


def machine(name, **kw):
    c = Clock()
    return Machine(name, c, fsm.Timers(**kw)), c


# every transition, with the RFC's expected target and effect, written out
# here independently of the tables
EXPECTED = {
    "invite_client": [
        (INIT, SEND, "calling", {"start_A", "start_B"}),
        ("calling", timer("A"), "calling", {"retransmit", "start_A"}),
        ("calling", timer("B"), TERMINATED, {"timeout", "stop_A"}),
        ("calling", R1XX, PROCEEDING, {"pass_up", "stop_A", "stop_B",
                                       "start_C"}),
        ("calling", R2XX, TERMINATED, {"pass_up", "stop_A", "stop_B"}),
        ("calling", RFINAL, COMPLETED, {"send_ack", "pass_up", "start_D",
                                        "stop_A", "stop_B"}),
        ("calling", "transport_err", TERMINATED, {"transport_err", "stop_A",
                                                  "stop_B"}),
        (PROCEEDING, R1XX, PROCEEDING, {"pass_up"}),
        (PROCEEDING, R2XX, TERMINATED, {"pass_up", "stop_C"}),
        (PROCEEDING, RFINAL, COMPLETED, {"send_ack", "pass_up", "start_D",
                                         "stop_C"}),
        (PROCEEDING, timer("C"), PROCEEDING, {"timeout"}),
        (COMPLETED, RFINAL, COMPLETED, {"send_ack"}),
        (COMPLETED, "transport_err", TERMINATED, {"transport_err",
                                                  "stop_D"}),
        (COMPLETED, timer("D"), TERMINATED, set()),
    ],
    "non_invite_client": [
        (INIT, SEND, TRYING, {"start_E", "start_F"}),
        (TRYING, timer("E"), TRYING, {"retransmit", "start_E"}),
        (TRYING, timer("F"), TERMINATED, {"timeout", "stop_E"}),
        (TRYING, "transport_err", TERMINATED, {"transport_err", "stop_E",
                                               "stop_F"}),
        (TRYING, R1XX, PROCEEDING, {"pass_up"}),
        (TRYING, R2XX, COMPLETED, {"pass_up", "stop_E", "stop_F",
                                   "start_K"}),
        (TRYING, RFINAL, COMPLETED, {"pass_up", "stop_E", "stop_F",
                                     "start_K"}),
        (PROCEEDING, timer("E"), PROCEEDING, {"retransmit", "start_E"}),
        (PROCEEDING, timer("F"), TERMINATED, {"timeout", "stop_E"}),
        (PROCEEDING, "transport_err", TERMINATED, {"transport_err",
                                                   "stop_E", "stop_F"}),
        (PROCEEDING, R1XX, PROCEEDING, {"pass_up"}),
        (PROCEEDING, R2XX, COMPLETED, {"pass_up", "stop_E", "stop_F",
                                       "start_K"}),
        (PROCEEDING, RFINAL, COMPLETED, {"pass_up", "stop_E", "stop_F",
                                         "start_K"}),
        (COMPLETED, R1XX, COMPLETED, set()),
        (COMPLETED, R2XX, COMPLETED, set()),
        (COMPLETED, RFINAL, COMPLETED, set()),
        (COMPLETED, timer("K"), TERMINATED, set()),
    ],
    "invite_server": [
        (INIT, REQUEST, PROCEEDING, set()),
        (PROCEEDING, REQUEST, PROCEEDING, {"resend"}),
        (PROCEEDING, TU1XX, PROCEEDING, {"send"}),
        (PROCEEDING, TU2XX, TERMINATED, {"send"}),
        (PROCEEDING, TUFINAL, COMPLETED, {"send", "start_G", "start_H"}),
        (PROCEEDING, "transport_err", TERMINATED, set()),
        (COMPLETED, REQUEST, COMPLETED, {"resend"}),
        (COMPLETED, timer("G"), COMPLETED, {"resend", "start_G"}),
        (COMPLETED, timer("H"), TERMINATED, {"timeout", "stop_G"}),
        (COMPLETED, ACK, CONFIRMED, {"stop_G", "stop_H", "start_I"}),
        (COMPLETED, "transport_err", TERMINATED, {"stop_G", "stop_H"}),
        (CONFIRMED, ACK, CONFIRMED, set()),
        (CONFIRMED, REQUEST, CONFIRMED, set()),
        (CONFIRMED, timer("I"), TERMINATED, set()),
    ],
    "non_invite_server": [
        (INIT, REQUEST, TRYING, set()),
        (TRYING, REQUEST, TRYING, set()),
        (TRYING, TU1XX, PROCEEDING, {"send"}),
        (TRYING, TU2XX, COMPLETED, {"send", "start_J"}),
        (TRYING, TUFINAL, COMPLETED, {"send", "start_J"}),
        (PROCEEDING, TU1XX, PROCEEDING, {"send"}),
        (PROCEEDING, REQUEST, PROCEEDING, {"resend"}),
        (PROCEEDING, TU2XX, COMPLETED, {"send", "start_J"}),
        (PROCEEDING, TUFINAL, COMPLETED, {"send", "start_J"}),
        (PROCEEDING, "transport_err", TERMINATED, set()),
        (COMPLETED, REQUEST, COMPLETED, {"resend"}),
        (COMPLETED, TU1XX, COMPLETED, set()),
        (COMPLETED, TU2XX, COMPLETED, set()),
        (COMPLETED, TUFINAL, COMPLETED, set()),
        (COMPLETED, "transport_err", TERMINATED, {"stop_J"}),
        (COMPLETED, timer("J"), TERMINATED, set()),
    ],
}

CASES = [(name, *t) for name, ts in EXPECTED.items() for t in ts]


@pytest.mark.parametrize("name,state,event,target,actions", CASES,
                         ids=[f"{c[0]}:{c[1]}+{c[2]}" for c in CASES])
def test_every_transition(name, state, event, target, actions):
    nxt, acts = fsm.step(fsm.MACHINES[name], state, event)
    assert nxt == target
    assert set(acts) == actions


def test_the_tables_have_nothing_else():
    for name, table in fsm.MACHINES.items():
        expected = {(s, e) for s, e, _, _ in EXPECTED[name]}
        assert set(table) == expected, name


def test_an_event_a_state_ignores_changes_nothing():
    assert fsm.step(fsm.INVITE_SERVER, CONFIRMED, TU2XX) == (CONFIRMED, ())
    assert fsm.step(fsm.INVITE_CLIENT, TERMINATED, R2XX) == (TERMINATED, ())


def test_reply_and_tu_events():
    assert [fsm.reply_event(c) for c in (100, 183, 200, 299, 300, 486, 603)] \
        == [R1XX, R1XX, R2XX, R2XX, RFINAL, RFINAL, RFINAL]
    assert [fsm.tu_event(c) for c in (180, 202, 487)] == [TU1XX, TU2XX,
                                                          TUFINAL]


# ---- timers on the fake clock -----------------------------------------------

def test_timer_a_doubles_until_timer_b():
    m, c = machine("invite_client")
    m.feed(SEND)
    m.advance(40000, c.set)
    sent = [t for t, a in m.done if a == "retransmit"]
    # A: 500, 1000, 2000, 4000, 8000, 16000 after the previous one
    assert sent == [500, 1500, 3500, 7500, 15500, 31500]
    assert (32000, "timeout") in m.done
    assert m.state == TERMINATED


def test_provisional_stops_a_and_timer_c_times_out():
    m, c = machine("invite_client", fr_inv=10000)
    m.feed(SEND)
    m.advance(600, c.set)
    m.feed(R1XX)
    assert set(m.timers) == {"C"}
    m.advance(10599, c.set)
    assert m.state == PROCEEDING
    m.advance(10600, c.set)
    # RFC 3261 §16.8: the branch is cancelled, the transaction waits for
    # the 487 and ACKs it
    assert m.state == PROCEEDING and m.done[-1] == (10600, "timeout")
    assert m.timers == {}
    assert [a for _, a in m.done].count("retransmit") == 1
    m.feed(RFINAL)
    assert m.state == COMPLETED and m.done[-1][1] == "pass_up"
    assert "send_ack" in [a for _, a in m.done]


def test_invite_client_final_acks_and_waits_timer_d():
    m, c = machine("invite_client")
    m.feed(SEND)
    c.set(100)
    m.feed(RFINAL)
    assert m.state == COMPLETED and set(m.timers) == {"D"}
    c.set(5000)
    m.feed(RFINAL)               # retransmitted final: ACK again
    assert [a for _, a in m.done].count("send_ack") == 2
    m.advance(32099, c.set)
    assert m.state == COMPLETED
    m.advance(32100, c.set)
    assert m.state == TERMINATED


def test_timer_d_is_zero_on_a_reliable_transport():
    m, c = machine("invite_client", reliable=True)
    m.feed(SEND)
    m.feed(RFINAL)
    m.advance(0, c.set)
    assert m.state == TERMINATED


def test_timer_e_caps_at_t2_and_f_times_out():
    m, c = machine("non_invite_client")
    m.feed(SEND)
    m.advance(32000, c.set)
    sent = [t for t, a in m.done if a == "retransmit"]
    # 500, 1000, 2000, then every 4000 (T2)
    assert sent[:5] == [500, 1500, 3500, 7500, 11500]
    assert all(b - a == 4000 for a, b in zip(sent[3:], sent[4:]))
    assert m.done[-1] == (32000, "timeout")


def test_non_invite_proceeding_retransmits_at_t2_then_k():
    m, c = machine("non_invite_client")
    m.feed(SEND)
    m.advance(100, c.set)
    m.feed(R1XX)
    m.advance(3600, c.set)
    assert [t for t, a in m.done if a == "retransmit"] == [500, 1500, 3500]
    m.feed(R2XX)
    assert set(m.timers) == {"K"}
    m.advance(3600 + 5000, c.set)
    assert m.state == TERMINATED


def test_server_invite_resends_with_g_until_ack_then_i():
    m, c = machine("invite_server")
    m.feed(REQUEST)
    m.feed(TUFINAL)
    m.advance(3600, c.set)
    assert [t for t, a in m.done if a == "resend"] == [500, 1500, 3500]
    m.feed(ACK)
    assert m.state == CONFIRMED and set(m.timers) == {"I"}
    m.advance(8600, c.set)
    assert m.state == TERMINATED


def test_server_invite_without_ack_times_out_with_h():
    m, c = machine("invite_server", t2=2000)
    m.feed(REQUEST)
    m.feed(TUFINAL)
    m.advance(32000, c.set)
    resends = [t for t, a in m.done if a == "resend"]
    assert resends[:3] == [500, 1500, 3500]
    assert all(b - a == 2000 for a, b in zip(resends[2:], resends[3:]))
    assert m.done[-1] == (32000, "timeout") and m.state == TERMINATED


def test_server_non_invite_waits_j():
    m, c = machine("non_invite_server")
    m.feed(REQUEST)
    m.feed(REQUEST)
    assert m.done == []           # nothing to resend yet
    m.feed(TU1XX)
    m.feed(REQUEST)
    m.feed(TU2XX)
    m.feed(REQUEST)
    assert [a for _, a in m.done] == ["send", "resend", "send", "resend"]
    m.advance(31999, c.set)
    assert m.state == COMPLETED
    m.advance(32000, c.set)
    assert m.state == TERMINATED
