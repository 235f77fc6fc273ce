"""``opensipyctl shell``: an interactive prompt with history and
tab-completion of the MI command names (fetched from the server with
``which`` when the shell starts).

Type an MI command directly (``get_statistics core:``), or ``mi CMD ...``,
or one of the friendly commands (``ps``, ``stats``, ``version``,
``uptime``, ``log-level``); ``help``, ``exit``/``quit``/Ctrl-D.  History is
kept in ``~/.opensipyctl_history`` (``$OPENSIPYCTL_HISTORY`` overrides).
"""
from __future__ import annotations

import cmd
import os
import shlex
import sys

from .client import CtlError, MIReplyError
from .main import FRIENDLY, UsageError
from .output import OutputError

HISTORY_LEN = 1000


class Shell(cmd.Cmd):
    prompt = "(opensipyctl): "
    intro = ("opensipyctl shell: MI commands, 'mi CMD', ps, stats, version, "
             "uptime, log-level; 'help'; Ctrl-D or 'exit' leaves")

    def __init__(self, ctl):
        super().__init__()
        self.ctl = ctl
        self.mi_names = []
        try:
            self.mi_names = [n for n in ctl.client.call("which")
                             if isinstance(n, str)]
        except CtlError as e:
            print(f"opensipyctl: {e}; MI names will not complete",
                  file=sys.stderr)
        self.history = os.environ.get("OPENSIPYCTL_HISTORY") or \
            os.path.expanduser("~/.opensipyctl_history")

    # ---- history
    def preloop(self):
        try:
            import readline
            readline.set_completer_delims(" \t\n")
            readline.set_history_length(HISTORY_LEN)
            if os.path.exists(self.history):
                readline.read_history_file(self.history)
        except (ImportError, OSError):
            pass

    def postloop(self):
        try:
            import readline
            readline.write_history_file(self.history)
        except (ImportError, OSError):
            pass

    def run(self) -> int:
        try:
            self.cmdloop()
        except KeyboardInterrupt:
            print()
        return 0

    # ---- commands
    def emptyline(self):
        return False

    def onecmd(self, line):
        line = line.strip()
        if not line:
            return False
        if line in ("exit", "quit", "EOF"):
            if line == "EOF":
                print()
            return True
        if line == "help" or line.startswith("help "):
            return self.do_help(line[4:].strip())
        try:
            words = shlex.split(line)
        except ValueError as e:
            print(f"opensipyctl: {e}")
            return False
        word, args = words[0], words[1:]
        try:
            if word in ("mi", "fifo") or word in FRIENDLY:
                self.ctl.run(word, args)
            else:
                self.ctl.mi(words)
        except MIReplyError as e:
            print(f"opensipyctl: command failed: {e}")
        except (UsageError, OutputError, CtlError) as e:
            print(f"opensipyctl: {e}")
        return False

    def do_help(self, arg):
        if arg:
            try:
                self.ctl.mi(["help", arg])
            except CtlError as e:
                print(f"opensipyctl: {e}")
            return False
        print("friendly commands: " + ", ".join(FRIENDLY))
        print("MI commands: " + ", ".join(self.mi_names))
        print("'help CMD' asks the server about an MI command")
        return False

    # ---- completion
    def _words(self):
        return sorted(set(self.mi_names) | set(FRIENDLY)
                      | {"mi", "fifo", "help", "exit", "quit"})

    def completenames(self, text, *ignored):
        return [w for w in self._words() if w.startswith(text)]

    def completedefault(self, text, line, begidx, endidx):
        words = line[:begidx].split()
        if words and words[0] in ("mi", "fifo", "help") and len(words) == 1:
            return [n for n in self.mi_names if n.startswith(text)]
        return []

    def complete(self, text, state):
        # cmd.Cmd only completes names of do_ methods on the first word;
        # route everything through our own lists instead.
        if state == 0:
            import readline
            line = readline.get_line_buffer()
            begidx = readline.get_begidx()
            if not line[:begidx].strip():
                self.completion_matches = self.completenames(text)
            else:
                self.completion_matches = self.completedefault(
                    text, line, begidx, readline.get_endidx())
        try:
            return self.completion_matches[state]
        except IndexError:
            return None
