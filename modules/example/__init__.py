"""example: the manual's "ournewmod", the module to copy when writing one.

Every member of ``ModuleExports`` is used once, so a module author finds each
part of the OpenSIPS module-development manual here.  The module keeps a list
of destinations (``modparam("example", "destination", "group:ip:port")``,
which may repeat) and checks whether an address is one of them, like
load_balancer's ``lb_is_destination``.  Each destination is enabled or
disabled (``example_status`` over MI, like load_balancer's ``lb_status``);
the state lives in shared memory, created in mod_init, so a change made
in the MI process is seen by every SIP worker; ``active`` = 1 checks the
enabled destinations only.

When ``trace_file`` is set, every lifecycle hook appends one line to it
(``<hook> pid=<pid> ppid=<ppid> rank=<rank>``), so an operator or a test can
see what ran where.
"""
from __future__ import annotations

import os
import time

from opensipy import log, shm
from opensipy.mi import MIError, get_int, param_error
from opensipy.sr_module import (ALL_ROUTES, CMD_PARAM_INT, CMD_PARAM_OPT,
                                CMD_PARAM_STATIC, CMD_PARAM_VAR, INT_PARAM,
                                PROC_FLAG_INITCHILD, STR_PARAM,
                                USE_FUNC_PARAM, CmdExport, CmdParam,
                                MIExport, MIRecipe, ModuleExports, ParamExport,
                                ProcExport, PVExport, StatExport)

# ---- parameters (module attributes named by ParamExport.param_pointer) ----
enable_stats = 1
db_url = ""
trace_file = ""
proc_no = 1
destinations = []            # filled by the USE_FUNC_PARAM "destination"
enabled = []                 # per destination: shm AtomicCounter, 1 / 0

# ---- statistics (bound by the core to the attributes named here) ----------
example_stat = None          # matched checks
example_checks = None        # all checks


def trace(hook: str, rank=None) -> None:
    if not trace_file:
        return
    line = f"{hook} pid={os.getpid()} ppid={os.getppid()} rank={rank}\n"
    fd = os.open(trace_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def add_destination(value: str) -> int:
    """``destination`` = "group:ip:port"; may be set many times."""
    parts = value.rsplit(":", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        raise ValueError(f"destination {value!r} is not group:ip:port")
    destinations.append((int(parts[0]), parts[1].strip("[]"), int(parts[2])))
    return 0


def fixup_uint(value):
    """Fixup of the 4th parameter: a constant unsigned integer."""
    if value < 0:
        raise ValueError(f"expects an unsigned integer, got {value}")
    return value


def w_is_example_destination(msg, ip_spec, port_spec=None, group=-1,
                             active=0) -> int:
    """is_example_destination(ip_var [, port_var [, group [, active]]]):
    1 when the address held by the variables is a configured destination
    (of that group; -1 = any), -1 otherwise."""
    ip = ip_spec.get(msg)
    port = port_spec.get(msg) if port_spec is not None else None
    if group is None:             # an omitted optional parameter is None
        group = -1
    if enable_stats and example_checks is not None:
        example_checks.inc()
    for i, (g, dip, dport) in enumerate(destinations):
        if group not in (-1, g) or str(ip) != dip:
            continue
        if port not in (None, 0, "") and int(port) != dport:
            continue
        if active and i < len(enabled) and not enabled[i].get():
            continue                   # disabled over MI
        if enable_stats and example_stat is not None:
            example_stat.inc()
        return 1
    return -1


def _is_enabled(i: int) -> int:
    return int(enabled[i].get()) if i < len(enabled) else 1


def mi_example_list(params):
    """MI ``example_list``: the configured destinations (``id`` counts
    from 1, in the order of the ``destination`` parameters)."""
    return {"Destinations": [{"id": i + 1, "group": g, "ip": ip,
                              "port": port, "enabled": _is_enabled(i)}
                             for i, (g, ip, port) in enumerate(destinations)]}


def _mi_destination(params) -> int:
    i = get_int(params, "id") - 1
    if not 0 <= i < len(destinations):
        raise MIError(404, "Destination ID not found")
    return i


def mi_example_status(params):
    """MI ``example_status id``: the destination's state;
    ``example_status id status``: set it (0 disabled, 1 enabled)."""
    i = _mi_destination(params)
    return {"enabled": _is_enabled(i)}


def mi_example_status_set(params):
    i = _mi_destination(params)
    st = get_int(params, "status")
    if st not in (0, 1):
        raise param_error("status must be 0 (disabled) or 1 (enabled)")
    if i >= len(enabled):
        raise MIError(500, "the module is not initialised")
    enabled[i].set(st)
    return "OK"


def pv_get_example_count(msg, param):
    """``$example_count``: how many destinations are configured."""
    return len(destinations)


def example_process(rank: int) -> None:
    """The module's own process: it must never return."""
    trace("proc", rank)
    while True:
        time.sleep(3600)


def mod_init() -> int:
    trace("mod_init")
    if db_url:
        log.LM_INFO(f"example: db_url is {db_url}")
    # shared state is made before the fork, so every process sees it
    enabled[:] = [shm.AtomicCounter(1, "example") for _ in destinations]
    log.LM_DBG(f"example: {len(destinations)} destinations")
    return 0


def child_init(rank: int) -> int:
    trace("child_init", rank)
    return 0


def mod_destroy() -> None:
    trace("destroy")


exports = ModuleExports(
    name="example",
    cmds=[
        CmdExport("is_example_destination", w_is_example_destination, [
            CmdParam(CMD_PARAM_VAR),
            CmdParam(CMD_PARAM_VAR | CMD_PARAM_OPT),
            CmdParam(CMD_PARAM_INT | CMD_PARAM_OPT),
            CmdParam(CMD_PARAM_INT | CMD_PARAM_OPT | CMD_PARAM_STATIC,
                     fixup=fixup_uint),
        ], ALL_ROUTES),
    ],
    params=[
        ParamExport("enable_stats", INT_PARAM, "enable_stats"),
        ParamExport("db_url", STR_PARAM, "db_url"),
        ParamExport("trace_file", STR_PARAM, "trace_file"),
        ParamExport("proc_no", INT_PARAM, "proc_no"),
        ParamExport("destination", STR_PARAM | USE_FUNC_PARAM,
                    add_destination),
    ],
    stats=[
        StatExport("example_stat", 0, "example_stat"),
        StatExport("example_checks", 0, "example_checks"),
    ],
    mi_cmds=[
        MIExport("example_list", "lists the configured destinations", 0,
                 None, [MIRecipe(mi_example_list, ())]),
        MIExport("example_status", "shows or sets (0/1) whether a "
                 "destination is enabled", 0, None,
                 [MIRecipe(mi_example_status, ("id",)),
                  MIRecipe(mi_example_status_set, ("id", "status"))]),
    ],
    items=[PVExport("example_count", pv_get_example_count)],
    procs=[ProcExport("example worker", None, None, example_process,
                      "proc_no", PROC_FLAG_INITCHILD)],
    init_f=mod_init,
    init_child_f=child_init,
    destroy_f=mod_destroy,
)
