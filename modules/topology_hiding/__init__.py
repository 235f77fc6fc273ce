"""topology_hiding: hide the addresses of each side of a call from the
other (OpenSIPS's topology_hiding module, with and without dialog).

``topology_hiding([flags])`` on an initial request takes every Via and
Record-Route off and puts our own Contact in place of the sender's:
``<sip:[user@]OUR_ADDR;thinfo=TOKEN>``.  TOKEN seals (encrypt-then-MAC
with ``th_contact_encode_passwd``, see ``codec.py``) what is needed to
reach the sender again: its Contact URI, its Record-Route set and the
socket the request came in on.  Replies relayed back get the request's
Vias again (tm's ``TMCB_RESPONSE_FWDED``), lose their Record-Routes, and
get our Contact sealing the answering side's Contact and route set.  So
each side sees only the proxy: in Via (tm adds ours), in Contact, and no
Record-Route at all.

A sequential request reaches us at that Contact; ``topology_hiding_match()``
opens the token of its Request-URI, sends the request to the Contact (and
route set, and out of the socket) sealed in it, and hides this request the
same way (Vias, Record-Routes, its Contact for a re-INVITE, and the replies
on their way back).  The token carries the flags, so the whole call is
hidden the way its INVITE asked for.

Flags: ``U`` keeps the user part of the hidden Contact; ``C`` hides the
Call-ID (``th_callid_prefix`` + a keyed encoding with ``th_callid_passwd``,
decoded again for the other side); ``D`` puts the dialog id in the
Contact's user part (dialog mode).

Dialog mode: when the request has a dialog (``create_dialog()`` in the
script, or ``force_dialog``), the same state is kept in the dialog's values
through ``load_api("dialog")`` and our Contact carries the dialog id
instead of a token (see "dialog mode" below and README.md).
"""
from __future__ import annotations

import json
import re
from typing import List, Optional

from opensipy import config, log
from opensipy.core_cmds import check_self
from opensipy.modloader import ModuleError, load_api
from opensipy.parser import (HDR_CALLID_T, HDR_CONTACT_T, HDR_RECORDROUTE_T,
                             HDR_VIA_T)
from opensipy.parser import parse_uri
from opensipy.sr_module import (CMD_PARAM_OPT, CMD_PARAM_STR, DEP_ABORT,
                                DEP_SILENT, FAILURE_ROUTE, INT_PARAM,
                                REQUEST_ROUTE, STR_PARAM, CmdExport,
                                CmdParam, DepExport, ModuleDep,
                                ModuleExports, ParamExport, PVExport)

from .codec import CallidCodec, Sealer, ThinfoError

th_callid_passwd = "OpenSIPS"
th_callid_prefix = "DLGCH_"
th_passed_contact_uri_params = ""
th_passed_contact_params = ""
force_dialog = 0
th_contact_encode_passwd = "ToPoCtPaSS"
th_contact_encode_param = "thinfo"
th_contact_encode_scheme = "base64"

FLAGS = "UCD"
_REPLY_CB = "topology_hiding:reply"

_tm = None
_dlg = None                   # the dialog module's API, when loaded
_sealer: Optional[Sealer] = None
_callid: Optional[CallidCodec] = None
_uri_params: List[str] = []
_hdr_params: List[str] = []


# ------------------------------------------------------------ small helpers

def _out_socket(msg):
    si = getattr(msg, "force_send_socket", None)
    if si is None and msg.rcv is not None:
        si = msg.rcv.socket
    return si


def _socket_named(name: str):
    for si in config.settings.sockets:
        if si.name == name:
            return si
    return None


def _host_port(si) -> str:
    host = si.adv_host or si.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    hp = f"{host}:{si.adv_port or si.port}"
    if si.proto != "udp":
        hp += f";transport={si.proto}"
    return hp


def _delete_hdrs(msg, htype) -> None:
    for i in msg.hdrs_of_type(htype):
        h = msg.headers[i]
        msg.delete(h.start, h.end - h.start)


def _rr_uris(msg) -> List[str]:
    return [r.uri for r in msg.record_route]


_PARAM_RE = re.compile(r'\s*([^;=\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*))?')


def _param_text(params_str: Optional[str], names: List[str]) -> str:
    """The params of ``params_str`` named in ``names``, as written (quoted
    values keep their quotes), ';name[=value]' each."""
    if not names or not params_str:
        return ""
    out = ""
    pos = 0
    while pos < len(params_str):
        m = _PARAM_RE.match(params_str, pos)
        if m is None or m.end() == pos:
            break
        if m.group(1).lower() in names:
            v = m.group(2)
            out += f";{m.group(1)}" if v is None else \
                f";{m.group(1)}={v.strip()}"
        pos = m.end()
        if pos < len(params_str) and params_str[pos] == ";":
            pos += 1
    return out


def _one_contact(msg):
    """The message's single Contact value; None when it has none."""
    cts = msg.contacts
    if not cts:
        return None
    if len(cts) != 1 or cts[0].star:
        raise ValueError("more than one Contact (or '*'): cannot hide it")
    return cts[0]


def _put_contact(msg, c, out_si, flags: str, param: str,
                 user: Optional[str] = None) -> None:
    """Replace Contact value ``c`` with ours: ``<sip:[user@]OUT_ADDR
    PARAM [passed URI params]>[passed header params]``; ``user`` None: the
    original's user part with flag U, none without."""
    if out_si is None:
        raise ValueError("no socket to advertise in the Contact")
    u = c.parsed_uri
    if user is None:
        user = u.user if "U" in flags and u.user else ""
    scheme = "sips" if u.scheme == "sips" else "sip"
    new = (f"<{scheme}:{user + '@' if user else ''}{_host_port(out_si)}"
           f"{param}{_param_text(u.params_str, _uri_params)}>"
           f"{_param_text(c.params_str, _hdr_params)}")
    msg.replace(c.start, c.end - c.start, new)


def _hide_contact(msg, out_si, back_si, routes: List[str], flags: str,
                  far=None) -> bool:
    """No-dialog mode: our Contact (at ``out_si``'s address) in place of
    the message's one, sealing the original Contact URI, the route set back
    to its sender and the socket (``back_si``) that sender is reached
    through; ``far`` ([routes, socket name]) is the other side's, when
    known, so a target refresh coming back with this token can keep that
    side's route set.  No Contact: nothing to do."""
    c = _one_contact(msg)
    if c is None:
        return True
    if back_si is None:
        raise ValueError("no socket the sender is reached through")
    state = {"c": c.uri, "r": routes, "s": back_si.name, "f": flags}
    if far is not None:
        state["fr"], state["fs"] = far
    token = _sealer.seal(json.dumps(state, separators=(",", ":"))
                         .encode("utf-8", "surrogateescape"))
    _put_contact(msg, c, out_si, flags, f";{th_contact_encode_param}={token}")
    return True


def _set_callid(msg, value: str) -> None:
    if msg.hdrs_of_type(HDR_CALLID_T):
        msg.set_hdr_body("Call-ID", value)


def _arm_reply(msg, param: dict) -> None:
    """The reply callback on the request's transaction: now if it has one,
    else when t_relay() makes it (TMCB_REQUEST_IN).  ``param``: ``f`` the
    flags, ``r`` the answering side's route set (None: the reply's
    Record-Routes tell), ``fr``/``fs`` the requesting side's route set and
    socket."""
    cell = getattr(msg, "tm_cell", None)
    if cell is None:
        msg.th_pending = param
    elif not _tm.tmcb_armed(cell, _REPLY_CB):    # again in failure_route
        _tm.register_tmcb(cell, _tm.TMCB_RESPONSE_FWDED, _REPLY_CB, param)


def _on_new_transaction(cell, typ, params) -> None:
    req = params.get("req")
    d = getattr(req, "__dict__", None)
    param = d.pop("th_pending", None) if d else None
    if param is not None:
        _tm.register_tmcb(cell, _tm.TMCB_RESPONSE_FWDED, _REPLY_CB, param)


def _hide_request(msg, contact) -> bool:
    """Vias and Record-Routes off, our Contact on (``contact(msg)`` puts
    it: the parts both the initial and the sequential requests get)."""
    cp = msg.lump_checkpoint()
    try:
        _delete_hdrs(msg, HDR_VIA_T)
        _delete_hdrs(msg, HDR_RECORDROUTE_T)
        if not contact(msg):
            msg.lump_rollback(cp)
            return False
    except ValueError as e:
        # a header the script already changed in another way
        log.LM_ERR(f"topology_hiding: cannot change the request: {e}")
        msg.lump_rollback(cp)
        return False
    return True


def _sock_name(msg) -> str:
    return msg.rcv.socket.name if msg.rcv is not None else ""


# ------------------------------------------------------------ topology_hiding

def w_topology_hiding(msg, flags: Optional[str] = None) -> int:
    flags = flags or ""
    if getattr(msg, "th_done", False) or \
            (msg.__dict__.get("persist") or {}).get("th"):
        # already hidden: in a failure_route the request tm rebuilds keeps
        # the changes made before t_relay (as OpenSIPS's faked request)
        log.LM_DBG("topology_hiding: already engaged for this request")
        return 1
    if not msg.is_request:
        return -1
    try:
        d = _dialog_of(msg)
    except _NoDialog as e:
        log.LM_ERR(f"topology_hiding: {e}")
        return -1
    if d is not None:
        return _th_with_dlg(msg, d, flags)
    if "D" in flags:
        log.LM_WARN("topology_hiding: no dialog: the D flag is ignored")
    try:
        routes = _rr_uris(msg)
        out_si = _out_socket(msg)
        back_si = msg.rcv.socket if msg.rcv is not None else None
        if not _hide_request(msg, lambda m: _hide_contact(
                m, out_si, back_si, routes, flags)):
            return -1
        if "C" in flags:
            cid = msg.callid or ""
            hidden = _callid.encode(cid)
            _set_callid(msg, hidden)
            msg.th_callee_callid = hidden
    except Exception as e:     # noqa: BLE001 - a bad header: the request fails
        log.LM_ERR(f"topology_hiding: {type(e).__name__}: {e}")
        return -1
    msg.th_done = True
    _persist(msg)["th"] = 1
    if msg.method != "ACK":
        _arm_reply(msg, {"f": flags, "r": None, "fr": routes,
                         "fs": _sock_name(msg)})
    return 1


def _persist(msg) -> dict:
    """What tm keeps with the transaction for a failure_route's request."""
    p = msg.__dict__.get("persist")
    if p is None:
        p = msg.persist = {}
    return p


def _fixup_flags(value: str) -> str:
    bad = [c for c in value if c not in FLAGS]
    if bad:
        raise ValueError(f"unknown topology_hiding flag(s) {''.join(bad)!r} "
                         f"(U, C, D)")
    if "D" in value and _dlg is None:
        raise ValueError("the D flag (dialog id in the Contact) needs the "
                         "dialog module (loadmodule \"dialog.so\")")
    return value


# ------------------------------------------------------------ replies

def _restore_vias(rpl, req) -> None:
    """The reply lost our Via (tm took it off): the Vias below it go and
    the request's own Vias come back in their place."""
    vias = rpl.via
    want = ", ".join(v.text for v in req.via)
    top = vias[0].hdr_index
    headers = rpl.headers
    same = [v for v in vias[1:] if v.hdr_index == top]
    if same:
        # tm cut the first value of a header that holds more: the rest of
        # the values give way to the request's
        rpl.replace(same[0].start, same[-1].end - same[0].start, want)
    else:
        rpl.insert_after(headers[top].end, f"Via: {want}\r\n")
    done = {top}
    for v in vias[1:]:
        if v.hdr_index not in done:
            done.add(v.hdr_index)
            h = headers[v.hdr_index]
            rpl.delete(h.start, h.end - h.start)


def _reply_socket(cell, params, rpl):
    """The socket a reply came in on (the request went out of)."""
    if rpl.rcv is not None and rpl.rcv.socket is not None:
        return rpl.rcv.socket
    idx = params.get("branch", -1)
    if 0 <= idx < cell.nbranches:
        k = cell.br[idx].dst.si
        socks = config.settings.sockets
        return socks[k] if 0 <= k < len(socks) else None
    return None


def _on_reply(cell, typ, params) -> None:
    rpl, req = params["rpl"], params["req"]
    p = params["param"] or {}
    flags = p.get("f", "")
    if rpl is None or req is None:
        return
    cp = rpl.lump_checkpoint()
    try:
        _restore_vias(rpl, req)
        routes = p.get("r")
        if routes is None:          # the answer to an initial request
            routes = list(reversed(_rr_uris(rpl)))
        _delete_hdrs(rpl, HDR_RECORDROUTE_T)
        if "C" in flags and req.callid:
            _set_callid(rpl, req.callid)
    except Exception as e:     # noqa: BLE001 - never stop tm
        log.LM_ERR(f"topology_hiding: cannot hide the {rpl.status} reply: "
                   f"{type(e).__name__}: {e}")
        rpl.lump_rollback(cp)
        return
    cp = rpl.lump_checkpoint()
    try:
        if "dlg" in p:
            _dlg_reply(cell, params, p, rpl, req, routes)
        elif not 300 <= rpl.status < 400 and rpl.contacts:
            # the answering side is reached through the socket the request
            # went out of (the one the reply came in on)
            back_si = _reply_socket(cell, params, rpl)
            out_si = req.rcv.socket if req.rcv is not None else None
            _hide_contact(rpl, out_si, back_si, routes, flags,
                          [p.get("fr") or [], p.get("fs", "")])
    except Exception as e:     # noqa: BLE001 - never stop tm
        # a Contact that cannot be hidden does not go out either
        log.LM_ERR(f"topology_hiding: the Contact of the {rpl.status} reply "
                   f"cannot be hidden ({type(e).__name__}: {e}): removed")
        rpl.lump_rollback(cp)
        try:
            _delete_hdrs(rpl, HDR_CONTACT_T)
        except ValueError as e2:
            log.LM_ERR(f"topology_hiding: cannot remove the Contact: {e2}")


# ------------------------------------------------------------ sequential

def _open_token(token: str) -> dict:
    state = json.loads(_sealer.open(token).decode("utf-8", "surrogateescape"))
    if not isinstance(state, dict):
        raise ThinfoError("bad contents")
    c, r, s_, f = state["c"], state["r"], state["s"], state["f"]
    fr, fs = state.get("fr"), state.get("fs", "")
    if not (isinstance(c, str) and isinstance(s_, str) and isinstance(f, str)
            and _str_list(r) and (fr is None or _str_list(fr))
            and isinstance(fs, str)):
        raise ThinfoError("bad contents")
    return state


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def w_topology_hiding_match(msg) -> int:
    if not msg.is_request:
        return -1
    try:
        ruri = msg.parsed_uri
        if ruri is None or msg.route:
            return -1
        if not check_self(ruri.host, ruri.port or (
                5061 if ruri.scheme == "sips" else 5060)):
            return -1
        if _dlg is not None:
            did = _did_of(ruri)
            if did is not None:
                return _match_with_dlg(msg, did)
        token = ruri.param(th_contact_encode_param)
        if token is None:
            return -1
    except Exception as e:      # noqa: BLE001 - a bad Request-URI or Route
        log.LM_DBG(f"topology_hiding: no match: {e}")
        return -1
    src = f"{msg.rcv.src_ip}:{msg.rcv.src_port}" if msg.rcv else "?"
    try:
        state = _open_token(token)
    except (ThinfoError, ValueError, KeyError, TypeError) as e:
        log.LM_ERR(f"topology_hiding: refused {msg.method} from {src}: its "
                   f"Request-URI's {th_contact_encode_param} parameter is "
                   f"not ours ({e})")
        return -1
    contact, routes, flags = state["c"], state["r"], state["f"]
    si = _socket_named(state["s"])
    if si is None:
        log.LM_ERR(f"topology_hiding: {msg.method} from {src}: socket "
                   f"{state['s']} is not one of ours any more")
        return -1
    msg.force_send_socket = si
    try:
        # the sender's route set: from this request's Record-Routes, else
        # the one the token kept for it
        mine = _rr_uris(msg) or state.get("fr") or []
    except Exception as e:      # noqa: BLE001 - a bad Record-Route
        log.LM_ERR(f"topology_hiding: {msg.method} from {src}: {e}")
        return -1
    back_si = msg.rcv.socket if msg.rcv is not None else None
    if not _hide_request(msg, lambda m: _hide_contact(
            m, si, back_si, mine, flags, [routes, state["s"]])):
        return -1
    try:
        if "C" in flags:
            _callid_across(msg)
        _route_to(msg, contact, routes)
    except ValueError as e:
        log.LM_ERR(f"topology_hiding: cannot route {msg.method}: {e}")
        return -1
    msg.th_done = True
    _persist(msg)["th"] = 1
    if msg.method != "ACK":
        _arm_reply(msg, {"f": flags, "r": routes, "fr": mine,
                         "fs": _sock_name(msg)})
    return 1


def _callid_across(msg) -> bool:
    """C flag, sequential request: a hidden Call-ID (from the callee side)
    gets the real one back, a real one is hidden; True when it came from
    the callee side."""
    cid = msg.callid or ""
    try:
        orig = _callid.decode(cid) if _callid.is_encoded(cid) else None
    except ThinfoError:
        orig = None
    if orig is not None:
        _set_callid(msg, orig)
        msg.th_callee_callid = cid
        return True
    hidden = _callid.encode(cid)
    _set_callid(msg, hidden)
    msg.th_callee_callid = hidden
    return False


def _route_to(msg, contact: str, routes: List[str]) -> None:
    """The Request-URI becomes the peer's Contact, the route set sealed
    with it goes into Route headers (RFC 3261 §12.2.1.1)."""
    if not routes:
        msg.new_uri = contact
        msg.dst_uri = None
        return
    first = parse_uri(routes[0])
    if first.lr:
        msg.new_uri = contact
        msg.dst_uri = routes[0]
        msg.insert_hdr("Route: " + ", ".join(f"<{r}>" for r in routes))
    else:       # a strict router: it gets the request in its R-URI
        msg.new_uri = routes[0]
        msg.dst_uri = None
        rest = routes[1:] + [contact]
        msg.insert_hdr("Route: " + ", ".join(f"<{r}>" for r in rest))


# ------------------------------------------------------------ dialog mode
#
# With a dialog (created by the script, or by force_dialog), the state
# lives in the dialog's values instead of a token: ``th_flags``, the
# caller's side ``th_caller`` ({t: from-tag, c: Contact, r: route set, s:
# socket}) and the callees' sides ``th_callees`` (the same per To-tag:
# several early dialogs of a forked call); our Contact carries the dialog
# id (``;did=ID``, or ``X.did.ID`` as its user part with flag D).

class _NoDialog(Exception):
    pass


def _dialog_of(msg):
    if _dlg is None:
        return None
    d = _dlg.get_dlg(msg)
    if d is None and force_dialog:
        if _dlg.create_dialog(msg) < 0 or _dlg.get_dlg(msg) is None:
            raise _NoDialog("force_dialog: the dialog cannot be created")
        d = _dlg.get_dlg(msg)
    return d


def _dlg_rr_param() -> str:
    return getattr(_dlg, "rr_param", None) or "did"


def _did_of(ruri) -> Optional[str]:
    rp = _dlg_rr_param()
    v = ruri.param(rp)
    if v:
        return v
    user = ruri.user or ""
    marker = f".{rp}."
    if marker in user:
        return user.rsplit(marker, 1)[1]
    return None


def _fetch(d, name):
    v = _dlg.fetch_dlg_value(d, name)
    return None if v is None else json.loads(v)


def _store(d, name, value) -> None:
    if not _dlg.store_dlg_value(d, name, json.dumps(
            value, separators=(",", ":"))):
        raise ValueError(f"cannot store {name} on the dialog")


def _did_contact(msg, out_si, did: str, flags: str) -> bool:
    c = _one_contact(msg)
    if c is None:
        return True
    rp = _dlg_rr_param()
    if "D" in flags:
        u = c.parsed_uri
        base = u.user if "U" in flags and u.user else "X"
        _put_contact(msg, c, out_si, flags, "", f"{base}.{rp}.{did}")
    else:
        _put_contact(msg, c, out_si, flags, f";{rp}={did}")
    return True


def _th_with_dlg(msg, d, flags: str) -> int:
    to = msg.to
    if to is not None and to.tag:
        log.LM_WARN("topology_hiding: script error: a sequential request "
                    "in dialog mode (use topology_hiding_match())")
        return -1
    if _dlg.fetch_dlg_value(d, "th_flags") is not None:
        log.LM_DBG("topology_hiding: already engaged on this dialog")
        return 1
    # the dialog's table key (what get_dlg_by_key takes back)
    did = d.key.decode()
    try:
        c = _one_contact(msg)
        f = msg.from_
        _store(d, "th_caller", {"t": (f.tag if f else "") or "",
                                "c": c.uri if c else "",
                                "r": _rr_uris(msg), "s": _sock_name(msg)})
        _store(d, "th_callees", {})
        if not _dlg.store_dlg_value(d, "th_flags", flags):
            raise ValueError("cannot store th_flags on the dialog")
        out_si = _out_socket(msg)
        if not _hide_request(msg, lambda m: _did_contact(m, out_si, did,
                                                         flags)):
            return -1
        if "C" in flags:
            hidden = _callid.encode(msg.callid or "")
            _set_callid(msg, hidden)
            msg.th_callee_callid = hidden
    except Exception as e:     # noqa: BLE001 - a bad header: the request fails
        log.LM_ERR(f"topology_hiding: {type(e).__name__}: {e}")
        return -1
    msg.th_done = True
    _persist(msg)["th"] = 1
    _arm_reply(msg, {"f": flags, "r": None, "dlg": did, "upd": "callee"})
    return 1


def _dlg_reply(cell, params, p, rpl, req, routes) -> None:
    """Dialog mode, a reply on its way back: the answering side's Contact
    (and, for the initial INVITE, its route set and socket) into the
    dialog, our Contact with the dialog id in its place."""
    c = _one_contact(rpl)
    if c is None or 300 <= rpl.status < 400:
        return
    did = p["dlg"]
    d = _dlg.get_dlg_by_key(did.encode())
    if d is None:
        raise ValueError(f"dialog {did} is gone")
    to = rpl.to
    tag = (to.tag if to is not None else None) or ""
    if 100 < rpl.status < 300 and tag:
        if p.get("upd") == "caller":
            if rpl.status >= 200:       # a target refresh answered
                caller = _fetch(d, "th_caller")
                caller["c"] = c.uri
                _store(d, "th_caller", caller)
        else:
            callees = _fetch(d, "th_callees") or {}
            leg = callees.get(tag)
            if leg is None or p.get("r") is None:
                back = _reply_socket(cell, params, rpl)
                leg = {"c": c.uri, "r": routes,
                       "s": back.name if back is not None else ""}
            elif rpl.status >= 200:
                leg["c"] = c.uri
            callees[tag] = leg
            _store(d, "th_callees", callees)
    out_si = req.rcv.socket if req.rcv is not None else None
    _did_contact(rpl, out_si, did, p.get("f", ""))


def _match_with_dlg(msg, did: str) -> int:
    src = f"{msg.rcv.src_ip}:{msg.rcv.src_port}" if msg.rcv else "?"
    d = _dlg.get_dlg_by_key(did.encode())
    if d is not None and d.state == _dlg.DLG_STATE_DELETED:
        d = None        # ended: kept a while for late requests, not routed
    flags = _dlg.fetch_dlg_value(d, "th_flags") if d is not None else None
    if flags is None:
        log.LM_ERR(f"topology_hiding: {msg.method} from {src}: no hidden "
                   f"dialog {did!r}")
        return -1
    try:
        caller = _fetch(d, "th_caller")
        callees = _fetch(d, "th_callees") or {}
        f, t = msg.from_, msg.to
        ftag, ttag = (f.tag or "") if f else "", (t.tag or "") if t else ""
        if ftag == caller["t"] and ttag in callees:
            target, side, target_side = callees[ttag], "caller", "callee"
        elif ttag == caller["t"] and ftag in callees:
            target, side, target_side = caller, "callee", "caller"
        else:
            log.LM_ERR(f"topology_hiding: {msg.method} from {src}: its tags "
                       f"are not those of dialog {did}")
            return -1
        si = _socket_named(target["s"])
        if si is None or not target["c"]:
            log.LM_ERR(f"topology_hiding: {msg.method} from {src}: dialog "
                       f"{did} has no way to its {target_side}")
            return -1
        msg.force_send_socket = si
        c = _one_contact(msg)
        if c is not None and msg.method in ("INVITE", "UPDATE"):
            # a target refresh: the sender's new Contact
            if side == "caller":
                caller["c"] = c.uri
                _store(d, "th_caller", caller)
            else:
                callees[ftag]["c"] = c.uri
                _store(d, "th_callees", callees)
        if not _hide_request(msg, lambda m: _did_contact(m, si, did, flags)):
            return -1
        if "C" in flags:
            _callid_across(msg)
        _route_to(msg, target["c"], target["r"])
    except (ValueError, KeyError, TypeError) as e:
        log.LM_ERR(f"topology_hiding: cannot route {msg.method} of dialog "
                   f"{did}: {e}")
        return -1
    # the dialog module's own handling of the request (state, CSeq, the
    # end of the call); a hidden Call-ID from the callee side is not one it
    # can match, so a BYE ends the dialog here
    if getattr(msg, "dlg_key", None) is None and \
            _dlg.match_dialog(msg) < 0 and msg.method == "BYE":
        _dlg.end_dlg(d, "Upstream BYE" if side == "callee"
                     else "Downstream BYE", send_bye=False)
    msg.th_done = True
    _persist(msg)["th"] = 1
    if msg.method != "ACK":
        _arm_reply(msg, {"f": flags, "r": target["r"], "dlg": did,
                         "upd": target_side})
    return 1


# ------------------------------------------------------------ variables

def pv_th_callee_callid(msg, param):
    """$TH_callee_callid: the Call-ID the callee side uses (the hidden one
    with the C flag, else the request's own)."""
    v = getattr(msg, "th_callee_callid", None)
    if v is not None:
        return v
    if getattr(msg, "th_done", False):
        return msg.callid
    return None


# ------------------------------------------------------------ init

def _split(text: str) -> List[str]:
    return [p.strip().lower() for p in text.split(";") if p.strip()]


def mod_init() -> int:
    global _tm, _dlg, _sealer, _callid, _uri_params, _hdr_params
    try:
        _dlg = load_api("dialog", needed_by="topology_hiding")
    except ModuleError:
        _dlg = None
    if force_dialog and _dlg is None:
        log.LM_ERR("topology_hiding: force_dialog needs the dialog module "
                   "(loadmodule \"dialog.so\")")
        return -1
    try:
        _sealer = Sealer(th_contact_encode_passwd,
                         th_contact_encode_scheme.lower())
        _callid = CallidCodec(th_callid_passwd, th_callid_prefix)
    except ValueError as e:
        log.LM_ERR(f"topology_hiding: {e}")
        return -1
    if not th_contact_encode_param or not all(
            ch.isalnum() or ch in "-_." for ch in th_contact_encode_param):
        log.LM_ERR(f"topology_hiding: bad th_contact_encode_param "
                   f"{th_contact_encode_param!r}")
        return -1
    _uri_params = _split(th_passed_contact_uri_params)
    _hdr_params = _split(th_passed_contact_params)
    _tm = load_api("tm", needed_by="topology_hiding")
    _tm.register_tmcb_func(_REPLY_CB, _on_reply)
    _tm.register_tmcb(None, _tm.TMCB_REQUEST_IN, _on_new_transaction)
    return 0


exports = ModuleExports(
    name="topology_hiding",
    deps=DepExport(md=[ModuleDep("tm", DEP_ABORT),
                       ModuleDep("dialog", DEP_SILENT)]),
    cmds=[
        CmdExport("topology_hiding", w_topology_hiding,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT,
                            fixup=_fixup_flags)],
                  REQUEST_ROUTE | FAILURE_ROUTE),
        CmdExport("topology_hiding_match", w_topology_hiding_match, [],
                  REQUEST_ROUTE),
    ],
    params=[
        ParamExport("th_callid_passwd", STR_PARAM, "th_callid_passwd"),
        ParamExport("th_callid_prefix", STR_PARAM, "th_callid_prefix"),
        ParamExport("th_passed_contact_uri_params", STR_PARAM,
                    "th_passed_contact_uri_params"),
        ParamExport("th_passed_contact_params", STR_PARAM,
                    "th_passed_contact_params"),
        ParamExport("force_dialog", INT_PARAM, "force_dialog"),
        ParamExport("th_contact_encode_passwd", STR_PARAM,
                    "th_contact_encode_passwd"),
        ParamExport("th_contact_encode_param", STR_PARAM,
                    "th_contact_encode_param"),
        ParamExport("th_contact_encode_scheme", STR_PARAM,
                    "th_contact_encode_scheme"),
    ],
    items=[PVExport("TH_callee_callid", pv_th_callee_callid)],
    init_f=mod_init,
)
