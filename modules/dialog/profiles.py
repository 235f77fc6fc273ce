"""Dialog profiles (OpenSIPS's dlg_profile.c): named sets of dialogs, with
or without a value, whose sizes scripts read to limit calls.

The dialog's record keeps its links (``[name, value]``); the sizes are
counters in a shm hash table (``name NUL value`` -> count) changed under a
lock set, so ``get_profile_size`` is one lookup whatever the number of
dialogs.  Listing the dialogs of a profile walks the dialog table.
"""
from __future__ import annotations

import zlib
from typing import Dict, Optional

from opensipy import shm

profiles: Dict[str, bool] = {}      # name -> has a value
_counts: Optional[shm.HashTable] = None
_locks: Optional[shm.LockSet] = None


class ProfileError(ValueError):
    pass


def define(spec: str, with_value: bool) -> None:
    """A ``profiles_with_value`` / ``profiles_no_value`` parameter: names
    separated by ';' (a '/b' or '/s' suffix, OpenSIPS's shared-profile
    marks, is refused: we keep profiles in this server's memory)."""
    for name in (x.strip() for x in str(spec).split(";")):
        if not name:
            continue
        if "/" in name:
            raise ProfileError(f"profile {name!r}: shared (cachedb) profiles "
                               f"are not supported")
        if name in profiles and profiles[name] != with_value:
            raise ProfileError(f"profile {name!r} defined with and without "
                               f"a value")
        profiles[name] = with_value


def init() -> None:
    global _counts, _locks
    if _counts is None:
        _counts = shm.HashTable(256, module="dialog")
        _locks = shm.LockSet(16, module="dialog")


def check(name: str) -> bool:
    """Has the profile a value?  ProfileError when it is not defined."""
    try:
        return profiles[name]
    except KeyError:
        raise ProfileError(f"dialog profile {name!r} is not defined "
                           f"(profiles_with_value / profiles_no_value)") \
            from None


def _key(name: str, value) -> bytes:
    return (name + "\0" + ("" if value is None else str(value))).encode(
        "utf-8", "surrogateescape")


def _add(name: str, value, n: int) -> None:
    keys = [_key(name, value)]
    if value is not None:
        keys.append(_key(name, None) + b"\0*")     # the profile's total
    for k in keys:
        i = zlib.crc32(k) % len(_locks)
        _locks.lock(i)
        try:
            c = int(_counts.get(k) or 0) + n
            if c > 0:
                _counts.put(k, str(c).encode())
            else:
                _counts.delete(k)
        finally:
            _locks.unlock(i)


def size(name: str, value=None) -> int:
    if profiles.get(name) and value is None:
        k = _key(name, None) + b"\0*"
    else:
        k = _key(name, value)
    return int(_counts.get(k) or 0)


def link(d, name: str, value) -> bool:
    """Add the link to the record ``d`` (the caller stores it) and count
    it; False when the dialog is in the profile already."""
    if not profiles[name]:
        value = None
    for n, v in d.profiles:
        if n == name and v == value:
            return False
    d.profiles.append([name, value])
    _add(name, value, 1)
    return True


def unlink(d, name: str, value) -> bool:
    hit = False
    for lk in list(d.profiles):
        if lk[0] == name and (value is None or lk[1] == value):
            d.profiles.remove(lk)
            _add(name, lk[1], -1)
            hit = True
    return hit


def unlink_all(d) -> None:
    for name, value in d.profiles:
        if name in profiles:
            _add(name, value, -1)
    d.profiles = []


def is_in(d, name: str, value=None) -> bool:
    for n, v in d.profiles:
        if n == name and (value is None or v == value):
            return True
    return False
