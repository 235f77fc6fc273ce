"""The attendant: the process ``opensipy`` starts as.

It reads like its job (gunicorn's arbiter is the model):

* :meth:`Attendant.load` parses the script, applies the global parameters,
  loads the modules and their ``modparam``s, and checks every route
  (``opensipy -c`` stops there);
* :meth:`Attendant.init` runs every mod_init in dependency order, the
  fixups, the route compilation, and opens the sockets;
* :meth:`Attendant.start` forks the SIP receivers, the timer process and the
  modules' processes; each child runs child_init(rank) for every module and
  then reports on the ready pipe;
* :meth:`Attendant.run` is the supervision loop: signals are only queued by
  their handlers and dispatched here to ``handle_<signal>``; dead children
  are reaped, respawned (receivers, timer) or stop the server (module
  processes, init failures, too many deaths);
* :meth:`Attendant.stop` stops the children (grace period, then SIGKILL)
  and runs every destroy_f in reverse order.
"""
from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import config, log, modloader, pt, sdnotify
from .sr_module import (PROC_FLAG_INITCHILD, PROC_MAIN, PROC_MODULE,
                        PROC_TCP_MAIN, PROC_TIMER, ModuleError)

# exit codes of children that mean "do not respawn me"
EXIT_INIT_FAILED = 3       # child_init failed: the server cannot run
EXIT_PROC_RETURNED = 4     # a module process returned: stop the server

RESPAWN_WINDOW = 10.0      # seconds
RESPAWN_MAX = 5            # deaths within the window that stop the server
READY_TIMEOUT = 60.0       # seconds for every child to finish child_init
STOP_GRACE = 5.0           # seconds between SIGTERM and SIGKILL

_READY = struct.Struct("<ii")   # slot id, pid


class StartupError(Exception):
    """The server cannot start; the message says why."""


@dataclass
class Slot:
    """One entry of the process tree, kept across respawns."""
    id: int
    kind: str                      # "sip", "timer", "module"
    rank: int
    desc: str
    target: Callable[[int], Any]
    respawn: bool
    initchild: bool = True
    module: Optional[str] = None
    pid: int = 0
    ready: bool = False


SIGNAME = {s.value: s.name for s in signal.Signals}


class Attendant:
    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD,
               signal.SIGQUIT)

    def __init__(self, script_path: str, shm_mb: int = 64,
                 pid_file: Optional[str] = None, log_stderr: bool = False,
                 foreground: bool = True):
        self.script_path = script_path
        self.shm_mb = shm_mb
        self.pid_file = os.path.abspath(pid_file) if pid_file else None
        self.log_stderr = log_stderr
        self.foreground = foreground
        self.registry = modloader.Registry()
        self.script = None
        self.compiled = None
        self.slots: List[Slot] = []
        self.by_pid: Dict[int, Slot] = {}
        self.sig_queue: List[int] = []
        self.deaths: List[float] = []
        self.stopping = False
        self.exit_code = 0
        self.inited_modules: List[modloader.LoadedModule] = []
        self.ready_r = self.ready_w = -1
        self.wake_r = self.wake_w = -1
        self.status_fd = -1        # daemon mode: tells the parent how we did
        self.main_pid = os.getpid()

    # ------------------------------------------------------------ load
    def load(self) -> List[Any]:
        """Parse the script, apply globals, load modules, check routes.
        Returns the list of ScriptError (empty when the script is good)."""
        from . import script as script_mod
        from .script.errors import ScriptError, ScriptErrors
        from . import statistics
        config.reset()
        self.registry = modloader.Registry()
        modloader.registry = self.registry
        from .core_cmds import core_exports
        self.registry.add(modloader.LoadedModule("core", core_exports))
        try:
            self.script = script_mod.parse_file(self.script_path)
        except ScriptErrors as e:
            return list(e.errors)
        except OSError as e:
            return [ScriptError(self.script_path, 0, 0,
                                f"cannot read the script: {e.strerror}")]
        errors = []
        whole_file = (self.script_path, 1, 1)  # errors about no single line
        top = self.script.top
        later = {}
        for i, item in enumerate(top):
            if type(item).__name__ == "LoadModule":
                later.setdefault(modloader.module_name_of(item.path), i)
        for i, item in enumerate(top):
            kind = type(item).__name__
            try:
                if kind == "GlobalParam":
                    n = len(config.settings.sockets)
                    config.settings.set(item.name, item.value, item.kind,
                                        item.loc)
                    if len(config.settings.sockets) > n:
                        config.settings.sockets[-1].loc = item.loc
                    self._apply_log_settings()
                elif kind == "LoadModule":
                    lm = modloader.load_module(self.registry, item.path,
                                               config.settings.mpath,
                                               item.loc)
                    lm.stats = statistics.register_module_stats(
                        lm.name, lm.exports.stats)
                    self._bind_stats(lm)
                elif kind == "ModParam":
                    pending = [n for n, j in later.items() if j > i]
                    modloader.set_mod_param(self.registry, item.module,
                                            item.param, item.value, item.kind,
                                            item.loc, pending)
            except (config.ConfigError, ModuleError) as e:
                errors.append(ScriptError.at(e.loc or whole_file,
                                             str(e.args[0])))
        from . import resolve
        resolve.configure(config.settings)
        for loc, msg in self.registry.check_deps():
            errors.append(ScriptError.at(loc or whole_file, msg))
        if not config.settings.sockets:
            errors.append(ScriptError.at(whole_file,
                                         "no socket= (listen=) is defined"))
        for si in config.settings.sockets:
            loc = si.loc or whole_file
            if si.proto not in ("udp", "tcp"):
                errors.append(ScriptError.at(
                    loc, f"socket {si.name}: protocol '{si.proto}' is not "
                         f"supported yet (only udp and tcp)"))
            elif not self.registry.is_loaded(f"proto_{si.proto}"):
                errors.append(ScriptError.at(
                    loc, f"socket {si.name} needs loadmodule "
                         f"\"proto_{si.proto}.so\""))
        errors.extend(script_mod.check(self.script, self.registry))
        return errors

    def _bind_stats(self, lm) -> None:
        """Hand each created statistic to the module attribute its export
        names (the manual's ``stat_pointer``)."""
        for se in lm.exports.stats:
            if isinstance(se.stat_pointer, str) and se.name in lm.stats:
                setattr(lm.pymod, se.stat_pointer, lm.stats[se.name])

    def _apply_log_settings(self) -> None:
        from . import core_cmds
        s = config.settings
        core_cmds.xlog_print_level = s.xlog_print_level
        log.configure(level=4 if s.debug_mode else s.log_level,
                      xlog_level=s.xlog_level,
                      stderr=self.log_stderr or s.stderror_enabled
                      or s.debug_mode,
                      syslog=s.syslog_enabled and not self.log_stderr
                      and not s.debug_mode,
                      facility=s.syslog_facility, name=s.syslog_name)

    # ------------------------------------------------------------ init
    def init(self) -> None:
        """mod_init of every module, fixups and compilation, sockets."""
        from . import pvar, script as script_mod, statistics, timer
        from .net import tcp, udp
        self._apply_log_settings()
        pvar.startup_time = int(time.time())
        timer.set_timer_workers(config.settings.timer_workers)
        timer.open_registration()
        try:
            for lm in self.registry.init_order():
                f = lm.exports.init_f
                if f is None:
                    self.inited_modules.append(lm)
                    continue
                try:
                    rc = f()
                except Exception as e:
                    log.LM_ERR(traceback.format_exc())
                    raise StartupError(f"mod_init of module '{lm.name}' "
                                       f"failed: {type(e).__name__}: {e}")
                if rc is not None and rc < 0:
                    raise StartupError(f"mod_init of module '{lm.name}' "
                                       f"failed (returned {rc})")
                self.inited_modules.append(lm)
            try:
                self.compiled = script_mod.compile_script(self.script,
                                                          self.registry)
            except Exception as e:
                errs = getattr(e, "errors", None)
                text = "\n".join(str(x) for x in errs) if errs else str(e)
                raise StartupError(f"script fixup failed:\n{text}")
            for name, seconds, fn in self.compiled.timer_routes:
                timer.register_timer(f"timer_route[{name}]",
                                     self._timer_route_runner(name), None,
                                     seconds)
            from .script import reload
            reload.setup(self.script_path, self.script)
        finally:
            timer.close_registration()
        statistics.register_net_sockets(
            lambda: [(si.proto, si.host, si.port)
                     for si in config.settings.sockets])
        for si in config.settings.sockets:
            proto_mod = self.registry.get(f"proto_{si.proto}")
            if not si.port_given and proto_mod is not None:
                si.port = getattr(proto_mod.pymod, f"{si.proto}_port", si.port)
            try:
                if si.proto == "tcp":
                    tcp.open_tcp(si)
                else:
                    udp.open_udp(si, config.settings.maxbuffer)
            except OSError as e:
                raise StartupError(str(e.strerror or e))
        if tcp.enabled():
            tcp.init_table()
        self._plan_slots()
        for slot in self.slots:            # load:load-proc-<id>
            if slot.kind == "sip":
                statistics.load.declare_proc(slot.id)
        statistics.close_registration()

    def _timer_route_runner(self, name):
        """The route is looked up at each run: reload_routes may have
        replaced its body."""
        from .receive import run_route_without_msg
        from .script.runtime import find_route

        def run(ticks, param):
            fn = find_route("timer_route", name)
            if fn is not None:
                run_route_without_msg(fn)
        return run

    def _plan_slots(self) -> None:
        from . import receive, timer
        from .net import tcp, udp
        self.slots = []
        sid = 1                                  # 0 is the attendant
        rank = 1
        s = config.settings
        for si in s.sockets:
            if si.proto != "udp":
                continue
            n = 1 if s.debug_mode else (si.workers or s.udp_workers)
            group = None
            if n > 1 and s.udp_workers_standby and udp.have_groups():
                group = udp.RcvGroup(n)
            for k in range(n):
                self.slots.append(Slot(
                    sid, "sip", rank, f"SIP receiver {si.name}",
                    self._receiver_target(si, group, k), respawn=True))
                sid += 1
                rank += 1
        tcp_main = -1
        tcp_workers = []
        if tcp.enabled():
            # OpenSIPS's shape: the TCP main, then the TCP workers with
            # the ranks after the UDP receivers
            tcp_main = sid
            self.slots.append(Slot(sid, "tcp", PROC_TCP_MAIN, "TCP main",
                                   lambda r: tcp.tcp_main_loop(),
                                   respawn=False))
            sid += 1
            n = 1 if s.debug_mode else s.tcp_workers
            for _ in range(n):
                tcp_workers.append(sid)
                self.slots.append(Slot(sid, "sip", rank, "TCP receiver",
                                       self._tcp_worker_target(),
                                       respawn=True))
                sid += 1
                rank += 1
        self.slots.append(Slot(sid, "timer", PROC_TIMER, "timer",
                               lambda r: timer.timer_process_loop(),
                               respawn=True))
        sid += 1
        for lm in self.inited_modules:
            for pe in lm.exports.procs:
                no = pe.no
                if isinstance(no, str):
                    no = int(getattr(lm.pymod, no))
                for _ in range(no):
                    initchild = bool(pe.flags & PROC_FLAG_INITCHILD)
                    self.slots.append(Slot(
                        sid, "module", PROC_MODULE,
                        pe.name, self._module_proc_target(pe), respawn=False,
                        initchild=initchild, module=lm.name))
                    sid += 1
        if tcp.enabled():
            tcp.plan_channels(len(self.slots) + 1, tcp_main, tcp_workers)
        pt.init(len(self.slots) + 1, log.state.level)
        pt.set_entry(0, os.getpid(), PROC_MAIN, "attendant")

    def _receiver_target(self, si, group=None, index=0):
        from . import receive
        from .net import udp

        def target(rank):
            receive.child_start(rank, self.compiled)
            udp.udp_rcv_loop(si, receive.receive_msg, group, index)
        return target

    def _tcp_worker_target(self):
        from . import receive
        from .net import tcp

        def target(rank):
            receive.child_start(rank, self.compiled)
            tcp.tcp_worker_loop(receive.receive_msg)
        return target

    def _module_proc_target(self, pe):
        def target(rank):
            pe.function(rank)
        return target

    # ------------------------------------------------------------ fork
    def start(self) -> None:
        """Fork every child and wait until all of them finished child_init."""
        self.ready_r, self.ready_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        for sig in self.SIGNALS:
            signal.signal(sig, self._queue_signal)
        for slot in self.slots:
            pre = self._proc_export(slot)
            if pre is not None and pre.pre_fork_function:
                if (pre.pre_fork_function() or 0) < 0:
                    raise StartupError(f"pre-fork hook of process "
                                       f"'{slot.desc}' failed")
            self.spawn(slot)
            if pre is not None and pre.post_fork_function:
                if (pre.post_fork_function() or 0) < 0:
                    raise StartupError(f"post-fork hook of process "
                                       f"'{slot.desc}' failed")
        self.wait_ready()
        self.child_init_main()

    def _proc_export(self, slot):
        if slot.kind != "module":
            return None
        lm = self.registry.get(slot.module)
        return next(p for p in lm.exports.procs if p.name == slot.desc)

    def spawn(self, slot: Slot) -> None:
        slot.ready = False
        pid = os.fork()
        if pid:
            slot.pid = pid
            self.by_pid[pid] = slot
            # the child starts at its slot's default level (see pt)
            pt.set_entry(slot.id, pid, slot.rank, slot.desc)
            return
        # ---- in the child: never return from here
        code = 1
        try:
            code = self._child_main(slot)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            try:
                log.LM_CRIT(f"process '{slot.desc}' (rank {slot.rank}) "
                            f"crashed:\n{traceback.format_exc()}")
            except BaseException:
                pass
            code = 1
        finally:
            try:
                sys.stderr.flush()
            except BaseException:
                pass
            os._exit(code)

    def _child_main(self, slot: Slot) -> int:
        signal.set_wakeup_fd(-1)
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _die_with_parent()
        if os.getppid() != self.main_pid:
            return 1
        for fd in (self.ready_r, self.wake_r, self.wake_w, self.status_fd):
            if fd >= 0:
                os.close(fd)
        pt.my_id = slot.id
        try:
            import setproctitle
            setproctitle.setproctitle(f"opensipy: {slot.desc}")
        except ImportError:
            pass
        if slot.initchild:
            for lm in self.inited_modules:
                f = lm.exports.init_child_f
                if f is None:
                    continue
                try:
                    rc = f(slot.rank)
                except Exception:
                    log.LM_ERR(f"child_init({slot.rank}) of module "
                               f"'{lm.name}' failed:\n"
                               f"{traceback.format_exc()}")
                    return EXIT_INIT_FAILED
                if rc is not None and rc < 0:
                    log.LM_ERR(f"child_init({slot.rank}) of module "
                               f"'{lm.name}' failed (returned {rc})")
                    return EXIT_INIT_FAILED
        os.write(self.ready_w, _READY.pack(slot.id, os.getpid()))
        os.close(self.ready_w)
        slot.target(slot.rank)
        if slot.kind == "module":
            log.LM_CRIT(f"process '{slot.desc}' of module '{slot.module}' "
                        f"returned; a module process must never return")
            return EXIT_PROC_RETURNED
        log.LM_CRIT(f"process '{slot.desc}' (rank {slot.rank}) returned")
        return 1

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(s.ready for s in self.slots):
            left = deadline - time.monotonic()
            if left <= 0:
                late = ", ".join(s.desc for s in self.slots if not s.ready)
                raise StartupError(f"processes did not finish their "
                                   f"initialisation in {READY_TIMEOUT:.0f}s: "
                                   f"{late}")
            self._poll(min(left, 1.0))
            if self.stopping:
                raise StartupError(self.stop_reason or "stopped during start")

    def child_init_main(self) -> None:
        for lm in self.inited_modules:
            f = lm.exports.init_child_f
            if f is None:
                continue
            rc = f(PROC_MAIN)
            if rc is not None and rc < 0:
                raise StartupError(f"child_init({PROC_MAIN}) of module "
                                   f"'{lm.name}' failed")

    # ------------------------------------------------------------ supervise
    stop_reason: Optional[str] = None

    def _queue_signal(self, signum, frame) -> None:
        if len(self.sig_queue) < 10:
            self.sig_queue.append(signum)

    def _poll(self, timeout: float) -> None:
        log.refresh()
        try:
            r, _, _ = select.select([self.wake_r, self.ready_r], [], [],
                                    timeout)
        except InterruptedError:
            r = []
        if self.ready_r in r:
            self._read_ready()
        if self.wake_r in r:
            try:
                while os.read(self.wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        while self.sig_queue:
            sig = self.sig_queue.pop(0)
            name = SIGNAME.get(sig, str(sig)).lower()
            getattr(self, f"handle_{name}", self.handle_other)(sig)

    def _read_ready(self) -> None:
        try:
            data = os.read(self.ready_r, _READY.size * 64)
        except BlockingIOError:
            return
        for off in range(0, len(data) - len(data) % _READY.size,
                         _READY.size):
            sid, pid = _READY.unpack_from(data, off)
            slot = self.by_pid.get(pid)
            if slot is not None and slot.id == sid:
                slot.ready = True

    def run(self) -> int:
        """Supervise until told to stop; returns the exit code."""
        sdnotify.notify("READY=1\nSTATUS=serving\nMAINPID=%d" % os.getpid())
        self.release_parent("OK")
        log.LM_NOTICE(f"opensipy started: {len(self.slots)} processes")
        while not self.stopping:
            self._poll(1.0)
        return self.stop()

    def release_parent(self, status: str) -> None:
        if self.status_fd >= 0:
            try:
                os.write(self.status_fd, (status.replace("\n", " ")
                                          + "\n").encode())
            except OSError:
                pass
            os.close(self.status_fd)
            self.status_fd = -1

    def handle_sigchld(self, sig) -> None:
        self.reap()

    def handle_sigterm(self, sig) -> None:
        log.LM_NOTICE("SIGTERM received, shutting down")
        self.stopping = True
        self.stop_reason = "SIGTERM received"

    def handle_sigint(self, sig) -> None:
        log.LM_NOTICE("SIGINT received, shutting down")
        self.stopping = True
        self.stop_reason = "SIGINT received"

    handle_sigquit = handle_sigint

    def handle_sighup(self, sig) -> None:
        log.LM_NOTICE("SIGHUP received and ignored (reload the routes "
                      "with MI reload_routes)")

    def handle_other(self, sig) -> None:
        log.LM_INFO(f"signal {sig} ignored")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.by_pid.pop(pid, None)
            if slot is None:
                continue
            pt.clear_pid(slot.id)
            slot.pid = 0
            if self.stopping:
                continue
            self.child_died(slot, status)

    def child_died(self, slot: Slot, status: int) -> None:
        how = describe_status(status)
        log.LM_ERR(f"process '{slot.desc}' (id {slot.id}, rank {slot.rank}) "
                   f"{how}")
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        if code == EXIT_INIT_FAILED:
            self.fail(f"process '{slot.desc}' failed its initialisation")
            return
        if slot.kind == "tcp":
            self.fail(f"the TCP main process ended ({how}); it holds every "
                      f"TCP connection: stopping the server", exit_code=1)
            return
        if code == EXIT_PROC_RETURNED or not slot.respawn:
            self.fail(f"module process '{slot.desc}' ended ({how}); "
                      f"stopping the server", exit_code=1)
            return
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < RESPAWN_WINDOW]
        self.deaths.append(now)
        if len(self.deaths) >= RESPAWN_MAX:
            self.fail(f"{len(self.deaths)} processes died within "
                      f"{RESPAWN_WINDOW:.0f}s; stopping the server",
                      exit_code=1)
            return
        log.LM_NOTICE(f"respawning '{slot.desc}' with rank {slot.rank}")
        self.spawn(slot)

    def fail(self, reason: str, exit_code: int = 1) -> None:
        log.LM_CRIT(reason)
        self.stop_reason = reason
        self.stopping = True
        self.exit_code = exit_code

    def stop(self) -> int:
        """Stop every child, run destroy_f in reverse order, clean up."""
        sdnotify.notify("STOPPING=1")
        self.stopping = True
        self.kill_children(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.by_pid and time.monotonic() < deadline:
            self.reap()
            if self.by_pid:
                time.sleep(0.02)
        if self.by_pid:
            log.LM_WARN("children still running after "
                        f"{STOP_GRACE:.0f}s, sending SIGKILL")
            self.kill_children(signal.SIGKILL)
            while self.by_pid:
                self.reap()
                time.sleep(0.01)
        self.destroy_modules()
        self.remove_pid_file()
        log.LM_NOTICE("opensipy stopped")
        # We are leaving: a late SIGTERM/SIGINT (a supervisor signalling the
        # whole process group twice) must not turn the clean exit into a
        # death by signal while the interpreter shuts down and restores the
        # default handlers.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        return self.exit_code

    def kill_children(self, sig) -> None:
        for pid in list(self.by_pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def destroy_modules(self) -> None:
        for lm in reversed(self.inited_modules):
            f = lm.exports.destroy_f
            if f is None:
                continue
            try:
                f()
            except Exception:
                log.LM_ERR(f"destroy of module '{lm.name}' failed:\n"
                           f"{traceback.format_exc()}")
        self.inited_modules = []

    def write_pid_file(self) -> None:
        if not self.pid_file:
            return
        tmp = f"{self.pid_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, self.pid_file)

    def remove_pid_file(self) -> None:
        if self.pid_file and os.getpid() == self.main_pid:
            try:
                os.unlink(self.pid_file)
            except FileNotFoundError:
                pass


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = SIGNAME.get(sig, str(sig))
        extra = " (perhaps out of memory)" if sig == signal.SIGKILL else ""
        return f"was killed by signal {name}{extra}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended (status {status})"


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this child when the attendant dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
