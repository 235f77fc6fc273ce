"""Nonces signed with the module's ``secret`` and the shared-memory nonce
index that makes each one usable once (OpenSIPS's "Nonce Security").

A nonce is 56 hex digits::

    EEEEEEEE SSSSSSSSSSSSSSSS MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM
    expiry   sequence         HMAC-SHA-256(secret, E + S), first 16 bytes

``E`` is the Unix time the nonce expires at (``nonce_expire`` seconds after
the challenge), ``S`` a sequence number drawn from a shared counter.  A
nonce that does not verify (another server's, a forged or damaged one) and
an expired one are both *stale*: the script gets -3 and the next challenge
says ``stale=true``, as OpenSIPS does.

Replay protection (unless ``disable_nonce_check``): a bitmap of
:data:`NONCE_INDEX_SIZE` bits in shared memory, one per sequence number
modulo its size.  Issuing a nonce clears its bit; the first successful
authentication with it sets the bit; a second one finds it set and is
stale.  A sequence number more than :data:`NONCE_INDEX_SIZE` behind the
counter has had its bit reused and is stale as well, so at most that many
challenges may be outstanding (OpenSIPS: 100000 in ``nonce_expire``).
The bitmap and counter are fixed-size: no request, good or bad, allocates
memory here.
"""
from __future__ import annotations

import hmac
import hashlib
import time
from typing import Optional

from opensipy import shm

NONCE_INDEX_SIZE = 100000
NONCE_LEN = 8 + 16 + 32

# check() results
NONCE_OK = 0
NONCE_BAD = 1        # not ours: bad length, bad digits, bad signature
NONCE_EXPIRED = 2


class NonceIndex:
    """The shared bitmap, its lock and the sequence counter (create in the
    attendant before the fork)."""

    def __init__(self, size: int = NONCE_INDEX_SIZE, module: str = "auth"):
        self.size = size
        self.block = shm.shm_malloc((size + 7) // 8, module)
        self.block.buffer[:] = b"\xff" * self.block.size   # all "used"
        self.lock = shm.Lock(module)
        self.seq = shm.AtomicCounter(0, module)

    def reserve(self) -> int:
        """A fresh sequence number, its bit cleared (unused)."""
        s = self.seq.inc() - 1
        i = s % self.size
        buf = self.block.buffer
        with self.lock:
            buf[i >> 3] &= ~(1 << (i & 7)) & 0xff
        return s

    def use(self, s: int) -> bool:
        """Mark sequence ``s`` used; False when it was used already or its
        bit has been handed to a newer nonce (too old)."""
        cur = self.seq.get()
        if s >= cur or cur - s > self.size:
            return False
        i = s % self.size
        buf = self.block.buffer
        bit = 1 << (i & 7)
        with self.lock:
            if buf[i >> 3] & bit:
                return False
            buf[i >> 3] |= bit
        return True

    def destroy(self) -> None:
        shm.shm_free(self.block)
        self.lock.destroy()
        self.seq.destroy()


def _mac(secret: bytes, head: str) -> str:
    return hmac.new(secret, head.encode("ascii"),
                    hashlib.sha256).hexdigest()[:32]


def make_nonce(secret: bytes, expires: int, seq: int) -> str:
    head = f"{expires & 0xffffffff:08x}{seq & 0xffffffffffffffff:016x}"
    return head + _mac(secret, head)


def parse_nonce(nonce: str):
    """(expires, seq) of a nonce of our shape, or None."""
    if len(nonce) != NONCE_LEN:
        return None
    try:
        return int(nonce[:8], 16), int(nonce[8:24], 16)
    except ValueError:
        return None


def check_nonce(secret: bytes, nonce: Optional[str],
                now: Optional[float] = None) -> int:
    """NONCE_OK, NONCE_BAD (not made with this secret) or NONCE_EXPIRED."""
    if not nonce:
        return NONCE_BAD
    parsed = parse_nonce(nonce)
    if parsed is None:
        return NONCE_BAD
    if not hmac.compare_digest(_mac(secret, nonce[:24]).encode(),
                               nonce[24:].lower().encode()):
        return NONCE_BAD
    if parsed[0] < (time.time() if now is None else now):
        return NONCE_EXPIRED
    return NONCE_OK
