"""Pseudo-variables: ``$ru``, ``$hdr(From)[1]``, ``$(ru{uri.user})`` ...

Contract for the script compiler (LANG) and for modules
======================================================

Parsing (compile / fixup time)
------------------------------
* ``parse_pv(text, registry=None) -> PVSpec`` parses one variable token
  (``$ru``, ``$hdr(Via)[-1]``, ``$(var(x){s.substr,1,2}{s.tolower})`` ...).
  Unknown variable, bad name, bad index or unknown transformation raise
  ``PVError(message)``.  Module variables come from
  ``registry.find_pv(name) -> sr_module.PVExport | None``.
* ``parse_format(text, registry=None) -> Format`` for a string literal with
  embedded variables.  LANG passes the *decoded* string contents (escapes
  such as ``\\n`` already resolved by the lexer).  ``Format.is_constant``,
  ``Format.value`` (the text, when constant), ``Format.eval(msg) -> str``
  (a NULL variable prints as ``<null>``, like xlog).

Run time
--------
* Errors at run time: ``PVSpec.set`` raises ``PVError`` for a value it
  cannot store (``$ru = "garbage"``, ``$rd = NULL`` ...).  The compiled
  script catches it, logs it with the script location and goes on (OpenSIPS
  logs a failed assignment and continues).  ``get`` never raises for a
  missing header or field: it returns None (NULL).
* ``PVSpec.get(msg) -> str | int | None`` (None is NULL).
* ``PVSpec.set(msg, value, op="=")``; op is one of ``=``, ``:=``, ``+=``,
  ``-=``; value None assigns NULL (deletes); raises ``PVError`` when the
  variable is not writable.  ``PVSpec.writable``, ``PVSpec.text``.

The per-run context (what LANG maintains while a route runs)
------------------------------------------------------------
Every worker process runs one route at a time, so the context is one
module-level object, :data:`ctx` (an instance of :class:`RunContext`), not a
field of the message (a route may run without a message: startup/timer
routes get a dummy message, and the same message may be routed twice).

LANG's compiled code must:

* after **every function call, route call or ``return``/``exit``** store the
  int result: ``ctx.retcode = rc``  (read by ``$rc`` / ``$retcode``);
* around a **``route(name, a1, a2 ...)`` call** save and restore the route
  parameters (read by ``$param(1)`` ...; index is 1-based; an index past the
  end reads NULL)::

      saved = ctx.params
      ctx.params = (a1, a2)          # evaluated values: str / int / None
      try:
          rc = route_fn(msg)
      finally:
          ctx.params = saved

* set ``ctx.route_type`` (sr_module.REQUEST_ROUTE ...) and ``ctx.route_name``
  when it enters a top-level route (informative; no variable reads them yet).

The core sets ``ctx.err_class``, ``ctx.err_level``, ``ctx.err_info``,
``ctx.err_rcode``, ``ctx.err_rreason`` (read by ``$err.*``) before it runs
``error_route``; ``ctx.reset_error()`` clears them.

Per-message state kept on the message object (plain attributes, created
lazily with ``getattr(msg, name, default)`` so any SipMsg works):

* ``msg.avps``: ``dict name -> list`` of values, newest first (tm may move
  the dict to a transaction and put it back);
* ``msg.branches``: list of :class:`Branch` added by ``append_branch``;
* ``msg.new_uri``, ``msg.dst_uri``, ``msg.flags``, ``msg.ruri_bflags``,
  ``msg.force_rport``, ``msg.force_send_socket`` (parser contract names).

``$var(x)`` values are per process and survive across messages: they live
in :data:`script_vars` (``dict name -> value``).

Variables (OpenSIPS names; NULL = None; "w" = writable)
------------------------------------------------------
R-URI ``$ru`` (w; new_uri when set) ``$rU`` ``$rd`` ``$rp`` (w: rebuild
new_uri; ``$rp`` reads "5060" when absent) ``$rP`` (transport, "UDP" when
absent); original R-URI ``$ou $oU $od $op``; ``$rm`` (a reply: the CSeq
method) ``$rs`` (int) ``$rr`` ``$rv``; ``$du`` (w; NULL clears
msg.dst_uri) ``$dd`` ``$dp`` (w, change $du) ``$dP``; ``$fu $fU $fd $fn $ft``
and ``$tu $tU $td $tn $tt`` (``$fn``/``$tn`` as written, quotes kept);
``$ci`` ``$cs`` (str) ``$cl`` (int) ``$ua`` ``$cT`` ``$rb`` ``$mb`` ``$ml``
(int); ``$hdr(name)[i|-i|*]`` ``$hdrcnt(name)`` (int); ``$ct[i]``,
``$ct.fields(name|uri|q|expires|methods|received|params)[i]``; ``$ai``
``$pi`` ``$re`` ``$rt`` ``$di`` (URIs of P-Asserted-Identity,
P-Preferred-Identity, Remote-Party-ID, Refer-To, Diversion); ``$si``
(``$src_ip`` alias) ``$sp`` ``$Ri`` ``$Rp`` (ints for ports) ``$pr``/``$proto``
(lower case), ``$socket_in[(field)]``, ``$socket_out[(field)]``, ``$fs``;
credentials (Proxy-Authorization first, then Authorization) ``$au $ad $aU
$ar $adu $an $auth.nonce $auth.resp $auth.opaque $auth.alg $auth.qop
$auth.nc``; ``$mf`` ``$bf`` (set flag names, space separated, read-only as
in OpenSIPS 3.x); ``$br[i]`` and ``$branch(uri|duri|q|path|flags|socket)[i]``
over msg.branches; ``$pp`` ``$time(fmt)`` ``$Ts`` ``$Tsm`` ``$TS`` ``$Tf``;
``$rc``/``$retcode`` ``$param(i)`` ``$err.class|level|info|rcode|rreason``;
``$var(name)`` (w) ``$avp(name)[i|*]`` (w).

Assignment: ``=`` and ``:=`` store; on ``$avp`` ``=`` adds a value on top,
``:=`` replaces them all, ``[i] =`` replaces the i-th, ``= NULL`` deletes the
newest (``[i]``: the i-th, ``[*]``: all).  ``+=``/``-=`` compute
``current + value`` (ints add, otherwise text concatenates) / ``current -
value`` (ints) and assign it with ``=`` (so on an avp the sum is pushed).

``$T_*`` and other variables owned by a module that is not in the registry
(tm) are installed with :func:`register_core_pv`.
"""
from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import transformations as _tr
from .transformations import (TrError, Uri, parse_nameaddr, parse_uri,
                              split_top)

__all__ = ["PVError", "PVSpec", "Format", "RunContext", "ctx", "script_vars",
           "parse_pv", "parse_format", "register_core_pv", "core_pv_names",
           "Branch", "FlagTable", "msg_flags", "branch_flags", "get_avps",
           "get_branches", "NULL_TEXT"]

NULL_TEXT = "<null>"


class PVError(Exception):
    """A pseudo-variable cannot be parsed, or cannot be written."""


class RunContext:
    """The state of the route that runs now in this process (see the
    module docstring for who sets what)."""
    __slots__ = ("retcode", "params", "route_type", "route_name",
                 "err_class", "err_level", "err_info", "err_rcode",
                 "err_rreason")

    def __init__(self):
        self.retcode = 0
        self.params = ()
        self.route_type = 1
        self.route_name = None
        self.reset_error()

    def reset_error(self):
        self.err_class = None
        self.err_level = None
        self.err_info = None
        self.err_rcode = None
        self.err_rreason = None


ctx = RunContext()

# $var(x): per process, kept across messages
script_vars: Dict[str, Any] = {}

# the server's start time ($TS); the attendant may overwrite it at start
startup_time = int(time.time())


# --- flags: names <-> bit numbers ------------------------------------------

class FlagTable:
    """Flag names of one kind (message or branch flags) mapped to bits.

    OpenSIPS 3.x lets the script name flags (``setflag(NAT)``); names get
    bits in first-use order.  A name made of digits is the bit number itself
    (``setflag(19)``), and named flags skip bits already taken by numbers.
    At most 32 flags."""
    MAX = 32

    def __init__(self, kind: str):
        self.kind = kind
        self.by_name: Dict[str, int] = {}
        self.used = 0          # bitmask of every bit handed out or numeric

    def bit(self, name) -> int:
        """Bit number for a flag name or number; raises PVError when the
        32 bits are used up or a number is out of range."""
        if isinstance(name, int) or (isinstance(name, str)
                                     and name.strip().isdigit()):
            n = int(name)
            if not 0 <= n < self.MAX:
                raise PVError(f"{self.kind} flag {n} out of range "
                              f"(0..{self.MAX - 1})")
            self.used |= 1 << n
            return n
        key = str(name).strip()
        if not key:
            raise PVError(f"empty {self.kind} flag name")
        n = self.by_name.get(key)
        if n is not None:
            return n
        for n in range(self.MAX):
            if not self.used & (1 << n):
                self.used |= 1 << n
                self.by_name[key] = n
                return n
        raise PVError(f"too many {self.kind} flags (at most {self.MAX}); "
                      f"cannot add {key!r}")

    def name_of(self, bit: int) -> str:
        for k, v in self.by_name.items():
            if v == bit:
                return k
        return str(bit)

    def names(self, mask: int) -> str:
        """The set flags as a space-separated list (what $mf/$bf print)."""
        out = []
        for n in range(self.MAX):
            if mask & (1 << n):
                out.append(self.name_of(n))
        return " ".join(out)

    def reset(self):
        self.by_name.clear()
        self.used = 0


msg_flags = FlagTable("message")
branch_flags = FlagTable("branch")


# --- per-message state helpers ---------------------------------------------

class Branch:
    """One extra branch of a request (append_branch, lookup ...)."""
    __slots__ = ("uri", "dst_uri", "q", "path", "bflags", "socket")

    def __init__(self, uri, dst_uri=None, q=None, path=None, bflags=0,
                 socket=None):
        self.uri = uri
        self.dst_uri = dst_uri
        self.q = q
        self.path = path
        self.bflags = bflags
        self.socket = socket

    def __repr__(self):
        return (f"Branch({self.uri!r}, dst_uri={self.dst_uri!r}, q={self.q!r},"
                f" path={self.path!r}, bflags={self.bflags})")


def get_avps(msg) -> Dict[str, list]:
    d = getattr(msg, "avps", None)
    if d is None:
        d = {}
        msg.avps = d
    return d


def get_branches(msg) -> List[Branch]:
    b = getattr(msg, "branches", None)
    if b is None:
        b = []
        msg.branches = b
    return b


# --- the spec -----------------------------------------------------------------

_ALL = "*"


class PVSpec:
    """A parsed variable.  ``get(msg)`` is bound at parse time to a closure
    that reads the value directly; ``set(msg, value, op)`` writes it."""
    __slots__ = ("text", "name", "arg", "index", "get", "writable", "_setf",
                 "param", "_values")

    def __init__(self, text, name, arg, index, get, setf, param=None,
                 values=None):
        self.text = text
        self.name = name
        self.arg = arg
        self.index = index
        self.get = get
        self._setf = setf
        self.writable = setf is not None
        self.param = param
        self._values = values

    def get_all(self, msg) -> list:
        """Every value as a list: for ``$avp(x)[*]``, ``$hdr(Via)[*]``,
        ``$ct[*]``, ``$br[*]`` ... the separate values (newest first for
        avps); for any other variable ``[value]`` or ``[]`` when NULL
        (what ``for ($var(v) in $avp(x)[*])`` iterates)."""
        if self._values is not None and self.index == _ALL:
            return list(self._values(msg))
        v = self.get(msg)
        return [] if v is None else [v]

    def set(self, msg, value, op: str = "=") -> None:
        setf = self._setf
        if setf is None:
            raise PVError(f"variable {self.text} is read-only")
        if op == "=" or op == ":=":
            setf(msg, value, op)
        elif op == "+=" or op == "-=":
            setf(msg, _arith(op, self.get(msg), value, self.text), "=")
        else:
            raise PVError(f"bad assignment operator {op!r}")

    def __repr__(self):
        return f"PVSpec({self.text!r})"

    def __str__(self):
        return self.text


def _arith(op, cur, value, text):
    if value is None:
        raise PVError(f"{text} {op} NULL")
    if op == "+=":
        if cur is None:
            return value
        if isinstance(cur, int) and isinstance(value, int):
            return cur + value
        return _txt(cur) + _txt(value)
    # -=
    if cur is None:
        cur = 0
    try:
        return _as_int(cur) - _as_int(value)
    except ValueError:
        raise PVError(f"{text} -= needs integers") from None


def _txt(v) -> str:
    return v if isinstance(v, str) else str(v)


def _as_int(v) -> int:
    if isinstance(v, int):
        return v
    return int(str(v).strip())


# --- registry of variable definitions -------------------------------------------
#
# A definition is (arg, index, build):
#   arg:   "none" | "required" | "optional"   the (...) part
#   index: False | True                       whether [n] is accepted
#   build(arg, index, spec_name) -> (get, set|None)

_NO, _REQ, _OPT = "none", "required", "optional"
_DEFS: Dict[str, Tuple[str, bool, Callable]] = {}
_EXTRA: Dict[str, Any] = {}    # register_core_pv: name -> PVExport-like


def _def(names, arg=_NO, index=False):
    def deco(build):
        for n in names.split():
            _DEFS[n] = (arg, index, build)
        return build
    return deco


def _simple(names, setf=None):
    """Register a variable that is a plain getter ``f(msg)``."""
    def deco(getf):
        def build(arg, index, name):
            return getf, setf
        for n in names.split():
            _DEFS[n] = (_NO, False, build)
        return getf
    return deco


class _PVExportLike:
    __slots__ = ("name", "getf", "setf", "parse_name", "parse_index")

    def __init__(self, name, getf, setf=None, parse_name=None,
                 parse_index=None):
        self.name = name
        self.getf = getf
        self.setf = setf
        self.parse_name = parse_name
        self.parse_index = parse_index


def register_core_pv(name, getf=None, setf=None, parse_name=None,
                     parse_index=None) -> None:
    """Install a variable the core parses as its own (``$T_reply_code`` ...
    filled by tm).  ``name`` may be an ``sr_module.PVExport`` (then the other
    arguments are ignored).  ``getf(msg, param) -> value``; ``setf(msg,
    param, op, value)``; ``param`` is ``parse_name(arg)`` (or the raw
    ``(arg)`` text, or None).  Re-registering a name replaces it (tests,
    module reload); a name the core already defines cannot be taken."""
    if not isinstance(name, str):
        pv = name
        name, getf, setf = pv.name, pv.getf, pv.setf
        parse_name = pv.parse_name
        parse_index = getattr(pv, "parse_index", None)
    if name in _DEFS:
        raise PVError(f"${name} is a core variable")
    if not callable(getf):
        raise PVError(f"${name}: getf is not callable")
    _EXTRA[name] = _PVExportLike(name, getf, setf, parse_name, parse_index)
    _lookup_cache.clear()


def unregister_core_pv(name: str) -> None:
    _EXTRA.pop(name, None)
    _lookup_cache.clear()


def core_pv_names() -> List[str]:
    return sorted(list(_DEFS) + list(_EXTRA))


# --- R-URI -----------------------------------------------------------------------

def _ruri_text(msg):
    if not msg.is_request:
        return None
    return msg.new_uri or msg.ruri


def _ruri_uri(msg) -> Optional[Uri]:
    """My Uri for the current R-URI (new_uri when set)."""
    t = _ruri_text(msg)
    if not t:
        return None
    try:
        return parse_uri(t)
    except ValueError:
        return None


def _set_ruri(msg, value, op):
    if value is None:
        raise PVError("cannot set $ru to NULL")
    v = _txt(value)
    try:
        parse_uri(v)
    except ValueError as e:
        raise PVError(f"$ru: {e}") from None
    if not msg.is_request:
        raise PVError("$ru: not a request")
    msg.new_uri = v


def _ruri_part_setter(field, var):
    def setf(msg, value, op):
        if not msg.is_request:
            raise PVError(f"{var}: not a request")
        u = _ruri_uri(msg)
        if u is None:
            raise PVError(f"{var}: the R-URI cannot be parsed")
        if value is None or value == "":
            if field == "host":
                raise PVError(f"{var}: the host cannot be NULL")
            v = ""
        else:
            v = _txt(value)
            if field == "port" and not v.isdigit():
                raise PVError(f"{var}: bad port {v!r}")
            if field == "host" and ":" in v and not v.startswith("["):
                v = f"[{v}]"                 # an IPv6 address
        changes = {field: v}
        if field == "user" and not v:
            changes["passwd"] = ""
        msg.new_uri = str(u.copy(**changes))
    return setf


@_simple("ru", _set_ruri)
def _get_ru(msg):
    if not msg.is_request:
        return None
    return msg.new_uri or msg.ruri


def _get_rU(msg):
    if not msg.is_request:
        return None
    if msg.new_uri:
        u = _ruri_uri(msg)
        return (u.user or None) if u is not None else None
    u = msg.parsed_uri
    return (u.user or None) if u is not None else None


def _get_rd(msg):
    if not msg.is_request:
        return None
    if msg.new_uri:
        u = _ruri_uri(msg)
        return (u.host or None) if u is not None else None
    u = msg.parsed_uri
    return (u.host or None) if u is not None else None


def _get_rp(msg):
    if not msg.is_request:
        return None
    if msg.new_uri:
        u = _ruri_uri(msg)
    else:
        u = msg.parsed_uri
    if u is None:
        return None
    return str(u.port) if u.port else "5060"


def _get_rP(msg):
    u = _ruri_uri(msg)
    if u is None:
        return None
    return u.param("transport") or "UDP"


_simple("rU", _ruri_part_setter("user", "$rU"))(_get_rU)
_simple("rd", _ruri_part_setter("host", "$rd"))(_get_rd)
_simple("rp", _ruri_part_setter("port", "$rp"))(_get_rp)
_simple("rP")(_get_rP)


def _orig_uri(msg):
    if not msg.is_request:
        return None
    try:
        return parse_uri(msg.ruri)
    except ValueError:
        return None


@_simple("ou")
def _get_ou(msg):
    return msg.ruri if msg.is_request else None


@_simple("oU")
def _get_oU(msg):
    u = _orig_uri(msg)
    return (u.user or None) if u is not None else None


@_simple("od")
def _get_od(msg):
    u = _orig_uri(msg)
    return (u.host or None) if u is not None else None


@_simple("op")
def _get_op(msg):
    u = _orig_uri(msg)
    if u is None:
        return None
    return u.port or "5060"


# --- first line ------------------------------------------------------------------

@_simple("rm")
def _get_rm(msg):
    if msg.is_request:
        return msg.method
    cs = msg.cseq
    return cs.method if cs is not None else None


@_simple("rs")
def _get_rs(msg):
    return None if msg.is_request else int(msg.status)


@_simple("rr")
def _get_rr(msg):
    return None if msg.is_request else msg.reason


@_simple("rv")
def _get_rv(msg):
    return msg.version


# --- destination URI ------------------------------------------------------------------

def _set_du(msg, value, op):
    if value is None or value == "":
        msg.dst_uri = None
        return
    v = _txt(value)
    try:
        parse_uri(v)
    except ValueError as e:
        raise PVError(f"$du: {e}") from None
    msg.dst_uri = v


def _du_uri(msg):
    d = msg.dst_uri
    if not d:
        return None
    try:
        return parse_uri(d)
    except ValueError:
        return None


def _du_part_setter(field, var):
    def setf(msg, value, op):
        u = _du_uri(msg)
        if u is None:
            raise PVError(f"{var}: no destination URI ($du) to change")
        v = "" if value is None else _txt(value)
        if field == "host" and not v:
            raise PVError(f"{var}: the host cannot be NULL")
        if field == "port" and v and not v.isdigit():
            raise PVError(f"{var}: bad port {v!r}")
        if field == "host" and ":" in v and not v.startswith("["):
            v = f"[{v}]"
        msg.dst_uri = str(u.copy(**{field: v}))
    return setf


@_simple("du", _set_du)
def _get_du(msg):
    return msg.dst_uri or None


@_simple("dd", _du_part_setter("host", "$dd"))
def _get_dd(msg):
    u = _du_uri(msg)
    return (u.host or None) if u is not None else None


@_simple("dp", _du_part_setter("port", "$dp"))
def _get_dp(msg):
    u = _du_uri(msg)
    if u is None:
        return None
    return u.port or "5060"


@_simple("dP")
def _get_dP(msg):
    u = _du_uri(msg)
    if u is None:
        return None
    return u.param("transport") or "UDP"


# --- From / To ----------------------------------------------------------------------

def _party_getters(attr, letter):
    def uri(msg):
        b = getattr(msg, attr)
        return b.uri if b is not None else None

    def user(msg):
        b = getattr(msg, attr)
        if b is None or b.parsed_uri is None:
            return None
        return b.parsed_uri.user or None

    def host(msg):
        b = getattr(msg, attr)
        if b is None or b.parsed_uri is None:
            return None
        return b.parsed_uri.host or None

    def display(msg):
        # as written, quotes included, like OpenSIPS's to_body.display
        b = getattr(msg, attr)
        if b is None:
            return None
        d = getattr(b, "display_raw", None)
        if d is None:
            d = b.display
        return d.strip() or None if d else None

    def tag(msg):
        b = getattr(msg, attr)
        return (b.tag or None) if b is not None else None

    _simple(letter + "u")(uri)
    _simple(letter + "U")(user)
    _simple(letter + "d")(host)
    _simple(letter + "n")(display)
    _simple(letter + "t")(tag)


_party_getters("from_", "f")
_party_getters("to", "t")


# --- other headers ------------------------------------------------------------------------

@_simple("ci")
def _get_ci(msg):
    return msg.callid


@_simple("cs")
def _get_cs(msg):
    cs = msg.cseq
    return str(cs.num) if cs is not None else None


@_simple("cl")
def _get_cl(msg):
    n = msg.content_length
    return None if n is None else int(n)


@_simple("ua")
def _get_ua(msg):
    return msg.hdr("User-Agent")


@_simple("cT")
def _get_cT(msg):
    return msg.hdr("Content-Type")


def _first_uri_of(hname):
    def g(msg):
        b = msg.hdr(hname)
        if not b:
            return None
        try:
            return parse_nameaddr(split_top(b)[0]).uri
        except (ValueError, IndexError):
            return None
    return g


_simple("ai")(_first_uri_of("P-Asserted-Identity"))
_simple("pi")(_first_uri_of("P-Preferred-Identity"))
_simple("re")(_first_uri_of("Remote-Party-ID"))
_simple("rt")(_first_uri_of("Refer-To"))
_simple("di")(_first_uri_of("Diversion"))


@_simple("rb")
def _get_rb(msg):
    b = msg.body
    if not b:
        return None
    return b.decode("utf-8", "replace") if isinstance(b, (bytes, bytearray,
                                                          memoryview)) \
        else str(b)


def _msg_buf(msg):
    # SipMsg.raw: the octets of this message (contract draft said "buf")
    b = getattr(msg, "raw", None)
    if b is None:
        b = getattr(msg, "buf", None)
    if b is None:
        return None
    return bytes(b)


@_simple("mb")
def _get_mb(msg):
    b = _msg_buf(msg)
    return None if b is None else b.decode("utf-8", "replace")


@_simple("ml")
def _get_ml(msg):
    b = _msg_buf(msg)
    return None if b is None else len(b)


@_simple("mf")
def _get_mf(msg):
    return msg_flags.names(msg.flags or 0)


@_simple("bf")
def _get_bf(msg):
    return branch_flags.names(getattr(msg, "ruri_bflags", 0) or 0)


# --- generic index helper -------------------------------------------------------------------

def _index_getter(values, index, first=None):
    """Build ``get(msg)`` over ``values(msg) -> list`` for an index that is
    None (the first value, or ``first(msg)`` when given), an int, ``*``
    (all, joined with ", ") or a PVSpec evaluated at run time."""
    if index is None:
        if first is not None:
            return first

        def g0(msg):
            vs = values(msg)
            return vs[0] if vs else None
        return g0
    if index == _ALL:
        def gall(msg):
            vs = values(msg)
            if not vs:
                return None
            return ", ".join("" if v is None else _txt(v) for v in vs)
        gall.values = values
        return gall
    if isinstance(index, int):
        i = index

        def gi(msg):
            vs = values(msg)
            if -len(vs) <= i < len(vs):
                return vs[i]
            return None
        return gi
    ispec = index

    def gd(msg):
        iv = ispec.get(msg)
        try:
            i = _as_int(iv)
        except (TypeError, ValueError):
            return None
        vs = values(msg)
        if -len(vs) <= i < len(vs):
            return vs[i]
        return None
    return gd


def _runtime_index(index, msg):
    if index is None or index == _ALL or isinstance(index, int):
        return index
    iv = index.get(msg)
    try:
        return _as_int(iv)
    except (TypeError, ValueError):
        raise PVError(f"index {index.text} is not an integer") from None


# --- $hdr / $hdrcnt -----------------------------------------------------------------------------

def _hdr_name(arg):
    if not arg or not re.match(r"^[A-Za-z0-9!%*_.+`'~-]+$", arg):
        raise PVError(f"bad header name {arg!r}")
    return arg


@_def("hdr", _REQ, True)
def _build_hdr(arg, index, name):
    h = _hdr_name(arg)

    def values(msg):
        return msg.hdrs(h)

    def first(msg):
        # the parsed view of a message does not change (edits are lumps),
        # so the first body is cached on the message: later reads of the
        # same $hdr are a dict lookup
        try:
            cache = msg._pv_hdr
        except AttributeError:
            cache = msg._pv_hdr = {}
        try:
            return cache[h]
        except KeyError:
            v = cache[h] = msg.hdr(h)
            return v
    return _index_getter(values, index, first), None


@_def("hdrcnt", _REQ)
def _build_hdrcnt(arg, index, name):
    h = _hdr_name(arg)

    def g(msg):
        return len(msg.hdrs(h))
    return g, None


# --- Contact ------------------------------------------------------------------------------------

def _contacts(msg) -> List[str]:
    out = []
    for body in msg.hdrs("Contact"):
        out.extend(split_top(body))
    return out


@_def("ct", _NO, True)
def _build_ct(arg, index, name):
    return _index_getter(_contacts, index), None


_CT_FIELDS = ("name", "uri", "q", "expires", "methods", "received", "params")


@_def("ct.fields", _REQ, True)
def _build_ct_fields(arg, index, name):
    f = (arg or "").strip().lower()
    if f not in _CT_FIELDS:
        raise PVError(f"unknown Contact field {arg!r} (one of "
                      f"{', '.join(_CT_FIELDS)})")

    def field_of(c):
        if c == "*":
            return None
        try:
            na = parse_nameaddr(c)
        except ValueError:
            return None
        if f == "name":
            return na.name or None
        if f == "uri":
            return na.uri
        if f == "params":
            return na.params or None
        v = na.param(f)
        return v or None

    def values(msg):
        return [field_of(c) for c in _contacts(msg)]
    return _index_getter(values, index), None


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
    return startup_time


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
        raise PVError(f"$param index must be a number, not {arg!r}") \
            from None
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
    if not _IDENT.match(aname):
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


# --- parsing ------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_lookup_cache: Dict[Tuple[str, int], Any] = {}


def _lookup(name: str, registry):
    """('core', def) | ('extra', pvexport) | ('module', pvexport) | None"""
    d = _DEFS.get(name)
    if d is not None:
        return ("core", d)
    e = _EXTRA.get(name)
    if e is not None:
        return ("extra", e)
    if registry is not None:
        pv = registry.find_pv(name)
        if pv is not None:
            return ("module", pv)
    return None


def _match_close(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at ``i`` (nesting of (), {}, []
    is tracked; quotes are not special)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = [close_ch]
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")}]":
            if ch != stack[-1]:
                raise PVError(f"unbalanced {ch!r} in {text!r}")
            stack.pop()
            if not stack:
                return j
        j += 1
    raise PVError(f"missing {close_ch!r} in {text!r}")


def _scan_name(text, i, registry, strict):
    """Match a variable name at ``i``; back off at dots to the longest
    known name.  Returns (name, kind, end) or raises PVError."""
    m = _NAME_RE.match(text, i)
    if not m:
        raise PVError(f"missing variable name after '$' in {text!r}")
    full = m.group(0)
    cand = full
    while True:
        found = _lookup(cand, registry)
        if found is not None:
            return cand, found, i + len(cand)
        dot = cand.rfind(".")
        if dot < 0:
            break
        cand = cand[:dot]
    hint = ""
    if full.startswith("T_"):
        hint = " (the $T_* variables come from the tm module)"
    raise PVError(f"unknown variable ${full}{hint}")


def _parse_index(text, registry) -> Any:
    t = text.strip()
    if t == "*":
        return _ALL
    if t.startswith("$"):
        return parse_pv(t, registry)
    try:
        return int(t)
    except ValueError:
        raise PVError(f"bad index [{text}]") from None


def _scan_pv(text: str, i: int, registry) -> Tuple[PVSpec, int]:
    """Parse the variable starting at ``text[i] == '$'``; return it and the
    index just after it."""
    n = len(text)
    j = i + 1
    if j < n and text[j] == "(":
        close = _match_close(text, j, "(", ")")
        inner = text[j + 1:close]
        spec = _parse_inner(inner, registry, text[i:close + 1], True)
        return spec, close + 1
    name, found, k = _scan_name(text, j, registry, False)
    argspec, takes_index = _shape(found)
    arg = None
    if k < n and text[k] == "(" and argspec != _NO:
        close = _match_close(text, k, "(", ")")
        arg = text[k + 1:close]
        k = close + 1
    index = None
    if k < n and text[k] == "[" and takes_index:
        close = _match_close(text, k, "[", "]")
        index = _parse_index(text[k + 1:close], registry)
        k = close + 1
    spec = _build(name, found, arg, index, text[i:k], registry)
    return spec, k


def _shape(found):
    kind, d = found
    if kind == "core":
        return d[0], d[1]
    # module / extra variables: an argument is allowed when they parse one
    # (or always: many take an optional name); an index when parse_index
    return _OPT, getattr(d, "parse_index", None) is not None


def _parse_inner(inner: str, registry, text: str, allow_tr: bool) -> PVSpec:
    """``name(arg)[idx]{tr}{tr}`` (the inside of ``$( ... )``)."""
    s = inner.strip()
    name, found, k = _scan_name(s, 0, registry, True)
    argspec, takes_index = _shape(found)
    arg = None
    n = len(s)
    if k < n and s[k] == "(":
        if argspec == _NO:
            raise PVError(f"${name} takes no argument: {text}")
        close = _match_close(s, k, "(", ")")
        arg = s[k + 1:close]
        k = close + 1
    index = None
    if k < n and s[k] == "[":
        if not takes_index:
            raise PVError(f"${name} takes no index: {text}")
        close = _match_close(s, k, "[", "]")
        index = _parse_index(s[k + 1:close], registry)
        k = close + 1
    trs = []
    while k < n and s[k] == "{":
        close = _match_close(s, k, "{", "}")
        body = s[k + 1:close]
        try:
            trs.append(_tr.compile_tr(body, lambda t: parse_pv(t, registry)))
        except TrError as e:
            raise PVError(f"{e} in {text}") from None
        k = close + 1
    if k != n:
        raise PVError(f"unexpected {s[k:]!r} in {text}")
    base = _build(name, found, arg, index, text, registry)
    if not trs:
        return base
    bget = base.get
    if len(trs) == 1:
        t0 = trs[0]

        def get(msg):
            return t0(msg, bget(msg))
    else:
        def get(msg):
            v = bget(msg)
            for t in trs:
                v = t(msg, v)
            return v
    return PVSpec(text, name, arg, index, get, None, base.param)


def _build(name, found, arg, index, text, registry) -> PVSpec:
    kind, d = found
    if kind == "core":
        argspec, takes_index, build = d
        if argspec == _REQ and (arg is None or arg.strip() == ""):
            raise PVError(f"${name} needs a name: ${name}(...)")
        if argspec == _NO and arg is not None:
            raise PVError(f"${name} takes no argument: {text}")
        if index is not None and not takes_index:
            raise PVError(f"${name} takes no index: {text}")
        get, setf = build(arg, index, name)
        return PVSpec(text, name, arg, index, get, setf,
                      values=getattr(get, "values", None))
    # module-exported or registered variable
    pv = d
    param = arg
    if pv.parse_name is not None:
        try:
            param = pv.parse_name(arg)
        except Exception as e:
            raise PVError(f"bad name in {text}: {e}") from None
    if index is not None:
        pidx = pv.parse_index
        if pidx is None:
            raise PVError(f"${name} takes no index: {text}")
        if isinstance(index, PVSpec):
            raise PVError(f"${name}: a variable index is not supported")
        try:
            param = PVParam(param, pidx(str(index)))
        except Exception as e:
            raise PVError(f"bad index in {text}: {e}") from None
    getf, setfn = pv.getf, pv.setf
    p = param

    def get(msg):
        return getf(msg, p)
    setf = None
    if setfn is not None:
        def setf(msg, value, op):
            r = setfn(msg, p, op, value)
            if isinstance(r, int) and r < 0:
                raise PVError(f"cannot set {text}")
    return PVSpec(text, name, arg, index, get, setf, param)


class PVParam:
    """What a module variable's getf/setf receive when the script gives an
    index: ``name`` (the parse_name result) and ``index`` (parse_index)."""
    __slots__ = ("name", "index")

    def __init__(self, name, index):
        self.name = name
        self.index = index

    def __repr__(self):
        return f"PVParam({self.name!r}, {self.index!r})"


def parse_pv(text: str, registry=None) -> PVSpec:
    """Parse one variable token (the whole text must be the variable)."""
    if not isinstance(text, str):
        raise PVError(f"not a variable: {text!r}")
    t = text.strip()
    if not t.startswith("$"):
        raise PVError(f"not a variable: {text!r}")
    spec, end = _scan_pv(t, 0, registry)
    if end != len(t):
        rest = t[end:]
        if rest[0] == "[":
            raise PVError(f"${spec.name} takes no index: {text}")
        if rest[0] == "(":
            raise PVError(f"${spec.name} takes no argument: {text}")
        raise PVError(f"unexpected {t[end:]!r} after {t[:end]} in {text!r}")
    return spec


# --- formats ------------------------------------------------------------------------------------

class Format:
    """A string with embedded variables, split once at parse time."""
    __slots__ = ("text", "parts", "is_constant", "value", "eval", "specs")

    def __init__(self, text, parts):
        self.text = text
        self.parts = parts
        self.specs = [p for p in parts if isinstance(p, PVSpec)]
        self.is_constant = not self.specs
        if self.is_constant:
            v = "".join(parts)
            self.value = v
            self.eval = lambda msg: v
            return
        self.value = None
        getters = [(None, p) if isinstance(p, str) else (p.get, None)
                   for p in parts]
        if len(parts) == 1:
            g = parts[0].get

            def ev1(msg):
                x = g(msg)
                if x is None:
                    return NULL_TEXT
                return x if isinstance(x, str) else str(x)
            self.eval = ev1
            return

        def ev(msg):
            out = []
            for g, lit in getters:
                if g is None:
                    out.append(lit)
                else:
                    x = g(msg)
                    if x is None:
                        out.append(NULL_TEXT)
                    else:
                        out.append(x if isinstance(x, str) else str(x))
            return "".join(out)
        self.eval = ev

    def __repr__(self):
        return f"Format({self.text!r})"


def parse_format(text: str, registry=None) -> Format:
    """Split ``text`` into literal parts and variables.  A ``$`` not followed
    by a variable name or ``(`` is literal text (``"5$"``); an unknown
    variable or a bad transformation raises PVError."""
    parts: list = []
    lit: List[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n and (text[i + 1] == "(" or
                                        text[i + 1].isalpha() or
                                        text[i + 1] == "_"):
            if lit:
                parts.append("".join(lit))
                lit = []
            spec, i = _scan_pv(text, i, registry)
            parts.append(spec)
            continue
        lit.append(ch)
        i += 1
    if lit:
        parts.append("".join(lit))
    return Format(text, parts)
