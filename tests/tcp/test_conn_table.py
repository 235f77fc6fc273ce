"""The TCP connection table in shm, hammered from several processes:
ids are never handed out twice, a record is found by its peer and its
aliases while it lives and never after, the per-connection write locks
exclude each other, and the table ends empty."""
import os
import socket
import struct

import pytest

from opensipy import shm
from opensipy.net import tcp

PROCS = 4
ROUNDS = 400


@pytest.fixture(scope="module", autouse=True)
def arena():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)


def key(p, i):
    return tcp.peer_key(socket.AF_INET, f"10.{p}.{i // 250}.{i % 250 + 1}",
                        5060 + i)


def test_keys_round_trip():
    k = tcp.peer_key(socket.AF_INET6, "2001:db8::5", 5070)
    assert tcp.key_addr(k) == ("2001:db8::5", 5070)
    assert tcp.key_addr(key(1, 7)) == ("10.1.0.8", 5067)


def test_single_process_semantics():
    t = tcp.ConnTable(8)
    ids = [t.alloc(key(9, i), 0) for i in range(8)]
    assert all(ids) and len(set(ids)) == 8
    assert t.alloc(key(9, 99), 0) == 0          # full
    assert t.find(key(9, 3)) == ids[3]
    assert t.add_alias(ids[3], key(8, 1))
    assert t.find(key(8, 1)) == ids[3]
    assert [tcp.key_addr(k) for k in t.keys(ids[3])] == \
        [tcp.key_addr(key(9, 3)), tcp.key_addr(key(8, 1))]
    t.set_state(ids[3], tcp.S_CONN_BAD)
    assert t.find(key(9, 3)) == 0               # not usable any more
    assert t.free(ids[3]) and not t.free(ids[3])
    assert t.get(ids[3]) is None and t.find(key(8, 1)) == 0
    new = t.alloc(key(9, 50), 0)                # the freed record again,
    assert new and new != ids[3] and t.get(ids[3]) is None   # a new id
    assert t.count() == 8


def _child(t, p, shared, block):
    mine = []
    for i in range(ROUNDS):
        cid = t.alloc(key(p, i), p)
        if not cid:
            os._exit(10)
        mine.append(cid)
        if t.find(key(p, i)) != cid:
            os._exit(11)
        if i % 3 == 0 and not t.add_alias(cid, key(p + 100, i)):
            os._exit(12)
        if i % 3 == 0 and t.find(key(p + 100, i)) != cid:
            os._exit(13)
        # every process writes on one shared connection: a
        # read-modify-write under its write lock
        with t.wlocks[shared % t.size]:
            v = struct.unpack_from("<q", block.buffer, 0)[0]
            struct.pack_into("<q", block.buffer, 0, v + 1)
        t.touch(cid, float(i))
        if i % 2:
            old = mine.pop(0)
            if not t.free(old):
                os._exit(14)
    for cid in mine:
        if not t.free(cid):
            os._exit(15)
    os._exit(0)


def test_hammered_from_several_processes():
    t = tcp.ConnTable(PROCS * ROUNDS + 1)
    shared = t.alloc(key(200, 0), 0)
    block = shm.shm_malloc(8)
    block.buffer[:8] = bytes(8)
    pids = []
    for p in range(PROCS):
        pid = os.fork()
        if pid == 0:
            try:
                _child(t, p, shared, block)
            finally:
                os._exit(1)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
             for pid in pids]
    assert codes == [0] * PROCS
    assert t.count() == 1 and t.get(shared) is not None
    # every id handed out was fresh: the counter moved once per alloc
    assert t.next_id.get() == PROCS * ROUNDS + 1
    assert struct.unpack_from("<q", block.buffer, 0)[0] == PROCS * ROUNDS
    shm.shm_free(block)


def test_locks_of_a_dead_holder_are_recovered():
    """A process killed while it holds the table lock or a connection's
    write lock (a worker dying mid-write) does not wedge the others: the
    robust locks are taken over and the write goes out."""
    t = tcp.ConnTable(4)
    cid = t.alloc(key(7, 1), 0)
    for lk in (t.lock, t.wlocks[cid % t.size]):
        pid = os.fork()
        if pid == 0:
            lk.acquire()
            os._exit(0)              # dies holding it
        assert os.waitpid(pid, 0)[1] == 0
    a, b = socket.socketpair()
    old = tcp.table
    tcp.table = t
    try:
        a.setblocking(False)
        assert tcp._send_on(cid, a, b"OPTIONS") is True
        assert b.recv(16) == b"OPTIONS"
        assert t.alloc(key(7, 2), 0) and t.free(cid)
    finally:
        tcp.table = old
        a.close()
        b.close()
