"""Script errors: every one carries the place it was found at.

The parser and the checker collect errors instead of stopping at the first
one; :class:`ScriptErrors` carries the whole list and prints one
``FILE:LINE:COL: message`` line per error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List


@dataclass(frozen=True)
class ScriptError:
    file: str
    line: int
    col: int
    message: str

    @classmethod
    def at(cls, loc, message: str) -> "ScriptError":
        file, line, col = loc
        return cls(file, line, col, message)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ScriptErrors(Exception):
    """One or more errors in a script (``errors`` in the order found)."""

    def __init__(self, errors: List[ScriptError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
