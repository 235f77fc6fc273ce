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
(int); ``$hdr(name)[i|-i|*]`` (the body as OpenSIPS keeps it: leading
white space dropped, trailing spaces and folding kept) ``$hdrcnt(name)``
(int); ``$ct[i]``,
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

import time
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["PVError", "StrInt", "PVSpec", "Format", "RunContext", "ctx",
           "script_vars",
           "parse_pv", "parse_format", "register_core_pv", "core_pv_names",
           "Branch", "FlagTable", "msg_flags", "branch_flags", "get_avps",
           "get_branches", "NULL_TEXT"]

NULL_TEXT = "<null>"


class PVError(Exception):
    """A pseudo-variable cannot be parsed, or cannot be written."""


class StrInt(str):
    """A string value that also carries an integer, OpenSIPS's
    ``PV_VAL_STR|PV_VAL_INT`` without ``PV_TYPE_INT`` (``$rp`` when the
    R-URI names its port): it prints and concatenates as its text, it
    compares with an integer as the number ``int(self)``.  See
    docs/script-typing.md."""
    __slots__ = ()


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


def unregister_core_pv(name: str) -> None:
    _EXTRA.pop(name, None)


def core_pv_names() -> List[str]:
    return sorted(list(_DEFS) + list(_EXTRA))


# The core variables register themselves (_def/_simple) when their modules
# load; the parser comes last.  The package is split by concept: this file
# holds the spec, the state and the registry; _msgvars.py the variables over
# the SIP message; _envvars.py those over the receive info, the process, the
# run context, $var, $avp and the branches; _parse.py the parser.
from . import _msgvars, _envvars  # noqa: E402,F401
from ._msgvars import _ruri_uri  # noqa: E402,F401  (used by core_cmds)
from ._parse import Format, parse_format, parse_pv  # noqa: E402,F401
