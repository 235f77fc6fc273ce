"""Dialog callbacks for other modules (OpenSIPS's ``register_dlgcb``).

As with tm's callbacks, processes share no Python objects and a dialog's
next event may happen in any process, so a per-dialog callback is armed by
*name*: the module registers its function under a name in ``mod_init``
(:func:`register_dlgcb_func`, before the fork) and arms it on one dialog
with :func:`register_dlgcb` (the types, the name and a ``marshal``-able
parameter are stored in the dialog's record).  ``DLGCB_CREATED`` and
``DLGCB_LOADED`` are global (``dlg=None``): they run for every dialog
made by ``create_dialog()`` / loaded from the database, in the process
that made or loaded it, and usually arm the per-dialog ones.

A callback runs as ``fn(dlg, type, params)``: ``dlg`` is a
:class:`~.table.Dialog` snapshot (read it; change it only through the API
functions, which take the dialog's lock), ``params`` a dict: ``msg`` (the
SIP message at hand: the request or reply, None for timer events),
``direction`` (``DLG_DIR_*``), ``param`` (what was given at
registration).  Exceptions are logged and do not stop the dialog module.
"""
from __future__ import annotations

from opensipy import log

DLGCB_LOADED = 1 << 0
DLGCB_CREATED = 1 << 1
DLGCB_FAILED = 1 << 2
DLGCB_CONFIRMED = 1 << 3
DLGCB_REQ_WITHIN = 1 << 4
DLGCB_TERMINATED = 1 << 5
DLGCB_EXPIRED = 1 << 6
DLGCB_EARLY = 1 << 7
DLGCB_RESPONSE_FWDED = 1 << 8
DLGCB_RESPONSE_WITHIN = 1 << 9
DLGCB_MI_CONTEXT = 1 << 10
DLGCB_DESTROY = 1 << 11
ALL = (1 << 12) - 1
GLOBAL = DLGCB_CREATED | DLGCB_LOADED

DLG_DIR_NONE = 0
DLG_DIR_DOWNSTREAM = 1
DLG_DIR_UPSTREAM = 2

_funcs = {}
_global = {DLGCB_CREATED: [], DLGCB_LOADED: []}
# keys of the dialogs loaded from the database in this process: a
# DLGCB_LOADED callback registered after the load (a module whose mod_init
# runs after dialog's) still sees them, as OpenSIPS runs a late
# registration over the dialogs already loaded
_loaded = []


class DlgcbError(ValueError):
    pass


def register_dlgcb_func(name: str, fn) -> None:
    if not callable(fn):
        raise DlgcbError(f"dialog callback {name!r} is not callable")
    _funcs[name] = fn


def register_global(types: int, name_or_fn, param=None) -> int:
    if types & ~GLOBAL or not types:
        raise DlgcbError("only DLGCB_CREATED and DLGCB_LOADED are global")
    fn = name_or_fn if callable(name_or_fn) else _funcs.get(name_or_fn)
    if fn is None:
        raise DlgcbError(f"unknown dialog callback {name_or_fn!r}")
    for t in (DLGCB_CREATED, DLGCB_LOADED):
        if types & t:
            _global[t].append((fn, param))
    if types & DLGCB_LOADED and _loaded:
        from .core import st
        for key in _loaded:
            d = st.tbl.get(key) if st.tbl is not None else None
            if d is not None:
                _call(fn, d, DLGCB_LOADED, {"msg": None, "param": param,
                                            "direction": DLG_DIR_NONE})
    return 1


def check_per_dialog(types: int, name) -> None:
    if types & ~ALL or not types:
        raise DlgcbError(f"bad dialog callback types {types:#x}")
    if types & GLOBAL:
        raise DlgcbError("DLGCB_CREATED/LOADED are global (dlg=None)")
    if name not in _funcs:
        raise DlgcbError(f"dialog callback {name!r} is not registered "
                         f"(register_dlgcb_func in mod_init)")


def run_global(typ: int, dlg, msg=None) -> None:
    if typ == DLGCB_LOADED:
        _loaded.append(dlg.key)
    for fn, param in _global.get(typ, ()):
        _call(fn, dlg, typ, {"msg": msg, "direction": DLG_DIR_NONE,
                             "param": param})


def run(dlg, typ: int, msg=None, direction=DLG_DIR_NONE, extra=None) -> None:
    for types, name, param in list(dlg.cbs):
        if types & typ:
            fn = _funcs.get(name)
            if fn is not None:
                p = {"msg": msg, "direction": direction, "param": param}
                if extra:
                    p.update(extra)
                _call(fn, dlg, typ, p)


def _call(fn, dlg, typ, params) -> None:
    try:
        fn(dlg, typ, params)
    except Exception as e:       # noqa: BLE001 - a callback must not stop us
        log.LM_ERR(f"dialog callback {getattr(fn, '__name__', fn)} (type "
                   f"{typ:#x}) failed: {type(e).__name__}: {e}")
