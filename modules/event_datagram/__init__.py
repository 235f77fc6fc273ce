"""event_datagram: the event interface's UDP and Unix datagram transport.

A subscriber socket is ``udp:host:port`` or ``[unix:]/path/of/socket``;
each event goes out as one datagram holding a JSON-RPC 2.0 notification:
the event's name in ``method``, its parameters in ``params`` (an object
when every parameter has a name, else an array).  Datagrams are sent from
the process that raises the event, through a socket of that process opened
on first use.  See README.md.
"""
from __future__ import annotations

import json
import os
import socket

from opensipy import evi, log
from opensipy.sr_module import ModuleExports

MAX_DATAGRAM = 65457          # OpenSIPS's largest event datagram

_socks = {}                   # family -> (pid, socket)


def parse_udp(text: str):
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or \
            not 0 < int(port) < 65536:
        raise ValueError("expected udp:host:port")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve {host}: {e.strerror}") from None
    family, _t, _p, _c, sa = infos[0]
    return family, sa[:2], (f"[{host}]" if ":" in host else host) + \
        f":{int(port)}"


def parse_unix(text: str):
    path = text.strip()
    if not path.startswith("/"):
        raise ValueError("expected an absolute socket path")
    return socket.AF_UNIX, path, path


def _sock(family):
    pid = os.getpid()
    cur = _socks.get(family)
    if cur is not None and cur[0] == pid:
        return cur[1]
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setblocking(False)
    _socks[family] = (pid, s)
    return s


def encode(event: str, params) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": event,
                       "params": evi.params_json(params)},
                      default=str).encode("utf-8")


def send(event: str, params, handle) -> None:
    family, addr, _text = handle
    data = encode(event, params)
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"event of {len(data)} bytes is larger than a "
                         f"datagram ({MAX_DATAGRAM})")
    try:
        _sock(family).sendto(data, addr)
    except BlockingIOError:
        log.LM_WARN(f"event_datagram: {event} to {_text} dropped "
                    f"(socket buffer full)")
    except FileNotFoundError:
        raise ValueError(f"no socket at {addr}") from None


def mod_init() -> int:
    evi.register_transport("udp", "event_datagram", parse_udp, send,
                           lambda h: h[2])
    evi.register_transport("unix", "event_datagram", parse_unix, send,
                           lambda h: h[2])
    return 0


exports = ModuleExports(
    name="event_datagram",
    init_f=mod_init,
)
