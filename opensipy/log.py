"""Logging with OpenSIPS's levels and switches.

Levels (dprint.h): L_ALERT=-3, L_CRIT=-2, L_ERR=-1, L_WARN=1, L_NOTICE=2,
L_INFO=3, L_DBG=4.  A message is printed when its level is <= the current
``log_level``.  Output goes to stderr (``stderror_enabled``/``-E``) or to
syslog (``syslog_enabled``, ``syslog_facility``); each line carries the pid,
as OpenSIPS's does, because many processes share one output.

The per-process level may be changed at run time (MI ``log_level``); the
core keeps the process's current level in :data:`state.level`, so the check
on the hot path is one integer comparison.

Formats (``stderror_log_format`` / ``syslog_log_format``): ``plain`` (the
classic line, unchanged) or ``json``: one JSON object per line with
``time`` (ISO 8601, UTC, milliseconds), ``level``, ``pid``, ``rank``,
``process`` (the process type shown by ``ps``), ``module`` (the module whose
code logged, ``core`` for the core), ``message`` and, while a SIP message
is being routed, its ``callid``.  Every stderr line is written with one
``write()`` so lines from many processes never interleave.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time

from . import pt

L_ALERT = -3
L_CRIT = -2
L_ERR = -1
L_WARN = 1
L_NOTICE = 2
L_INFO = 3
L_DBG = 4

LEVEL_NAMES = {
    L_ALERT: "ALERT", L_CRIT: "CRITICAL", L_ERR: "ERROR", L_WARN: "WARNING",
    L_NOTICE: "NOTICE", L_INFO: "INFO", L_DBG: "DBG",
}
# the names a script may use (xlog("L_ERR", ...), log_level=L_DBG is not
# OpenSIPS syntax, but xlog's first argument is)
SCRIPT_LEVELS = {"L_ALERT": L_ALERT, "L_CRIT": L_CRIT, "L_ERR": L_ERR,
                 "L_WARN": L_WARN, "L_NOTICE": L_NOTICE, "L_INFO": L_INFO,
                 "L_DBG": L_DBG}

_SYSLOG_PRIO = {L_ALERT: 1, L_CRIT: 2, L_ERR: 3, L_WARN: 4, L_NOTICE: 5,
                L_INFO: 6, L_DBG: 7}


class _State:
    __slots__ = ("level", "stderr", "syslog", "facility", "name", "xlog_level",
                 "_syslog_mod", "stderr_format", "syslog_format", "msg",
                 "_whoami", "_syslog_opened")

    def __init__(self):
        self.level = L_NOTICE
        self.xlog_level = L_NOTICE
        self.stderr = True
        self.syslog = False
        self.facility = None
        self.name = "opensipy"
        self._syslog_mod = None
        self._syslog_opened = None
        self.stderr_format = "plain"
        self.syslog_format = "plain"
        self.msg = None          # the SIP message being routed, if any
        self._whoami = None      # (pid, rank, process type), per process


state = _State()


LOG_FORMATS = ("plain", "json")


def to_log_format(value) -> str:
    """Validate a log format name (``plain_text`` is taken for plain)."""
    v = str(value).strip().lower()
    if v == "plain_text":
        v = "plain"
    if v not in LOG_FORMATS:
        raise ValueError(f"unknown log format {value!r} (plain or json)")
    return v


def configure(level=None, stderr=None, syslog=None, facility=None,
              name=None, xlog_level=None, stderr_format=None,
              syslog_format=None):
    """Apply logging settings.  Formats not given are taken from the
    script's global parameters (``stderror_log_format``,
    ``syslog_log_format``)."""
    if stderr_format is None or syslog_format is None:
        try:
            from . import config
            st = config.settings
            if stderr_format is None:
                stderr_format = st.stderror_log_format
            if syslog_format is None:
                syslog_format = st.syslog_log_format
        except (ImportError, AttributeError):
            pass
    if stderr_format is not None:
        state.stderr_format = to_log_format(stderr_format)
    if syslog_format is not None:
        state.syslog_format = to_log_format(syslog_format)
    # an uncaught exception's traceback is one record too, not raw lines
    # that would break a collector reading JSON
    if "json" in (state.stderr_format, state.syslog_format):
        sys.excepthook = _json_excepthook
    elif sys.excepthook is _json_excepthook:
        sys.excepthook = sys.__excepthook__
    if level is not None:
        state.level = int(level)
    if xlog_level is not None:
        state.xlog_level = int(xlog_level)
    if stderr is not None:
        state.stderr = bool(stderr)
    if syslog is not None:
        state.syslog = bool(syslog)
    if facility is not None:
        state.facility = facility
    if name is not None:
        state.name = name
    # (re)open when the facility or the name changed since: the script's
    # settings are applied as they are read, so syslog may have been
    # opened before syslog_facility was seen
    opened = (state.name, state.facility or "LOG_DAEMON")
    if state.syslog and (state._syslog_mod is None
                         or state._syslog_opened != opened):
        import syslog as _sl
        fac = getattr(_sl, opened[1], _sl.LOG_DAEMON)
        _sl.openlog(state.name, _sl.LOG_PID, fac)
        state._syslog_mod = _sl
        state._syslog_opened = opened


def _json_excepthook(etype, value, tb) -> None:
    import traceback
    emit(L_CRIT, "uncaught exception:\n" +
         "".join(traceback.format_exception(etype, value, tb)))


def refresh() -> None:
    """Pick up this process's log level from its process-table slot.

    MI ``log_level`` (running in another process) writes the new level into
    the slot; each process's loop calls this to apply it.  Cheap: one read
    of shared memory and an integer comparison."""
    i = pt.my_id
    if i is None or i >= pt.size():
        return
    level = pt.get_log_level(i)
    if level != state.level:
        state.level = level


def syslog_facility(name: str) -> int:
    """Validate a facility name such as LOG_LOCAL0; return its number."""
    import syslog as _sl
    if not name.startswith("LOG_") or not hasattr(_sl, name):
        raise ValueError(f"unknown syslog facility {name!r}")
    return getattr(_sl, name)


def _whoami():
    """(pid, rank, process type) of this process, from the process table
    (looked up once per process)."""
    pid = os.getpid()
    w = state._whoami
    if w is not None and w[0] == pid:
        return w
    rank, ptype = None, None
    i = pt.my_id
    try:
        if i is not None and i < pt.size():
            e = pt.get(i)
            if e.pid == pid:
                rank, ptype = e.rank, e.type
    except Exception:
        pass
    w = (pid, rank, ptype)
    if ptype is not None:
        state._whoami = w
    return w


def _module_of(depth: int) -> str:
    """The module whose code called the LM_* function."""
    try:
        f = sys._getframe(depth)
    except ValueError:
        return "core"
    while f is not None and f.f_globals.get("__name__") == __name__:
        f = f.f_back
    name = f.f_globals.get("__name__", "") if f is not None else ""
    for pkg in ("opensipy_modules.", "opensipy_ext_modules."):
        if name.startswith(pkg):
            return name[len(pkg):].split(".", 1)[0]
    return "core"


def json_line(level: int, text: str) -> str:
    """One log record as a JSON object on one line (no newline)."""
    pid, rank, ptype = _whoami()
    now = time.time()
    rec = {
        "time": datetime.datetime.fromtimestamp(
            now, datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "level": LEVEL_NAMES.get(level, str(level)),
        "pid": pid,
        "rank": rank,
        "process": ptype,
        "module": _module_of(1),
        "message": text.rstrip("\n"),
    }
    msg = state.msg
    if msg is not None:
        try:
            cid = msg.callid
        except Exception:
            cid = None
        if cid:
            rec["callid"] = cid
    return json.dumps(rec, ensure_ascii=False, default=str)


def _write_stderr(line: str) -> None:
    """One write() for the whole line (a pipe or an O_APPEND file takes it
    in one piece, so processes never interleave inside a line)."""
    err = sys.stderr
    try:
        fd = err.fileno()
    except (AttributeError, ValueError, OSError):
        fd = None          # replaced by a capture object (tests)
    try:
        if fd is None:
            err.write(line)
            err.flush()
            return
        err.flush()        # whatever print() left first
        data = line.encode("utf-8", "replace")
        while data:
            n = os.write(fd, data)
            data = data[n:]
    except (OSError, ValueError):
        pass


def emit(level: int, text: str) -> None:
    """Write one log line (the level check is the caller's)."""
    js = None
    if state.syslog and state._syslog_mod is not None:
        if state.syslog_format == "json":
            js = json_line(level, text)
            state._syslog_mod.syslog(_SYSLOG_PRIO.get(level, 6), js)
        else:
            state._syslog_mod.syslog(_SYSLOG_PRIO.get(level, 6), text)
    if state.stderr or not state.syslog:
        if state.stderr_format == "json":
            line = (js or json_line(level, text)) + "\n"
        else:
            line = (f"{time.strftime('%b %d %H:%M:%S')} [{os.getpid()}] "
                    f"{LEVEL_NAMES.get(level, str(level))}:{text}")
            if not line.endswith("\n"):
                line += "\n"
        _write_stderr(line)


def log(level: int, text: str) -> None:
    if level <= state.level:
        emit(level, text)


def LM_ALERT(text: str) -> None:
    if L_ALERT <= state.level:
        emit(L_ALERT, text)


def LM_CRIT(text: str) -> None:
    if L_CRIT <= state.level:
        emit(L_CRIT, text)


def LM_ERR(text: str) -> None:
    if L_ERR <= state.level:
        emit(L_ERR, text)


def LM_WARN(text: str) -> None:
    if L_WARN <= state.level:
        emit(L_WARN, text)


def LM_NOTICE(text: str) -> None:
    if L_NOTICE <= state.level:
        emit(L_NOTICE, text)


def LM_INFO(text: str) -> None:
    if L_INFO <= state.level:
        emit(L_INFO, text)


def LM_DBG(text: str) -> None:
    if L_DBG <= state.level:
        emit(L_DBG, text)
