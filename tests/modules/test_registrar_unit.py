"""registrar and usrloc over parsed messages, without sockets: the flag
parsers, lookup's ordering, branches and filters, Path modes, and a table
hammered from several processes."""
import os
import time

import pytest

from opensipy import shm, statistics

import modkit
import opensipy_modules.registrar as reg
import opensipy_modules.usrloc as ul


class Replies:
    def __init__(self):
        self.sent = []

    def reply(self, msg, code, reason, headers=()):
        self.sent.append((code, reason, list(headers)))
        return 1


@pytest.fixture
def table(stats_registry):
    statistics.register_stat("usrloc", "registered_users")
    saved = (ul.registered_users, dict(ul._domains), reg.ul, reg.sig)
    ul.registered_users = statistics.get_stat("usrloc:registered_users")
    ul._domains.clear()
    reg.ul = ul.load_api()
    reg.sig = Replies()
    d = ul.register_udomain("location")
    yield d
    d.ht.destroy()
    ul.registered_users, reg.ul, reg.sig = saved[0], saved[2], saved[3]
    ul._domains.clear()
    ul._domains.update(saved[1])


def register(table, contacts, flags="", extra=(), callid="c1", cseq=1,
             to="bob"):
    hdrs = [f"Contact: {c}" for c in contacts] + list(extra)
    data = modkit.request(method="REGISTER", ruri="sip:example.com",
                          callid=callid, cseq=cseq, extra=hdrs)
    data = data.replace(b"To: <sip:bob@example.com>",
                        f"To: <sip:{to}@example.com>".encode())
    m = modkit.parse(data)
    rc = reg.save(m, table, reg.fixup_save_flags(flags))
    return rc, reg.sig.sent[-1] if reg.sig.sent else None


def test_save_flags_words_and_old_letters():
    f = reg.fixup_save_flags("memory-only, no-reply,max-contacts=5 "
                             "path-lazy")
    assert (f.memory_only, f.no_reply, f.max_contacts, f.path_mode) == \
        (True, True, 5, reg.PATH_LAZY)
    f = reg.fixup_save_flags("mrc3p2")
    assert (f.memory_only, f.no_reply, f.max_contacts, f.path_mode) == \
        (True, True, 3, reg.PATH_STRICT)
    for bad in ("bogus", "max-contacts", "max-contacts=x", "matching-mode=9"):
        with pytest.raises(ValueError):
            reg.fixup_save_flags(bad)
    f = reg.fixup_lookup_flags("method-filtering,no-branches,"
                               "ua-filtering=/yealink/i")
    assert f.method_filtering and f.no_branches
    assert f.ua_regex.search("YEALINK T46")
    with pytest.raises(ValueError):
        reg.fixup_lookup_flags("global")


def test_lookup_orders_by_q_and_branches_the_rest(table):
    rc, r = register(table, ["<sip:low@192.0.2.1>;q=0.1",
                             "<sip:high@192.0.2.2>;q=0.9",
                             "<sip:mid@192.0.2.3>;q=0.5"],
                     extra=["Expires: 600"])
    assert rc == 1 and r[0] == 200
    assert [h.split(";")[0] for h in r[2] if h.startswith("Contact")] == [
        "Contact: <sip:high@192.0.2.2>", "Contact: <sip:mid@192.0.2.3>",
        "Contact: <sip:low@192.0.2.1>"]
    m = modkit.parse(modkit.request(ruri="sip:bob@example.com"))
    assert reg.lookup(m, table) == 1
    assert m.new_uri == "sip:high@192.0.2.2"
    assert [(b.uri, b.q) for b in m.branches] == [
        ("sip:mid@192.0.2.3", "0.5"), ("sip:low@192.0.2.1", "0.1")]
    m = modkit.parse(modkit.request(ruri="sip:bob@example.com"))
    assert reg.lookup(m, table, reg.fixup_lookup_flags("no-branches")) == 1
    assert not getattr(m, "branches", None)
    m = modkit.parse(modkit.request(ruri="sip:nobody@example.com"))
    assert reg.lookup(m, table) == -1


def test_method_filtering_gives_minus_two(table):
    register(table, ["<sip:bob@192.0.2.1>"],
             extra=["Expires: 600", "Allow: INVITE, ACK, BYE"])
    m = modkit.parse(modkit.request(method="MESSAGE",
                                    ruri="sip:bob@example.com"))
    f = reg.fixup_lookup_flags("method-filtering")
    assert reg.lookup(m, table, f) == -2
    m = modkit.parse(modkit.request(method="INVITE",
                                    ruri="sip:bob@example.com"))
    assert reg.lookup(m, table, f) == 1


def test_path_modes(table):
    path = ["Path: <sip:edge.example.net;lr>", "Expires: 600"]
    rc, r = register(table, ["<sip:bob@10.0.0.1>"], "path-strict", path)
    assert (rc, r[0]) == (-1, 420)
    assert "Unsupported: path" in r[2]
    rc, r = register(table, ["<sip:bob@10.0.0.1>"], "path-lazy",
                     path + ["Supported: path"], cseq=2)
    assert rc == 1 and "Path: <sip:edge.example.net;lr>" in r[2]
    rc, r = register(table, ["<sip:bob@10.0.0.1>"], "path-off",
                     path + ["Supported: path"], cseq=3)
    assert rc == 1 and not [h for h in r[2] if h.startswith("Path")]
    # the stored Path takes requests to the edge proxy
    m = modkit.parse(modkit.request(ruri="sip:bob@example.com"))
    assert reg.lookup(m, table) == 1
    assert m.new_uri == "sip:bob@10.0.0.1"
    assert m.dst_uri == "sip:edge.example.net;lr"


def test_aor_case_sensitivity(table):
    register(table, ["<sip:x@192.0.2.1>"], extra=["Expires: 600"],
             to="Alice")
    assert table.get("Alice") is not None and table.get("alice") is None
    reg.case_sensitive = 0
    try:
        register(table, ["<sip:y@192.0.2.1>"], extra=["Expires: 600"],
                 to="Carol", callid="c2")
        assert table.get("carol") is not None
    finally:
        reg.case_sensitive = 1


def test_retransmission_within_cseq_delay_is_answered_not_applied(table):
    rc, _ = register(table, ["<sip:bob@192.0.2.1>"], extra=["Expires: 600"],
                     cseq=7)
    before = table.get("bob").contacts[0].expires
    time.sleep(1.1)
    rc, r = register(table, ["<sip:bob@192.0.2.1>"], extra=["Expires: 600"],
                     cseq=7)
    assert (rc, r[0]) == (1, 200)
    assert table.get("bob").contacts[0].expires == before


def _writer(table_name, n, aor):
    d = ul.get_udomain(table_name)
    for i in range(n):
        with d.locked(aor):
            old = d.get(aor)
            contacts = list(old.contacts) if old else []
            contacts.append(ul.UContact(f"sip:{os.getpid()}-{i}@h",
                                        expires=0))
            d.put(ul.URecord(aor, contacts), old)
    os._exit(0)


def test_table_is_consistent_under_writers_in_several_processes(table):
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                _writer("location", 50, "shared")
            finally:
                os._exit(1)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    rec = table.get("shared")
    assert len(rec.contacts) == 200
    assert len({c.contact for c in rec.contacts}) == 200
    assert table.contacts.get() == 200 and table.users.get() == 1


def test_branch_flags_are_kept_with_the_contact(table):
    data = modkit.request(method="REGISTER", ruri="sip:example.com",
                          extra=["Contact: <sip:bob@192.0.2.1>",
                                 "Contact: <sip:bob@192.0.2.2>;q=0.1",
                                 "Expires: 600"])
    m = modkit.parse(data)
    m.ruri_bflags = 0b1010          # e.g. setbflag(NAT) before save()
    assert reg.save(m, table) == 1
    inv = modkit.parse(modkit.request(ruri="sip:bob@example.com"))
    assert reg.lookup(inv, table) == 1
    assert inv.ruri_bflags == 0b1010
    assert inv.branches[0].bflags == 0b1010


def test_gruu_pub_and_temp_reach_their_instance(table):
    import re as _re
    reg.disable_gruu = 0
    try:
        inst = '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
        rc, r = register(table, [f"<sip:bob@192.0.2.1>;+sip.instance={inst}",
                                 "<sip:bob@192.0.2.2>;q=0.9"],
                         extra=["Expires: 600", "Supported: gruu"])
        assert rc == 1
        line = [h for h in r[2] if "192.0.2.1" in h][0]
        pub = _re.search(r'pub-gruu="([^"]+)"', line).group(1)
        temp = _re.search(r'temp-gruu="([^"]+)"', line).group(1)
        assert pub == ("sip:bob@example.com;"
                       "gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
        assert temp.startswith("sip:tgruu.") and temp.endswith(
            "@example.com;gr")
        # the other contact (no instance) gets none
        assert "gruu" not in [h for h in r[2] if "192.0.2.2" in h][0]
        for gruu in (pub, temp):
            m = modkit.parse(modkit.request(ruri=gruu))
            assert reg.lookup(m, table) == 1
            assert m.new_uri == "sip:bob@192.0.2.1"
            assert not getattr(m, "branches", None)
        # a new registration Call-ID: the old temporary GRUU is gone
        register(table, [f"<sip:bob@192.0.2.1>;+sip.instance={inst}"],
                 extra=["Expires: 600", "Supported: gruu"], callid="c9")
        m = modkit.parse(modkit.request(ruri=temp))
        assert reg.lookup(m, table) == -1
        # without Supported: gruu no GRUU is given
        rc, r = register(table, ["<sip:bob@192.0.2.2>"],
                         extra=["Expires: 600"], callid="c9", cseq=2)
        assert not any("gruu" in h for h in r[2])
    finally:
        reg.disable_gruu = 1


def test_add_sock_hdr_and_the_socket_header_flag(table, srv_sock):
    m = modkit.parse(modkit.request(method="REGISTER"), si=srv_sock)
    assert reg.add_sock_hdr(m, "Sock-Info") == 1
    from opensipy.parser import SipMsg
    assert SipMsg(m.build()).hdr("Sock-Info") == srv_sock.name
    reg.sock_hdr_name = "Sock-Info"
    try:
        rc, _ = register(table, ["<sip:bob@192.0.2.1>"], "socket-header",
                         extra=["Expires: 600",
                                "Sock-Info: udp:192.0.2.50:5070"])
        assert rc == 1
        assert table.get("bob").contacts[0].socket == "udp:192.0.2.50:5070"
    finally:
        reg.sock_hdr_name = ""
    with pytest.raises(ValueError):
        reg._fixup_hdr_name("bad name")


def test_non_ascii_digits_in_expires_are_a_bad_expires(table):
    # str.isdigit() is true for '³' but int() refuses it: save() used to
    # stop with ValueError instead of answering 400
    rc, sent = register(table, ["<sip:bob@10.0.0.1>"],
                        extra=["Expires: \u00b3"])
    assert (rc, sent[:2]) == (-1, (400, "Bad Expires"))
    rc, sent = register(table, ['<sip:bob@10.0.0.1>;expires="\u00b2"'])
    assert (rc, sent[:2]) == (-1, (400, "Bad Expires"))
    assert table.get("bob") is None
