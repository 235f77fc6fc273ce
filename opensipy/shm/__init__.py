"""Shared memory: the Python facade over ``opensipy._shm`` (native/shm.c).

One arena per server, created by the attendant with :func:`shm_init` before
the first fork; it is mapped ``MAP_SHARED|MAP_ANONYMOUS`` so every child
sees it at the same address, and a block allocated in one process may be
used and freed in any other.  Everything here (blocks, :class:`Lock`,
:class:`LockSet`, :class:`RWLock`, :class:`AtomicCounter`,
:class:`HashTable`) lives in the arena: create it in the attendant, use it
from every process.  Python objects are thin handles (a C pointer); they
never free shared memory on garbage collection: call ``destroy()`` /
:func:`shm_free` explicitly, as the C code would.

Allocation failure raises :class:`ShmOutOfMemory` (a ``MemoryError``) and
leaves the arena as it was; callers answer a request with 500.

Locks are robust: a process that dies holding one hands the next locker
``EOWNERDEAD``; the lock is made consistent, the dead pid is logged with
``LM_ERR`` and work goes on.  When it cannot be made consistent it is left
unusable (``LM_CRIT``; every later use raises ShmError, hash-table
operations on its bucket too: nothing goes on unlocked).  The report is
made once the C layer has let its own locks (allocator, bucket) go, so
the logging path may allocate.  Only the holder releases a lock; another
process or thread gets ShmError and the recorded owner stays.  Data the dead process was changing under the
lock may be half-updated; the shared hash table is written so that this
leaves it well formed (one pointer store per change; at worst an entry's
block leaks).  The allocator keeps its block headers well formed at every
instant; after taking its lock over from a dead process it checks the
whole arena and, when the free lists or figures are off, rebuilds them
from the headers (``LM_CRIT`` if even that fails).  Blocks the dead
process held stay allocated (accounted to their module).

Read-write locks (:class:`RWLock`) prefer writers and are not recursive.
A reader that dies frees its reader slot, a writer that dies frees the
lock; both are logged like the plain locks' dead owners.
"""
from __future__ import annotations

import threading

from .. import log

try:
    from .._shm import ffi, lib
except ImportError as _e:  # pragma: no cover - depends on the build
    raise ImportError("opensipy._shm is not built: run "
                      "'python native/build_shm.py' or install the "
                      "package") from _e

__all__ = [
    "DEFAULT_SHM_SIZE", "ShmError", "ShmOutOfMemory", "shm_init",
    "is_initialised", "shm_malloc", "shm_free", "shm_realloc", "block_at",
    "ShmBlock", "stats", "fragmentation", "module_usage", "check", "start_ns", "now_ns",
    "Lock", "LockSet", "RWLock", "AtomicCounter", "HashTable",
]

DEFAULT_SHM_SIZE = 64 * 1024 * 1024


class ShmError(Exception):
    """Misuse of shared memory (no arena, bad block, ...)."""


class ShmOutOfMemory(ShmError, MemoryError):
    """The arena cannot satisfy an allocation; nothing was changed."""


@ffi.def_extern()
def _shm_owner_dead(what, pid):
    what = ffi.string(what).decode("utf-8", "replace")
    if what.startswith("shm arena"):
        log.LM_CRIT(f"{what} {pid}")
    elif "could not be made consistent" in what:
        log.LM_CRIT(f"{what} (dead owner: process {pid})")
    elif "not reported" in what:
        log.LM_ERR(f"{what}: {pid}")
    elif pid > 0:
        log.LM_ERR(f"{what}: process {pid} died holding it; "
                   f"lock recovered, going on")
    else:
        log.LM_ERR(f"{what}: a process died holding it; lock recovered, "
                   f"going on")


# ------------------------------------------------------------------ arena

_module_ids: dict = {}
_generation = 0   # bumped by _shm_reset_for_tests


def shm_init(size_bytes: int = DEFAULT_SHM_SIZE) -> None:
    """Create the arena (once, in the attendant, before any fork)."""
    if lib.shm_ready():
        raise ShmError("shared memory is already initialised")
    _map(size_bytes, lib.shm_init)


def _map(size_bytes, fn):
    size_bytes = int(size_bytes)
    r = fn(size_bytes)
    if r == -3:
        raise ShmError(f"shared memory size {size_bytes} is too small")
    if r == -2:
        raise ShmOutOfMemory(f"cannot map {size_bytes} bytes of shared "
                             f"memory")
    if r:
        raise ShmError(f"shm_init failed ({r})")


def _shm_reset_for_tests(size_bytes: int = DEFAULT_SHM_SIZE) -> None:
    """TEST ONLY: replace the arena by a fresh one.  The old arena stays
    mapped (so stale handles cannot crash the process) but its blocks no
    longer validate; every handle made before is to be dropped.  Also
    drops the module-id cache."""
    global _generation
    if lib.shm_ready():
        _map(size_bytes, lib.shm_reinit_for_tests)
    else:
        _map(size_bytes, lib.shm_init)
    _module_ids.clear()
    _generation += 1


def is_initialised() -> bool:
    return bool(lib.shm_ready())


def _need_arena():
    if not lib.shm_ready():
        raise ShmError("shared memory is not initialised (shm_init)")


def module_id(module: str) -> int:
    """The arena's accounting slot for a module name (created on first
    use; names are at most 31 bytes; at most 96 modules)."""
    try:
        return _module_ids[module]
    except KeyError:
        pass
    _need_arena()
    mid = lib.shm_module_id(module.encode())
    if mid < 0:
        raise ShmError(f"cannot account shared memory to module {module!r} "
                       f"(empty or too long name, or too many modules)")
    _module_ids[module] = mid
    return mid


def _oom(size, module):
    st = stats()
    return ShmOutOfMemory(
        f"out of shared memory: {size} bytes for module {module!r} "
        f"(free {st['free_size']} of {st['total_size']}, "
        f"{st['fragments']} fragments)")


class ShmBlock:
    """A block of the arena.  ``buffer`` is a writable memoryview over the
    shared bytes; ``offset`` is its place in the arena (the same in every
    process: :func:`block_at` turns it back into a block)."""
    __slots__ = ("ptr", "size", "module", "buffer")

    def __init__(self, ptr, size, module):
        self.ptr = ptr
        self.size = size
        self.module = module
        self.buffer = memoryview(ffi.buffer(ptr, size))

    @property
    def offset(self) -> int:
        return lib.shm_offset_of(self.ptr)

    def __repr__(self):
        return (f"<ShmBlock offset={self.offset} size={self.size} "
                f"module={self.module!r}>")


def _alloc(size, module):
    if size < 0:
        raise ValueError("negative size")
    p = lib.shm_malloc_mod(size, module_id(module))
    if p == ffi.NULL:
        raise _oom(size, module)
    return p


def shm_malloc(size: int, module: str = "core") -> ShmBlock:
    return ShmBlock(_alloc(size, module), size, module)


def shm_free(block) -> None:
    """Free a block (from any process).  Freeing twice, or something that
    is not a live block, raises ShmError and changes nothing."""
    ptr = block.ptr if isinstance(block, ShmBlock) else block
    if lib.shm_free_ptr(ptr) != 0:
        raise ShmError(f"shm_free: not a live shared-memory block: {block!r}")
    if isinstance(block, ShmBlock):
        block.buffer.release()


def shm_realloc(block: ShmBlock, size: int, module: str = None) -> ShmBlock:
    """Resize; returns a new handle (the old one must not be used any
    more).  On ShmOutOfMemory the old block is intact."""
    module = module or block.module
    if lib.shm_block_info(block.ptr, ffi.NULL, ffi.NULL):
        raise ShmError(f"shm_realloc: not a live block: {block!r}")
    p = lib.shm_realloc_mod(block.ptr, size, module_id(module))
    if p == ffi.NULL:
        raise _oom(size, module)
    block.buffer.release()
    return ShmBlock(p, size, module)


def block_at(offset: int) -> ShmBlock:
    """The live block at an arena offset (e.g. one another process wrote
    into shared memory)."""
    _need_arena()
    p = lib.shm_ptr_at(offset)
    size = ffi.new("size_t *")
    mod = ffi.new("int *")
    # size and module read together, under the allocator lock: another
    # process may free or reallocate the block at any time
    if p == ffi.NULL or lib.shm_block_info(p, size, mod):
        raise ShmError(f"no live shared-memory block at offset {offset}")
    return ShmBlock(p, size[0], ffi.string(lib.shm_module_name(mod[0])).decode())


STAT_NAMES = ("total_size", "used_size", "real_used_size", "max_used_size",
              "free_size", "fragments")


def stats() -> dict:
    """The arena's figures under OpenSIPS's ``shmem`` names."""
    st = ffi.new("struct shm_stats *")
    lib.shm_get_stats(st)
    return {name: getattr(st, name) for name in STAT_NAMES}


def fragmentation() -> dict:
    """How split the free space is: ``fragments`` (free blocks),
    ``free_size`` and ``largest_free_block`` (the biggest allocation that
    can succeed now)."""
    st = stats()
    return {"fragments": st["fragments"], "free_size": st["free_size"],
            "largest_free_block": lib.shm_largest_free()}


def module_usage() -> dict:
    """``{module: bytes}``: payload bytes held by each module; the values
    add up to ``stats()['used_size']`` (read both while nothing allocates).
    """
    out = {}
    for i in range(lib.shm_module_count()):
        out[ffi.string(lib.shm_module_name(i)).decode()] = \
            lib.shm_module_bytes(i)
    return out


def check() -> None:
    """Walk the whole arena and its free lists; raise ShmError if anything
    does not add up (used by tests and after a dead allocator owner)."""
    r = lib.shm_check()
    if r:
        raise ShmError(f"shared memory arena is inconsistent (code {r})")


def start_ns() -> int:
    """CLOCK_MONOTONIC (ns) when the arena was created: the server's start,
    the same value in every process."""
    _need_arena()
    return lib.shm_start_ns()


now_ns = lib.shm_now_ns


# ------------------------------------------------------------------ locks

_lock_get = lib.shm_lock_get
_lock_release = lib.shm_lock_release


def _lock_fail(r, what):
    raise ShmError(f"{what} failed: errno {-r}")


class Lock:
    """A process-shared robust mutex.  ``with lock: ...``"""
    __slots__ = ("_p", "_owner_set")

    def __init__(self, module: str = "core", _ptr=None, _set=None):
        if _ptr is None:
            _need_arena()
            _ptr = lib.shm_lockset_new(1, module_id(module))
            if _ptr == ffi.NULL:
                raise _oom(lib.shm_lock_sizeof(), module)
        self._p = _ptr
        self._owner_set = _set

    def acquire(self) -> bool:
        r = _lock_get(self._p)
        if r < 0:
            _lock_fail(r, "lock")
        return True

    def try_acquire(self) -> bool:
        r = lib.shm_lock_try(self._p)
        if r < 0:
            _lock_fail(r, "trylock")
        return r == 1

    def release(self) -> None:
        r = _lock_release(self._p)
        if r < 0:
            _lock_fail(r, "unlock")

    def __enter__(self):
        r = _lock_get(self._p)
        if r < 0:
            _lock_fail(r, "lock")
        return self

    def __exit__(self, et, ev, tb):
        r = _lock_release(self._p)
        if r < 0:
            _release_on_exit(lambda: _lock_fail(r, "unlock"), et)
        return False

    @property
    def owner(self) -> int:
        """pid of the process holding the lock, 0 when free."""
        return lib.shm_lock_owner(self._p)

    def destroy(self) -> None:
        if self._owner_set is not None:
            raise ShmError("a lock of a LockSet is destroyed with its set")
        shm_free(self._p)


class LockSet:
    """``n`` locks, indexed by hash bucket: ``ls.lock(i)``/``ls.unlock(i)``
    or ``with ls[i]:``."""
    __slots__ = ("_p", "n", "_locks")

    def __init__(self, n: int, module: str = "core"):
        if n <= 0:
            raise ValueError("a lock set needs at least one lock")
        _need_arena()
        self._p = lib.shm_lockset_new(n, module_id(module))
        if self._p == ffi.NULL:
            raise _oom(n * lib.shm_lock_sizeof(), module)
        self.n = n
        self._locks = tuple(Lock(_ptr=lib.shm_lock_at(self._p, n, i),
                                 _set=self) for i in range(n))

    def __len__(self):
        return self.n

    def __getitem__(self, i: int) -> Lock:
        return self._locks[i]

    def lock(self, i: int) -> None:
        self._locks[i].acquire()

    def unlock(self, i: int) -> None:
        self._locks[i].release()

    def destroy(self) -> None:
        shm_free(self._p)


def _release_on_exit(release, exc_type):
    """release; a failure raises unless an exception is already leaving
    the block (then it is logged, not hidden behind the unlock error)"""
    try:
        release()
    except ShmError as e:
        if exc_type is None:
            raise
        log.LM_ERR(f"shm lock: {e} while leaving on {exc_type.__name__}")


class _ReadSide:
    __slots__ = ("_rw",)

    def __init__(self, rw):
        self._rw = rw

    def __enter__(self):
        self._rw.acquire_read()
        return self._rw

    def __exit__(self, et, ev, tb):
        _release_on_exit(self._rw.release_read, et)
        return False


class _WriteSide(_ReadSide):
    __slots__ = ()

    def __enter__(self):
        self._rw.acquire_write()
        return self._rw

    def __exit__(self, et, ev, tb):
        _release_on_exit(self._rw.release_write, et)
        return False


class RWLock:
    """Readers/writer lock in shared memory: ``with rw.read: ...`` and
    ``with rw.write: ...`` (or acquire_/release_ read/write).  Up to 32
    readers hold it at once (more wait); a waiting writer stops new
    readers.  Not recursive.  Robust: see the package docstring.  Threads
    of a process (httpd's) may share the handle: the reader slots each one
    holds are kept per thread."""
    __slots__ = ("_p", "_tls", "read", "write")

    def __init__(self, module: str = "core"):
        _need_arena()
        self._p = lib.shm_rwlock_new(module_id(module))
        if self._p == ffi.NULL:
            raise _oom(0, module)
        self._tls = threading.local()   # .slots: this thread's reader slots
        self.read = _ReadSide(self)
        self.write = _WriteSide(self)

    def _slots(self) -> list:
        try:
            return self._tls.slots
        except AttributeError:
            s = self._tls.slots = []
            return s

    def acquire_read(self) -> None:
        s = lib.shm_rw_rlock(self._p)
        if s < 0:
            _lock_fail(s, "read lock")
        self._slots().append(s)

    def release_read(self) -> None:
        slots = self._slots()
        if not slots:
            raise ShmError("release_read without acquire_read")
        r = lib.shm_rw_runlock(self._p, slots.pop())
        if r < 0:
            _lock_fail(r, "read unlock")

    def acquire_write(self) -> None:
        r = lib.shm_rw_wlock(self._p)
        if r < 0:
            _lock_fail(r, "write lock")

    def release_write(self) -> None:
        r = lib.shm_rw_wunlock(self._p)
        if r < 0:
            _lock_fail(r, "write unlock")

    def destroy(self) -> None:
        shm_free(self._p)


# ---------------------------------------------------------------- atomics

_atomic_add = lib.shm_atomic_add
_atomic_get = lib.shm_atomic_get


class AtomicCounter:
    """A 64-bit signed counter in shared memory, changed atomically."""
    __slots__ = ("_p", "_blk")

    def __init__(self, initial: int = 0, module: str = "core", _ptr=None):
        """A new counter set to ``initial``; with ``_ptr`` a handle on an
        existing counter, whose value is left as it is."""
        if _ptr is None:
            self._blk = _alloc(8, module)
            self._p = ffi.cast("int64_t *", self._blk)
            lib.shm_atomic_set(self._p, initial)
        else:
            self._blk = None
            self._p = _ptr

    def inc(self, n: int = 1) -> int:
        """Add n; returns the new value."""
        return _atomic_add(self._p, n)

    def dec(self, n: int = 1) -> int:
        return _atomic_add(self._p, -n)

    def get(self) -> int:
        return _atomic_get(self._p)

    def set(self, value: int) -> None:
        lib.shm_atomic_set(self._p, value)

    def reset(self) -> int:
        """Set to 0; returns the value before."""
        return lib.shm_atomic_xchg(self._p, 0)

    def compare_and_set(self, expected: int, value: int) -> bool:
        return bool(lib.shm_atomic_cas(self._p, expected, value))

    value = property(get, set)

    def destroy(self) -> None:
        if self._blk is not None:
            shm_free(self._blk)
            self._blk = None


# ------------------------------------------------------------- hash table

_ht_put = lib.shm_ht_put
_ht_get = lib.shm_ht_get
_ht_del = lib.shm_ht_del
_unpack = ffi.unpack
_NULL = ffi.NULL
_SCRATCH = 4096
_tls = threading.local()


def _scratch(size=_SCRATCH):
    buf = ffi.new("char[]", size)
    _tls.buf = buf
    _tls.cap = size
    return buf


def _ht_fail(r, what):
    if r == -2:
        raise ShmError(f"hash table {what}: bad or destroyed table, or "
                       f"oversized entry")
    raise ShmError(f"hash table {what}: bucket lock unusable (errno {-r}); "
                   f"nothing done")


class HashTable:
    """A shared hash table: bytes keys to bytes values, one robust lock per
    bucket, optional per-entry expiry.

    ``put(key, value, expires=None)``: ``expires`` is a lifetime in seconds
    from now (None or <= 0: never).  An expired entry is invisible at once
    and its memory is reclaimed by :meth:`purge_expired` (a timer's job).
    Entries are allocated from the arena and accounted to ``module``;
    ShmOutOfMemory leaves the table as it was.  :meth:`items` copies one
    bucket at a time under its lock, so it is safe while other processes
    write (each bucket is a consistent snapshot; the whole is not)."""
    __slots__ = ("_p", "module", "size")

    def __init__(self, size_buckets: int, module: str = "core"):
        if not 0 < size_buckets <= (1 << 26):
            raise ValueError("size_buckets must be in 1..2**26")
        _need_arena()
        self._p = lib.shm_ht_new(size_buckets, module_id(module))
        if self._p == ffi.NULL:
            raise _oom(size_buckets * lib.shm_lock_sizeof(), module)
        self.module = module
        self.size = size_buckets

    def put(self, key: bytes, value: bytes, expires=None) -> None:
        ttl = int(expires * 1e9) if expires else 0
        r = _ht_put(self._p, key, len(key), value, len(value), ttl)
        if r:
            if r == -1:
                raise _oom(len(key) + len(value) + 32, self.module)
            _ht_fail(r, "put")

    def get(self, key: bytes):
        try:
            buf = _tls.buf
            cap = _tls.cap
        except AttributeError:
            buf = _scratch()
            cap = _SCRATCH
        n = _ht_get(self._p, key, len(key), buf, cap)
        while n > cap:   # value larger than the scratch buffer: grow, retry
            cap = n
            buf = _scratch(cap)
            n = _ht_get(self._p, key, len(key), buf, cap)
        if n < 0:
            if n == -1:
                return None
            _ht_fail(n, "get")
        return _unpack(buf, n)

    def __getitem__(self, key):
        v = self.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def __setitem__(self, key, value):
        self.put(key, value)

    def __contains__(self, key):
        return self.get(key) is not None

    def delete(self, key: bytes) -> bool:
        """Remove key; True when a live entry was removed."""
        r = _ht_del(self._p, key, len(key))
        if r < 0:
            _ht_fail(r, "delete")
        return bool(r)

    def __len__(self):
        n = lib.shm_ht_len(self._p)
        if n < 0:
            _ht_fail(n, "len")
        return n

    def purge_expired(self) -> int:
        """Unlink and free expired entries; returns how many."""
        n = lib.shm_ht_purge(self._p)
        if n < 0:
            _ht_fail(n, "purge")
        return n

    def items(self):
        """List of (key, value) pairs, one bucket snapshot at a time."""
        out = []
        cap = 1 << 16
        buf = ffi.new("char[]", cap)
        for i in range(self.size):
            n = lib.shm_ht_dump_bucket(self._p, i, buf, cap)
            while n > cap:
                cap = max(n, cap * 2)
                buf = ffi.new("char[]", cap)
                n = lib.shm_ht_dump_bucket(self._p, i, buf, cap)
            if n < 0:
                _ht_fail(n, "items")
            if n == 0:
                continue
            data = ffi.buffer(buf, n)[:]
            pos = 0
            while pos < n:
                kl = int.from_bytes(data[pos:pos + 4], "little")
                vl = int.from_bytes(data[pos + 4:pos + 8], "little")
                pos += 8
                out.append((data[pos:pos + kl], data[pos + kl:pos + kl + vl]))
                pos += kl + vl
        return out

    def keys(self):
        return [k for k, _ in self.items()]

    def destroy(self) -> None:
        """Free the table and every entry (no process may use it after;
        operations running in other processes are waited out, later ones
        fail with ShmError)."""
        r = lib.shm_ht_destroy(self._p)
        if r == -1:
            raise ShmError("hash table already destroyed")
        if r < 0:
            _ht_fail(r, "destroy")
