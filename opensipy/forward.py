"""Stateless forwarding and sending, per RFC 3261 §16 and §18 and RFC 3581.

* :func:`forward_request` sends a request on: our Via on top with a stateless
  branch (§16.11: the same request, retransmitted, gets the same branch), the
  sender's Via given ``received``/``rport`` (§18.2.1, RFC 3581), the
  Request-URI from ``$ru``, the destination from ``$du``, the argument, or
  the Request-URI.
* :func:`forward_reply` relays a reply statelessly: the top Via must be ours;
  it is removed and the reply goes to the next Via (``received`` and
  ``rport`` honoured, §18.2.2).
* :func:`reply_dest` / :func:`send_reply` send a locally built reply to the
  sender of a request (used by sl and tm).

Every port read from a message must be 1..65535 (:func:`port_value`,
:func:`via_port_error`, :func:`uri_port_error`): the receive path answers a
request with a bad one 400, a reply whose next Via has one is dropped, and
a URI with port 0 cannot be routed to; none reaches the resolver.

Names are resolved by :mod:`opensipy.resolve` (RFC 3263: NAPTR, SRV, A/AAAA,
cached for the records' TTL); a URI's ``maddr`` is where its request goes.
"""
from __future__ import annotations

import hashlib
import re
import socket
from typing import Optional, Tuple

from . import config, log
from . import resolve as _resolve
from .error import (E_BAD_ADDRESS, E_BAD_PROTO, E_BAD_URI, E_NO_SOCKET,
                    E_SEND, E_UNSPEC, set_error)

MAGIC = "z9hG4bK"
_RPORT_BARE = re.compile(r";\s*rport(?=\s*(?:;|$))", re.I)


class ForwardError(Exception):
    """The destination cannot be used (bad URI, unknown host, no socket);
    ``code`` is the E_* error recorded on the message (opensipy.error)."""

    def __init__(self, text, code=E_BAD_ADDRESS):
        super().__init__(text)
        self.code = code


# ------------------------------------------------------------ sockets

def send_socket(proto: str, af: int, msg=None):
    """The socket to send from: the forced one, else the one the message
    came in on when it fits, else the first of our sockets that does."""
    if msg is not None:
        forced = getattr(msg, "force_send_socket", None)
        if forced is not None:
            if forced.proto == proto or not _explicit_proto(msg):
                return forced
            # as OpenSIPS: a forced socket of another transport than the
            # destination names is not used
            log.LM_WARN(f"force_send_socket {forced.name}: the destination "
                        f"asks for {proto}; not used")
        rcv = msg.rcv
        if rcv is not None and rcv.socket is not None:
            si = rcv.socket
            if si.proto == proto and si.af == af:
                return si
    for si in config.settings.sockets:
        if si.proto == proto and si.af == af and si.sock is not None:
            return si
    raise ForwardError(f"no {proto} socket for "
                       f"{'IPv6' if af == socket.AF_INET6 else 'IPv4'}",
                       E_NO_SOCKET)


def _explicit_proto(msg) -> bool:
    """The next hop ($du, else the new R-URI) names its transport."""
    try:
        return uri_dest(msg.dst_uri or msg.new_uri or msg.parsed_uri)[0] \
            is not None
    except ForwardError:
        return False


def send_to(si, data: bytes, addr: Tuple[str, int],
            conn_id: int = 0) -> bool:
    """Send data to addr from socket si: a datagram, or over TCP on the
    connection conn_id / an open connection to addr / a new one."""
    if si.proto == "tcp":
        from .net import tcp
        return tcp.send(si, data, addr, conn_id)
    try:
        si.sock.sendto(data, addr)
        return True
    except OSError as e:
        log.LM_ERR(f"sendto {addr[0]}:{addr[1]} from {si.name} failed: "
                   f"{e.strerror or e}")
        return False


# ------------------------------------------------------------ ports

def port_value(text) -> int:
    """The port ``text`` names (1..65535), 0 when it is not one: digits
    only, no sign, no more than 5 of them (so ``int`` never sees a long
    or a non-ASCII string)."""
    if not text or len(text) > 5 or not text.isascii() or \
            not text.isdigit():
        return 0
    n = int(text)
    return n if n <= 65535 else 0


def via_port_error(v) -> Optional[str]:
    """Why a Via's sent-by port or rport cannot be used (None when they
    can).  The parser already refuses a sent-by port that is not a number
    or is above 65535; an explicit 0 and a bad ``rport=`` value are left
    to this check (RFC 3581: ``rport`` is empty or a port)."""
    if v.port == 0:
        ps = v.port_str
        if ps:
            return f"port {ps!r} in the Via sent-by"
    r = v.rport
    if r and not port_value(r):
        return f"rport {r!r} in the Via"
    return None


def uri_port_error(u) -> Optional[str]:
    """Why a parsed URI's port cannot be used (an explicit 0; the parser
    refuses the rest), None when it can."""
    if u.port == 0:
        ps = u.port_str
        if ps:
            return f"port {ps!r} in the URI"
    return None


# ------------------------------------------------------------ resolution

_protos_for = (None, ("udp",))


def send_protos() -> tuple:
    """The transports we have sockets for (what RFC 3263 may pick)."""
    global _protos_for
    st = config.settings
    if _protos_for[0] is not st:
        protos = tuple(sorted({si.proto for si in st.sockets})) or ("udp",)
        _protos_for = (st, protos)
    return _protos_for[1]


def resolve(host: str, port: int) -> Tuple[int, Tuple[str, int]]:
    """(address family, sockaddr) for an explicit host:port (A/AAAA, the
    TTL cache of opensipy.resolve); raises ForwardError."""
    try:
        t = _resolve.sip_resolve(host, port or None, "udp")[0]
    except _resolve.ResolveError as e:
        raise ForwardError(f"cannot resolve {host!r}: {e}") from None
    return t.af, (t.addr[0], port or t.addr[1])


class Destination(tuple):
    """(proto, host, port, secure) where a request goes: proto None and
    port 0 when not given (RFC 3263 then picks them); made once by a fixup
    for a constant forward() argument."""
    __slots__ = ()

    def __new__(cls, proto, host, port, secure=False):
        return tuple.__new__(cls, (proto, host, port, secure))


def uri_dest(uri) -> Destination:
    """Where a SIP URI (SipUri or text) sends to: its maddr or host, its
    port and transport when given (RFC 3263 §4)."""
    from .parser import parse_uri
    u = parse_uri(uri) if isinstance(uri, str) else uri
    if u is None or u.scheme not in ("sip", "sips") or not u.host:
        raise ForwardError(f"cannot route to {uri!r}", E_BAD_URI)
    why = uri_port_error(u)
    if why is not None:
        raise ForwardError(f"cannot route to {uri!r}: {why}", E_BAD_URI)
    proto = u.param("transport")
    proto = proto.lower() if proto else None
    host = u.param("maddr") or u.host
    return Destination(proto, host, u.port or 0, u.scheme == "sips")


def parse_dest(text: str) -> Destination:
    """forward("host[:port]") / forward("udp:host:port") / forward("sip:...");
    a name is resolved when used, not here (its records have a TTL)."""
    t = text.strip()
    if not t:
        raise ForwardError("empty destination", E_BAD_URI)
    if t.lower().startswith(("sip:", "sips:")):
        return uri_dest(t)
    proto = None
    m = re.match(r"^([a-z_]+):(.*)$", t, re.I)
    if m and m.group(1).lower() in config.PROTOS:
        proto, t = m.group(1).lower(), m.group(2)
    try:
        host, port = config._split_hostport(t, 0)
    except ValueError as e:
        raise ForwardError(str(e), E_BAD_URI) from None
    return Destination(proto, host, port)


def dest_targets(dest) -> list:
    """The RFC 3263 target list of a Destination; raises ForwardError."""
    proto, host, port, secure = dest
    try:
        return _resolve.sip_resolve(host, port or None, proto, secure,
                                    send_protos())
    except _resolve.ResolveError as e:
        raise ForwardError(f"cannot resolve {host!r}: {e}") from None


def pick_target(targets, msg=None):
    """(target, socket): the first target we have a socket for."""
    err = None
    for t in targets:
        try:
            return t, send_socket(t.proto, t.af, msg)
        except ForwardError as e:
            err = e
    raise err or ForwardError("no target", E_BAD_ADDRESS)


# ------------------------------------------------------------ requests

def stateless_branch(msg) -> str:
    """RFC 3261 §16.11: a branch that is the same for retransmissions of
    this request (and for a CANCEL of it, which carries the same top Via
    branch) and differs between requests."""
    v = msg.via1
    if v is not None and v.branch and v.branch.startswith(MAGIC) \
            and len(v.branch) > len(MAGIC):
        key = f"{v.branch}|{v.host}|{v.port}"
    else:
        f = msg.from_
        t = msg.to
        cs = msg.cseq
        key = "|".join((msg.callid or "", f.tag or "" if f else "",
                        t.tag or "" if t else "",
                        str(cs.num) if cs else "", msg.ruri,
                        f"{v.host}:{v.port}" if v else ""))
    return MAGIC + hashlib.md5(key.encode("utf-8", "surrogateescape"),
                               usedforsecurity=False).hexdigest()


def _fix_sender_via(msg) -> None:
    """received= when the sent-by is not the source address, rport=port
    when the sender asked for it (RFC 3581) or force_rport() was called."""
    v = msg.via1
    rcv = msg.rcv
    if v is None or rcv is None:
        return
    rport = v.rport
    # over a stream the reply must find the connection: its source port
    # is where it goes (as if the sender had asked for rport)
    want_rport = rport == "" or getattr(msg, "force_rport", False) or \
        rcv.proto == "tcp"
    if not want_rport and v.host.strip("[]") == rcv.src_ip:
        return
    orig = text = v.text
    if want_rport:
        if rport == "":
            text = _RPORT_BARE.sub(f";rport={rcv.src_port}", text, count=1)
        elif rport is None:
            text += f";rport={rcv.src_port}"
    if v.received is None:
        text += f";received={rcv.src_ip}"
    if text != orig:
        try:
            msg.replace(v.start, v.end - v.start, text)
        except ValueError:
            # the script already changed or removed that Via (e.g.
            # topology_hiding): nothing of the sender's Via goes out
            log.LM_DBG("the sender's Via was changed by the script: no "
                       "received/rport added")


def our_via(si, branch: str) -> str:
    host = si.adv_host or si.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = si.adv_port or si.port
    return f"SIP/2.0/{si.proto.upper()} {host}:{port};branch={branch}"


_fwd_stat = None


def _count_fwd() -> None:
    global _fwd_stat
    if _fwd_stat is None:
        from . import statistics
        _fwd_stat = statistics.get_stat("core:fwd_requests")
    _fwd_stat.inc()


def forward_request(msg, dest: Optional[str] = None) -> int:
    """Forward msg statelessly; 1 on success, -1 on failure (logged)."""
    try:
        if dest is not None:
            d = dest if type(dest) is Destination else parse_dest(dest)
        elif msg.dst_uri:
            d = uri_dest(msg.dst_uri)
        else:
            d = uri_dest(msg.new_uri or msg.parsed_uri)
        if d[0] is not None and d[0] not in send_protos():
            raise ForwardError(f"transport {d[0]} is not supported (no "
                               f"{d[0]} socket)", E_BAD_PROTO)
        target, si = pick_target(dest_targets(d), msg)
        addr = target.addr
        _fix_sender_via(msg)
        msg.add_via(our_via(si, stateless_branch(msg)))
        data = msg.build()
    except (ForwardError, ValueError) as e:
        log.LM_ERR(f"forward of {msg.method} {msg.ruri} failed: {e}")
        set_error(msg, getattr(e, "code", E_UNSPEC))
        return -1
    if not send_to(si, data, addr):
        set_error(msg, E_SEND)
        return -1
    _count_fwd()
    return 1


# ------------------------------------------------------------ replies

def reply_dest(msg) -> Tuple[str, int]:
    """Where a reply to request msg goes (RFC 3261 §18.2.2, RFC 3581)."""
    v = msg.via1
    rcv = msg.rcv
    if v is None:
        return rcv.src_ip, rcv.src_port
    if rcv.conn_id:
        # a stream: the reply goes on the request's connection while it is
        # open (the address does not matter then); once closed, a new one
        # is opened to the source IP and the Via's sent-by port (§18.2.2),
        # where the sender listens - not to the gone connection's port
        return rcv.src_ip, v.port or 5060
    if v.rport is not None or getattr(msg, "force_rport", False):
        return rcv.src_ip, rcv.src_port
    # the source address stands in for a sent-by host that differs from
    # it (an implicit ``received``); when they are equal it is the same text
    return v.received or rcv.src_ip, v.port or 5060


def send_reply(msg, data: bytes) -> bool:
    """Send a reply built for request msg back to its sender, from the
    socket the request came in on."""
    rcv = msg.rcv
    if rcv is None or rcv.socket is None:
        log.LM_ERR("cannot send a reply: the request has no receive info")
        return False
    si = rcv.socket
    if si.proto == "udp":
        # send_to()'s datagram case inline (every UDP reply comes here)
        addr = reply_dest(msg)
        try:
            si.sock.sendto(data, addr)
            return True
        except OSError as e:
            log.LM_ERR(f"sendto {addr[0]}:{addr[1]} from {si.name} failed: "
                       f"{e.strerror or e}")
            return False
    return send_to(si, data, reply_dest(msg), rcv.conn_id)


def is_our_via(v) -> bool:
    host = v.host.strip("[]")
    port = v.port or 5060
    if v.port == 0 and v.port_str:
        return False              # an explicit port 0 is nobody's
    for si in config.settings.sockets:
        if port == (si.adv_port or si.port) and host in (si.host,
                                                         si.adv_host):
            return True
    for ahost, aport in config.settings.aliases:
        if host == ahost and aport in (0, port):
            return True
    return False


def _reply_targets(host, port, proto):
    try:
        return _resolve.reply_targets(host, port, proto)
    except _resolve.ResolveError as e:
        raise ForwardError(f"cannot resolve {host!r}: {e}") from None


def forward_reply(msg) -> int:
    """Relay a reply statelessly to the next Via; 1 sent, 0 dropped
    (not ours, no next hop, broadcast), -1 error."""
    vias = msg.via
    if not vias or not is_our_via(vias[0]):
        log.LM_DBG("reply whose top Via is not ours: dropped")
        return 0
    if len(vias) < 2:
        log.LM_DBG("reply with no Via after ours: dropped")
        return 0
    nv = vias[1]
    if nv.received and _resolve._literal_af(nv.received.strip("[]")) is None:
        # RFC 3261 18.2.1: received is an address, never a name to look up
        log.LM_WARN(f"reply {msg.status} with a bad received="
                    f"{nv.received!r} in the next Via: dropped")
        return 0
    host = nv.received or nv.host.strip("[]")
    rport = nv.rport
    port = port_value(rport) if rport else nv.port
    if not port:
        if rport or nv.port_str:
            log.LM_WARN(f"reply {msg.status} with a bad next hop dropped: "
                        f"{via_port_error(nv)}")
            return 0
        port = 5060
    if host == "255.255.255.255":
        log.LM_WARN(f"reply to broadcast address {host}: dropped")
        return 0
    try:
        proto = (nv.transport or "UDP").lower()
        target, si = pick_target(_reply_targets(
            host, port if (nv.rport or nv.port) else None, proto), msg)
        addr = target.addr
        if rport and nv.received and si is not None and si.proto == "tcp":
            from .net import tcp
            if not tcp.find_conn(addr):
                # the connection (received:rport) is gone: a new one to
                # the sent-by port, where the sender listens (§18.2.2)
                addr = (addr[0], nv.port or 5060)
        msg.remove_via()
        data = msg.build()
    except (ForwardError, ValueError) as e:
        log.LM_ERR(f"cannot relay reply {msg.status}: {e}")
        return -1
    return 1 if send_to(si, data, addr) else -1
