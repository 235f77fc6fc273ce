"""Core pseudo-variables over everything but the message text: the receive
info and sockets, the process and the time, credentials, the run context
($rc, $param, $err.*), ``$var``, ``$avp`` and the branches."""
from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from typing import Dict, Optional

from . import (_ALL, _NO, _OPT, _REQ, Branch, PVError, _def, _simple, _txt,
               branch_flags, ctx, get_avps, script_vars)
from . import __name__ as _pkg_name
from ._msgvars import _index_getter, _runtime_index
from ..transformations import split_top
import sys as _sys


# --- receive info ---------------------------------------------------------------------------------

_PROTO_NAMES = {0: "NONE", 1: "udp", 2: "tcp", 3: "tls", 4: "sctp", 5: "ws",
                6: "wss"}


def _proto_name(p):
    if p is None:
        return None
    if isinstance(p, int):
        return _PROTO_NAMES.get(p, str(p))
    return str(p).lower()


@_simple("si src_ip")
def _get_si(msg):
    r = msg.rcv
    return r.src_ip if r is not None else None


@_simple("sp")
def _get_sp(msg):
    r = msg.rcv
    return int(r.src_port) if r is not None else None


@_simple("Ri")
def _get_Ri(msg):
    r = msg.rcv
    return r.dst_ip if r is not None else None


@_simple("Rp")
def _get_Rp(msg):
    r = msg.rcv
    return int(r.dst_port) if r is not None else None


@_simple("pr proto")
def _get_pr(msg):
    r = msg.rcv
    return _proto_name(r.proto) if r is not None else None


_SOCK_FIELDS = ("ip", "port", "proto", "advertised_ip", "advertised_port",
                "name", "af")


def _sock_field(sock, field):
    """A field of a listening socket (config.SocketInfo or alike)."""
    if sock is None:
        return None
    if field is None:
        n = getattr(sock, "name", None)
        if n:
            return n
        return f"{_proto_name(sock.proto)}:{sock.host}:{sock.port}"
    if field == "ip":
        return sock.host
    if field == "port":
        return int(sock.port)
    if field == "proto":
        return _proto_name(sock.proto)
    if field == "advertised_ip":
        return getattr(sock, "adv_host", None) or None
    if field == "advertised_port":
        p = getattr(sock, "adv_port", None)
        return int(p) if p else None
    if field == "af":
        return "INET6" if ":" in str(sock.host) else "INET"
    return None


def _check_sock_field(arg):
    if arg is None or arg == "":
        return None
    f = arg.strip().lower()
    if f not in _SOCK_FIELDS:
        raise PVError(f"unknown socket field {arg!r} (one of "
                      f"{', '.join(_SOCK_FIELDS)})")
    return f


@_def("socket_in", _OPT)
def _build_socket_in(arg, index, name):
    f = _check_sock_field(arg)

    def g(msg):
        rcv = msg.rcv
        if rcv is None:
            return None
        sock = getattr(rcv, "socket", None)
        if sock is not None:
            return _sock_field(sock, f)
        # no socket object: what the receive info tells
        if f is None:
            return f"{_proto_name(rcv.proto)}:{rcv.dst_ip}:{rcv.dst_port}"
        if f == "ip":
            return rcv.dst_ip
        if f == "port":
            return int(rcv.dst_port)
        if f == "proto":
            return _proto_name(rcv.proto)
        if f == "af":
            return "INET6" if ":" in str(rcv.dst_ip) else "INET"
        return None
    return g, None


@_def("socket_out", _OPT)
def _build_socket_out(arg, index, name):
    f = _check_sock_field(arg)

    def g(msg):
        return _sock_field(getattr(msg, "force_send_socket", None), f)
    return g, None


@_simple("fs")
def _get_fs(msg):
    return _sock_field(getattr(msg, "force_send_socket", None), None)


# --- process, time ----------------------------------------------------------------------------------

@_simple("pp")
def _get_pp(msg):
    return os.getpid()


@_simple("Ts")
def _get_Ts(msg):
    return int(time.time())


@_simple("Tsm")
def _get_Tsm(msg):
    return int((time.time() % 1) * 1000000)


@_simple("TS")
def _get_TS(msg):
    return _sys.modules[_pkg_name].startup_time


@_simple("Tf")
def _get_Tf(msg):
    return time.ctime()


@_def("time", _REQ)
def _build_time(arg, index, name):
    fmt = arg
    try:
        time.strftime(fmt, time.localtime(0))
    except ValueError as e:
        raise PVError(f"bad $time format {fmt!r}: {e}") from None

    def g(msg):
        return time.strftime(fmt, time.localtime())
    return g, None


# --- authentication credentials ------------------------------------------------------------------

@lru_cache(maxsize=256)
def _parse_credentials(body: str) -> Dict[str, str]:
    b = body.strip()
    sp = b.find(" ")
    if sp < 0:
        return {}
    out = {}
    for item in split_top(b[sp + 1:], ","):
        k, eq, v = item.partition("=")
        if not eq:
            continue
        v = v.strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        out[k.strip().lower()] = v
    return out


def _credentials(msg) -> Optional[Dict[str, str]]:
    # Proxy-Authorization first (what a proxy challenges with), then
    # Authorization (REGISTER, www challenges)
    body = msg.hdr("Proxy-Authorization") or msg.hdr("Authorization")
    if not body:
        return None
    return _parse_credentials(body)


def _cred_getter(fn):
    def g(msg):
        c = _credentials(msg)
        if c is None:
            return None
        return fn(c)
    return g


def _cred_user(c):
    u = c.get("username")
    if not u:
        return None
    return u.split("@", 1)[0]


def _cred_domain(c):
    u = c.get("username") or ""
    if "@" in u:
        return u.split("@", 1)[1] or None
    return None


_simple("au")(_cred_getter(_cred_user))
_simple("ad")(_cred_getter(_cred_domain))
_simple("aU")(_cred_getter(lambda c: c.get("username") or None))
_simple("ar")(_cred_getter(lambda c: c.get("realm") or None))
_simple("adu")(_cred_getter(lambda c: c.get("uri") or None))
_simple("an auth.nonce")(_cred_getter(lambda c: c.get("nonce") or None))
_simple("auth.resp")(_cred_getter(lambda c: c.get("response") or None))
_simple("auth.opaque")(_cred_getter(lambda c: c.get("opaque") or None))
_simple("auth.alg")(_cred_getter(lambda c: c.get("algorithm") or None))
_simple("auth.qop")(_cred_getter(lambda c: c.get("qop") or None))
_simple("auth.nc")(_cred_getter(lambda c: c.get("nc") or None))


# --- run context: return code, route parameters, errors ---------------------------------------

@_simple("rc retcode")
def _get_rc(msg):
    return ctx.retcode


@_def("param", _REQ)
def _build_param(arg, index, name):
    try:
        i = int(arg)
    except (TypeError, ValueError):
        key = (arg or "").strip()
        if not _IDENT.match(key):
            raise PVError(f"$param needs a number or a name, not {arg!r}") \
                from None

        def by_name(msg):     # an event_route's named event parameter
            return getattr(ctx.params, "named", {}).get(key)
        return by_name, None
    if i < 1:
        raise PVError(f"$param index starts at 1, not {i}")
    k = i - 1

    def g(msg):
        p = ctx.params
        return p[k] if k < len(p) else None
    return g, None


def _err_getter(field):
    def g(msg):
        return getattr(ctx, field)
    return g


for _f in ("class", "level", "info", "rcode", "rreason"):
    _simple("err." + _f)(_err_getter("err_" + _f))


# --- $var ------------------------------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# an AVP name may also be a number, as OpenSIPS's $avp(1) (sqlops stores
# the columns of an unnamed result in $avp(1), $avp(2), ...)
_AVP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@_def("var", _REQ)
def _build_var(arg, index, name):
    vname = (arg or "").strip()
    if not _IDENT.match(vname):
        raise PVError(f"bad $var name {arg!r}")
    store = script_vars

    def g(msg):
        return store.get(vname)

    def s(msg, value, op):
        if value is None:
            store.pop(vname, None)
        elif isinstance(value, (int, str)):
            store[vname] = value
        else:
            store[vname] = str(value)
    return g, s


# --- $avp ------------------------------------------------------------------------------------------

@_def("avp", _REQ, True)
def _build_avp(arg, index, name):
    aname = (arg or "").strip()
    if not _AVP_NAME.match(aname):
        raise PVError(f"bad $avp name {arg!r}")

    def values(msg):
        d = getattr(msg, "avps", None)
        if not d:
            return ()
        return d.get(aname, ())

    def first(msg):
        d = getattr(msg, "avps", None)
        if not d:
            return None
        vs = d.get(aname)
        return vs[0] if vs else None

    g = _index_getter(values, index, first)

    def s(msg, value, op):
        if value is not None and not isinstance(value, (int, str)):
            value = str(value)
        avps = get_avps(msg)
        vs = avps.get(aname)
        idx = _runtime_index(index, msg)
        if idx is None:
            if op == ":=":
                # replace every value
                if value is None:
                    avps.pop(aname, None)
                else:
                    avps[aname] = [value]
            elif value is None:
                # delete the newest value
                if vs:
                    del vs[0]
                    if not vs:
                        del avps[aname]
            else:
                if vs is None:
                    avps[aname] = [value]
                else:
                    vs.insert(0, value)
            return
        if idx == _ALL:
            if value is None:
                avps.pop(aname, None)
            else:
                avps[aname] = [value]
            return
        if not vs or not -len(vs) <= idx < len(vs):
            raise PVError(f"$avp({aname})[{idx}]: no such value")
        if value is None:
            del vs[idx]
            if not vs:
                del avps[aname]
        else:
            vs[idx] = value
    return g, s


# --- branches ----------------------------------------------------------------------------------------

_BR_FIELDS = ("uri", "duri", "q", "path", "flags", "socket")


def _branch_field(b: Branch, f):
    if f == "uri":
        return b.uri
    if f == "duri":
        return b.dst_uri or None
    if f == "q":
        return None if b.q is None else _txt(b.q)
    if f == "path":
        return b.path or None
    if f == "flags":
        return branch_flags.names(b.bflags or 0)
    if f == "socket":
        return _sock_field(b.socket, None)
    return None


def _branch_values(field):
    def values(msg):
        bs = getattr(msg, "branches", None)
        if not bs:
            return ()
        return [_branch_field(b, field) for b in bs]
    return values


@_def("br", _NO, True)
def _build_br(arg, index, name):
    return _index_getter(_branch_values("uri"), index), None


@_def("branch", _OPT, True)
def _build_branch(arg, index, name):
    f = (arg or "uri").strip().lower()
    if f not in _BR_FIELDS:
        raise PVError(f"unknown branch field {arg!r} (one of "
                      f"{', '.join(_BR_FIELDS)})")
    return _index_getter(_branch_values(f), index), None


