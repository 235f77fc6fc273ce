"""The core script functions, exported as the built-in module ``core``.

=========================================  ===================================
function                                    notes
=========================================  ===================================
``xlog([level,] format)``                   level L_ALERT..L_DBG (default
                                            :data:`xlog_print_level`, L_ERR);
                                            printed when level <=
                                            ``log.state.xlog_level``
``xdbg(format)``                            xlog at L_DBG
``log([level,] text)``                      plain text (no variables), level
                                            an int or L_* name (default L_DBG
                                            = 4); obeys ``log_level``
``setflag/resetflag/isflagset(flag)``       message flags (``msg.flags``);
                                            a name or a bit number, see
                                            :class:`pvar.FlagTable`
``setbflag/resetbflag/isbflagset``          branch flags; ``([idx,] flag)``:
``(setbranchflag ...)``                     idx 0 (default) is the R-URI
                                            branch (``msg.ruri_bflags``), idx
                                            n >= 1 is ``msg.branches[n-1]``
``append_branch([uri[, q]])``               adds a :class:`pvar.Branch` to
                                            ``msg.branches``; without a URI
                                            it copies the current R-URI,
                                            $du, path and branch flags
``force_rport()``                           sets ``msg.force_rport = True``:
                                            the transport adds ``rport=`` to
                                            the top Via of the reply path as
                                            if the client had asked for it
``force_send_socket([proto:]host[:port])``  ``msg.force_send_socket`` = one
                                            of ``config.settings.sockets``;
                                            a socket that is not ours is an
                                            error at fixup time
``is_myself(host_or_uri[, port])``          true for our sockets (host or
                                            advertised host) and ``alias=``
``seturi/sethost/sethostport/setuser``      R-URI rewriting ($ru, $rd ...)
``strip(n)/prefix(s)/revert_uri()``         R-URI user rewriting
``forward([destination])``                   stateless forward (see
                                            :mod:`opensipy.forward`): to the
                                            argument (``host:port``,
                                            ``udp:host:port`` or a SIP URI),
                                            else $du, else the R-URI
=========================================  ===================================
"""
from __future__ import annotations

from . import evi
from . import log as _log
from . import pvar
from .pvar import Branch, branch_flags, get_branches, msg_flags
from .sr_module import (ALL_ROUTES, BRANCH_ROUTE, CMD_PARAM_INT, CMD_PARAM_NO_EXPAND,
                        CMD_PARAM_OPT,
                        CMD_PARAM_STATIC, CMD_PARAM_STR, FAILURE_ROUTE,
                        LOCAL_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE, CmdExport,
                        CmdParam, ModuleError, ModuleExports)
from .parser.uri import parse_uri
from .forward import forward_request
from .cachedb.script import CMDS as _cachedb_cmds

# --- logging ------------------------------------------------------------------


def level_of(value) -> int:
    """A log level from ``L_ERR`` / ``-1`` / ``"4"``; raises ValueError."""
    if isinstance(value, int):
        lv = value
    else:
        t = str(value).strip()
        if t.upper() in _log.SCRIPT_LEVELS:
            return _log.SCRIPT_LEVELS[t.upper()]
        try:
            lv = int(t)
        except ValueError:
            raise ValueError(f"unknown log level {value!r} (use one of "
                             f"{', '.join(_log.SCRIPT_LEVELS)})") from None
    if lv not in _log.LEVEL_NAMES:
        raise ValueError(f"log level {lv} out of range "
                         f"({_log.L_ALERT}..{_log.L_DBG})")
    return lv


# OpenSIPS 3.x has two settings: ``xlog_level`` is the threshold (xlog
# lines above it are not printed; log.state.xlog_level, default L_NOTICE) and
# ``xlog_print_level`` the level of an xlog() without one (default L_ERR).
# The core sets this one from its settings.
xlog_print_level = _log.L_ERR


def w_xlog_1(msg, text):
    level = xlog_print_level
    if level <= _log.state.xlog_level:
        _log.emit(level, text)
    return 1


def w_xlog_2(msg, level, text):
    if level <= _log.state.xlog_level:
        _log.emit(level, text)
    return 1


def w_xdbg(msg, text):
    if _log.L_DBG <= _log.state.xlog_level:
        _log.emit(_log.L_DBG, text)
    return 1


def w_log_1(msg, text):
    _log.log(_log.L_DBG, text)
    return 1


def w_log_2(msg, level, text):
    _log.log(level, text)
    return 1


# --- message flags -------------------------------------------------------------


def fixup_mflag(value) -> int:
    try:
        return msg_flags.bit(value)
    except pvar.PVError as e:
        raise ValueError(str(e)) from None


def fixup_bflag(value) -> int:
    try:
        return branch_flags.bit(value)
    except pvar.PVError as e:
        raise ValueError(str(e)) from None


def w_setflag(msg, bit):
    msg.flags = (msg.flags or 0) | (1 << bit)
    return 1


def w_resetflag(msg, bit):
    msg.flags = (msg.flags or 0) & ~(1 << bit)
    return 1


def w_isflagset(msg, bit):
    return 1 if (msg.flags or 0) & (1 << bit) else -1


# --- branch flags ----------------------------------------------------------------


def _bflags_get(msg, idx):
    if idx == 0:
        return getattr(msg, "ruri_bflags", 0) or 0
    bs = getattr(msg, "branches", None) or ()
    if not 1 <= idx <= len(bs):
        return None
    return bs[idx - 1].bflags or 0


def _bflags_set(msg, idx, value):
    if idx == 0:
        msg.ruri_bflags = value
    else:
        msg.branches[idx - 1].bflags = value


def _bflag_op(msg, idx, bit, op):
    cur = _bflags_get(msg, idx)
    if cur is None:
        _log.LM_ERR(f"branch flag: there is no branch {idx}")
        return -1
    if op == "set":
        _bflags_set(msg, idx, cur | (1 << bit))
        return 1
    if op == "reset":
        _bflags_set(msg, idx, cur & ~(1 << bit))
        return 1
    return 1 if cur & (1 << bit) else -1


def w_setbflag_1(msg, bit):
    return _bflag_op(msg, 0, bit, "set")


def w_setbflag_2(msg, idx, bit):
    return _bflag_op(msg, idx, bit, "set")


def w_resetbflag_1(msg, bit):
    return _bflag_op(msg, 0, bit, "reset")


def w_resetbflag_2(msg, idx, bit):
    return _bflag_op(msg, idx, bit, "reset")


def w_isbflagset_1(msg, bit):
    return _bflag_op(msg, 0, bit, "is")


def w_isbflagset_2(msg, idx, bit):
    return _bflag_op(msg, idx, bit, "is")


# --- branches ----------------------------------------------------------------------


def fixup_q(value):
    """q value ``0``..``1`` (``"0.5"``) -> the text as given; None stays."""
    if value is None:
        return None
    t = str(value).strip()
    try:
        q = float(t)
    except ValueError:
        raise ValueError(f"bad q value {value!r}") from None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q value {value!r} out of range 0..1")
    return t


def w_append_branch(msg, uri=None, q=None):
    if not msg.is_request:
        return -1
    if q is not None:
        try:
            q = fixup_q(q)
        except ValueError as e:
            _log.LM_ERR(f"append_branch: {e}")
            return -1
    if uri is None:
        cur = msg.new_uri or msg.ruri
        b = Branch(cur, msg.dst_uri or None, q,
                   getattr(msg, "path_vec", None),
                   getattr(msg, "ruri_bflags", 0) or 0,
                   getattr(msg, "force_send_socket", None))
    else:
        try:
            parse_uri(uri)
        except ValueError as e:
            _log.LM_ERR(f"append_branch: {e}")
            return -1
        b = Branch(uri, None, q, None, 0, None)
    get_branches(msg).append(b)
    return 1


# --- transport hints ----------------------------------------------------------------


def w_force_rport(msg):
    msg.force_rport = True
    return 1


def _settings():
    # looked up on each use: config.reset() rebinds config.settings
    from . import config
    return config.settings


def _norm_host(h: str) -> str:
    h = h.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    return h


def _split_sock(text: str):
    """``[proto:]host[:port]`` -> (proto|None, host, port|None)."""
    t = text.strip()
    proto = None
    head, sep, rest = t.partition(":")
    if sep and head.lower() in ("udp", "tcp", "tls", "sctp", "ws", "wss",
                                "bin", "hep_udp", "hep_tcp"):
        proto, t = head.lower(), rest
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host, after = t[:end + 1], t[end + 1:]
        port = after[1:] if after.startswith(":") else ""
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host, port = t, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port and not port.isdigit():
        raise ValueError(f"bad port in {text!r}")
    return proto, _norm_host(host), (int(port) if port else None)


def find_socket(text: str):
    """Our listening socket matching ``[proto:]host[:port]`` or None."""
    proto, host, port = _split_sock(text)
    for s in _settings().sockets:
        if proto is not None and str(s.proto).lower() != proto:
            continue
        if port is not None and int(s.port) != port:
            continue
        names = {_norm_host(str(s.host))}
        if getattr(s, "adv_host", None):
            names.add(_norm_host(str(s.adv_host)))
        if host in names:
            return s
    return None


def fixup_send_socket(value):
    try:
        s = find_socket(str(value))
    except ValueError as e:
        raise ModuleError(f"force_send_socket: {e}") from None
    if s is None:
        raise ModuleError(f"force_send_socket: {value!r} is not one of the "
                          f"listening sockets")
    return s


def w_force_send_socket(msg, sock):
    msg.force_send_socket = sock
    return 1


def check_self(host: str, port=None, proto=None) -> bool:
    """Is ``host[:port]`` one of our sockets (real or advertised address) or
    an ``alias=``?  ``port`` None matches any port."""
    h = _norm_host(host)
    st = _settings()
    for s in st.sockets:
        if proto is not None and str(s.proto).lower() != proto:
            continue
        if h == _norm_host(str(s.host)) and (port is None
                                               or int(s.port) == port):
            return True
        ah = getattr(s, "adv_host", None)
        if ah and h == _norm_host(str(ah)):
            ap = getattr(s, "adv_port", None) or s.port
            if port is None or int(ap) == port:
                return True
    for a in st.aliases or ():
        if isinstance(a, (tuple, list)):
            ahost, aport = a[0], (a[1] if len(a) > 1 else None)
        else:
            ahost, aport = getattr(a, "host", str(a)), getattr(a, "port",
                                                                None)
        # config.py stores a missing alias port as 0: any port
        if _norm_host(str(ahost)) == h and (not aport or port is None
                                            or int(aport) == port):
            return True
    return False


def w_is_myself(msg, what, port=None):
    t = what.strip()
    proto = None
    if t[:4].lower() in ("sip:", "sips", "tel:") and ":" in t:
        try:
            u = parse_uri(t)
        except ValueError:
            return -1
        host = u.host
        p = int(u.port) if u.port else None
        tr = u.param("transport")
        proto = tr.lower() if tr else None
    else:
        try:
            proto, host, p = _split_sock(t)
        except ValueError:
            return -1
    if port is not None:
        p = port
    return 1 if check_self(host, p, proto) else -1


# --- R-URI rewriting ------------------------------------------------------------------

_RU = pvar.parse_pv("$ru")
_RU_USER = pvar.parse_pv("$rU")
_RU_HOST = pvar.parse_pv("$rd")
_RU_PORT = pvar.parse_pv("$rp")


def _safe_set(spec, msg, value, fname):
    try:
        spec.set(msg, value)
    except pvar.PVError as e:
        _log.LM_ERR(f"{fname}: {e}")
        return -1
    return 1


def w_seturi(msg, uri):
    return _safe_set(_RU, msg, uri, "seturi")


def w_sethost(msg, host):
    return _safe_set(_RU_HOST, msg, host, "sethost")


def w_sethostport(msg, hostport):
    try:
        _, host, port = _split_sock(hostport)
    except ValueError as e:
        _log.LM_ERR(f"sethostport: {e}")
        return -1
    u = pvar._ruri_uri(msg) if msg.is_request else None
    if u is None:
        _log.LM_ERR("sethostport: no R-URI to change")
        return -1
    if ":" in host:
        host = f"[{host}]"
    msg.new_uri = str(u.copy(host=host, port=str(port) if port else ""))
    return 1


def w_setuser(msg, user):
    return _safe_set(_RU_USER, msg, user, "setuser")


def w_strip(msg, n):
    if n < 0:
        _log.LM_ERR("strip: negative length")
        return -1
    user = _RU_USER.get(msg) or ""
    return _safe_set(_RU_USER, msg, user[n:], "strip")


def w_prefix(msg, text):
    user = _RU_USER.get(msg) or ""
    return _safe_set(_RU_USER, msg, text + user, "prefix")


def w_revert_uri(msg):
    msg.new_uri = None
    return 1


# --- exports ----------------------------------------------------------------------------

_REQ_ROUTES = REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE | LOCAL_ROUTE
_LEVEL = CmdParam(CMD_PARAM_STR, fixup=level_of)
_MFLAG = CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC, fixup=fixup_mflag)
_BFLAG = CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC, fixup=fixup_bflag)
_BIDX = CmdParam(CMD_PARAM_INT)
_S = CmdParam(CMD_PARAM_STR)
_PLAIN = CmdParam(CMD_PARAM_STR | CMD_PARAM_NO_EXPAND)   # log(): no variables


def fixup_forward_dest(value):
    """A constant destination is checked once, when the script is fixed up."""
    from .forward import ForwardError, parse_dest
    try:
        return parse_dest(value)
    except (ForwardError, ValueError) as e:
        raise ValueError(f"bad forward destination {value!r}: {e}") from None


def w_forward(msg, dest=None):
    return forward_request(msg, dest)


def _flag_cmds(name, alias, f1, f2):
    out = []
    for n in (name, alias):
        out.append(CmdExport(n, f1, [_BFLAG], ALL_ROUTES))
        out.append(CmdExport(n, f2, [_BIDX, _BFLAG], ALL_ROUTES))
    return out


core_exports = ModuleExports(
    name="core",
    cmds=[
        CmdExport("xlog", w_xlog_1, [_S], ALL_ROUTES),
        CmdExport("xlog", w_xlog_2, [_LEVEL, _S], ALL_ROUTES),
        CmdExport("xdbg", w_xdbg, [_S], ALL_ROUTES),
        CmdExport("log", w_log_1, [_PLAIN], ALL_ROUTES),
        CmdExport("log", w_log_2, [_LEVEL, _PLAIN], ALL_ROUTES),
        CmdExport("setflag", w_setflag, [_MFLAG], ALL_ROUTES),
        CmdExport("resetflag", w_resetflag, [_MFLAG], ALL_ROUTES),
        CmdExport("isflagset", w_isflagset, [_MFLAG], ALL_ROUTES),
        *_flag_cmds("setbflag", "setbranchflag", w_setbflag_1, w_setbflag_2),
        *_flag_cmds("resetbflag", "resetbranchflag", w_resetbflag_1,
                    w_resetbflag_2),
        *_flag_cmds("isbflagset", "isbranchflagset", w_isbflagset_1,
                    w_isbflagset_2),
        CmdExport("append_branch", w_append_branch,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
                   CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)],
                  REQUEST_ROUTE | FAILURE_ROUTE),
        CmdExport("force_rport", w_force_rport, [],
                  REQUEST_ROUTE | BRANCH_ROUTE | ONREPLY_ROUTE),
        CmdExport("force_send_socket", w_force_send_socket,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC,
                            fixup=fixup_send_socket)],
                  REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE | LOCAL_ROUTE
                  | ONREPLY_ROUTE),
        CmdExport("is_myself", w_is_myself,
                  [_S, CmdParam(CMD_PARAM_INT | CMD_PARAM_OPT)], ALL_ROUTES),
        CmdExport("seturi", w_seturi, [_S], _REQ_ROUTES),
        CmdExport("sethost", w_sethost, [_S], _REQ_ROUTES),
        CmdExport("sethostport", w_sethostport, [_S], _REQ_ROUTES),
        CmdExport("setuser", w_setuser, [_S], _REQ_ROUTES),
        CmdExport("strip", w_strip, [CmdParam(CMD_PARAM_INT)], _REQ_ROUTES),
        CmdExport("prefix", w_prefix, [_S], _REQ_ROUTES),
        CmdExport("revert_uri", w_revert_uri, [], _REQ_ROUTES),
        CmdExport("forward", w_forward,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT,
                            fixup=fixup_forward_dest)],
                  REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE),
        # the cachedb core functions (cache_store, cache_fetch, ...)
        *_cachedb_cmds,
        *evi.cmd_exports(),         # raise_event (opensipy/evi.py)
    ],
)
