"""The event interface (OpenSIPS's EVI).

Events are published before the workers are forked: the core's own
(:data:`CORE_EVENTS`), those a module declares in ``exports.events`` or
publishes from its mod_init with :func:`evi_publish_event`, and those the
script raises with ``raise_event("E_NAME", ...)`` (published when the
script is fixed up).  Any process may then raise one with
:func:`evi_raise_event`; it goes to

* the script's ``event_route[E_NAME]``, run in the raising process over a
  dummy message, the parameters in ``$param(name)`` and, by position,
  ``$param(1)``, ``$param(2)``...;
* every subscriber: an external application subscribed over MI
  (``subscribe_event E_NAME udp:127.0.0.1:9000 [expire]``) through a
  transport module (``event_datagram`` serves ``udp:`` and ``unix:``).

Subscriptions live in one table in shared memory (so a subscription made
through an MI process is seen by the SIP receivers), under one lock;
``expire`` is in seconds (default 3600, 0 = never).  Transports register
themselves from their mod_init with :func:`register_transport`.

Core events raised here: ``E_CORE_THRESHOLD`` (a route over a SIP message
ran longer than ``exec_msg_threshold`` microseconds) and
``E_CORE_SHM_THRESHOLD`` (shared memory use went above
``event_shm_threshold`` percent, checked every second by the timer
process).  OpenSIPS's ``E_CORE_PKG_THRESHOLD`` and
``E_CORE_PROC_AUTO_SCALE`` do not apply: there is no private memory pool
and no process auto-scaling; they are not published.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import log

EVI_ERROR = -1
DEFAULT_EXPIRE = 3600
MAX_SUBSCRIBERS = 128
SOCKET_MAX = 200
EVENT_NAME_MAX = 64

E_CORE_THRESHOLD = "E_CORE_THRESHOLD"
E_CORE_SHM_THRESHOLD = "E_CORE_SHM_THRESHOLD"
CORE_EVENTS = (E_CORE_THRESHOLD, E_CORE_SHM_THRESHOLD)

MAX_RAISE_DEPTH = 8     # an event_route raising events raising events ...

Params = List[Tuple[Optional[str], Any]]


class EviError(ValueError):
    pass


@dataclass
class Event:
    name: str
    id: int
    module: str


@dataclass
class Transport:
    """``parse(text) -> handle`` (raise ValueError on a bad socket),
    ``send(event_name, params, handle)``, ``print_(handle) -> text``."""
    proto: str
    module: str
    parse: Callable[[str], Any]
    send: Callable[[str, Params, Any], None]
    print_: Callable[[Any], str]


_events: List[Event] = []
_by_name: Dict[str, Event] = {}
_transports: Dict[str, Transport] = {}
_routes: Dict[str, Callable] = {}
_depth = 0


# ------------------------------------------------------------- events

def evi_publish_event(name: str, module: str = "core") -> int:
    """Publish an event (before fork); returns its id.  Publishing a name
    again returns the id it already has."""
    if not isinstance(name, str) or not name or len(name) > EVENT_NAME_MAX \
            or any(c.isspace() or c in ":\"'" for c in name):
        raise EviError(f"bad event name {name!r}")
    ev = _by_name.get(name)
    if ev is not None:
        return ev.id
    from . import pt
    if pt.my_id:
        raise EviError(f"event {name} must be published before the "
                       f"processes are forked")
    ev = Event(name, len(_events), module)
    _events.append(ev)
    _by_name[name] = ev
    return ev.id


def evi_get_id(name: str) -> int:
    ev = _by_name.get(name)
    return ev.id if ev is not None else EVI_ERROR


def events() -> List[Event]:
    return list(_events)


def _event(ev) -> Event:
    if isinstance(ev, int):
        if 0 <= ev < len(_events):
            return _events[ev]
        raise EviError(f"no event with id {ev}")
    e = _by_name.get(ev)
    if e is None:
        raise EviError(f"event {ev} is not published")
    return e


for _n in CORE_EVENTS:
    evi_publish_event(_n)


# ------------------------------------------------------------- transports

def register_transport(proto: str, module: str, parse, send,
                       print_=None) -> None:
    """A transport module serves sockets ``proto:...`` (from mod_init)."""
    if proto in _transports:
        raise EviError(f"event transport '{proto}' is already served by "
                       f"module {_transports[proto].module}")
    _transports[proto] = Transport(proto, module, parse, send,
                                   print_ or (lambda h: str(h)))


def _split_socket(text: str) -> Tuple[Transport, str, Any]:
    """(transport, canonical 'proto:rest', handle) of a subscriber socket,
    or EviError."""
    text = (text or "").strip()
    proto, sep, rest = text.partition(":")
    tr = _transports.get(proto.lower()) if sep else None
    if tr is None and text.startswith("/") and "unix" in _transports:
        tr, rest = _transports["unix"], text          # ['unix:'] path
    if tr is None:
        raise EviError(f"no transport for socket '{text}'")
    try:
        handle = tr.parse(rest)
    except (ValueError, OSError) as e:
        raise EviError(f"bad socket '{text}': {e}") from None
    canon = f"{tr.proto}:{tr.print_(handle)}"
    if len(canon.encode()) > SOCKET_MAX:
        raise EviError(f"socket '{text}' is too long")
    return tr, canon, handle


# ------------------------------------------------ subscribers (shared)

# header: nothing; records: used, event id, expire (as given), expires at
# (unix seconds, 0 = never), socket text
_REC = struct.Struct(f"<BxxxiIxxxxq{SOCKET_MAX}s")


class _Table:
    def __init__(self):
        self.blk = None
        self.lock = None
        self.gen = -1
        self.local: Optional[bytearray] = None   # no arena (unit tests)

    def buf(self):
        from . import shm
        if shm.is_initialised():
            if self.blk is None or self.gen != shm._generation:
                self.blk = shm.shm_malloc(_REC.size * MAX_SUBSCRIBERS, "evi")
                self.blk.buffer[:] = bytes(_REC.size * MAX_SUBSCRIBERS)
                self.lock = shm.Lock("evi")
                self.gen = shm._generation
            return self.blk.buffer
        if self.local is None:
            self.local = bytearray(_REC.size * MAX_SUBSCRIBERS)
        return self.local

    def locked(self):
        import contextlib
        return self.lock if self.lock is not None and \
            self.blk is not None else contextlib.nullcontext()

    def records(self, buf):
        for i in range(MAX_SUBSCRIBERS):
            used, evid, expire, until, sock = _REC.unpack_from(
                buf, i * _REC.size)
            if used:
                yield i, evid, expire, until, sock.rstrip(b"\0").decode()


_table = _Table()


def init_shared() -> None:
    """Allocate the subscriber table (the attendant, before fork)."""
    _table.buf()


def evi_event_subscribe(event: str, socket: str,
                        expire: int = DEFAULT_EXPIRE) -> None:
    """Subscribe (or refresh) ``socket`` to ``event``; EviError when the
    event, the transport or the socket is bad, or the table is full."""
    ev = _event(event)
    if expire < 0:
        raise EviError("negative expire")
    _tr, canon, _h = _split_socket(socket)
    until = int(time.time()) + expire if expire else 0
    buf = _table.buf()
    raw = canon.encode()
    with _table.locked():
        now = time.time()
        free = None
        for i in range(MAX_SUBSCRIBERS):
            used, evid, _e, u, sock = _REC.unpack_from(buf, i * _REC.size)
            if used and u and u < now:            # expired: reuse the slot
                used = 0
                _REC.pack_into(buf, i * _REC.size, 0, 0, 0, 0, b"")
            if used and evid == ev.id and sock.rstrip(b"\0") == raw:
                _REC.pack_into(buf, i * _REC.size, 1, ev.id, expire, until,
                               raw)
                return
            if not used and free is None:
                free = i
        if free is None:
            raise EviError(f"too many subscribers (at most "
                           f"{MAX_SUBSCRIBERS})")
        _REC.pack_into(buf, free * _REC.size, 1, ev.id, expire, until, raw)
    log.LM_DBG(f"evi: {canon} subscribed to {ev.name} (expire {expire})")


def subscribers(event=None) -> List[Tuple[Event, str, int]]:
    """(event, socket, expire as given) of every live subscription."""
    want = _event(event).id if event is not None else None
    now = time.time()
    out = []
    buf = _table.buf()
    with _table.locked():
        recs = list(_table.records(buf))
    for _i, evid, expire, until, sock in recs:
        if until and until < now:
            continue
        if want is not None and evid != want:
            continue
        if 0 <= evid < len(_events):
            out.append((_events[evid], sock, expire))
    return out


def evi_probe_event(event) -> bool:
    """Whether raising the event reaches anyone (a route or a
    subscriber)."""
    ev = _event(event)
    return ev.name in _routes or bool(subscribers(ev.id))


# ------------------------------------------------------------- raising

def _norm_params(params) -> Params:
    if params is None:
        return []
    if isinstance(params, dict):
        return list(params.items())
    out = []
    for p in params:
        if isinstance(p, tuple) and len(p) == 2:
            out.append(p)
        else:
            out.append((None, p))
    return out


def evi_raise_event(event, params=None) -> int:
    """Raise an event in this process: its event_route runs here and every
    subscriber gets it.  ``params``: a dict (named), a list of values
    (unnamed) or of ``(name, value)`` pairs.  Returns how many were
    reached (the route counts as one)."""
    global _depth
    ev = _event(event)
    plist = _norm_params(params)
    if _depth >= MAX_RAISE_DEPTH:
        log.LM_ERR(f"evi: {ev.name} raised {_depth} levels deep; dropped")
        return 0
    _depth += 1
    try:
        reached = 0
        route = _routes.get(ev.name)
        if route is not None:
            _run_route(route, plist)
            reached += 1
        for _e, sock, _x in subscribers(ev.id):
            try:
                tr, _canon, handle = _split_socket(sock)
                tr.send(ev.name, plist, handle)
                reached += 1
            except Exception as e:
                log.LM_ERR(f"evi: cannot send {ev.name} to {sock}: {e}")
        return reached
    finally:
        _depth -= 1


class EventParams(tuple):
    """An event_route's parameters: ``$param(1)``... by position and
    ``$param(name)`` by name."""
    named: Dict[str, Any] = {}


def _run_route(route, plist: Params) -> None:
    from .receive import dummy_msg
    params = EventParams(v for _n, v in plist)
    params.named = {n: v for n, v in plist if n}
    try:
        route(dummy_msg(), params)
    except Exception as e:
        log.LM_ERR(f"evi: event_route failed: {type(e).__name__}: {e}")


def params_json(plist: Params):
    """The params as JSON-RPC wants them: an object when every one is
    named, else an array of the values."""
    if plist and all(n for n, _v in plist):
        return {n: v for n, v in plist}
    return [v for _n, v in plist]


# ------------------------------------------------------ script binding

class _State:
    msg_threshold_us = 0        # exec_msg_threshold
    shm_threshold = 0           # event_shm_threshold (percent)
    shm_above = False


state = _State()


def bind_script(event_routes: Dict[str, Callable], route_locs, registry,
                settings=None) -> List[Tuple[Any, str]]:
    """Called when the script is compiled (attendant, before fork):
    publish the modules' declared events, check every event_route names a
    published event, remember the routes, read the thresholds, allocate
    the subscriber table and register the shm check.  Returns
    ``[(loc, error)]``."""
    errors = []
    if registry is not None:
        for lm in registry.modules:
            for ee in getattr(lm.exports, "events", ()) or ():
                name = getattr(ee, "name", ee)
                try:
                    evi_publish_event(name, lm.name)
                except EviError as e:
                    errors.append((None, f"module {lm.name}: {e}"))
    for name, loc in route_locs:
        if name not in _by_name:
            errors.append((loc, f"event_route[{name}]: event {name} is not "
                                f"published by the core, a loaded module "
                                f"or a raise_event() of the script"))
    _routes.clear()
    _routes.update(event_routes)
    if settings is not None:
        state.msg_threshold_us = int(getattr(settings, "exec_msg_threshold",
                                             0) or 0)
        state.shm_threshold = int(getattr(settings, "event_shm_threshold",
                                          0) or 0)
    from . import shm
    if shm.is_initialised():
        init_shared()
        if state.shm_threshold:
            _register_shm_check()
    return errors


def _register_shm_check() -> None:
    from . import timer
    try:
        timer.register_timer("evi-shm-threshold", _check_shm, None, 1)
    except Exception as e:      # registration closed: a test compiling late
        log.LM_DBG(f"evi: no shm threshold check: {e}")


def _check_shm(ticks=None, param=None) -> None:
    from . import shm
    st = shm.stats()
    size = st.get("total_size") or 0
    used = st.get("real_used_size", st.get("used_size", 0))
    if not size:
        return
    usage = used * 100 // size
    if usage >= state.shm_threshold:
        if not state.shm_above:
            state.shm_above = True
            log.LM_WARN(f"shared memory above {state.shm_threshold}%: "
                        f"{usage}% used")
            evi_raise_event(E_CORE_SHM_THRESHOLD, [
                ("usage", usage), ("threshold", state.shm_threshold),
                ("used", used), ("size", size)])
    else:
        state.shm_above = False


def msg_threshold_exceeded(took_us: int, msg) -> None:
    """A route over a SIP message ran longer than exec_msg_threshold."""
    try:
        first = f"{msg.method} {msg.ruri}" if msg.is_request else \
            f"{msg.status} {msg.reason}"
    except Exception:
        first = ""
    try:
        cid = msg.callid
    except Exception:
        cid = ""
    extra = f"{first} (Call-ID {cid})" if cid else first
    log.LM_WARN(f"threshold exceeded : msg processing took too long - "
                f"{took_us} us. Source : {extra}")
    evi_raise_event(E_CORE_THRESHOLD, [("source", "msg processing"),
                                       ("time", took_us), ("extra", extra)])


# ------------------------------------------------------ script function

def fixup_event_name(value) -> int:
    """raise_event's event: a constant name, published if the script is
    the first to use it."""
    return evi_publish_event(str(value).strip(), "script")


def _avp_values(msg, spec) -> list:
    if spec is None:
        return []
    if getattr(spec, "name", None) == "avp":
        from .pvar import get_avps
        return list(get_avps(msg).get(spec.arg, ()))
    return spec.get_all(msg)


def w_raise_event(msg, evid, attrs=None, vals=None) -> int:
    """raise_event(event, [values]) / raise_event(event, attrs, values)."""
    if vals is None and attrs is not None:
        attrs, vals = None, attrs
    if not evi_probe_event(evid):
        return 1
    values = _avp_values(msg, vals)
    if attrs is not None:
        names = _avp_values(msg, attrs)
        if len(names) < len(values):
            log.LM_ERR("raise_event: missing attribute names")
            return -1
        if len(names) > len(values):
            log.LM_ERR("raise_event: too many attribute names")
        plist = [(str(n), v) for n, v in zip(names, values)]
    else:
        plist = [(None, v) for v in values]
    evi_raise_event(evid, plist)
    return 1


def cmd_exports():
    from .sr_module import (ALL_ROUTES, CMD_PARAM_OPT, CMD_PARAM_STATIC,
                            CMD_PARAM_STR, CMD_PARAM_VAR, CmdExport,
                            CmdParam)
    ev = CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC, fixup=fixup_event_name)
    var = CmdParam(CMD_PARAM_VAR | CMD_PARAM_OPT)
    return [CmdExport("raise_event", w_raise_event, [ev, var, var],
                      ALL_ROUTES)]


# ------------------------------------------------------------------- MI

def _mi_events_list(params):
    return {"Events": [{"name": e.name, "id": e.id} for e in _events]}


def _subs_json(sock, expire):
    return {"socket": sock, "expire": expire if expire else "never"}


def _mi_subscribers_list(params):
    from .mi import MIError
    if "event" not in params:
        out = []
        for e in _events:
            subs = subscribers(e.id)
            if subs:
                out.append({"name": e.name, "id": e.id, "Subscribers": [
                    _subs_json(s, x) for _e, s, x in subs]})
        return {"Events": out}
    from .mi import get_str
    name = get_str(params, "event")
    if name not in _by_name:
        raise MIError(404, "Event not published")
    e = _by_name[name]
    subs = subscribers(e.id)
    if "socket" in params:
        try:
            _tr, canon, _h = _split_socket(get_str(params, "socket"))
        except EviError:
            raise MIError(404, "Subscriber does not exist") from None
        match = [x for x in subs if x[1] == canon]
        if not match:
            raise MIError(404, "Subscriber does not exist")
        return {"Event": {"name": e.name, "id": e.id,
                          "Subscriber": _subs_json(canon, match[0][2])}}
    return {"Event": {"name": e.name, "id": e.id, "Subscribers": [
        _subs_json(s, x) for _e, s, x in subs]}}


def _mi_subscribe(params):
    from .mi import OK, MIError, get_int, get_str, param_error
    event = get_str(params, "event")
    sock = get_str(params, "socket")
    if not event or not sock:
        raise param_error()
    expire = DEFAULT_EXPIRE
    if "expire" in params:
        expire = get_int(params, "expire")
        if expire < 0:
            raise param_error("Negative expire value")
    try:
        evi_event_subscribe(event, sock, expire)
    except EviError as e:
        log.LM_ERR(f"subscribe_event: {e}")
        raise MIError(400, "Bad parameter value") from None
    return OK


def _mi_raise(params):
    import json
    from .mi import OK, MIError, get_str
    name = get_str(params, "event")
    if name not in _by_name:
        raise MIError(404, "Event not registered")
    if not evi_probe_event(name):
        raise MIError(480, "Temporarily Unavailable")
    plist: Params = []
    if "params" in params:
        p = params["params"]
        if isinstance(p, list):
            plist = [(None, v if isinstance(v, str) else json.dumps(v))
                     for v in p]
        elif isinstance(p, dict):
            plist = list(p.items())
        else:
            try:
                obj = json.loads(str(p))
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                raise MIError(400, "Bad Params")
            plist = list(obj.items())
    evi_raise_event(name, plist)
    return OK


def mi_exports():
    from .sr_module import MIExport, MIRecipe
    return [
        MIExport("events_list", "lists the published events", 0, None,
                 [MIRecipe(_mi_events_list)]),
        MIExport("subscribers_list", "lists the subscribers of the events",
                 0, None,
                 [MIRecipe(_mi_subscribers_list),
                  MIRecipe(_mi_subscribers_list, ("event",)),
                  MIRecipe(_mi_subscribers_list, ("event", "socket"))]),
        MIExport("subscribe_event", "subscribes a socket to an event", 0,
                 None,
                 [MIRecipe(_mi_subscribe, ("event", "socket")),
                  MIRecipe(_mi_subscribe, ("event", "socket", "expire"))]),
        MIExport("raise_event", "raises an event", 0, None,
                 [MIRecipe(_mi_raise, ("event",)),
                  MIRecipe(_mi_raise, ("event", "params"))]),
    ]


def _reset_for_tests() -> None:
    global _depth
    _events.clear()
    _by_name.clear()
    _transports.clear()
    _routes.clear()
    _depth = 0
    _table.__init__()
    state.msg_threshold_us = 0
    state.shm_threshold = 0
    state.shm_above = False
    for n in CORE_EVENTS:
        evi_publish_event(n)
