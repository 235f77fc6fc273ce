"""cachedb_redis: the cachedb engine on a Redis server (redis-py, the pip
extra ``[redis]``).

``cachedb_url`` is ``redis[:group]://[:password@]host[:port][/db]`` (may be
given several times, one per group).  Every process opens its own
connection on first use (child_init tries it at once); ``connect_timeout``
and ``query_timeout`` (milliseconds, default 2000 each, OpenSIPS's names)
bound the connect and every command, so a Redis that is down or gone
never holds a process longer.  A lost connection is re-opened on the next
use.  ``cache_raw_query`` runs any Redis command (``"HSET h f v"``); its
reply goes into the result variable (an array reply, one item per AVP
value).
"""
from __future__ import annotations

import shlex

from opensipy import cachedb
from opensipy.sr_module import (INT_PARAM, STR_PARAM, USE_FUNC_PARAM,
                                DepExport, ModuleExports, ParamExport)

MOD = "cachedb_redis"
connect_timeout = 2000
query_timeout = 2000
urls = []

_redis = None


def _lib():
    global _redis
    if _redis is None:
        import redis
        _redis = redis
    return _redis


def add_url(value: str) -> int:
    u = cachedb.parse_cachedb_url(value)
    if u.scheme != "redis":
        raise ValueError(f"cachedb_url {value!r} is not a redis:// URL")
    _split(u)
    urls.append(value)
    return 0


def _split(u):
    """host, port, db, password of a redis URL's rest."""
    rest = u.rest
    password = None
    if "@" in rest:
        cred, _, rest = rest.rpartition("@")
        password = cred.partition(":")[2] if ":" in cred else cred
        password = password or None
    hostport, _, dbpart = rest.partition("/")
    host, _, port = hostport.rpartition(":") if ":" in hostport \
        else (hostport, "", "")
    host = host or "127.0.0.1"
    try:
        port = int(port) if port else 6379
        db = int(dbpart.strip("/")) if dbpart.strip("/") else 0
    except ValueError:
        raise ValueError(f"bad redis URL {u.redacted()!r}: port and "
                         f"database are numbers") from None
    return host, port, db, password


class RedisCon:
    def __init__(self, u):
        redis = _lib()
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        host, port, db, password = _split(u)
        self.where = f"{host}:{port}/{db}"
        self.r = redis.Redis(host=host, port=port, db=db, password=password,
                             socket_connect_timeout=connect_timeout / 1000,
                             socket_timeout=query_timeout / 1000,
                             retry_on_timeout=False, decode_responses=False,
                             # one try per call: the caller's timeout is
                             # the bound, never retries with back-off
                             retry=Retry(NoBackoff(), 0))
        self._do(self.r.ping)

    def _do(self, fn, *args, **kw):
        redis = _lib()
        try:
            return fn(*args, **kw)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise cachedb.CacheDBConnectionError(
                f"redis {self.where}: {e}") from None
        except redis.RedisError as e:
            raise cachedb.CacheDBError(f"redis {self.where}: {e}") from None

    def store(self, key, value, expires):
        self._do(self.r.set, key, value, ex=expires if expires > 0 else None)

    def fetch(self, key):
        v = self._do(self.r.get, key)
        return None if v is None else v.decode("utf-8", "replace")

    def remove(self, key):
        self._do(self.r.delete, key)

    def add(self, key, n, expires):
        v = self._do(self.r.incrby, key, n)
        if expires > 0:
            self._do(self.r.expire, key, expires)
        return int(v)

    def sub(self, key, n, expires):
        v = self._do(self.r.decrby, key, n)
        if expires > 0:
            self._do(self.r.expire, key, expires)
        return int(v)

    def get_counter(self, key):
        v = self._do(self.r.get, key)
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise cachedb.CacheDBError(
                f"key {key!r} does not hold a counter") from None

    def raw_query(self, text):
        try:
            args = shlex.split(text)
        except ValueError as e:
            raise cachedb.CacheDBError(f"bad raw query: {e}") from None
        if not args:
            raise cachedb.CacheDBError("empty raw query")
        v = self._do(self.r.execute_command, *args)
        return _plain(v)

    def close(self):
        try:
            self.r.close()
        except Exception:
            pass


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, bool):
        return int(v)
    return v


def mod_init() -> int:
    if not urls:
        raise ValueError("no cachedb_url given (modparam(\"cachedb_redis\", "
                         "\"cachedb_url\", \"redis://127.0.0.1:6379/\"))")
    for url in urls:
        cachedb.register_url(url, RedisCon)
    return 0


def child_init(rank: int) -> int:
    # open this process's connections now; a Redis that is down is not
    # fatal: the connection is tried again on use
    for url in urls:
        e = cachedb.get_engine(cachedb.parse_cachedb_url(url).storage_id)
        try:
            e.con()
        except cachedb.CacheDBError as err:
            e.log_error("connect", err)
    return 0


exports = ModuleExports(
    name=MOD,
    deps=DepExport(python=[("redis", "redis")]),
    params=[
        ParamExport("cachedb_url", STR_PARAM | USE_FUNC_PARAM, add_url),
        ParamExport("connect_timeout", INT_PARAM, "connect_timeout"),
        ParamExport("query_timeout", INT_PARAM, "query_timeout"),
    ],
    init_f=mod_init,
    init_child_f=child_init,
)
