"""RFC 3263 resolution and the TTL cache (opensipy.resolve) against a real
DNS server on 127.0.0.1 (tests/dnsserver.py), with a fake clock for expiry."""
import socket
import types

import pytest

from opensipy import resolve
from opensipy.resolve import ResolveError, Target

from dnsserver import FakeDNS

V4 = socket.AF_INET


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(resolve.time, "monotonic", c)
    return c


def settings(server, **kw):
    s = types.SimpleNamespace(dns_server=[server.address], dns_retr_time=1,
                              dns_retr_no=1, dns_try_naptr=True,
                              dns_try_ipv6=False, dns_servers_no=-1,
                              dns_use_search_list=False)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


@pytest.fixture
def dns_zone(tmp_path, monkeypatch):
    """Start a FakeDNS with a zone and point the resolver at it."""
    servers = []
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.9.9.9 fromhosts.test "
                     "alias.test\n")
    monkeypatch.setattr(resolve.conf, "hosts_file", str(hosts))

    def make(zone, **kw):
        srv_kw = {k: kw.pop(k) for k in ("negative_ttl", "silent") if k in kw}
        srv = FakeDNS(zone, **srv_kw)
        servers.append(srv)
        resolve.configure(settings(srv, **kw))
        return srv
    yield make
    for s in servers:
        s.close()
    resolve.configure(types.SimpleNamespace())  # back to the defaults
    resolve.conf.servers = []


def test_ip_literals_need_no_query(dns_zone):
    srv = dns_zone({})
    assert resolve.sip_resolve("192.0.2.7") == [
        Target("udp", V4, ("192.0.2.7", 5060))]
    assert resolve.sip_resolve("[::1]", 5070, "udp") == [
        Target("udp", socket.AF_INET6, ("::1", 5070))]
    assert resolve.sip_resolve("192.0.2.7", secure=True) == [
        Target("tls", V4, ("192.0.2.7", 5061))]
    assert srv.queries == []


def test_hosts_file_is_honoured_before_dns(dns_zone):
    srv = dns_zone({})
    assert resolve.resolve_host("fromhosts.test") == [(V4, "10.9.9.9")]
    assert resolve.sip_resolve("alias.test") == [
        Target("udp", V4, ("10.9.9.9", 5060))]
    assert srv.queries == []


def test_a_record_is_cached_for_its_ttl(dns_zone, clock):
    srv = dns_zone({("pbx.test", "A"): (30, ["192.0.2.10", "192.0.2.11"])})
    # an RRset has no order: both addresses, in any order
    assert sorted(resolve.sip_resolve("pbx.test", 5080)) == [
        Target("udp", V4, ("192.0.2.10", 5080)),
        Target("udp", V4, ("192.0.2.11", 5080))]
    assert srv.asked("pbx.test", "A") == [("pbx.test", "A")]
    clock.now += 29
    resolve.sip_resolve("pbx.test", 5080)
    resolve.resolve_host("pbx.test")
    assert len(srv.asked("pbx.test", "A")) == 1      # both from the cache
    clock.now += 2                                   # past the TTL
    srv.zone[("pbx.test", "A")] = (30, ["192.0.2.99"])
    assert resolve.sip_resolve("pbx.test", 5080) == [
        Target("udp", V4, ("192.0.2.99", 5080))]
    assert len(srv.asked("pbx.test", "A")) == 2


def test_nxdomain_is_cached_for_the_soa_minimum(dns_zone, clock):
    srv = dns_zone({}, negative_ttl=20)
    for _ in range(3):
        with pytest.raises(ResolveError, match="no such domain"):
            resolve.resolve_host("nothere.test")
    assert len(srv.asked("nothere.test", "A")) == 1
    clock.now += 21
    with pytest.raises(ResolveError):
        resolve.resolve_host("nothere.test")
    assert len(srv.asked("nothere.test", "A")) == 2


def test_dead_name_server_is_tried_a_bounded_number_of_times(dns_zone, clock):
    srv = dns_zone({}, silent=True, dns_retr_no=2)
    with pytest.raises(ResolveError):
        resolve.resolve_host("slow.test")
    # dns_retr_no=2 tries of the one server, then the lookup gives up...
    assert len(srv.asked("slow.test", "A")) == 2
    # ...and the failure is remembered for a while: no new wait per message
    with pytest.raises(ResolveError):
        resolve.resolve_host("slow.test")
    assert len(srv.asked("slow.test", "A")) == 2
    clock.now += resolve.FAILURE_TTL + 1
    with pytest.raises(ResolveError):
        resolve.resolve_host("slow.test")
    assert len(srv.asked("slow.test", "A")) == 4


def test_srv_by_priority_then_a(dns_zone):
    srv = dns_zone({
        ("_sip._udp.example.test", "SRV"): (60, [
            "20 0 5070 backup.example.test.",
            "10 0 5062 main.example.test."]),
        ("main.example.test", "A"): (60, ["192.0.2.1"]),
        ("backup.example.test", "A"): (60, ["192.0.2.2"]),
    })
    # no NAPTR records: SRV for the transports we support (udp)
    assert resolve.sip_resolve("example.test") == [
        Target("udp", V4, ("192.0.2.1", 5062)),
        Target("udp", V4, ("192.0.2.2", 5070))]
    assert srv.asked("example.test", "NAPTR")
    assert not srv.asked("_sip._tcp.example.test")   # no tcp socket


def test_srv_weights_share_the_load(dns_zone):
    dns_zone({
        ("_sip._udp.lb.test", "SRV"): (60, ["10 90 5060 a.lb.test.",
                                             "10 10 5060 b.lb.test."]),
        ("a.lb.test", "A"): (60, ["192.0.2.1"]),
        ("b.lb.test", "A"): (60, ["192.0.2.2"]),
    })
    firsts = {"192.0.2.1": 0, "192.0.2.2": 0}
    for _ in range(300):
        resolve._sip_cache.clear()
        firsts[resolve.sip_resolve("lb.test", proto="udp")[0].addr[0]] += 1
    assert firsts["192.0.2.1"] > firsts["192.0.2.2"] > 0


def test_naptr_chooses_the_transport_we_support(dns_zone):
    srv = dns_zone({
        ("naptr.test", "NAPTR"): (60, [
            '10 10 "s" "SIPS+D2T" "" _sips._tcp.naptr.test.',
            '20 10 "s" "SIP+D2U" "" _sip._udp.naptr.test.']),
        ("_sip._udp.naptr.test", "SRV"): (60, ["0 0 5066 edge.naptr.test."]),
        ("_sips._tcp.naptr.test", "SRV"): (60, ["0 0 5061 edge.naptr.test."]),
        ("edge.naptr.test", "A"): (60, ["192.0.2.5"]),
    })
    assert resolve.sip_resolve("naptr.test", protos=("udp",)) == [
        Target("udp", V4, ("192.0.2.5", 5066))]
    assert not srv.asked("_sips._tcp.naptr.test")
    resolve._sip_cache.clear()
    assert resolve.sip_resolve("naptr.test", protos=("tls", "udp")) == [
        Target("tls", V4, ("192.0.2.5", 5061)),
        Target("udp", V4, ("192.0.2.5", 5066))]


def test_dns_try_naptr_off_goes_straight_to_srv(dns_zone):
    srv = dns_zone({("_sip._udp.x.test", "SRV"): (60, ["0 0 5099 x.test."]),
                    ("x.test", "A"): (60, ["192.0.2.9"])},
                   dns_try_naptr=False)
    assert resolve.sip_resolve("x.test")[0].addr == ("192.0.2.9", 5099)
    assert not srv.asked(rdtype="NAPTR")


def test_port_or_transport_given(dns_zone):
    srv = dns_zone({("_sip._udp.t.test", "SRV"): (60, ["0 0 5099 h.t.test."]),
                    ("h.t.test", "A"): (60, ["192.0.2.3"]),
                    ("t.test", "A"): (60, ["192.0.2.4"])})
    # an explicit port: A only (RFC 3263 §4.2)
    assert resolve.sip_resolve("t.test", 5070) == [
        Target("udp", V4, ("192.0.2.4", 5070))]
    assert not srv.asked(rdtype="SRV") and not srv.asked(rdtype="NAPTR")
    # a transport without port: SRV for it, no NAPTR
    assert resolve.sip_resolve("t.test", proto="udp") == [
        Target("udp", V4, ("192.0.2.3", 5099))]
    assert not srv.asked(rdtype="NAPTR")


def test_no_srv_falls_back_to_a_on_the_default_port(dns_zone):
    dns_zone({("plain.test", "A"): (60, ["192.0.2.8"])})
    assert resolve.sip_resolve("plain.test") == [
        Target("udp", V4, ("192.0.2.8", 5060))]
    resolve._sip_cache.clear()
    assert resolve.sip_resolve("plain.test", secure=True, protos=("tls",)) \
        == [Target("tls", V4, ("192.0.2.8", 5061))]


def test_ipv6_only_with_dns_try_ipv6(dns_zone):
    zone = {("v6.test", "A"): (60, ["192.0.2.6"]),
            ("v6.test", "AAAA"): (60, ["2001:db8::6"])}
    srv = dns_zone(zone)
    assert resolve.resolve_host("v6.test") == [(V4, "192.0.2.6")]
    assert not srv.asked(rdtype="AAAA")
    resolve.configure(settings(srv, dns_try_ipv6=True))
    assert resolve.resolve_host("v6.test") == [
        (V4, "192.0.2.6"), (socket.AF_INET6, "2001:db8::6")]


def test_reply_to_a_named_sent_by_uses_srv(dns_zone):
    dns_zone({("_sip._udp.uac.test", "SRV"): (60, ["0 0 5555 u.uac.test."]),
              ("u.uac.test", "A"): (60, ["192.0.2.77"]),
              ("uac.test", "A"): (60, ["192.0.2.78"])})
    assert resolve.reply_targets("uac.test", None, "udp") == [
        Target("udp", V4, ("192.0.2.77", 5555))]
    assert resolve.reply_targets("uac.test", 5062, "udp") == [
        Target("udp", V4, ("192.0.2.78", 5062))]


def test_cache_is_bounded(dns_zone, clock, monkeypatch):
    monkeypatch.setattr(resolve, "MAX_ENTRIES", 16)
    zone = {(f"h{i}.test", "A"): (60, [f"192.0.2.{i}"]) for i in range(40)}
    dns_zone(zone)
    for i in range(40):
        resolve.resolve_host(f"h{i}.test")
    assert len(resolve._rr_cache) <= 16


def test_bad_dns_server_parameter_is_a_config_error():
    from opensipy import config
    s = config.Settings()
    with pytest.raises(config.ConfigError, match="not an IP address"):
        s.set("dns_server", "ns.example.com", "str", ("x.cfg", 3, 1))
    s.set("dns_server", "127.0.0.1:5353", "str")
    assert s.dns_server == [("127.0.0.1", 5353)]
