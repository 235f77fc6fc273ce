"""The script's asynchronous statements: ``async(func(...), resume_route
[, timeout])`` and ``launch(func(...)[, report_route])``.

An async function is a module's ``acmds`` entry (OpenSIPS's
``acmd_export_t``): ``function(msg, actx, *params) -> int``.  It starts
its slow work and, to go on later, sets on the :class:`AsyncCtx`:

* ``resume_f(msg, resume_param) -> int`` (required): called once the wait
  is over; its return is the function's result (``$rc`` of the resume
  route), or :data:`ASYNC_CONTINUE` to wait again (it may change ``fd``
  or ``deadline`` first);
* ``fd``: wait until it is readable (a DB driver's socket ...), and/or
  ``deadline``: a ``time.monotonic()`` second at which to resume (a
  sleep needs no descriptor);
* ``timeout_f(msg, resume_param)``: called instead when the statement's
  timeout fires first (it should cancel the work).

A function that finishes at once leaves ``resume_f`` None and returns its
result: the statement goes on synchronously (OpenSIPS's ``ASYNC_NO_IO``).

Each SIP receiver is a small reactor (``opensipy.net.udp``): while tasks
are pending it polls its socket together with their descriptors and the
nearest deadline, so it keeps reading other datagrams.  A task resumes in
the process that started it, with the very message object it suspended
(flags, ``$avp``s, lumps, ``$du``/``$ru``, the transaction the request
holds), so nothing needs to be serialized.  Where no reactor runs (timer,
MI and module processes, startup_route, tests), the statement waits inline
(:func:`run_blocking`), as OpenSIPS runs async functions synchronously
where it cannot suspend.
"""
from __future__ import annotations

import select
import time
from typing import Callable, List, Optional

from . import log

ASYNC_CONTINUE = -100       # resume_f: not done yet, wait again


class AsyncCtx:
    __slots__ = ("fd", "deadline", "resume_f", "resume_param", "timeout_f")

    def __init__(self):
        self.fd: Optional[int] = None
        self.deadline: Optional[float] = None
        self.resume_f: Optional[Callable] = None
        self.resume_param = None
        self.timeout_f: Optional[Callable] = None

    @property
    def pending(self) -> bool:
        return self.resume_f is not None


class Task:
    __slots__ = ("actx", "msg", "done", "expires")

    def __init__(self, actx: AsyncCtx, msg, done: Callable[[int], None],
                 expires: Optional[float]):
        self.actx = actx
        self.msg = msg
        self.done = done            # done(rc): resume the script
        self.expires = expires      # the statement's own timeout


# this process's pending tasks; reactor is True in a process whose loop
# polls them (the SIP receivers)
tasks: List[Task] = []
reactor = False


def start(task: Task) -> None:
    tasks.append(task)


def poll_timeout(now: float) -> Optional[float]:
    """Seconds until the nearest deadline of a pending task (None: only
    descriptors to wait for)."""
    best = None
    for t in tasks:
        for d in (t.actx.deadline, t.expires):
            if d is not None and (best is None or d < best):
                best = d
    if best is None:
        return None
    return max(0.0, best - now)


def fds() -> List[int]:
    return [t.actx.fd for t in tasks if t.actx.fd is not None]


def _resume_one(t: Task, now: float, readable) -> bool:
    """Run what is due for t; True when t is finished."""
    a = t.actx
    if t.expires is not None and now >= t.expires and not (
            a.fd is not None and a.fd in readable):
        if a.timeout_f is not None:
            try:
                a.timeout_f(t.msg, a.resume_param)
            except Exception as e:
                log.LM_ERR(f"async: timeout handler failed: "
                           f"{type(e).__name__}: {e}")
        log.LM_DBG("async: operation timed out")
        t.done(-1)
        return True
    due = (a.fd is not None and a.fd in readable) or (
        a.fd is None and a.deadline is not None and now >= a.deadline)
    if not due:
        return False
    try:
        rc = a.resume_f(t.msg, a.resume_param)
    except Exception as e:
        log.LM_ERR(f"async: resume failed: {type(e).__name__}: {e}")
        rc = -1
    if rc == ASYNC_CONTINUE:
        return False
    t.done(rc)
    return True


def run_ready(readable=()) -> int:
    """Resume every task whose descriptor is in readable or whose deadline
    passed; returns how many finished."""
    if not tasks:
        return 0
    now = time.monotonic()
    readable = set(readable)
    done = 0
    for t in list(tasks):
        try:
            finished = _resume_one(t, now, readable)
        except Exception as e:      # a resume route must not kill the loop
            log.LM_ERR(f"async: resuming failed: {type(e).__name__}: {e}")
            finished = True
        if finished:
            try:
                tasks.remove(t)
            except ValueError:
                pass
            done += 1
    return done


def run_blocking(actx: AsyncCtx, msg, expires: Optional[float] = None) -> int:
    """Wait inline for a started operation and return its result (where
    no reactor runs)."""
    while True:
        now = time.monotonic()
        if expires is not None and now >= expires:
            if actx.timeout_f is not None:
                actx.timeout_f(msg, actx.resume_param)
            return -1
        waits = [d for d in (actx.deadline, expires) if d is not None]
        wait = max(0.0, min(waits) - now) if waits else None
        if actx.fd is not None:
            p = select.poll()
            p.register(actx.fd, select.POLLIN)
            ready = p.poll(None if wait is None else int(wait * 1000) + 1)
            if not ready:
                continue
        elif actx.deadline is not None:
            time.sleep(wait)
            if time.monotonic() < actx.deadline:
                continue
        rc = actx.resume_f(msg, actx.resume_param)
        if rc != ASYNC_CONTINUE:
            return rc


def _reset_for_tests() -> None:
    global reactor
    tasks.clear()
    reactor = False


# ------------------------------------------------------------ the statements

_tm_newtran = None
_tm_bound = False


def _newtran():
    """tm's t_newtran when tm is loaded (bound on first use)."""
    global _tm_newtran, _tm_bound
    if not _tm_bound:
        _tm_bound = True
        from . import modloader
        reg = modloader.registry
        if reg is not None and reg.is_loaded("tm"):
            _tm_newtran = modloader.load_api("tm").t_newtran
    return _tm_newtran


def _route(name):
    from .script.runtime import find_route
    r = find_route("route", name)
    if r is None:
        raise LookupError(f"route[{name}] is not compiled")
    return r


def _resume(msg, route, rc) -> None:
    """The end of a suspended request's wait: run its resume route in
    request-route context with $rc = rc, then what the core runs after
    request_route (tm drops the request's hold on its transaction)."""
    from . import receive
    from .pvar import ctx
    msg.async_suspended = False
    ctx.retcode = rc
    try:
        route(msg)
    finally:
        if not getattr(msg, "async_suspended", False):
            receive.finish_request(msg)


def script_async(msg, fn, args, resume: str, timeout, where) -> int:
    """``async(fn(args), resume[, timeout])`` -> the route's action flags
    (the rest of the calling route never runs: the script goes on in the
    resume route, now or once the operation is done)."""
    from . import sr_module as S
    from .pvar import ctx
    from .script.runtime import ACT_FL_EXIT
    route = _route(resume)
    suspend = (reactor and ctx.route_type == S.REQUEST_ROUTE
               and msg.is_request and getattr(msg, "rcv", None) is not None)
    if suspend and msg.method != "ACK" \
            and getattr(msg, "tm_cell", None) is None:
        nt = _newtran()
        if nt is not None:
            r = nt(msg)
            if r == 0:              # a retransmission, answered by tm
                return ACT_FL_EXIT
            if r < 0:
                log.LM_ERR(f"{where}: async(): cannot create the "
                           f"transaction; running synchronously")
                suspend = False
    actx = AsyncCtx()
    rc = fn(msg, actx, *args)
    expires = time.monotonic() + timeout if timeout else None
    if actx.pending:
        if suspend:
            msg.async_suspended = True
            start(Task(actx, msg, lambda r: _resume(msg, route, r), expires))
            return ACT_FL_EXIT
        rc = run_blocking(actx, msg, expires)
    ctx.retcode = rc
    return ACT_FL_EXIT | route(msg)


def _report(route, msg, rc) -> None:
    from .pvar import ctx
    if route is None:
        return
    saved = ctx.retcode
    ctx.retcode = rc
    try:
        route(msg)
    finally:
        ctx.retcode = saved


def script_launch(msg, fn, args, report: Optional[str], where) -> int:
    """``launch(fn(args)[, report])``: start fn and go on with the route at
    once; the report route runs (over a dummy message, $rc = the result)
    when fn is done.  Returns 1."""
    from . import receive
    route = _route(report) if report else None
    actx = AsyncCtx()
    rc = fn(msg, actx, *args)
    if actx.pending:
        if reactor:
            dummy = receive.dummy_msg()
            start(Task(actx, dummy, lambda r: _report(route, dummy, r),
                       None))
            return 1
        rc = run_blocking(actx, msg)
    _report(route, receive.dummy_msg(), rc)
    return 1
