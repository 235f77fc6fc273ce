"""Stateless replies, the sl To-tag and the ACK filter (OpenSIPS sl_funcs.c).

To-tag
------
``<prefix>-<suffix>``: ``prefix`` is 32 hex digits, an MD5 over a fixed
signature and this server's listening sockets, the same in every process of
one server; ``suffix`` is 8 hex digits, a CRC-32 over the request's Call-ID,
From tag, CSeq number and top Via (sent-by and branch), so a retransmission
of a request gets the same tag and two requests get different ones.

ACK filter
----------
An ACK whose To tag has the shape above and our prefix answers a reply sl
sent: it is absorbed (``received_ACKs`` counts it) before the script runs.
As in OpenSIPS the filter only looks while :data:`SL_RPL_WAIT_TIME` seconds
have not passed since the last reply sl sent (from any process: the deadline
lives in shared memory); later ACKs go to the script.  OpenSIPS also
recomputes the suffix and so lets the ACK of a 2xx (a new branch) through;
here the prefix alone decides, so that ACK is absorbed as well.

OpenSIPS 3.x adds its tag to replies from 180 up; here every reply above
100 gets it (RFC 3261 §8.2.6.2: a UAS adds a tag to any response but a
100).
"""
from __future__ import annotations

import time
from typing import Iterable, List, Optional

from opensipy import error, forward, log, shm
from opensipy import totag as totag_mod
from opensipy.parser import METHOD_ACK

SL_RPL_WAIT_TIME = 2          # seconds the ACK filter stays active
TOTAG_SIGNATURE = "opensipy-stateless"
SEPARATOR = totag_mod.SEPARATOR
TOTAG_LEN = totag_mod.TAG_LEN
_tags = totag_mod.TagGen(TOTAG_SIGNATURE)   # the core's one generator

_deadline = None              # shm AtomicCounter: CLOCK_MONOTONIC ns
DEADLINE_STEP_NS = 10_000_000
_pushed = [-DEADLINE_STEP_NS]  # when this process last pushed the deadline
_monotonic_ns = time.monotonic_ns


class Stats:
    """The module's statistics (bound by the core at loadmodule)."""
    enabled = True
    by_class = [None] * 6     # 1xx_replies .. 6xx_replies
    sent_replies = None
    sent_err_replies = None
    received_ACKs = None


stats = Stats()


def _stat_inc(st) -> None:
    if stats.enabled and st is not None:
        st.inc()


def init_tags(sockets: Iterable = ()) -> str:
    """Compute the per-server To-tag prefix (mod_init, before fork)."""
    return _tags.init(sockets)


def init_timeout() -> None:
    """The shared ACK-filter deadline (mod_init, before fork)."""
    global _deadline
    _deadline = shm.AtomicCounter(0, "sl")
    _pushed[0] = -DEADLINE_STEP_NS


def tag_prefix() -> str:
    return _tags.prefix()


def totag(msg) -> str:
    """The To tag sl gives its replies to ``msg``."""
    return _tags.tag(msg)


def is_sl_totag(tag: Optional[str]) -> bool:
    """True when ``tag`` is one sl of this server generated."""
    return _tags.is_ours(tag)


def _dset_contacts(msg) -> List[str]:
    """For a 3xx: the destination set as Contact lines (print_dset)."""
    out = []
    if msg.new_uri:
        out.append(f"Contact: <{msg.new_uri}>\r\n")
    for b in getattr(msg, "branches", None) or ():
        q = f";q={b.q}" if getattr(b, "q", None) else ""
        out.append(f"Contact: <{b.uri}>{q}\r\n")
    return out


def reply_headers(msg) -> List[str]:
    """The headers queued for replies to ``msg`` (``msg.reply_hdrs``)."""
    return list(getattr(msg, "reply_hdrs", None) or ())


def send_reply(msg, code: int, reason: Optional[str] = None,
               headers=()) -> int:
    """Send a stateless reply to request ``msg``; 1 sent, -1 error."""
    if not msg.is_request:
        log.LM_ERR("sl: cannot reply to a reply")
        return -1
    if msg.method_id == METHOD_ACK:
        # an ACK is never answered; OpenSIPS 3.x returns success
        log.LM_DBG("sl: an ACK gets no reply")
        return 1
    if not 100 <= code <= 699:
        log.LM_ERR(f"sl: bad reply code {code} (100..699)")
        return -1
    queued = getattr(msg, "reply_hdrs", None)
    hdrs = list(queued) if queued else []
    if 300 <= code < 400:
        hdrs.extend(_dset_contacts(msg))
    if isinstance(headers, (str, bytes)):
        headers = [headers]
    hdrs.extend(headers)
    tag = None
    if code > 100:
        to = msg.to
        if to is not None and not to.tag:
            tag = _tags.tag(msg)                # totag(), inline
    try:
        data = msg.build_reply(code, reason, tag, hdrs)
    except ValueError as e:
        log.LM_ERR(f"sl: cannot build the {code} reply: {e}")
        return -1
    if _deadline is not None:
        # before sending: another process may see the ACK before this one
        # gets past the send.  The shared deadline is pushed at most every
        # DEADLINE_STEP_NS per process (the window may close that much
        # early; each write moves a cache line between CPUs)
        now = _monotonic_ns()           # CLOCK_MONOTONIC, as shm.now_ns
        if now - _pushed[0] >= DEADLINE_STEP_NS:
            _pushed[0] = now
            _deadline.set(now + SL_RPL_WAIT_TIME * 1_000_000_000)
    if not forward.send_reply(msg, data):
        return -1
    if stats.enabled:
        st = stats.by_class[min(code // 100, 6) - 1]
        if st is not None:
            st.inc()
        if stats.sent_replies is not None:
            stats.sent_replies.inc()
    return 1


def reply_error(msg) -> int:
    """Answer with the error recorded on ``msg`` (opensipy.error)."""
    code, reason = error.err2reason_phrase(error.get_error(msg), "SL")
    rc = send_reply(msg, code, reason)
    if rc > 0:
        _stat_inc(stats.sent_err_replies)
    return rc


def filter_ack(msg) -> int:
    """Pre-script callback: 0 absorbs an ACK to an sl reply, 1 lets the
    request go on."""
    if msg.method_id != METHOD_ACK:
        return 1
    if _deadline is not None and _deadline.get() <= shm.now_ns():
        log.LM_DBG("sl: too late to be an ACK to a local reply")
        return 1
    try:
        to = msg.to
    except ValueError as e:
        log.LM_ERR(f"sl: cannot parse To of an ACK: {e}")
        return 1
    if to is None or not is_sl_totag(to.tag):
        return 1
    log.LM_DBG("sl: ACK to a local reply absorbed")
    _stat_inc(stats.received_ACKs)
    return 0
