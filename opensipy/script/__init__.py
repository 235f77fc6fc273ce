"""The routing script: lexer, parser, checker and compiler.

* :func:`parse_file` / :func:`parse_string` -> :class:`~.ast.Script`
* :func:`check` (resolution only, for ``opensipy -c``) -> list of errors
* :func:`compile_script` (after mod_init: fixups + code generation) ->
  :class:`~.compiler.CompiledScript`
"""
from .errors import ScriptError, ScriptErrors
from .parser import parse_file, parse_string
from . import ast

__all__ = ["ScriptError", "ScriptErrors", "parse_file", "parse_string", "ast"]
