"""The four transaction state machines of RFC 3261 §17, as tables.

Each machine is a dict ``(state, event) -> (next state, actions)``.  A
pair that is not in the table is an event the machine ignores in that state
(``step`` returns the state unchanged and no action).  The tm logic
(:mod:`.core`) keeps the state of each UAC branch and of the UAS side as a
small int in the cell (``STATE_IDS``) and performs the actions:

==================  ========================================================
action              meaning
==================  ========================================================
``send``            send the response the TU gave (server)
``resend``          send the last response again (server)
``retransmit``      send the request again (client, timer A/E)
``pass_up``         hand the response to the TU (proxy core: §16.7)
``send_ack``        build and send the ACK of a non-2xx (client INVITE)
``timeout``         tell the TU the transaction timed out (408)
``transport_err``   tell the TU the transport failed (503)
``start_X``         start timer X (``X`` in A..K, ``C`` for fr_inv)
``stop_X``          stop timer X
==================  ========================================================

Timer values (``timer_value``): A, E and G start at T1 and double (A without
limit, E and G up to T2); B, F, H and J are 64·T1; D is 32 s for UDP (0 for
a reliable transport), I and K are T4 for UDP (0 when reliable).  Timer C
is the proxy's INVITE timer (§16.6 step 11), which OpenSIPS calls
``fr_inv_timeout``; tm uses ``fr_timeout`` for B/F, as OpenSIPS does.

:class:`Machine` runs one machine with an injectable clock; the unit tests
drive it without sockets.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

# ---- states --------------------------------------------------------------
CALLING = "calling"
TRYING = "trying"
PROCEEDING = "proceeding"
COMPLETED = "completed"
CONFIRMED = "confirmed"
TERMINATED = "terminated"
INIT = "init"

STATES = (INIT, CALLING, TRYING, PROCEEDING, COMPLETED, CONFIRMED,
          TERMINATED)
STATE_IDS = {s: i for i, s in enumerate(STATES)}

# ---- events --------------------------------------------------------------
# client side: responses received, timers, transport errors
R1XX, R2XX, RFINAL = "1xx", "2xx", "300-699"
# server side: the request (or its retransmission), an ACK, what the TU sends
REQUEST, ACK = "request", "ACK"
TU1XX, TU2XX, TUFINAL = "tu_1xx", "tu_2xx", "tu_300-699"
TRANSPORT_ERR = "transport_err"
SEND = "send"   # client: the TU hands the request to the transaction


def timer(x: str) -> str:
    return "timer_" + x


def reply_event(code: int) -> str:
    """Client event of a received response."""
    if code < 200:
        return R1XX
    if code < 300:
        return R2XX
    return RFINAL


def tu_event(code: int) -> str:
    """Server event of a response the TU sends."""
    if code < 200:
        return TU1XX
    if code < 300:
        return TU2XX
    return TUFINAL


Table = Dict[Tuple[str, str], Tuple[str, Tuple[str, ...]]]

# Figure 5: INVITE client transaction (+ timer C of the proxy core)
INVITE_CLIENT: Table = {
    (INIT, SEND): (CALLING, ("start_A", "start_B")),
    (CALLING, timer("A")): (CALLING, ("retransmit", "start_A")),
    (CALLING, timer("B")): (TERMINATED, ("stop_A", "timeout")),
    (CALLING, R1XX): (PROCEEDING, ("stop_A", "stop_B", "start_C",
                                   "pass_up")),
    (CALLING, R2XX): (TERMINATED, ("stop_A", "stop_B", "pass_up")),
    (CALLING, RFINAL): (COMPLETED, ("stop_A", "stop_B", "send_ack",
                                    "pass_up", "start_D")),
    (CALLING, TRANSPORT_ERR): (TERMINATED, ("stop_A", "stop_B",
                                            "transport_err")),
    (PROCEEDING, R1XX): (PROCEEDING, ("pass_up",)),
    (PROCEEDING, R2XX): (TERMINATED, ("stop_C", "pass_up")),
    (PROCEEDING, RFINAL): (COMPLETED, ("stop_C", "send_ack", "pass_up",
                                       "start_D")),
    # §16.8: timer C cancels the branch; the transaction stays to take
    # (and ACK) the 487 that the CANCEL brings
    (PROCEEDING, timer("C")): (PROCEEDING, ("timeout",)),
    (COMPLETED, RFINAL): (COMPLETED, ("send_ack",)),
    (COMPLETED, TRANSPORT_ERR): (TERMINATED, ("stop_D", "transport_err")),
    (COMPLETED, timer("D")): (TERMINATED, ()),
}

# Figure 6: non-INVITE client transaction
NON_INVITE_CLIENT: Table = {
    (INIT, SEND): (TRYING, ("start_E", "start_F")),
    (TRYING, timer("E")): (TRYING, ("retransmit", "start_E")),
    (TRYING, timer("F")): (TERMINATED, ("stop_E", "timeout")),
    (TRYING, TRANSPORT_ERR): (TERMINATED, ("stop_E", "stop_F",
                                           "transport_err")),
    (TRYING, R1XX): (PROCEEDING, ("pass_up",)),
    (TRYING, R2XX): (COMPLETED, ("stop_E", "stop_F", "pass_up", "start_K")),
    (TRYING, RFINAL): (COMPLETED, ("stop_E", "stop_F", "pass_up",
                                   "start_K")),
    (PROCEEDING, timer("E")): (PROCEEDING, ("retransmit", "start_E")),
    (PROCEEDING, timer("F")): (TERMINATED, ("stop_E", "timeout")),
    (PROCEEDING, TRANSPORT_ERR): (TERMINATED, ("stop_E", "stop_F",
                                               "transport_err")),
    (PROCEEDING, R1XX): (PROCEEDING, ("pass_up",)),
    (PROCEEDING, R2XX): (COMPLETED, ("stop_E", "stop_F", "pass_up",
                                     "start_K")),
    (PROCEEDING, RFINAL): (COMPLETED, ("stop_E", "stop_F", "pass_up",
                                       "start_K")),
    (COMPLETED, R1XX): (COMPLETED, ()),
    (COMPLETED, R2XX): (COMPLETED, ()),
    (COMPLETED, RFINAL): (COMPLETED, ()),
    (COMPLETED, timer("K")): (TERMINATED, ()),
}

# Figure 7: INVITE server transaction
INVITE_SERVER: Table = {
    (INIT, REQUEST): (PROCEEDING, ()),
    (PROCEEDING, REQUEST): (PROCEEDING, ("resend",)),
    (PROCEEDING, TU1XX): (PROCEEDING, ("send",)),
    (PROCEEDING, TU2XX): (TERMINATED, ("send",)),
    (PROCEEDING, TUFINAL): (COMPLETED, ("send", "start_G", "start_H")),
    (PROCEEDING, TRANSPORT_ERR): (TERMINATED, ()),
    (COMPLETED, REQUEST): (COMPLETED, ("resend",)),
    (COMPLETED, timer("G")): (COMPLETED, ("resend", "start_G")),
    (COMPLETED, timer("H")): (TERMINATED, ("stop_G", "timeout")),
    (COMPLETED, ACK): (CONFIRMED, ("stop_G", "stop_H", "start_I")),
    (COMPLETED, TRANSPORT_ERR): (TERMINATED, ("stop_G", "stop_H")),
    (CONFIRMED, ACK): (CONFIRMED, ()),
    (CONFIRMED, REQUEST): (CONFIRMED, ()),
    (CONFIRMED, timer("I")): (TERMINATED, ()),
}

# Figure 8: non-INVITE server transaction
NON_INVITE_SERVER: Table = {
    (INIT, REQUEST): (TRYING, ()),
    (TRYING, REQUEST): (TRYING, ()),
    (TRYING, TU1XX): (PROCEEDING, ("send",)),
    (TRYING, TU2XX): (COMPLETED, ("send", "start_J")),
    (TRYING, TUFINAL): (COMPLETED, ("send", "start_J")),
    (PROCEEDING, TU1XX): (PROCEEDING, ("send",)),
    (PROCEEDING, REQUEST): (PROCEEDING, ("resend",)),
    (PROCEEDING, TU2XX): (COMPLETED, ("send", "start_J")),
    (PROCEEDING, TUFINAL): (COMPLETED, ("send", "start_J")),
    (PROCEEDING, TRANSPORT_ERR): (TERMINATED, ()),
    (COMPLETED, REQUEST): (COMPLETED, ("resend",)),
    (COMPLETED, TU1XX): (COMPLETED, ()),
    (COMPLETED, TU2XX): (COMPLETED, ()),
    (COMPLETED, TUFINAL): (COMPLETED, ()),
    (COMPLETED, TRANSPORT_ERR): (TERMINATED, ("stop_J",)),
    (COMPLETED, timer("J")): (TERMINATED, ()),
}

MACHINES = {"invite_client": INVITE_CLIENT,
            "non_invite_client": NON_INVITE_CLIENT,
            "invite_server": INVITE_SERVER,
            "non_invite_server": NON_INVITE_SERVER}


def step(table: Table, state: str, event: str):
    """(next state, actions) for event in state; ignored events give
    (state, ())."""
    return table.get((state, event), (state, ()))


class Timers:
    """RFC 3261 timer values in ms (T1, T2, T4, fr = Timer C)."""

    def __init__(self, t1=500, t2=4000, t4=5000, fr=30000, fr_inv=120000,
                 reliable=False):
        self.t1, self.t2, self.t4 = t1, t2, t4
        self.fr, self.fr_inv = fr, fr_inv
        self.reliable = reliable

    def initial(self, x: str) -> int:
        t1 = self.t1
        if x in "AEG":
            return t1
        if x in "BFHJ":
            return 64 * t1
        if x == "C":
            return self.fr_inv
        if x == "D":
            return 0 if self.reliable else 32000
        if x in "IK":
            return 0 if self.reliable else self.t4
        raise ValueError(f"no timer {x}")

    def next_interval(self, x: str, last: int) -> int:
        """The interval after a retransmission timer fired after ``last``."""
        if x == "A":
            return 2 * last
        if x in "EG":
            return min(2 * last, self.t2)
        return self.initial(x)


class Machine:
    """One transaction machine with timers on an injectable clock (ms).

    ``feed(event)`` applies the table; ``advance(now)`` fires the timers due
    up to ``now`` in time order.  Actions other than timer starts/stops are
    recorded in ``done`` as ``(time, action)``."""

    def __init__(self, name: str, clock: Callable[[], int], timers=None):
        self.name = name
        self.table = MACHINES[name]
        self.clock = clock
        self.t = timers or Timers()
        self.state = INIT
        self.timers: Dict[str, Tuple[int, int]] = {}   # x -> (due, interval)
        self.done: List[Tuple[int, str]] = []

    def feed(self, event: str) -> str:
        self.state, actions = step(self.table, self.state, event)
        for a in actions:
            self._act(a, event)
        if self.state == TERMINATED:
            self.timers.clear()
        return self.state

    def _act(self, a: str, event: str) -> None:
        now = self.clock()
        if a.startswith("start_"):
            x = a[6:]
            if event == timer(x) and x in "AEG":
                iv = self.t.next_interval(x, self.timers.get(x, (0, 0))[1]
                                          or self._last[x])
            else:
                iv = self.t.initial(x)
            self._last[x] = iv
            if iv == 0:        # reliable transport: fires at once
                self.timers[x] = (now, 0)
            else:
                self.timers[x] = (now + iv, iv)
        elif a.startswith("stop_"):
            self.timers.pop(a[5:], None)
        else:
            self.done.append((now, a))

    @property
    def _last(self):
        d = self.__dict__.get("_lastd")
        if d is None:
            d = self.__dict__["_lastd"] = {}
        return d

    def next_due(self):
        if not self.timers:
            return None
        return min(due for due, _ in self.timers.values())

    def advance(self, now: int, set_clock: Callable[[int], None]) -> None:
        """Fire every timer due at or before ``now`` (the clock is moved to
        each due time in turn with ``set_clock``)."""
        while self.timers:
            x, (due, _) = min(self.timers.items(), key=lambda kv: kv[1][0])
            if due > now:
                break
            set_clock(due)
            del self.timers[x]
            self.feed(timer(x))
        set_clock(now)
