"""tm's logic: server and client transactions over the cells of
:mod:`.table`, driven by the machines of :mod:`.fsm`, and the proxy core of
RFC 3261 §16 (forking, best final reply, CANCEL).

Every function that changes a cell holds the cell lock (:func:`locked`,
re-entrant within one process, so a failure_route run under the lock may
call t_relay/t_reply again).
"""
from __future__ import annotations

import marshal
import os
from contextlib import contextmanager

from opensipy import config, forward, log
from opensipy import totag as totag_mod
from opensipy.error import E_OUT_OF_MEM, E_SEND, E_UNSPEC, set_error
from opensipy.parser import (METHOD_ACK, METHOD_CANCEL, METHOD_INVITE,
                             METHOD_OTHER, ParseError, ReceiveInfo, SipMsg)
from opensipy.script.runtime import ACT_FL_DROP, find_route
from opensipy.shm import ShmOutOfMemory

from . import callbacks as cbs
from . import fsm
from . import table as tb
from .table import ffi, lib

MAGIC = "z9hG4bK"
S = fsm.STATES
SID = fsm.STATE_IDS
_TERMINATED = SID[fsm.TERMINATED]
F_ONREPLY = 1 << 16     # the blob names an onreply_route (Python-side flag)
B_MINOR = 1 << 8        # a minor branch (minor_branch_flag): not waited for


class Cfg:
    """The module parameters (copied from the package by mod_init)."""
    fr_timeout = 30            # s
    fr_inv_timeout = 120       # s
    wt_timer = 5               # s
    T1_timer = 500             # ms
    T2_timer = 4000            # ms
    restart_fr_on_each_reply = 1
    onreply_avp_mode = 0
    auto_100trying = 1
    pass_provisional_replies = 0
    disable_6xx_block = 0
    ruri_matching = 1
    via1_matching = 1
    minor_branch_flag = -1
    timer_tick = 100           # ms
    minor_bit = -1             # the branch flag bit of minor_branch_flag


cfg = Cfg()


class Stats:
    received_replies = relayed_replies = local_replies = None
    UAS_transactions = UAC_transactions = None
    by_class = [None] * 6      # 1xx (unused), 2xx_transactions .. 6xx

    def inc(self, st):
        if st is not None:
            st.inc()


stats = Stats()
_inst = "000000"      # per start: keeps branches of two runs apart
_tags = totag_mod.TagGen("opensipy-tm")    # the core's one generator


def init_ids():
    global _inst
    _inst = os.urandom(3).hex()
    _tags.prefix()


# ---------------------------------------------------------------- context

class Current:
    """What the running route works on (per process): the cell, the
    branch, the reply code/reason ($T_*)."""
    __slots__ = ("cell", "branch", "code", "reason", "route")

    def __init__(self):
        self.cell = None
        self.branch = -1
        self.code = None
        self.reason = None
        self.route = None


cur = Current()


@contextmanager
def current(cell, branch=-1, code=None, reason=None, route=None):
    saved = (cur.cell, cur.branch, cur.code, cur.reason, cur.route)
    cur.cell, cur.branch, cur.code, cur.reason, cur.route = \
        cell, branch, code, reason, route
    try:
        yield cur
    finally:
        cur.cell, cur.branch, cur.code, cur.reason, cur.route = saved


# ---------------------------------------------------------------- locking

_held = {}
_cast = ffi.cast


def _addr(cell) -> int:
    return int(_cast("uintptr_t", cell))


class locked:
    """``with locked(cell):`` the cell lock, re-entrant in this process
    (a class, not a generator: it is on every message's path)."""
    __slots__ = ("cell", "a", "n")

    def __init__(self, cell):
        self.cell = cell

    def __enter__(self):
        cell = self.cell
        a = self.a = int(_cast("uintptr_t", cell))
        n = self.n = _held.get(a, 0)
        if n == 0:
            tb.lock(cell)
        _held[a] = n + 1
        return cell

    def __exit__(self, *exc):
        n = self.n
        if n == 0:
            del _held[self.a]
            tb.unlock(self.cell)
        else:
            _held[self.a] = n
        return False


# ---------------------------------------------------------------- ids

def branch_id(cell, idx: int) -> str:
    return f"{MAGIC}{_inst}{cell.hash:x}.{cell.label:x}.{idx}"


def parse_branch(br):
    """(hash index, label, branch) of one of our branches, else None."""
    if not br or not br.startswith(MAGIC) or br[7:13] != _inst:
        return None
    parts = br[13:].split(".")
    if len(parts) != 3:
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16), int(parts[2])
    except ValueError:
        return None


def t_id(cell) -> str:
    return f"{cell.hash}:{cell.label}"


def totag(cell) -> str:
    """The To tag of the transaction's local replies: tm's prefix, then
    the cell's hash and label (unique while the cell lives, the same for
    every reply of the transaction)."""
    return _tags.tag_with(totag_mod.bytes_suffix(
        f"{cell.hash}.{cell.label}".encode()))


def _enc(s) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def req_key(msg) -> bytes:
    """The matching key of a request (RFC 3261 §17.2.3, RFC 2543 fallback
    without the To tag)."""
    v = msg.via1
    br = v.branch if v is not None else None
    if br and br.startswith(MAGIC) and len(br) > 7:
        k = f"{br}|{v.host}|{v.port}"
    else:
        f = msg.from_
        k = f"2543|{(f.tag or '') if f is not None else ''}"
        if cfg.via1_matching and v is not None:
            k += "|" + v.text
        if cfg.ruri_matching and msg.method_id not in (METHOD_ACK,
                                                        METHOD_CANCEL):
            k += "|" + msg.ruri
    if msg.method_id == METHOD_OTHER:
        k += "|" + msg.method
    return _enc(k)


def _ids(msg):
    cs = msg.cseq
    return _enc(msg.callid or ""), cs.num if cs is not None else 0


# ---------------------------------------------------------------- blob

def load_blob(cell) -> dict:
    if not cell.blob_len:
        return {}
    return marshal.loads(tb.buf(cell.blob, cell.blob_len))


def store_blob(cell, d: dict) -> None:
    tb.set_buf(cell, lib.TM_BUF_BLOB, -1, marshal.dumps(d))
    if d.get("or"):
        cell.flags |= F_ONREPLY
    else:
        cell.flags &= ~F_ONREPLY


def _avps_copy(avps):
    return {k: list(v) for k, v in (avps or {}).items()}


def _socket_index(si) -> int:
    try:
        return config.settings.sockets.index(si)
    except ValueError:
        return -1


def rebuild_request(cell, blob=None):
    """The request of a transaction, as the script left it at t_relay."""
    if blob is None:
        blob = load_blob(cell)
    msg = SipMsg(tb.buf(cell.req, cell.req_len))
    r = blob.get("rcv")
    if r:
        socks = config.settings.sockets
        si = socks[r[5]] if 0 <= r[5] < len(socks) else None
        msg.rcv = ReceiveInfo(r[0], r[1], r[2], r[3], r[4], si,
                              r[6] if len(r) > 6 else 0)
    msg.flags = blob.get("flags", 0)
    msg.avps = _avps_copy(blob.get("avps"))
    msg.new_uri = blob.get("ru")
    msg.dst_uri = blob.get("du")
    if blob.get("ah"):
        msg.tm_add_hdrs = blob["ah"]
    # the changes the script made before t_relay (Record-Route, replaced
    # headers, ...) and what modules keep with them: a failure_route works
    # on the request as it was relayed, as OpenSIPS's faked request
    for kind, off, removed, data in blob.get("lumps") or ():
        msg._lump(kind, off, removed, data)
    mp = blob.get("mp")
    if mp:
        msg.persist = dict(mp)
    msg.tm_cell = cell
    return msg


# ---------------------------------------------------------------- timers

def _fr(cell) -> float:
    return cell.fr_timeout / 1e6 if cell.fr_timeout else cfg.fr_timeout * 1e3


def _fr_inv(cell) -> float:
    return (cell.fr_inv_timeout / 1e6 if cell.fr_inv_timeout
            else cfg.fr_inv_timeout * 1e3)


def _lifetime(cell) -> float:
    """A bound on a cell's life while branches are pending (ms)."""
    return _fr(cell) + _fr_inv(cell) + 64 * cfg.T1_timer + \
        cfg.wt_timer * 1e3


def _wait(cell, ms=None):
    tb.timer_start(cell, lib.TM_TW_WAIT, -1,
                   cfg.wt_timer * 1e3 if ms is None else ms,
                   lib.TM_K_DELETE)


# ---------------------------------------------------------------- UAS side

def _uas_dst(cell, msg) -> None:
    host, port = forward.reply_dest(msg)
    _, addr = forward.resolve(host, port)
    si = msg.rcv.socket
    tb.set_dst(cell, -1, si, _socket_index(si), addr[0], addr[1],
               msg.rcv.conn_id)


def _init_uas(cell, msg) -> None:
    """A new server transaction: store the request, where replies go,
    the receive info; start its machine."""
    tb.set_buf(cell, lib.TM_BUF_REQ, -1, msg.raw)
    _uas_dst(cell, msg)
    r = msg.rcv
    blob = {"rcv": (r.src_ip, r.src_port, r.dst_ip, r.dst_port, r.proto,
                    _socket_index(r.socket), r.conn_id)}
    store_blob(cell, blob)
    msg.tm_blob = blob          # fork() uses it instead of reading it back
    inv = msg.method_id == METHOD_INVITE
    table = fsm.INVITE_SERVER if inv else fsm.NON_INVITE_SERVER
    st, _ = fsm.step(table, fsm.INIT, fsm.REQUEST)
    cell.uas_state = SID[st]
    ufr = getattr(msg, "tm_fr_timeout", None)
    if ufr:
        cell.fr_timeout = int(ufr * 1e9)
    ufr = getattr(msg, "tm_fr_inv_timeout", None)
    if ufr:
        cell.fr_inv_timeout = int(ufr * 1e9)
    _wait(cell, _lifetime(cell))


def _oom_500(msg, what) -> None:
    log.LM_ERR(f"tm: out of shared memory ({what}): answering 500")
    set_error(msg, E_OUT_OF_MEM)
    try:
        forward.send_reply(msg, msg.build_reply(500, "Server Internal Error"))
    except ValueError as e:
        log.LM_ERR(f"tm: cannot build the 500 reply: {e}")


def resend_last(cell) -> None:
    with locked(cell):
        if cell.rpl_len:
            tb.send(ffi.addressof(cell, "uas_dst"),
                    tb.buf(cell.rpl, cell.rpl_len))


def newtran(msg) -> int:
    """t_newtran: 1 a new transaction (msg.tm_cell set), 0 the request was
    a retransmission (the last reply sent again) or an absorbed ACK,
    -1 error."""
    if getattr(msg, "tm_cell", None) is not None:
        return 1
    if msg.method_id == METHOD_ACK:
        return 0 if match_ack(msg) else 1
    callid, cseq = _ids(msg)
    cell, created = tb.lookup_or_new(callid, cseq, req_key(msg),
                                     msg.method_id)
    if created < 0:
        _oom_500(msg, "new transaction")
        return 0
    if created == 0:
        try:
            resend_last(cell)
        finally:
            tb.unref(cell)
        return 0
    try:
        with locked(cell):
            _init_uas(cell, msg)
            msg.tm_cell = cell
            stats.inc(stats.UAS_transactions)
            if cbs._request_in:
                cbs.request_in(cell, msg)
                # callbacks may have stored more in the cell's blob
                msg.__dict__.pop("tm_blob", None)
            if msg.method_id == METHOD_INVITE and cfg.auto_100trying:
                reply_local(cell, msg, 100, "Trying")
    except ShmOutOfMemory:
        msg.tm_cell = None
        tb.delete(cell)
        tb.unref(cell)
        _oom_500(msg, "transaction buffers")
        return 0
    except (forward.ForwardError, ValueError, ParseError) as e:
        log.LM_ERR(f"tm: cannot create the transaction: {e}")
        msg.tm_cell = None
        tb.delete(cell)
        tb.unref(cell)
        set_error(msg, E_UNSPEC)
        return -1
    return 1


def flush_flags(msg) -> int:
    """t_flush_flags: the request's flags (changed after the transaction
    was made) into the transaction."""
    cell = getattr(msg, "tm_cell", None)
    if cell is None:
        return -1
    with locked(cell):
        blob = load_blob(cell)
        blob["flags"] = msg.flags
        store_blob(cell, blob)
        msg.__dict__.pop("tm_blob", None)
    return 1


def release(msg) -> None:
    """Drop the reference a request holds on its transaction (after the
    script)."""
    d = getattr(msg, "__dict__", None)
    cell = d.pop("tm_cell", None) if d else None
    if cell is not None:
        if getattr(msg, "tm_on", None):
            with locked(cell):
                _persist_routes(cell, msg)
        tb.unref(cell)


def _persist_routes(cell, msg, blob=None) -> None:
    on = getattr(msg, "tm_on", None)
    if not on:
        return
    if blob is None:
        blob = load_blob(cell)
    blob.update(on)
    store_blob(cell, blob)
    msg.tm_on = {}


def send_upstream(cell, code: int, data: bytes, local: bool) -> int:
    """A response (local or relayed) through the server machine."""
    if cell.flags & lib.TM_F_LOCAL_UAC:
        return _uac_reply(cell, code, data)
    inv = cell.flags & lib.TM_F_INVITE
    table = fsm.INVITE_SERVER if inv else fsm.NON_INVITE_SERVER
    state = S[cell.uas_state]
    new, actions = fsm.step(table, state, fsm.tu_event(code))
    if not actions:
        if inv and 200 <= code < 300 and not local:
            # another 2xx (forking) or a retransmitted one: end to end
            tb.send(ffi.addressof(cell, "uas_dst"), data)
            stats.inc(stats.relayed_replies)
            return 1
        log.LM_DBG(f"tm: {code} not sent upstream in state {state}")
        return -1
    cell.uas_state = SID[new]
    for a in actions:
        if a == "send":
            tb.set_buf(cell, lib.TM_BUF_RPL, -1, data)
            tb.send(ffi.addressof(cell, "uas_dst"), data)
        elif a == "start_G":
            if not _reliable(cell.uas_dst):
                tb.timer_start(cell, lib.TM_TW_UAS_RETR, -1, cfg.T1_timer,
                               lib.TM_K_RETR_RPL, 1)
        elif a == "start_H":
            _wait(cell, 64 * cfg.T1_timer)
        elif a == "start_J":
            _wait(cell)
    if new == fsm.TERMINATED:       # INVITE 2xx: linger for retransmissions
        _wait(cell)
    stats.inc(stats.local_replies if local else stats.relayed_replies)
    cell.uas_status = code
    if cell.flags & cbs.F_CBS:
        cbs.run(cell, cbs.TMCB_LOCAL_RESPONSE_OUT if local
                else cbs.TMCB_RESPONSE_OUT, code=code)
    if code >= 200:
        cell.flags |= lib.TM_F_FINAL_SENT | (lib.TM_F_LOCAL if local else 0)
        stats.inc(stats.by_class[min(code // 100, 6) - 1])
        if code >= 300 or not cell.flags & lib.TM_F_NOCANCEL:
            cancel_branches(cell)
    return 1


# ---------------------------------------------------------------- t_uac

_uac_callbacks = {}


def register_uac_callback(name: str, fn) -> None:
    """fn(cell, code, reply_bytes, param) runs, in whichever process gets
    it, when a request sent with t_uac(cb=name) has its final reply (a
    local 408 on timeout: reply_bytes empty).  Register in mod_init, so
    every process knows the name."""
    _uac_callbacks[name] = fn


def _uac_reply(cell, code, data) -> int:
    if cell.flags & lib.TM_F_FINAL_SENT:
        return 1
    if code < 200 and not data:
        return 1
    tb.set_buf(cell, lib.TM_BUF_RPL, -1, data)
    cell.uas_status = code
    if code < 200:
        if cfg.pass_provisional_replies:
            _uac_callback(cell, code, data)
        return 1
    cell.flags |= lib.TM_F_FINAL_SENT
    stats.inc(stats.by_class[min(code // 100, 6) - 1])
    cancel_branches(cell)
    _wait(cell)
    _uac_callback(cell, code, data)
    if cell.flags & cbs.F_CBS:
        cbs.run(cell, cbs.TMCB_LOCAL_COMPLETED, code=code)
    return 1


def _uac_callback(cell, code, data) -> None:
    blob = load_blob(cell)
    name = blob.get("uac_cb")
    fn = _uac_callbacks.get(name) if name else None
    if fn is not None:
        try:
            fn(cell, code, data, blob.get("uac_param"))
        except Exception as e:
            log.LM_ERR(f"tm: t_uac callback {name} failed: {e}")


class UacError(ValueError):
    pass


def _need_hdr(lines, name):
    n = name.lower()
    for ln in lines:
        if ln.split(":", 1)[0].strip().lower() == n:
            return ln
    return None


def t_uac(method: str, ruri: str, headers: str = "", body=b"",
          next_hop=None, send_socket=None, cb=None, param=None):
    """Send a request from this server in its own client transaction
    (t_request / MI t_uac_dlg).  ``headers`` must hold From and To;
    Call-ID, CSeq, Max-Forwards and a From tag are added when missing.
    Returns the cell with a reference for the caller (unref it)."""
    from opensipy.parser import METHODS
    method = method.strip().upper()
    if not method or not method.isalpha():
        raise UacError(f"bad method {method!r}")
    lines = [ln for ln in headers.replace("\r\n", "\n").split("\n")
             if ln.strip()]
    if _need_hdr(lines, "from") is None or _need_hdr(lines, "to") is None:
        raise UacError("the headers must hold From and To")
    callid = None
    cs = _need_hdr(lines, "call-id")
    if cs is not None:
        callid = cs.split(":", 1)[1].strip()
    else:
        callid = f"{os.urandom(8).hex()}@{_inst}"
        lines.append(f"Call-ID: {callid}")
    cseq = 1
    c = _need_hdr(lines, "cseq")
    if c is not None:
        try:
            cseq = int(c.split(":", 1)[1].split()[0])
        except (ValueError, IndexError):
            raise UacError(f"bad CSeq {c!r}") from None
    else:
        lines.append(f"CSeq: {cseq} {method}")
    if _need_hdr(lines, "max-forwards") is None:
        lines.append("Max-Forwards: 70")
    fl = _need_hdr(lines, "from")
    if ";tag=" not in fl.replace(" ", "").lower():
        lines[lines.index(fl)] = fl + f";tag={os.urandom(6).hex()}"
    lines = [ln for ln in lines
             if ln.split(":", 1)[0].strip().lower() != "content-length"]
    body = _enc(body) if isinstance(body, str) else (body or b"")
    try:
        dest = forward.uri_dest(next_hop or ruri)
        if dest[0] is not None and dest[0] not in forward.send_protos():
            raise UacError(f"transport {dest[0]} is not supported (no "
                           f"{dest[0]} socket)")
        target, si = forward.pick_target(forward.dest_targets(dest))
        addr = target.addr
        if send_socket:
            si = next((x for x in config.settings.sockets
                       if str(x) == send_socket or
                       f"{x.proto}:{x.host}:{x.port}" == send_socket), None)
            if si is None:
                raise UacError(f"{send_socket} is not one of our sockets")
    except forward.ForwardError as e:
        raise UacError(str(e)) from None
    mid = METHODS.get("METHOD_" + method, METHOD_OTHER)
    cell = tb.new_local(_enc(callid), cseq, mid)
    if cell is None:
        raise ShmOutOfMemory("tm: no shared memory for t_uac")
    try:
        with locked(cell):
            if mid == METHOD_INVITE:
                cell.flags |= lib.TM_F_INVITE
            data = _enc(f"{method} {ruri} SIP/2.0\r\n"
                        f"Via: {forward.our_via(si, branch_id(cell, 0))}\r\n"
                        + "".join(ln + "\r\n" for ln in lines)
                        + f"Content-Length: {len(body)}\r\n\r\n") + body
            data = _local_route(cell, data)
            store_blob(cell, {"uac_cb": cb, "uac_param": param,
                              "bru": {0: ruri}, "ru": ruri})
            tb.set_buf(cell, lib.TM_BUF_BR_REQ, 0, data)
            tb.set_dst(cell, 0, si, _socket_index(si), addr[0], addr[1])
            b = cell.br[0]
            b.flags = lib.TM_B_USED
            cell.nbranches = 1
            stats.inc(stats.UAC_transactions)
            _start_client(cell, 0)
            _wait(cell, _lifetime(cell))
            if not tb.send(ffi.addressof(b, "dst"), data):
                log.LM_ERR(f"tm: t_uac: sending to {addr[0]}:{addr[1]} "
                           f"failed")
    except BaseException:
        tb.delete(cell)
        tb.unref(cell)
        raise
    return cell


def _local_route(cell, data: bytes) -> bytes:
    """local_route runs over a request the server sends itself; it may
    change it (headers, body) or drop it (UacError)."""
    route = find_route("local_route", None)
    if route is None:
        return data
    try:
        msg = SipMsg(data)
    except ParseError as e:
        raise UacError(f"the request does not parse: {e}") from None
    with current(cell, 0, route="local"):
        flags = route(msg)
    if flags & ACT_FL_DROP:
        raise UacError("dropped by local_route")
    return msg.build()


def _reliable(dst) -> bool:
    """A stream destination (TCP: no datagram descriptor for C): timers
    A, E and G are not started (RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1)."""
    if dst.fd >= 0 or dst.si < 0:
        return False
    socks = config.settings.sockets
    return dst.si < len(socks) and socks[dst.si].proto == "tcp"


def _start_client(cell, idx) -> None:
    inv = cell.flags & lib.TM_F_INVITE
    b = cell.br[idx]
    table = fsm.INVITE_CLIENT if inv else fsm.NON_INVITE_CLIENT
    st, actions = fsm.step(table, fsm.INIT, fsm.SEND)
    b.state = SID[st]
    for a in actions:
        if a in ("start_A", "start_E"):
            if not _reliable(b.dst):
                tb.timer_start(cell, lib.TM_TW_BR_RETR, idx, cfg.T1_timer,
                               lib.TM_K_RETR_REQ, 0 if a == "start_A" else 1)
        elif a in ("start_B", "start_F"):
            tb.timer_start(cell, lib.TM_TW_BR_FR, idx, _fr(cell),
                           lib.TM_K_PY)


def reply_local(cell, msg, code: int, reason=None, headers=(),
                body=b"", to_tag=None) -> int:
    """t_reply: a local reply to the transaction's request."""
    if not 100 <= code <= 699:
        log.LM_ERR(f"tm: bad reply code {code}")
        return -1
    with locked(cell):
        if msg is None:
            msg = rebuild_request(cell)
        if msg.method_id == METHOD_ACK:
            return -1
        tag = None
        if code > 100:
            to = msg.to
            if to is not None and not to.tag:
                tag = to_tag or totag(cell)
        hdrs = list(getattr(msg, "reply_hdrs", None) or ())
        if isinstance(headers, (str, bytes)):
            headers = [headers]
        hdrs.extend(headers)
        try:
            data = msg.build_reply(code, reason, tag, hdrs, body)
        except ValueError as e:
            log.LM_ERR(f"tm: cannot build the {code} reply: {e}")
            return -1
        return send_upstream(cell, code, data, True)


def by_callid(callid: str, cseq: int, method: int = METHOD_INVITE):
    """The server transaction of a Call-ID and CSeq number (a reference
    for the caller), or None."""
    found = None
    for c in tb.lookup_cseq(_enc(callid), cseq, method):
        if found is None:
            try:
                if SipMsg(tb.buf(c.req, c.req_len)).callid == callid:
                    found = c
                    continue
            except ParseError:
                pass
        tb.unref(c)
    return found


def match_ack(msg) -> bool:
    """An ACK for the INVITE transaction of a non-2xx final: absorbed
    (True).  An ACK for a 2xx or for nothing: False (end to end)."""
    callid, cseq = _ids(msg)
    cell = tb.lookup_req(callid, cseq, req_key(msg), METHOD_INVITE, 1)
    if cell is None:
        return False
    try:
        with locked(cell):
            if cell.uas_status < 300:
                return False
            new, actions = fsm.step(fsm.INVITE_SERVER, S[cell.uas_state],
                                    fsm.ACK)
            cell.uas_state = SID[new]
            cell.flags |= lib.TM_F_ACKED
            if "stop_G" in actions:
                tb.timer_stop(cell, lib.TM_TW_UAS_RETR, -1)
            if "start_I" in actions:
                _wait(cell)
            return True
    finally:
        tb.unref(cell)


# ---------------------------------------------------------------- UAC side

def _hdr_lines(req, names):
    out = []
    for h in req.headers:
        if h.name.lower() in names:
            out.append(f"{h.name}: {h.body}\r\n")
    return out


def _local_request(req, method: str, to_body: str, extra=()) -> bytes:
    """ACK / CANCEL made from the request we sent on a branch (RFC 3261
    §17.1.1.3, §9.1): same R-URI, our Via, From, Call-ID, CSeq number,
    Route; To from the reply (ACK) or the request (CANCEL)."""
    lines = [f"{method} {req.ruri} SIP/2.0\r\n",
             f"Via: {req.via1.text}\r\n", "Max-Forwards: 70\r\n"]
    lines += _hdr_lines(req, ("from", "f", "call-id", "i"))
    lines.append(f"To: {to_body}\r\n")
    lines.append(f"CSeq: {req.cseq.num} {method}\r\n")
    lines += _hdr_lines(req, ("route",))
    lines += list(extra)
    lines.append("Content-Length: 0\r\n\r\n")
    return _enc("".join(lines))


def _branch_req(cell, idx):
    b = cell.br[idx]
    return SipMsg(tb.buf(b.req, b.req_len))


def send_ack(cell, idx, reply) -> None:
    try:
        req = _branch_req(cell, idx)
        data = _local_request(req, "ACK", reply.hdr("To"))
    except (ValueError, ParseError) as e:
        log.LM_ERR(f"tm: cannot build the ACK of branch {idx}: {e}")
        return
    tb.send(ffi.addressof(cell.br[idx], "dst"), data)


def send_cancel(cell, idx, reason=None) -> None:
    b = cell.br[idx]
    if b.flags & (lib.TM_B_CANCEL_SENT | lib.TM_B_FINAL) or \
            not b.flags & lib.TM_B_USED:
        return
    if not cell.flags & lib.TM_F_INVITE:
        return
    if not b.flags & lib.TM_B_PROVISIONAL:
        b.flags |= lib.TM_B_CANCEL_PENDING    # RFC 3261 §9.1
        return
    try:
        req = _branch_req(cell, idx)
        extra = [f"Reason: {reason}\r\n"] if reason else []
        data = _local_request(req, "CANCEL", req.hdr("To"), extra)
        tb.set_buf(cell, lib.TM_BUF_BR_CANCEL, idx, data)
    except (ValueError, ParseError, ShmOutOfMemory) as e:
        log.LM_ERR(f"tm: cannot build the CANCEL of branch {idx}: {e}")
        return
    b.flags = (b.flags | lib.TM_B_CANCEL_SENT) & ~lib.TM_B_CANCEL_PENDING
    tb.send(ffi.addressof(b, "dst"), data)
    if not _reliable(b.dst):
        tb.timer_start(cell, lib.TM_TW_BR_RETR, idx, cfg.T1_timer,
                       lib.TM_K_RETR_CANCEL, 1)


def cancel_branches(cell, reason=None) -> None:
    if not cell.flags & lib.TM_F_INVITE:
        return
    for i in range(cell.nbranches):
        send_cancel(cell, i, reason)


def _fork_targets(msg):
    first = (msg.new_uri or msg.ruri, msg.dst_uri or None,
             getattr(msg, "ruri_bflags", 0) or 0)
    out = [first]
    for b in getattr(msg, "branches", None) or ():
        out.append((b.uri, b.dst_uri, b.bflags or 0))
    return out


def relay(msg, flags=None) -> int:
    """t_relay(): 1 sent on at least one branch, 0 absorbed, -1 error."""
    if msg.method_id == METHOD_ACK:
        cell = getattr(msg, "tm_cell", None)
        if cell is None and match_ack(msg):
            return 0
        return forward.forward_request(msg)
    if msg.method_id == METHOD_CANCEL and getattr(msg, "tm_cell",
                                                  None) is None:
        return relay_cancel(msg, flags)
    created = False
    if getattr(msg, "tm_cell", None) is None:
        r = newtran(msg)
        if r <= 0:
            return r
        created = True
    cell = msg.tm_cell
    if flags and "allow-no-cancel" in flags and \
            "no-cancel" in (msg.hdr("Request-Disposition") or "").lower():
        # RFC 3841 §9.1: a 2xx does not cancel the other branches
        cell.flags |= lib.TM_F_NOCANCEL
    r = fork(cell, msg)
    # OpenSIPS answers a relay that failed at once itself, when t_relay
    # made the transaction (not after t_newtran) and no-auto-477 is unset
    if r < 0 and created and not (flags and "no-auto-477" in flags) and \
            not cell.flags & (lib.TM_F_FINAL_SENT | lib.TM_F_IN_FAILURE) \
            and not _pending(cell):
        from opensipy.error import err2reason_phrase, get_error
        code, reason = err2reason_phrase(get_error(msg), "TM")
        reply_local(cell, msg, code, reason)
    return r


# cell address -> the blob a fork() of this process is filling
forking = {}

# t_relay's failures, as OpenSIPS numbers them
RELAY_ERROR, RELAY_NO_DEST, RELAY_BAD_DEST, RELAY_SEND_FAILED = -1, -3, -4, -6


def fork(cell, msg) -> int:
    """Send one branch per target; 1, or RELAY_* when none went out."""
    with locked(cell):
        if cell.flags & lib.TM_F_FINAL_SENT and not \
                cell.flags & lib.TM_F_INVITE:
            log.LM_ERR("tm: the transaction was already answered")
            return RELAY_ERROR
        if cell.flags & lib.TM_F_CANCELED:
            log.LM_DBG("tm: no new branch for a cancelled transaction")
            return RELAY_NO_DEST
        d = msg.__dict__
        blob = d.pop("tm_blob", None)
        if blob is None:
            blob = load_blob(cell)
        on = d.get("tm_on")
        if on:
            blob.update(on)
            msg.tm_on = {}
        broute = blob.get("br")
        broute_f = find_route("branch_route", broute) if broute else None
        # (before the Via fix, which every fork makes again)
        if msg.n_lumps:
            blob["lumps"] = msg.lumps()
        mp = d.get("persist")
        if mp:
            blob["mp"] = mp
        forward._fix_sender_via(msg)
        targets = _fork_targets(msg)
        msg.branches = []
        first = cell.nbranches
        bru = blob.setdefault("bru", {})
        sent = 0
        bad_dest = send_failed = False
        # a branch_route arming callbacks writes into this blob (stored
        # below), not into the cell's copy this fork then overwrites
        forking[_addr(cell)] = blob
        try:
            for uri, du, bflags in targets:
                idx = cell.nbranches
                if idx >= tb.MAX_BRANCHES:
                    log.LM_ERR(f"tm: too many branches (at most "
                               f"{tb.MAX_BRANCHES})")
                    break
                data, si, addr, ruri = _build_branch(cell, msg, idx, uri, du,
                                                     bflags, broute_f)
                if data is None:
                    if si is not None:          # not dropped: it failed
                        bad_dest = True
                    continue
                try:
                    tb.set_buf(cell, lib.TM_BUF_BR_REQ, idx, data)
                    tb.set_dst(cell, idx, si, _socket_index(si), addr[0],
                               addr[1])
                except ShmOutOfMemory:
                    log.LM_ERR("tm: out of shared memory for a branch")
                    break
                b = cell.br[idx]
                b.flags = lib.TM_B_USED
                if cfg.minor_bit >= 0 and bflags & (1 << cfg.minor_bit):
                    b.flags |= B_MINOR
                b.status = 0
                cell.nbranches = idx + 1
                bru[idx] = ruri
                if not tb.send(ffi.addressof(b, "dst"), data):
                    log.LM_ERR(f"tm: sending branch {idx} to {addr[0]}:"
                               f"{addr[1]} failed")
                    send_failed = True
                    b.flags |= lib.TM_B_FINAL
                    b.status = 503
                    b.state = _TERMINATED
                    continue
                _start_client(cell, idx)
                sent += 1
        finally:
            forking.pop(_addr(cell), None)
        if cell.nbranches > first:
            cell.first_branch = first
        blob["ru"] = msg.new_uri
        blob["du"] = msg.dst_uri
        blob["ah"] = getattr(msg, "tm_add_hdrs", None)
        blob["flags"] = msg.flags
        blob["avps"] = _avps_copy(getattr(msg, "avps", None))
        store_blob(cell, blob)
        if not cell.flags & lib.TM_F_FINAL_SENT:
            _wait(cell, _lifetime(cell))
        if not sent:
            if send_failed:
                set_error(msg, E_SEND)
            if cell.nbranches > first and not cell.flags & \
                    lib.TM_F_IN_FAILURE:
                # every new branch failed at once: answer with the best
                maybe_complete(cell)
            return RELAY_SEND_FAILED if send_failed else \
                RELAY_BAD_DEST if bad_dest else RELAY_NO_DEST
        return 1


def _build_branch(cell, msg, idx, uri, du, bflags, broute_f):
    cp = msg.lump_checkpoint()
    saved = (msg.new_uri, msg.dst_uri, getattr(msg, "ruri_bflags", 0))
    msg.new_uri = uri
    msg.dst_uri = du
    msg.ruri_bflags = bflags
    try:
        if broute_f is not None:
            with current(cell, idx, route="branch"):
                if broute_f(msg) & ACT_FL_DROP:
                    log.LM_DBG(f"tm: branch {idx} dropped by branch_route")
                    return None, None, None, None
        extra = getattr(msg, "tm_add_hdrs", None)
        if extra:
            msg.append_hdr(extra)
        dest = _uri_dest(msg.dst_uri or msg.new_uri)
        if dest[0] is not None and dest[0] not in forward.send_protos():
            raise forward.ForwardError(f"transport {dest[0]} is not "
                                       f"supported (no {dest[0]} socket)")
        # RFC 3263: the first target we have a socket for
        target, si = forward.pick_target(forward.dest_targets(dest), msg)
        addr = target.addr
        msg.add_via(forward.our_via(si, branch_id(cell, idx)))
        ruri = msg.new_uri
        return msg.build(), si, addr, ruri
    except (forward.ForwardError, ValueError) as e:
        log.LM_ERR(f"tm: branch {idx} to {uri}: {e}")
        set_error(msg, getattr(e, "code", E_UNSPEC))
        return None, False, None, None     # False: failed, not dropped
    finally:
        msg.lump_rollback(cp)
        msg.new_uri, msg.dst_uri, msg.ruri_bflags = saved


_dests = {}


def _uri_dest(uri):
    """forward.uri_dest, remembered per URI text (a constant $du is the
    common case)."""
    if type(uri) is not str:
        return forward.uri_dest(uri)
    d = _dests.get(uri)
    if d is None:
        d = forward.uri_dest(uri)
        if len(_dests) < 1024:
            _dests[uri] = d
    return d


def relay_cancel(msg, flags=None) -> int:
    callid, cseq = _ids(msg)
    key = req_key(msg)
    inv = tb.lookup_req(callid, cseq, key, METHOD_CANCEL, 2)
    if inv is None:
        log.LM_DBG("tm: CANCEL without a transaction: relayed statelessly")
        return forward.forward_request(msg)
    try:
        r = newtran(msg)
        if r <= 0:
            return r
        reply_local(msg.tm_cell, msg, 200, "Canceling")
        with locked(inv):
            if inv.flags & lib.TM_F_FINAL_SENT:
                return 1
            inv.flags |= lib.TM_F_CANCELED
            reason = msg.hdr("Reason") if flags and \
                "pass-reason-hdr" in flags else None
            cancel_branches(inv, reason)
            if inv.nbranches == 0:
                reply_local(inv, None, 487, "Request Terminated")
        return 1
    finally:
        tb.unref(inv)


# ---------------------------------------------------------------- replies

def reply_in(msg) -> int:
    """response_f: 0 when tm took the reply, 1 to let the core relay it
    statelessly (no transaction)."""
    v = msg.via1
    p = parse_branch(v.branch if v is not None else None)
    if p is None:
        return 1
    stats.inc(stats.received_replies)
    cell = tb.lookup_reply(p[0], p[1])
    if cell is None:
        return 1
    try:
        idx = p[2]
        cs = msg.cseq
        with locked(cell):
            if not 0 <= idx < cell.nbranches:
                return 0
            if cs is not None and cs.method_id == METHOD_CANCEL:
                b = cell.br[idx]
                if b.flags & lib.TM_B_CANCEL_SENT and msg.status >= 200:
                    tb.timer_stop(cell, lib.TM_TW_BR_RETR, idx)
                return 0
            on_reply(cell, idx, msg)
    finally:
        tb.unref(cell)
    return 0


def on_reply(cell, idx, msg) -> None:
    code = msg.status
    if cell.flags & cbs.F_CBS:
        cbs.run(cell, cbs.TMCB_RESPONSE_IN, rpl=msg, code=code)
    b = cell.br[idx]
    inv = cell.flags & lib.TM_F_INVITE
    table = fsm.INVITE_CLIENT if inv else fsm.NON_INVITE_CLIENT
    old = S[b.state]
    new, actions = fsm.step(table, old, fsm.reply_event(code))
    if not actions:
        if inv and 200 <= code < 300:      # a retransmitted 2xx
            if not run_onreply(cell, idx, msg):
                _relay_reply(cell, msg, code, idx)
        return
    b.state = SID[new]
    for a in actions:
        if a in ("stop_A", "stop_E"):
            if not b.flags & lib.TM_B_CANCEL_SENT:
                tb.timer_stop(cell, lib.TM_TW_BR_RETR, idx)
        elif a in ("stop_B", "stop_F", "stop_C"):
            tb.timer_stop(cell, lib.TM_TW_BR_FR, idx)
        elif a == "start_C":
            tb.timer_start(cell, lib.TM_TW_BR_FR, idx, _fr_inv(cell),
                           lib.TM_K_PY)
        elif a == "send_ack":
            send_ack(cell, idx, msg)
        elif a == "pass_up":
            dropped = run_onreply(cell, idx, msg)
            if dropped and code < 200:
                continue
            proxy_reply(cell, idx, msg)
    if code < 200 and inv and "start_C" not in actions and \
            cfg.restart_fr_on_each_reply and new == fsm.PROCEEDING:
        tb.timer_start(cell, lib.TM_TW_BR_FR, idx, _fr_inv(cell),
                       lib.TM_K_PY)
    if code >= 200 and b.flags & lib.TM_B_CANCEL_SENT:
        tb.timer_stop(cell, lib.TM_TW_BR_RETR, idx)


def run_onreply(cell, idx, msg) -> bool:
    """The main onreply_route, then the transaction's; True when one
    dropped the reply."""
    main = find_route("onreply_route", None)
    if main is None and not cell.flags & F_ONREPLY:
        return False
    blob = None
    name = None
    if cell.blob_len:
        blob = load_blob(cell)
        name = blob.get("or")
    per = find_route("onreply_route", name) if name else None
    if main is None and per is None:
        return False
    if blob is not None:
        msg.flags = blob.get("flags", 0)
        if cfg.onreply_avp_mode:
            msg.avps = _avps_copy(blob.get("avps"))
    dropped = False
    with current(cell, idx, msg.status, msg.reason, "onreply"):
        if main is not None and main(msg) & ACT_FL_DROP:
            dropped = True
        if per is not None and not dropped and per(msg) & ACT_FL_DROP:
            dropped = True
    if blob is not None:
        blob["flags"] = msg.flags
        if cfg.onreply_avp_mode:
            blob["avps"] = _avps_copy(getattr(msg, "avps", None))
        store_blob(cell, blob)
    return dropped


def _response_fwded(cell, idx, msg, code) -> None:
    """TMCB_RESPONSE_FWDED: a relayed reply, our Via off, before it is
    built (callbacks change it with lumps)."""
    if cbs.armed(cell, cbs.TMCB_RESPONSE_FWDED):
        cbs.run(cell, cbs.TMCB_RESPONSE_FWDED, req=rebuild_request(cell),
                rpl=msg, code=code, branch=idx)


def _relay_reply(cell, msg, code, idx=-1) -> None:
    try:
        msg.remove_via()
        if cell.flags & cbs.F_CBS:
            _response_fwded(cell, idx, msg, code)
        data = msg.build()
    except ValueError as e:
        log.LM_ERR(f"tm: cannot relay the {code} reply: {e}")
        return
    send_upstream(cell, code, data, False)


def proxy_reply(cell, idx, msg) -> None:
    """RFC 3261 §16.7 for one response of branch idx."""
    code = msg.status
    b = cell.br[idx]
    if code < 200:
        b.flags |= lib.TM_B_PROVISIONAL
        if cell.flags & lib.TM_F_CANCELED or \
                b.flags & lib.TM_B_CANCEL_PENDING or \
                (cell.flags & lib.TM_F_FINAL_SENT and not (
                    cell.flags & lib.TM_F_NOCANCEL
                    and cell.uas_status < 300)):
            b.flags &= ~lib.TM_B_CANCEL_PENDING
            send_cancel(cell, idx)
        if code == 100 or cell.flags & lib.TM_F_FINAL_SENT:
            return
        _relay_reply(cell, msg, code, idx)
        return
    b.status = code
    b.flags |= lib.TM_B_FINAL
    if code < 300:
        cell.relayed_branch = idx
        _relay_reply(cell, msg, code, idx)
        return
    try:
        tb.set_buf(cell, lib.TM_BUF_BR_RPL, idx, msg.raw)
    except ShmOutOfMemory:
        log.LM_ERR("tm: out of shared memory for a reply")
    if code >= 600 and not cfg.disable_6xx_block:
        cancel_branches(cell)
    maybe_complete(cell)


def _rank(cell, i):
    b = cell.br[i]
    s = b.status
    local = 1 if not b.rpl_len else 0
    if s >= 600:
        return (0, local, s)
    cls = {3: 1, 4: 2, 5: 3}.get(s // 100, 4)
    auth = 0 if s in (401, 407) else 1
    return (cls, local, auth, s)


def best_branch(cell) -> int:
    cands = [i for i in range(cell.first_branch, cell.nbranches)
             if cell.br[i].flags & lib.TM_B_FINAL and cell.br[i].status
             >= 300]
    if not cands:
        cands = [i for i in range(cell.nbranches)
                 if cell.br[i].status >= 300]
    if not cands:
        return -1
    return min(cands, key=lambda i: _rank(cell, i))


def _pending(cell) -> bool:
    """Some branch of this round still waits for its final reply (minor
    branches do not count once every other one is final)."""
    major = pend_major = pend_minor = False
    for i in range(cell.first_branch, cell.nbranches):
        f = cell.br[i].flags
        if not f & B_MINOR:
            major = True
        if not f & lib.TM_B_FINAL:
            if f & B_MINOR:
                pend_minor = True
            else:
                pend_major = True
    return pend_major or (pend_minor and not major)


def _cancel_minor(cell) -> None:
    for i in range(cell.first_branch, cell.nbranches):
        b = cell.br[i]
        if b.flags & B_MINOR and not b.flags & lib.TM_B_FINAL:
            send_cancel(cell, i)


def maybe_complete(cell) -> None:
    """Every branch of this round is final: failure_route, then the best
    reply upstream (unless the route relayed again or replied)."""
    if cell.flags & lib.TM_F_FINAL_SENT or _pending(cell) or \
            cell.flags & lib.TM_F_IN_FAILURE:
        return
    _cancel_minor(cell)
    best = best_branch(cell)
    if cell.flags & cbs.F_CBS:
        cbs.run(cell, cbs.TMCB_ON_FAILURE, code=_code_reason(cell, best)[0])
    blob = load_blob(cell)
    fr = blob.get("fr")
    if fr:
        route = find_route("failure_route", fr)
        if route is not None:
            n = cell.nbranches
            run_failure(cell, best, route, blob)
            if cell.flags & lib.TM_F_FINAL_SENT:
                return
            if cell.nbranches > n and _pending(cell):
                return
    relay_best(cell, best)


def _code_reason(cell, best):
    if best < 0:
        return 500, "Server Internal Error"
    b = cell.br[best]
    if b.rpl_len:
        try:
            m = SipMsg(tb.buf(b.rpl, b.rpl_len))
            return m.status, m.reason
        except ParseError:
            pass
    if cell.flags & lib.TM_F_CANCELED:
        return 487, "Request Terminated"
    if b.status == 408:
        return 408, "Request Timeout"
    return b.status, None


def run_failure(cell, best, route, blob) -> None:
    blob["fr"] = None
    store_blob(cell, blob)
    req = rebuild_request(cell, blob)
    code, reason = _code_reason(cell, best)
    cell.flags |= lib.TM_F_IN_FAILURE
    try:
        with current(cell, best, code, reason, "failure"):
            route(req)
    finally:
        cell.flags &= ~lib.TM_F_IN_FAILURE
    blob = load_blob(cell)
    blob["flags"] = req.flags
    blob["avps"] = _avps_copy(getattr(req, "avps", None))
    on = getattr(req, "tm_on", None)
    if on:
        blob.update(on)
    store_blob(cell, blob)


def relay_best(cell, best) -> None:
    code, reason = _code_reason(cell, best)
    b = cell.br[best] if best >= 0 else None
    if b is not None and b.rpl_len:
        try:
            m = SipMsg(tb.buf(b.rpl, b.rpl_len))
            if code in (401, 407):
                _merge_challenges(cell, best, m)
            if code == 503:        # RFC 3261 §16.7 step 6
                m.replace(*_status_span(m), "500 Server Internal Error")
                code = 500
            m.remove_via()
            if cell.flags & cbs.F_CBS:
                _response_fwded(cell, best, m, code)
            send_upstream(cell, code, m.build(), False)
            return
        except (ParseError, ValueError) as e:
            log.LM_ERR(f"tm: cannot relay the stored reply: {e}")
    if cell.flags & lib.TM_F_LOCAL_UAC:
        _uac_reply(cell, code, b"")
        return
    reply_local(cell, None, code, reason)


def branch_reply(cell, idx):
    """The final reply branch ``idx`` received (a SipMsg), or None (none
    stored, or a local one such as a timeout)."""
    if not 0 <= idx < cell.nbranches:
        return None
    b = cell.br[idx]
    if not b.rpl_len:
        return None
    try:
        return SipMsg(tb.buf(b.rpl, b.rpl_len))
    except ParseError:
        return None


def branch_uri(cell, idx):
    """The Request-URI branch ``idx`` was sent to."""
    return load_blob(cell).get("bru", {}).get(idx)


def _status_span(m):
    first = m.raw.split(b"\r\n", 1)[0]
    return 8, len(first) - 8


def _merge_challenges(cell, best, m) -> None:
    extra = []
    for i in range(cell.first_branch, cell.nbranches):
        b = cell.br[i]
        if i == best or b.status not in (401, 407) or not b.rpl_len:
            continue
        try:
            o = SipMsg(tb.buf(b.rpl, b.rpl_len))
        except ParseError:
            continue
        for h in o.headers:
            if h.name.lower() in ("www-authenticate", "proxy-authenticate"):
                extra.append(f"{h.name}: {h.body}\r\n")
    if extra:
        m.append_hdr("".join(extra))


# ---------------------------------------------------------------- timers

_reap_every = 10
_ticks = 0


def timer_tick(ticks=None, param=None) -> None:
    """The utimer: C retransmits and deletes; the rest comes back here.
    Every tenth run, references held by processes that died are taken
    back from deleted cells (lib.tm_reap_dead)."""
    global _ticks
    _ticks += 1
    if _ticks % _reap_every == 0 and lib.tm_zombies() > 0:
        n = lib.tm_reap_dead()
        if n > 0:
            log.LM_WARN(f"tm: took back {n} transaction reference(s) held "
                        f"by processes that died")
    for cell, which, branch, gen in tb.tick():
        try:
            with locked(cell):
                if tb.timer_gen(cell, which, branch) != gen or \
                        cell.deleted:
                    continue
                if which == lib.TM_TW_BR_FR:
                    on_fr_timeout(cell, branch)
                elif which == lib.TM_TW_WAIT:
                    cbs.wait_over(cell)
        except Exception as e:   # keep the timer going
            log.LM_ERR(f"tm: timer event failed: {type(e).__name__}: {e}")
        finally:
            tb.unref(cell)


def on_fr_timeout(cell, idx) -> None:
    b = cell.br[idx]
    if b.flags & lib.TM_B_FINAL:
        return
    inv = cell.flags & lib.TM_F_INVITE
    state = S[b.state]
    if inv:
        table = fsm.INVITE_CLIENT
        ev = fsm.timer("B") if state == fsm.CALLING else fsm.timer("C")
    else:
        table = fsm.NON_INVITE_CLIENT
        ev = fsm.timer("F")
    new, actions = fsm.step(table, state, ev)
    b.state = SID[new]
    if "stop_A" in actions or "stop_E" in actions:
        tb.timer_stop(cell, lib.TM_TW_BR_RETR, idx)
    if "timeout" in actions:
        if inv and b.flags & lib.TM_B_PROVISIONAL:
            send_cancel(cell, idx)
        b.status = 487 if cell.flags & lib.TM_F_CANCELED else 408
        b.flags |= lib.TM_B_FINAL | lib.TM_B_TIMEOUT
        maybe_complete(cell)
