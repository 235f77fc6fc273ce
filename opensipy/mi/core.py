"""The core MI commands, with OpenSIPS's names, recipes and reply shapes.

=====================  ====================================================
command                reply
=====================  ====================================================
``uptime``             ``{"Now", "Up since", "Up time": "N [sec]"}``
``version``            ``{"Server": "opensipy (X.Y.Z (machine/os))"}``
``pwd``                ``{"WD": dir}``
``arg``                ``[argv...]``
``which``              ``[names]``; ``which command`` -> ``[[params]...]``
``help``               usage string; ``help mi_cmd`` -> ``{"Help",
                       "Exported by"}``
``ps``                 ``{"Processes": [{"ID", "PID", "Type"}]}`` plus
                       ``Rank``, ``RSS`` (bytes) and ``CPU`` (percent of
                       one core, averaged since the process started)
``kill``               ``"OK"``, then the server stops
``log_level``          ``{"Processes": [{"PID", "Log level", "Type"}]}``;
                       ``level`` -> ``{"New global log level"}``;
                       ``level pid`` -> ``{"Log level"}``
``get_statistics``     ``{"group:name": value}``
``list_statistics``    ``{"group:name": "incremental"|"non-incremental"}``
``reset_statistics``   ``"OK"``
``shm_check``          ``{"total_fragments": N}``
``mem_shm_dump``       ``"OK"`` (the arena's figures go to the log)
``reload_routes``      ``"OK"``; a script that does not compile: error 500
                       ``reload failed``, ``data`` = every
                       ``FILE:LINE:COL: message`` (opensipy/script/reload.py)
=====================  ====================================================
"""
from __future__ import annotations

import os
import platform
import signal
import sys
import time
from typing import Any, Dict, List

from .. import __version__, log, pt
from ..sr_module import STAT_IS_FUNC, STAT_NO_RESET, MIExport, MIRecipe
from .dispatch import (INVALID_PARAMS, OK, Dispatcher, MIError, get_array,
                       get_int, get_str, param_error)

HELP_USAGE = "Usage: help mi_cmd - returns information about 'mi_cmd'"
_IMPORT_TIME = time.time()


def server_start_time() -> float:
    """Wall-clock time the server started (the shm arena's creation)."""
    try:
        from .. import statistics
        return time.time() - statistics.uptime()
    except Exception:
        return _IMPORT_TIME


def server_version() -> str:
    return f"opensipy ({__version__} ({platform.machine()}/{sys.platform}))"


# --------------------------------------------------------------- processes

def _proc_usage(pid: int) -> tuple:
    """(rss bytes, cpu percent since start) of a process; zeros when it
    cannot be read."""
    try:
        import psutil
        p = psutil.Process(pid)
        with p.oneshot():
            rss = p.memory_info().rss
            ct = p.cpu_times()
            age = max(time.time() - p.create_time(), 1e-3)
        return rss, round(100.0 * (ct.user + ct.system) / age, 1)
    except Exception:   # gone, no permission, no psutil
        return 0, 0.0


def attendant_pid() -> int:
    if pt.size():
        e = pt.get(0)
        if e.pid:
            return e.pid
    return os.getppid()


# --------------------------------------------------------------- statistics

def _stats():
    from .. import statistics
    return statistics


def _find_stat(name: str):
    """(group, name, Stat) for 'group:name' or a bare name (searched in
    every group, case-insensitively, as OpenSIPS does); None if unknown."""
    st = _stats()
    group, sep, sname = name.partition(":")
    if sep:
        try:
            s = st.get_stat(name)
        except Exception:
            s = None
        return (group, sname, s) if s is not None else None
    low = name.lower()
    for g in st.list_groups():
        for n in st.list_stats(g):
            if n.lower() == low:
                s = st.get_stat(f"{g}:{n}")
                if s is not None:
                    return g, n, s
    return None


def _kind(stat) -> str:
    if stat.flags & (STAT_IS_FUNC | STAT_NO_RESET):
        return "non-incremental"
    return "incremental"


def _stat_names(params) -> List[str]:
    names = get_array(params, "statistics")
    for n in names:
        if not isinstance(n, str):
            raise param_error("statistics must be an array of strings")
    return names


NOT_FOUND = (404, "Statistics Not Found")


class CoreCommands:
    """The handlers, bound to the dispatcher they serve (``which`` and
    ``help`` read its table, ``kill`` acts after the reply is sent)."""

    def __init__(self, disp: Dispatcher):
        self.disp = disp

    # -- information
    def uptime(self, params) -> Dict[str, Any]:
        now = time.time()
        start = server_start_time()
        return {"Now": time.ctime(now), "Up since": time.ctime(start),
                "Up time": f"{int(now - start)} [sec]"}

    def version(self, params) -> Dict[str, Any]:
        return {"Server": server_version()}

    def pwd(self, params) -> Dict[str, Any]:
        return {"WD": os.getcwd()}

    def arg(self, params) -> List[str]:
        return list(getattr(sys, "orig_argv", None) or sys.argv)

    def which(self, params) -> List[str]:
        return self.disp.table.names()

    def which_cmd(self, params) -> List[List[str]]:
        cmd = self.disp.table.find(get_str(params, "command"))
        if cmd is None:
            raise MIError(404, "unknown MI command")
        return [list(r.params) for r in cmd.recipes]

    def help(self, params) -> str:
        return HELP_USAGE

    def help_cmd(self, params) -> Dict[str, Any]:
        cmd = self.disp.table.find(get_str(params, "mi_cmd"))
        if cmd is None:
            raise MIError(404, "unknown MI command")
        return {"Help": cmd.help or "not available for this command",
                "Exported by": cmd.module}

    # -- processes
    def ps(self, params) -> Dict[str, Any]:
        procs = []
        for e in pt.entries():
            rss, cpu = _proc_usage(e.pid)
            procs.append({"ID": e.id, "PID": e.pid, "Type": e.type,
                          "Rank": e.rank, "RSS": rss, "CPU": cpu})
        return {"Processes": procs}

    def kill(self, params) -> str:
        pid = attendant_pid()
        log.LM_NOTICE(f"MI kill: stopping the server (pid {pid})")
        self.disp.after_reply(lambda: os.kill(pid, signal.SIGTERM))
        return OK

    # -- log level
    def log_level_get(self, params) -> Dict[str, Any]:
        return {"Processes": [{"PID": e.pid, "Log level": e.log_level,
                               "Type": e.type} for e in pt.entries()]}

    @staticmethod
    def _level(params) -> int:
        level = get_int(params, "level")
        if not log.L_ALERT <= level <= log.L_DBG:
            raise param_error(f"level must be between {log.L_ALERT} and "
                              f"{log.L_DBG}")
        return level

    def log_level_set(self, params) -> Dict[str, Any]:
        level = self._level(params)
        pt.set_global_log_level(level)
        log.refresh()
        if not pt.size():
            log.state.level = level
        return {"New global log level": level}

    def log_level_pid(self, params) -> Dict[str, Any]:
        level = self._level(params)
        pid = get_int(params, "pid")
        e = pt.find_pid(pid) if pid > 0 else None
        if e is None:
            raise MIError(INVALID_PARAMS, data="Bad PID")
        pt.set_log_level(e.id, level)
        log.refresh()
        return {"Log level": level}

    # -- statistics
    def get_statistics(self, params) -> Dict[str, Any]:
        st = _stats()
        out: Dict[str, Any] = {}
        found = False
        for name in _stat_names(params):
            if name == "all":
                out.update(st.get_statistics("all"))
                found = True
            elif len(name) > 1 and name.endswith(":"):
                if name[:-1] not in st.list_groups():
                    continue
                out.update(st.get_statistics(name))
                found = True
            else:
                hit = _find_stat(name)
                if hit is None:
                    continue
                g, n, s = hit
                out[f"{g}:{n}"] = s.get()
                found = True
        if not found:
            raise MIError(*NOT_FOUND)
        return out

    def list_statistics(self, params) -> Dict[str, Any]:
        st = _stats()
        out = {}
        for g in st.list_groups():
            for n in st.list_stats(g):
                s = st.get_stat(f"{g}:{n}")
                if s is not None:
                    out[f"{g}:{n}"] = _kind(s)
        return out

    def list_statistics_some(self, params) -> Dict[str, Any]:
        st = _stats()
        out = {}
        found = False
        for name in _stat_names(params):
            if len(name) > 1 and name.endswith(":"):
                g = name[:-1]
                if g not in st.list_groups():
                    continue
                for n in st.list_stats(g):
                    s = st.get_stat(f"{g}:{n}")
                    if s is not None:
                        out[f"{g}:{n}"] = _kind(s)
                found = True
            else:
                hit = _find_stat(name)
                if hit is None:
                    continue
                out[f"{hit[0]}:{hit[1]}"] = _kind(hit[2])
                found = True
        if not found:
            raise MIError(*NOT_FOUND)
        return out

    def reset_statistics(self, params) -> str:
        found = False
        for name in _stat_names(params):
            hit = _find_stat(name)
            if hit is None:
                continue
            hit[2].reset()
            found = True
        if not found:
            raise MIError(*NOT_FOUND)
        return OK

    # -- shared memory
    def shm_check(self, params) -> Dict[str, Any]:
        from .. import shm
        try:
            shm.check()
        except shm.ShmError as e:
            raise MIError(500, str(e)) from None
        return {"total_fragments": shm.stats()["fragments"]}

    def _shm_dump(self, level: int) -> str:
        from .. import shm
        figures = shm.stats()
        usage = shm.module_usage()
        lines = ["Memory status (shm):"]
        lines += [f"  {k}: {v}" for k, v in figures.items()]
        lines += [f"  module {m}: {b} bytes" for m, b in usage.items()]
        log.log(level, "\n".join(lines))
        return OK

    def mem_shm_dump(self, params) -> str:
        return self._shm_dump(log.L_DBG)

    def mem_shm_dump_level(self, params) -> str:
        level = get_int(params, "log_level")
        if not log.L_ALERT <= level <= log.L_DBG:      # as log_level's
            raise param_error(f"log_level must be between {log.L_ALERT} "
                              f"and {log.L_DBG}")
        return self._shm_dump(level)

    # -- the export table
    def exports(self) -> List[MIExport]:
        R = MIRecipe
        return [
            MIExport("uptime", "prints various time information about "
                     "opensipy - when it started to run, for how long it "
                     "runs", recipes=[R(self.uptime)]),
            MIExport("version", "prints the version string of a running "
                     "opensipy", recipes=[R(self.version)]),
            MIExport("pwd", "prints the working directory of opensipy",
                     recipes=[R(self.pwd)]),
            MIExport("arg", "returns the full list of arguments used at "
                     "startup", recipes=[R(self.arg)]),
            MIExport("which", "lists all available MI commands",
                     recipes=[R(self.which),
                              R(self.which_cmd, ("command",))]),
            MIExport("ps", "lists all processes used by opensipy",
                     recipes=[R(self.ps)]),
            MIExport("kill", "terminates opensipy", recipes=[R(self.kill)]),
            MIExport("log_level", "gets/sets the per process or global log "
                     "level in opensipy",
                     recipes=[R(self.log_level_get),
                              R(self.log_level_set, ("level",)),
                              R(self.log_level_pid, ("level", "pid"))]),
            MIExport("get_statistics", "prints the statistics (all, group "
                     "or one) real-time values",
                     recipes=[R(self.get_statistics, ("statistics",))]),
            MIExport("list_statistics", "lists all the registered "
                     "statistics and their types",
                     recipes=[R(self.list_statistics),
                              R(self.list_statistics_some,
                                ("statistics",))]),
            MIExport("reset_statistics", "resets the value of a "
                     "statistic variable",
                     recipes=[R(self.reset_statistics, ("statistics",))]),
            MIExport("shm_check", "complete scan of the shared memory pool",
                     recipes=[R(self.shm_check)]),
            MIExport("mem_shm_dump", "forces a status dump of the shm "
                     "memory (to the log)",
                     recipes=[R(self.mem_shm_dump),
                              R(self.mem_shm_dump_level, ("log_level",))]),
            MIExport("reload_routes", "reloads the routes of the script "
                     "file in every process (parsed, checked and compiled "
                     "first; on error nothing changes)",
                     recipes=[R(_reload_routes)]),
            MIExport("help", "prints information about MI commands usage",
                     recipes=[R(self.help), R(self.help_cmd, ("mi_cmd",))]),
            *_cachedb_mi_cmds(),
        ]


def _reload_routes(params):
    from ..script.reload import mi_reload_routes
    return mi_reload_routes(params)


def _cachedb_mi_cmds() -> List[MIExport]:
    """The core's cachedb MI commands (cache_store/fetch/remove)."""
    from ..cachedb.script import MI_CMDS
    return list(MI_CMDS)
