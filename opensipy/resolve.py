"""Name resolution for SIP: RFC 3263 (NAPTR, SRV, A/AAAA) with a TTL cache.

Every process keeps its own cache (records live for their DNS TTL; a name
that does not exist for its negative TTL; a lookup that timed out for a few
seconds, so a dead name server costs one bounded wait, not one per message).
A lookup blocks the calling process at most ``dns_retr_time`` x
``dns_retr_no`` x the number of name servers used.

Why dnspython: the system resolver (``getaddrinfo``) neither reports TTLs
nor does SRV/NAPTR, and cannot be bounded in time per call.  dnspython is
pure Python, the de-facto standard DNS library, reads ``/etc/resolv.conf``
and gives each answer's TTL.  ``/etc/hosts`` is honoured here, as the
system resolver would, before any DNS query for an address.

Public functions:

* :func:`sip_resolve` (host, port, proto, secure) -> list of :class:`Target`,
  in the order RFC 3263 §4 says to try them (the first is used; the rest are
  what DNS failover walks).
* :func:`resolve_host` (host) -> [(af, ip)], A then AAAA (with
  ``dns_try_ipv6``); IP literals and /etc/hosts names need no query.
* :func:`reply_targets` (host, port, proto): where a reply goes when the
  Via's sent-by is a name (RFC 3263 §5).
* :func:`configure` (re)reads the core parameters; the attendant calls it
  after the script is loaded.
"""
from __future__ import annotations

import os
import random
import socket
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

from . import log

# seconds a lookup that failed for lack of an answer (timeout, no reachable
# name server) is remembered, so the next message does not wait again
FAILURE_TTL = 5.0
# negative answers without an SOA to take the TTL from
DEFAULT_NEGATIVE_TTL = 30.0
# records with a TTL of 0 are still kept this long (one message's worth)
MIN_TTL = 1.0
MAX_ENTRIES = 4096

# RFC 3263 NAPTR services and SRV prefixes per transport
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls",
                  "SIP+D2S": "sctp", "SIP+D2W": "ws", "SIPS+D2W": "wss"}
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp.",
              "sctp": "_sip._sctp.", "ws": "_sip._ws.", "wss": "_sips._ws."}
DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "sctp": 5060, "tls": 5061,
                "ws": 80, "wss": 443}
SECURE = ("tls", "wss")
# the order SRV lookups are tried in when there is no NAPTR (RFC 3263 §4.1:
# the client's preference among the transports it supports)
PROTO_ORDER = ("udp", "tcp", "tls", "sctp", "ws", "wss")


class ResolveError(Exception):
    """A name that cannot be resolved (does not exist, no address, timeout)."""


class Target(NamedTuple):
    proto: str
    af: int
    addr: Tuple[str, int]


# ----------------------------------------------------------------- settings

class _Conf:
    try_ipv6 = False
    try_naptr = True
    retr_time = -1
    retr_no = -1
    servers_no = -1
    use_search = True
    servers: List[Tuple[str, int]] = []
    hosts_file = "/etc/hosts"


conf = _Conf()
_resolver = None
_hosts: Dict[str, List[Tuple[int, str]]] = {}
_hosts_mtime = None
_hosts_checked = 0.0
_hosts_path = None

# (qname, rdtype) -> (expires, value or exception)
_rr_cache: Dict[tuple, tuple] = {}
# (host, port, proto, secure, protos) -> (expires, [Target])
_sip_cache: Dict[tuple, tuple] = {}

stats = {"queries": 0, "failures": 0, "cache_hits": 0}


def configure(settings=None) -> None:
    """Take the dns_* core parameters; forget the resolver and the caches."""
    global _resolver
    if settings is not None:
        conf.try_ipv6 = bool(getattr(settings, "dns_try_ipv6", False))
        conf.try_naptr = bool(getattr(settings, "dns_try_naptr", True))
        conf.retr_time = int(getattr(settings, "dns_retr_time", -1))
        conf.retr_no = int(getattr(settings, "dns_retr_no", -1))
        conf.servers_no = int(getattr(settings, "dns_servers_no", -1))
        conf.use_search = bool(getattr(settings, "dns_use_search_list", True))
        conf.servers = list(getattr(settings, "dns_server", []) or [])
    _resolver = None
    _rr_cache.clear()
    _sip_cache.clear()


def _get_resolver():
    global _resolver
    if _resolver is not None:
        return _resolver
    import dns.resolver
    try:
        r = dns.resolver.Resolver(configure=not conf.servers)
    except dns.resolver.NoResolverConfiguration:
        r = dns.resolver.Resolver(configure=False)
    if conf.servers:
        import dns.nameserver
        r.nameservers = [dns.nameserver.Do53Nameserver(ip, port)
                         for ip, port in conf.servers]
    if not r.nameservers:
        r.nameservers = ["127.0.0.1"]
    if conf.servers_no > 0:
        r.nameservers = r.nameservers[:conf.servers_no]
    # one try of one server: dns_retr_time, else resolv.conf's, at most 2 s
    timeout = conf.retr_time if conf.retr_time > 0 else min(r.timeout, 2.0)
    tries = conf.retr_no if conf.retr_no > 0 else 2
    r.timeout = float(timeout)
    r.lifetime = float(timeout) * tries * len(r.nameservers)
    r.retry_servfail = False
    if not conf.use_search:
        r.search = []
        r.use_search_by_default = False
    else:
        r.use_search_by_default = True
    r.cache = None
    _resolver = r
    return r


# ----------------------------------------------------------------- /etc/hosts

def _load_hosts() -> None:
    """Re-read the hosts file when it changed (checked at most once a
    second) or another file is named."""
    global _hosts, _hosts_mtime, _hosts_checked, _hosts_path
    now = time.monotonic()
    if _hosts_path == conf.hosts_file and _hosts_mtime is not None \
            and 0 <= now - _hosts_checked < 1.0:
        return
    if _hosts_path != conf.hosts_file:
        _hosts_path, _hosts_mtime = conf.hosts_file, None
    _hosts_checked = now
    try:
        mtime = os.stat(conf.hosts_file).st_mtime
    except OSError:
        _hosts, _hosts_mtime = {}, 0
        return
    if mtime == _hosts_mtime:
        return
    table: Dict[str, List[Tuple[int, str]]] = {}
    try:
        with open(conf.hosts_file, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.split("#", 1)[0].split()
                if len(line) < 2:
                    continue
                af = _literal_af(line[0])
                if af is None:
                    continue
                for name in line[1:]:
                    entry = table.setdefault(name.lower().rstrip("."), [])
                    if (af, line[0]) not in entry:
                        entry.append((af, line[0]))
    except OSError:
        table = {}
    _hosts, _hosts_mtime = table, mtime


def _literal_af(host: str) -> Optional[int]:
    """AF_INET / AF_INET6 for an IP address literal, None for a name
    (inet_pton: a tenth of ipaddress's cost, and this runs per message)."""
    try:
        socket.inet_pton(socket.AF_INET, host)
        return socket.AF_INET
    except (OSError, TypeError, ValueError):
        pass
    if ":" in host:
        try:
            socket.inet_pton(socket.AF_INET6, host)
            return socket.AF_INET6
        except (OSError, TypeError, ValueError):
            pass
    return None


# ----------------------------------------------------------------- queries

def _cache_put(cache: dict, key, expires: float, value) -> None:
    if len(cache) >= MAX_ENTRIES:
        now = time.monotonic()
        for k in [k for k, v in cache.items() if v[0] <= now]:
            del cache[k]
        if len(cache) >= MAX_ENTRIES:           # still full: drop the oldest
            for k in list(cache)[:MAX_ENTRIES // 4]:
                del cache[k]
    cache[key] = (expires, value)


def _negative_ttl(exc) -> float:
    """The SOA minimum of a negative answer (RFC 2308), if one came."""
    try:
        responses = exc.responses() if hasattr(exc, "responses") else {}
        for resp in responses.values():
            for rrset in resp.authority:
                if rrset.rdtype == 6:          # SOA
                    return float(min(rrset.ttl, rrset[0].minimum))
    except Exception:       # noqa: BLE001 - best effort, the default stands
        pass
    return DEFAULT_NEGATIVE_TTL


_track: Optional[list] = None     # expiry times seen by sip_resolve's lookups


def _seen(expires: float) -> None:
    if _track is not None:
        _track.append(expires)


def query(name: str, rdtype: str) -> list:
    """The records of one type for a name (rdata objects, possibly []),
    from the cache or DNS.  Raises ResolveError when the name does not exist
    or no answer came in time."""
    key = (name.lower(), rdtype)
    now = time.monotonic()
    hit = _rr_cache.get(key)
    if hit is not None and hit[0] > now:
        stats["cache_hits"] += 1
        _seen(hit[0])
        if isinstance(hit[1], ResolveError):
            raise hit[1]
        return hit[1]
    import dns.exception
    import dns.resolver
    r = _get_resolver()
    stats["queries"] += 1
    try:
        ans = r.resolve(name, rdtype, raise_on_no_answer=False,
                        search=conf.use_search and "." not in name.rstrip("."))
    except dns.resolver.NXDOMAIN as e:
        err = ResolveError(f"{name}: no such domain")
        _cache_put(_rr_cache, key, now + _negative_ttl(e), err)
        _seen(now + _negative_ttl(e))
        raise err from None
    except (dns.exception.Timeout, dns.resolver.NoNameservers,
            dns.resolver.YXDOMAIN, dns.exception.DNSException) as e:
        stats["failures"] += 1
        err = ResolveError(f"{name} {rdtype}: {e.__class__.__name__}: {e}")
        log.LM_WARN(f"DNS lookup of {name} {rdtype} failed: {e}")
        _cache_put(_rr_cache, key, now + FAILURE_TTL, err)
        _seen(now + FAILURE_TTL)
        raise err from None
    if ans.rrset is None:
        records = []
        ttl = max(ans.expiration - time.time(), MIN_TTL)
    else:
        records = list(ans.rrset)
        ttl = max(float(ans.rrset.ttl), MIN_TTL)
    _cache_put(_rr_cache, key, now + ttl, records)
    _seen(now + ttl)
    return records


def resolve_host(host: str) -> List[Tuple[int, str]]:
    """[(af, ip)] for a host: an IP literal as it is, then /etc/hosts, then
    A (and AAAA with dns_try_ipv6).  Raises ResolveError."""
    h = host[1:-1] if host.startswith("[") else host
    af = _literal_af(h)
    if af is not None:
        return [(af, h)]
    name = h.lower().rstrip(".")
    _load_hosts()
    local = _hosts.get(name)
    if local:
        if not conf.try_ipv6:
            v4 = [e for e in local if e[0] == socket.AF_INET]
            return v4 or local
        return local
    if not name:
        raise ResolveError("empty host name")
    out = []
    error = None
    try:
        out += [(socket.AF_INET, r.address) for r in query(name, "A")]
    except ResolveError as e:
        error = e
    if conf.try_ipv6 and not (error and "no such domain" in str(error)):
        try:
            out += [(socket.AF_INET6, r.address) for r in query(name, "AAAA")]
        except ResolveError as e:
            error = error or e
    if not out:
        raise error or ResolveError(f"{name}: no address record")
    return out


def _srv_order(records) -> list:
    """RFC 2782: by priority, then a weighted random pick within each."""
    out = []
    by_prio: Dict[int, list] = {}
    for r in records:
        by_prio.setdefault(r.priority, []).append(r)
    for prio in sorted(by_prio):
        group = by_prio[prio][:]
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                pick = group[0] if len(group) == 1 else random.choice(group)
            else:
                n = random.randint(0, total)
                acc = 0
                pick = group[-1]
                for r in sorted(group, key=lambda r: r.weight):
                    acc += r.weight
                    if acc >= n:
                        pick = r
                        break
            group.remove(pick)
            out.append(pick)
    return out


def _srv_targets(qname: str, proto: str) -> Tuple[List[Target], bool]:
    """(targets, found): the SRV records of qname resolved to addresses."""
    try:
        recs = query(qname, "SRV")
    except ResolveError:
        return [], False
    recs = [r for r in recs if str(r.target) != "."]
    if not recs:
        return [], False
    out = []
    for r in _srv_order(recs):
        try:
            for af, ip in resolve_host(str(r.target).rstrip(".")):
                out.append(Target(proto, af, (ip, r.port)))
        except ResolveError:
            continue
    return out, True


def _host_targets(host, port, proto) -> List[Target]:
    return [Target(proto, af, (ip, port)) for af, ip in resolve_host(host)]


def sip_resolve(host: str, port: Optional[int] = None,
                proto: Optional[str] = None, secure: bool = False,
                protos: Optional[tuple] = None) -> List[Target]:
    """RFC 3263 §4: where a request for sip(s):host[:port][;transport=proto]
    goes, as an ordered list of targets (never empty; ResolveError
    otherwise).  ``protos`` are the transports we can send on (the
    default: udp)."""
    protos = protos or ("udp",)
    key = (host, port, proto, secure, protos)
    now = time.monotonic()
    hit = _sip_cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    return _cached(key, host, _sip_resolve, host, port, proto, secure, protos)


def _cached(key, host, fn, *args) -> List[Target]:
    """Run a resolution, cache its list for as long as the shortest-lived
    record behind it (an IP literal: for ever; a hosts-file name: until the
    file is looked at again)."""
    global _track
    now = time.monotonic()
    _track = []
    try:
        targets = fn(*args)
        touched = _track
    finally:
        _track = None
    if not targets:
        raise ResolveError(f"{host}: no usable SIP target")
    h = host[1:-1] if host.startswith("[") else host
    if _literal_af(h) is not None:
        expires = float("inf")
    else:
        expires = min(touched) if touched else now + MIN_TTL
    _cache_put(_sip_cache, key, expires, targets)
    return targets


def _sip_resolve(host, port, proto, secure, protos) -> List[Target]:
    h = host[1:-1] if host.startswith("[") else host
    literal = _literal_af(h) is not None
    if proto is None and secure:
        proto = "tls"
    # §4.1: an IP address or an explicit port: no NAPTR/SRV
    if literal or port:
        p = proto or "udp"
        return _host_targets(h, port or DEFAULT_PORT.get(p, 5060), p)
    _load_hosts()
    if h.lower().rstrip(".") in _hosts:
        p = proto or "udp"
        return _host_targets(h, DEFAULT_PORT.get(p, 5060), p)
    # a transport given: SRV for it, then A
    if proto is not None:
        targets, found = _srv_targets(SRV_PREFIX.get(proto, "_sip._udp.") + h,
                                      proto)
        if found:
            return targets
        return _host_targets(h, DEFAULT_PORT.get(proto, 5060), proto)
    # NAPTR, then SRV per transport we support, then A on udp (tls for sips)
    if conf.try_naptr:
        targets = _naptr_targets(h, secure, protos)
        if targets is not None:
            return targets
    wanted = [p for p in PROTO_ORDER if p in protos
              and (not secure or p in SECURE)]
    out: List[Target] = []
    for p in wanted:
        targets, found = _srv_targets(SRV_PREFIX[p] + h, p)
        out += targets
    if out:
        return out
    p = "tls" if secure else "udp"
    return _host_targets(h, DEFAULT_PORT[p], p)


def _naptr_targets(host, secure, protos) -> Optional[List[Target]]:
    """The targets NAPTR records point at (None: no usable NAPTR, go on to
    SRV as RFC 3263 §4.1 says)."""
    try:
        recs = query(host, "NAPTR")
    except ResolveError:
        return None
    usable = []
    for r in recs:
        service = r.service.decode("ascii", "replace").upper() \
            if isinstance(r.service, bytes) else str(r.service).upper()
        flags = r.flags.decode("ascii", "replace").lower() \
            if isinstance(r.flags, bytes) else str(r.flags).lower()
        p = NAPTR_SERVICES.get(service)
        if p is None or p not in protos or flags != "s":
            continue
        if secure and p not in SECURE:
            continue
        usable.append((r.order, r.preference, p, str(r.replacement)))
    if not usable:
        return None
    out: List[Target] = []
    for _, _, p, repl in sorted(usable, key=lambda u: (u[0], u[1])):
        targets, _ = _srv_targets(repl.rstrip("."), p)
        out += targets
    return out or None


def reply_targets(host: str, port: Optional[int], proto: str) -> List[Target]:
    """RFC 3263 §5: a reply to a Via sent-by that is a name goes to the
    SRV records of it when no port was given, else to its addresses."""
    key = ("reply", host, port, proto)
    hit = _sip_cache.get(key)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    return _cached(key, host, _reply_targets, host, port, proto)


def _reply_targets(host, port, proto) -> List[Target]:
    h = host[1:-1] if host.startswith("[") else host
    if _literal_af(h) is not None or port:
        return _host_targets(h, port or DEFAULT_PORT.get(proto, 5060), proto)
    targets, found = _srv_targets(SRV_PREFIX.get(proto, "_sip._udp.") + h,
                                  proto)
    if found and targets:
        return targets
    return _host_targets(h, DEFAULT_PORT.get(proto, 5060), proto)
