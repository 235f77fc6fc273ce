"""The core's receive path: one datagram in, the script run over it.

``receive_msg`` is called by the transport's receive loop for every datagram:

* a message that does not parse is counted; a request gets the error status
  the parser chose (400, or 505 for a bad version) when a reply can be put
  together from its headers, a reply is dropped;
* a request with a method the parser does not know (not one of RFC 3261's
  and its extensions': ``METHOD_OTHER``) is counted in
  ``unsupported_methods``, as OpenSIPS 2.x counted non-standard methods
  (3.x keeps the statistic but leaves it at 0); it goes on to the script;
* a request whose top Via or Request-URI names a port outside 1..65535
  (an explicit 0, a bad ``rport=``) is answered 400 to its source address
  and counted (``err_requests`` and ``bad_msg_hdr`` or ``bad_URIs_rcvd``);
* a request is checked the way a proxy must (RFC 3261 §16.3: 416 for a
  Request-URI scheme we cannot route, 420 for a ``Proxy-Require`` we do not
  support), offered to the modules' pre-script callbacks (sl absorbs the
  ACKs of its own replies there), then runs ``request_route``; nothing is
  forwarded unless the script does it;
* a reply is offered to every module's ``response_f`` (0 absorbs it), runs
  the main ``onreply_route`` (``drop`` stops it), and is relayed statelessly
  to the next Via.

Running out of shared memory anywhere on the way (``ShmOutOfMemory``) is
logged and counted: a request is answered 500, a reply is dropped.

Routes that run without a SIP message (``startup_route``, ``timer_route``)
get a dummy request, as in OpenSIPS.
"""
from __future__ import annotations

import re
from typing import Callable, List, Optional

from . import totag
from . import forward, log, statistics
from .parser import METHOD_OTHER, REASONS, ParseError, ReceiveInfo, SipMsg
from .shm import ShmOutOfMemory
from .script.compiler import ACT_FL_DROP
from .script.reload import poll as _reload_poll

compiled = None
rank: Optional[int] = None
_response_fs = ()
_pre_script_cbs: List[Callable] = []
_post_script_cbs: List[Callable] = []

# Proxy-Require option tags this proxy supports (none yet)
SUPPORTED_PROXY_REQUIRE = ()

_DUMMY = (b"OPTIONS sip:dummy@127.0.0.1 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKdummy\r\n"
          b"From: <sip:dummy@127.0.0.1>;tag=dummy\r\n"
          b"To: <sip:dummy@127.0.0.1>\r\n"
          b"Call-ID: dummy\r\n"
          b"CSeq: 1 OPTIONS\r\n"
          b"Content-Length: 0\r\n\r\n")


def register_pre_script_cb(fn: Callable) -> None:
    """fn(msg) runs for every request before the script (mod_init only);
    returning 0 stops the request there (it was absorbed)."""
    _pre_script_cbs.append(fn)


def register_post_script_cb(fn: Callable) -> None:
    """fn(msg) runs after request_route returned (mod_init only), even
    when the script failed: tm drops the request's hold on its
    transaction there."""
    _post_script_cbs.append(fn)


def finish_request(msg) -> None:
    """What runs once request_route is over for msg: the post-script
    callbacks.  A request suspended by ``async()`` gets them after its
    resume route instead (opensipy.async_engine)."""
    for cb in _post_script_cbs:
        cb(msg)


class _Stats:
    """The core statistics this path counts, bound once per process."""
    __slots__ = ("rcv_requests", "rcv_replies", "fwd_replies",
                 "drop_requests", "drop_replies", "err_requests",
                 "err_replies", "bad_msg_hdr", "bad_URIs_rcvd",
                 "unsupported_methods")

    def bind(self):
        for n in self.__slots__:
            setattr(self, n, statistics.get_stat(f"core:{n}"))


stats = _Stats()


def child_start(rank_: int, compiled_, registry=None) -> None:
    """Called once in each SIP receiver before it serves traffic."""
    global compiled, rank, _response_fs
    from . import modloader
    compiled = compiled_
    rank = rank_
    reg = registry or modloader.registry
    _response_fs = tuple(lm.exports.response_f for lm in reg.modules
                         if lm.exports.response_f is not None) if reg else ()
    stats.bind()
    if rank_ == 1 and compiled_ is not None and compiled_.startup_route:
        log.LM_DBG("running startup_route")
        run_route_without_msg(compiled_.startup_route)


def dummy_msg():
    return SipMsg(_DUMMY)


def run_route_without_msg(route) -> int:
    """Run a startup_route/timer_route body over a dummy request."""
    msg = dummy_msg()
    try:
        return route(msg)
    except Exception as e:
        log.LM_ERR(f"route failed: {type(e).__name__}: {e}")
        return -1


# ------------------------------------------------------------ bad input

_HDR_NAMES = {b"via": b"Via", b"v": b"Via", b"from": b"From", b"f": b"From",
              b"to": b"To", b"t": b"To", b"call-id": b"Call-ID",
              b"i": b"Call-ID", b"cseq": b"CSeq"}
_TAG = re.compile(rb";\s*tag\s*=", re.I)


def raw_error_reply(buf: bytes, code: int, reason: str) -> Optional[bytes]:
    """A reply to a request that did not parse, made from its header lines
    as they are (every Via, and From, To, Call-ID, CSeq when present); None
    when it is not a request or has no Via to answer to."""
    head = buf.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = re.split(rb"\r?\n(?![ \t])", head)
    first = lines[0].strip()
    if not first or first.upper().startswith(b"SIP/") or b" " not in first:
        return None
    found = {}
    vias = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = _HDR_NAMES.get(name.strip().lower())
        if key is None:
            continue
        value = re.sub(rb"\r?\n[ \t]+", b" ", value).strip()
        if key == b"Via":
            vias.append(value)
        else:
            found.setdefault(key, value)
    if not vias:
        return None
    out = [f"SIP/2.0 {code} {reason}".encode()]
    out += [b"Via: " + v for v in vias]
    for key in (b"From", b"To", b"Call-ID", b"CSeq"):
        value = found.get(key)
        if value is None:
            continue
        if key == b"To" and not _TAG.search(value):
            value += b";tag=" + totag.core.tag_with(
                totag.bytes_suffix(buf)).encode()
        out.append(key + b": " + value)
    out += [b"Content-Length: 0", b"", b""]
    return b"\r\n".join(out)


def _tcp_alias(msg) -> None:
    """tcp_accept_aliases: a Via ``;alias`` makes the sent-by port an
    alias of the connection the request came on."""
    from . import config
    if not config.settings.tcp_accept_aliases:
        return
    v = msg.via1
    if v is None or v.param("alias") is None:
        return
    from .net import tcp
    rcv = msg.rcv
    port = v.port or 5060
    if port != rcv.src_port:
        tcp.add_alias(rcv.conn_id, rcv.src_ip, port)


def _bad_message(buf, e, src, si, conn_id=0) -> None:
    stats.bad_msg_hdr.inc()
    if not e.code:
        stats.err_replies.inc()
        stats.drop_replies.inc()
        log.LM_DBG(f"bad reply from {src[0]}:{src[1]} dropped: {e.reason}")
        return
    stats.err_requests.inc()
    log.LM_DBG(f"bad request from {src[0]}:{src[1]}: {e.reason}")
    data = raw_error_reply(buf, e.code, _reason_for(e))
    if data is not None:
        forward.send_to(si, data, src[:2], conn_id)


def _reason_for(e) -> str:
    if e.code == 400:
        return f"Bad Request ({e.reason})"[:120]
    return REASONS.get(e.code, "Bad Request")


def core_reply(msg, code: int, reason: str, headers=()) -> None:
    """The core's own answer to a request it will not route."""
    if msg.method == "ACK":
        return
    try:
        forward.send_reply(msg, msg.build_reply(code, reason,
                                                headers=headers))
    except ValueError as e:
        log.LM_ERR(f"cannot build a {code} reply: {e}")


def _ports_ok(msg) -> bool:
    """Every port the request names for its replies and its routing
    (top Via sent-by and rport, R-URI) is 1..65535; else 400 (to the
    source address: the Via cannot be trusted) and False."""
    if msg.plain_ports():
        return True             # the common case, off the parser's result
    v = msg.via1
    why = forward.via_port_error(v) if v is not None else None
    if why is not None:
        stats.bad_msg_hdr.inc()
    else:
        u = msg.parsed_uri
        why = forward.uri_port_error(u) if u is not None else None
        if why is None:
            return True
        stats.bad_URIs_rcvd.inc()
    stats.err_requests.inc()
    log.LM_WARN(f"request from {msg.rcv.src_ip}:{msg.rcv.src_port} "
                f"refused: bad {why}")
    msg.force_rport = True
    core_reply(msg, 400, f"Bad Request (bad {why})"[:120])
    return False


def _proxy_checks(msg) -> bool:
    """RFC 3261 §16.3: True when the request may go to the script."""
    if not msg.ruri_scheme_supported():
        stats.bad_URIs_rcvd.inc()
        stats.err_requests.inc()
        core_reply(msg, 416, "Unsupported URI Scheme")
        return False
    bad = msg.unsupported_proxy_require(SUPPORTED_PROXY_REQUIRE)
    if bad:
        stats.err_requests.inc()
        core_reply(msg, 420, "Bad Extension",
                   headers=(f"Unsupported: {', '.join(bad)}",))
        return False
    return True


# ------------------------------------------------------------ the path

def receive_msg(buf: bytes, src, si, conn_id: int = 0) -> None:
    _reload_poll()          # MI reload_routes: new routes before this one
    try:
        msg = SipMsg(buf)
    except ParseError as e:
        _bad_message(buf, e, src, si, conn_id)
        return
    msg.rcv = ReceiveInfo(src[0], src[1], si.host, si.port, si.proto, si,
                          conn_id)
    if conn_id and msg.is_request:
        _tcp_alias(msg)
    try:
        _dispatch(msg)
    except ShmOutOfMemory as e:
        _out_of_shm(msg, e)


def _out_of_shm(msg, e) -> None:
    """The shared memory ran out while handling msg (a module's or the
    core's allocation): a request is answered 500, a reply dropped; both
    counted (err_requests / err_replies and drop_replies) and logged."""
    rcv = msg.rcv
    if msg.is_request:
        stats.err_requests.inc()
        log.LM_ERR(f"{msg.method} from {rcv.src_ip}:{rcv.src_port}: {e}; "
                   f"answering 500")
        core_reply(msg, 500, "Server Internal Error")
        return
    stats.err_replies.inc()
    stats.drop_replies.inc()
    log.LM_ERR(f"reply {msg.status} from {rcv.src_ip}:{rcv.src_port}: {e}; "
               f"dropped")


def _dispatch(msg) -> None:
    if msg.is_request:
        stats.rcv_requests.inc()
        if msg.method_id == METHOD_OTHER:
            stats.unsupported_methods.inc()
        if not _ports_ok(msg) or not _proxy_checks(msg):
            return
        for cb in _pre_script_cbs:
            if cb(msg) == 0:
                return
        route = compiled.request_route if compiled is not None else None
        if route is None:
            stats.drop_requests.inc()
            return
        if not _post_script_cbs:
            route(msg)
            return
        try:
            route(msg)
        finally:
            if not getattr(msg, "async_suspended", False):
                finish_request(msg)
        return
    stats.rcv_replies.inc()
    for f in _response_fs:
        if f(msg) == 0:
            return
    onreply = compiled.onreply_routes.get(None) if compiled is not None \
        else None
    if onreply is not None:
        if onreply(msg) & ACT_FL_DROP:
            stats.drop_replies.inc()
            return
    if forward.forward_reply(msg) > 0:
        stats.fwd_replies.inc()
    else:
        stats.drop_replies.inc()
