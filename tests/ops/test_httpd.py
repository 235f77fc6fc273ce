"""httpd on h11 under its own event loop: keep-alive, the request-size and
time limits, and slow or idle clients that must not hold up anyone else."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from ops_util import Ports, http_mi, read_reply
from server import wait_for

MI_BODY = b'{"jsonrpc":"2.0","method":"uptime","id":7}'


@pytest.fixture
def srv(server):
    p = Ports()
    server.start(p.script(httpd="""
modparam("httpd", "conn_timeout", 2)
modparam("httpd", "post_buf_size", 4096)
modparam("httpd", "max_header_size", 2048)
modparam("httpd", "max_connections", 300)
"""))
    server.ports = p
    return server


def post(path=b"/mi", body=MI_BODY, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_keep_alive_serves_several_requests_on_one_connection(srv):
    c = http.client.HTTPConnection("127.0.0.1", srv.ports.http, timeout=5)
    try:
        for i in range(3):
            c.request("POST", "/mi", MI_BODY)
            r = c.getresponse()
            assert r.status == 200
            assert "Up time" in json.loads(r.read())["result"]
            if i == 0:
                sock = c.sock
            assert c.sock is sock        # the same TCP connection
    finally:
        c.close()


def test_pipelined_requests_get_answers_in_order(srv):
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(post(body=b'{"jsonrpc":"2.0","method":"pwd","id":1}') +
                  post(body=b'{"jsonrpc":"2.0","method":"arg","id":2}',
                       extra=b"Connection: close\r\n"))
        data = read_reply(s)
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.index(b'"id":1') < data.index(b'"id":2')


def test_chunked_body_is_accepted(srv):
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(b"POST /mi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" +
                  f"{len(MI_BODY):x}\r\n".encode() + MI_BODY +
                  b"\r\n0\r\n\r\n")
        data = read_reply(s)
    assert data.startswith(b"HTTP/1.1 200") and b'"id":7' in data


def test_too_large_body_is_413_and_closed(srv):
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(b"POST /mi HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
        data = read_reply(s)
    assert data.startswith(b"HTTP/1.1 413")
    # a chunked body over the limit is caught while it streams
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(b"POST /mi HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            s.sendall(b"800\r\n" + b"x" * 0x800 + b"\r\n")
        data = read_reply(s)
    assert data.startswith(b"HTTP/1.1 413")
    assert http_mi(srv.ports.http, "uptime")


def test_too_large_head_is_431(srv):
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(b"GET /mi HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000)
        data = read_reply(s)
    assert data.startswith(b"HTTP/1.1 431")


def test_garbage_is_400(srv):
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(b"\x16\x03\x01 this is no http\r\n\r\n")
        data = read_reply(s)
    assert data.startswith(b"HTTP/1.1 400")


def test_idle_keep_alive_connection_is_closed_after_conn_timeout(srv):
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(post())
        s.settimeout(5)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert read_reply(s, timeout=8) == b""     # closed by the server
        assert 1.0 < time.monotonic() - t0 < 6


def test_slow_headers_are_cut_at_conn_timeout_while_mi_answers(srv):
    """A client that sends its head one byte at a time (slowloris) gets a
    408 once conn_timeout has passed since its first byte, however busy it
    keeps the line; MI calls keep answering meanwhile."""
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(b"POST /mi HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        t0 = time.monotonic()
        closed = False
        answered = 0
        while time.monotonic() - t0 < 8:
            try:
                s.sendall(b"a")
            except OSError:
                closed = True
                break
            t = time.monotonic()
            assert "Up time" in http_mi(srv.ports.http, "uptime", timeout=2)
            assert time.monotonic() - t < 2
            answered += 1
            s.settimeout(0.3)
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            assert d.startswith(b"HTTP/1.1 408") or d == b""
            closed = True
            break
        assert closed and answered >= 2
        assert 1.5 < time.monotonic() - t0 < 6


def test_200_idle_connections_and_a_slow_client_do_not_stop_mi(srv):
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(
                ("127.0.0.1", srv.ports.http)))
        slow = socket.create_connection(("127.0.0.1", srv.ports.http))
        idle.append(slow)
        slow.sendall(b"GET /mi HTTP/1.1\r\n")
        for _ in range(5):
            t = time.monotonic()
            assert "Up time" in http_mi(srv.ports.http, "uptime", timeout=2)
            assert time.monotonic() - t < 2
            slow.sendall(b"X")
            time.sleep(0.1)
    finally:
        for s in idle:
            s.close()


def test_max_connections_evicts_the_oldest_idle_connection(server):
    p = Ports()
    server.start(p.script(httpd='modparam("httpd", "max_connections", 5)'))
    idle = [socket.create_connection(("127.0.0.1", p.http))
            for _ in range(5)]
    try:
        time.sleep(0.3)
        assert "Up time" in http_mi(p.http, "uptime")
        # the first one opened was closed to make room
        assert read_reply(idle[0], timeout=3) == b""
    finally:
        for s in idle:
            s.close()


def test_bad_httpd_limits_stop_the_start(server):
    p = Ports()
    with pytest.raises(RuntimeError, match="max_connections must be positive"):
        server.start(p.script(httpd='modparam("httpd", "max_connections", 0)'),
                     timeout=20)


def test_httpd_process_is_single_and_listed(srv):
    procs = http_mi(srv.ports.http, "ps")["Processes"]
    assert [p["Type"] for p in procs].count("HTTPD") == 1
    wait_for(lambda: http_mi(srv.ports.http, "httpd_list_root_path") ==
             [{"http_root": "mi", "module": "mi_http"}])


def test_expect_100_continue_is_answered_at_once(srv):
    body = b'{"jsonrpc":"2.0","method":"uptime","id":9,"pad":"' + \
        b"x" * 2000 + b'"}'
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(b"POST /mi HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\n"
                  b"Content-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n")
        s.settimeout(2)
        assert s.recv(100).startswith(b"HTTP/1.1 100 ")
        s.sendall(body)
        data = read_reply(s)
    assert b"HTTP/1.1 200" in data and b'"id":9' in data
    # over the limit: 413 straight away, no 100
    with socket.create_connection(("127.0.0.1", srv.ports.http)) as s:
        s.sendall(b"POST /mi HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 999999\r\n\r\n")
        assert read_reply(s).startswith(b"HTTP/1.1 413")


def test_client_gone_before_the_reply_does_not_hurt(srv):
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", srv.ports.http))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")   # RST on close
        s.sendall(post())
        s.close()
    assert "Up time" in http_mi(srv.ports.http, "uptime")
    procs = http_mi(srv.ports.http, "ps")["Processes"]
    assert [p["Type"] for p in procs].count("HTTPD") == 1
