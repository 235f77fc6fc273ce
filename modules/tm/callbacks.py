"""Transaction callbacks for other modules (OpenSIPS's ``register_tmcb``).

Processes share no Python objects, and a transaction's next event may be
handled by any process, so a per-transaction callback is armed by *name*:
the module registers the function under a name in ``mod_init`` (before the
fork, so every process knows it) with :func:`register_tmcb_func`, and arms
it on a transaction with :func:`register_tmcb` (the name, the types and a
``marshal``-able parameter are stored in the cell).  ``TMCB_REQUEST_IN`` is
global: its functions run for every new server transaction, in the process
that made it.

A callback runs as ``fn(cell, type, params)``; ``params`` is a dict:
``req`` (the request, when at hand), ``rpl`` (the reply, or None for a
local one), ``code``, ``param`` (what was given at registration).
Exceptions are logged and do not stop tm.
"""
from __future__ import annotations

from opensipy import log

from . import table as tb
from .table import lib

TMCB_REQUEST_IN = 1 << 0
TMCB_RESPONSE_IN = 1 << 1
TMCB_ON_FAILURE = 1 << 2
TMCB_RESPONSE_OUT = 1 << 3
TMCB_LOCAL_RESPONSE_OUT = 1 << 4
TMCB_LOCAL_COMPLETED = 1 << 5
TMCB_TRANS_DELETED = 1 << 6
# a received reply about to be relayed upstream (OpenSIPS's
# TMCB_RESPONSE_FWDED): our Via is already off, the callback may change
# the reply with lumps; ``req`` is the request as received, ``branch`` the
# branch the reply came on
TMCB_RESPONSE_FWDED = 1 << 7
ALL = (1 << 8) - 1

F_CBS = 1 << 17          # the cell has armed callbacks (Python-side flag)

_funcs = {}
_request_in = []


class TmcbError(ValueError):
    pass


def register_tmcb_func(name: str, fn) -> None:
    if not callable(fn):
        raise TmcbError(f"tm callback {name!r} is not callable")
    _funcs[name] = fn


def register_tmcb(cell, types: int, name_or_fn, param=None) -> int:
    """Arm a callback: on ``cell`` (the caller holds it, e.g. from
    ``t_gett``), or for every new transaction with ``cell=None`` and
    ``TMCB_REQUEST_IN`` (then ``name_or_fn`` may be the function)."""
    if types & ~ALL or not types:
        raise TmcbError(f"bad callback types {types:#x}")
    if cell is None:
        if types != TMCB_REQUEST_IN:
            raise TmcbError("only TMCB_REQUEST_IN is global")
        fn = name_or_fn if callable(name_or_fn) else _funcs.get(name_or_fn)
        if fn is None:
            raise TmcbError(f"unknown tm callback {name_or_fn!r}")
        _request_in.append((fn, param))
        return 1
    if types & TMCB_REQUEST_IN:
        raise TmcbError("TMCB_REQUEST_IN is global (cell=None)")
    if name_or_fn not in _funcs:
        raise TmcbError(f"tm callback {name_or_fn!r} is not registered "
                        f"(register_tmcb_func in mod_init)")
    from . import core
    with core.locked(cell):
        blob = core.forking.get(core._addr(cell))
        if blob is not None:          # in a branch_route: fork() stores it
            blob.setdefault("cbs", []).append((types, name_or_fn, param))
        else:
            blob = core.load_blob(cell)
            blob.setdefault("cbs", []).append((types, name_or_fn, param))
            core.store_blob(cell, blob)
        cell.flags |= F_CBS
        if types & TMCB_TRANS_DELETED:
            cell.flags |= lib.TM_F_DELCB
    return 1


def request_in(cell, req) -> None:
    for fn, param in _request_in:
        _call(fn, cell, TMCB_REQUEST_IN, {"req": req, "rpl": None,
                                          "code": 0, "param": param})


def armed(cell, typ) -> bool:
    """Whether a callback of ``typ`` is armed on the cell."""
    if not cell.flags & F_CBS:
        return False
    from . import core
    return any(t & typ for t, _, _ in core.load_blob(cell).get("cbs", ()))


def armed_by_name(cell, name: str) -> bool:
    """Whether the callback registered as ``name`` is armed on the cell
    (a module arming it from several routes arms it once)."""
    if not cell.flags & F_CBS:
        return False
    from . import core
    return any(n == name for _, n, _ in core.load_blob(cell).get("cbs", ()))


def run(cell, typ, req=None, rpl=None, code=0, **extra) -> None:
    """Run the callbacks of ``typ`` armed on the cell (``extra`` goes
    into the params dict)."""
    if not cell.flags & F_CBS:
        return
    from . import core
    for types, name, param in core.load_blob(cell).get("cbs", ()):
        if types & typ:
            fn = _funcs.get(name)
            if fn is not None:
                params = {"req": req, "rpl": rpl, "code": code,
                          "param": param}
                if extra:
                    params.update(extra)
                _call(fn, cell, typ, params)


def _call(fn, cell, typ, params) -> None:
    try:
        fn(cell, typ, params)
    except Exception as e:
        log.LM_ERR(f"tm callback {getattr(fn, '__name__', fn)} (type "
                   f"{typ:#x}) failed: {type(e).__name__}: {e}")


def wait_over(cell) -> None:
    """The end of the wait state of a cell with TMCB_TRANS_DELETED."""
    run(cell, TMCB_TRANS_DELETED, code=cell.uas_status)
    tb.delete(cell)
