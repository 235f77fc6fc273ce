"""A small authoritative DNS server on 127.0.0.1 for the resolver tests.

It answers from a zone given as ``{(name, type): (ttl, [rdata text])}``,
NXDOMAIN with an SOA (whose minimum is ``negative_ttl``) for names it does
not know, and records every question in ``queries`` so a test can see what
the resolver asked and when it answered from its cache.  ``silent=True``
makes it swallow queries (a dead name server).
"""
from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

ZONE_SOA = "ns.test. admin.test. 1 3600 600 86400 {minimum}"


class FakeDNS:
    def __init__(self, zone=None, negative_ttl=60, silent=False):
        self.zone = dict(zone or {})
        self.negative_ttl = negative_ttl
        self.silent = silent
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def asked(self, name=None, rdtype=None):
        return [q for q in self.queries
                if (name is None or q[0] == name.lower().rstrip("."))
                and (rdtype is None or q[1] == rdtype)]

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:      # noqa: BLE001 - not DNS: ignore
                continue
            question = q.question[0]
            name = question.name.to_text().lower().rstrip(".")
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            if self.silent:
                continue
            resp = dns.message.make_response(q)
            resp.flags |= dns.flags.AA
            entry = self.zone.get((name, rdtype))
            if entry is not None:
                ttl, rdatas = entry
                if rdatas:
                    resp.answer.append(dns.rrset.from_text_list(
                        question.name, ttl, "IN", rdtype, rdatas))
            elif any(n == name for n, _ in self.zone):
                pass        # the name exists, not this type: NODATA
            else:
                resp.set_rcode(dns.rcode.NXDOMAIN)
            if not resp.answer:
                resp.authority.append(dns.rrset.from_text(
                    "test.", self.negative_ttl, "IN", "SOA",
                    ZONE_SOA.format(minimum=self.negative_ttl)))
            self.sock.sendto(resp.to_wire(), peer)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
