"""The httpd event loop in-process over socket pairs: whatever bytes a
client sends, the loop answers or closes, and keeps serving."""
from __future__ import annotations

import socket
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from opensipy_modules import httpd

REQ = b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n"


def _server():
    httpd._roots.clear()
    httpd.HttpdAPI.register_httpdcb(
        "test", "t", lambda m, p, q, h, b: httpd.HttpReply(
            200, "text/plain", b"ok " + m.encode()))
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    return httpd.Server(ls), ls.getsockname()


def _pump(srv, until, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        srv.poll(0.01)
        if until():
            return True
    return False


def _read_all(c, srv, timeout=2.0):
    c.setblocking(False)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        srv.poll(0.01)
        try:
            d = c.recv(65536)
        except BlockingIOError:
            continue
        if not d:
            break
        out += d
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.sampled_from([REQ, b"POST /t HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                     b"GET /t HTTP/1.0\r\n\r\n", b"\r\n", b"HTTP/1.1 200",
                     b"Transfer-Encoding: chunked\r\n", b"ffffffff\r\n",
                     b"GET /" + b"a" * 3000, b"\x00\xff"])), max_size=6))
def test_any_bytes_get_an_answer_or_a_close_and_the_loop_survives(chunks):
    srv, addr = _server()
    try:
        c = socket.create_connection(addr)
        with c:
            _pump(srv, lambda: srv.conns)
            for ch in chunks:
                try:
                    c.sendall(ch)
                except OSError:
                    break
                srv.poll(0.01)
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            data = _read_all(c, srv)
        if data:
            assert data.startswith(b"HTTP/1.1 ")
        # a fresh, well-formed request still works
        with socket.create_connection(addr) as c2:
            c2.sendall(REQ[:-2] + b"Connection: close\r\n\r\n")
            got = _read_all(c2, srv)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"ok GET")
    finally:
        srv.close()
        srv.lsock.close()
        httpd._roots.clear()


def test_a_failing_handler_is_a_500_and_the_loop_goes_on():
    srv, addr = _server()
    try:
        httpd._roots.clear()

        def boom(*a):
            raise RuntimeError("handler bug")
        httpd.HttpdAPI.register_httpdcb("test", "t", boom)
        with socket.create_connection(addr) as c:
            c.sendall(REQ)
            c.setblocking(False)
            assert _pump(srv, lambda: _peek(c))
            assert _peek(c).startswith(b"HTTP/1.1 500")
    finally:
        srv.close()
        srv.lsock.close()
        httpd._roots.clear()


def _peek(c):
    try:
        return c.recv(65536, socket.MSG_PEEK)
    except BlockingIOError:
        return b""
