"""topology_hiding: hide the addresses of each side of a call from the
other (OpenSIPS's topology_hiding module, its no-dialog mode).

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
decoded again for the other side); ``D`` (the dialog id in the Contact's
user part) needs the dialog mode, which is not built: it is refused when
the script is checked.

The dialog mode (state kept on the dialog instead of the token, through
``load_api("dialog")``) is not built: see README.md.
"""
from __future__ import annotations

import json
import re
from typing import List, Optional

from opensipy import config, log
from opensipy.core_cmds import check_self
from opensipy.modloader import load_api
from opensipy.parser import HDR_CALLID_T, HDR_RECORDROUTE_T, HDR_VIA_T
from opensipy.parser import parse_uri
from opensipy.sr_module import (CMD_PARAM_OPT, CMD_PARAM_STR, DEP_ABORT,
                                DEP_SILENT, INT_PARAM, REQUEST_ROUTE,
                                STR_PARAM, CmdExport, CmdParam, DepExport, ModuleDep,
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


def _hide_contact(msg, out_si, back_si, routes: List[str], flags: str,
                  far=None) -> bool:
    """Our Contact (at ``out_si``'s address) in place of the message's
    one, sealing the original Contact URI, the route set back to its sender
    and the socket (``back_si``) that sender is reached through; ``far``
    ([routes, socket name]) is the other side's, when known, so a target
    refresh coming back with this token can keep that side's route set.
    No Contact: nothing to do."""
    cts = msg.contacts
    if not cts:
        return True
    if len(cts) != 1 or cts[0].star:
        log.LM_ERR("topology_hiding: more than one Contact (or '*'): "
                   "cannot hide it")
        return False
    c = cts[0]
    u = c.parsed_uri
    if back_si is None or out_si is None:
        log.LM_ERR("topology_hiding: no socket to advertise in the Contact")
        return False
    state = {"c": c.uri, "r": routes, "s": back_si.name, "f": flags}
    if far is not None:
        state["fr"], state["fs"] = far
    token = _sealer.seal(json.dumps(state, separators=(",", ":"))
                         .encode("utf-8", "surrogateescape"))
    user = f"{u.user}@" if "U" in flags and u.user else ""
    scheme = "sips" if u.scheme == "sips" else "sip"
    new = (f"<{scheme}:{user}{_host_port(out_si)};"
           f"{th_contact_encode_param}={token}"
           f"{_param_text(u.params_str, _uri_params)}>"
           f"{_param_text(c.params_str, _hdr_params)}")
    msg.replace(c.start, c.end - c.start, new)
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
    else:
        _tm.register_tmcb(cell, _tm.TMCB_RESPONSE_FWDED, _REPLY_CB, param)


def _on_new_transaction(cell, typ, params) -> None:
    req = params.get("req")
    d = getattr(req, "__dict__", None)
    param = d.pop("th_pending", None) if d else None
    if param is not None:
        _tm.register_tmcb(cell, _tm.TMCB_RESPONSE_FWDED, _REPLY_CB, param)


def _hide_request(msg, flags: str, out_si, routes: List[str],
                  far=None) -> bool:
    """Vias and Record-Routes off, our Contact on (the parts both the
    initial and the sequential requests get)."""
    cp = msg.lump_checkpoint()
    try:
        _delete_hdrs(msg, HDR_VIA_T)
        _delete_hdrs(msg, HDR_RECORDROUTE_T)
        back_si = msg.rcv.socket if msg.rcv is not None else None
        if not _hide_contact(msg, out_si, back_si, routes, flags, far):
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
    if getattr(msg, "th_done", False):
        log.LM_DBG("topology_hiding: already engaged for this request")
        return 1
    try:
        if not msg.is_request:
            return -1
        routes = _rr_uris(msg)
        if not _hide_request(msg, flags, _out_socket(msg), routes):
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
    if msg.method != "ACK":
        _arm_reply(msg, {"f": flags, "r": None, "fr": routes,
                         "fs": _sock_name(msg)})
    return 1


def _fixup_flags(value: str) -> str:
    bad = [c for c in value if c not in FLAGS]
    if bad:
        raise ValueError(f"unknown topology_hiding flag(s) {''.join(bad)!r} "
                         f"(U, C, D)")
    if "D" in value:
        raise ValueError("the D flag (dialog id in the Contact) needs the "
                         "dialog mode, which opensipy does not have yet")
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
        if not 300 <= rpl.status < 400 and rpl.contacts:
            # the answering side is reached through the socket the request
            # went out of (the one the reply came in on)
            idx = params.get("branch", -1)
            back_si = rpl.rcv.socket if rpl.rcv is not None else None
            if back_si is None and 0 <= idx < cell.nbranches:
                k = cell.br[idx].dst.si
                socks = config.settings.sockets
                back_si = socks[k] if 0 <= k < len(socks) else None
            out_si = req.rcv.socket if req.rcv is not None else None
            if not _hide_contact(rpl, out_si, back_si, routes, flags,
                                 [p.get("fr") or [], p.get("fs", "")]):
                raise ValueError("the Contact cannot be hidden")
        if "C" in flags and req.callid:
            _set_callid(rpl, req.callid)
    except Exception as e:     # noqa: BLE001 - never stop tm
        log.LM_ERR(f"topology_hiding: cannot hide the {rpl.status} reply: "
                   f"{type(e).__name__}: {e}")
        rpl.lump_rollback(cp)


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
        token = ruri.param(th_contact_encode_param)
        if token is None or not check_self(ruri.host, ruri.port or (
                5061 if ruri.scheme == "sips" else 5060)):
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
    if not _hide_request(msg, flags, si, mine, [routes, state["s"]]):
        return -1
    try:
        if "C" in flags:
            cid = msg.callid or ""
            try:
                orig = _callid.decode(cid) if _callid.is_encoded(cid) \
                    else None
            except ThinfoError:
                orig = None
            if orig is not None:      # from the callee: its real Call-ID
                _set_callid(msg, orig)
                msg.th_callee_callid = cid
            else:
                hidden = _callid.encode(cid)
                _set_callid(msg, hidden)
                msg.th_callee_callid = hidden
        _route_to(msg, contact, routes)
    except ValueError as e:
        log.LM_ERR(f"topology_hiding: cannot route {msg.method}: {e}")
        return -1
    msg.th_done = True
    if msg.method != "ACK":
        _arm_reply(msg, {"f": flags, "r": routes, "fr": mine,
                         "fs": _sock_name(msg)})
    return 1


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
    global _tm, _sealer, _callid, _uri_params, _hdr_params
    if force_dialog:
        log.LM_ERR("topology_hiding: force_dialog needs the dialog mode, "
                   "which opensipy does not have yet (set it to 0)")
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
                            fixup=_fixup_flags)], REQUEST_ROUTE),
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
