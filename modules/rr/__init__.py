"""rr: record-routing and loose routing (OpenSIPS's rr module, RFC 3261 §16.6
and §16.12).

``record_route([params])`` puts ``Record-Route: <sip:OUR_ADDR;lr;ftag=..>``
on top of the request's Record-Route set; ``loose_route()`` routes a request
that carries a Route set: it takes off the Route values that are ours,
restores the Request-URI a strict router replaced, and sets ``$du`` to the
next loose-routing hop (or moves a strict next hop into the Request-URI).
Parameters stored in our Record-Route come back in our Route and are read
by ``check_route_param()``, ``is_direction()`` and ``$rr_params``.

The module's API (``load_api``) gives other modules (dialog, uac)
add_rr_param, set_rr_param, check_route_param, is_direction,
get_route_param and register_rrcb.
"""
from __future__ import annotations

import re
from typing import Callable, List, Optional

from opensipy import log
from opensipy.core_cmds import check_self
from opensipy.error import E_BAD_REQ, E_UNSPEC, set_error
from opensipy.sr_module import (BRANCH_ROUTE, CMD_PARAM_REGEX, CMD_PARAM_STR,
                                CMD_PARAM_OPT, FAILURE_ROUTE, INT_PARAM,
                                REQUEST_ROUTE, CmdExport, CmdParam,
                                ModuleExports, ParamExport, PVExport)

append_fromtag = 1
enable_double_rr = 1
add_username = 0
enable_socket_mismatch_warning = 1

# loose_route() results (OpenSIPS's RR_DRIVEN / NOT_RR_DRIVEN)
RR_DRIVEN = 1
NOT_RR_DRIVEN = -1
RR_ERROR = -2

_rrcbs: List[tuple] = []          # (priority, callback, param)
_PARAM_OK = re.compile(r"^(;[^;\s<>,\"\r\n\x00]+)+$")


class _RRState:
    """What rr keeps on a message: the Record-Route we added (to add params
    to it later) and the params of the Route of ours loose_route() took off."""
    __slots__ = ("added", "params", "checkpoint", "routed_params",
                 "routed_uri")

    def __init__(self):
        self.added = False
        self.params = ""              # add_rr_param()s, in order
        self.checkpoint = None        # lump state before our Record-Route
        self.routed_params = None     # "lr;ftag=...;x=y" of our Route
        self.routed_uri = None


def _state(msg) -> _RRState:
    st = getattr(msg, "rr_state", None)
    if st is None:
        st = _RRState()
        msg.rr_state = st
        # a failure_route's request: tm gave back what we kept at t_relay
        kept = (getattr(msg, "persist", None) or {}).get("rr")
        if kept:
            st.added, st.params, st.checkpoint = kept
    return st


def _keep(msg, st: _RRState) -> None:
    """What a failure_route needs to add params to our Record-Route
    (tm keeps ``msg.persist`` with the transaction)."""
    p = msg.__dict__.get("persist")
    if p is None:
        p = msg.persist = {}
    p["rr"] = (st.added, st.params, st.checkpoint)


# ------------------------------------------------------------ record_route

def _sock_uri(si, user: Optional[str]) -> str:
    host = si.adv_host or si.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = si.adv_port or si.port
    u = f"sip:{user}@" if user else "sip:"
    uri = f"{u}{host}:{port}"
    if si.proto != "udp":
        uri += f";transport={si.proto}"
    return uri


def _next_hop_socket(msg, inbound):
    """The socket the request will leave on when its next hop ($du, else
    the R-URI) names a transport other than the inbound one (UDP <-> TCP
    bridging needs the double Record-Route); None otherwise."""
    if inbound is None:
        return None
    from opensipy import forward
    try:
        d = forward.uri_dest(msg.dst_uri or msg.new_uri or msg.parsed_uri)
    except forward.ForwardError:
        return None
    if d[0] is None or d[0] == inbound.proto:
        return None
    try:
        return forward.send_socket(d[0], inbound.af)
    except forward.ForwardError:
        return None


def _rr_lines(msg, st: _RRState) -> Optional[str]:
    rcv = msg.rcv
    inbound = rcv.socket if rcv is not None else None
    outbound = getattr(msg, "force_send_socket", None) or \
        _next_hop_socket(msg, inbound) or inbound
    if inbound is None:
        log.LM_ERR("rr: the request has no receiving socket")
        return None
    user = None
    if add_username:
        pu = msg.parsed_uri
        user = pu.user if pu is not None else None
    params = ";lr"
    if append_fromtag:
        f = msg.from_
        if f is not None and f.tag:
            params += f";ftag={f.tag}"
    params += st.params
    if enable_double_rr and outbound is not inbound and (
            outbound.proto != inbound.proto or outbound.host != inbound.host
            or outbound.port != inbound.port):
        # two interfaces: one Record-Route each, marked r2=on so that
        # loose_route() later takes both off
        params = ";r2=on" + params
        return (f"Record-Route: <{_sock_uri(outbound, user)}{params}>\r\n"
                f"Record-Route: <{_sock_uri(inbound, user)}{params}>\r\n")
    return f"Record-Route: <{_sock_uri(outbound, user)}{params}>\r\n"


def _apply_rr(msg, st: _RRState) -> bool:
    """Insert (or insert again, with the params known now) our
    Record-Route.  Lumps added after ours are added back in order."""
    later = []
    if st.checkpoint is not None:
        # the lump count before ours (msg.lump_checkpoint()); ours is next
        later = msg.lumps()[st.checkpoint + 1:]
        msg.lump_rollback(st.checkpoint)
    lines = _rr_lines(msg, st)
    if lines is None:
        return False
    cp = msg.lump_checkpoint()
    try:
        msg.insert_after(msg.hdrs_start, lines)
        for kind, off, removed, data in later:
            msg._lump(kind, off, removed, data)
    except ValueError as e:
        log.LM_ERR(f"rr: cannot add Record-Route: {e}")
        msg.lump_rollback(cp)
        return False
    st.checkpoint = cp
    st.added = True
    _keep(msg, st)
    return True


def record_route(msg, params: Optional[str] = None) -> int:
    if not msg.is_request:
        return E_UNSPEC
    st = _state(msg)
    if st.added:
        log.LM_ERR("rr: double attempt to record-route")
        return E_UNSPEC
    if params:
        if not _PARAM_OK.match(params):
            log.LM_ERR(f"rr: bad Record-Route parameter {params!r} "
                       f"(';name=value' expected)")
            return E_UNSPEC
        st.params += params
    return 1 if _apply_rr(msg, st) else E_UNSPEC


def record_route_preset(msg, s1: str, s2: Optional[str] = None) -> int:
    """Record-Route with the given address (and a second one, inbound, when
    s2 is given); ``;lr`` and the from-tag are added as record_route()
    does."""
    st = _state(msg)
    if st.added:
        log.LM_ERR("rr: double attempt to record-route")
        return E_UNSPEC
    for s in (s1, s2):
        if s is not None and any(c in s for c in "\r\n\x00<>"):
            log.LM_ERR(f"rr: bad record_route_preset address {s!r}")
            return E_UNSPEC
    params = ";lr"
    if append_fromtag:
        f = msg.from_
        if f is not None and f.tag:
            params += f";ftag={f.tag}"
    params += st.params

    def line(s):
        uri = s if s.lower().startswith(("sip:", "sips:")) else f"sip:{s}"
        return f"Record-Route: <{uri}{params}>\r\n"
    text = line(s1) + (line(s2) if s2 else "")
    if enable_socket_mismatch_warning and msg.rcv is not None:
        host = re.sub(r"^sips?:", "", s1).split(";")[0]
        h, _, p = host.rpartition(":") if host.count(":") == 1 \
            else (host, "", "")
        if not check_self(h or host, int(p) if p.isdigit() else None):
            log.LM_WARN(f"rr: record_route_preset address {s1} is not one "
                        f"of our sockets")
    try:
        msg.insert_after(msg.hdrs_start, text)
    except ValueError as e:
        log.LM_ERR(f"rr: cannot add Record-Route: {e}")
        return E_UNSPEC
    st.added = True
    st.checkpoint = None          # preset: later params are not added to it
    return 1


def add_rr_param(msg, param: str) -> int:
    if not param or not _PARAM_OK.match(param):
        log.LM_ERR(f"rr: bad Record-Route parameter {param!r} "
                   f"(';name=value' expected)")
        return E_UNSPEC
    st = _state(msg)
    st.params += param
    _keep(msg, st)
    if st.added:
        if st.checkpoint is None:
            log.LM_ERR("rr: cannot add a parameter to a preset Record-Route")
            return E_UNSPEC
        return 1 if _apply_rr(msg, st) else E_UNSPEC
    return 1


def set_rr_param(msg, name: str, value: str) -> int:
    """API only: give the Record-Route parameter ``name`` the value
    ``value``, replacing the one set before (a URI parameter must not
    appear twice); add it when absent.  1, or E_UNSPEC."""
    if not re.match(r"[A-Za-z0-9_.!~*'-]+\Z", name) or \
            not _PARAM_OK.match(f";{name}={value}"):
        log.LM_ERR(f"rr: bad Record-Route parameter {name}={value!r}")
        return E_UNSPEC
    st = _state(msg)
    pat = re.compile(r";" + re.escape(name) + r"(=[^;]*)?(?=;|\Z)", re.I)
    if not pat.search(st.params):
        return add_rr_param(msg, f";{name}={value}")
    st.params = pat.sub(lambda m: f";{name}={value}", st.params, count=1)
    _keep(msg, st)
    if st.added:
        if st.checkpoint is None:
            log.LM_ERR("rr: cannot change a parameter of a preset "
                       "Record-Route")
            return E_UNSPEC
        return 1 if _apply_rr(msg, st) else E_UNSPEC
    return 1


# ------------------------------------------------------------ loose_route

def _route_is_ours(uri) -> bool:
    if uri is None:
        return False
    default = 5061 if uri.scheme == "sips" else 5060
    port = uri.port or default
    tr = uri.param("transport")
    return check_self(uri.host, port, tr.lower() if tr else None)


def _remove_routes(msg, routes, drop: set) -> None:
    """Take the Route values at the indexes in ``drop`` off the message: a
    header whose values all go is removed whole, else the values and their
    commas."""
    by_hdr = {}
    for k, r in enumerate(routes):
        by_hdr.setdefault(r.hdr_index, []).append(k)
    headers = msg.headers
    for hidx, ks in by_hdr.items():
        gone = [k for k in ks if k in drop]
        if not gone:
            continue
        if len(gone) == len(ks):
            h = headers[hidx]
            msg.delete(h.start, h.end - h.start)
            continue
        # runs of dropped values inside a header that keeps others
        k = 0
        while k < len(ks):
            if ks[k] not in drop:
                k += 1
                continue
            j = k
            while j + 1 < len(ks) and ks[j + 1] in drop:
                j += 1
            if j + 1 < len(ks):        # values follow: cut up to the next
                start = routes[ks[k]].start
                end = routes[ks[j + 1]].start
            else:                      # the last ones: cut from the comma
                start = routes[ks[k - 1]].end
                end = routes[ks[j]].end
            msg.delete(start, end - start)
            k = j + 1


def _run_rrcbs(msg, params: str) -> None:
    for _, cb, param in _rrcbs:
        try:
            cb(msg, params, param)
        except Exception as e:   # noqa: BLE001 - a callback must not stop routing
            log.LM_ERR(f"rr: callback {cb!r} failed: {e}")


def loose_route(msg) -> int:
    if not msg.is_request:
        return NOT_RR_DRIVEN
    try:
        routes = msg.route
    except Exception as e:       # noqa: BLE001 - ParseError
        log.LM_ERR(f"rr: bad Route header: {e}")
        set_error(msg, E_BAD_REQ)
        return NOT_RR_DRIVEN
    if not routes:
        return NOT_RR_DRIVEN
    st = _state(msg)
    try:
        uris = [r.parsed_uri for r in routes]
    except Exception as e:       # noqa: BLE001 - ParseError
        log.LM_ERR(f"rr: bad Route URI: {e}")
        set_error(msg, E_BAD_REQ)
        return NOT_RR_DRIVEN
    try:
        to = msg.to
    except Exception:            # noqa: BLE001
        to = None
    preloaded = to is None or not to.tag
    drop = set()
    live = list(range(len(routes)))     # indexes still in the route set
    strict_prev = False
    ruri = msg.parsed_uri
    # RFC 3261 §16.4: a strict router before us put our Record-Route URI
    # into the Request-URI; the original is the last Route value
    if ruri is not None and msg.new_uri is None and _is_our_rr_uri(ruri):
        st.routed_params = _uri_params(msg.ruri)
        st.routed_uri = msg.ruri
        last = live.pop()
        drop.add(last)
        msg.new_uri = routes[last].uri
        strict_prev = True
    # our own Route value on top; a second one when we record-routed twice
    # (r2=on: two interfaces)
    ours = 0
    if live and _route_is_ours(uris[live[0]]):
        k = live.pop(0)
        drop.add(k)
        ours = 1
        st.routed_params = _uri_params(routes[k].uri)
        st.routed_uri = routes[k].uri
        if enable_double_rr and uris[k].param("r2") is not None and live \
                and _route_is_ours(uris[live[0]]):
            k2 = live.pop(0)
            drop.add(k2)
            ours = 2
            # the second names the interface the request goes out of
            _force_socket_of(msg, uris[k2])
    if st.routed_params is not None:
        _run_rrcbs(msg, st.routed_params)
    if not live:
        _remove_routes(msg, routes, drop)
        if ours and preloaded and not strict_prev:
            return NOT_RR_DRIVEN       # a preloaded Route naming only us
        return RR_DRIVEN
    nxt = live[0]
    nuri = uris[nxt]
    if nuri is not None and nuri.param("lr") is None:
        # RFC 3261 §16.6 step 6: a strict next hop gets the request in its
        # Request-URI; the Request-URI goes to the end of the route set
        target = msg.new_uri or msg.ruri
        drop.add(nxt)
        _remove_routes(msg, routes, drop)
        msg.append_hdr(f"Route: <{target}>")
        msg.new_uri = routes[nxt].uri
        msg.dst_uri = None
    else:
        _remove_routes(msg, routes, drop)
        msg.dst_uri = routes[nxt].uri
    return RR_DRIVEN


def _force_socket_of(msg, uri) -> None:
    from opensipy import config
    port = uri.port or 5060
    proto = (uri.param("transport") or "udp").lower()
    for si in config.settings.sockets:
        if port == (si.adv_port or si.port) and si.proto == proto and \
                uri.host.strip("[]") in (si.host, si.adv_host):
            msg.force_send_socket = si
            return


def _is_our_rr_uri(uri) -> bool:
    """A URI we put in a Record-Route: ours, with ;lr (we always add it)."""
    return uri.param("lr") is not None and _route_is_ours(uri)


def _uri_params(uri_text: str) -> str:
    """The params of a URI, without the leading ';' (before any '?')."""
    t = uri_text.split("?", 1)[0]
    i = t.find(";")
    return t[i + 1:] if i >= 0 else ""


# ------------------------------------------------------------ route params

def check_route_param(msg, regex) -> int:
    st = getattr(msg, "rr_state", None)
    if st is None or st.routed_params is None:
        log.LM_DBG("rr: check_route_param() without a Route of ours "
                   "(call loose_route() first)")
        return -1
    return 1 if regex.search(st.routed_params) else -1


def get_route_param(msg, name: str) -> Optional[str]:
    """The value of a param of our Route ('' for a flag); None if absent."""
    st = getattr(msg, "rr_state", None)
    if st is None or st.routed_params is None:
        return None
    for p in st.routed_params.split(";"):
        n, _, v = p.partition("=")
        if n.strip().lower() == name.lower():
            return v.strip()
    return None


def is_direction(msg, direction: str) -> int:
    d = direction.strip().lower()
    if d not in ("downstream", "upstream"):
        log.LM_ERR(f"rr: unknown direction {direction!r}")
        return E_UNSPEC
    ftag = get_route_param(msg, "ftag")
    if ftag is None:
        return -1
    f = msg.from_
    downstream = f is not None and f.tag == ftag
    return 1 if (d == "downstream") == downstream else -1


def _fixup_direction(value):
    d = value.strip().lower()
    if d not in ("downstream", "upstream"):
        raise ValueError(f"unknown direction {value!r} (upstream or "
                         f"downstream)")
    return d


def _fixup_rr_param(value):
    if not _PARAM_OK.match(value):
        raise ValueError(f"{value!r} is not ';name=value'")
    return value


def pv_get_rr_params(msg, param):
    st = getattr(msg, "rr_state", None)
    if st is None or st.routed_params is None:
        return None
    return st.routed_params


# ------------------------------------------------------------ API

def register_rrcb(callback: Callable, param=None, prior: int = 0) -> int:
    """``callback(msg, route_params, param)`` runs whenever loose_route()
    finds a Route of ours; lower ``prior`` runs first."""
    _rrcbs.append((prior, callback, param))
    _rrcbs.sort(key=lambda e: e[0])
    return 0


class RRApi:
    add_rr_param = staticmethod(add_rr_param)
    set_rr_param = staticmethod(set_rr_param)
    check_route_param = staticmethod(
        lambda msg, pattern: check_route_param(msg, re.compile(pattern)))
    is_direction = staticmethod(is_direction)
    get_route_param = staticmethod(get_route_param)
    register_rrcb = staticmethod(register_rrcb)

    @property
    def append_fromtag(self):
        return append_fromtag


def load_api():
    return RRApi()


_RR_ROUTES = REQUEST_ROUTE | BRANCH_ROUTE | FAILURE_ROUTE

exports = ModuleExports(
    name="rr",
    cmds=[
        CmdExport("loose_route", loose_route, [], REQUEST_ROUTE),
        CmdExport("record_route", record_route,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT,
                            fixup=_fixup_rr_param)], _RR_ROUTES),
        CmdExport("record_route_preset", record_route_preset,
                  [CmdParam(CMD_PARAM_STR),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _RR_ROUTES),
        CmdExport("add_rr_param", add_rr_param,
                  [CmdParam(CMD_PARAM_STR, fixup=_fixup_rr_param)],
                  _RR_ROUTES),
        CmdExport("check_route_param", check_route_param,
                  [CmdParam(CMD_PARAM_REGEX)], REQUEST_ROUTE),
        CmdExport("is_direction", is_direction,
                  [CmdParam(CMD_PARAM_STR, fixup=_fixup_direction)],
                  REQUEST_ROUTE),
    ],
    params=[
        ParamExport("append_fromtag", INT_PARAM, "append_fromtag"),
        ParamExport("enable_double_rr", INT_PARAM, "enable_double_rr"),
        ParamExport("add_username", INT_PARAM, "add_username"),
        ParamExport("enable_socket_mismatch_warning", INT_PARAM,
                    "enable_socket_mismatch_warning"),
    ],
    items=[PVExport("rr_params", pv_get_rr_params)],
)
