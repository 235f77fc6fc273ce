"""Nonces: signed with the secret, carrying their expiry; the shared nonce
index lets each be used once, across processes, with fixed memory."""
import os
import time

from opensipy import shm

from opensipy_modules.auth import nonce as nm


def test_nonce_carries_expiry_and_verifies_with_its_secret_only():
    n = nm.make_nonce(b"k1", int(time.time()) + 30, 7)
    assert len(n) == nm.NONCE_LEN
    assert nm.parse_nonce(n) == (int(n[:8], 16), 7)
    assert nm.check_nonce(b"k1", n) == nm.NONCE_OK
    assert nm.check_nonce(b"k2", n) == nm.NONCE_BAD          # other server
    assert nm.check_nonce(b"k1", n, now=time.time() + 31) == \
        nm.NONCE_EXPIRED
    # any change of the expiry or the sequence breaks the signature
    later = "%08x" % (int(n[:8], 16) + 100) + n[8:]
    assert nm.check_nonce(b"k1", later) == nm.NONCE_BAD
    assert nm.check_nonce(b"k1", n[:-1]) == nm.NONCE_BAD
    assert nm.check_nonce(b"k1", "z" * nm.NONCE_LEN) == nm.NONCE_BAD
    assert nm.check_nonce(b"k1", None) == nm.NONCE_BAD


def test_index_allows_one_use_and_forgets_old_sequences():
    idx = nm.NonceIndex(size=64)
    try:
        a = idx.reserve()
        b = idx.reserve()
        assert idx.use(b) and not idx.use(b)
        assert idx.use(a) and not idx.use(a)
        assert not idx.use(b + 1)              # never issued
        old = idx.reserve()
        for _ in range(64):
            idx.reserve()
        assert not idx.use(old)                # its bit went to a newer one
    finally:
        idx.destroy()


def test_index_is_shared_by_forked_processes():
    idx = nm.NonceIndex(size=1024)
    try:
        seqs = [idx.reserve() for _ in range(200)]
        pids = []
        for k in range(4):
            pid = os.fork()
            if pid == 0:
                won = sum(1 for s in seqs if idx.use(s))
                os._exit(min(won, 250))
            pids.append(pid)
        total = 0
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            total += os.waitstatus_to_exitcode(status)
        # every nonce was accepted exactly once over the four processes
        assert total == 200
        assert not any(idx.use(s) for s in seqs)
    finally:
        idx.destroy()


def test_index_memory_is_fixed():
    before = shm.stats()["used_size"]
    idx = nm.NonceIndex(size=100000)
    try:
        mid = shm.stats()["used_size"]
        for _ in range(5000):
            s = idx.reserve()
            idx.use(s)
            idx.use(s)
        assert shm.stats()["used_size"] == mid
    finally:
        idx.destroy()
    assert shm.stats()["used_size"] == before
