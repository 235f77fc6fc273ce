"""Allow/deny files (OpenSIPS's ``permissions.allow`` / ``permissions.deny``,
in the style of tcpd's hosts.allow).

One rule per line::

    <left list> : <right list>     # comment

A list is ``ALL``, or comma-separated quoted regular expressions, either
optionally followed by ``EXCEPT`` and another comma-separated list of quoted
expressions.  Expressions are POSIX extended, matched case-insensitively
anywhere in the text unless anchored.  A pair (left, right) matches a rule
when the left text matches its left list and the right text its right list.
A file that does not exist is an empty file.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence, Tuple

_FLAGS = re.IGNORECASE


class RuleError(ValueError):
    pass


class ExprList:
    __slots__ = ("all", "exprs", "excepts")

    def __init__(self, all_, exprs, excepts):
        self.all = all_
        self.exprs = exprs
        self.excepts = excepts

    def match(self, text: str) -> bool:
        hit = self.all or any(r.search(text) for r in self.exprs)
        return hit and not any(r.search(text) for r in self.excepts)


def _tokens(line: str, where: str) -> List[str]:
    out = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t":
            i += 1
        elif c == "#":
            break
        elif c in ",:":
            out.append(c)
            i += 1
        elif c == '"':
            j = i + 1
            buf = []
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n and line[j + 1] == '"':
                    buf.append('"')
                    j += 2
                    continue
                buf.append(line[j])
                j += 1
            if j >= n:
                raise RuleError(f"{where}: unterminated quoted expression")
            out.append('"' + "".join(buf))
            i = j + 1
        else:
            m = re.match(r"[A-Za-z]+", line[i:])
            if not m:
                raise RuleError(f"{where}: unexpected {c!r}")
            out.append(m.group(0).upper())
            i += m.end()
    return out


def _list(toks: List[str], where: str) -> ExprList:
    def exprs(ts):
        out = []
        expect = True
        for t in ts:
            if expect:
                if not t.startswith('"'):
                    raise RuleError(f"{where}: a quoted expression expected, "
                                    f"got {t!r}")
                try:
                    out.append(re.compile(t[1:], _FLAGS))
                except re.error as e:
                    raise RuleError(f"{where}: bad expression {t[1:]!r}: "
                                    f"{e}") from None
            elif t != ",":
                raise RuleError(f"{where}: ',' expected, got {t!r}")
            expect = not expect
        if not out or expect:
            raise RuleError(f"{where}: an expression list is incomplete")
        return out

    if "EXCEPT" in toks:
        k = toks.index("EXCEPT")
        head, tail = toks[:k], toks[k + 1:]
        excepts = exprs(tail)
    else:
        head, excepts = toks, []
    if head == ["ALL"]:
        return ExprList(True, [], excepts)
    return ExprList(False, exprs(head), excepts)


def parse_rules(text: str, name: str = "rules") -> List[Tuple[ExprList,
                                                               ExprList]]:
    rules = []
    for no, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{no}"
        toks = _tokens(line, where)
        if not toks:
            continue
        if toks.count(":") != 1:
            raise RuleError(f"{where}: one ':' expected between the lists")
        k = toks.index(":")
        rules.append((_list(toks[:k], where), _list(toks[k + 1:], where)))
    return rules


class RuleFile:
    """A parsed file (empty when it does not exist)."""

    def __init__(self, path: str):
        self.path = path
        self.exists = os.path.isfile(path)
        self.rules = []
        if self.exists:
            with open(path, encoding="utf-8", errors="replace") as f:
                self.rules = parse_rules(f.read(), path)

    def match(self, left: str, right: str) -> bool:
        return any(lr.match(left) and rr.match(right)
                   for lr, rr in self.rules)


def check_pairs(allow: RuleFile, deny: RuleFile,
                pairs: Sequence[Tuple[str, str]]) -> int:
    """OpenSIPS's algorithm: allowed when every pair is in the allow file;
    else denied when a pair is in the deny file; else allowed.  1 / -1."""
    for left, right in pairs:
        if allow.match(left, right):
            continue
        if deny.match(left, right):
            return -1
    return 1


def resolve(path: str, base_dir: Optional[str]) -> str:
    if os.path.isabs(path) or not base_dir:
        return path
    return os.path.join(base_dir, path)
