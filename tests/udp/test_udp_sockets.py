"""UDP sockets as the attendant opens them."""
import socket

import pytest

from opensipy import config
from opensipy.net import udp

from server import free_port


def rmem_max():
    with open("/proc/sys/net/core/rmem_max") as f:
        return int(f.read())


@pytest.mark.parametrize("req", [65536, 262144])
def test_maxbuffer_sets_the_receive_buffer(req):
    si = config.parse_socket(f"udp:127.0.0.1:{free_port()}")
    sock = udp.open_udp(si, req)
    try:
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert got == 2 * min(req, rmem_max())    # Linux doubles it
    finally:
        sock.close()


def test_ipv6_socket_binds_v6_only():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    si = config.parse_socket(f"udp:[::1]:{free_port()}")
    try:
        sock = udp.open_udp(si)
    except OSError as e:
        pytest.skip(f"no ::1 here: {e}")
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert si.name == f"udp:[::1]:{si.port}"
    finally:
        sock.close()


def test_a_busy_port_is_a_clear_error():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
        si = config.parse_socket(f"udp:127.0.0.1:{port}")
        with pytest.raises(OSError, match=f"cannot bind udp:127.0.0.1:{port}"):
            udp.open_udp(si)
