"""The core's cachedb script functions and MI commands (OpenSIPS's
``cache_*`` core functions and the ``cache_store``/``cache_fetch``/
``cache_remove`` MI commands), over :mod:`opensipy.cachedb`.

=====================================================  =====================
function                                               returns
=====================================================  =====================
``cache_store(storage_id, attribute, value[, timeout])``  1, -1 error
``cache_remove(storage_id, attribute)``                 1, -1 error
``cache_fetch(storage_id, attribute, result)``          1, -2 not found, -1
``cache_counter_fetch(storage_id, counter, result)``    1, -2 not found, -1
``cache_add(storage_id, attribute, increment, expire``  1, -1 error
``[, new_val])`` / ``cache_sub(...)``
``cache_raw_query(storage_id, raw_query[, result])``    1, -1 error
=====================================================  =====================

``result``/``new_val`` are variables that receive the value (a string, or
an integer for the counters).  A raw query's reply goes into ``result``:
one value, or one value per item (an AVP then holds them all, first item
at index 0).  A constant storage id that no loaded module declared is an
error when the script starts.
"""
from __future__ import annotations

from .. import log
from ..mi.dispatch import INVALID_PARAMS, OK, MIError, get_int, get_str
from ..sr_module import (ALL_ROUTES, CMD_PARAM_INT, CMD_PARAM_OPT,
                         CMD_PARAM_STR, CMD_PARAM_VAR, CmdExport, CmdParam,
                         MIExport, MIRecipe)
from . import (cachedb_add, cachedb_counter_fetch, cachedb_fetch,
               cachedb_raw_query, cachedb_remove, cachedb_store,
               cachedb_sub, get_engine)


def fixup_storage_id(value):
    if not value:
        raise ValueError("empty storage id")
    get_engine(value)            # raises with the known ids
    return value


def _set(spec, msg, value, fname) -> bool:
    try:
        spec.set(msg, value)
        return True
    except Exception as e:
        log.LM_ERR(f"{fname}: cannot set {spec}: {e}")
        return False


def w_cache_store(msg, sid, attr, value, timeout=None):
    return cachedb_store(sid, attr, value, timeout or 0)


def w_cache_remove(msg, sid, attr):
    return cachedb_remove(sid, attr)


def w_cache_fetch(msg, sid, attr, result):
    rc, v = cachedb_fetch(sid, attr)
    if rc == 1 and not _set(result, msg, v, "cache_fetch"):
        return -1
    return rc


def w_cache_counter_fetch(msg, sid, attr, result):
    rc, v = cachedb_counter_fetch(sid, attr)
    if rc == 1 and not _set(result, msg, int(v), "cache_counter_fetch"):
        return -1
    return rc


def w_cache_add(msg, sid, attr, n, expire, new_val=None):
    rc, v = cachedb_add(sid, attr, n, expire)
    if rc == 1 and new_val is not None and \
            not _set(new_val, msg, int(v), "cache_add"):
        return -1
    return rc


def w_cache_sub(msg, sid, attr, n, expire, new_val=None):
    rc, v = cachedb_sub(sid, attr, n, expire)
    if rc == 1 and new_val is not None and \
            not _set(new_val, msg, int(v), "cache_sub"):
        return -1
    return rc


def w_cache_raw_query(msg, sid, query, result=None):
    rc, v = cachedb_raw_query(sid, query)
    if rc != 1 or result is None or v is None:
        return rc
    items = v if isinstance(v, list) else [v]
    if result.name == "avp":
        # an AVP stacks its values: push the last item first
        for item in reversed(items):
            if not _set(result, msg, _scalar(item), "cache_raw_query"):
                return -1
        return 1
    if not _set(result, msg, _scalar(items[0]) if len(items) == 1
                else " ".join(str(_scalar(i)) for i in items),
                "cache_raw_query"):
        return -1
    return 1


def _scalar(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (int, str)) or v is None:
        return v
    return str(v)


_SID = CmdParam(CMD_PARAM_STR, fixup=fixup_storage_id)
_S = CmdParam(CMD_PARAM_STR)
_I = CmdParam(CMD_PARAM_INT)
_IO = CmdParam(CMD_PARAM_INT | CMD_PARAM_OPT)
_V = CmdParam(CMD_PARAM_VAR)
_VO = CmdParam(CMD_PARAM_VAR | CMD_PARAM_OPT)

CMDS = [
    CmdExport("cache_store", w_cache_store, [_SID, _S, _S, _IO], ALL_ROUTES),
    CmdExport("cache_remove", w_cache_remove, [_SID, _S], ALL_ROUTES),
    CmdExport("cache_fetch", w_cache_fetch, [_SID, _S, _V], ALL_ROUTES),
    CmdExport("cache_counter_fetch", w_cache_counter_fetch, [_SID, _S, _V],
              ALL_ROUTES),
    CmdExport("cache_add", w_cache_add, [_SID, _S, _I, _I, _VO], ALL_ROUTES),
    CmdExport("cache_sub", w_cache_sub, [_SID, _S, _I, _I, _VO], ALL_ROUTES),
    CmdExport("cache_raw_query", w_cache_raw_query, [_SID, _S, _VO],
              ALL_ROUTES),
]


# --- MI ---------------------------------------------------------------------

def _mi_str(params, name, empty_msg):
    v = get_str(params, name)
    if not v:
        raise MIError(INVALID_PARAMS, data=empty_msg)
    return v


def _mi_system(params):
    return _mi_str(params, "system", "Empty memory cache id")


def mi_cache_store(params, expire=0):
    system = _mi_system(params)
    attr = _mi_str(params, "attr", "Empty attribute name")
    value = _mi_str(params, "value", "Empty value")
    if cachedb_store(system, attr, value, expire) < 0:
        raise MIError(500, "Cache store command failed")
    return OK


def mi_cache_store_expire(params):
    expire = get_int(params, "expire")
    if expire < 0:
        raise MIError(INVALID_PARAMS, data="Negative expire value")
    return mi_cache_store(params, expire)


def mi_cache_fetch(params):
    system = _mi_system(params)
    attr = _mi_str(params, "attr", "Empty attribute name")
    rc, value = cachedb_fetch(system, attr)
    if rc == -1:
        raise MIError(500, "Cache fetch command failed")
    if rc == -2 or not value:
        raise MIError(400, "Value not found")
    return {"key": attr, "value": value}


def mi_cache_remove(params):
    system = _mi_system(params)
    attr = _mi_str(params, "attr", "Empty attribute name")
    if cachedb_remove(system, attr) < 0:
        raise MIError(500, "Cache remove command failed")
    return OK


MI_CMDS = [
    MIExport("cache_store", "stores in a cache system a string value",
             recipes=[MIRecipe(mi_cache_store, ("system", "attr", "value")),
                      MIRecipe(mi_cache_store_expire,
                               ("system", "attr", "value", "expire"))]),
    MIExport("cache_fetch", "queries for a cache stored value",
             recipes=[MIRecipe(mi_cache_fetch, ("system", "attr"))]),
    MIExport("cache_remove", "removes a record from the cache system",
             recipes=[MIRecipe(mi_cache_remove, ("system", "attr"))]),
]
