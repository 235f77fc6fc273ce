"""The routing script: lexer, parser, checker and compiler.

* :func:`parse_file` / :func:`parse_string` -> :class:`~.ast.Script`
* :func:`check` (resolution only, for ``opensipy -c``) -> list of errors
* :func:`compile_script` (after mod_init: fixups + code generation) ->
  :class:`~.compiler.CompiledScript`; its callables return action flags
  (:data:`ACT_FL_EXIT`, :data:`ACT_FL_DROP`)
"""
from .errors import ScriptError, ScriptErrors
from .parser import parse_file, parse_string
from .checker import check
from .compiler import (ACT_FL_DROP, ACT_FL_EXIT, CompiledScript,
                       compile_script)
from .runtime import find_route, route_exists
from . import ast

__all__ = ["ScriptError", "ScriptErrors", "parse_file", "parse_string",
           "check", "compile_script", "CompiledScript", "ACT_FL_EXIT",
           "ACT_FL_DROP", "find_route", "route_exists",
           "ast"]
