"""Logging with OpenSIPS's levels and switches.

Levels (dprint.h): L_ALERT=-3, L_CRIT=-2, L_ERR=-1, L_WARN=1, L_NOTICE=2,
L_INFO=3, L_DBG=4.  A message is printed when its level is <= the current
``log_level``.  Output goes to stderr (``stderror_enabled``/``-E``) or to
syslog (``syslog_enabled``, ``syslog_facility``); each line carries the pid,
as OpenSIPS's does, because many processes share one output.

The per-process level may be changed at run time (MI ``log_level``); the
core keeps the process's current level in :data:`state.level`, so the check
on the hot path is one integer comparison.
"""
from __future__ import annotations

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
                 "_syslog_mod")

    def __init__(self):
        self.level = L_NOTICE
        self.xlog_level = L_NOTICE
        self.stderr = True
        self.syslog = False
        self.facility = None
        self.name = "opensipy"
        self._syslog_mod = None


state = _State()


def configure(level=None, stderr=None, syslog=None, facility=None,
              name=None, xlog_level=None):
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
    if state.syslog and state._syslog_mod is None:
        import syslog as _sl
        fac = getattr(_sl, state.facility or "LOG_DAEMON", _sl.LOG_DAEMON)
        _sl.openlog(state.name, _sl.LOG_PID, fac)
        state._syslog_mod = _sl


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


def emit(level: int, text: str) -> None:
    """Write one log line (the level check is the caller's)."""
    if state.syslog and state._syslog_mod is not None:
        state._syslog_mod.syslog(_SYSLOG_PRIO.get(level, 6), text)
    if state.stderr or not state.syslog:
        line = (f"{time.strftime('%b %d %H:%M:%S')} [{os.getpid()}] "
                f"{LEVEL_NAMES.get(level, str(level))}:{text}")
        if not line.endswith("\n"):
            line += "\n"
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


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
