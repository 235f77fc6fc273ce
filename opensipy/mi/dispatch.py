"""The MI command table and the JSON-RPC 2.0 dispatcher.

A request is one JSON-RPC 2.0 object::

    {"jsonrpc": "2.0", "method": "get_statistics",
     "params": {"statistics": ["core:"]}, "id": 1}

``params`` may be an object (named parameters) or an array (positional
parameters, mapped onto the chosen recipe's parameter order).  The recipe
is chosen the way OpenSIPS chooses it: by the number of parameters and,
for named ones, by their names.  Replies and errors carry OpenSIPS's codes:

======  =================  ===============================================
code    message            when
======  =================  ===============================================
-32700  Parse error        the text is not JSON
-32600  Invalid Request    not a JSON-RPC 2.0 request object
-32601  Method not found   no such command (or an ambiguous bare name)
-32602  Invalid params     no recipe matches, or a parameter is wrong
-32000  Server error       the handler failed (exception, returned None)
======  =================  ===============================================

A command may also answer with its own error code (OpenSIPS's
``init_mi_error(404, "Statistics Not Found")``) by raising
:class:`MIError`.  A request without ``id`` is a notification: it runs but
gets no reply, unless it could not be parsed at all.
"""
from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from .. import log
from ..sr_module import MI_NAMED_PARAMS_ONLY, MIExport, MIRecipe

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000

MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    SERVER_ERROR: "Server error",
}

# details OpenSIPS puts in the error's "data"
DET_POS_PARAMS = "Command only supports named parameters"
DET_AMBIGUOUS = "Ambiguous call, use named parameters instead"
DET_NO_PARAMS = "Too few or too many parameters"
DET_MATCH_PARAMS = "Named parameters do not match"
DET_NULL = "Command handler returned null"

OK = "OK"                       # OpenSIPS's init_mi_result_ok()
MAX_REQUEST = 1 << 20           # bytes; larger requests are refused


class MIError(Exception):
    """Raised by a handler (or the dispatcher) to answer with an error.

    ``MIError(404, "Statistics Not Found")`` mirrors ``init_mi_error``;
    ``MIError(INVALID_PARAMS, data="Bad PID")`` mirrors
    ``init_mi_error_extra`` with the standard message."""

    def __init__(self, code: int, message: Optional[str] = None,
                 data: Any = None):
        self.code = int(code)
        self.message = message if message is not None else \
            MESSAGES.get(self.code, "Error")
        self.data = data
        super().__init__(self.message)

    def to_json(self) -> dict:
        err = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def param_error(detail: Optional[str] = None) -> MIError:
    return MIError(INVALID_PARAMS, data=detail)


# --------------------------------------------------------- parameter getters

def get_str(params: Dict[str, Any], name: str) -> str:
    """A string parameter (a number is taken as its decimal text)."""
    v = params.get(name)
    if isinstance(v, bool) or v is None or isinstance(v, (list, dict)):
        raise param_error(f"parameter '{name}' must be a string")
    return v if isinstance(v, str) else str(v)


def get_int(params: Dict[str, Any], name: str) -> int:
    """An integer parameter; a string holding an integer is accepted (the
    command-line clients send every value as a string)."""
    v = params.get(name)
    if isinstance(v, bool):
        raise param_error(f"parameter '{name}' must be an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip(), 10)
        except ValueError:
            pass
    raise param_error(f"parameter '{name}' must be an integer")


def get_array(params: Dict[str, Any], name: str) -> List[Any]:
    """An array parameter; a lone string counts as a one-item array."""
    v = params.get(name)
    if isinstance(v, list):
        return v
    if isinstance(v, str):
        return [v]
    raise param_error(f"parameter '{name}' must be an array")


# ------------------------------------------------------------ command table

@dataclass
class Command:
    name: str
    module: str
    help: str
    flags: int = 0
    recipes: Sequence[MIRecipe] = ()
    init_f: Optional[Callable[[], int]] = None

    @property
    def full_name(self) -> str:
        return f"{self.module}:{self.name}"


class CommandTable:
    """Commands by name.  Each is reachable as ``module:cmd`` and, when no
    other module exports the same name, as ``cmd``."""

    def __init__(self):
        self.commands: List[Command] = []
        self._full: Dict[str, Command] = {}
        self._bare: Dict[str, List[Command]] = {}

    def register(self, module: str, exp: MIExport) -> Command:
        if not exp.recipes:
            raise ValueError(f"MI command {exp.name} has no recipe")
        cmd = Command(exp.name, module, exp.help or "", exp.flags,
                      list(exp.recipes), exp.init_f)
        if cmd.full_name in self._full:
            raise ValueError(f"MI command {cmd.full_name} is registered "
                             f"twice")
        self.commands.append(cmd)
        self._full[cmd.full_name] = cmd
        self._bare.setdefault(cmd.name, []).append(cmd)
        return cmd

    def register_module(self, module: str, exports: Sequence[MIExport]):
        for exp in exports:
            try:
                self.register(module, exp)
            except ValueError as e:
                log.LM_ERR(f"MI: {e}")

    def lookup(self, name: str) -> Command:
        """The command, or MIError(-32601)."""
        cmd = self._full.get(name)
        if cmd is not None:
            return cmd
        found = self._bare.get(name, ())
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(c.full_name for c in found)
            raise MIError(METHOD_NOT_FOUND,
                          data=f"'{name}' is ambiguous; use one of {names}")
        raise MIError(METHOD_NOT_FOUND)

    def find(self, name: str) -> Optional[Command]:
        try:
            return self.lookup(name)
        except MIError:
            return None

    def names(self) -> List[str]:
        """What ``which`` lists: the bare name of each command, or
        ``module:cmd`` where the bare name is ambiguous."""
        out = []
        for c in self.commands:
            if len(self._bare[c.name]) == 1:
                out.append(c.name)
            else:
                out.append(c.full_name)
        return out

    def init_child(self) -> None:
        """Run every command's ``init_f`` (OpenSIPS's init_mi_child), in a
        process that serves MI."""
        for c in self.commands:
            if c.init_f is None:
                continue
            try:
                rc = c.init_f()
            except Exception:
                log.LM_ERR(f"MI: init of command {c.full_name} failed:\n"
                           f"{traceback.format_exc()}")
                continue
            if rc is not None and rc < 0:
                log.LM_ERR(f"MI: init of command {c.full_name} failed "
                           f"({rc})")


def choose_recipe(cmd: Command, params: Any) -> tuple:
    """(recipe, {name: value}) for the given params (None, a list or a
    dict); raises MIError(-32602) with OpenSIPS's details."""
    if params is None or params == [] or params == {}:
        for r in cmd.recipes:
            if not r.params:
                return r, {}
        raise param_error(DET_NO_PARAMS)
    if isinstance(params, list):
        if cmd.flags & MI_NAMED_PARAMS_ONLY:
            raise param_error(DET_POS_PARAMS)
        matches = [r for r in cmd.recipes
                   if r.params and len(r.params) == len(params)]
        if not matches:
            raise param_error(DET_NO_PARAMS)
        if len(matches) > 1:
            raise param_error(DET_AMBIGUOUS)
        r = matches[0]
        return r, dict(zip(r.params, params))
    detail = DET_NO_PARAMS
    for r in cmd.recipes:
        if not r.params or len(r.params) != len(params):
            continue
        detail = DET_MATCH_PARAMS
        if all(p in params for p in r.params):
            return r, dict(params)
    raise param_error(detail)


class Request:
    """A parsed request: ``method``, ``params``, ``id`` and whether an id
    was present (no id: a notification)."""
    __slots__ = ("method", "params", "id", "has_id")

    def __init__(self, method, params, id_, has_id):
        self.method = method
        self.params = params
        self.id = id_
        self.has_id = has_id


def parse_request(text) -> Request:
    """Parse and validate; raises MIError(-32700 / -32600) with the id
    (when one could be read) stored on the exception as ``req_id``."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        if len(text) > MAX_REQUEST:
            raise MIError(PARSE_ERROR, data="request too large")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise MIError(PARSE_ERROR, data="request is not UTF-8") from None
    elif len(text) > MAX_REQUEST:
        raise MIError(PARSE_ERROR, data="request too large")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise MIError(PARSE_ERROR) from None
    if not isinstance(obj, dict):
        raise MIError(INVALID_REQUEST)
    has_id = "id" in obj
    rid = obj.get("id")
    bad = None
    if has_id and (isinstance(rid, bool) or not (
            rid is None or isinstance(rid, (str, int, float)))):
        bad, rid = "bad id", None
    elif obj.get("jsonrpc") != "2.0":
        bad = "jsonrpc must be \"2.0\""
    elif not isinstance(obj.get("method"), str):
        bad = "method must be a string"
    elif "params" in obj and not isinstance(obj["params"], (list, dict)):
        bad = "params must be an array or an object"
    if bad:
        e = MIError(INVALID_REQUEST)
        e.req_id = rid
        raise e
    return Request(obj["method"], obj.get("params"), rid, has_id)


class Dispatcher:
    """Runs requests against a CommandTable.  ``after_reply`` actions
    (registered by a handler with :meth:`after_reply`) are run by the
    transport once the reply is sent (``kill`` uses it)."""

    def __init__(self, table: CommandTable):
        self.table = table
        self._after: List[Callable[[], None]] = []

    def after_reply(self, fn: Callable[[], None]) -> None:
        self._after.append(fn)

    def run_after_reply(self) -> None:
        todo, self._after = self._after, []
        for fn in todo:
            try:
                fn()
            except Exception:
                log.LM_ERR(f"MI: post-reply action failed:\n"
                           f"{traceback.format_exc()}")

    def call(self, method: str, params: Any = None) -> Any:
        """Run one command; returns its result or raises MIError."""
        cmd = self.table.lookup(method)
        recipe, named = choose_recipe(cmd, params)
        try:
            result = recipe.handler(named)
        except MIError:
            raise
        except Exception as e:
            log.LM_ERR(f"MI command {cmd.full_name} failed:\n"
                       f"{traceback.format_exc()}")
            raise MIError(SERVER_ERROR, data=f"{type(e).__name__}: {e}") \
                from None
        if result is None:
            raise MIError(SERVER_ERROR, data=DET_NULL)
        return result

    def handle(self, text) -> Optional[dict]:
        """One request text in, the reply object out (None: no reply,
        the request was a notification)."""
        try:
            req = parse_request(text)
        except MIError as e:
            return {"jsonrpc": "2.0", "error": e.to_json(),
                    "id": getattr(e, "req_id", None)}
        try:
            result = self.call(req.method, req.params)
        except MIError as e:
            if not req.has_id:
                return None
            return {"jsonrpc": "2.0", "error": e.to_json(), "id": req.id}
        if not req.has_id:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": req.id}

    def handle_text(self, text) -> Optional[str]:
        """Like :meth:`handle`, the reply encoded as one line of JSON."""
        reply = self.handle(text)
        if reply is None:
            return None
        try:
            return json.dumps(reply, default=str, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            err = MIError(SERVER_ERROR, data=f"reply not encodable: {e}")
            return json.dumps({"jsonrpc": "2.0", "error": err.to_json(),
                               "id": reply.get("id")})
