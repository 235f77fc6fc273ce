"""tm: stateful transactions (OpenSIPS's tm module).

See README.md for the design; :mod:`.core` holds the logic, :mod:`.table`
the cells in shared memory (native/tm.c), :mod:`.fsm` the RFC 3261 §17
machines.

API for other modules (``opensipy.modloader.load_api("tm")``):
:class:`TmApi`.
"""
from __future__ import annotations

import time

from opensipy import forward, log, receive, timer
from opensipy.parser import METHOD_ACK, METHOD_CANCEL, METHOD_INVITE
from opensipy.script.runtime import route_exists
from opensipy.sr_module import (ALL_ROUTES, BRANCH_ROUTE, CMD_PARAM_INT,
                                CMD_PARAM_OPT, CMD_PARAM_REGEX, CMD_PARAM_STR,
                                FAILURE_ROUTE, INT_PARAM, ONREPLY_ROUTE,
                                REQUEST_ROUTE, STAT_IS_FUNC, STAT_NO_RESET,
                                STR_PARAM, CmdExport,
                                CmdParam, MIExport, MIRecipe, ModuleExports,
                                ParamExport, PVExport, StatExport)

from . import callbacks, core, table
from .callbacks import (TMCB_LOCAL_COMPLETED, TMCB_LOCAL_RESPONSE_OUT,  # noqa
                        TMCB_ON_FAILURE, TMCB_REQUEST_IN, TMCB_RESPONSE_IN,
                        TMCB_RESPONSE_FWDED, TMCB_RESPONSE_OUT,
                        TMCB_TRANS_DELETED)
from .core import cfg, cur, lib

# ---- parameters (OpenSIPS names; times as OpenSIPS: s, T1/T2 in ms) -------
fr_timeout = 30
fr_inv_timeout = 120
wt_timer = 5
T1_timer = 500
T2_timer = 4000
restart_fr_on_each_reply = 1
onreply_avp_mode = 0
auto_100trying = 1
pass_provisional_replies = 0
disable_6xx_block = 0
ruri_matching = 1
via1_matching = 1
minor_branch_flag = ""         # a branch flag name or number
tm_hash_size = 4096
timer_tick = 100               # ms between two runs of the timer lists

_INT_PARAMS = ("fr_timeout", "fr_inv_timeout", "wt_timer", "T1_timer",
               "T2_timer", "restart_fr_on_each_reply", "onreply_avp_mode",
               "auto_100trying", "pass_provisional_replies",
               "disable_6xx_block", "ruri_matching", "via1_matching",
               "tm_hash_size", "timer_tick")

# ---- statistics ----------------------------------------------------------
received_replies = relayed_replies = local_replies = None
UAS_transactions = UAC_transactions = None
tx_2xx = tx_3xx = tx_4xx = tx_5xx = tx_6xx = None


def _inuse():
    return table.inuse()


# ---- script functions ----------------------------------------------------

def w_t_relay(msg, flags=None, proxy=None):
    """t_relay([flags][, outbound_proxy]): the proxy ("[proto:]host[:port]")
    is the next hop unless $du is set."""
    if proxy is not None and not msg.dst_uri:
        try:
            proto, host, port, secure = forward.parse_dest(proxy)
        except (forward.ForwardError, ValueError) as e:
            log.LM_ERR(f"t_relay: bad outbound proxy {proxy!r}: {e}")
            return core.RELAY_BAD_DEST
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        # port and transport only when given: RFC 3263 picks the rest
        msg.dst_uri = f"{'sips' if secure else 'sip'}:{host}" + \
            (f":{port}" if port else "") + \
            (f";transport={proto}" if proto else "")
    return core.relay(msg, _flags(flags))


def _flags(flags):
    if not flags:
        return None
    return {f.strip().lower() for f in str(flags).split(",") if f.strip()}


def fixup_relay_flags(value):
    known = {"no-auto-477", "no-dns-failover", "pass-reason-hdr",
             "allow-no-cancel"}
    for f in _flags(value) or ():
        if f not in known:
            raise ValueError(f"unknown t_relay flag {f!r} (known: "
                             f"{', '.join(sorted(known))})")
    return value


def w_t_newtran(msg):
    return core.newtran(msg)


def w_t_reply(msg, code, reason):
    if not 100 <= code <= 699:
        log.LM_ERR(f"t_reply: bad code {code}")
        return -1
    return t_reply(msg, code, reason)


def t_reply(msg, code, reason=None, headers=(), body=b""):
    cell = getattr(msg, "tm_cell", None)
    if cell is None:
        if not msg.is_request:
            return -1
        r = core.newtran(msg)
        if r <= 0:
            return r
        cell = msg.tm_cell
    return core.reply_local(cell, msg, code, reason, headers, body)


def w_t_reply_with_body(msg, code, reason, body, ctype=None, extra=None):
    hdrs = []
    if ctype:
        hdrs.append(f"Content-Type: {ctype}")
    if extra:
        hdrs.append(extra.rstrip("\r\n"))
    return t_reply(msg, code, reason, hdrs, body)


def w_t_check_trans(msg):
    if getattr(msg, "tm_cell", None) is not None:
        return 1
    if not msg.is_request:
        return -1
    callid, cseq = core._ids(msg)
    key = core.req_key(msg)
    if msg.method_id == METHOD_CANCEL:
        c = table.lookup_req(callid, cseq, key, METHOD_CANCEL, 2)
        if c is None:
            return -1
        table.unref(c)
        return 1
    if msg.method_id == METHOD_ACK:
        if core.match_ack(msg):
            return 0
        c = table.lookup_req(callid, cseq, key, METHOD_INVITE, 1)
        if c is None:
            return -1
        table.unref(c)
        return 1
    c = table.lookup_req(callid, cseq, key, msg.method_id, 0)
    if c is None:
        return -1
    try:
        core.resend_last(c)
    finally:
        table.unref(c)
    return 0


def fixup_route(kind):
    def fix(name):
        if not route_exists(kind, name):
            raise ValueError(f"{kind}[{name}] is not defined in the script")
        return name
    return fix


def _set_route(msg, key, name):
    on = getattr(msg, "tm_on", None)
    if on is None:
        on = msg.tm_on = {}
    on[key] = name
    return 1


def w_t_on_failure(msg, name):
    return _set_route(msg, "fr", name)


def w_t_on_reply(msg, name):
    return _set_route(msg, "or", name)


def w_t_on_branch(msg, name):
    return _set_route(msg, "br", name)


def w_t_was_cancelled(msg):
    c = cur.cell if cur.cell is not None else getattr(msg, "tm_cell", None)
    if c is None:
        return -1
    return 1 if c.flags & lib.TM_F_CANCELED else -1


def w_t_check_status(msg, rx):
    code = _reply_code(msg)
    if code is None:
        return -1
    return 1 if rx.search(str(code)) else -1


def w_t_local_replied(msg, which="all"):
    """In failure_route: "all": every branch of the round ended with a
    local reply (a timeout), "branch"/"last": the chosen branch did."""
    c = cur.cell
    if c is None or cur.route != "failure":
        log.LM_ERR("t_local_replied: only in failure_route")
        return -1
    which = (which or "all").lower()
    if which == "all":
        local = all(not c.br[i].rpl_len
                    for i in range(c.first_branch, c.nbranches))
    elif which in ("branch", "last"):
        local = cur.branch >= 0 and not c.br[cur.branch].rpl_len
    else:
        log.LM_ERR(f"t_local_replied: unknown type {which!r}")
        return -1
    return 1 if local else -1


def w_t_cancel_branch(msg, which="this"):
    c = cur.cell
    if c is None or cur.route != "onreply":
        return -1
    if which in ("all", "others"):
        for i in range(c.nbranches):
            if which == "all" or i != cur.branch:
                core.send_cancel(c, i)
    else:
        core.send_cancel(c, cur.branch)
    return 1


def w_t_reply_by_callid(msg, code, reason, callid=None, cseq=None):
    """t_reply_by_callid(code, reason[, callid, cseq]): reply to the INVITE
    transaction of that Call-ID and CSeq number (by default the current
    request's: in a CANCEL's route, its INVITE)."""
    if not 100 <= code <= 699:
        log.LM_ERR(f"t_reply_by_callid: bad code {code}")
        return -1
    if (callid is None) != (cseq is None):
        log.LM_ERR("t_reply_by_callid: give both callid and cseq, or none")
        return -1
    if callid is None:
        callid = msg.callid
        cseq = msg.cseq.num if msg.cseq is not None else None
    try:
        cseq = int(cseq)
    except (TypeError, ValueError):
        log.LM_ERR(f"t_reply_by_callid: bad CSeq {cseq!r}")
        return -1
    cell = core.by_callid(callid or "", cseq)
    if cell is None:
        log.LM_DBG(f"t_reply_by_callid: no INVITE transaction {callid} "
                   f"{cseq}")
        return -1
    try:
        return core.reply_local(cell, None, code, reason)
    finally:
        table.unref(cell)


def w_t_flush_flags(msg):
    return core.flush_flags(msg)


def w_t_add_hdrs(msg, hdrs):
    """headers added to every branch t_relay sends after this (also the
    serial-forking rounds of failure_route)"""
    text = hdrs.replace("\\r\\n", "\r\n")
    if not text.endswith("\r\n"):
        text += "\r\n"
    for ln in text.split("\r\n")[:-1]:
        if ":" not in ln or not ln.split(":", 1)[0].strip():
            log.LM_ERR(f"t_add_hdrs: {ln!r} is not a header line")
            return -1
    msg.tm_add_hdrs = text
    return 1


def w_t_new_request(msg, method, ruri, from_, to, body=None, ctype=None):
    """t_new_request(method, RURI, from, to[, body[, content_type]]): a new
    request of the server's own, sent in a transaction (the reply is not
    waited for)."""
    hdrs = f"From: {_nameaddr(from_)}\r\nTo: {_nameaddr(to)}\r\n"
    if body and ctype:
        hdrs += f"Content-Type: {ctype}\r\n"
    try:
        cell = core.t_uac(method, ruri, hdrs, body or b"")
    except (core.UacError, core.ShmOutOfMemory) as e:
        log.LM_ERR(f"t_new_request: {e}")
        return -1
    table.unref(cell)
    return 1


def _nameaddr(v):
    v = v.strip()
    return v if "<" in v else f"<{v}>"


# ---- pseudo-variables -----------------------------------------------------

def _cell(msg):
    return cur.cell if cur.cell is not None else getattr(msg, "tm_cell", None)


def _reply_code(msg):
    if cur.code is not None:
        return cur.code
    if not msg.is_request:
        return msg.status
    c = _cell(msg)
    if c is None or not c.uas_status:
        return None
    return c.uas_status


def pv_reply_code(msg, param):
    return _reply_code(msg)


def pv_reply_reason(msg, param):
    if cur.reason is not None:
        return cur.reason
    if not msg.is_request:
        return msg.reason
    return None


def pv_branch_idx(msg, param):
    if cur.cell is None:
        return 0 if getattr(msg, "tm_cell", None) is not None else None
    return max(cur.branch, 0)


def pv_branch_last_reply_code(msg, param):
    c = _cell(msg)
    if c is None or cur.branch < 0:
        return None
    return c.br[cur.branch].status or None


def _timeout_pv(field, attr):
    def get(msg, param):
        c = _cell(msg)
        if c is not None and getattr(c, field):
            return getattr(c, field) // 1_000_000_000
        v = getattr(msg, attr, None)
        return v if v else getattr(cfg, field)

    def set_(msg, param, op, value):
        try:
            v = int(value)
        except (TypeError, ValueError):
            log.LM_ERR(f"${field}: {value!r} is not a number of seconds")
            return -1
        c = _cell(msg)
        if c is not None:
            setattr(c, field, v * 1_000_000_000)
        else:
            setattr(msg, attr, v)
        return 0
    return get, set_


pv_fr_get, pv_fr_set = _timeout_pv("fr_timeout", "tm_fr_timeout")
pv_fri_get, pv_fri_set = _timeout_pv("fr_inv_timeout", "tm_fr_inv_timeout")


def pv_t_ruri(msg, param):
    c = _cell(msg)
    if c is None:
        return None
    blob = core.load_blob(c)
    bru = blob.get("bru") or {}
    idx = cur.branch if cur.branch >= 0 else c.relayed_branch
    return bru.get(idx, blob.get("ru"))


def pv_t_id(msg, param):
    c = _cell(msg)
    return None if c is None else core.t_id(c)


# ---- MI --------------------------------------------------------------------

def mi_t_hash(params):
    out = []
    for i in range(table.lib.tm_size()):
        n = table.lib.tm_bucket_entries(i)
        if n:
            out.append({"index": i, "entries": n})
    return out


def mi_t_uac_dlg(params):
    """method, ruri, headers[, next_hop][, socket][, body]: send the request
    in a transaction of its own and answer with its final reply."""
    from opensipy.mi.dispatch import MIError
    try:
        cell = core.t_uac(params["method"], params["ruri"],
                          params.get("headers") or "",
                          params.get("body") or b"",
                          params.get("next_hop"), params.get("socket"))
    except core.UacError as e:
        raise MIError(400, str(e)) from None
    except core.ShmOutOfMemory:
        raise MIError(500, "No shared memory") from None
    try:
        deadline = time.monotonic() + (cfg.fr_inv_timeout
                                       if cell.flags & lib.TM_F_INVITE
                                       else cfg.fr_timeout) + 2
        while not cell.flags & lib.TM_F_FINAL_SENT:
            if time.monotonic() > deadline:
                raise MIError(500, "No final reply")
            time.sleep(0.005)
        with core.locked(cell):
            code = cell.uas_status
            data = table.buf(cell.rpl, cell.rpl_len)
    finally:
        table.unref(cell)
    if not data:
        reason = "Request Timeout" if code == 408 else ""
        return {"Status": f"{code} {reason}".strip()}
    first, _, rest = data.decode("utf-8", "replace").partition("\r\n")
    hdrs = rest.split("\r\n\r\n", 1)[0]
    return {"Status": first.partition(" ")[2], "Message": hdrs + "\r\n"}


def mi_t_uac_cancel(params):
    """callid, cseq: CANCEL a pending INVITE sent with t_uac_dlg."""
    from opensipy.mi.dispatch import MIError
    callid = str(params["callid"]).encode("utf-8", "surrogateescape")
    try:
        cseq = int(params["cseq"])
    except (TypeError, ValueError):
        raise MIError(400, "Bad CSeq") from None
    cell = table.lookup_req(callid, cseq, callid, METHOD_INVITE, 3)
    if cell is None:
        raise MIError(404, "Transaction not found")
    try:
        with core.locked(cell):
            if cell.flags & lib.TM_F_FINAL_SENT:
                raise MIError(481, "Transaction already completed")
            cell.flags |= lib.TM_F_CANCELED
            core.cancel_branches(cell)
    finally:
        table.unref(cell)
    return "OK"


def mi_t_reply(params):
    """code, reason, trans_id (hash:label), to_tag[, new_headers][, body]:
    a reply to a pending server transaction."""
    from opensipy.mi.dispatch import MIError
    try:
        code = int(params["code"])
        h, _, lab = str(params["trans_id"]).partition(":")
        cell = table.lookup_reply(int(h), int(lab))
    except (ValueError, TypeError):
        raise MIError(400, "Bad parameters") from None
    if cell is None or cell.flags & lib.TM_F_LOCAL_UAC:
        if cell is not None:
            table.unref(cell)
        raise MIError(404, "Transaction not found")
    try:
        hdrs = [x for x in (params.get("new_headers") or "").replace(
            "\r\n", "\n").split("\n") if x.strip()]
        rc = core.reply_local(cell, None, code, params["reason"], hdrs,
                              params.get("body") or b"",
                              str(params.get("to_tag") or "") or None)
    finally:
        table.unref(cell)
    if rc < 0:
        raise MIError(500, "Reply failed")
    return "OK"


# ---- API -------------------------------------------------------------------

class TmApi:
    """``load_api("tm")``: ``t_gett(msg)`` (the transaction or None),
    ``t_reply(msg, code, reason, headers=(), body=b"")``,
    ``t_gen_totag(msg)``, ``t_relay(msg)``, ``t_newtran(msg)``."""
    t_gett = staticmethod(lambda msg: getattr(msg, "tm_cell", None)
                          if cur.cell is None else cur.cell)
    t_reply = staticmethod(t_reply)
    t_relay = staticmethod(core.relay)
    t_newtran = staticmethod(core.newtran)
    # t_uac(method, ruri, headers, body=b"", next_hop=None,
    #       send_socket=None, cb=None, param=None) -> cell (unref it)
    t_uac = staticmethod(core.t_uac)
    t_request = staticmethod(core.t_uac)
    register_uac_callback = staticmethod(core.register_uac_callback)
    unref = staticmethod(table.unref)
    # transaction callbacks: register_tmcb_func(name, fn) in mod_init, then
    # register_tmcb(cell or None, TMCB_* types, name, param)
    register_tmcb_func = staticmethod(callbacks.register_tmcb_func)
    register_tmcb = staticmethod(callbacks.register_tmcb)
    tmcb_armed = staticmethod(callbacks.armed_by_name)
    TMCB_REQUEST_IN = callbacks.TMCB_REQUEST_IN
    TMCB_RESPONSE_IN = callbacks.TMCB_RESPONSE_IN
    TMCB_ON_FAILURE = callbacks.TMCB_ON_FAILURE
    TMCB_RESPONSE_OUT = callbacks.TMCB_RESPONSE_OUT
    TMCB_LOCAL_RESPONSE_OUT = callbacks.TMCB_LOCAL_RESPONSE_OUT
    TMCB_LOCAL_COMPLETED = callbacks.TMCB_LOCAL_COMPLETED
    TMCB_TRANS_DELETED = callbacks.TMCB_TRANS_DELETED
    TMCB_RESPONSE_FWDED = callbacks.TMCB_RESPONSE_FWDED

    @staticmethod
    def t_get_picked_branch():
        """In a failure_route: the branch whose reply was picked (-1
        elsewhere)."""
        return cur.branch if cur.route == "failure" else -1

    # (cell, idx) -> the final reply of that branch (SipMsg) or None
    t_get_branch_reply = staticmethod(core.branch_reply)
    # (cell, idx) -> the Request-URI that branch was sent to
    t_get_branch_uri = staticmethod(core.branch_uri)

    @staticmethod
    def t_gen_totag(msg):
        c = getattr(msg, "tm_cell", None)
        return None if c is None else core.totag(c)


def load_api():
    return TmApi()


# ---- init --------------------------------------------------------------------

def _bind_cfg():
    g = globals()
    for n in _INT_PARAMS:
        if hasattr(core.Cfg, n):
            setattr(cfg, n, int(g[n]))
    for n in ("fr_timeout", "fr_inv_timeout", "wt_timer", "T1_timer",
              "T2_timer", "tm_hash_size", "timer_tick"):
        if int(g[n]) <= 0:
            raise ValueError(f"tm: {n} must be positive")
    if T2_timer < T1_timer:
        raise ValueError("tm: T2_timer must not be smaller than T1_timer")
    st = core.stats
    st.received_replies = received_replies
    st.relayed_replies = relayed_replies
    st.local_replies = local_replies
    st.UAS_transactions = UAS_transactions
    st.UAC_transactions = UAC_transactions
    st.by_class = [None, tx_2xx, tx_3xx, tx_4xx, tx_5xx, tx_6xx]


def mod_init():
    _bind_cfg()
    cfg.minor_bit = -1
    if str(minor_branch_flag).strip():
        from opensipy.pvar import branch_flags
        cfg.minor_bit = branch_flags.bit(minor_branch_flag)
    core.init_ids()
    if not table.lib.tm_ready():
        table.init(int(tm_hash_size), cfg.T1_timer, cfg.T2_timer,
                   cfg.fr_timeout, cfg.fr_inv_timeout, cfg.wt_timer)
    timer.register_utimer("tm-timer", core.timer_tick, None,
                          int(timer_tick) * 1000)
    receive.register_post_script_cb(core.release)
    return 0


def reply_f(msg):
    return core.reply_in(msg)


_R = REQUEST_ROUTE
_RFB = REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE
_RF = REQUEST_ROUTE | FAILURE_ROUTE

exports = ModuleExports(
    name="tm",
    cmds=[
        CmdExport("t_relay", w_t_relay,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT,
                            fixup=fixup_relay_flags),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _RF),
        CmdExport("t_newtran", w_t_newtran, [], _R),
        CmdExport("t_reply", w_t_reply, [CmdParam(CMD_PARAM_INT),
                                         CmdParam(CMD_PARAM_STR)], _RF),
        CmdExport("t_reply_with_body", w_t_reply_with_body,
                  [CmdParam(CMD_PARAM_INT), CmdParam(CMD_PARAM_STR),
                   CmdParam(CMD_PARAM_STR),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _RF),
        CmdExport("t_check_trans", w_t_check_trans, [], _R | BRANCH_ROUTE),
        CmdExport("t_on_failure", w_t_on_failure,
                  [CmdParam(CMD_PARAM_STR,
                            fixup=fixup_route("failure_route"))],
                  _RFB),
        CmdExport("t_on_reply", w_t_on_reply,
                  [CmdParam(CMD_PARAM_STR,
                            fixup=fixup_route("onreply_route"))],
                  _RFB),
        CmdExport("t_on_branch", w_t_on_branch,
                  [CmdParam(CMD_PARAM_STR,
                            fixup=fixup_route("branch_route"))], _RF),
        CmdExport("t_was_cancelled", w_t_was_cancelled, [],
                  FAILURE_ROUTE | ONREPLY_ROUTE),
        CmdExport("t_check_status", w_t_check_status,
                  [CmdParam(CMD_PARAM_REGEX)],
                  _R | FAILURE_ROUTE | ONREPLY_ROUTE),
        CmdExport("t_local_replied", w_t_local_replied,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)],
                  FAILURE_ROUTE),
        CmdExport("t_flush_flags", w_t_flush_flags, [], _RFB),
        CmdExport("t_reply_by_callid", w_t_reply_by_callid,
                  [CmdParam(CMD_PARAM_INT), CmdParam(CMD_PARAM_STR),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _RF),
        CmdExport("t_add_hdrs", w_t_add_hdrs, [CmdParam(CMD_PARAM_STR)],
                  _RF),
        CmdExport("t_new_request", w_t_new_request,
                  [CmdParam(CMD_PARAM_STR), CmdParam(CMD_PARAM_STR),
                   CmdParam(CMD_PARAM_STR), CmdParam(CMD_PARAM_STR),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)],
                  ALL_ROUTES),
        CmdExport("t_cancel_branch", w_t_cancel_branch,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], ONREPLY_ROUTE),
    ],
    params=[ParamExport(n, INT_PARAM, n) for n in _INT_PARAMS]
    + [ParamExport("minor_branch_flag", STR_PARAM | INT_PARAM,
                   "minor_branch_flag")],
    stats=[
        StatExport("received_replies", 0, "received_replies"),
        StatExport("relayed_replies", 0, "relayed_replies"),
        StatExport("local_replies", 0, "local_replies"),
        StatExport("UAS_transactions", 0, "UAS_transactions"),
        StatExport("UAC_transactions", 0, "UAC_transactions"),
        StatExport("2xx_transactions", 0, "tx_2xx"),
        StatExport("3xx_transactions", 0, "tx_3xx"),
        StatExport("4xx_transactions", 0, "tx_4xx"),
        StatExport("5xx_transactions", 0, "tx_5xx"),
        StatExport("6xx_transactions", 0, "tx_6xx"),
        StatExport("inuse_transactions", STAT_IS_FUNC | STAT_NO_RESET,
                   _inuse),
    ],
    mi_cmds=[
        MIExport("t_hash", "the transaction table's used buckets",
                 recipes=[MIRecipe(mi_t_hash)]),
        MIExport("t_uac_dlg", "send a request and return its final reply",
                 recipes=[MIRecipe(mi_t_uac_dlg, p) for p in (
                     ("method", "ruri", "headers"),
                     ("method", "ruri", "headers", "next_hop"),
                     ("method", "ruri", "headers", "next_hop", "socket"),
                     ("method", "ruri", "headers", "next_hop", "socket",
                      "body"),
                     ("method", "ruri", "headers", "body"),
                     ("method", "ruri", "headers", "next_hop", "body"))]),
        MIExport("t_uac_cancel", "CANCEL an INVITE sent with t_uac_dlg",
                 recipes=[MIRecipe(mi_t_uac_cancel, ("callid", "cseq"))]),
        MIExport("t_reply", "reply to a pending transaction",
                 recipes=[MIRecipe(mi_t_reply, p) for p in (
                     ("code", "reason", "trans_id", "to_tag"),
                     ("code", "reason", "trans_id", "to_tag",
                      "new_headers"),
                     ("code", "reason", "trans_id", "to_tag", "new_headers",
                      "body"))]),
    ],
    items=[
        PVExport("T_reply_code", pv_reply_code),
        PVExport("T_reply_reason", pv_reply_reason),
        PVExport("T_branch_idx", pv_branch_idx),
        PVExport("T_branch_last_reply_code", pv_branch_last_reply_code),
        PVExport("T_fr_timeout", pv_fr_get, pv_fr_set),
        PVExport("T_fr_inv_timeout", pv_fri_get, pv_fri_set),
        PVExport("T_ruri", pv_t_ruri),
        PVExport("T_id", pv_t_id),
    ],
    init_f=mod_init,
    response_f=reply_f,
)
