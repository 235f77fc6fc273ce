"""The transaction table in shm (native/tm.c): matching, references,
timers and retransmission in C, memory given back, and several processes
hammering one bucket."""
import os
import socket
import time

import pytest

from opensipy import shm
from opensipy_modules.tm.table import ffi, lib

INVITE, CANCEL, ACK, BYE = 1, 2, 4, 8


def used():
    return shm.module_usage().get("tm", 0)


def drop(t, c):
    """The test's reference and the table's."""
    t.delete(c)
    t.unref(c)


def test_insert_then_the_retransmission_finds_the_same_cell(tmtable):
    t = tmtable
    base, inuse = used(), t.inuse()
    c, created = t.lookup_or_new(b"call-1", 1, b"z9hG4bKa|h|5060", INVITE)
    assert created == 1 and c.ref == 2 and c.flags & lib.TM_F_INVITE
    c2, created2 = t.lookup_or_new(b"call-1", 1, b"z9hG4bKa|h|5060", INVITE)
    assert created2 == 0 and c2 == c and c.ref == 3
    t.unref(c2)
    assert t.inuse() == inuse + 1
    # another CSeq, another key, another method: other transactions
    for args in ((b"call-1", 2, b"z9hG4bKa|h|5060", INVITE),
                 (b"call-1", 1, b"z9hG4bKb|h|5060", INVITE),
                 (b"call-1", 1, b"z9hG4bKa|h|5060", BYE)):
        assert t.lookup_req(*args, 0) is None
    drop(t, c)
    assert t.inuse() == inuse and used() == base


def test_ack_finds_its_invite_and_cancel_finds_what_it_cancels(tmtable):
    t = tmtable
    key = b"z9hG4bKx|h|5060"
    inv, _ = t.lookup_or_new(b"c2", 5, key, INVITE)
    bye, _ = t.lookup_or_new(b"c3", 5, key, BYE)
    a = t.lookup_req(b"c2", 5, key, ACK, 1)
    assert a == inv
    t.unref(a)
    assert t.lookup_req(b"c3", 5, key, ACK, 1) is None   # not an INVITE
    x = t.lookup_req(b"c2", 5, key, CANCEL, 2)
    assert x == inv
    t.unref(x)
    can, created = t.lookup_or_new(b"c2", 5, key, CANCEL)
    assert created == 1 and can != inv
    # a CANCEL never finds a CANCEL
    assert t.lookup_req(b"c9", 5, key, CANCEL, 2) is None
    for c in (inv, bye, can):
        drop(t, c)


def test_a_reply_finds_its_cell_by_hash_and_label(tmtable):
    t = tmtable
    c, _ = t.lookup_or_new(b"c4", 1, b"k", INVITE)
    assert lib.tm_hash(b"c4", 2, 1) == c.hash
    r = t.lookup_reply(c.hash, c.label)
    assert r == c
    t.unref(r)
    assert t.lookup_reply(c.hash, c.label + 1000) is None
    assert t.lookup_reply(1 << 30, 0) is None          # bad index
    drop(t, c)
    assert t.lookup_reply(c.hash, c.label) is None     # deleted


def test_buffers_are_bounds_checked_and_freed(tmtable):
    t = tmtable
    base = used()
    c, _ = t.lookup_or_new(b"c5", 1, b"k5", INVITE)
    t.set_buf(c, lib.TM_BUF_REQ, -1, b"x" * 1000)
    t.set_buf(c, lib.TM_BUF_REQ, -1, b"y" * 10)        # old one freed
    assert t.buf(c.req, c.req_len) == b"y" * 10
    t.set_buf(c, lib.TM_BUF_BR_REQ, 3, b"branch")
    assert lib.tm_set_buf(c, lib.TM_BUF_BR_REQ, 12, b"a", 1) == -2
    assert lib.tm_set_buf(c, lib.TM_BUF_BR_REQ, -1, b"a", 1) == -2
    assert lib.tm_set_buf(c, 99, 0, b"a", 1) == -2
    assert lib.tm_set_buf(c, lib.TM_BUF_REQ, -1, b"a",
                          lib.TM_MAX_BUF + 1) == -2
    assert lib.tm_set_dst(c, 12, 0, b"", 0, 0) == -2
    assert lib.tm_timer_start(c, lib.TM_TW_BR_FR, 12, 1, lib.TM_K_PY,
                              0) == -2
    drop(t, c)
    assert used() == base
    assert lib.tm_ref(ffi.NULL) == -1


def test_a_cell_in_use_outlives_its_deletion(tmtable):
    t = tmtable
    base = used()
    c, _ = t.lookup_or_new(b"c6", 1, b"k6", INVITE)
    t.delete(c)                          # the table lets it go
    assert t.delete(c) == 1              # once
    assert c.ref == 1 and used() > base  # we still hold it
    t.unref(c)
    assert used() == base


def test_timers_retransmit_in_c_and_hand_back_timeouts(tmtable):
    t = tmtable
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)

    class Si:
        sock = tx
    try:
        c, _ = t.lookup_or_new(b"c7", 1, b"k7", INVITE)
        t.set_buf(c, lib.TM_BUF_BR_REQ, 0, b"INVITE again")
        t.set_dst(c, 0, Si, 0, *rx.getsockname())
        t.timer_start(c, lib.TM_TW_BR_RETR, 0, 10, lib.TM_K_RETR_REQ, 0)
        t.timer_start(c, lib.TM_TW_BR_FR, 0, 45, lib.TM_K_PY)
        start = t.now_ns()
        # fake clock: tick at chosen instants
        assert t.tick(start + 5_000_000) == []
        assert t.tick(start + 11_000_000) == []     # A fires: resent
        assert rx.recv(100) == b"INVITE again"
        # A doubled: next at 11 + 20 ms
        assert t.tick(start + 30_000_000) == []
        assert t.tick(start + 32_000_000) == []
        assert rx.recv(100) == b"INVITE again"
        ev = t.tick(start + 50_000_000)
        assert [(e[1], e[2]) for e in ev] == [(lib.TM_TW_BR_FR, 0)]
        cell, which, branch, gen = ev[0]
        assert t.timer_gen(c, which, branch) == gen   # still valid
        t.unref(cell)                                 # the event's ref
        t.timer_stop(c, lib.TM_TW_BR_RETR, 0)
        assert t.tick(start + 10**9) == []
        rx.settimeout(0.05)
        with pytest.raises(socket.timeout):
            rx.recv(100)
        # a wait timer deletes the cell in C
        n = t.inuse()
        t.timer_start(c, lib.TM_TW_WAIT, -1, 1, lib.TM_K_DELETE)
        t.tick(t.now_ns() + 2_000_000)
        assert c.deleted and t.inuse() == n
        t.unref(c)
        assert t.inuse() == n - 1
    finally:
        rx.close()
        tx.close()


def test_t2_caps_the_interval(tmtable):
    t = tmtable
    c, _ = t.lookup_or_new(b"c8", 1, b"k8", BYE)
    t.timer_start(c, lib.TM_TW_BR_RETR, 0, 3000, lib.TM_K_RETR_REQ, 1)
    now = t.now_ns()
    t.tick(now + 3001 * 10**6)      # no buffer: nothing sent, re-armed
    assert t.timer_pending(c, lib.TM_TW_BR_RETR, 0) == 1
    # interval min(6000, T2=4000): not due at +6.9 s, due at +7.1 s
    assert lib.tm_timers_linked() >= 1
    gen = t.timer_gen(c, lib.TM_TW_BR_RETR, 0)
    t.tick(now + 6900 * 10**6)
    assert t.timer_gen(c, lib.TM_TW_BR_RETR, 0) == gen
    t.tick(now + 7100 * 10**6)
    assert t.timer_gen(c, lib.TM_TW_BR_RETR, 0) == gen + 1
    drop(t, c)


def _children(n, fn):
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fn(i)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    deadline = time.monotonic() + 60
    codes = []
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                codes.append("timeout")
                break
            time.sleep(0.005)
    assert codes == [0] * n


def test_several_processes_hammer_one_bucket(tmtable):
    """4 processes create, find, time and delete cells that all hash to
    the same few keys: one transaction per key, nothing leaked."""
    t = tmtable
    base, inuse = used(), t.inuse()
    rounds = 300

    def work(i):
        for r in range(rounds):
            key = b"k%d" % (r % 7)
            c, created = t.lookup_or_new(b"storm", 1, key, INVITE)
            assert c is not None and created in (0, 1)
            t.lock(c)
            t.set_buf(c, lib.TM_BUF_RPL, -1, b"r%d" % i)
            t.timer_start(c, lib.TM_TW_BR_FR, i % 12, 1, lib.TM_K_PY)
            t.unlock(c)
            for e in t.tick():
                t.unref(e[0])
            if r % 3 == i % 3:
                t.delete(c)
            t.unref(c)
    _children(4, work)
    # what is left: cells nobody deleted; delete them now
    for k in range(7):
        c = t.lookup_req(b"storm", 1, b"k%d" % k, INVITE, 0)
        while c is not None:
            t.delete(c)
            t.unref(c)
            c = t.lookup_req(b"storm", 1, b"k%d" % k, INVITE, 0)
    for e in t.tick(t.now_ns() + 10**9):
        t.unref(e[0])
    assert t.inuse() == inuse
    assert used() == base
    shm.check()
