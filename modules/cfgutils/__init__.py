"""cfgutils: script utilities (OpenSIPS 3.x's cfgutils).

Shared state lives in the shm arena, made in mod_init before the fork, so
every process sees the same values:

* the ``rand_event`` probability: an shm ``AtomicCounter`` (MI
  ``rand_set_prop`` in the MI process changes what the SIP workers use);
* ``$shv(name)``: an shm ``HashTable`` name -> tagged value (``i<int>`` or
  ``s<text>``), each write under its bucket's lock; names set from the
  script or over MI at run time are created in shm too;
* static locks: one shm ``Lock`` per distinct string given to
  ``get_static_lock``/``release_static_lock``, made by the fixup (script
  compilation, before the fork); dynamic locks: a ``LockSet`` of
  ``lock_pool_size`` locks indexed by a hash of the string.

``sleep``/``usleep`` also have async forms (``acmds``): inside
``async()``/``launch()`` they set a deadline on the async context and the
receiver goes on with other messages (opensipy.async_engine).
"""
from __future__ import annotations

import hashlib
import os
import random
import time
import zlib

from opensipy import log, shm
from opensipy.mi import MIError, get_str, param_error
from opensipy.pvar import PVError, StrInt
from opensipy.sr_module import (ALL_ROUTES, BRANCH_ROUTE, CMD_PARAM_INT,
                                CMD_PARAM_OPT, CMD_PARAM_STATIC,
                                CMD_PARAM_STR, CMD_PARAM_VAR, EVENT_ROUTE,
                                FAILURE_ROUTE, INT_PARAM, LOCAL_ROUTE,
                                ONREPLY_ROUTE, REQUEST_ROUTE, STARTUP_ROUTE,
                                STR_PARAM, TIMER_ROUTE, USE_FUNC_PARAM,
                                CmdExport, CmdParam, MIExport, MIRecipe,
                                ModuleExports, ParamExport, PVExport)

from . import timerec

# ---- parameters -------------------------------------------------------------
initial_probability = 10
hash_file = ""
lock_pool_size = 32
shv_hash_size = 64
_shvset = []                 # (name, value) from the shvset modparam
_varset = []                 # (name, value) from the varset modparam

# ---- shared state (mod_init) -------------------------------------------------
_prob = None                 # AtomicCounter: the probability, percent
_shv = None                  # HashTable: $shv name -> tagged value
_dyn_locks = None            # LockSet for the dynamic locks
_static_locks = {}           # string -> shm Lock (made by the fixups)
_config_hash = None          # MD5 of hash_file at start-up

MAIN_ROUTES = REQUEST_ROUTE | ONREPLY_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE
LOCK_ROUTES = MAIN_ROUTES | LOCAL_ROUTE | STARTUP_ROUTE | TIMER_ROUTE \
    | EVENT_ROUTE


# ---- modparams with many values ---------------------------------------------

def _parse_set(value: str, what: str):
    """``name=i:123`` / ``name=s:text`` (OpenSIPS's shvset/varset)."""
    name, sep, rest = str(value).partition("=")
    name = name.strip()
    kind, sep2, v = rest.partition(":")
    if not sep or not sep2 or not name:
        raise ValueError(f"{what} {value!r} is not name=i:number or "
                         f"name=s:text")
    kind = kind.strip().lower()
    if kind == "i":
        try:
            return name, int(v.strip())
        except ValueError:
            raise ValueError(f"{what} {value!r}: {v!r} is not an integer") \
                from None
    if kind == "s":
        return name, v
    raise ValueError(f"{what} {value!r}: type must be i or s")


def param_shvset(value) -> int:
    _shvset.append(_parse_set(value, "shvset"))
    return 0


def param_varset(value) -> int:
    _varset.append(_parse_set(value, "varset"))
    return 0


# ---- probability ------------------------------------------------------------

def _check_prob(p) -> int:
    p = int(p)
    if not 0 <= p <= 100:
        raise ValueError(f"probability {p} is not a percentage (0..100)")
    return p


def w_rand_event(msg, prob=None) -> int:
    """rand_event([probability]): true with the given (or the current)
    probability, in percent."""
    p = _prob.get() if prob is None else prob
    if p <= 0:
        return -1
    return 1 if random.random() * 100 < p else -1


def w_rand_set_prob(msg, prob) -> int:
    try:
        _prob.set(_check_prob(prob))
    except ValueError as e:
        log.LM_ERR(f"rand_set_prob: {e}")
        return -1
    return 1


def w_rand_reset_prob(msg) -> int:
    _prob.set(initial_probability)
    return 1


def w_rand_get_prob(msg) -> int:
    log.LM_INFO(f"cfgutils: the probability is {_prob.get()} percent")
    return 1


# ---- sleeping ---------------------------------------------------------------

def w_sleep(msg, secs) -> int:
    time.sleep(max(0, secs))
    return 1


def w_usleep(msg, usecs) -> int:
    time.sleep(max(0, usecs) / 1e6)
    return 1


def _woke(msg, param) -> int:
    return 1


def a_sleep(msg, actx, secs) -> int:
    """async sleep(seconds): resume after the delay, the receiver free."""
    actx.deadline = time.monotonic() + max(0, secs)
    actx.resume_f = _woke
    return 1


def a_usleep(msg, actx, usecs) -> int:
    actx.deadline = time.monotonic() + max(0, usecs) / 1e6
    actx.resume_f = _woke
    return 1


# ---- debugging ----------------------------------------------------------------

def w_abort(msg) -> int:
    """abort(): kill this process with SIGABRT (a core dump where the
    system keeps them); the attendant reports it and starts a new one."""
    log.LM_CRIT("cfgutils: abort() called from the script")
    os.abort()


def w_shm_status(msg) -> int:
    """shm_status(): the shared memory figures, logged."""
    st = shm.stats()
    fr = shm.fragmentation()
    log.LM_NOTICE("shm status: " + ", ".join(
        f"{k}={v}" for k, v in list(st.items()) +
        [("largest_free_block", fr["largest_free_block"])]))
    return 1


def w_pkg_status(msg) -> int:
    """pkg_status(): this process's private memory (resident and virtual
    size, from /proc), logged."""
    try:
        with open("/proc/self/statm") as f:
            vm, rss = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError) as e:
        log.LM_ERR(f"pkg_status: cannot read /proc/self/statm: {e}")
        return -1
    page = os.sysconf("SC_PAGE_SIZE")
    log.LM_NOTICE(f"pkg status: pid={os.getpid()} rss={rss * page} "
                  f"vsz={vm * page}")
    return 1


# ---- values -----------------------------------------------------------------

def w_set_count(msg, var, ret) -> int:
    """set_count(var_to_count, ret_var): how many values var holds."""
    n = len(var.get_all(msg)) if var.index == "*" else _count(var, msg)
    try:
        ret.set(msg, n)
    except PVError as e:
        log.LM_ERR(f"set_count: {e}")
        return -1
    return 1


def _count(var, msg) -> int:
    from opensipy.pvar import parse_pv
    try:
        allv = parse_pv(var.text.rstrip("]").split("[")[0] + "[*]")
    except PVError:
        return 0 if var.get(msg) is None else 1
    return len(allv.get_all(msg))


def w_shuffle_avps(msg, var) -> int:
    """shuffle_avps($avp(name)): the values of an AVP in random order."""
    if var.name != "avp":
        log.LM_ERR(f"shuffle_avps: {var.text} is not an $avp")
        return -1
    avps = getattr(msg, "avps", None) or {}
    vs = avps.get((var.arg or "").strip())
    if not vs:
        return -1
    random.shuffle(vs)
    return 1


def w_ts_usec_delta(msg, t1s, t1u, t2s, t2u, delta_str=None,
                    delta_int=None) -> int:
    """ts_usec_delta(t1_sec, t1_usec, t2_sec, t2_usec, [delta_str],
    [delta_int]): |t1 - t2| in microseconds."""
    d = abs((t1s - t2s) * 1_000_000 + (t1u - t2u))
    try:
        if delta_str is not None:
            # text that also compares as a number: 3.1's single "delta"
            # output was an integer, 3.x's later delta_str is its text
            delta_str.set(msg, StrInt(str(d)))
        if delta_int is not None:
            delta_int.set(msg, d)
    except PVError as e:
        log.LM_ERR(f"ts_usec_delta: {e}")
        return -1
    return 1


def w_get_accurate_time(msg, sec, usec, both=None) -> int:
    now = time.time_ns() // 1000
    s, u = divmod(now, 1_000_000)
    try:
        sec.set(msg, s)
        usec.set(msg, u)
        if both is not None:
            both.set(msg, f"{s}.{u:06d}")
    except PVError as e:
        log.LM_ERR(f"get_accurate_time: {e}")
        return -1
    return 1


_TR_CACHE = {}


def w_check_time_rec(msg, rec, ts=None) -> int:
    """check_time_rec(time_string[, timestamp]): 1 when the time (now or
    timestamp) falls in the recurrence expression, -1 when not, -2 when
    the string is bad, -3 when the time cannot be checked."""
    tr = _TR_CACHE.get(rec)
    if tr is None:
        try:
            tr = timerec.parse(rec)
        except ValueError as e:
            log.LM_ERR(f"check_time_rec: bad time recurrence {rec!r}: {e}")
            return -2
        if len(_TR_CACHE) > 1024:
            _TR_CACHE.clear()
        _TR_CACHE[rec] = tr
    try:
        hit = tr.matches(time.time() if ts is None else ts)
    except (ValueError, OverflowError, OSError) as e:
        log.LM_ERR(f"check_time_rec: cannot check {rec!r}: {e}")
        return -3
    return 1 if hit else -1


def fixup_time_rec(value):
    """A constant time recurrence is checked when the script is loaded."""
    if isinstance(value, str) and "$" not in value:
        try:
            timerec.parse(value)
        except ValueError as e:
            raise ValueError(f"bad time recurrence {value!r}: {e}") from None
    return value


# ---- locks ------------------------------------------------------------------

def fixup_static_lock(key):
    """One shm lock per distinct string, made while the script is
    compiled (before the fork)."""
    lk = _static_locks.get(key)
    if lk is None:
        lk = _static_locks[key] = shm.Lock("cfgutils")
    return lk


def w_get_static_lock(msg, lk) -> int:
    lk.acquire()
    return 1


def _release(lk) -> int:
    if lk.owner != os.getpid():
        return 1                     # not ours: nothing happens
    lk.release()
    return 1


def w_release_static_lock(msg, lk) -> int:
    return _release(lk)


def _dyn_index(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) \
        & (lock_pool_size - 1)


def w_get_dynamic_lock(msg, key) -> int:
    _dyn_locks.lock(_dyn_index(key))
    return 1


def w_release_dynamic_lock(msg, key) -> int:
    return _release(_dyn_locks[_dyn_index(key)])


def w_strings_share_lock(msg, a, b) -> int:
    return 1 if _dyn_index(a) == _dyn_index(b) else -1


# ---- $shv -------------------------------------------------------------------

def _enc(v) -> bytes:
    if isinstance(v, int):
        return b"i" + str(v).encode()
    return b"s" + str(v).encode("utf-8", "surrogateescape")


def _dec(b: bytes):
    if b[:1] == b"i":
        return int(b[1:])
    return b[1:].decode("utf-8", "surrogateescape")


def shv_get(name: str):
    """The value of $shv(name): an int or a str; 0 when never set (as
    OpenSIPS initialises every shared variable to integer 0)."""
    b = _shv.get(name.encode())
    return 0 if b is None else _dec(b)


def shv_set(name: str, value) -> None:
    if value is None:
        value = 0                    # OpenSIPS: NULL sets integer 0
    _shv.put(name.encode(), _enc(value))


def pv_parse_shv(text: str):
    name = (text or "").strip()
    if not name:
        raise PVError("$shv needs a name: $shv(name)")
    return name


def pv_get_shv(msg, name):
    return shv_get(name)


def pv_set_shv(msg, name, op, value):
    shv_set(name, value)
    return 0


def pv_get_env(msg, name):
    return os.environ.get(name)


def pv_parse_name(text: str):
    name = (text or "").strip()
    if not name:
        raise PVError("a name is needed in the parentheses")
    return name


def pv_get_random(msg, param):
    return random.randrange(0, 1 << 31)


_CTIME = {"sec": lambda t: t.tm_sec, "min": lambda t: t.tm_min,
          "hour": lambda t: t.tm_hour, "mday": lambda t: t.tm_mday,
          "mon": lambda t: t.tm_mon, "year": lambda t: t.tm_year,
          "wday": lambda t: (t.tm_wday + 1) % 7 + 1,
          "yday": lambda t: t.tm_yday, "isdst": lambda t: t.tm_isdst}


def pv_parse_ctime(text: str):
    name = (text or "").strip()
    if name not in _CTIME:
        raise PVError(f"$ctime({name}): the name must be one of "
                      f"{', '.join(_CTIME)}")
    return _CTIME[name]


def pv_get_ctime(msg, fn):
    return fn(time.localtime())


# ---- MI -----------------------------------------------------------------------

def mi_rand_set_prop(params):
    v = params.get("prob_proc")
    try:
        p = _check_prob(v)
    except (TypeError, ValueError):
        raise param_error("prob_proc must be a percentage (0..100)") \
            from None
    _prob.set(p)
    return "OK"


def mi_rand_reset_prob(params):
    _prob.set(initial_probability)
    return "OK"


def mi_rand_get_prob(params):
    return {"actual probability": _prob.get()}


def _file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def mi_check_config_hash(params):
    if not hash_file:
        raise MIError(404, "Functionality disabled")
    try:
        now = _file_hash(hash_file)
    except OSError as e:
        raise MIError(500, f"Cannot read the config file: "
                      f"{e.strerror or e}") from None
    if now != _config_hash:
        raise MIError(400, "The actual config file hash is not identical "
                      "to the stored one.")
    return "OK"


def mi_get_config_hash(params):
    if not hash_file:
        raise MIError(404, "Functionality disabled")
    return _config_hash


def _shv_item(name: str, value) -> dict:
    if isinstance(value, int):
        return {"name": name, "type": "integer", "value": value}
    return {"name": name, "type": "string", "value": value}


def mi_shv_get_all(params):
    items = sorted((k.decode(), _dec(v)) for k, v in _shv.items())
    return {"VARs": [_shv_item(n, v) for n, v in items]}


def mi_shv_get(params):
    name = get_str(params, "name")
    b = _shv.get(name.encode())
    if b is None:
        raise MIError(404, "Not found")
    return {"VAR": _shv_item(name, _dec(b))}


def mi_shv_set(params):
    name = get_str(params, "name")
    kind = get_str(params, "type").strip().lower()
    raw = params.get("value")
    if kind in ("int", "integer", "i"):
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise MIError(500, "bad integer value") from None
    elif kind in ("str", "string", "s"):
        value = "" if raw is None else str(raw)
    else:
        raise MIError(500, "bad shv value type")
    if not name:
        raise MIError(500, "bad shv name")
    shv_set(name, value)
    return "OK"


# ---- init ---------------------------------------------------------------------

def mod_init() -> int:
    global _prob, _shv, _dyn_locks, _config_hash
    p = int(initial_probability)
    if not 0 <= p <= 100:
        log.LM_ERR(f"cfgutils: initial_probability {p} is not 0..100")
        return -1
    n = int(lock_pool_size)
    if n <= 0 or n & (n - 1):
        log.LM_ERR(f"cfgutils: lock_pool_size {n} is not a power of 2")
        return -1
    if _prob is None:
        _prob = shm.AtomicCounter(p, "cfgutils")
        _shv = shm.HashTable(max(1, int(shv_hash_size)), "cfgutils")
        _dyn_locks = shm.LockSet(n, "cfgutils")
    for name, value in _shvset:
        shv_set(name, value)
    if _varset:
        from opensipy.pvar import script_vars
        for name, value in _varset:
            script_vars[name] = value
    if hash_file:
        try:
            _config_hash = _file_hash(hash_file)
        except OSError as e:
            log.LM_ERR(f"cfgutils: cannot hash {hash_file}: "
                       f"{e.strerror or e}")
            return -1
    return 0


_I = CMD_PARAM_INT
_S = CMD_PARAM_STR
_V = CMD_PARAM_VAR
_O = CMD_PARAM_OPT

exports = ModuleExports(
    name="cfgutils",
    cmds=[
        CmdExport("rand_event", w_rand_event,
                  [CmdParam(_I | _O, fixup=_check_prob)], ALL_ROUTES),
        CmdExport("rand_set_prob", w_rand_set_prob, [CmdParam(_I)],
                  ALL_ROUTES),
        CmdExport("rand_reset_prob", w_rand_reset_prob, [], ALL_ROUTES),
        CmdExport("rand_get_prob", w_rand_get_prob, [], ALL_ROUTES),
        CmdExport("sleep", w_sleep, [CmdParam(_I)], ALL_ROUTES),
        CmdExport("usleep", w_usleep, [CmdParam(_I)], ALL_ROUTES),
        CmdExport("abort", w_abort, [], MAIN_ROUTES),
        CmdExport("pkg_status", w_pkg_status, [], MAIN_ROUTES),
        CmdExport("shm_status", w_shm_status, [], MAIN_ROUTES),
        CmdExport("set_count", w_set_count, [CmdParam(_V), CmdParam(_V)],
                  ALL_ROUTES),
        CmdExport("shuffle_avps", w_shuffle_avps, [CmdParam(_V)],
                  ALL_ROUTES),
        CmdExport("ts_usec_delta", w_ts_usec_delta,
                  [CmdParam(_I), CmdParam(_I), CmdParam(_I), CmdParam(_I),
                   CmdParam(_V | _O), CmdParam(_V | _O)], ALL_ROUTES),
        CmdExport("check_time_rec", w_check_time_rec,
                  [CmdParam(_S, fixup=fixup_time_rec), CmdParam(_I | _O)],
                  ALL_ROUTES),
        CmdExport("get_static_lock", w_get_static_lock,
                  [CmdParam(_S | CMD_PARAM_STATIC, fixup=fixup_static_lock)],
                  LOCK_ROUTES),
        CmdExport("release_static_lock", w_release_static_lock,
                  [CmdParam(_S | CMD_PARAM_STATIC, fixup=fixup_static_lock)],
                  LOCK_ROUTES),
        CmdExport("get_dynamic_lock", w_get_dynamic_lock, [CmdParam(_S)],
                  LOCK_ROUTES),
        CmdExport("release_dynamic_lock", w_release_dynamic_lock,
                  [CmdParam(_S)], LOCK_ROUTES),
        CmdExport("strings_share_lock", w_strings_share_lock,
                  [CmdParam(_S), CmdParam(_S)], LOCK_ROUTES),
        CmdExport("get_accurate_time", w_get_accurate_time,
                  [CmdParam(_V), CmdParam(_V), CmdParam(_V | _O)],
                  ALL_ROUTES),
    ],
    acmds=[
        CmdExport("sleep", a_sleep, [CmdParam(_I)], ALL_ROUTES),
        CmdExport("usleep", a_usleep, [CmdParam(_I)], ALL_ROUTES),
    ],
    params=[
        ParamExport("initial_probability", INT_PARAM, "initial_probability"),
        ParamExport("hash_file", STR_PARAM, "hash_file"),
        ParamExport("shv_hash_size", INT_PARAM, "shv_hash_size"),
        ParamExport("shvset", STR_PARAM | USE_FUNC_PARAM, param_shvset),
        ParamExport("varset", STR_PARAM | USE_FUNC_PARAM, param_varset),
        ParamExport("lock_pool_size", INT_PARAM, "lock_pool_size"),
    ],
    mi_cmds=[
        MIExport("rand_set_prop", "sets the rand_event probability "
                 "(percent)", 0, None,
                 [MIRecipe(mi_rand_set_prop, ("prob_proc",))]),
        MIExport("rand_reset_prob", "puts the probability back to "
                 "initial_probability", 0, None,
                 [MIRecipe(mi_rand_reset_prob, ())]),
        MIExport("rand_get_prob", "the current probability", 0, None,
                 [MIRecipe(mi_rand_get_prob, ())]),
        MIExport("check_config_hash", "whether hash_file still has the "
                 "hash it had at start-up", 0, None,
                 [MIRecipe(mi_check_config_hash, ())]),
        MIExport("get_config_hash", "the MD5 of hash_file at start-up", 0,
                 None, [MIRecipe(mi_get_config_hash, ())]),
        MIExport("shv_get", "the shared variables, or one of them", 0, None,
                 [MIRecipe(mi_shv_get_all, ()),
                  MIRecipe(mi_shv_get, ("name",))]),
        MIExport("shv_set", "sets a shared variable (type int or str)", 0,
                 None, [MIRecipe(mi_shv_set, ("name", "type", "value"))]),
    ],
    items=[
        PVExport("shv", pv_get_shv, pv_set_shv, parse_name=pv_parse_shv),
        PVExport("env", pv_get_env, parse_name=pv_parse_name),
        PVExport("RANDOM", pv_get_random),
        PVExport("ctime", pv_get_ctime, parse_name=pv_parse_ctime),
    ],
    init_f=mod_init,
)
