"""opensipyctl: the command-line client of opensipy's management interface,
shaped like opensips-cli.

    opensipyctl mi CMD [ARG ...|NAME=VALUE ...]     any MI command
    opensipyctl fifo CMD [ARG ...]                  the same, over the FIFO
    opensipyctl ps | stats [NAME ...] | version | uptime | log-level [LEVEL [PID]]
    opensipyctl shell                               interactive (also: no command on a tty)
    opensipyctl db create|drop|migrate|tables ...   the database (see ctl/db.py)
    opensipyctl ul show [AOR] | add AOR CONTACT [EXPIRES [Q]] | rm AOR [CONTACT]
                                                    user location (-t TABLE)
    opensipyctl user add|passwd|rm|list ...         subscribers (see ctl/user.py)
    opensipyctl setup [--root DIR]                  install as a service (ctl/setup.py)

Options: ``-f FILE`` (configuration; default ``~/.opensipyctl.cfg``, then
``/etc/opensipy/opensipyctl.cfg``), ``-o json|pretty|yaml|lines|none``.

The configuration file uses opensips-cli's keys in a ``[default]`` section:
``communication_type`` (``fifo``, ``datagram`` or ``http``), ``fifo_file``,
``fifo_reply_dir``, ``datagram_ip``, ``datagram_port``,
``datagram_unix_socket``, ``url``, ``output_type``, ``timeout``; for
``db``: ``database_url``, ``database_admin_url``, ``database_modules``;
for ``user``: ``database_url``, ``plain_text_passwords``.

Exit codes: 0 done, 1 the command failed (the server's error is printed),
2 bad usage or configuration, 3 opensipy is not running (nobody answers).
"""
from __future__ import annotations

import argparse
import configparser
import os
import re
import shlex
import sys
from typing import Any, Dict, List, Optional

from .client import (CtlError, DatagramClient, FifoClient, HttpClient,
                     MIReplyError, NotRunning)
from .output import FORMATS, OutputError, check_format, render

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3

DEFAULTS = {
    "communication_type": "fifo",
    "fifo_file": "/run/opensipy/opensipy_fifo",
    "fifo_reply_dir": "/tmp",
    "datagram_ip": "127.0.0.1",
    "datagram_port": "8080",
    "datagram_unix_socket": "",
    "url": "http://127.0.0.1:8888/mi",
    "output_type": "pretty",
    "timeout": "10",
}
CONFIG_PATHS = ("~/.opensipyctl.cfg", "/etc/opensipy/opensipyctl.cfg")
OUTPUT_ALIASES = {"pretty-print": "pretty", "dictionary": "json"}

# commands whose parameter at that index (and the rest) is an array, as
# opensips-cli sends them
ARRAY_PARAMS = {
    "get_statistics": (0, "statistics"),
    "list_statistics": (0, "statistics"),
    "reset_statistics": (0, "statistics"),
}
_NAMED = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*=")

FRIENDLY = ("ps", "stats", "version", "uptime", "log-level")


class UsageError(CtlError):
    exit_code = EXIT_USAGE


# ------------------------------------------------------------ configuration

def load_config(path: Optional[str]) -> Dict[str, str]:
    cfg = dict(DEFAULTS)
    if path:
        candidates = [path]
        if not os.path.isfile(os.path.expanduser(path)):
            raise UsageError(f"configuration file {path} not found")
    else:
        candidates = [p for p in CONFIG_PATHS
                      if os.path.isfile(os.path.expanduser(p))][:1]
    for p in candidates:
        cp = configparser.ConfigParser(interpolation=None)
        try:
            with open(os.path.expanduser(p)) as f:
                cp.read_file(f)
        except (OSError, configparser.Error) as e:
            raise UsageError(f"cannot read {p}: {e}") from None
        for section in ("default", "opensipyctl"):
            if cp.has_section(section):
                cfg.update(cp[section])
    return cfg


def make_client(cfg: Dict[str, str], transport: Optional[str] = None):
    kind = (transport or cfg["communication_type"]).strip().lower()
    try:
        timeout = float(cfg.get("timeout") or 10)
    except ValueError:
        raise UsageError(f"bad timeout {cfg.get('timeout')!r}") from None
    if kind == "fifo":
        return FifoClient(os.path.expanduser(cfg["fifo_file"]),
                          cfg["fifo_reply_dir"], timeout)
    if kind == "datagram":
        if cfg.get("datagram_unix_socket"):
            return DatagramClient(cfg["datagram_unix_socket"], timeout)
        try:
            port = int(cfg["datagram_port"])
        except ValueError:
            raise UsageError(f"bad datagram_port "
                             f"{cfg['datagram_port']!r}") from None
        return DatagramClient((cfg["datagram_ip"], port), timeout)
    if kind == "http":
        return HttpClient(cfg["url"], timeout)
    raise UsageError(f"unknown communication_type '{kind}' (fifo, datagram "
                     f"or http)")


# -------------------------------------------------------------- parameters

def build_params(cmd: str, args: List[str]):
    """opensips-cli's rules: only NAME=VALUE words -> named parameters,
    otherwise positional ones; for the statistics commands the names are
    gathered into the one array parameter."""
    if not args:
        return None
    array = ARRAY_PARAMS.get(cmd.split(":")[-1])
    if all(_NAMED.match(a) for a in args):
        named: Dict[str, Any] = {}
        for a in args:
            k, _, v = a.partition("=")
            named[k] = shlex.split(v) if array and k == array[1] else v
        return named
    if array is None:
        return list(args)
    idx = array[0]
    return list(args[:idx]) + [list(args[idx:])]


# ---------------------------------------------------------------- commands

class Ctl:
    def __init__(self, cfg: Dict[str, str], fmt: Optional[str]):
        self.cfg = cfg
        self.fmt = fmt                       # None: each command's default
        self.client = make_client(cfg)
        self._fifo = None
        self.out = sys.stdout

    def print(self, text: str) -> None:
        if text:
            print(text, file=self.out)

    def default_fmt(self) -> str:
        f = self.cfg.get("output_type") or "pretty"
        return OUTPUT_ALIASES.get(f, f)

    def mi(self, args: List[str], client=None, fmt=None) -> None:
        if not args:
            raise UsageError("which MI command? (opensipyctl mi CMD ...)")
        cmd, rest = args[0], args[1:]
        result = (client or self.client).call(cmd, build_params(cmd, rest))
        self.print(render(result, self.fmt or fmt or self.default_fmt()))

    def fifo(self, args: List[str]) -> None:
        if self._fifo is None:
            self._fifo = make_client(self.cfg, "fifo")
        self.mi(args, client=self._fifo, fmt="lines")

    def ps(self, args: List[str]) -> None:
        if args:
            raise UsageError("ps takes no arguments")
        res = self.client.call("ps")
        if self.fmt:
            return self.print(render(res, self.fmt))
        rows = [("ID", "PID", "Rank", "RSS(KB)", "CPU%", "Type")]
        for p in res.get("Processes", []):
            rows.append((str(p.get("ID")), str(p.get("PID")),
                         str(p.get("Rank", "")),
                         str(int(p.get("RSS", 0)) // 1024),
                         str(p.get("CPU", "")), str(p.get("Type"))))
        self.print(_table(rows))

    def stats(self, args: List[str]) -> None:
        res = self.client.call("get_statistics",
                               {"statistics": args or ["all"]})
        if self.fmt:
            return self.print(render(res, self.fmt))
        self.print("\n".join(f"{k} = {v}" for k, v in res.items()))

    def version(self, args: List[str]) -> None:
        res = self.client.call("version")
        self.print(render(res, self.fmt) if self.fmt else res.get("Server"))

    def uptime(self, args: List[str]) -> None:
        res = self.client.call("uptime")
        self.print(render(res, self.fmt or "lines"))

    def log_level(self, args: List[str]) -> None:
        if len(args) > 2:
            raise UsageError("log-level [LEVEL [PID]]")
        res = self.client.call("log_level", list(args) or None)
        if self.fmt or args:
            return self.print(render(res, self.fmt or "lines"))
        rows = [("PID", "Log level", "Type")]
        rows += [(str(p["PID"]), str(p["Log level"]), p["Type"])
                 for p in res.get("Processes", [])]
        self.print(_table(rows))

    def ul(self, args: List[str]) -> None:
        """User location over MI: show [AOR], add AOR CONTACT [EXPIRES
        [Q]], rm AOR [CONTACT]; ``-t TABLE`` (default location)."""
        table = "location"
        if len(args) >= 2 and args[0] == "-t":
            table, args = args[1], args[2:]
        if not args or args[0] not in ("show", "add", "rm"):
            raise UsageError("ul show [AOR] | ul add AOR CONTACT [EXPIRES "
                             "[Q]] | ul rm AOR [CONTACT]  (-t TABLE first)")
        what, rest = args[0], args[1:]
        if what == "show":
            if len(rest) > 1:
                raise UsageError("ul show [AOR]")
            if rest:
                res = self.client.call("ul_show_contact",
                                       {"table_name": table, "aor": rest[0]})
                aors = [res]
            else:
                res = self.client.call("ul_dump")
                aors = [a for d in res.get("Domains", [])
                        if d.get("name") == table for a in d.get("AORs", [])]
            if self.fmt:
                return self.print(render(res, self.fmt))
            lines = []
            for a in aors:
                lines.append(f"AOR: {a['AOR']}")
                for c in a.get("Contacts", []):
                    extra = "".join(f" {k}={c[k]}" for k in ("Q", "Callid",
                                                             "User-agent")
                                    if c.get(k) not in (None, ""))
                    lines.append(f"  {c['Contact']} expires={c['Expires']}"
                                 f"{extra}")
            self.print("\n".join(lines) if lines else "no registrations")
            return None
        if what == "add":
            if not 2 <= len(rest) <= 4:
                raise UsageError("ul add AOR CONTACT [EXPIRES [Q]]")
            expires = rest[2] if len(rest) > 2 else "0"
            if not expires.isdigit():
                raise UsageError(f"bad expires {expires!r}")
            q = rest[3] if len(rest) > 3 else "1"
            res = self.client.call("ul_add", {
                "table_name": table, "aor": rest[0], "contact": rest[1],
                "expires": int(expires), "q": q, "unused": 0, "flags": 0,
                "cflags": 0, "methods": 4294967295})
            return self.print(render(res, self.fmt or "lines"))
        if not 1 <= len(rest) <= 2:
            raise UsageError("ul rm AOR [CONTACT]")
        if len(rest) == 2:
            res = self.client.call("ul_rm_contact", {
                "table_name": table, "aor": rest[0], "contact": rest[1]})
        else:
            res = self.client.call("ul_rm", {"table_name": table,
                                             "aor": rest[0]})
        return self.print(render(res, self.fmt or "lines"))

    def run(self, command: str, args: List[str]) -> None:
        if command == "mi":
            return self.mi(args)
        if command == "fifo":
            return self.fifo(args)
        if command == "log-level":
            return self.log_level(args)
        if command in FRIENDLY:
            return getattr(self, command)(args)
        if command == "ul":
            return self.ul(args)
        if command == "db":
            from .db import run_db
            return run_db(self, args, UsageError, CtlError)
        if command == "user":
            from .user import run_user
            return run_user(self, args, UsageError, CtlError)
        raise UsageError(f"unknown command '{command}' (mi, fifo, "
                         f"{', '.join(FRIENDLY)}, ul, db, user, shell)")


def _table(rows) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in rows)


# -------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="opensipyctl",
        description="Management client of opensipy (MI over FIFO, "
                    "datagram or HTTP).",
        epilog="commands: mi CMD [ARGS|k=v ...], fifo CMD [ARGS], ps, "
               "stats [NAMES], version, uptime, log-level [LEVEL [PID]], "
               "ul show|add|rm ..., "
               "db create|drop|migrate|tables [URL ...], "
               "user add|passwd|rm|list ..., setup [--root DIR], shell")
    p.add_argument("-f", "--config", metavar="FILE",
                   help="configuration file (default ~/.opensipyctl.cfg, "
                        "then /etc/opensipy/opensipyctl.cfg)")
    p.add_argument("-o", "--output", metavar="FORMAT",
                   help=f"output format: {', '.join(FORMATS)}")
    p.add_argument("command", nargs="?", help="the command")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="its arguments")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        fmt = args.output
        if fmt is not None:
            fmt = OUTPUT_ALIASES.get(fmt, fmt)
        check_format(fmt or OUTPUT_ALIASES.get(cfg["output_type"],
                                               cfg["output_type"]))
        ctl = Ctl(cfg, fmt)
        command = args.command
        if command == "setup":          # local: no management interface
            from .setup import run_setup
            run_setup(args.args, UsageError, CtlError)
            return EXIT_OK
        if command is None:
            if not sys.stdin.isatty():
                build_parser().print_usage(sys.stderr)
                print("opensipyctl: no command given (and standard input is "
                      "not a terminal for the shell)", file=sys.stderr)
                return EXIT_USAGE
            command = "shell"
        if command == "shell":
            from .shell import Shell
            return Shell(ctl).run()
        ctl.run(command, args.args)
        return EXIT_OK
    except OutputError as e:
        print(f"opensipyctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MIReplyError as e:
        print(f"opensipyctl: command failed: {e}", file=sys.stderr)
        return e.exit_code
    except (NotRunning, CtlError) as e:
        print(f"opensipyctl: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
