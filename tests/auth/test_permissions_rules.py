"""The allow/deny file syntax and OpenSIPS's pair algorithm, and the
address entries' checks, without a server."""
import pytest

from opensipy_modules.permissions import address, rules


def test_rules_all_except_and_lists():
    rs = rules.parse_rules(
        '# comment\n'
        '\n'
        'ALL EXCEPT "^sip:boss@" : "@evil\\.org$", "@bad\\."  # trailing\n'
        '"^sip:a@", "^sip:b@" : ALL\n', "f")
    (l1, r1), (l2, r2) = rs
    assert l1.match("sip:joe@x") and not l1.match("SIP:BOSS@x")
    assert r1.match("sip:x@evil.org") and r1.match("sip:x@bad.net")
    assert not r1.match("sip:x@good.org")
    assert l2.match("sip:b@x") and not l2.match("sip:c@x")


@pytest.mark.parametrize("text,why", [
    ('"a" "b"', "':'"),
    ('"a" : "b" : "c"', "one ':'"),
    ('"a : ALL', "unterminated"),
    ('"(" : ALL', "bad expression"),
    ('"a", : ALL', "incomplete"),
    ('ALL EXCEPT : ALL', "incomplete"),
    ('"a" ; ALL', "unexpected"),
])
def test_rule_syntax_errors_name_the_line(text, why):
    with pytest.raises(rules.RuleError, match=why) as e:
        rules.parse_rules("\n" + text, "perm.allow")
    assert "perm.allow:2" in str(e.value)


def test_pairs_algorithm(tmp_path):
    (tmp_path / "a").write_text('"^sip:alice@" : ALL\n')
    (tmp_path / "d").write_text('ALL : "^sip:900"\n')
    allow = rules.RuleFile(str(tmp_path / "a"))
    deny = rules.RuleFile(str(tmp_path / "d"))
    missing = rules.RuleFile(str(tmp_path / "nope"))
    assert rules.check_pairs(allow, deny, [("sip:alice@x", "sip:900")]) == 1
    assert rules.check_pairs(allow, deny, [("sip:bob@x", "sip:900")]) == -1
    assert rules.check_pairs(allow, deny, [("sip:bob@x", "sip:1")]) == 1
    # one branch denied is enough
    assert rules.check_pairs(allow, deny, [("sip:bob@x", "sip:1"),
                                           ("sip:bob@x", "sip:900")]) == -1
    assert not missing.exists
    assert rules.check_pairs(missing, missing, [("a", "b")]) == 1


@pytest.mark.parametrize("row,why", [
    ((1, "1.2.3.999", 32, 0, "any", None, None), "bad ip"),
    ((1, "1.2.3.4", 33, 0, "any", None, None), "bad mask"),
    ((1, "1.2.3.4", 32, 70000, "any", None, None), "bad port"),
    ((1, "1.2.3.4", 32, 0, "carrier-pigeon", None, None), "bad proto"),
])
def test_bad_address_rows(row, why):
    with pytest.raises(ValueError, match=why):
        address.entry_of(row)


def test_address_cache_is_shared_and_versioned():
    import os
    c = address.AddressCache("test")
    try:
        c.store([(1, "127.0.0.1", 32, 0, "any", None, "lo")])
        assert c.get().match(1, "127.0.0.1", 5060, "udp", None).info == "lo"
        pid = os.fork()
        if pid == 0:
            c.store([(7, "10.0.0.0", 8, 0, "any", None, "ten")])
            os._exit(0)
        os.waitpid(pid, 0)
        t = c.get()          # the child's reload is seen here
        assert t.match(1, "127.0.0.1", 0, "any", None) is None
        assert t.group_of("10.9.9.9", 1) == 7
        assert t.match(0, "::ffff:10.1.1.1", 0, "any", None).grp == 7
    finally:
        c.destroy()


def test_address_cache_hammered_by_readers_while_one_process_reloads():
    """Four readers check while a writer publishes 200 tables: a reader
    always sees one whole table (both of its rows agree on the
    generation), never a mix or an error."""
    import os
    c = address.AddressCache("test")

    def table(gen):
        return [(gen, "10.0.0.1", 32, 0, "any", None, f"g{gen}"),
                (gen, "10.1.0.0", 16, 0, "any", None, f"g{gen}")]
    c.store(table(1))
    try:
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                bad = 0
                seen = set()
                try:
                    for _ in range(3000):
                        t = c.get()
                        a = t.match(0, "10.0.0.1", 0, "any", None)
                        b = t.match(0, "10.1.2.3", 0, "any", None)
                        if a is None or b is None or a.info != b.info \
                                or a.grp != b.grp:
                            bad += 1
                        else:
                            seen.add(a.grp)
                except Exception:
                    bad += 1000
                os._exit(0 if bad == 0 and seen else 1)
            pids.append(pid)
        for gen in range(2, 202):
            c.store(table(gen))
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1])
                 for p in pids]
        assert codes == [0, 0, 0, 0]
        assert c.get().match(0, "10.0.0.1", 0, "any", None).grp == 201
    finally:
        c.destroy()
