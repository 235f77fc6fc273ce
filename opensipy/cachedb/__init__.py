"""The cachedb API: OpenSIPS's key-value interface (``cachedb/cachedb.h``).

An engine module (``cachedb_local``, ``cachedb_redis``) declares every
``cachedb_url`` it is given while its mod_init runs::

    cachedb.register_url("redis:group1://127.0.0.1:6379/0", factory)

``factory(url) -> connection`` opens one connection; it is called lazily in
each process on first use (or in the module's child_init), never shared
across fork.  A script or MI names a URL by its storage id: the scheme, and
the group when the URL has one (``"redis"``, ``"redis:group1"``).

A connection implements (``cachedb_funcs``):

=========================  ===============================================
``store(key, value, exp)``  set ``value`` (str); ``exp`` seconds, 0 = never
``fetch(key)``              the value (str) or None when absent
``remove(key)``             delete (absent is fine)
``add(key, n, exp)``        atomically add n to the counter (created at 0);
                            returns the new value
``sub(key, n, exp)``        atomically subtract; returns the new value
``get_counter(key)``        the counter (int) or None when absent
``raw_query(text)``         the engine's own query; returns its reply (None,
                            a str/int, or a list of them)
``close()``
=========================  ===============================================

A method that cannot do its work raises :class:`CacheDBError` (a
connection that is down: :class:`CacheDBConnectionError`).  The functions
below turn that into OpenSIPS's return codes: 1 success, -2 not found
(fetch/counter fetch), -1 error, and log it (a connection failure once per
interval).

The script functions (``cache_store`` ... ``cache_raw_query``) and the MI
commands (``cache_store``, ``cache_fetch``, ``cache_remove``) belong to the
core, as in OpenSIPS; see :mod:`opensipy.cachedb.script`.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from .. import log

__all__ = ["CacheDBError", "CacheDBConnectionError", "CacheUrl",
           "parse_cachedb_url", "register_url", "get_engine", "engines",
           "cachedb_store", "cachedb_fetch", "cachedb_remove", "cachedb_add",
           "cachedb_sub", "cachedb_counter_fetch", "cachedb_raw_query",
           "LOG_INTERVAL"]

LOG_INTERVAL = 10.0


class CacheDBError(Exception):
    pass


class CacheDBConnectionError(CacheDBError):
    pass


@dataclass
class CacheUrl:
    scheme: str
    group: Optional[str]
    rest: str            # what follows "://"
    raw: str

    @property
    def storage_id(self) -> str:
        return f"{self.scheme}:{self.group}" if self.group else self.scheme

    def redacted(self) -> str:
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", self.raw)


_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9_]*)(?::(?P<group>[^:/]+))?"
                  r"://(?P<rest>.*)\Z", re.S)


def parse_cachedb_url(url: str) -> CacheUrl:
    m = _URL.match((url or "").strip())
    if not m:
        raise CacheDBError(f"bad cachedb_url {url!r}: expected "
                           f"engine[:group]://...")
    return CacheUrl(m.group("scheme").lower(), m.group("group"),
                    m.group("rest"), url.strip())


class Engine:
    """One cachedb_url of one engine: opens this process's connection."""

    def __init__(self, url: CacheUrl, factory: Callable[[CacheUrl], Any]):
        self.url = url
        self.factory = factory
        self._con = None
        self._pid = None
        self._next_try = 0.0
        self._last_log = None
        self._held = 0

    @property
    def storage_id(self) -> str:
        return self.url.storage_id

    def con(self):
        if self._con is not None and self._pid == os.getpid():
            return self._con
        self._con = None           # another process's: never used here
        now = time.monotonic()
        if now < self._next_try:
            raise CacheDBConnectionError(
                f"cachedb {self.storage_id}: {self.url.redacted()} is "
                f"unreachable (retrying)")
        try:
            self._con = self.factory(self.url)
        except CacheDBError:
            self._next_try = time.monotonic() + 0.5
            raise
        self._pid = os.getpid()
        return self._con

    def drop(self) -> None:
        con, self._con = self._con, None
        if con is not None and self._pid == os.getpid():
            try:
                con.close()
            except Exception:
                pass

    def log_error(self, what: str, e: Exception) -> None:
        text = f"cachedb {self.storage_id}: {what} failed: {e}"
        if not isinstance(e, CacheDBConnectionError):
            log.LM_ERR(text)
            return
        now = time.monotonic()
        if self._last_log is not None and now - self._last_log < LOG_INTERVAL:
            self._held += 1
            return
        if self._held:
            text += f" ({self._held} more such failures since the last report)"
        self._held = 0
        self._last_log = now
        log.LM_ERR(text)


_engines: Dict[str, Engine] = {}


def register_url(url: str, factory: Callable[[CacheUrl], Any]) -> Engine:
    """Declare a cachedb_url (from an engine module's mod_init).  The same
    storage id given again replaces the earlier URL, as OpenSIPS does."""
    u = parse_cachedb_url(url)
    e = Engine(u, factory)
    _engines[u.storage_id] = e
    return e


def unregister(storage_id: str) -> None:
    _engines.pop(storage_id, None)


def engines() -> Dict[str, Engine]:
    return dict(_engines)


def get_engine(storage_id: str) -> Engine:
    e = _engines.get(storage_id)
    if e is None:
        known = ", ".join(sorted(_engines)) or "none"
        raise CacheDBError(f"no cachedb_url for storage id '{storage_id}' "
                           f"(known: {known})")
    return e


def _call(storage_id: str, what: str, fn):
    try:
        e = get_engine(storage_id)
    except CacheDBError as err:
        log.LM_ERR(f"{what}: {err}")
        return -1, None
    try:
        return 1, fn(e.con())
    except CacheDBConnectionError as err:
        e.drop()
        e.log_error(what, err)
        return -1, None
    except CacheDBError as err:
        e.log_error(what, err)
        return -1, None


def cachedb_store(storage_id: str, key: str, value: str,
                  expires: int = 0) -> int:
    rc, _ = _call(storage_id, "cache_store",
                  lambda c: c.store(key, value, int(expires or 0)))
    return rc


def cachedb_fetch(storage_id: str, key: str):
    """(rc, value): 1 and the value, -2 when absent, -1 on error."""
    rc, v = _call(storage_id, "cache_fetch", lambda c: c.fetch(key))
    if rc == 1 and v is None:
        return -2, None
    return rc, v


def cachedb_remove(storage_id: str, key: str) -> int:
    rc, _ = _call(storage_id, "cache_remove", lambda c: c.remove(key))
    return rc


def cachedb_add(storage_id: str, key: str, n: int, expires: int = 0):
    return _call(storage_id, "cache_add",
                 lambda c: c.add(key, int(n), int(expires or 0)))


def cachedb_sub(storage_id: str, key: str, n: int, expires: int = 0):
    return _call(storage_id, "cache_sub",
                 lambda c: c.sub(key, int(n), int(expires or 0)))


def cachedb_counter_fetch(storage_id: str, key: str):
    rc, v = _call(storage_id, "cache_counter_fetch",
                  lambda c: c.get_counter(key))
    if rc == 1 and v is None:
        return -2, None
    return rc, v


def cachedb_raw_query(storage_id: str, text: str):
    return _call(storage_id, "cache_raw_query", lambda c: c.raw_query(text))


def _reset_for_tests() -> None:
    _engines.clear()
