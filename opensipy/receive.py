"""The core's receive path: one datagram in, the script run over it.

``receive_msg`` is called by the transport's receive loop for every
datagram.  A request runs the compiled ``request_route``; a reply is offered
to every module's ``response_f`` first (a module returning 0 absorbs it),
then to the main ``onreply_route``.  Forwarding, replies and the error
answers to malformed requests are the transport layer's ([udp]); this file
only holds what every transport shares.

Routes that run without a SIP message (``startup_route``, ``timer_route``)
get a dummy request, as in OpenSIPS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from . import log, statistics

compiled = None
rank: Optional[int] = None
_response_fs = ()

_DUMMY = (b"OPTIONS sip:dummy@127.0.0.1 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKdummy\r\n"
          b"From: <sip:dummy@127.0.0.1>;tag=dummy\r\n"
          b"To: <sip:dummy@127.0.0.1>\r\n"
          b"Call-ID: dummy\r\n"
          b"CSeq: 1 OPTIONS\r\n"
          b"Content-Length: 0\r\n\r\n")


@dataclass
class RcvInfo:
    """Where a message came from and on which of our sockets."""
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    proto: str
    socket: Any


class _Stats:
    """The core statistics this path counts, bound once per process."""
    __slots__ = ("rcv_requests", "rcv_replies", "drop_requests",
                 "drop_replies", "err_requests", "err_replies",
                 "bad_msg_hdr")

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
    from .parser import SipMsg
    return SipMsg(_DUMMY)


def run_route_without_msg(route) -> int:
    """Run a startup_route/timer_route body over a dummy request."""
    msg = dummy_msg()
    try:
        return route(msg)
    except Exception as e:
        log.LM_ERR(f"route failed: {type(e).__name__}: {e}")
        return -1


def receive_msg(buf: bytes, src, si) -> None:
    from .parser import ParseError, SipMsg
    try:
        msg = SipMsg(buf)
    except ParseError as e:
        stats.bad_msg_hdr.inc()
        log.LM_DBG(f"bad message from {src[0]}:{src[1]}: {e}")
        return
    msg.rcv = RcvInfo(src[0], src[1], si.host, si.port, si.proto, si)
    if msg.is_request:
        stats.rcv_requests.inc()
        route = compiled.request_route if compiled is not None else None
        if route is None:
            stats.drop_requests.inc()
            return
        route(msg)
        return
    stats.rcv_replies.inc()
    for f in _response_fs:
        if f(msg) == 0:
            return
    onreply = compiled.onreply_routes.get(None) if compiled is not None \
        else None
    if onreply is not None:
        onreply(msg)
