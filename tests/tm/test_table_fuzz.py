"""Random sequences of table operations (hypothesis) against a model:
every call is bounds-checked in C, the table agrees with the model after
each step, and when everything is deleted and let go the memory is back."""
from hypothesis import HealthCheck, given, settings, strategies as st

from opensipy import shm
from opensipy_modules.tm.table import ffi, lib

INVITE, BYE = 1, 8

op = st.one_of(
    st.tuples(st.just("new"), st.integers(0, 5), st.sampled_from([INVITE,
                                                                  BYE])),
    st.tuples(st.just("delete"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("buf"), st.integers(0, 20), st.integers(-2, 14)),
    st.tuples(st.just("timer"), st.integers(0, 20), st.integers(-2, 14)),
    st.tuples(st.just("tick"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("reply"), st.integers(0, 20), st.integers(0, 3)),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(op, max_size=60))
def test_random_operations_keep_the_table_consistent(tmtable, ops):
    t = tmtable
    base_mem = shm.module_usage().get("tm", 0)
    base_inuse = t.inuse()
    held = []            # our references: (cell, key, method)
    live = {}            # (key, method) -> cell while in the table
    for name, a, b in ops:
        if name == "new":
            key = b"k%d" % a
            c, created = t.lookup_or_new(b"fz", 1, key, b)
            assert created in (0, 1)
            assert created == (0 if (key, b) in live else 1)
            if created == 0:
                assert c == live[(key, b)]
            live[(key, b)] = c
            held.append((c, key, b))
        elif name == "delete" and held:
            c, key, m = held[a % len(held)]
            r = t.delete(c)
            assert r == (0 if live.get((key, m)) == c else 1)
            live.pop((key, m), None) if live.get((key, m)) == c else None
        elif name == "buf" and held:
            c = held[a % len(held)][0]
            r = lib.tm_set_buf(c, lib.TM_BUF_BR_REQ, b, b"x" * (a * 7), a * 7)
            assert r == (0 if 0 <= b < 12 else -2)
        elif name == "timer" and held:
            c = held[a % len(held)][0]
            r = lib.tm_timer_start(c, lib.TM_TW_BR_FR, b, 0, lib.TM_K_PY, 0)
            if c.deleted:
                assert r in (-2, -3)
            else:
                assert r == (0 if 0 <= b < 12 else -2)
        elif name == "tick":
            for e in t.tick(t.now_ns() + a * 10**9):
                t.unref(e[0])
        elif name == "reply" and held:
            c = held[a % len(held)][0]
            r = t.lookup_reply(c.hash, c.label)
            assert (r is not None) == (not c.deleted)
            if r is not None:
                t.unref(r)
        for (key, m), c in live.items():
            f = t.lookup_req(b"fz", 1, key, m, 0)
            assert f == c
            t.unref(f)
    # every cell made is still held by us, deleted or not
    addrs = {int(ffi.cast("uintptr_t", c)) for c, _, _ in held}
    assert t.inuse() == base_inuse + len(addrs)
    for c in list(live.values()):
        t.delete(c)
    for c, _, _ in held:
        t.unref(c)
    for e in t.tick(t.now_ns() + 10**10):
        t.unref(e[0])
    assert t.inuse() == base_inuse
    assert shm.module_usage().get("tm", 0) == base_mem
