"""The address table (OpenSIPS's ``address``: grp, ip, mask, port, proto,
pattern, context_info) cached in shared memory.

The rows read from the database are kept, serialized, in a shared hash
table with a version counter beside it, so a reload done by any process
(the MI process for ``address_reload``) is seen by every worker: each
process compares the counter with the version it parsed last (one atomic
read per check) and parses the shared copy again only when it changed.
The parsed form has the single addresses (mask 32 / 128) in a dict by IP
and the subnets in a list ordered by group, as OpenSIPS's hash and subnet
tables.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import json
from typing import Dict, List, Optional, Tuple

from opensipy import shm

GROUP_ANY = 0
PORT_ANY = 0
PROTOS = ("any", "udp", "tcp", "tls", "sctp", "ws", "wss", "none")
_KEY = b"address"


class Entry:
    __slots__ = ("grp", "net", "port", "proto", "pattern", "info")

    def __init__(self, grp, net, port, proto, pattern, info):
        self.grp = grp
        self.net = net
        self.port = port
        self.proto = proto
        self.pattern = pattern
        self.info = info

    @property
    def is_address(self) -> bool:
        return self.net.prefixlen == self.net.max_prefixlen

    def matches(self, grp, port, proto, pattern) -> bool:
        if grp != GROUP_ANY and self.grp != grp and self.grp != GROUP_ANY:
            return False
        if self.port != PORT_ANY and port != PORT_ANY and self.port != port:
            return False
        if self.proto == "none":
            return False
        if self.proto != "any" and proto != "any" and self.proto != proto:
            return False
        if self.pattern and pattern is not None:
            if not fnmatch.fnmatchcase(pattern, self.pattern):
                return False
        return True

    def mi(self) -> dict:
        net = self.net
        if self.is_address:
            mask = str(net.max_prefixlen)
        else:
            mask = str(net.netmask)
        return {"grp": self.grp, "ip": str(net.network_address),
                "mask": mask, "port": self.port, "proto": self.proto,
                "pattern": self.pattern, "context_info": self.info}


def entry_of(row) -> Entry:
    """A row (grp, ip, mask, port, proto, pattern, context_info) checked;
    ValueError names what is wrong."""
    grp, ip, mask, port, proto, pattern, info = row
    try:
        addr = ipaddress.ip_address(str(ip).strip())
    except ValueError:
        raise ValueError(f"bad ip {ip!r}") from None
    if mask is None:
        mask = addr.max_prefixlen
    mask = int(mask)
    if not 0 <= mask <= addr.max_prefixlen:
        raise ValueError(f"bad mask {mask} for {ip}")
    net = ipaddress.ip_network(f"{addr}/{mask}", strict=False)
    proto = (proto or "any").strip().lower()
    if proto not in PROTOS:
        raise ValueError(f"bad proto {proto!r}")
    port = int(port or 0)
    if not 0 <= port <= 65535:
        raise ValueError(f"bad port {port}")
    return Entry(int(grp or 0), net, port, proto, pattern or None,
                 info if info is not None else None)


class Parsed:
    """One process's parsed copy."""

    def __init__(self, entries: List[Entry]):
        self.addresses: Dict[str, List[Entry]] = {}
        self.subnets: List[Entry] = []
        for e in entries:
            if e.is_address:
                self.addresses.setdefault(str(e.net.network_address),
                                          []).append(e)
            else:
                self.subnets.append(e)
        self.subnets.sort(key=lambda e: e.grp)
        self.count = len(entries)

    def match(self, grp, ip, port, proto, pattern) -> Optional[Entry]:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for e in self.addresses.get(str(addr), ()):
            if e.matches(grp, port, proto, pattern):
                return e
        for e in self.subnets:
            if addr.version == e.net.version and addr in e.net \
                    and e.matches(grp, port, proto, pattern):
                return e
        return None

    def group_of(self, ip, port) -> Optional[int]:
        e = self.match(GROUP_ANY, ip, port, "any", None)
        return e.grp if e is not None else None


class AddressCache:
    """The shared copy (create in the attendant) and this process's parse."""

    def __init__(self, module: str = "permissions"):
        self.ht = shm.HashTable(4, module)
        self.version = shm.AtomicCounter(0, module)
        self._local: Tuple[int, Optional[Parsed]] = (-1, None)

    def store(self, rows) -> int:
        """Check ``rows``, publish them; returns how many.  ValueError (the
        first bad row) leaves the published table as it was."""
        entries = [entry_of(r) for r in rows]
        data = json.dumps([list(r) for r in rows]).encode()
        self.ht.put(_KEY, data)
        self.version.inc()
        self._local = (-1, None)
        return len(entries)

    def get(self) -> Parsed:
        v = self.version.get()
        lv, parsed = self._local
        if lv == v and parsed is not None:
            return parsed
        data = self.ht.get(_KEY)
        rows = json.loads(data) if data else []
        parsed = Parsed([entry_of(r) for r in rows])
        self._local = (v, parsed)
        return parsed

    def destroy(self) -> None:
        self.ht.destroy()
        self.version.destroy()
