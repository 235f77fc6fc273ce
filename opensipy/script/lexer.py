"""The script's lexer: source text to tokens, with 1-based line and column.

Token kinds: ``ID`` (identifier or keyword), ``INT`` (value is the int),
``STR`` (value is the decoded contents), ``PVAR`` (value is the variable
token exactly as written, ``$hdr(Via)[1]``, ``$(ru{uri.user})``), ``OP``
(value is the operator or punctuation text) and ``EOF``.

Strings decode escapes the way OpenSIPS's lexer does: ``\\n \\r \\t \\a
\\\\ \\" \\'``, ``\\xHH``, octal ``\\NNN``, an escaped newline is dropped, and
any other backslash is kept with its character (so regular expressions such
as ``"^\\+1"`` reach the regex compiler unchanged).  Comments are ``#`` and
``//`` to the end of the line and ``/* ... */``.

Errors do not stop the lexer: they are appended to ``errors`` and the
offending text is skipped.
"""
from __future__ import annotations

import re
from typing import List, Optional

from .errors import ScriptError

_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUM_RE = re.compile(r"[0-9][A-Za-z0-9_]*")
_PVNAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_INT_FORMS = (re.compile(r"0[xX][0-9a-fA-F]+\Z"), re.compile(r"0[0-7]*\Z"),
              re.compile(r"[1-9][0-9]*\Z"))

OPERATORS = ("==", "!=", "<=", ">=", "=~", "!~", "&&", "||", "+=", "-=",
             "*=", "/=", "%=", "&=", "|=", "^=", "<<", ">>",
             ":=", "=", "<", ">", "!", "+", "-", "*", "/", "%", "|", "&",
             "^", "~", "(", ")", "{", "}", "[", "]", ",", ";", ":")
_OP2 = {op for op in OPERATORS if len(op) == 2}
_OP1 = {op for op in OPERATORS if len(op) == 1}

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "\\": "\\",
            '"': '"', "'": "'"}
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def parse_number(text: str) -> Optional[int]:
    """An unsigned script integer (decimal, 0x hex, leading-0 octal), or
    None when text is not one."""
    if _INT_FORMS[0].match(text):
        return int(text, 16)
    if _INT_FORMS[1].match(text):
        return int(text, 8)
    if _INT_FORMS[2].match(text):
        return int(text, 10)
    return None


class Token:
    __slots__ = ("kind", "value", "loc", "start", "end", "mark")

    def __init__(self, kind, value, loc, start, end):
        self.mark = 0          # the parser's error count before lexing it
        self.kind = kind
        self.value = value
        self.loc = loc
        self.start = start
        self.end = end

    def is_op(self, op: str) -> bool:
        return self.kind == "OP" and self.value == op

    def is_id(self, word: str) -> bool:
        return self.kind == "ID" and self.value == word

    def describe(self) -> str:
        if self.kind == "EOF":
            return "end of file"
        if self.kind == "STR":
            return f'string "{self.value}"'
        return f"'{self.value}'"

    def __repr__(self):
        return f"Token({self.kind}, {self.value!r}, {self.loc})"


class Lexer:
    def __init__(self, text: str, file: str,
                 errors: Optional[List[ScriptError]] = None):
        self.text = text
        self.file = file
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.errors = errors if errors is not None else []

    # --- positions -----------------------------------------------------------
    def loc_at(self, pos: int):
        """(file, line, col) of pos, which must not be before line_start."""
        return (self.file, self.line, pos - self.line_start + 1)

    def _advance_to(self, end: int) -> None:
        """Move pos to end, counting the newlines on the way."""
        text = self.text
        nl = text.count("\n", self.pos, end)
        if nl:
            self.line += nl
            self.line_start = text.rindex("\n", self.pos, end) + 1
        self.pos = end

    def error(self, loc, message: str) -> None:
        self.errors.append(ScriptError.at(loc, message))

    # --- whitespace and comments -----------------------------------------
    def _skip_blank(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c == "\n":
                self.pos += 1
                self.line += 1
                self.line_start = self.pos
            elif c in " \t\r\f\v":
                self.pos += 1
            elif c == "#" or text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    self.error(self.loc_at(self.pos), "unclosed comment /*")
                    self._advance_to(n)
                else:
                    self._advance_to(end + 2)
            else:
                return

    # --- tokens ----------------------------------------------------------
    def next(self) -> Token:
        self._skip_blank()
        text, start = self.text, self.pos
        loc = self.loc_at(start)
        if start >= len(text):
            return Token("EOF", None, loc, start, start)
        c = text[start]
        if c == "_" or c.isalpha():
            m = _ID_RE.match(text, start)
            self.pos = m.end()
            return Token("ID", m.group(), loc, start, self.pos)
        if c.isdigit():
            m = _NUM_RE.match(text, start)
            self.pos = m.end()
            value = parse_number(m.group())
            if value is None:
                self.error(loc, f"bad number '{m.group()}'")
                value = 0
            return Token("INT", value, loc, start, self.pos)
        if c == '"' or c == "'":
            value = self._string(c, loc)
            return Token("STR", value, loc, start, self.pos)
        if c == "$":
            value = self._pvar(loc)
            return Token("PVAR", value, loc, start, self.pos)
        two = text[start:start + 2]
        if two in _OP2:
            self.pos += 2
            return Token("OP", two, loc, start, self.pos)
        if c in _OP1:
            self.pos += 1
            return Token("OP", c, loc, start, self.pos)
        self.error(loc, f"unexpected character {c!r}")
        self.pos += 1
        return self.next()

    def _string(self, quote: str, loc) -> str:
        text, n = self.text, len(self.text)
        i = self.pos + 1
        out = []
        while True:
            if i >= n:
                self.error(loc, "unterminated string")
                self._advance_to(n)
                return "".join(out)
            c = text[i]
            if c == quote:
                self._advance_to(i + 1)
                return "".join(out)
            if c != "\\" or i + 1 >= n:
                out.append(c)
                i += 1
                continue
            e = text[i + 1]
            if quote == "'" and e != "'":
                out.append(c)             # single quotes: only \' escapes
                i += 1
            elif e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
            elif e == "\n":
                i += 2                    # an escaped newline is dropped
            elif e == "x" and re.match(r"[0-9a-fA-F]", text[i + 2:i + 3]):
                m = re.match(r"[0-9a-fA-F]{1,2}", text[i + 2:i + 4])
                out.append(chr(int(m.group(), 16)))
                i += 2 + len(m.group())
            elif e in "01234567":
                m = re.match(r"[0-7]{1,3}", text[i + 1:i + 4])
                out.append(chr(int(m.group(), 8)))
                i += 1 + len(m.group())
            else:
                out.append(c)             # unknown escape: keep both chars
                i += 1

    def _balanced(self, i: int, loc) -> int:
        """From the opening bracket at i, the index just past its match."""
        text, n = self.text, len(self.text)
        stack = []
        while i < n:
            c = text[i]
            if c in _CLOSE:
                stack.append(_CLOSE[c])
            elif c in ")]}":
                if not stack or stack[-1] != c:
                    self.error(loc, f"unbalanced '{c}' in variable")
                    return i + 1
                stack.pop()
                if not stack:
                    return i + 1
            elif c == "\n":
                break
            i += 1
        self.error(loc, "unclosed variable (missing "
                   f"'{stack[-1] if stack else ')'}')")
        return i

    def _pvar(self, loc) -> str:
        text = self.text
        start = self.pos
        i = start + 1
        if text.startswith("(", i):
            end = self._balanced(i, loc)
        else:
            m = _PVNAME_RE.match(text, i)
            if not m:
                self.error(loc, "bad variable name after '$'")
                self.pos = i
                return "$"
            end = m.end()
            if text.startswith("(", end):
                end = self._balanced(end, loc)
            if text.startswith("[", end):
                end = self._balanced(end, loc)
        self._advance_to(end)
        return text[start:end]

    # --- a global parameter's value ---------------------------------------
    def raw_value(self):
        """The value of ``name = value``: a STR token when it is quoted,
        else ``(text, loc)`` of the rest of the line (comment and a
        trailing ';' removed)."""
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in " \t\r":
            self.pos += 1
        if self.pos < n and text[self.pos] in "\"'":
            return self.next()
        start = self.pos
        loc = self.loc_at(start)
        end = start
        while end < n and text[end] not in "\n#":
            if text.startswith("/*", end) or text.startswith("//", end):
                break
            end += 1
        self.pos = end
        raw = text[start:end].strip()
        if raw.endswith(";"):
            raw = raw[:-1].rstrip()
        return raw, loc
