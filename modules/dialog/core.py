"""The dialog module's logic: creation, the state machine driven by tm's
callbacks (replies to the initial INVITE) and by rr's (sequential
requests through ``loose_route()``), matching, ending (BYE, timeout, MI,
failed ping) and the requests the module sends itself within a dialog.

The module state other files reach: :data:`st` (table, APIs, settings,
statistics).  A message names its dialog with ``msg.dlg_key`` (and
``msg.dlg_dir``); ``msg.dlg_snap`` keeps the last record seen, so the
route of a BYE can still read ``$DLG_*`` of the dialog it ended.
"""
from __future__ import annotations

import time

from opensipy import log
from opensipy.core_cmds import check_self
from opensipy.parser import METHOD_ACK, METHOD_BYE, METHOD_INVITE
from opensipy.script.runtime import find_route
from opensipy.shm import ShmOutOfMemory

from . import callbacks as cb
from . import profiles as prof
from .table import (DLG_FLAG_BYEONTIMEOUT, DLG_FLAG_PING_CALLEE,
                    DLG_FLAG_PING_CALLER, DLG_FLAG_REINVITE_PING_CALLEE,
                    DLG_FLAG_REINVITE_PING_CALLER, DLG_STATE_CONFIRMED,
                    DLG_STATE_CONFIRMED_NA, DLG_STATE_DELETED,
                    DLG_STATE_EARLY, DLG_STATE_UNCONFIRMED, L_CONTACT,
                    L_CSEQ, L_ROUTES, L_SDP, L_SOCK, L_TAG, PING_FLAGS,
                    Dialog, dlg_key, parse_did)
from .table import parse_key as _parse_key

# the SDPs are kept only for re-INVITE pinging (it resends them)
SDP_FLAGS = DLG_FLAG_REINVITE_PING_CALLER | DLG_FLAG_REINVITE_PING_CALLEE

DOWN = cb.DLG_DIR_DOWNSTREAM
UP = cb.DLG_DIR_UPSTREAM

# dlg_match_mode (OpenSIPS's)
DID_ONLY, DID_FALLBACK, DID_NONE = 0, 1, 2

# db_mode (OpenSIPS's)
NO_DB, REALTIME, DELAYED, SHUTDOWN = 0, 1, 2, 3


class State:
    tbl = None
    tm = None
    rr = None
    db = None                  # .dbsync.DlgDb for db_mode > 0
    rr_param = "did"
    default_timeout = 43200
    delete_delay = 5
    match_mode = DID_ONLY
    db_mode = NO_DB
    options_ping_interval = 30
    reinvite_ping_interval = 300
    active = early = processed = expired = failed = None
    extra_hdrs = ""            # dlg_extra_hdrs: on every BYE we send


st = State()


def _inc(stat, n=1):
    if stat is not None:
        stat.update(n)


# ---------------------------------------------------------------- context

def current(msg):
    """The dialog of the message (a fresh record), or None."""
    key = getattr(msg, "dlg_key", None) if msg is not None else None
    if key is None:
        return None
    d = st.tbl.get(key)
    if d is None and msg is not None:
        return getattr(msg, "dlg_snap", None)
    return d


def _set_ctx(msg, d, direction=0):
    msg.dlg_key = d.key
    msg.dlg_dir = direction
    msg.dlg_snap = d


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _sock_str(si) -> str:
    return "" if si is None else f"{si.proto}:{si.host}:{si.port}"


def _rr_text(msg) -> str:
    try:
        return ",".join(f"<{r.uri}>" for r in msg.record_route)
    except Exception:            # noqa: BLE001 - ParseError
        return ""


def _contact(msg) -> str:
    try:
        cs = msg.contacts
    except Exception:            # noqa: BLE001 - ParseError
        return ""
    return cs[0].uri if cs else ""


# ---------------------------------------------------------------- create

def create(msg, mflags: int = 0) -> int:
    """create_dialog(): 1 made (or already there), -1 error."""
    if getattr(msg, "dlg_key", None) is not None:
        return 1
    if not msg.is_request or msg.method_id != METHOD_INVITE:
        log.LM_ERR("dialog: create_dialog() is for an initial INVITE")
        return -1
    to, fr = msg.to, msg.from_
    if to is None or fr is None or not msg.callid or msg.cseq is None:
        log.LM_ERR("dialog: the INVITE lacks From, To, Call-ID or CSeq")
        return -1
    if to.tag:
        log.LM_ERR("dialog: create_dialog() on a request with a To tag")
        return -1
    callid = msg.callid
    t = st.tbl
    spiral = _spiral_of(msg)
    if spiral is not None:
        # the INVITE came back through us: the same dialog, the same did
        _set_ctx(msg, spiral, DOWN)
        if st.rr is not None:
            st.rr.add_rr_param(msg, f";{st.rr_param}={spiral.did}")
        return 1
    d = Dialog(t.hash(callid), t.new_id(), callid)
    d.from_uri = fr.uri
    d.to_uri = to.uri
    d.ruri = msg.ruri
    d.caller = [fr.tag or "", _contact(msg), str(msg.cseq.num),
                _rr_text(msg), _sock_str(msg.rcv.socket if msg.rcv else None),
                msg.body.decode("utf-8", "replace")
                if msg.body and mflags & SDP_FLAGS else ""]
    d.lifetime = int(getattr(msg, "dlg_timeout", 0) or st.default_timeout)
    d.mflags = mflags
    try:
        with t.locked(d.h_entry):
            t.put(d, new=True)
    except ShmOutOfMemory:
        log.LM_ERR("dialog: out of shared memory for a new dialog")
        return -1
    _set_ctx(msg, d, DOWN)
    if st.rr is not None:
        st.rr.add_rr_param(msg, f";{st.rr_param}={d.did}")
    _arm(msg, "dlg_onreply", (cb_types_initial(), d.key))
    cb.run_global(cb.DLGCB_CREATED, d, msg)
    return 1


def _spiral_of(msg):
    """The unanswered dialog this INVITE already made on an earlier pass
    through the proxy (same Call-ID, From tag and CSeq), or None."""
    ftag = msg.from_.tag or ""
    cs = str(msg.cseq.num)
    for k in st.tbl.ids_of_callid(msg.callid):
        d = st.tbl.get(k)
        if d is not None and d.state <= DLG_STATE_EARLY and \
                d.caller[L_TAG] == ftag and d.caller[L_CSEQ] == cs:
            return d
    return None


def cb_types_initial():
    tm = st.tm
    return (tm.TMCB_RESPONSE_IN | tm.TMCB_RESPONSE_OUT
            | tm.TMCB_LOCAL_RESPONSE_OUT)


def _arm(msg, name, spec) -> None:
    """Arm tm callback ``name`` (types, param) on the request's
    transaction, now or when t_relay makes it (TMCB_REQUEST_IN)."""
    types, param = spec
    cell = st.tm.t_gett(msg)
    if cell is not None:
        st.tm.register_tmcb(cell, types, name, param)
    else:
        pend = msg.__dict__.setdefault("dlg_arm", [])
        pend.append((name, types, param))


def on_request_in(cell, typ, params) -> None:
    """TMCB_REQUEST_IN (global): arm what create_dialog()/the in-dialog
    path asked for before the transaction existed."""
    req = params.get("req")
    if req is None:
        return
    if "dlg_within" in req.__dict__:
        _within_tran(cell, req)
    pend = getattr(req, "dlg_arm", None)
    if not pend:
        return
    req.dlg_arm = []
    for name, types, param in pend:
        st.tm.register_tmcb(cell, types, name, param)


def post_script(msg) -> None:
    """After the request's script: a dialog made by create_dialog() whose
    request got no transaction (answered statelessly, dropped) can never
    see a reply: it is destroyed, as OpenSIPS does."""
    pend = getattr(msg, "dlg_arm", None)
    if not pend:
        return
    msg.dlg_arm = []
    for name, _types, param in pend:
        if name != "dlg_onreply":
            continue
        key = param[1] if isinstance(param, tuple) else param
        t = st.tbl
        with t.locked(parse_key(key)[0]):
            d = t.get(key)
            if d is None or d.state != DLG_STATE_UNCONFIRMED:
                continue
            d.state = DLG_STATE_DELETED
            d.end_reason = "No Transaction"
            t.remove(d)
        prof.unlink_all(d)
        cb.run(d, cb.DLGCB_DESTROY)


# ---------------------------------------------------------------- replies

def on_initial_reply(cell, typ, params) -> None:
    """tm callback on the initial INVITE's transaction."""
    key = params["param"]
    code = params["code"]
    tm = st.tm
    if typ == tm.TMCB_RESPONSE_IN:
        rpl = params.get("rpl")
        if rpl is None:
            return
        if code == 100:
            return
        to = rpl.to
        tag = to.tag if to is not None else None
        d = st.tbl.get(key)
        if d is not None and d.cbs:
            cb.run(d, cb.DLGCB_RESPONSE_FWDED, rpl, UP)
        if 100 < code < 200 and tag:
            _early(key, rpl, tag)
        elif 200 <= code < 300 and tag:
            _confirmed(key, rpl, tag)
    elif code >= 300:
        _failed(key, code)


def _callee_routes(rpl) -> str:
    """The route set toward the callee: the reply's Record-Route values
    above ours (added by the proxies after us), nearest first."""
    try:
        rrs = list(rpl.record_route)
    except Exception:            # noqa: BLE001
        return ""
    above = []
    for r in rrs:
        u = r.parsed_uri
        if u is not None and check_self(u.host, u.port or 5060) and \
                u.param("lr") is not None:
            break
        above.append(f"<{r.uri}>")
    else:
        return ""               # we are not in it: no route set of ours
    return ",".join(reversed(above))


def _leg_from_reply(d, rpl, tag):
    leg = d.callee_by_tag(tag)
    sock = _sock_str(rpl.rcv.socket if rpl.rcv else None)
    body = rpl.body.decode("utf-8", "replace") \
        if rpl.body and d.mflags & SDP_FLAGS else ""
    if leg is None:
        leg = [tag, _contact(rpl), "0", _callee_routes(rpl), sock, body]
        d.callees.append(leg)
    else:
        c = _contact(rpl)
        if c:
            leg[L_CONTACT] = c
        if body:
            leg[L_SDP] = body
    return leg


def _early(key, rpl, tag) -> None:
    t = st.tbl
    with t.locked(parse_key(key)[0]):
        d = t.get(key)
        if d is None or d.state > DLG_STATE_EARLY:
            return
        _leg_from_reply(d, rpl, tag)
        first = d.state == DLG_STATE_UNCONFIRMED
        if first:
            d.state = DLG_STATE_EARLY
            _inc(st.early)
        t.put(d)
    if first:
        cb.run(d, cb.DLGCB_EARLY, rpl, UP)


def _confirmed(key, rpl, tag) -> None:
    t = st.tbl
    with t.locked(parse_key(key)[0]):
        d = t.get(key)
        if d is None or d.state >= DLG_STATE_CONFIRMED_NA:
            return
        leg = _leg_from_reply(d, rpl, tag)
        d.callee_idx = d.callees.index(leg)
        if d.state == DLG_STATE_EARLY:
            _inc(st.early, -1)
        d.state = DLG_STATE_CONFIRMED_NA
        d.start_ts = int(time.time())
        d.timeout = d.start_ts + d.lifetime
        t.put(d)
        t.arm_timeout(d)
        if d.mflags & PING_FLAGS:
            t.pings.put(d.key, b"1")
        _inc(st.active)
        _inc(st.processed)
        _db_write(d)
    cb.run(d, cb.DLGCB_CONFIRMED, rpl, UP)
    if d.rt_on_answer:
        _run_route(d.rt_on_answer, d, rpl)


def _failed(key, code) -> None:
    t = st.tbl
    with t.locked(parse_key(key)[0]):
        d = t.get(key)
        if d is None or d.state >= DLG_STATE_CONFIRMED_NA:
            return
        if d.state == DLG_STATE_EARLY:
            _inc(st.early, -1)
        d.state = DLG_STATE_DELETED
        d.end_reason = f"Failed ({code})"
        t.remove(d)
        _inc(st.failed)
    prof.unlink_all(d)
    cb.run(d, cb.DLGCB_FAILED, None, UP)
    cb.run(d, cb.DLGCB_DESTROY)


def parse_key(key: bytes):
    return _parse_key(key.decode())


# ---------------------------------------------------------------- matching

def _tags(msg):
    f, t = msg.from_, msg.to
    return (f.tag if f is not None else None) or "", \
        (t.tag if t is not None else None) or ""


def direction_of(d: Dialog, ftag: str, ttag: str) -> int:
    """DOWN (from the caller), UP (from a callee) or 0 (no match)."""
    ct = d.caller[L_TAG]
    if ftag == ct:
        if not d.callees or not ttag or d.callee_by_tag(ttag) is not None:
            return DOWN
        return 0
    if ttag == ct and d.callee_by_tag(ftag) is not None:
        return UP
    return 0


def lookup(msg, did=None):
    """(dialog, direction) of a sequential request, or (None, 0)."""
    callid = msg.callid or ""
    ftag, ttag = _tags(msg)
    t = st.tbl
    if did is not None and st.match_mode != DID_NONE:
        p = parse_did(did)
        d = t.get(dlg_key(*p)) if p else None
        if d is not None and d.callid == callid:
            dr = direction_of(d, ftag, ttag)
            if dr:
                return d, dr
        if st.match_mode == DID_ONLY or p is not None:
            return None, 0
    elif st.match_mode == DID_ONLY:
        return None, 0
    for k in t.ids_of_callid(callid):
        d = t.get(k)
        if d is None:
            continue
        dr = direction_of(d, ftag, ttag)
        if dr:
            return d, dr
    return None, 0


def on_route(msg, route_params: str, param) -> None:
    """rr callback: loose_route() found a Route of ours."""
    if getattr(msg, "dlg_key", None) is not None:
        return
    did = None
    for p in route_params.split(";"):
        n, _, v = p.partition("=")
        if n.strip().lower() == st.rr_param.lower():
            did = v.strip()
    if did is None and st.match_mode == DID_ONLY:
        return
    d, dr = lookup(msg, did)
    if d is not None:
        within(msg, d, dr)


def match(msg) -> int:
    """match_dialog(): the sequential request's dialog by its did (our
    Route) or, as dlg_match_mode allows, Call-ID and tags."""
    if getattr(msg, "dlg_key", None) is not None:
        return 1 if st.tbl.get(msg.dlg_key) is not None else -1
    to = msg.to
    if not msg.is_request or to is None or not to.tag:
        return -1
    did = None
    try:
        for r in msg.route:
            u = r.parsed_uri
            if u is not None and check_self(u.host, u.port or 5060):
                did = u.param(st.rr_param)
                if did is not None:
                    break
    except Exception:            # noqa: BLE001
        pass
    rr = getattr(msg, "rr_state", None)
    if did is None and rr is not None and rr.routed_params:
        for p in rr.routed_params.split(";"):
            n, _, v = p.partition("=")
            if n.strip().lower() == st.rr_param.lower():
                did = v.strip()
    saved = st.match_mode
    if did is None and saved == DID_ONLY:
        st.match_mode = DID_FALLBACK      # match_dialog() may fall back
    try:
        d, dr = lookup(msg, did)
    finally:
        st.match_mode = saved
    if d is None:
        return -1
    within(msg, d, dr)
    return 1


# ---------------------------------------------------------------- within

def within(msg, d: Dialog, direction: int) -> None:
    """A sequential request of dialog ``d``: the state machine, and the
    CSeq of the request shifted by the offset of its direction (the
    requests the server sent that side itself, ``dlg_inc_cseq``)."""
    t = st.tbl
    m = msg.method_id
    cseq = msg.cseq.num if msg.cseq is not None else 0
    ended = False
    oi = 1 if direction == DOWN else 0
    with t.locked(d.h_entry):
        d = t.get(d.key)
        if d is None:
            return
        if d.state == DLG_STATE_DELETED:
            # ended a moment ago (delete_delay): known, nothing changes
            _set_ctx(msg, d, direction)
            return
        off = d.ping_cseq[oi]
        seen = cseq + off                # the CSeq the other side sees
        if m == METHOD_ACK:
            if d.state == DLG_STATE_CONFIRMED_NA and \
                    str(seen) == d.caller[L_CSEQ]:
                d.state = DLG_STATE_CONFIRMED
                t.put(d)
                _db_write(d)
        elif m == METHOD_BYE and d.state in (DLG_STATE_CONFIRMED_NA,
                                             DLG_STATE_CONFIRMED):
            _end_locked(d, "Upstream BYE" if direction == UP
                        else "Downstream BYE")
            ended = True
        else:
            leg = d.caller if direction == DOWN else (
                d.callee or d.callee_by_tag(_tags(msg)[0]))
            if leg is not None:
                if seen < int(leg[L_CSEQ] or 0):
                    msg.dlg_cseq_bad = True
                else:
                    leg[L_CSEQ] = str(seen)
            if m == METHOD_INVITE and leg is not None and msg.body and \
                    d.mflags & SDP_FLAGS:
                leg[L_SDP] = msg.body.decode("utf-8", "replace")
            t.put(d)
            _db_write(d)
    _set_ctx(msg, d, direction)
    if off:
        if m == METHOD_ACK:
            _set_cseq(msg, seen)
        else:
            msg.dlg_cseq_set = seen
    want = m != METHOD_ACK and any(ty & cb.DLGCB_RESPONSE_WITHIN
                                   for ty, _, _ in d.cbs)
    if m != METHOD_ACK:
        msg.dlg_within = (d.key, direction, want)
        cell = st.tm.t_gett(msg)
        if cell is not None:          # t_newtran ran before: now
            _within_tran(cell, msg)
    if m != METHOD_ACK and not ended:
        cb.run(d, cb.DLGCB_REQ_WITHIN, msg, direction)
    if ended:
        _after_end(d, msg, cb.DLGCB_TERMINATED)


def _set_cseq(msg, n: int) -> bool:
    """The request's (or reply's) CSeq header rewritten with number n."""
    for h in msg.headers:
        if h.name.lower() == "cseq":
            try:
                msg.replace(h.start, h.end - h.start,
                            f"{h.name}: {n} {msg.cseq.method}\r\n")
            except ValueError as e:
                log.LM_ERR(f"dialog: cannot change the CSeq: {e}")
                return False
            return True
    return False


def _within_tran(cell, msg) -> None:
    """The sequential request's transaction exists: its CSeq shifted
    (once), and a callback to shift the replies back and run
    DLGCB_RESPONSE_WITHIN."""
    info = msg.__dict__.pop("dlg_within", None)
    if info is None:
        return
    key, direction, want = info
    delta = 0
    target = msg.__dict__.pop("dlg_cseq_set", None)
    if target is not None and msg.cseq is not None:
        delta = target - msg.cseq.num
        if delta and not _set_cseq(msg, target):
            delta = 0
    if delta or want:
        st.tm.register_tmcb(cell, st.tm.TMCB_RESPONSE_IN, "dlg_within",
                            (key, direction, delta))


def on_within_reply(cell, typ, params) -> None:
    key, direction, delta = params["param"]
    rpl = params.get("rpl")
    if delta and rpl is not None and rpl.cseq is not None:
        _set_cseq(rpl, rpl.cseq.num - delta)     # as its sender wrote it
    d = st.tbl.get(key)
    if d is not None and d.cbs:
        cb.run(d, cb.DLGCB_RESPONSE_WITHIN, rpl,
               UP if direction == DOWN else DOWN)


def inc_cseq(msg, n: int) -> int:
    """dlg_inc_cseq(n): the current request's direction gets n more."""
    key = getattr(msg, "dlg_key", None)
    direction = getattr(msg, "dlg_dir", 0)
    if key is None or not direction or msg.cseq is None:
        return -1
    if "dlg_within" not in msg.__dict__ and \
            st.tm.t_gett(msg) is not None:
        log.LM_ERR("dlg_inc_cseq: the request was already given to tm")
        return -1
    oi = 1 if direction == DOWN else 0

    def fn(d):
        d.ping_cseq[oi] += n
        leg = d.caller if direction == DOWN else d.callee
        if leg is not None:
            leg[L_CSEQ] = str(int(leg[L_CSEQ] or 0) + n)
        return True
    if not update(key, fn):
        return -1
    cur = getattr(msg, "dlg_cseq_set", None) or msg.cseq.num
    msg.dlg_cseq_set = cur + n
    return 1


# ---------------------------------------------------------------- ending

def _end_locked(d: Dialog, reason: str) -> None:
    """Under the dialog's lock: out of the table, counters moved."""
    if d.state == DLG_STATE_EARLY:
        _inc(st.early, -1)
    if d.state in (DLG_STATE_CONFIRMED_NA, DLG_STATE_CONFIRMED):
        _inc(st.active, -1)
    d.state = DLG_STATE_DELETED
    d.end_reason = reason
    prof.unlink_all(d)
    _db_delete(d)
    t = st.tbl
    if st.delete_delay > 0:
        # kept (state 5, not listed) for the requests still on their way:
        # a BYE's retransmission, the second pass of a spiral
        t.pings.delete(d.key)
        d.timeout = int(time.time()) + st.delete_delay
        t.put(d)
        t.arm_timeout(d)
    else:
        t.remove(d)


def _after_end(d: Dialog, msg, typ) -> None:
    cb.run(d, typ, msg)
    if d.rt_on_hangup:
        _run_route(d.rt_on_hangup, d, msg)
    cb.run(d, cb.DLGCB_DESTROY)


def end_dialog(key: bytes, reason: str, send_bye: bool,
               typ=cb.DLGCB_TERMINATED, extra_hdrs: str = "") -> bool:
    """End a confirmed dialog from the server (MI, timeout, failed ping):
    BYEs to both sides when ``send_bye``.  False when it is gone."""
    t = st.tbl
    p = parse_key(key)
    if p is None:
        return False
    with t.locked(p[0]):
        d = t.get(key)
        if d is None or d.state not in (DLG_STATE_CONFIRMED_NA,
                                        DLG_STATE_CONFIRMED):
            return False
        if send_bye:
            extra_hdrs = extra_hdrs or st.extra_hdrs
            # the CSeqs the BYEs use are taken now, under the lock
            byes = [_request(d, True, "BYE", extra=extra_hdrs),
                    _request(d, False, "BYE", extra=extra_hdrs)]
        _end_locked(d, reason)
        if typ == cb.DLGCB_EXPIRED:
            _inc(st.expired)
    if send_bye:
        for r in byes:
            _send(*r)
    if typ == cb.DLGCB_EXPIRED:
        cb.run(d, cb.DLGCB_EXPIRED)
        if d.rt_on_timeout:
            _run_route(d.rt_on_timeout, d, None)
    _after_end(d, None, cb.DLGCB_TERMINATED)
    return True


def _run_route(name: str, d: Dialog, msg) -> None:
    route = find_route("route", name)
    if route is None:
        log.LM_ERR(f"dialog: route[{name}] is not defined")
        return
    from opensipy.receive import dummy_msg
    m = msg if msg is not None else dummy_msg()
    saved = getattr(m, "dlg_key", None)
    m.dlg_key = d.key
    m.dlg_snap = d
    try:
        route(m)
    except Exception as e:       # noqa: BLE001 - keep the dialog going
        log.LM_ERR(f"dialog: route[{name}] failed: {type(e).__name__}: "
                   f"{e}")
    finally:
        if saved is not None:
            m.dlg_key = saved


# ---------------------------------------------------------------- requests

def _request(d: Dialog, to_callee: bool, method: str, body: str = "",
             ctype: str = "", extra: str = ""):
    """(method, ruri, headers, body, next_hop, socket) of a request of
    ours to one side; takes the next CSeq of that direction (the caller
    holds the lock and stores ``d``)."""
    callee = d.callee
    if callee is None:
        raise ValueError("the dialog has no confirmed callee")
    if to_callee:
        leg, src = callee, d.caller
        frm = f"<{d.from_uri}>;tag={d.caller[L_TAG]}"
        to = f"<{d.to_uri}>;tag={callee[L_TAG]}"
    else:
        leg, src = d.caller, callee
        frm = f"<{d.to_uri}>;tag={callee[L_TAG]}"
        to = f"<{d.from_uri}>;tag={d.caller[L_TAG]}"
    n = int(src[L_CSEQ] or 0) + 1
    if method != "ACK":
        src[L_CSEQ] = str(n)
        # later requests of that side are shifted past ours
        d.ping_cseq[1 if to_callee else 0] += 1
        st.tbl.put(d)
    hdrs = [f"From: {frm}", f"To: {to}", f"Call-ID: {d.callid}",
            f"CSeq: {n} {method}"]
    routes = leg[L_ROUTES]
    next_hop = None
    if routes:
        hdrs.append(f"Route: {routes}")
        first = routes.split(",")[0].strip().strip("<>")
        next_hop = first
    if ctype:
        hdrs.append(f"Content-Type: {ctype}")
    if extra:
        hdrs.extend(x for x in extra.replace("\r\n", "\n").split("\n")
                    if x.strip())
    ruri = leg[L_CONTACT] or (d.ruri if to_callee else d.from_uri)
    return (method, ruri, "\r\n".join(hdrs), body, next_hop,
            leg[L_SOCK] or None, to_callee)


def _send(method, ruri, hdrs, body, next_hop, sock, to_callee, cb_name=None,
          param=None) -> bool:
    try:
        cell = st.tm.t_uac(method, ruri, hdrs, body or b"", next_hop, sock,
                           cb_name, param)
    except Exception as e:       # noqa: BLE001 - UacError, ShmOutOfMemory
        log.LM_ERR(f"dialog: cannot send {method} to {ruri}: {e}")
        return False
    st.tm.unref(cell)
    return True


def send_sequential(d_key: bytes, to_callee: bool, method: str,
                    body: str = "", ctype: str = "", extra: str = "",
                    cb_name=None, param=None) -> bool:
    t = st.tbl
    p = parse_key(d_key)
    with t.locked(p[0]):
        d = t.get(d_key)
        if d is None or d.callee is None:
            return False
        r = _request(d, to_callee, method, body, ctype, extra)
    return _send(*r, cb_name=cb_name, param=param)


# ---------------------------------------------------------------- pinging

_PING_END = (408, 481)


def on_ping_reply(cell, code, data, param) -> None:
    """t_uac callback of an OPTIONS / re-INVITE ping."""
    key, to_callee, reinvite, cseq = param
    key = bytes(key)
    if code in _PING_END or (reinvite and code >= 300 and code != 491):
        log.LM_INFO(f"dialog: {'re-INVITE' if reinvite else 'OPTIONS'} ping "
                    f"to the {'callee' if to_callee else 'caller'} of "
                    f"{key.decode()} failed ({code}): ending the call")
        end_dialog(key, "ReINVITE Ping Timeout" if reinvite
                   else "Ping Timeout", True)
    elif reinvite and 200 <= code < 300:
        _ack_reinvite(key, to_callee, cseq)


def _ack_reinvite(key, to_callee, cseq) -> None:
    """The ACK of our re-INVITE ping's 2xx: end to end (RFC 3261 §13.2.2.4),
    so sent here, statelessly, with the re-INVITE's CSeq number."""
    from opensipy import forward
    t = st.tbl
    with t.locked(parse_key(key)[0]):
        d = t.get(key)
        if d is None:
            return
        method, ruri, hdrs, _, next_hop, _, _ = _request(d, to_callee,
                                                         "ACK")
    lines = [ln for ln in hdrs.split("\r\n") if not ln.startswith("CSeq:")]
    lines.append(f"CSeq: {cseq} ACK")
    try:
        dest = forward.uri_dest(next_hop or ruri)
        target, si = forward.pick_target(forward.dest_targets(dest))
        via = forward.our_via(si, f"z9hG4bKdlg{cseq}x"
                                  f"{key.decode().replace('.', 'x')}")
        data = "\r\n".join([f"ACK {ruri} SIP/2.0", f"Via: {via}",
                             "Max-Forwards: 70", *lines,
                             "Content-Length: 0", "", ""])
        si.sock.sendto(_enc(data), target.addr)
    except Exception as e:       # noqa: BLE001
        log.LM_ERR(f"dialog: cannot ACK the re-INVITE ping of "
                   f"{key.decode()}: {type(e).__name__}: {e}")


def ping_all(reinvite: bool) -> int:
    """Send one round of pings (OPTIONS or re-INVITE) to the dialogs
    that asked for them; returns how many were sent."""
    n = 0
    t = st.tbl
    for key in t.pings.keys():
        d = t.get(key)
        if d is None or d.state not in (DLG_STATE_CONFIRMED_NA,
                                        DLG_STATE_CONFIRMED):
            t.pings.delete(key)
            continue
        sides = []
        if reinvite:
            if d.mflags & DLG_FLAG_REINVITE_PING_CALLER:
                sides.append(False)
            if d.mflags & DLG_FLAG_REINVITE_PING_CALLEE:
                sides.append(True)
        else:
            if d.mflags & DLG_FLAG_PING_CALLER:
                sides.append(False)
            if d.mflags & DLG_FLAG_PING_CALLEE:
                sides.append(True)
        for to_callee in sides:
            method = "INVITE" if reinvite else "OPTIONS"
            with t.locked(d.h_entry):
                cur = t.get(key)
                if cur is None:
                    break
                if reinvite:
                    # the SDP the pinged side last saw: the other side's
                    sdp = (cur.caller if to_callee else cur.callee)[L_SDP]
                    r = _request(cur, to_callee, method, sdp,
                                 "application/sdp" if sdp else "")
                else:
                    r = _request(cur, to_callee, method)
            n_cseq = int(r[2].split("CSeq: ")[1].split()[0])
            if _send(*r, cb_name="dlg_ping",
                     param=(key, to_callee, reinvite, n_cseq)):
                n += 1
    return n


# ---------------------------------------------------------------- timer

_last_ping = []


def expire_due(now: int) -> None:
    """End the dialogs whose timeout is due, drop the ended ones whose
    delete_delay is over."""
    t = st.tbl
    for key in t.due(now):
        d = t.get(key)
        if d is None or d.timeout > now:
            continue            # gone, or moved later: another slot has it
        if d.state == DLG_STATE_DELETED:
            with t.locked(d.h_entry):
                d = t.get(key)
                if d is not None and d.state == DLG_STATE_DELETED:
                    t.remove(d)
            continue
        if d.state not in (DLG_STATE_CONFIRMED_NA, DLG_STATE_CONFIRMED):
            continue
        try:
            end_dialog(key, "Lifetime Timeout",
                       bool(d.mflags & DLG_FLAG_BYEONTIMEOUT),
                       cb.DLGCB_EXPIRED)
        except Exception as e:   # noqa: BLE001 - keep the timer going
            log.LM_ERR(f"dialog: expiring {key.decode()} failed: {e}")


def timer(ticks=None, param=None) -> None:
    t = st.tbl
    expire_due(int(time.time()))
    mono = time.monotonic()
    if not _last_ping:
        _last_ping[:] = [mono, mono]     # the first round one interval on
    if len(t.pings):
        if mono - _last_ping[0] >= st.options_ping_interval:
            _last_ping[0] = mono
            ping_all(False)
        if mono - _last_ping[1] >= st.reinvite_ping_interval:
            _last_ping[1] = mono
            ping_all(True)
    if st.db is not None and st.db_mode == DELAYED:
        st.db.flush_due(mono)


# ---------------------------------------------------------------- changes

def update(key: bytes, fn) -> object:
    """Run ``fn(d)`` on the stored dialog under its lock and store it;
    returns fn's result (None when the dialog is gone)."""
    t = st.tbl
    p = parse_key(key)
    with t.locked(p[0]):
        d = t.get(key)
        if d is None:
            return None
        r = fn(d)
        t.put(d)
        _db_write(d)
    return r


def set_timeout(key: bytes, seconds: int) -> bool:
    def fn(d):
        d.lifetime = seconds
        if d.start_ts:
            d.timeout = int(time.time()) + seconds
            st.tbl.arm_timeout(d)
        return True
    return bool(update(key, fn))


# ---------------------------------------------------------------- DB hooks

def _db_write(d) -> None:
    if st.db is None:
        return
    if d.state < DLG_STATE_CONFIRMED_NA:
        return
    st.db.changed(d)


def _db_delete(d) -> None:
    if st.db is not None:
        st.db.deleted(d)


__all__ = ["st", "create", "match", "lookup", "within", "end_dialog",
           "send_sequential", "ping_all", "timer", "update", "set_timeout",
           "current", "DLG_STATE_DELETED"]
