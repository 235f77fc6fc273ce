"""dialog: call tracking in shared memory (OpenSIPS's dialog module).

See README.md.  :mod:`.table` keeps the dialogs in shm, :mod:`.core` the
state machine (tm and rr callbacks), matching, ending and the requests we
send within a dialog, :mod:`.profiles` the profiles, :mod:`.dbsync` the
``dialog`` table.  The API for other modules (``load_api("dialog")``) is
:class:`DialogApi`.
"""
from __future__ import annotations

import time

from opensipy import log, receive, statistics, timer
from opensipy.modloader import load_api as _load_api
from opensipy.parser import METHOD_BYE
from opensipy.sr_module import (ALL_ROUTES, BRANCH_ROUTE, CMD_PARAM_INT,
                                CMD_PARAM_OPT, CMD_PARAM_STR, CMD_PARAM_VAR,
                                FAILURE_ROUTE, INT_PARAM, ONREPLY_ROUTE,
                                REQUEST_ROUTE, STAT_NO_RESET, STR_PARAM,
                                USE_FUNC_PARAM, CmdExport, CmdParam, DepExport,
                                MIExport, MIRecipe, ModuleDep, ModuleExports,
                                ParamExport, PVExport, StatExport)

from . import callbacks as cb
from . import core
from . import profiles as prof
from .core import st
from .table import (DLG_STATE_CONFIRMED_NA,
                    DLG_STATE_DELETED, FLAG_LETTERS, L_CONTACT, L_CSEQ,
                    L_ROUTES, L_SDP, L_SOCK, L_TAG, DlgTable, Dialog,
                    dlg_key, parse_did, split_dlg_id)

# ---- parameters (OpenSIPS names) -----------------------------------------
enable_stats = 1
hash_size = 4096
rr_param = "did"
default_timeout = 43200
delete_delay = 5
dlg_match_mode = 0
db_url = ""
db_mode = 0
db_update_period = 60
table_name = "dialog"
options_ping_interval = 30
reinvite_ping_interval = 300
dlg_extra_hdrs = ""

active_dialogs = early_dialogs = processed_dialogs = None
expired_dialogs = failed_dialogs = None


def _profiles_with_value(v):
    prof.define(v, True)
    return 0


def _profiles_no_value(v):
    prof.define(v, False)
    return 0


# ---- helpers ---------------------------------------------------------------

def _cur(msg):
    return core.current(msg)


def _key_of(msg):
    d = core.current(msg)
    return None if d is None else d.key


def fixup_flags(value):
    if value is None:
        return 0
    mask = 0
    for ch in str(value):
        if ch in " ,":
            continue
        if ch not in FLAG_LETTERS:
            raise ValueError(f"unknown create_dialog flag {ch!r} (known: "
                             f"{''.join(FLAG_LETTERS)})")
        mask |= FLAG_LETTERS[ch]
    return mask


def fixup_profile(value):
    prof.check(value)
    return value


def fixup_route(value):
    from opensipy.script.runtime import route_exists
    if not route_exists("route", value):
        raise ValueError(f"route[{value}] is not defined in the script")
    return value


# ---- script functions ---------------------------------------------------------

def w_create_dialog(msg, flags=None):
    if isinstance(flags, str):
        try:
            flags = fixup_flags(flags)
        except ValueError as e:
            log.LM_ERR(f"create_dialog: {e}")
            return -1
    return core.create(msg, flags or 0)


def w_match_dialog(msg, mode=None):
    return core.match(msg)


def _legs(d, msg, dr):
    """(source leg, target leg) of a sequential request: the callee leg
    is the confirmed one, or in an early dialog the one of the request's
    To tag (downstream) / From tag (upstream)."""
    f, t = msg.from_, msg.to
    if dr == core.DOWN:
        callee = d.callee or d.callee_by_tag(t.tag if t is not None else "")
        return d.caller, callee
    callee = d.callee or d.callee_by_tag(f.tag if f is not None else "")
    return callee, d.caller


def w_validate_dialog(msg):
    """-1 no dialog, -2 CSeq lower than the last of its direction, -3 the
    R-URI is not the target's Contact, -4 the dialog has ended."""
    d = _cur(msg)
    if d is None:
        return -1
    if d.state == DLG_STATE_DELETED or st.tbl.get(d.key) is None:
        if msg.method_id != METHOD_BYE:   # the BYE that ended it passes
            return -4
    dr = getattr(msg, "dlg_dir", 0)
    src, tgt = _legs(d, msg, dr)
    if getattr(msg, "dlg_cseq_bad", False):
        return -2
    ruri = msg.new_uri or msg.ruri
    if tgt is not None and tgt[L_CONTACT] and ruri != tgt[L_CONTACT]:
        return -3
    return 1


def w_fix_route_dialog(msg):
    """The R-URI (and $du from the route set) of a sequential request set
    from the dialog's record: the Contact of the side it goes to."""
    d = _cur(msg)
    if d is None:
        return -1
    tgt = _legs(d, msg, getattr(msg, "dlg_dir", 0))[1]
    if tgt is None or not tgt[L_CONTACT]:
        return -1
    msg.new_uri = tgt[L_CONTACT]
    routes = tgt[L_ROUTES]
    if routes:
        msg.dst_uri = routes.split(",")[0].strip().strip("<>")
    return 1


def _update(msg, fn):
    key = _key_of(msg)
    if key is None:
        return None
    r = core.update(key, fn)
    d = st.tbl.get(key)
    if d is not None:
        msg.dlg_snap = d
    return r


def w_set_dlg_profile(msg, name, value=None):
    try:
        has_value = prof.check(name)
    except prof.ProfileError as e:
        log.LM_ERR(f"set_dlg_profile: {e}")
        return -1
    if has_value and value is None:
        log.LM_ERR(f"set_dlg_profile: profile {name} needs a value")
        return -1
    r = _update(msg, lambda d: prof.link(d, name, value) or True)
    return 1 if r else -1


def w_unset_dlg_profile(msg, name, value=None):
    r = _update(msg, lambda d: prof.unlink(d, name, value))
    return 1 if r else -1


def w_is_in_profile(msg, name, value=None):
    d = _cur(msg)
    return 1 if d is not None and prof.is_in(d, name, value) else -1


def w_get_profile_size(msg, name, value, out):
    if value is not None and not prof.profiles.get(name):
        value = None
    out.set(msg, prof.size(name, value))
    return 1


def _live():
    """Every dialog not ended (the ended ones wait out delete_delay)."""
    return [d for d in st.tbl.all() if d.state != DLG_STATE_DELETED]


def _dialogs_in(name, value):
    return [d for d in _live() if prof.is_in(d, name, value)]


def w_get_dialogs_by_profile(msg, name, value, out, out_no=None):
    """Every dialog of the profile (of that value): their Call-IDs pushed
    into ``out`` (an AVP), how many into ``out_no``."""
    ds = _dialogs_in(name, value)
    for d in ds:
        out.set(msg, d.callid)
    if out_no is not None:
        out_no.set(msg, len(ds))
    return 1 if ds else -1


def _flag_op(msg, bit, op):
    if not 0 <= bit < 32:
        log.LM_ERR(f"dialog: flag {bit} out of 0..31")
        return -1

    def fn(d):
        was = bool(d.user_flags & (1 << bit))
        if op == "set":
            d.user_flags |= 1 << bit
        elif op == "reset":
            d.user_flags &= ~(1 << bit)
        elif op == "tas":
            d.user_flags |= 1 << bit
        return was
    if op == "test":
        d = _cur(msg)
        return -1 if d is None or not d.user_flags & (1 << bit) else 1
    r = _update(msg, fn)
    if r is None:
        return -1
    if op == "tas":
        return -1 if r else 1
    return 1


def w_set_dlg_flag(msg, bit):
    return _flag_op(msg, bit, "set")


def w_reset_dlg_flag(msg, bit):
    return _flag_op(msg, bit, "reset")


def w_is_dlg_flag_set(msg, bit):
    return _flag_op(msg, bit, "test")


def w_test_and_set_dlg_flag(msg, bit, value=1):
    """1 when the flag had the other value and is now ``value``."""
    if value == 0:
        d = _cur(msg)
        if d is None or not d.user_flags & (1 << bit):
            return -1
        return _flag_op(msg, bit, "reset")
    return _flag_op(msg, bit, "tas")


def w_store_dlg_value(msg, name, value):
    def fn(d):
        d.vals[name] = value
        return True
    return 1 if _update(msg, fn) else -1


def w_fetch_dlg_value(msg, name, out):
    d = _cur(msg)
    if d is None or name not in d.vals:
        return -1
    out.set(msg, d.vals[name])
    return 1


def _find_by_val(name, value):
    return [d for d in _live() if str(d.vals.get(name)) == str(value)
            and name in d.vals]


def w_get_dialog_info(msg, attr, out, key_name, key_val):
    """The value ``attr`` of the dialog whose value ``key_name`` is
    ``key_val``."""
    for d in _find_by_val(key_name, key_val):
        if attr in d.vals:
            out.set(msg, d.vals[attr])
            return 1
    return -1


def w_get_dialogs_by_val(msg, name, value, out, out_no=None):
    ds = _find_by_val(name, value)
    for d in ds:
        out.set(msg, d.callid)
    if out_no is not None:
        out_no.set(msg, len(ds))
    return 1 if ds else -1


def w_get_dialog_vals(msg, names, vals, callid):
    """Every value of the dialog of ``callid``: names into one AVP, values
    into the other (in the same order)."""
    for k in st.tbl.ids_of_callid(callid):
        d = st.tbl.get(k)
        if d is None or d.state == DLG_STATE_DELETED:
            continue
        for n, v in d.vals.items():
            names.set(msg, n)
            vals.set(msg, v)
        return 1
    return -1


def _set_route(field):
    def f(msg, name):
        def fn(d):
            setattr(d, field, name)
            return True
        return 1 if _update(msg, fn) else -1
    return f


def w_load_dialog_ctx(msg, dlg_id):
    """load_dialog_ctx(id): the dialog (Call-ID, numeric ID or did) is the
    context of the route from now on (until unload_dialog_ctx)."""
    d = _by_id(str(dlg_id))
    if d is None:
        return -1
    msg.dlg_key = d.key
    msg.dlg_snap = d
    return 1


def w_unload_dialog_ctx(msg):
    msg.__dict__.pop("dlg_key", None)
    msg.__dict__.pop("dlg_snap", None)
    return 1


def w_dlg_inc_cseq(msg, inc=1):
    """dlg_inc_cseq([inc]): the CSeq of the current sequential request, and
    of every later one in its direction, raised by ``inc`` (default 1);
    the replies get their CSeq back."""
    inc = 1 if inc is None else int(inc)
    if inc <= 0:
        log.LM_ERR(f"dlg_inc_cseq: {inc} is not a positive increment")
        return -1
    return core.inc_cseq(msg, inc)


def w_dlg_send_sequential(msg, method=None, side=None, body=None,
                          ctype=None, headers=None):
    """dlg_send_sequential([method[, side[, body[, ctype[, headers]]]]]):
    a request of ours within the current dialog; side "caller", "callee"
    (default: the other side of the current request's direction)."""
    key = _key_of(msg)
    if key is None:
        return -1
    if side is None:
        to_callee = getattr(msg, "dlg_dir", core.DOWN) == core.DOWN
    elif side in ("callee", "caller"):
        to_callee = side == "callee"
    else:
        log.LM_ERR(f"dlg_send_sequential: bad side {side!r}")
        return -1
    ok = core.send_sequential(key, to_callee, (method or "INVITE").upper(),
                              body or "", ctype or "", headers or "")
    return 1 if ok else -1


# ---- pseudo-variables ----------------------------------------------------------

def pv_status(msg, param):
    d = _cur(msg)
    return None if d is None else d.state


def pv_lifetime(msg, param):
    d = _cur(msg)
    if d is None:
        return None
    return int(time.time()) - d.start_ts if d.start_ts else 0


def pv_timeout_get(msg, param):
    d = _cur(msg)
    if d is None:
        return getattr(msg, "dlg_timeout", None)
    if d.timeout:
        return max(d.timeout - int(time.time()), 0)
    return d.lifetime


def pv_timeout_set(msg, param, op, value):
    try:
        v = int(value)
    except (TypeError, ValueError):
        log.LM_ERR(f"$DLG_timeout: {value!r} is not a number of seconds")
        return -1
    key = _key_of(msg)
    if key is None:
        msg.dlg_timeout = v          # for the dialog created later
        return 0
    core.set_timeout(key, v)
    return 0


def pv_dir(msg, param):
    d = _cur(msg)
    if d is None:
        return None
    dr = getattr(msg, "dlg_dir", 0)
    return {core.DOWN: "downstream", core.UP: "upstream"}.get(dr)


def pv_did(msg, param):
    d = _cur(msg)
    return None if d is None else d.did


def pv_flags(msg, param):
    d = _cur(msg)
    return None if d is None else d.user_flags


def pv_flags_set(msg, param, op, value):
    try:
        v = int(value)
    except (TypeError, ValueError):
        return -1

    def fn(d):
        d.user_flags = v & 0xFFFFFFFF
        return True
    return 0 if _update(msg, fn) else -1


def pv_end_reason(msg, param):
    d = _cur(msg)
    return None if d is None or not d.end_reason else d.end_reason


def pv_dlg_val(msg, param):
    d = _cur(msg)
    if d is None:
        return None
    return d.vals.get(param)


def pv_dlg_val_set(msg, param, op, value):
    def fn(d):
        if value is None:
            d.vals.pop(param, None)
        else:
            d.vals[param] = value
        return True
    return 0 if _update(msg, fn) else -1


# ---- MI ----------------------------------------------------------------------

def _date(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def mi_dialog(d: Dialog, ctx=False) -> dict:
    """One dialog as OpenSIPS 3.x prints it (``ID`` the did, ``db_id`` the
    numeric id as a string, absolute ``timeout``)."""
    o = {"ID": d.did, "db_id": str(d.dlg_id), "state": d.state,
         "user_flags": d.user_flags, "timestart": d.start_ts}
    if d.start_ts:
        o["datestart"] = _date(d.start_ts)
    o["timeout"] = d.timeout
    if d.timeout:
        o["dateout"] = _date(d.timeout)
    o.update({"callid": d.callid, "from_uri": d.from_uri,
              "to_uri": d.to_uri,
              "caller_tag": d.caller[L_TAG],
              "caller_contact": d.caller[L_CONTACT],
              "callee_cseq": d.caller[L_CSEQ],
              "caller_route_set": d.caller[L_ROUTES],
              "caller_bind_addr": d.caller[L_SOCK]})
    if d.caller[L_SDP]:
        o["caller_sdp"] = d.caller[L_SDP]
    callees = []
    for c in d.callees:
        e = {"callee_tag": c[L_TAG], "callee_contact": c[L_CONTACT],
             "caller_cseq": c[L_CSEQ], "callee_route_set": c[L_ROUTES],
             "callee_bind_addr": c[L_SOCK] or None}
        if c[L_SDP]:
            e["callee_sdp"] = c[L_SDP]
        callees.append(e)
    o["CALLEES"] = callees
    if ctx:
        c = {}
        if d.vals:
            c["values"] = [{k: str(v)} for k, v in d.vals.items()]
        if d.profiles:
            c["profiles"] = [{n: (v if v is not None else "")}
                             for n, v in d.profiles]
        # other modules add theirs (DLGCB_MI_CONTEXT: params["context"])
        cb.run(d, cb.DLGCB_MI_CONTEXT, extra={"context": c})
        o["context"] = c
    return o


def _by_id(text: str):
    """A dialog by its numeric ID, its did or its Call-ID."""
    text = text.strip()
    t = st.tbl
    if text.isdigit():
        d = t.get(dlg_key(*split_dlg_id(int(text))))
        if d is not None:
            return d
    p = parse_did(text)
    if p is not None:
        d = t.get(dlg_key(*p))
        if d is not None:
            return d
    for k in t.ids_of_callid(text):
        d = t.get(k)
        if d is not None:
            return d
    return None


def _mi_list(params, ctx):
    from opensipy.mi import MIError
    t = st.tbl
    if "callid" in params:
        for k in t.ids_of_callid(str(params["callid"])):
            d = t.get(k)
            if d is None or d.state == DLG_STATE_DELETED:
                continue
            if params.get("from_tag") is not None and \
                    d.caller[L_TAG] != params["from_tag"]:
                continue
            return {"Dialog": mi_dialog(d, ctx)}
        raise MIError(404, "No such dialog")
    ds = sorted(_live(), key=lambda d: (d.h_entry, d.h_id))
    if "index" in params:
        try:
            idx, cnt = int(params["index"]), int(params["counter"])
        except (TypeError, ValueError, KeyError):
            raise MIError(400, "Bad index/counter") from None
        return {"count": len(ds),
                "Dialogs": [mi_dialog(d, ctx) for d in ds[idx:idx + cnt]]}
    return {"Dialogs": [mi_dialog(d, ctx) for d in ds]}


def mi_dlg_list(params):
    return _mi_list(params, False)


def mi_dlg_list_ctx(params):
    return _mi_list(params, True)


def mi_dlg_end_dlg(params):
    from opensipy.mi import MIError
    d = _by_id(str(params["dialog_id"]))
    if d is None:
        raise MIError(404, "Dialog not found")
    extra = str(params.get("extra_hdrs") or "")
    if d.state < DLG_STATE_CONFIRMED_NA:
        raise MIError(404, "Dialog not found")
    if not core.end_dialog(d.key, "MI Termination", True,
                           extra_hdrs=extra):
        raise MIError(404, "Dialog not found")
    return "OK"


def mi_profile_get_size(params):
    from opensipy.mi import MIError
    name = str(params["profile"])
    if name not in prof.profiles:
        raise MIError(404, "Profile not found")
    value = params.get("value")
    if value is not None and not prof.profiles[name]:
        value = None
    return {"profile": {"name": name, "value": value,
                        "count": prof.size(name, value)}}


def mi_profile_list_dlgs(params):
    from opensipy.mi import MIError
    name = str(params["profile"])
    if name not in prof.profiles:
        raise MIError(404, "Profile not found")
    value = params.get("value")
    if not prof.profiles[name]:
        value = None
    return {"Dialogs": [mi_dialog(d) for d in _dialogs_in(name, value)]}


def mi_dlg_db_sync(params):
    from opensipy.mi import MIError
    if st.db is None:
        raise MIError(400, "Disabled DB support")
    try:
        st.db.sync_from_db()
    except Exception as e:       # noqa: BLE001 - DBError & co
        raise MIError(500, f"Failed to sync dialogs: {e}") from None
    return "OK"


# ---- API -----------------------------------------------------------------------

class DialogApi:
    """``load_api("dialog")``: what other modules (acc, topology_hiding,
    ...) use.  See README.md "Developer's guide".

    - ``register_dlgcb_func(name, fn)`` in mod_init, then
      ``register_dlgcb(dlg_or_None, types, name, param)``: per-dialog
      callbacks armed by name (``dlg=None`` with DLGCB_CREATED/LOADED:
      global, ``name`` may be the function);
    - ``get_dlg(msg)`` the message's dialog (a snapshot) or None;
      ``get_dlg_by_key(key)``; ``create_dialog(msg, flags="")``;
      ``match_dialog(msg)``;
    - ``store_dlg_value(dlg, name, value)`` / ``fetch_dlg_value(dlg,
      name)``; ``set_dlg_flag``; ``end_dlg(dlg, reason, send_bye=True)``;
      ``send_indialog_request(dlg, to_callee, method, body, ctype,
      headers, cb_name, param)`` (cb_name a tm uac callback name);
    - ``DLGCB_*`` and ``DLG_DIR_*`` constants, ``DLG_STATE_*``.
    """

    def __init__(self):
        for n in dir(cb):
            if n.startswith(("DLGCB_", "DLG_DIR_")):
                setattr(self, n, getattr(cb, n))
        from . import table as _t
        for n in dir(_t):
            if n.startswith("DLG_STATE_") or n.startswith("DLG_FLAG_"):
                setattr(self, n, getattr(_t, n))

    register_dlgcb_func = staticmethod(cb.register_dlgcb_func)

    @staticmethod
    def register_dlgcb(dlg, types, name, param=None) -> int:
        if dlg is None:
            return cb.register_global(types, name, param)
        cb.check_per_dialog(types, name)

        def fn(d):
            d.cbs.append((types, name, param))
            return True
        if core.update(dlg.key, fn) is None:
            return -1
        dlg.cbs.append((types, name, param))
        return 1

    @staticmethod
    def get_dlg(msg):
        return core.current(msg)

    @staticmethod
    def get_dlg_by_key(key):
        return st.tbl.get(key)

    @staticmethod
    def create_dialog(msg, flags=""):
        return core.create(msg, fixup_flags(flags))

    match_dialog = staticmethod(core.match)

    @staticmethod
    def store_dlg_value(dlg, name, value) -> bool:
        def fn(d):
            d.vals[name] = value
            return True
        ok = bool(core.update(dlg.key, fn))
        if ok:
            dlg.vals[name] = value
        return ok

    @staticmethod
    def fetch_dlg_value(dlg, name):
        d = st.tbl.get(dlg.key) or dlg
        return d.vals.get(name)

    @staticmethod
    def set_dlg_flag(dlg, bit) -> bool:
        def fn(d):
            d.user_flags |= 1 << bit
            return True
        return bool(core.update(dlg.key, fn))

    @staticmethod
    def end_dlg(dlg, reason="API Termination", send_bye=True) -> bool:
        return core.end_dialog(dlg.key, reason, send_bye)

    @staticmethod
    def send_indialog_request(dlg, to_callee, method, body="", ctype="",
                              headers="", cb_name=None, param=None) -> bool:
        return core.send_sequential(dlg.key, to_callee, method, body, ctype,
                                    headers, cb_name, param)


def load_api():
    return DialogApi()


# ---- init ----------------------------------------------------------------------

def _stat(name):
    return statistics.get_stat(f"dialog:{name}") if enable_stats else None


def mod_init():
    st.tm = _load_api("tm", needed_by="dialog")
    try:
        st.rr = _load_api("rr", needed_by="dialog")
    except Exception:            # noqa: BLE001 - rr not loaded: no did
        st.rr = None
        log.LM_WARN("dialog: rr is not loaded: no did in Record-Route, "
                    "sequential requests match by Call-ID and tags only")
    if int(dlg_match_mode) not in (0, 1, 2):
        raise ValueError("dialog: dlg_match_mode must be 0, 1 or 2")
    if int(db_mode) not in (0, 1, 2, 3):
        raise ValueError("dialog: db_mode must be 0..3")
    for n in ("default_timeout", "options_ping_interval",
              "reinvite_ping_interval", "hash_size"):
        if int(globals()[n]) <= 0:
            raise ValueError(f"dialog: {n} must be positive")
    st.rr_param = rr_param
    st.extra_hdrs = dlg_extra_hdrs
    st.default_timeout = int(default_timeout)
    if int(delete_delay) < 0:
        raise ValueError("dialog: delete_delay must not be negative")
    st.delete_delay = int(delete_delay)
    st.match_mode = int(dlg_match_mode)
    st.db_mode = int(db_mode)
    st.options_ping_interval = int(options_ping_interval)
    st.reinvite_ping_interval = int(reinvite_ping_interval)
    st.active = _stat("active_dialogs")
    st.early = _stat("early_dialogs")
    st.processed = _stat("processed_dialogs")
    st.expired = _stat("expired_dialogs")
    st.failed = _stat("failed_dialogs")
    st.tbl = DlgTable(int(hash_size))
    prof.init()
    tm = st.tm
    tm.register_tmcb_func("dlg_onreply", core.on_initial_reply)
    tm.register_tmcb_func("dlg_within", core.on_within_reply)
    tm.register_tmcb(None, tm.TMCB_REQUEST_IN, core.on_request_in)
    tm.register_uac_callback("dlg_ping", core.on_ping_reply)
    receive.register_post_script_cb(core.post_script)
    if st.rr is not None:
        st.rr.register_rrcb(core.on_route, None, 0)
    if st.db_mode:
        if not db_url:
            raise ValueError("dialog: db_mode needs db_url")
        from .dbsync import DlgDb
        from opensipy import db as _db
        try:
            st.db = DlgDb(db_url, table_name, st.db_mode,
                          int(db_update_period))
            n = st.db.load()
        except _db.DBError as e:
            # the reason, not a traceback (a database never made, an
            # older table)
            log.LM_ERR(f"dialog: {e}")
            return -1
        log.LM_INFO(f"dialog: {n} dialog(s) loaded from {table_name}")
    timer.register_timer("dlg-timer", core.timer, None, 1)
    return 0


def child_init(rank):
    return 0


def destroy():
    if st.db is not None and st.tbl is not None:
        try:
            st.db.shutdown()
        except Exception as e:   # noqa: BLE001
            log.LM_ERR(f"dialog: saving the dialogs failed: {e}")


_R = REQUEST_ROUTE
_RFBO = REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE | ONREPLY_ROUTE
_OPT = CMD_PARAM_OPT


def _p(flags, fixup=None):
    return CmdParam(flags, fixup=fixup)


exports = ModuleExports(
    name="dialog",
    deps=DepExport(md=[ModuleDep("tm")]),
    cmds=[
        CmdExport("create_dialog", w_create_dialog,
                  [_p(CMD_PARAM_STR | _OPT, fixup_flags)],
                  _R | FAILURE_ROUTE | BRANCH_ROUTE),
        CmdExport("match_dialog", w_match_dialog,
                  [_p(CMD_PARAM_INT | _OPT)], _R),
        CmdExport("validate_dialog", w_validate_dialog, [], _R),
        CmdExport("fix_route_dialog", w_fix_route_dialog, [], _R),
        CmdExport("set_dlg_profile", w_set_dlg_profile,
                  [_p(CMD_PARAM_STR, fixup_profile),
                   _p(CMD_PARAM_STR | _OPT)], _RFBO),
        CmdExport("unset_dlg_profile", w_unset_dlg_profile,
                  [_p(CMD_PARAM_STR, fixup_profile),
                   _p(CMD_PARAM_STR | _OPT)], _RFBO),
        CmdExport("is_in_profile", w_is_in_profile,
                  [_p(CMD_PARAM_STR, fixup_profile),
                   _p(CMD_PARAM_STR | _OPT)], _RFBO),
        CmdExport("get_profile_size", w_get_profile_size,
                  [_p(CMD_PARAM_STR, fixup_profile),
                   _p(CMD_PARAM_STR | _OPT), _p(CMD_PARAM_VAR)],
                  ALL_ROUTES),
        CmdExport("get_profile_size", lambda msg, name, out:
                  w_get_profile_size(msg, name, None, out),
                  [_p(CMD_PARAM_STR, fixup_profile), _p(CMD_PARAM_VAR)],
                  ALL_ROUTES),
        CmdExport("get_dialogs_by_profile", w_get_dialogs_by_profile,
                  [_p(CMD_PARAM_STR, fixup_profile),
                   _p(CMD_PARAM_STR | _OPT), _p(CMD_PARAM_VAR),
                   _p(CMD_PARAM_VAR | _OPT)], ALL_ROUTES),
        CmdExport("set_dlg_flag", w_set_dlg_flag, [_p(CMD_PARAM_INT)],
                  _RFBO),
        CmdExport("test_and_set_dlg_flag", w_test_and_set_dlg_flag,
                  [_p(CMD_PARAM_INT), _p(CMD_PARAM_INT | _OPT)], _RFBO),
        CmdExport("reset_dlg_flag", w_reset_dlg_flag, [_p(CMD_PARAM_INT)],
                  _RFBO),
        CmdExport("is_dlg_flag_set", w_is_dlg_flag_set, [_p(CMD_PARAM_INT)],
                  _RFBO),
        CmdExport("store_dlg_value", w_store_dlg_value,
                  [_p(CMD_PARAM_STR), _p(CMD_PARAM_STR)], _RFBO),
        CmdExport("fetch_dlg_value", w_fetch_dlg_value,
                  [_p(CMD_PARAM_STR), _p(CMD_PARAM_VAR)], _RFBO),
        CmdExport("get_dialog_info", w_get_dialog_info,
                  [_p(CMD_PARAM_STR), _p(CMD_PARAM_VAR), _p(CMD_PARAM_STR),
                   _p(CMD_PARAM_STR)], ALL_ROUTES),
        CmdExport("get_dialogs_by_val", w_get_dialogs_by_val,
                  [_p(CMD_PARAM_STR), _p(CMD_PARAM_STR), _p(CMD_PARAM_VAR),
                   _p(CMD_PARAM_VAR | _OPT)], ALL_ROUTES),
        CmdExport("get_dialog_vals", w_get_dialog_vals,
                  [_p(CMD_PARAM_VAR), _p(CMD_PARAM_VAR), _p(CMD_PARAM_STR)],
                  ALL_ROUTES),
        CmdExport("dlg_on_timeout", _set_route("rt_on_timeout"),
                  [_p(CMD_PARAM_STR, fixup_route)], _RFBO),
        CmdExport("dlg_on_answer", _set_route("rt_on_answer"),
                  [_p(CMD_PARAM_STR, fixup_route)], _RFBO),
        CmdExport("dlg_on_hangup", _set_route("rt_on_hangup"),
                  [_p(CMD_PARAM_STR, fixup_route)], _RFBO),
        CmdExport("load_dialog_ctx", w_load_dialog_ctx,
                  [_p(CMD_PARAM_STR)], ALL_ROUTES),
        CmdExport("unload_dialog_ctx", w_unload_dialog_ctx, [], ALL_ROUTES),
        CmdExport("dlg_inc_cseq", w_dlg_inc_cseq,
                  [_p(CMD_PARAM_INT | _OPT)], _R),
        CmdExport("dlg_send_sequential", w_dlg_send_sequential,
                  [_p(CMD_PARAM_STR | _OPT), _p(CMD_PARAM_STR | _OPT),
                   _p(CMD_PARAM_STR | _OPT), _p(CMD_PARAM_STR | _OPT),
                   _p(CMD_PARAM_STR | _OPT)], ALL_ROUTES),
    ],
    params=[
        ParamExport("enable_stats", INT_PARAM, "enable_stats"),
        ParamExport("hash_size", INT_PARAM, "hash_size"),
        ParamExport("rr_param", STR_PARAM, "rr_param"),
        ParamExport("default_timeout", INT_PARAM, "default_timeout"),
        ParamExport("delete_delay", INT_PARAM, "delete_delay"),
        ParamExport("dlg_match_mode", INT_PARAM, "dlg_match_mode"),
        ParamExport("dlg_extra_hdrs", STR_PARAM, "dlg_extra_hdrs"),
        ParamExport("db_url", STR_PARAM, "db_url"),
        ParamExport("db_mode", INT_PARAM, "db_mode"),
        ParamExport("db_update_period", INT_PARAM, "db_update_period"),
        ParamExport("table_name", STR_PARAM, "table_name"),
        ParamExport("options_ping_interval", INT_PARAM,
                    "options_ping_interval"),
        ParamExport("reinvite_ping_interval", INT_PARAM,
                    "reinvite_ping_interval"),
        ParamExport("profiles_with_value", STR_PARAM | USE_FUNC_PARAM,
                    _profiles_with_value),
        ParamExport("profiles_no_value", STR_PARAM | USE_FUNC_PARAM,
                    _profiles_no_value),
    ],
    stats=[StatExport("active_dialogs", STAT_NO_RESET),
           StatExport("early_dialogs", STAT_NO_RESET),
           StatExport("processed_dialogs"),
           StatExport("expired_dialogs"),
           StatExport("failed_dialogs")],
    mi_cmds=[
        MIExport("dlg_list", "list the dialogs (all, by Call-ID [and "
                 "From tag], or a page: index, counter)",
                 recipes=[MIRecipe(mi_dlg_list, p) for p in (
                     (), ("callid",), ("callid", "from_tag"),
                     ("index", "counter"))]),
        MIExport("dlg_list_ctx", "dlg_list with each dialog's context "
                 "(values, profiles)",
                 recipes=[MIRecipe(mi_dlg_list_ctx, p) for p in (
                     (), ("callid",), ("callid", "from_tag"),
                     ("index", "counter"))]),
        MIExport("dlg_end_dlg", "end a dialog (BYE to both sides)",
                 recipes=[MIRecipe(mi_dlg_end_dlg, ("dialog_id",)),
                          MIRecipe(mi_dlg_end_dlg,
                                   ("dialog_id", "extra_hdrs"))]),
        MIExport("profile_get_size", "the number of dialogs in a profile",
                 recipes=[MIRecipe(mi_profile_get_size, ("profile",)),
                          MIRecipe(mi_profile_get_size,
                                   ("profile", "value"))]),
        MIExport("profile_list_dlgs", "the dialogs of a profile",
                 recipes=[MIRecipe(mi_profile_list_dlgs, ("profile",)),
                          MIRecipe(mi_profile_list_dlgs,
                                   ("profile", "value"))]),
        MIExport("dlg_db_sync", "load the dialogs of the database table "
                 "into memory", recipes=[MIRecipe(mi_dlg_db_sync)]),
    ],
    items=[
        PVExport("DLG_status", pv_status),
        PVExport("DLG_lifetime", pv_lifetime),
        PVExport("DLG_timeout", pv_timeout_get, pv_timeout_set),
        PVExport("DLG_dir", pv_dir),
        PVExport("DLG_did", pv_did),
        PVExport("DLG_flags", pv_flags, pv_flags_set),
        PVExport("DLG_end_reason", pv_end_reason),
        PVExport("dlg_val", pv_dlg_val, pv_dlg_val_set),
    ],
    init_f=mod_init,
    init_child_f=child_init,
    destroy_f=destroy,
)
