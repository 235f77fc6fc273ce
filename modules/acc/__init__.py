"""acc: transaction accounting to the log and to a database (OpenSIPS 3.x).

``do_accounting(type[, flags[, table]])`` only marks the transaction: the
record is written later, when the transaction completes, from tm's
callbacks (``TMCB_RESPONSE_OUT`` for a relayed final reply,
``TMCB_LOCAL_RESPONSE_OUT`` for one of ours, ``TMCB_ON_FAILURE`` for a
missed call).  A transaction's next event may be handled by any process,
so the accounting context (the flags, the table, the request's identity,
the ``$acc_extra``/``$acc_leg`` values) is kept in the transaction's cell
(tm's blob, key ``acc``), not in a Python object.

The context is first built on the message (``msg.acc_ctx``): a
``do_accounting()`` before ``t_relay()`` has no transaction yet, so the
callbacks are armed from tm's global ``TMCB_REQUEST_IN`` when the
transaction is created (as OpenSIPS keeps callbacks registered before
``t_newtran`` pending on the message); after that, every change
(``do_accounting`` again, ``drop_accounting``, ``$acc_extra``,
``acc_new_leg``) is written through to the cell.

CDRs (the ``cdr`` flag) ride on the dialog: ``do_accounting(..., "cdr")``
on an initial INVITE uses (or creates) its dialog, keeps a copy of the
context in a dialog value (``accX_cdr``, JSON) written through on every
change, arms ``DLGCB_CONFIRMED`` (the call starts: the 2xx's time and To
tag) and ``DLGCB_TERMINATED`` (BYE from either side, timeout, MI: one
record, ``ACC: call ended:`` / a row in the ``acc`` table with
``duration``, ``ms_duration``, ``setuptime``, ``created``).  The value is
stored with the dialog, so whichever process ends the call (a receiver,
the timer, the MI process) and a restart that reloads the dialog from the
database (``DLGCB_LOADED`` arms the callbacks again) still write the CDR.
"""
from __future__ import annotations

import datetime
import json
import time
from typing import Dict, List, Optional

from opensipy import db, log
from opensipy.modloader import load_api
from opensipy.parser import ParseError, SipMsg
from opensipy.parser.headers import REASONS
from opensipy.sr_module import (BRANCH_ROUTE, CMD_PARAM_OPT, CMD_PARAM_STATIC,
                                CMD_PARAM_STR, FAILURE_ROUTE, INT_PARAM,
                                LOCAL_ROUTE, REQUEST_ROUTE,
                                STR_PARAM, USE_FUNC_PARAM, CmdExport,
                                CmdParam, DepExport, ModuleDep,
                                ModuleExports, ParamExport, PVExport)

# ---- parameters -------------------------------------------------------------
early_media = 0
report_cancels = 0
detect_direction = 0
log_level = log.L_NOTICE
log_facility = "LOG_DAEMON"
db_url = ""
db_table_acc = "acc"
db_table_missed_calls = "missed_calls"
acc_method_column = "method"
acc_from_tag_column = "from_tag"
acc_to_tag_column = "to_tag"
acc_callid_column = "callid"
acc_sip_code_column = "sip_code"
acc_sip_reason_column = "sip_reason"
acc_time_column = "time"

# ---- accounting types and flags (bit layout as OpenSIPS's acc_logic.h:
# one group of flag bits per backend) -----------------------------------------
TYPES = {"log": 0, "db": 8}
DO_ACC = 1
DO_ACC_CDR = 2
DO_ACC_MISSED = 4
DO_ACC_FAILED = 8
FLAGS = {"cdr": DO_ACC_CDR, "missed": DO_ACC_MISSED, "failed": DO_ACC_FAILED}
ALL_FLAGS = DO_ACC | DO_ACC_CDR | DO_ACC_MISSED | DO_ACC_FAILED
UNSUPPORTED_TYPES = {"aaa": "no AAA (RADIUS/Diameter) client",
                     "evi": "no accounting events"}

# the log texts (acc.h)
ACC_REQUEST = "ACC: request accounted: "
ACC_MISSED = "ACC: call missed: "
ACC_ANSWERED = "ACC: transaction answered: "
ACC_ENDED = "ACC: call ended: "
# the dialog value holding a call's accounting context (OpenSIPS keeps
# its own in "accX_*" dialog values)
CDR_VAL = "accX_cdr"
# and what the 2xx brought (start time, To tag, code, reason): a value of
# its own, so the two writers (the script's process, the process that sees
# the 2xx) never read-modify-write the same value
CDR_START_VAL = "accX_start"

# extra_fields / leg_fields: backend -> [(tag, name)]
extra_defs: Dict[str, List[tuple]] = {}
leg_defs: Dict[str, List[tuple]] = {}
extra_tags: List[str] = []
leg_tags: List[str] = []

_tm = None
_rr = None
_facility = None
_dbf = None
_con = None
_dlg = None
_METHOD_INVITE = "INVITE"


# ---- module parameters with a parser ---------------------------------------

def _parse_fields(text: str, defs: Dict[str, List[tuple]], tags: List[str],
                  what: str) -> int:
    """``backend: tag->name; tag2`` (backend log or db); a definition
    without a backend applies to every backend; may be set many times."""
    text = text.strip()
    backends = list(TYPES)
    head, sep, rest = text.partition(":")
    if sep and "->" not in head and ";" not in head:
        b = head.strip().lower()
        if b in UNSUPPORTED_TYPES:
            raise ValueError(f"{what}: backend '{b}' is not supported "
                             f"({UNSUPPORTED_TYPES[b]})")
        if b not in TYPES:
            raise ValueError(f"{what}: unknown backend '{b}' (log, db)")
        backends, text = [b], rest
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        tag, arrow, name = part.partition("->")
        tag, name = tag.strip(), (name.strip() if arrow else tag.strip())
        if not tag or not name or not (tag.replace("_", "a").isalnum()
                                       and name.replace("_", "a").isalnum()):
            raise ValueError(f"{what}: bad definition {part!r} "
                             f"(tag -> name)")
        for b in backends:
            lst = defs.setdefault(b, [])
            if any(n == name for _, n in lst):
                raise ValueError(f"{what}: '{name}' defined twice for {b}")
            lst.append((tag, name))
        if tag not in tags:
            tags.append(tag)
    return 0


def set_extra_fields(value: str) -> int:
    return _parse_fields(value, extra_defs, extra_tags, "extra_fields")


def set_leg_fields(value: str) -> int:
    return _parse_fields(value, leg_defs, leg_tags, "leg_fields")


# ---- fixups -----------------------------------------------------------------

def _tokens(value: str) -> List[str]:
    return [t.strip().lower() for t in str(value).split("|") if t.strip()]


def fixup_type(value) -> int:
    mask = 0
    toks = _tokens(value)
    if not toks:
        raise ValueError("empty accounting type (log, db)")
    for t in toks:
        if t in UNSUPPORTED_TYPES:
            raise ValueError(f"accounting type '{t}' is not supported "
                             f"({UNSUPPORTED_TYPES[t]}); use log or db")
        if t not in TYPES:
            raise ValueError(f"invalid accounting backend '{t}' (log, db)")
        if t == "db" and not db_url:
            raise ValueError("db accounting needs modparam(\"acc\", "
                             "\"db_url\", ...)")
        mask |= 1 << TYPES[t]
    return mask


def fixup_flags(value) -> int:
    mask = 0
    for t in _tokens(value):
        if t not in FLAGS:
            raise ValueError(f"invalid accounting flag '{t}' "
                             f"(cdr, missed, failed)")
        if t == "cdr" and not _cdr_possible():
            raise ValueError("dialog module not loaded - cdrs cannot be "
                             "generated (see the acc README, \"CDRs\")")
        mask |= FLAGS[t]
    return mask


def _cdr_possible() -> bool:
    # CDRs are built on the dialog API (confirmed/terminated callbacks)
    from opensipy import modloader
    reg = modloader.registry
    return bool(reg and reg.get("dialog") is not None
                and hasattr(reg.get("dialog").pymod, "load_api"))


def _mask(types: int, flags: int) -> int:
    m = 0
    for shift in TYPES.values():
        if types & (1 << shift):
            m |= (DO_ACC | flags) << shift
    return m


def _on(mask: int, backend: str, flag: int) -> bool:
    return bool(mask & (flag << TYPES[backend]))


# ---- the accounting context -------------------------------------------------

def _cell(msg):
    return _tm.t_gett(msg) if _tm is not None else None


def _new_ctx() -> dict:
    return {"flags": 0, "table": "", "armed": 0,
            "extra": {}, "legs": [{}] if leg_tags else [], "req": None}


def _ctx(msg, create=False) -> Optional[dict]:
    """The message's context, or the one stored in its transaction."""
    d = msg.__dict__
    ctx = d.get("acc_ctx")
    if ctx is not None:
        return ctx
    cell = _cell(msg)
    if cell is not None:
        from opensipy_modules.tm import core
        with core.locked(cell):
            ctx = core.load_blob(cell).get("acc")
    if ctx is None and create:
        ctx = _new_ctx()
    if ctx is not None:
        d["acc_ctx"] = ctx
    return ctx


def _save(msg, ctx) -> None:
    """Write the context through to the transaction once armed."""
    msg.__dict__["acc_ctx"] = ctx
    if ctx.get("cdr"):
        _cdr_store(ctx)
    if not ctx.get("armed"):
        return
    cell = _cell(msg)
    if cell is None:
        return
    from opensipy_modules.tm import core
    with core.locked(cell):
        blob = core.load_blob(cell)
        blob["acc"] = ctx
        core.store_blob(cell, blob)
    msg.__dict__.pop("tm_blob", None)


def _req_info(msg) -> dict:
    f, t = msg.from_, msg.to
    upstream = 0
    if detect_direction and _rr is not None and t is not None and t.tag:
        upstream = int(_rr.is_direction(msg, "upstream") == 1)
    return {"method": msg.method or "",
            "from_tag": (f.tag if f is not None else "") or "",
            "to_tag": (t.tag if t is not None else "") or "",
            "callid": msg.callid or "",
            "upstream": upstream}


def _arm(cell, ctx) -> None:
    """Arm the callbacks on the transaction and store the context."""
    from opensipy_modules.tm import core
    with core.locked(cell):
        ctx["armed"] = 1
        blob = core.load_blob(cell)
        blob["acc"] = ctx
        core.store_blob(cell, blob)
        _tm.register_tmcb(cell, _tm.TMCB_RESPONSE_OUT
                          | _tm.TMCB_LOCAL_RESPONSE_OUT
                          | _tm.TMCB_ON_FAILURE, "acc", None)


def _on_request_in(cell, typ, params) -> None:
    """A new transaction: arm it when the request asked for accounting."""
    req = params.get("req")
    ctx = req.__dict__.get("acc_ctx") if req is not None else None
    if ctx and ctx["flags"] and not ctx.get("armed"):
        _arm(cell, ctx)


# ---- script functions -------------------------------------------------------

def w_do_accounting(msg, types, flags=None, table=None) -> int:
    """do_accounting(type[, flags[, table]])."""
    if msg.method == "CANCEL" and not report_cancels:
        log.LM_WARN("acc: do_accounting() called on CANCEL but "
                    "'report_cancels' modparam not set - no accounting "
                    "will be done for this transaction")
        return 1
    mask = _mask(types, flags or 0)
    ctx = _ctx(msg, create=True)
    if (flags or 0) & DO_ACC_CDR and not ctx.get("cdr"):
        if _cdr_start(msg, ctx) < 0:
            return -1
    if _on(mask, "db", DO_ACC):
        if table:
            ctx["table"] = str(table)
        elif not ctx["table"]:
            ctx["table"] = db_table_acc
    if ctx["req"] is None:
        try:
            ctx["req"] = _req_info(msg)
        except (ParseError, ValueError) as e:
            log.LM_ERR(f"acc: failed to preparse request: {e}")
            return -1
    first = not ctx["flags"]
    ctx["flags"] |= mask
    cell = _cell(msg)
    if first and cell is not None and not ctx.get("armed"):
        _arm(cell, ctx)
    _save(msg, ctx)
    return 1


def w_drop_accounting(msg, types=None, flags=None) -> int:
    """drop_accounting([type[, flags]])."""
    ctx = _ctx(msg)
    if ctx is None or not ctx["flags"]:
        log.LM_ERR("acc: do_accounting() not used! This function resets "
                   "flags in do_accounting()!")
        return -1
    t = types if types else sum(1 << s for s in TYPES.values())
    f = flags if flags else ALL_FLAGS
    drop = 0
    for shift in TYPES.values():
        if t & (1 << shift):
            drop |= f << shift
    ctx["flags"] &= ~drop
    _save(msg, ctx)
    return 1


def _comment(text: str):
    """"404 Not here" -> (404, "Not here"); no code -> (0, text)."""
    s = str(text)
    if len(s) >= 3 and s[:3].isdigit():
        code = int(s[:3])
        reason = s[3:].lstrip()
        return code, s[:3], reason or REASONS.get(code, "")
    return 0, "", s


def w_acc_log_request(msg, comment) -> int:
    """acc_log_request(comment)."""
    code, code_s, reason = _comment(comment)
    try:
        info = _req_info(msg)
    except (ParseError, ValueError) as e:
        log.LM_ERR(f"acc: failed to preparse request: {e}")
        return -1
    ctx = msg.__dict__.get("acc_ctx") or _ctx(msg) or _new_ctx()
    _log_record(ACC_REQUEST, info, info["to_tag"], code_s, reason, ctx)
    return 1


def w_acc_db_request(msg, comment, table) -> int:
    """acc_db_request(comment, table)."""
    if not db_url:
        log.LM_ERR("acc: db support not configured (db_url)")
        return -1
    code, code_s, reason = _comment(comment)
    try:
        info = _req_info(msg)
    except (ParseError, ValueError) as e:
        log.LM_ERR(f"acc: failed to preparse request: {e}")
        return -1
    ctx = msg.__dict__.get("acc_ctx") or _ctx(msg) or _new_ctx()
    return _db_record(str(table), info, info["to_tag"], code_s, reason, ctx)


def w_acc_new_leg(msg) -> int:
    """acc_new_leg(): a new leg, every value NULL."""
    if not leg_tags:
        log.LM_ERR("acc: acc_new_leg() needs leg_fields")
        return -1
    ctx = _ctx(msg, create=True)
    ctx["legs"].append({})
    _save(msg, ctx)
    return 1


# ---- pseudo-variables -------------------------------------------------------

def _parse_extra_name(name):
    if name is None or name.strip() not in extra_tags:
        raise ValueError(f"unknown extra tag {name!r} (extra_fields "
                         f"defines: {', '.join(extra_tags) or 'none'})")
    return name.strip()


def _parse_leg_name(name):
    if name is None or name.strip() not in leg_tags:
        raise ValueError(f"unknown leg tag {name!r} (leg_fields "
                         f"defines: {', '.join(leg_tags) or 'none'})")
    return name.strip()


def pv_get_acc_extra(msg, tag):
    ctx = _ctx(msg)
    return None if ctx is None else ctx["extra"].get(tag)


def pv_set_acc_extra(msg, tag, op, value):
    ctx = _ctx(msg, create=True)
    ctx["extra"][tag] = None if value is None else str(value)
    _save(msg, ctx)
    return 0


def _leg_of(ctx, param):
    tag, idx = (param.name, param.index) if hasattr(param, "index") \
        else (param, -1)
    legs = ctx["legs"] if ctx is not None else []
    if not legs:
        return tag, None
    if not isinstance(idx, int) or not -len(legs) <= idx < len(legs):
        return tag, None
    return tag, legs[idx]


def pv_get_acc_leg(msg, param):
    tag, leg = _leg_of(_ctx(msg), param)
    return None if leg is None else leg.get(tag)


def pv_set_acc_leg(msg, param, op, value):
    ctx = _ctx(msg, create=True)
    tag, leg = _leg_of(ctx, param)
    if leg is None:
        log.LM_ERR("acc: $acc_leg index out of range")
        return -1
    leg[tag] = None if value is None else str(value)
    _save(msg, ctx)
    return 0


def pv_get_acc_current_leg(msg, param):
    ctx = _ctx(msg)
    return max(len(ctx["legs"]) - 1, 0) if ctx is not None else 0


# ---- CDRs (on the dialog) ---------------------------------------------------

def _cdr_start(msg, ctx) -> int:
    """The ``cdr`` flag on a request: the initial INVITE's dialog (made
    here when the script did not call create_dialog(), as OpenSIPS's
    create_acc_dlg does) carries the context from now on."""
    to = msg.to
    if msg.method != _METHOD_INVITE or (to is not None and to.tag):
        # OpenSIPS builds CDRs from the initial INVITE only
        log.LM_WARN("acc: the cdr flag only applies to an initial INVITE")
        return 1
    dlg = _dlg.get_dlg(msg)
    if dlg is None:
        if _dlg.create_dialog(msg, "") < 0 or _dlg.get_dlg(msg) is None:
            log.LM_ERR("acc: error creating new dialog")
            return -1
        dlg = _dlg.get_dlg(msg)
    if _dlg.register_dlgcb(dlg, _dlg.DLGCB_CONFIRMED
                           | _dlg.DLGCB_TERMINATED, "acc_cdr") < 0:
        log.LM_ERR("acc: cannot register the dialog callbacks")
        return -1
    ctx["cdr"] = {"key": dlg.key.decode("ascii"), "created": time.time()}
    return 1


def _cdr_key(ctx):
    return ctx["cdr"]["key"].encode("ascii")


def _cdr_store(ctx) -> None:
    """Write the context through to the dialog value."""
    dlg = _dlg.get_dlg_by_key(_cdr_key(ctx)) if _dlg is not None else None
    if dlg is None:
        return
    keep = {k: ctx[k] for k in ("flags", "table", "extra", "legs", "req",
                                "cdr")}
    _dlg.store_dlg_value(dlg, CDR_VAL, json.dumps(keep))


def _dlgcb(dlg, typ, params) -> None:
    raw = dlg.vals.get(CDR_VAL)
    if not raw:
        return
    if typ & _dlg.DLGCB_CONFIRMED:
        rpl = params.get("msg")
        c = {"start": time.time()}
        if rpl is not None:
            c["to_tag"] = (rpl.to.tag if rpl.to is not None else "") or ""
            c["code"] = str(rpl.status)
            c["reason"] = rpl.reason or ""
        _dlg.store_dlg_value(dlg, CDR_START_VAL, json.dumps(c))
    elif typ & _dlg.DLGCB_TERMINATED:
        started = dlg.vals.get(CDR_START_VAL)
        if started:             # never answered: no CDR
            ctx = json.loads(raw)
            ctx["cdr"].update(json.loads(started))
            _cdr_write(ctx, time.time())


def _cdr_times(c, end):
    start, created = c["start"], c.get("created") or c["start"]
    ms = max(int(round((end - start) * 1000)), 0)
    return {"created": int(created), "call_start_time": int(start),
            "duration": ms // 1000, "ms_duration": ms,
            "setuptime": max(int(start) - int(created), 0)}


def _cdr_write(ctx, end) -> None:
    """The call ended: one CDR per backend with the cdr flag."""
    c = ctx["cdr"]
    tm = _cdr_times(c, end)
    info = ctx["req"]
    code_s = c.get("code") or "200"
    reason = c.get("reason") or REASONS.get(int(code_s), "")
    to_tag = c.get("to_tag") or info["to_tag"]
    if _on(ctx["flags"], "log", DO_ACC_CDR):
        _log_record(ACC_ENDED, info, to_tag, code_s, reason, ctx, cdr=tm)
    if _on(ctx["flags"], "db", DO_ACC_CDR):
        _db_record(ctx["table"] or db_table_acc, info, to_tag, code_s,
                   reason, ctx, cdr=tm)


def _on_loaded(dlg, typ, params) -> None:
    """A dialog loaded from the database: its CDR callbacks again."""
    if dlg.vals.get(CDR_VAL):
        _dlg.register_dlgcb(dlg, _dlg.DLGCB_CONFIRMED
                            | _dlg.DLGCB_TERMINATED, "acc_cdr")


# ---- writing the records ----------------------------------------------------

def _emit(text: str) -> None:
    """One accounting line at log_level, to log_facility when on syslog
    (OpenSIPS's LM_GEN2)."""
    st = log.state
    if log_level > st.level:
        return
    if st.syslog and st._syslog_mod is not None:
        st._syslog_mod.syslog(_facility | log._SYSLOG_PRIO.get(log_level, 5),
                              text)
        if not st.stderr:
            return
    saved = st.syslog
    st.syslog = False
    try:
        log.emit(log_level, text)
    finally:
        st.syslog = saved


def _core(info, to_tag, code_s, reason):
    ftag, ttag = info["from_tag"], to_tag
    if info.get("upstream"):
        ftag, ttag = ttag, ftag
    return [("method", info["method"]), ("from_tag", ftag),
            ("to_tag", ttag or ""), ("call_id", info["callid"]),
            ("code", code_s), ("reason", reason)]


def _log_record(text, info, to_tag, code_s, reason, ctx, cdr=None) -> None:
    if cdr is None:
        parts = [f"{text}timestamp={int(time.time())}"]
    else:
        # OpenSIPS's CDR line: the times first, then the core fields
        parts = [f"{text}created={cdr['created']}",
                 f"call_start_time={cdr['call_start_time']}",
                 f"duration={cdr['duration']}",
                 f"ms_duration={cdr['ms_duration']}",
                 f"setuptime={cdr['setuptime']}"]
    for k, v in _core(info, to_tag, code_s, reason):
        parts.append(f"{k}={v}")
    for tag, name in extra_defs.get("log", ()):
        v = ctx["extra"].get(tag)
        parts.append(f"{name}={'' if v is None else v}")
    for leg in ctx.get("legs") or ():
        for tag, name in leg_defs.get("log", ()):
            v = leg.get(tag)
            parts.append(f"{name}={'' if v is None else v}")
    _emit(";".join(parts) + "\n")


def _db_con():
    global _con
    if _con is None:
        _con = _dbf.init(db_url)
    return _con


def _db_record(table, info, to_tag, code_s, reason, ctx, cdr=None) -> int:
    core_vals = [v for _, v in _core(info, to_tag, code_s, reason)]
    cols = [acc_method_column, acc_from_tag_column, acc_to_tag_column,
            acc_callid_column, acc_sip_code_column, acc_sip_reason_column,
            acc_time_column]
    if cdr is None:
        vals = core_vals + [datetime.datetime.now().replace(microsecond=0)]
    else:
        # a CDR: time is the call's start, plus OpenSIPS's four columns
        vals = core_vals + [datetime.datetime.fromtimestamp(
            cdr["call_start_time"])]
        cols += ["duration", "ms_duration", "setuptime", "created"]
        vals += [cdr["duration"], cdr["ms_duration"], cdr["setuptime"],
                 datetime.datetime.fromtimestamp(cdr["created"])]
    for tag, name in extra_defs.get("db", ()):
        cols.append(name)
        vals.append(ctx["extra"].get(tag))
    legs = [leg for leg in (ctx.get("legs") or ())] \
        if leg_defs.get("db") else [None]
    try:
        con = _db_con()
        con.use_table(table)
        for leg in legs:
            c, v = list(cols), list(vals)
            if leg is not None:
                for tag, name in leg_defs["db"]:
                    c.append(name)
                    v.append(leg.get(tag))
            con.insert(c, v)
    except db.DBError as e:
        log.LM_ERR(f"acc: failed to insert into database table "
                   f"'{table}': {e}")
        return -1
    return 1


def _account(text_log, table, info, to_tag, code_s, reason, ctx, flag):
    """Write to every backend that has ``flag`` on."""
    done = 0
    if _on(ctx["flags"], "log", flag):
        _log_record(text_log, info, to_tag, code_s, reason, ctx)
        done |= flag << TYPES["log"]
    if _on(ctx["flags"], "db", flag):
        _db_record(table, info, to_tag, code_s, reason, ctx)
        done |= flag << TYPES["db"]
    return done


def _reply_of(cell, buf_ptr, buf_len):
    from opensipy_modules.tm import table as tb
    if not buf_len:
        return None
    try:
        return SipMsg(tb.buf(buf_ptr, buf_len))
    except (ParseError, ValueError):
        return None


def _code_parts(code, rpl):
    if rpl is not None and rpl.status == code:
        return str(code), rpl.reason or "", (rpl.to.tag if rpl.to else "")
    return str(code), REASONS.get(code, ""), None


def _on_missed(cell, ctx, code, rpl) -> None:
    code_s, reason, to_tag = _code_parts(code, rpl)
    info = ctx["req"]
    done = _account(ACC_MISSED, db_table_missed_calls, info,
                    to_tag if to_tag is not None else info["to_tag"],
                    code_s, reason, ctx, DO_ACC_MISSED)
    # reported once: failure_route calls do_accounting() again to report
    # the next destination too
    ctx["flags"] &= ~done


def _tmcb(cell, typ, params) -> None:
    from opensipy_modules.tm import core
    with core.locked(cell):
        blob = core.load_blob(cell)
        ctx = blob.get("acc")
        if not ctx or not ctx.get("req"):
            return
        code = params.get("code") or 0
        invite = ctx["req"]["method"] == _METHOD_INVITE
        before = ctx["flags"]
        if typ & _tm.TMCB_ON_FAILURE:
            if invite and (before & (DO_ACC_MISSED << TYPES["log"]
                                     | DO_ACC_MISSED << TYPES["db"])):
                best = core.best_branch(cell)
                rpl = None
                if best >= 0:
                    b = cell.br[best]
                    rpl = _reply_of(cell, b.rpl, b.rpl_len)
                _on_missed(cell, ctx, code, rpl)
        else:
            _on_reply(cell, ctx, code, invite)
        if ctx["flags"] != before:
            blob = core.load_blob(cell)
            blob["acc"] = ctx
            core.store_blob(cell, blob)


def _on_reply(cell, ctx, code, invite) -> None:
    rpl = _reply_of(cell, cell.rpl, cell.rpl_len)
    if invite and code >= 300 and (
            ctx["flags"] & (DO_ACC_MISSED << TYPES["log"]
                            | DO_ACC_MISSED << TYPES["db"])):
        _on_missed(cell, ctx, code, rpl)
    if code < 200:
        if not early_media or rpl is None or not rpl.body:
            return
    failed = code >= 300
    info = ctx["req"]
    code_s, reason, to_tag = _code_parts(code, rpl)
    to_tag = to_tag if to_tag is not None else info["to_tag"]
    for backend in TYPES:
        if not _on(ctx["flags"], backend, DO_ACC):
            continue
        if failed and not _on(ctx["flags"], backend, DO_ACC_FAILED):
            continue
        if (invite and 200 <= code < 300 and ctx.get("cdr")
                and _on(ctx["flags"], backend, DO_ACC_CDR)):
            continue            # the call is reported once, when it ends
        if backend == "log":
            _log_record(ACC_ANSWERED, info, to_tag, code_s, reason, ctx)
        else:
            _db_record(ctx["table"] or db_table_acc, info, to_tag, code_s,
                       reason, ctx)


# ---- init -------------------------------------------------------------------

def mod_init() -> int:
    global _tm, _rr, _facility, _dbf
    _facility = log.syslog_facility(log_facility)
    if log_level not in log.LEVEL_NAMES:
        raise ValueError(f"acc: log_level {log_level} is not a log level "
                         f"(-3 .. 4)")
    _tm = load_api("tm", needed_by="acc")
    if detect_direction:
        _rr = load_api("rr", needed_by="acc")
        if not _rr.append_fromtag:
            raise ValueError("acc: 'append_fromtag' RR param is not "
                             "enabled! - required by 'detect_direction'")
    _tm.register_tmcb_func("acc", _tmcb)
    _tm.register_tmcb(None, _tm.TMCB_REQUEST_IN, _on_request_in)
    if _cdr_possible():
        global _dlg
        _dlg = load_api("dialog", needed_by="acc")
        _dlg.register_dlgcb_func("acc_cdr", _dlgcb)
        _dlg.register_dlgcb(None, _dlg.DLGCB_LOADED, _on_loaded)
    if db_url:
        _dbf = db.db_bind_mod(db_url, needed_by="acc")
        if not db.db_capability(_dbf, db.DB_CAP_INSERT):
            raise ValueError("acc: the database module does not implement "
                             "insert")
        try:
            con = _dbf.init(db_url)
            try:
                db.db_check_table_version(_dbf, con, db_table_acc, 7)
                db.db_check_table_version(_dbf, con, db_table_missed_calls,
                                          5)
            finally:
                con.close()
        except db.DBError as e:
            log.LM_ERR(f"acc: {e}")
            return -1
    elif extra_defs.get("db") or leg_defs.get("db"):
        log.LM_WARN("acc: db extra/leg fields defined but no db_url")
    return 0


def child_init(rank: int) -> int:
    global _con
    _con = None                 # opened on first use, in this process
    return 0


def mod_destroy() -> None:
    global _con
    if _con is not None:
        try:
            _con.close()
        except db.DBError:
            pass
        _con = None


_ROUTES = REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE | LOCAL_ROUTE

exports = ModuleExports(
    name="acc",
    deps=DepExport(md=[ModuleDep("tm")]),
    cmds=[
        CmdExport("do_accounting", w_do_accounting, [
            CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC, fixup=fixup_type),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC | CMD_PARAM_OPT,
                     fixup=fixup_flags),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
        ], _ROUTES),
        CmdExport("drop_accounting", w_drop_accounting, [
            CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC | CMD_PARAM_OPT,
                     fixup=fixup_type),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC | CMD_PARAM_OPT,
                     fixup=fixup_flags),
        ], _ROUTES),
        CmdExport("acc_log_request", w_acc_log_request,
                  [CmdParam(CMD_PARAM_STR)], _ROUTES),
        CmdExport("acc_db_request", w_acc_db_request,
                  [CmdParam(CMD_PARAM_STR), CmdParam(CMD_PARAM_STR)],
                  _ROUTES),
        CmdExport("acc_new_leg", w_acc_new_leg, [], _ROUTES),
    ],
    params=[
        ParamExport("early_media", INT_PARAM, "early_media"),
        ParamExport("report_cancels", INT_PARAM, "report_cancels"),
        ParamExport("detect_direction", INT_PARAM, "detect_direction"),
        ParamExport("extra_fields", STR_PARAM | USE_FUNC_PARAM,
                    set_extra_fields),
        ParamExport("leg_fields", STR_PARAM | USE_FUNC_PARAM,
                    set_leg_fields),
        ParamExport("log_level", INT_PARAM, "log_level"),
        ParamExport("log_facility", STR_PARAM, "log_facility"),
        ParamExport("db_url", STR_PARAM, "db_url"),
        ParamExport("db_table_acc", STR_PARAM, "db_table_acc"),
        ParamExport("db_table_missed_calls", STR_PARAM,
                    "db_table_missed_calls"),
        ParamExport("acc_method_column", STR_PARAM, "acc_method_column"),
        ParamExport("acc_from_tag_column", STR_PARAM, "acc_from_tag_column"),
        ParamExport("acc_to_tag_column", STR_PARAM, "acc_to_tag_column"),
        ParamExport("acc_callid_column", STR_PARAM, "acc_callid_column"),
        ParamExport("acc_sip_code_column", STR_PARAM, "acc_sip_code_column"),
        ParamExport("acc_sip_reason_column", STR_PARAM,
                    "acc_sip_reason_column"),
        ParamExport("acc_time_column", STR_PARAM, "acc_time_column"),
    ],
    items=[
        PVExport("acc_extra", pv_get_acc_extra, pv_set_acc_extra,
                 parse_name=_parse_extra_name),
        PVExport("acc_leg", pv_get_acc_leg, pv_set_acc_leg,
                 parse_name=_parse_leg_name, parse_index=int),
        PVExport("acc_current_leg", pv_get_acc_current_leg),
    ],
    init_f=mod_init,
    init_child_f=child_init,
    destroy_f=mod_destroy,
)
