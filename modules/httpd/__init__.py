"""httpd: an embedded HTTP server other modules hang their pages on.

The listening socket is bound by mod_init (a busy port stops the start);
the server runs in one dedicated module process ("HTTPD ip:port").  HTTP/1.1
is parsed by h11 (a small, strict, well-kept pure-Python protocol library
that does no I/O of its own) under our own non-blocking event loop
(``selectors``/epoll): one process, no thread per connection, so hundreds of
idle or slow clients cost a socket each and never hold up another client.

Limits, all enforced by the loop: the largest request head
(``max_header_size``), the largest body (``post_buf_size``, 413), the time a
client may take to send one whole request and the time a keep-alive
connection may stay silent (``conn_timeout``), the number of open
connections (``max_connections``: past it the connection idle the longest
is closed to make room).  Modules register a handler for the first path
segment (the "root path") with :func:`load_api`
``().register_httpdcb(...)`` from their mod_init.  See README.md.
"""
from __future__ import annotations

import selectors
import socket
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

from opensipy import log
from opensipy.sr_module import (DepExport, INT_PARAM, PROC_FLAG_INITCHILD,
                                STR_PARAM, MIExport, MIRecipe, ModuleExports,
                                ParamExport, ProcExport)

# ---- parameters
ip = "127.0.0.1"
port = 8888
post_buf_size = 1 << 20       # largest request body accepted, in bytes
conn_timeout = 10             # seconds: silence on a kept-alive connection,
                              # and the time one whole request may take
max_header_size = 16384       # largest request line + headers, in bytes
max_connections = 1024        # open client connections at most

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


class Headers:
    """The request's headers: ``get(name, default)`` (case-insensitive, the
    first one), ``get_all(name)``, ``items()``; values are str."""

    def __init__(self, pairs: List[Tuple[bytes, bytes]]):
        self._pairs = [(n.decode("latin-1").lower(), v.decode("latin-1"))
                       for n, v in pairs]

    def get(self, name: str, default=None):
        name = name.lower()
        for n, v in self._pairs:
            if n == name:
                return v
        return default

    def get_all(self, name: str) -> List[str]:
        name = name.lower()
        return [v for n, v in self._pairs if n == name]

    def items(self):
        return list(self._pairs)

    def __contains__(self, name):
        return self.get(name) is not None


class HttpdAPI:
    """What :func:`load_api` returns (OpenSIPS's httpd_api_t)."""
    HttpReply = HttpReply

    @staticmethod
    def register_httpdcb(module: str, root_path: str, handler,
                         init_proc=None) -> None:
        """Serve ``/root_path`` (and below) with ``handler``; ``init_proc``
        runs once in the HTTP server's process before it serves.

        ``handler(method, path, query, headers, body)`` gets the method and
        the path as str, the query string (undecoded), a :class:`Headers`
        and the body (bytes); it returns an :class:`HttpReply`."""
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
    for name in ("post_buf_size", "conn_timeout", "max_header_size",
                 "max_connections"):
        if globals()[name] <= 0:
            raise ValueError(f"httpd: {name} must be positive")
    host = ip or "0.0.0.0"
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, sa = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(sa)
        s.listen(128)
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

def _plain(status: int, text: str = "") -> HttpReply:
    phrase = HTTPStatus(status).phrase
    return HttpReply(status, "text/plain; charset=utf-8",
                     (text or phrase).encode() + b"\n")


def dispatch(method: str, target: str, headers: Headers,
             body: bytes) -> HttpReply:
    """Find the root path's handler and run it (errors become a 500)."""
    url = urlsplit(target)
    path = unquote(url.path)
    first = path.strip("/").split("/", 1)[0]
    root = _roots.get(first)
    if root is None:
        return _plain(404)
    try:
        reply = root.handler(method, path, url.query, headers, body)
    except Exception:
        log.LM_ERR(f"httpd: handler of /{first} failed:\n"
                   f"{traceback.format_exc()}")
        return _plain(500)
    if not isinstance(reply, HttpReply):
        log.LM_ERR(f"httpd: handler of /{first} returned {reply!r}")
        return _plain(500)
    return reply


class _Conn:
    """One client connection: its h11 state machine, what is left to
    write, and its deadlines."""
    __slots__ = ("sock", "peer", "h11", "out", "after", "close_after",
                 "last", "req_start", "req", "body", "body_len", "closed")

    def __init__(self, sock, peer, now):
        import h11
        self.sock = sock
        self.peer = peer
        self.h11 = h11.Connection(h11.SERVER,
                                  max_incomplete_event_size=max_header_size)
        self.out = bytearray()
        self.after: List[Callable[[], None]] = []
        self.close_after = False
        self.last = now            # last byte received or sent
        self.req_start = None      # first byte of the request under way
        self.req = None            # the h11.Request being received
        self.body: List[bytes] = []
        self.body_len = 0
        self.closed = False

    def idle(self) -> bool:
        return self.req_start is None and not self.out


class Server:
    """The event loop of the HTTPD process (also usable in tests)."""

    def __init__(self, sock: socket.socket):
        self.lsock = sock
        sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ, None)
        self.conns: Dict[int, _Conn] = {}

    # ---- connections
    def _accept(self) -> None:
        for _ in range(64):
            try:
                s, peer = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:        # EMFILE and friends: try later
                log.LM_ERR(f"httpd: accept failed: {e}")
                return
            s.setblocking(False)
            now = time.monotonic()
            if len(self.conns) >= max_connections and not self._evict():
                try:
                    s.send(b"HTTP/1.1 503 Service Unavailable\r\n"
                           b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass
                s.close()
                continue
            c = _Conn(s, peer, now)
            self.conns[s.fileno()] = c
            self.sel.register(s, selectors.EVENT_READ, c)

    def _evict(self) -> bool:
        """Close the connection idle the longest to make room."""
        idle = [c for c in self.conns.values() if c.idle()]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last)
        log.LM_DBG(f"httpd: {victim.peer[0]}: closing an idle connection "
                   f"(max_connections {max_connections} reached)")
        self._close(victim)
        return True

    def _close(self, c: _Conn) -> None:
        if c.closed:
            return
        c.closed = True
        self.conns.pop(c.sock.fileno(), None)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        try:
            c.sock.close()
        except OSError:
            pass
        for fn in c.after:          # the reply could not be delivered
            self._run_after(fn)
        c.after = []

    @staticmethod
    def _run_after(fn) -> None:
        try:
            fn()
        except Exception:
            log.LM_ERR(f"httpd: after-reply action failed:\n"
                       f"{traceback.format_exc()}")

    # ---- reading
    def _readable(self, c: _Conn, now: float) -> None:
        import h11
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        c.last = now
        if c.req_start is None and data:
            c.req_start = now
        try:
            c.h11.receive_data(data)
        except RuntimeError:        # data after we decided to close
            self._close(c)
            return
        self._events(c, now)

    def _events(self, c: _Conn, now: float) -> None:
        import h11
        while not c.closed:
            try:
                ev = c.h11.next_event()
            except h11.RemoteProtocolError as e:
                self._reply_error(c, e.error_status_hint, str(e))
                return
            if ev is h11.NEED_DATA:
                if c.h11.their_state is h11.CLOSED or (
                        c.h11.their_state is h11.DONE and
                        c.h11.our_state is h11.MUST_CLOSE):
                    self._close_when_flushed(c)
                return
            if ev is h11.PAUSED:
                return
            if isinstance(ev, h11.Request):
                c.req = ev
                c.body = []
                c.body_len = 0
                if c.req_start is None:
                    c.req_start = now
                cl = _content_length(ev.headers)
                if cl is not None and cl > post_buf_size:
                    self._reply_error(c, 413, "request body too large")
                    return
                if c.h11.they_are_waiting_for_100_continue:
                    # curl asks before sending a body over 1 KB
                    c.out += c.h11.send(h11.InformationalResponse(
                        status_code=100, headers=[]))
                    self._flush(c)
                    if c.closed:
                        return
            elif isinstance(ev, h11.Data):
                c.body_len += len(ev.data)
                if c.body_len > post_buf_size:
                    self._reply_error(c, 413, "request body too large")
                    return
                c.body.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                self._serve(c)
            elif isinstance(ev, h11.ConnectionClosed):
                self._close_when_flushed(c)
                return

    def _close_when_flushed(self, c: _Conn) -> None:
        if c.out:
            c.close_after = True
        else:
            self._close(c)

    # ---- answering
    def _serve(self, c: _Conn) -> None:
        import h11
        req = c.req
        method = req.method.decode("ascii", "replace")
        target = req.target.decode("latin-1")
        log.refresh()          # a log_level change applies from this request
        reply = dispatch(method, target, Headers(req.headers),
                         b"".join(c.body))
        log.LM_DBG(f"httpd: {c.peer[0]} \"{method} {target}\" "
                   f"{reply.status}")
        c.req = None
        c.body = []
        self._send_reply(c, reply, head=(method == "HEAD"))
        if reply.after is not None:
            c.after.append(reply.after)
        c.req_start = None
        if c.h11.our_state is h11.DONE and c.h11.their_state is h11.DONE:
            c.h11.start_next_cycle()
        elif c.h11.our_state is h11.MUST_CLOSE or \
                c.h11.our_state is h11.CLOSED:
            c.close_after = True
        self._flush(c)

    def _send_reply(self, c: _Conn, reply: HttpReply, head=False,
                    close=False) -> None:
        import h11
        headers = [("Content-Type", reply.content_type),
                   ("Content-Length", str(len(reply.body))),
                   ("Server", "opensipy-httpd")]
        if close:
            headers.append(("Connection", "close"))
        try:
            c.out += c.h11.send(h11.Response(status_code=reply.status,
                                             headers=headers))
            if reply.body and not head:
                c.out += c.h11.send(h11.Data(data=reply.body))
            c.out += c.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as e:
            log.LM_DBG(f"httpd: {c.peer[0]}: cannot answer: {e}")
            c.close_after = True

    def _reply_error(self, c: _Conn, status: int, why: str) -> None:
        """Answer a bad or over-limit request and close the connection."""
        import h11
        log.LM_DBG(f"httpd: {c.peer[0]}: {status} ({why})")
        if c.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send_reply(c, _plain(status), close=True)
        c.close_after = True
        c.req_start = None
        self._flush(c)

    def _flush(self, c: _Conn) -> None:
        while c.out:
            try:
                n = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(c)
                return
            del c.out[:n]
            c.last = time.monotonic()
        if c.closed:
            return
        if not c.out:
            after, c.after = c.after, []
            for fn in after:
                self._run_after(fn)
            if c.close_after:
                self._close(c)
                return
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
        else:
            self.sel.modify(c.sock, selectors.EVENT_WRITE, c)

    # ---- the loop
    def _expire(self, now: float) -> None:
        for c in list(self.conns.values()):
            if c.req_start is not None:
                if now - c.req_start > conn_timeout:
                    log.LM_DBG(f"httpd: {c.peer[0]}: request not complete "
                               f"within {conn_timeout}s")
                    self._reply_error(c, 408, "request timeout")
                    if not c.closed and now - c.last > conn_timeout:
                        self._close(c)
            elif now - c.last > conn_timeout:
                self._close(c)

    def poll(self, timeout: float = 0.5) -> None:
        for key, mask in self.sel.select(timeout):
            now = time.monotonic()
            c = key.data
            if c is None:
                self._accept()
            elif c.closed:
                continue
            else:
                try:
                    if mask & selectors.EVENT_WRITE:
                        self._flush(c)
                    else:
                        self._readable(c, now)
                except Exception:
                    # one bad connection must never stop the server
                    log.LM_ERR(f"httpd: {c.peer[0]}: connection failed:\n"
                               f"{traceback.format_exc()}")
                    self._close(c)
        self._expire(time.monotonic())

    def serve_forever(self) -> None:
        while True:
            log.refresh()
            self.poll(0.5)

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._close(c)
        self.sel.close()


def _content_length(headers) -> Optional[int]:
    for n, v in headers:
        if n == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def httpd_process(rank: int) -> None:
    for root in _roots.values():
        if root.init_proc is not None:
            root.init_proc()
    Server(_sock).serve_forever()


def mi_list_root_path(params):
    return [{"http_root": r.root, "module": r.module}
            for r in _roots.values()]


exports = ModuleExports(
    name="httpd",
    deps=DepExport(python=[("h11", "httpd")]),
    params=[
        ParamExport("ip", STR_PARAM, "ip"),
        ParamExport("port", INT_PARAM, "port"),
        ParamExport("post_buf_size", INT_PARAM, "post_buf_size"),
        ParamExport("conn_timeout", INT_PARAM, "conn_timeout"),
        ParamExport("max_header_size", INT_PARAM, "max_header_size"),
        ParamExport("max_connections", INT_PARAM, "max_connections"),
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
