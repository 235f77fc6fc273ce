"""cachedb_local: the cachedb engine in shared memory.

Each collection is a shared hash table (:class:`opensipy.shm.HashTable`,
one robust lock per bucket, per-entry expiry) created by mod_init before
the fork, so every process of the server sees the same keys.  Counters
(``cache_add``/``cache_sub``) change under a lock of their own (a lock set
indexed by the key's hash), so concurrent adds from several processes
never lose an update.  Expired entries are invisible at once and their
memory is reclaimed every ``cache_clean_period`` seconds by a timer.

URLs are OpenSIPS 3.x's: ``local://`` uses the collection ``default``,
``local:///NAME`` the collection NAME, ``local:GROUP:///NAME`` the same
under the storage id ``local:GROUP``.  Collections are declared with
``cache_collections`` (``"name1[=size]; name2 ..."``, size being the
power of two of the number of buckets, default 9 = 512).
"""
from __future__ import annotations

import fnmatch
import zlib

from opensipy import cachedb, log, shm, timer
from opensipy.mi.dispatch import INVALID_PARAMS, OK, MIError, get_str
from opensipy.sr_module import (ALL_ROUTES, CMD_PARAM_STR,
                                INT_PARAM, STR_PARAM, USE_FUNC_PARAM,
                                CmdExport, CmdParam, MIExport, MIRecipe,
                                ModuleExports, ParamExport)

MOD = "cachedb_local"
DEFAULT_COLLECTION = "default"
DEFAULT_SIZE = 9
COUNTER_LOCKS = 64

cache_clean_period = 600
cache_collections = DEFAULT_COLLECTION
urls = []                       # every cachedb_url given

collections = {}                # name -> Collection (made by mod_init)


def add_url(value: str) -> int:
    u = cachedb.parse_cachedb_url(value)
    if u.scheme != "local":
        raise ValueError(f"cachedb_url {value!r} is not a local:// URL")
    urls.append(value)
    return 0


def parse_collections(text: str) -> dict:
    out = {}
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, size = part.partition("=")
        name = name.strip()
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(f"bad collection name {name!r}")
        n = DEFAULT_SIZE
        if eq:
            try:
                n = int(size.strip())
            except ValueError:
                raise ValueError(f"collection {name}: size {size!r} is not "
                                 f"an integer") from None
            if not 1 <= n <= 24:
                raise ValueError(f"collection {name}: size must be 1..24 "
                                 f"(a power of two of buckets)")
        if name in out:
            raise ValueError(f"collection {name} is declared twice")
        out[name] = n
    if not out:
        raise ValueError("no collection declared")
    return out


def _collection_of(u) -> str:
    path = u.rest
    if path.startswith("/"):
        path = path[1:]
    path = path.strip("/")
    return path or DEFAULT_COLLECTION


class Collection:
    def __init__(self, name: str, size_pow: int):
        self.name = name
        self.table = shm.HashTable(1 << size_pow, MOD)
        self.locks = shm.LockSet(COUNTER_LOCKS, MOD)

    def lock_for(self, key: bytes):
        return self.locks[zlib.crc32(key) % COUNTER_LOCKS]


class LocalCon:
    """A connection to one collection (nothing to open: shared memory)."""

    def __init__(self, col: Collection):
        self.col = col

    def store(self, key, value, expires):
        try:
            self.col.table.put(key.encode(), value.encode(), expires or None)
        except shm.ShmOutOfMemory as e:
            raise cachedb.CacheDBError(str(e)) from None

    def fetch(self, key):
        v = self.col.table.get(key.encode())
        return None if v is None else v.decode("utf-8", "replace")

    def remove(self, key):
        self.col.table.delete(key.encode())

    def add(self, key, n, expires):
        k = self.col.table
        kb = key.encode()
        with self.col.lock_for(kb):
            cur = k.get(kb)
            try:
                val = int(cur) if cur is not None else 0
            except ValueError:
                raise cachedb.CacheDBError(
                    f"key {key!r} does not hold a counter") from None
            val += n
            try:
                k.put(kb, str(val).encode(), expires or None)
            except shm.ShmOutOfMemory as e:
                raise cachedb.CacheDBError(str(e)) from None
        return val

    def sub(self, key, n, expires):
        return self.add(key, -n, expires)

    def get_counter(self, key):
        v = self.col.table.get(key.encode())
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise cachedb.CacheDBError(
                f"key {key!r} does not hold a counter") from None

    def raw_query(self, text):
        raise cachedb.CacheDBError("cachedb_local has no raw query language")

    def remove_chunk(self, glob: str) -> int:
        n = 0
        for k in self.col.table.keys():
            if fnmatch.fnmatchcase(k.decode("utf-8", "replace"), glob):
                n += bool(self.col.table.delete(k))
        return n

    def close(self):
        pass


def _factory(u):
    name = _collection_of(u)
    try:
        return LocalCon(collections[name])
    except KeyError:
        raise cachedb.CacheDBError(f"collection {name} does not "
                                   f"exist") from None


def clean_timer(ticks, param):
    n = sum(c.table.purge_expired() for c in collections.values())
    if n:
        log.LM_DBG(f"cachedb_local: {n} expired entries removed")


def mod_init() -> int:
    sizes = parse_collections(cache_collections)
    for name, p in sizes.items():
        collections[name] = Collection(name, p)
    for url in urls or ["local://"]:
        u = cachedb.parse_cachedb_url(url)
        name = _collection_of(u)
        if name not in collections:
            raise ValueError(f"cachedb_url {url}: collection '{name}' is not "
                             f"declared in cache_collections")
        cachedb.register_url(url, _factory)
    if cache_clean_period > 0:
        timer.register_timer("cachedb_local-expire", clean_timer, None,
                             cache_clean_period)
    return 0


def _collection(name):
    col = collections.get(name or DEFAULT_COLLECTION)
    if col is None:
        return None
    return LocalCon(col)


def w_cache_remove_chunk_1(msg, glob):
    return w_cache_remove_chunk_2(msg, DEFAULT_COLLECTION, glob)


def w_cache_remove_chunk_2(msg, collection, glob):
    con = _collection(collection)
    if con is None:
        log.LM_ERR(f"cache_remove_chunk: no collection {collection}")
        return -1
    con.remove_chunk(glob)
    return 1


def mi_remove_chunk(params, collection=None):
    glob = get_str(params, "glob")
    con = _collection(collection)
    if con is None:
        raise MIError(INVALID_PARAMS, data="Collection not found")
    con.remove_chunk(glob)
    return OK


def mi_remove_chunk_col(params):
    return mi_remove_chunk(params, get_str(params, "collection"))


exports = ModuleExports(
    name=MOD,
    cmds=[
        CmdExport("cache_remove_chunk", w_cache_remove_chunk_1,
                  [CmdParam(CMD_PARAM_STR)], ALL_ROUTES),
        CmdExport("cache_remove_chunk", w_cache_remove_chunk_2,
                  [CmdParam(CMD_PARAM_STR), CmdParam(CMD_PARAM_STR)],
                  ALL_ROUTES),
    ],
    params=[
        ParamExport("cachedb_url", STR_PARAM | USE_FUNC_PARAM, add_url),
        ParamExport("cache_collections", STR_PARAM, "cache_collections"),
        ParamExport("cache_clean_period", INT_PARAM, "cache_clean_period"),
    ],
    mi_cmds=[
        MIExport("cache_remove_chunk", "removes the keys matching a glob "
                 "pattern from a collection",
                 recipes=[MIRecipe(mi_remove_chunk, ("glob",)),
                          MIRecipe(mi_remove_chunk_col,
                                   ("glob", "collection"))]),
    ],
    init_f=mod_init,
)
