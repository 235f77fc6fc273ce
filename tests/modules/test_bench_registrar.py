"""Benchmark (not a timed test) of a REGISTER through the receive path in one
process: parse, script, registrar save() into the shm location table,
the 200 built and sent.  A new AOR each round (as the SIPp register
scenario does) and a refresh of one AOR.  Run with --benchmark-enable;
normal runs check the path once.

    python3 -m pytest tests/modules/test_bench_registrar.py --benchmark-enable
"""
import itertools
import socket

import pytest

from opensipy import config, modloader, receive, script, shm, statistics
from opensipy import timer
from opensipy.core_cmds import core_exports

from server import free_port


def register(n: int, port: int) -> bytes:
    return (f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r{n};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:user{n}@127.0.0.1>;tag=t{n}\r\n"
            f"To: <sip:user{n}@127.0.0.1>\r\n"
            f"Call-ID: reg-{n}@bench\r\n"
            f"CSeq: {n + 1} REGISTER\r\n"
            f"Contact: <sip:user{n}@127.0.0.1:5070>\r\n"
            "Expires: 3600\r\n"
            "User-Agent: bench\r\n"
            "Content-Length: 0\r\n\r\n").encode()


@pytest.fixture(scope="module")
def path():
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    if statistics.get_stat("core:rcv_requests") is None:
        statistics.register_core_stats()
    saved_closed = statistics._closed
    statistics._closed = False
    config.reset()
    config.settings.set("socket", f"udp:127.0.0.1:{free_port()}")
    si = config.settings.sockets[0]
    from opensipy.net import udp
    udp.open_udp(si)
    reg = modloader.Registry()
    saved_reg = modloader.registry
    modloader.registry = reg
    reg.add(modloader.LoadedModule("core", core_exports))
    timer.open_registration()
    for name in ("sl", "signaling", "usrloc", "registrar"):
        lm = modloader.load_module(reg, name)
        if statistics.get_stat(f"{name}:") is None:
            try:
                lm.stats = statistics.register_module_stats(
                    name, lm.exports.stats)
            except statistics.StatError:
                pass
        for se in lm.exports.stats:
            st = statistics.get_stat(f"{name}:{se.name}")
            if isinstance(se.stat_pointer, str) and st is not None:
                setattr(lm.pymod, se.stat_pointer, st)
    for lm in reg.init_order():
        if lm.exports.init_f:
            lm.exports.init_f()
    s = script.parse_string('route { if (!save("location")) '
                            'sl_reply_error(); }')
    compiled = script.compile_script(s, reg)
    timer.close_registration()
    receive.child_start(2, compiled, reg)
    yield si
    si.sock.close()
    modloader.registry = saved_reg
    statistics._closed = saved_closed
    config.reset()


def test_register_new_aors(benchmark, path):
    si = path
    counter = itertools.count(1000)
    src = ("127.0.0.1", 5070)
    accepted = statistics.get_stat("registrar:accepted_regs")
    before = accepted.get()

    def one():
        receive.receive_msg(register(next(counter), si.port), src, si)
    benchmark(one)
    assert accepted.get() > before


def test_refresh_one_aor(benchmark, path):
    si = path
    seq = itertools.count(5000)
    src = ("127.0.0.1", 5070)

    def one():
        n = next(seq)
        data = register(1, si.port).replace(
            b"CSeq: 2 REGISTER", f"CSeq: {n} REGISTER".encode())
        receive.receive_msg(data, src, si)
    benchmark(one)
    from opensipy_modules import usrloc
    rec = usrloc.get_udomain("location").get("user1")
    assert rec is not None and len(rec.contacts) == 1
