"""permissions in the real server: the address table on SQLite cached in
shm (check_source_address, check_address with subnets, ports, protocols,
patterns and context_info, get_source_group), MI address_reload seen by
every worker, address_dump/subnet_dump in OpenSIPS's shape, a bad row
refused by the reload; allow_routing, allow_register and allow_uri from
allow/deny files next to the script."""
import sqlite3

import pytest

from opensipy.db import admin

from digestclient import Phone
from server import free_port, mi_call

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=3
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "db_sqlite.so"
loadmodule "permissions.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("permissions", "db_url", "{url}")

route {{
    if (check_source_address(1, $avp(ctx)))
        append_to_reply("X-Trusted: $avp(ctx)\r\n");
    if (get_source_group($var(g)))
        append_to_reply("X-Group: $var(g)\r\n");
    if (is_present_hf("X-Addr")) {{
        if (check_address($hdr(X-Group), "$hdr(X-Addr)", $hdr(X-Port),
                          "$hdr(X-Proto)", $avp(c2), "$hdr(X-Pat)"))
            append_to_reply("X-Addr-Ok: $avp(c2)\r\n");
    }}
    if (is_method("REGISTER")) {{
        if (allow_register("register"))
            send_reply(200, "OK");
        else
            send_reply(403, "Forbidden Contact");
        exit;
    }}
    if (is_method("REFER")) {{
        if (allow_uri("refer", "$(hdr(Refer-To){{nameaddr.uri}})"))
            send_reply(202, "Accepted");
        else
            send_reply(403, "Forbidden Target");
        exit;
    }}
    if (!allow_routing()) {{
        send_reply(403, "Forbidden Route");
        exit;
    }}
    send_reply(200, "Routed");
}}
"""

ALLOW = r'''
# alice may call anyone at example.com
"^sip:alice@" : "^sip:.*@example\.com"
'''
DENY = r'''
ALL : "^sip:900" , "^sip:.*@premium\."    # premium numbers
"^sip:mallory@" : ALL
'''
REG_ALLOW = ''
REG_DENY = r'''
ALL : "^sip:.*@10\.0\.0\.1(:|;|$)"   # the PSTN gateway
'''
REFER_DENY = r'''
ALL EXCEPT "^sip:boss@" : "^sip:.*@evil\.org"
'''


@pytest.fixture
def rig(server, tmp_path):
    path = tmp_path / "perm.db"
    url = f"sqlite://{path}"
    admin.create(url, ["permissions"])
    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO address (grp, ip, mask, port, proto, pattern, "
        "context_info) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(1, "127.0.0.1", 32, 0, "any", None, "loopback"),
         (2, "10.1.0.0", 16, 5060, "udp", "sip:*@gw", "gateways"),
         (2, "192.0.2.7", 32, 0, "tcp", None, "tcp-only"),
         (3, "2001:db8::", 32, 0, "any", None, "v6-net")])
    con.commit()
    con.close()
    (tmp_path / "permissions.allow").write_text(ALLOW)
    (tmp_path / "permissions.deny").write_text(DENY)
    (tmp_path / "register.allow").write_text(REG_ALLOW)
    (tmp_path / "register.deny").write_text(REG_DENY)
    (tmp_path / "refer.deny").write_text(REFER_DENY)
    sip, mi = free_port(), free_port()
    server.start(SCRIPT.format(sip=sip, mi=mi, url=url))
    phones = []

    class R:
        pass
    r = R()
    r.sip, r.mi, r.path = sip, mi, path

    def phone(user="alice"):
        p = Phone(sip, user, "example.com")
        phones.append(p)
        return p
    r.phone = phone
    yield r
    for p in phones:
        p.close()


def addr_hdrs(ip, group=2, port=5060, proto="udp", pat="sip:x@gw"):
    return [f"X-Addr: {ip}", f"X-Group: {group}", f"X-Port: {port}",
            f"X-Proto: {proto}", f"X-Pat: {pat}"]


def test_source_address_is_trusted_and_grouped(rig):
    r = rig.phone().request("OPTIONS", "sip:bob@example.com")
    assert r.hdr("X-Trusted") == "loopback"
    assert r.hdr("X-Group") == "1"


@pytest.mark.parametrize("hdrs,ok", [
    (addr_hdrs("10.1.2.3"), "gateways"),                 # in the subnet
    (addr_hdrs("10.2.0.1"), None),                       # outside
    (addr_hdrs("10.1.2.3", port=5070), None),            # other port
    (addr_hdrs("10.1.2.3", port=0), "gateways"),         # any port
    (addr_hdrs("10.1.2.3", proto="tcp"), None),          # other proto
    (addr_hdrs("10.1.2.3", proto="any"), "gateways"),
    (addr_hdrs("10.1.2.3", pat="sip:x@other"), None),    # pattern refuses
    (addr_hdrs("10.1.2.3", group=1), None),              # other group
    (addr_hdrs("10.1.2.3", group=0), "gateways"),        # any group
    (addr_hdrs("192.0.2.7", proto="tcp"), "tcp-only"),
    (addr_hdrs("192.0.2.7", proto="udp"), None),
    (addr_hdrs("2001:db8:1::5", group=3), "v6-net"),
    (addr_hdrs("not-an-ip"), None),
])
def test_check_address_allows_and_refuses_by_ip(rig, hdrs, ok):
    r = rig.phone().request("OPTIONS", "sip:bob@example.com", hdrs)
    assert r.hdr("X-Addr-Ok") == ok


def test_reload_is_seen_by_every_worker_and_dump_shapes(rig):
    ph = rig.phone()
    dump = mi_call(rig.mi, "address_dump")
    (part,) = dump["Partitions"]
    assert part["name"] == "default"
    assert {(d["grp"], d["ip"], d["mask"], d["port"], d["proto"],
             d["context_info"]) for d in part["Destinations"]} == {
        (1, "127.0.0.1", "32", 0, "any", "loopback"),
        (2, "192.0.2.7", "32", 0, "tcp", "tcp-only")}
    subnets = mi_call(rig.mi, "subnet_dump")["Partitions"][0]["Destinations"]
    assert [(d["ip"], d["mask"], d["pattern"]) for d in subnets] == [
        ("10.1.0.0", "255.255.0.0", "sip:*@gw"),
        ("2001:db8::", "ffff:ffff::", None)]
    con = sqlite3.connect(rig.path)
    con.execute("DELETE FROM address WHERE grp = 1")
    con.commit()
    # not yet reloaded: still trusted
    assert ph.request("OPTIONS", "sip:b@example.com").hdr("X-Trusted") \
        == "loopback"
    assert mi_call(rig.mi, "address_reload") == "OK"
    # every worker (3) answers from the new table
    for _ in range(9):
        r = ph.request("OPTIONS", "sip:b@example.com")
        assert r.hdr("X-Trusted") is None and r.hdr("X-Group") is None
    # a bad row: the reload fails and the table in use stays
    con.execute("INSERT INTO address (grp, ip, mask) VALUES "
                "(1, '127.0.0.1', 99)")
    con.commit()
    con.close()
    with pytest.raises(AssertionError, match="Failed to reload"):
        mi_call(rig.mi, "address_reload")
    assert len(mi_call(rig.mi, "address_dump")["Partitions"][0]
               ["Destinations"]) == 1


def test_allow_routing_from_the_default_files(rig):
    assert rig.phone("alice").request(
        "INVITE", "sip:900123@example.com").reason == "Routed"   # allowed
    assert rig.phone("bob").request(
        "INVITE", "sip:900123@example.com").reason == "Forbidden Route"
    assert rig.phone("bob").request(
        "INVITE", "sip:carol@premium.example.net").status == 403
    assert rig.phone("bob").request(
        "INVITE", "sip:carol@example.com").reason == "Routed"     # no rule
    assert rig.phone("mallory").request(
        "INVITE", "sip:carol@example.com").status == 403


def test_allow_register_refuses_the_gateway_contact(rig):
    ph = rig.phone("alice")
    assert ph.request("REGISTER", "sip:example.com").status == 200
    r = ph.request("REGISTER", "sip:example.com",
                   ["Contact: <sip:alice@10.0.0.1:5060>"])
    assert r.status == 403


def test_allow_uri_checks_the_refer_target(rig):
    assert rig.phone("bob").request(
        "REFER", "sip:carol@example.com",
        ["Refer-To: <sip:x@evil.org>"]).reason == "Forbidden Target"
    assert rig.phone("boss").request(
        "REFER", "sip:carol@example.com",
        ["Refer-To: <sip:x@evil.org>"]).status == 202
    assert rig.phone("bob").request(
        "REFER", "sip:carol@example.com",
        ["Refer-To: <sip:x@good.org>"]).status == 202
