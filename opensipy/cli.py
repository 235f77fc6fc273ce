"""The ``opensipy`` command, with OpenSIPS's flags.

    opensipy [-f FILE] [-c] [-F] [-E] [-m MB] [-P FILE] [-V] [-h]

Without ``-F`` the server daemonizes, and the command returns only when every
process finished its initialisation: exit 0, or exit 1 with the reason, so
that ``Type=forking`` units and shell scripts get a truthful answer.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from . import __version__, config, log
from .attendant import Attendant, StartupError

EXIT_OK = 0
EXIT_FAIL = 1


def default_script() -> str:
    """The default script: the source tree's when running from one, then
    the installed copy, then /etc/opensipy/opensipy.cfg."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [
        os.path.join(os.path.dirname(here), "etc", "opensipy", "opensipy.cfg"),
        os.path.join(sys.prefix, "etc", "opensipy", "opensipy.cfg"),
        "/etc/opensipy/opensipy.cfg",
    ]
    for c in candidates:
        if os.path.isfile(c):
            return c
    return candidates[-1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="opensipy", add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="opensipy, a SIP server modelled on OpenSIPS.",
        epilog="global parameters of the script:\n" + config.describe())
    p.add_argument("-f", dest="script", metavar="FILE", default=None,
                   help="routing script (default: %s)" % default_script())
    p.add_argument("-c", dest="check", action="store_true",
                   help="check the script and exit (0 when valid)")
    p.add_argument("-F", dest="foreground", action="store_true",
                   help="stay in the foreground (no daemon)")
    p.add_argument("-E", dest="stderr", action="store_true",
                   help="log to standard error")
    p.add_argument("-m", dest="shm_mb", metavar="MB", type=int, default=64,
                   help="shared memory size in MB (default 64)")
    p.add_argument("-P", dest="pid_file", metavar="FILE", default=None,
                   help="write the attendant's pid to FILE")
    p.add_argument("-V", dest="version", action="store_true",
                   help="print the version and exit")
    p.add_argument("-h", action="help", help="print this help and exit")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"version: opensipy {__version__}")
        print(f"python: {sys.version.split()[0]}")
        return EXIT_OK
    if args.shm_mb < 1:
        print("opensipy: -m needs a size of at least 1 MB", file=sys.stderr)
        return EXIT_FAIL
    script = args.script or default_script()
    log.configure(stderr=True, syslog=False)
    from . import shm, statistics
    try:
        shm.shm_init(args.shm_mb * 1024 * 1024)
    except Exception as e:
        print(f"opensipy: cannot create {args.shm_mb} MB of shared memory: "
              f"{e}", file=sys.stderr)
        return EXIT_FAIL
    statistics.register_core_stats()
    att = Attendant(script, shm_mb=args.shm_mb, pid_file=args.pid_file,
                    log_stderr=args.stderr, foreground=args.foreground)
    errors = att.load()
    # warnings (an expression OpenSIPS groups unexpectedly...) never stop it
    for w in getattr(getattr(att, "script", None), "warnings", None) or ():
        print(str(w), file=sys.stderr)
    if args.check:
        for e in errors:
            print(str(e), file=sys.stderr)
        if errors:
            print(f"opensipy: {len(errors)} error(s) in {script}",
                  file=sys.stderr)
            return EXIT_FAIL
        print(f"opensipy: {script} is valid", file=sys.stderr)
        return EXIT_OK
    if errors:
        for e in errors:
            print(str(e), file=sys.stderr)
        print(f"opensipy: {len(errors)} error(s) in {script}; not starting",
              file=sys.stderr)
        return EXIT_FAIL
    if not args.foreground and not config.settings.debug_mode:
        status_fd = daemonize(keep_stderr=args.stderr
                              or config.settings.stderror_enabled)
        att.status_fd = status_fd
        att.main_pid = os.getpid()
    try:
        import setproctitle
        setproctitle.setproctitle("opensipy: attendant")
    except ImportError:
        pass
    try:
        att.write_pid_file()
        att.init()
        att.start()
    except Exception as e:
        if isinstance(e, StartupError):
            reason = str(e)
            log.LM_CRIT(f"cannot start: {reason}")
        else:                       # a bug: keep the traceback in the log
            reason = f"{type(e).__name__}: {e}"
            log.LM_CRIT(f"cannot start: {traceback.format_exc()}")
        att.release_parent(f"ERR {reason}")
        att.stopping = True
        att.stop()
        return EXIT_FAIL
    return att.run()


def daemonize(keep_stderr: bool) -> int:
    """Detach (double fork, new session).  The original process waits for
    one status line from the attendant and exits with it; the returned fd
    is where the attendant writes that line."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        line = b""
        with os.fdopen(r, "rb") as f:
            line = f.readline()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        text = line.decode("utf-8", "replace").strip()
        if text == "OK":
            os._exit(EXIT_OK)
        reason = text[4:] if text.startswith("ERR ") else \
            "the server exited during start-up"
        sys.stderr.write(f"opensipy: start failed: {reason}\n")
        sys.stderr.flush()
        os._exit(EXIT_FAIL)
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if not keep_stderr:
        os.dup2(devnull, 2)
    os.close(devnull)
    return w


if __name__ == "__main__":
    sys.exit(main())
