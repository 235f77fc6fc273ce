"""Shared memory running out while a message is handled (a module's
allocation in the script): the request is answered 500, the reply is
dropped, both are counted and logged; the receiver goes on."""
import socket

import pytest

from opensipy import config, log, modloader, receive, shm, statistics
from opensipy.net import udp
from opensipy.parser import SipMsg
from opensipy.sr_module import ALL_ROUTES, CmdExport, ModuleExports

from server import free_port

grabbed = []


def w_grab_shm(msg):
    """What a module does when it keeps state: allocate in shm.  The
    request with user "big" asks for more than the arena holds."""
    size = 1 << 40 if _user(msg) == "big" else 64
    grabbed.append(shm.shm_malloc(size, "oomtest"))
    return 1


def _user(msg):
    if msg.is_request:
        return msg.parsed_uri.user
    return msg.to.parsed_uri.user


OOMTEST = ModuleExports(name="oomtest", cmds=[
    CmdExport("grab_shm", w_grab_shm, [], ALL_ROUTES)])


@pytest.fixture
def path():
    from opensipy import script
    from opensipy.core_cmds import core_exports
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    if statistics.get_stat("core:rcv_requests") is None:
        statistics.register_core_stats()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2)
    config.reset()
    config.settings.set("socket", f"udp:127.0.0.1:{free_port()}")
    si = config.settings.sockets[0]
    udp.open_udp(si)
    reg = modloader.Registry()
    reg.add(modloader.LoadedModule("core", core_exports))
    reg.add(modloader.LoadedModule("oomtest", OOMTEST))
    port = peer.getsockname()[1]
    s = script.parse_string(f"""
route {{ grab_shm(); forward("127.0.0.1:{port}"); }}
onreply_route {{ grab_shm(); }}
""")
    receive.child_start(2, script.compile_script(s, reg), reg)
    saved = (log.state.level, log.state.stderr, log.state.syslog)
    log.state.level, log.state.stderr, log.state.syslog = log.L_ERR, True, \
        False
    yield si, peer
    log.state.level, log.state.stderr, log.state.syslog = saved
    for b in grabbed:
        shm.shm_free(b)
    grabbed.clear()
    si.sock.close()
    peer.close()
    config.reset()


def stat(name):
    return statistics.get_stat(f"core:{name}").get()


def request(peer, user):
    port = peer.getsockname()[1]
    return (f"OPTIONS sip:{user}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{user}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\n"
            "Call-ID: oom@test\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def reply(si, peer, user):
    port = peer.getsockname()[1]
    return (f"SIP/2.0 200 OK\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{si.port};branch=z9hG4bKours\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKp1\r\n"
            "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            f"To: <sip:{user}@127.0.0.1>;tag=b1\r\n"
            "Call-ID: oom@test\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def test_a_request_gets_500_when_shm_runs_out(path, capfd):
    si, peer = path
    src = peer.getsockname()
    before = stat("err_requests")
    receive.receive_msg(request(peer, "big"), src, si)
    r = SipMsg(peer.recv(65535))
    assert (r.status, r.reason) == (500, "Server Internal Error")
    assert stat("err_requests") == before + 1
    assert "out of shared memory" in capfd.readouterr().err
    # the next request is served as usual (forwarded to the peer)
    receive.receive_msg(request(peer, "small"), src, si)
    assert SipMsg(peer.recv(65535)).method == "OPTIONS"


def test_a_reply_is_dropped_when_shm_runs_out(path, capfd):
    si, peer = path
    before = (stat("err_replies"), stat("drop_replies"), stat("fwd_replies"))
    receive.receive_msg(reply(si, peer, "big"), ("127.0.0.1", 5080), si)
    assert (stat("err_replies"), stat("drop_replies"), stat("fwd_replies")) \
        == (before[0] + 1, before[1] + 1, before[2])
    assert "dropped" in capfd.readouterr().err
    peer.settimeout(0.3)
    with pytest.raises(socket.timeout):
        peer.recv(65535)
    receive.receive_msg(reply(si, peer, "small"), ("127.0.0.1", 5080), si)
    peer.settimeout(2)
    assert SipMsg(peer.recv(65535)).status == 200
