"""httpd: an embedded HTTP server other modules hang their pages on.

The listening socket is bound by mod_init (a busy port stops the start);
the server runs in one dedicated module process ("HTTPD ip:port"), built on
the standard library's ``http.server`` (``ThreadingHTTPServer``): a real,
well-tested HTTP/1.1 parser with no extra dependency, and each connection
gets its own thread with a read timeout, so a slow client cannot hold the
others up.  Modules register a handler for the first path segment (the
"root path") with :func:`load_api` ``().register_httpdcb(...)`` from their
mod_init.  See README.md.
"""
from __future__ import annotations

import socket
import threading
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Optional
from urllib.parse import urlsplit

from opensipy import log
from opensipy.sr_module import (INT_PARAM, PROC_FLAG_INITCHILD, STR_PARAM,
                                MIExport, MIRecipe, ModuleExports,
                                ParamExport, ProcExport)

# ---- parameters
ip = "127.0.0.1"
port = 8888
post_buf_size = 1 << 20       # largest request body accepted, in bytes
conn_timeout = 10             # seconds a connection may stay silent

_sock: Optional[socket.socket] = None


@dataclass
class HttpReply:
    status: int
    content_type: str = "application/json"
    body: bytes = b""
    after: Optional[Callable[[], None]] = None   # run once the reply is sent


@dataclass
class Root:
    module: str
    root: str
    handler: Callable[..., HttpReply]   # handler(method, path, query, headers, body)
    init_proc: Optional[Callable[[], None]] = None


_roots: Dict[str, Root] = {}


class HttpdAPI:
    """What :func:`load_api` returns (OpenSIPS's httpd_api_t)."""
    HttpReply = HttpReply

    @staticmethod
    def register_httpdcb(module: str, root_path: str, handler,
                         init_proc=None) -> None:
        """Serve ``/root_path`` (and below) with ``handler``; ``init_proc``
        runs once in the HTTP server's process before it serves."""
        root = root_path.strip("/")
        if not root or "/" in root:
            raise ValueError(f"httpd: bad root path '{root_path}' for "
                             f"module {module}")
        if root in _roots:
            raise ValueError(f"httpd: root path '/{root}' of module "
                             f"{module} is already taken by module "
                             f"{_roots[root].module}")
        _roots[root] = Root(module, root, handler, init_proc)


def load_api() -> HttpdAPI:
    return HttpdAPI()


def mod_init() -> int:
    global _sock
    if not 0 <= port < 65536:
        raise ValueError(f"httpd: bad port {port}")
    host = ip or "0.0.0.0"
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, sa = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(sa)
        s.listen(64)
    except OSError as e:
        s.close()
        raise ValueError(f"httpd: cannot listen on {host}:{port}: "
                         f"{e.strerror}") from None
    _sock = s
    return 0


def mod_destroy() -> None:
    global _sock
    if _sock is not None:
        _sock.close()
        _sock = None


def bound_address():
    return _sock.getsockname() if _sock is not None else None


# ------------------------------------------------------------- the server

class _Handler(BaseHTTPRequestHandler):
    server_version = "opensipy-httpd"
    protocol_version = "HTTP/1.1"

    def setup(self):
        log.refresh()          # a log_level change applies from this request
        self.timeout = conn_timeout
        super().setup()

    def log_message(self, fmt, *args):
        log.LM_DBG("httpd: %s %s" % (self.address_string(), fmt % args))

    def _send(self, reply: HttpReply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)
        self.wfile.flush()

    def _plain(self, status: HTTPStatus, text: str = "") -> HttpReply:
        return HttpReply(int(status), "text/plain; charset=utf-8",
                         (text or status.phrase).encode() + b"\n")

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        first = url.path.strip("/").split("/", 1)[0]
        root = _roots.get(first)
        if root is None:
            self._send(self._plain(HTTPStatus.NOT_FOUND))
            return
        body = b""
        length = self.headers.get("Content-Length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n < 0:
                self.close_connection = True
                self._send(self._plain(HTTPStatus.BAD_REQUEST,
                                       "bad Content-Length"))
                return
            if n > post_buf_size:
                self.close_connection = True
                self._send(self._plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE))
                return
            body = self.rfile.read(n)
        elif self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(self._plain(HTTPStatus.LENGTH_REQUIRED))
            return
        try:
            with self.server.serialize:
                reply = root.handler(self.command, url.path, url.query,
                                     self.headers, body)
        except Exception:
            log.LM_ERR(f"httpd: handler of /{first} failed:\n"
                       f"{traceback.format_exc()}")
            reply = self._plain(HTTPStatus.INTERNAL_SERVER_ERROR)
        try:
            self._send(reply)
        finally:
            if reply.after is not None:
                with self.server.serialize:
                    reply.after()

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, sock):
        super().__init__(sock.getsockname()[:2], _Handler,
                         bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.serialize = threading.Lock()

    def service_actions(self):
        log.refresh()

    def handle_error(self, request, client_address):
        log.LM_DBG(f"httpd: connection from {client_address[0]} failed:\n"
                   f"{traceback.format_exc()}")


def httpd_process(rank: int) -> None:
    for root in _roots.values():
        if root.init_proc is not None:
            root.init_proc()
    server = _Server(_sock)
    server.serve_forever(poll_interval=0.5)


def mi_list_root_path(params):
    return [{"http_root": r.root, "module": r.module}
            for r in _roots.values()]


exports = ModuleExports(
    name="httpd",
    params=[
        ParamExport("ip", STR_PARAM, "ip"),
        ParamExport("port", INT_PARAM, "port"),
        ParamExport("post_buf_size", INT_PARAM, "post_buf_size"),
        ParamExport("conn_timeout", INT_PARAM, "conn_timeout"),
    ],
    mi_cmds=[
        MIExport("httpd_list_root_path", "lists the root paths served and "
                 "the module serving each", 0, None,
                 [MIRecipe(mi_list_root_path)]),
    ],
    procs=[ProcExport("HTTPD", None, None, httpd_process, 1,
                      PROC_FLAG_INITCHILD)],
    init_f=mod_init,
    destroy_f=mod_destroy,
)
