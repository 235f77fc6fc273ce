"""Core settings: the script's global parameters, declared once.

Each :class:`Setting` names the parameter (and its OpenSIPS aliases), its
type, default and help text.  The same table drives the script's top level
(``name = value``), ``opensipy -h``'s list of parameters and the docs.  An
unknown global parameter is a config error with file:line.

The values live on :data:`settings` (one object per process; children get
the attendant's copy through fork).
"""
from __future__ import annotations

import ipaddress
import re
import socket as _socket
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from . import log

BOOL_WORDS = {"yes": True, "on": True, "true": True, "enable": True,
              "no": False, "off": False, "false": False, "disable": False}

PROTOS = ("udp", "tcp", "tls", "sctp", "ws", "wss", "bin", "hep_udp",
          "hep_tcp")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "sctp": 5060, "tls": 5061,
                 "ws": 80, "wss": 443}


class ConfigError(Exception):
    """A bad value in the script; ``loc`` is (file, line, col)."""

    def __init__(self, message: str, loc=None):
        super().__init__(message)
        self.loc = loc

    def __str__(self):
        msg = super().__str__()
        if self.loc:
            return f"{self.loc[0]}:{self.loc[1]}:{self.loc[2]}: {msg}"
        return msg


_NAME_PARTS = frozenset(("proto", "host", "port", "af"))


@dataclass
class SocketInfo:
    """One listening socket: ``proto:host:port [as adv_host:adv_port]``."""
    proto: str
    host: str
    port: int
    adv_host: Optional[str] = None
    adv_port: Optional[int] = None
    af: int = _socket.AF_INET
    sock: Any = None          # the bound socket, opened before fork
    workers: Optional[int] = None
    port_given: bool = True   # False: the protocol module's default applies
    loc: Optional[tuple] = None   # (file, line, col) of its socket= line

    @property
    def name(self) -> str:
        # made once: the registrar stores it with every binding; changing
        # proto, host, port or af forgets it (__setattr__)
        n = self.__dict__.get("_name")
        if n is None:
            host = f"[{self.host}]" if self.af == _socket.AF_INET6 \
                else self.host
            n = self.__dict__["_name"] = f"{self.proto}:{host}:{self.port}"
        return n

    def __setattr__(self, attr, value):
        object.__setattr__(self, attr, value)
        if attr in _NAME_PARTS:
            self.__dict__.pop("_name", None)

    def __str__(self):
        return self.name


def parse_socket(text: str) -> SocketInfo:
    """Parse ``[proto:]host[:port] [as host[:port]] [use_workers N]``."""
    t = text.strip()
    workers = None
    m = re.search(r"\s+use_(?:workers|children)\s+(\d+)\s*$", t)
    if m:
        workers = int(m.group(1))
        t = t[:m.start()]
    adv = None
    parts = re.split(r"\s+as\s+", t, maxsplit=1)
    if len(parts) == 2:
        t, adv = parts[0].strip(), parts[1].strip()
    proto = "udp"
    m = re.match(r"^([a-z_]+):(.*)$", t, re.I)
    if m and m.group(1).lower() in PROTOS:
        proto, t = m.group(1).lower(), m.group(2)
    host, port = _split_hostport(t, DEFAULT_PORTS.get(proto, 5060))
    af = _socket.AF_INET
    if host == "*":
        host = "0.0.0.0"
    try:
        ip = ipaddress.ip_address(host)
        af = _socket.AF_INET6 if ip.version == 6 else _socket.AF_INET
    except ValueError:
        try:
            infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_DGRAM)
        except OSError as e:
            raise ValueError(f"cannot resolve {host!r}: {e}") from None
        af, _, _, _, sa = infos[0]
        host = sa[0]
    si = SocketInfo(proto, host, port, af=af, workers=workers,
                    port_given=_has_port(t))
    if adv:
        si.adv_host, si.adv_port = _split_hostport(adv, port)
    return si


def _has_port(t: str) -> bool:
    t = t.strip()
    if t.startswith("["):
        return "]:" in t
    return t.count(":") == 1


def _split_hostport(t: str, default_port: int):
    t = t.strip()
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {t!r}")
        host, rest = t[1:end], t[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {t!r}")
        port = rest[1:] if rest else ""
    elif t.count(":") == 1:
        host, port = t.split(":")
    elif t.count(":") > 1:
        host, port = t, ""       # a bare IPv6 address
    else:
        host, port = t, ""
    if not host:
        raise ValueError(f"missing host in {t!r}")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad port {port!r}")
        return host, int(port)
    return host, default_port


# --- value converters: (raw value, kind) -> python value -------------------

def to_int(value, kind="int"):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if s.lower() in BOOL_WORDS:
        return int(BOOL_WORDS[s.lower()])
    return parse_int(s)


def parse_int(s: str) -> int:
    """Decimal, hex (0x), leading 0 = octal, optional sign."""
    sign = 1
    t = s.strip()
    if t[:1] in "+-":
        sign = -1 if t[0] == "-" else 1
        t = t[1:]
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", t):
        return sign * int(t, 16)
    if re.fullmatch(r"0[0-7]+", t):
        return sign * int(t, 8)
    if re.fullmatch(r"[0-9]+", t):
        return sign * int(t, 10)
    raise ValueError(f"{s!r} is not an integer")


def to_bool(value, kind="int"):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    s = str(value).strip().lower()
    if s in BOOL_WORDS:
        return BOOL_WORDS[s]
    try:
        return parse_int(s) != 0
    except ValueError:
        raise ValueError(f"{value!r} is not a boolean (yes/no/on/off/0/1)")


def to_str(value, kind="str"):
    return value if isinstance(value, str) else str(value)


def to_level(value, kind="int"):
    if isinstance(value, str) and value.strip() in log.SCRIPT_LEVELS:
        return log.SCRIPT_LEVELS[value.strip()]
    return to_int(value)


def to_facility(value, kind="str"):
    s = to_str(value).strip()
    log.syslog_facility(s)
    return s


@dataclass
class Setting:
    name: str
    convert: Callable[[Any, str], Any]
    default: Any
    help: str
    aliases: tuple = ()
    multi: bool = False       # each occurrence appends to a list


SETTINGS: List[Setting] = [
    Setting("socket", lambda v, k: parse_socket(to_str(v)), [],
            "a listening socket, proto:host:port [as host:port] "
            "[use_workers N]; may repeat", aliases=("listen",), multi=True),
    Setting("alias", lambda v, k: _split_hostport(to_str(v), 0), [],
            "another name (host[:port]) this server answers for "
            "(is_myself, uri==myself); may repeat", multi=True),
    Setting("udp_workers", lambda v, k: _positive(to_int(v)), 8,
            "SIP receiver processes per UDP socket", aliases=("children",)),
    Setting("udp_workers_standby", to_bool, True,
            "the UDP receivers of a socket beyond the first stand by "
            "until the active ones are saturated or stuck (on), or all "
            "wait on the socket (off)"),
    Setting("tcp_workers", lambda v, k: _positive(to_int(v)), 8,
            "TCP worker processes (they read and handle the TCP "
            "connections the TCP main process hands them)",
            aliases=("tcp_children",)),
    Setting("tcp_max_connections", lambda v, k: _positive(to_int(v)), 2048,
            "TCP connections open at once (more are refused)"),
    Setting("tcp_connection_lifetime", lambda v, k: _positive(to_int(v)),
            120, "seconds a TCP connection may stay idle before it is "
            "closed"),
    Setting("tcp_connect_timeout", lambda v, k: _positive(to_int(v)), 100,
            "milliseconds a connect() to a TCP peer may take"),
    Setting("tcp_accept_aliases", to_bool, False,
            "a Via ;alias parameter on a request received over TCP makes "
            "its sent-by port an alias of the connection"),
    Setting("tcp_max_msg_time", lambda v, k: _positive(to_int(v)), 4,
            "seconds a SIP message may take to arrive whole on a TCP "
            "connection (slow senders are closed)"),
    Setting("timer_workers", lambda v, k: _positive(to_int(v)), 1,
            "processes that run the timer handlers: 1 runs them in the "
            "timer process, N > 1 makes it fork N handler processes"),
    Setting("log_level", to_level, log.L_NOTICE,
            "log verbosity: -3 alert .. 4 debug", aliases=("debug",)),
    Setting("stderror_enabled", to_bool, False,
            "log to standard error", aliases=("log_stderror",)),
    Setting("syslog_enabled", to_bool, True, "log to syslog"),
    Setting("syslog_facility", to_facility, "LOG_DAEMON",
            "syslog facility, e.g. LOG_LOCAL0"),
    Setting("syslog_name", to_str, "opensipy", "syslog identity"),
    Setting("stderror_log_format", lambda v, k: log.to_log_format(v),
            "plain", "format of the lines logged to stderr: plain or json "
            "(one JSON object per line)"),
    Setting("syslog_log_format", lambda v, k: log.to_log_format(v),
            "plain", "format of the messages logged to syslog: plain or "
            "json"),
    Setting("xlog_level", to_level, log.L_NOTICE,
            "xlog() messages above this level are not printed"),
    Setting("xlog_print_level", to_level, log.L_ERR,
            "the level of an xlog() called without one"),
    Setting("mpath", to_str, "", "directory searched first by loadmodule"),
    Setting("maxbuffer", lambda v, k: _positive(to_int(v)), 262144,
            "receive buffer requested for each UDP socket (SO_RCVBUF, in "
            "bytes; the kernel doubles it, up to net.core.rmem_max)"),
    Setting("dns_try_ipv6", to_bool, False,
            "also look up AAAA records (IPv6) for a name"),
    Setting("dns_try_naptr", to_bool, True,
            "look up NAPTR records first when a SIP URI names a domain "
            "with neither port nor transport (RFC 3263)"),
    Setting("dns_retr_time", to_int, -1,
            "seconds to wait for one name server's answer before trying "
            "again (-1: resolv.conf's timeout, at most 2)"),
    Setting("dns_retr_no", to_int, -1,
            "tries per name server (-1: 2)"),
    Setting("dns_servers_no", to_int, -1,
            "how many of the name servers to use (-1: all)"),
    Setting("dns_use_search_list", to_bool, True,
            "apply resolv.conf's search list to names without a dot"),
    Setting("dns_server", lambda v, k: _nameserver(to_str(v)), [],
            "opensipy: a name server ip[:port] to use instead of "
            "resolv.conf's; may repeat", multi=True),
    Setting("exec_msg_threshold", lambda v, k: _non_negative(to_int(v)), 0,
            "microseconds a route over a SIP message may run before a "
            "warning and E_CORE_THRESHOLD (0: never)"),
    Setting("event_shm_threshold",
            lambda v, k: _percent(to_int(v)), 0,
            "percent of shared memory in use that raises "
            "E_CORE_SHM_THRESHOLD (0: never)"),
    Setting("debug_mode", to_bool, False,
            "foreground, log to stderr, log_level 4, one worker per socket"),
]

_BY_NAME = {}
for _s in SETTINGS:
    _BY_NAME[_s.name] = _s
    for _a in _s.aliases:
        _BY_NAME[_a] = _s


def _nameserver(text: str):
    host, port = _split_hostport(text, 53)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return host, port
def _non_negative(n: int) -> int:
    if n < 0:
        raise ValueError("must not be negative")
    return n


def _percent(n: int) -> int:
    if not 0 <= n <= 100:
        raise ValueError("must be a percentage, 0 to 100")
    return n


def _positive(n: int) -> int:
    if n < 1:
        raise ValueError("must be at least 1")
    return n


class Settings:
    """The current values, one attribute per setting (canonical names)."""

    def __init__(self):
        for s in SETTINGS:
            setattr(self, s.name, list(s.default) if s.multi else s.default)

    @property
    def sockets(self) -> List[SocketInfo]:
        return self.socket

    @property
    def aliases(self):
        return self.alias

    def set(self, name: str, value, kind: str = "str", loc=None) -> None:
        s = _BY_NAME.get(name)
        if s is None:
            raise ConfigError(f"unknown global parameter '{name}'", loc)
        try:
            v = s.convert(value, kind)
        except ValueError as e:
            raise ConfigError(f"bad value for '{name}': {e}", loc) from None
        if s.multi:
            getattr(self, s.name).append(v)
        else:
            setattr(self, s.name, v)


settings = Settings()


def reset() -> None:
    """Fresh defaults (used when a process loads a new script, and by tests)."""
    global settings
    settings = Settings()


def describe() -> str:
    """The table of global parameters, for ``opensipy -h`` and the docs."""
    lines = []
    for s in SETTINGS:
        names = ", ".join((s.name,) + s.aliases)
        default = s.default if not s.multi else "(none)"
        lines.append(f"  {names:34} {s.help} [default: {default}]")
    return "\n".join(lines)
