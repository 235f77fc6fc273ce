"""Atomic counters and the statistics API across processes."""
import os
import socket
import time

import pytest

from opensipy import pt, shm
from opensipy.sr_module import STAT_IS_FUNC, STAT_NO_RESET, StatExport
from shm_forking import reap, run_children, spawn

N_PROCS = 4


def test_atomic_counter_no_lost_updates():
    c = shm.AtomicCounter(0, "test_stats")
    m = 50000

    def worker(i):
        for _ in range(m):
            c.inc()
        c.dec(i)

    run_children(N_PROCS, worker, timeout=120)
    assert c.get() == N_PROCS * m - sum(range(N_PROCS))
    assert c.reset() == N_PROCS * m - sum(range(N_PROCS))
    assert c.get() == 0
    assert c.compare_and_set(0, 5) and not c.compare_and_set(0, 6)
    assert c.value == 5
    c.destroy()


def test_stats_exact_across_processes(fresh_stats):
    S = fresh_stats
    a = S.register_stat("mod_x", "hits")
    b = S.register_stat("mod_x", "bytes", STAT_NO_RESET)
    m = 20000

    def worker(i):
        st = S.get_stat("mod_x:hits")
        for _ in range(m):
            st.inc()
        st.dec()
        for _ in range(100):
            b.update(7)

    run_children(N_PROCS, worker, timeout=120)
    assert a.get() == N_PROCS * (m - 1)
    assert S.get_statistics(["mod_x:"]) == {"mod_x:hits": N_PROCS * (m - 1),
                                            "mod_x:bytes": N_PROCS * 700}
    # reset respects STAT_NO_RESET, also when done by name from a child
    run_children(1, lambda _: [S.reset_stat("mod_x:hits"),
                               S.reset_stat("mod_x:bytes")])
    assert a.get() == 0
    assert b.get() == N_PROCS * 700
    assert b.reset() is False and b.get() == N_PROCS * 700
    S.reset_all()
    assert b.get() == N_PROCS * 700


def test_func_stats_and_names(fresh_stats):
    S = fresh_stats
    box = {"v": 41}
    f = S.register_stat("g", "computed", func=lambda: box["v"] + 1)
    assert f.flags & STAT_IS_FUNC
    assert S.get_stat("g:computed").get() == 42
    with pytest.raises(S.StatError, match="computed"):
        f.inc()
    assert f.reset() is False
    with pytest.raises(S.StatError, match="already"):
        S.register_stat("g", "computed")
    for bad in ("", "a:b", " x"):
        with pytest.raises(S.StatError):
            S.register_stat("g", bad)
    with pytest.raises(S.StatError, match="needs a function"):
        S.register_stat("g", "nofunc", STAT_IS_FUNC)
    assert S.get_stat("g:missing") is None
    with pytest.raises(S.StatError, match="no statistic g:missing"):
        S.get_statistics("g:missing")
    with pytest.raises(S.StatError, match="no statistics group"):
        S.get_statistics("nogroup:")
    with pytest.raises(S.StatError):
        S.get_stat("nocolon")


def test_register_module_stats(fresh_stats):
    S = fresh_stats
    exports = [StatExport("active", 0, "active_stat"),
               StatExport("total", STAT_NO_RESET),
               StatExport("now", STAT_IS_FUNC, lambda: 9)]
    got = S.register_module_stats("usrloc", exports)
    assert set(got) == {"active", "total", "now"}
    got["active"].update(3)
    assert S.get_statistics("usrloc:") == {"usrloc:active": 3,
                                           "usrloc:total": 0, "usrloc:now": 9}
    assert got["total"].flags & STAT_NO_RESET
    assert "usrloc" in S.list_groups()


def test_registration_closed_after_fork(fresh_stats):
    S = fresh_stats
    msg = shm.AtomicCounter(0)

    def child():
        pt.my_id = 3             # what the attendant sets in a worker
        try:
            S.register_stat("late", "x")
        except S.StatError as e:
            if "forked server process" in str(e) and "late:x" in str(e):
                msg.set(1)

    reap([spawn(child)], 30)
    assert msg.get() == 1
    assert S.get_stat("late:x") is None
    S.close_registration()
    with pytest.raises(S.StatError, match="registration is closed"):
        S.register_stat("late", "y")
    S.open_registration()
    S.register_stat("late", "y")
    msg.destroy()


def test_core_groups(fresh_stats):
    S = fresh_stats
    core = S.register_core_stats()
    assert set(S.CORE_STATS) <= set(core)
    groups = S.list_groups()
    for g in ("core", "shmem", "load", "net", "pkmem"):
        assert g in groups
    core["rcv_requests"].inc()
    allv = S.get_statistics("all")
    assert allv["core:rcv_requests"] == 1
    # the arena is the size the conftest asked for
    assert allv["shmem:total_size"] == shm.DEFAULT_SHM_SIZE
    # timestamp: seconds since the arena was made, which is after this
    # process started (read from /proc, not from the code under test) ...
    with open("/proc/self/stat") as f:
        started = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    alive = uptime - started / os.sysconf("SC_CLK_TCK")
    ts = S.get_statistics("core:timestamp")["core:timestamp"]
    assert 0 <= ts <= alive + 1
    # ... and it counts seconds
    time.sleep(1.05)
    assert S.get_stat("core:timestamp").get() in (ts + 1, ts + 2)
    assert S.get_stat("core:timestamp").reset() is False
    assert any(k.startswith("pkmem:") and k.endswith("-real_used_size")
               and v > 0 for k, v in allv.items())


def test_shmem_used_equals_module_accounting(fresh_stats):
    S = fresh_stats
    S.register_core_stats()
    blk = shm.shm_malloc(12345, "acct_check")
    try:
        v = S.get_statistics("shmem:")
        assert v["shmem:used_size"] == sum(shm.module_usage().values())
        assert v["shmem:free_size"] == v["shmem:total_size"] - \
            v["shmem:real_used_size"]
    finally:
        shm.shm_free(blk)
    assert S.get_statistics("shmem:used_size")["shmem:used_size"] == \
        v["shmem:used_size"] - 12352


def test_load_from_children(fresh_stats):
    S = fresh_stats
    S.register_core_stats()
    one, two = S.load.declare_proc(1), S.load.declare_proc(2)
    assert S.get_stat("load:load").get() == 0        # nobody reported

    def child(i):
        # process 1 was busy half of a one-second window, process 2 10%
        S.load.report(i + 1, (500 if i == 0 else 100) * 10**6, 10**9)

    run_children(2, child)
    assert (one.get(), two.get()) == (50, 10)
    assert S.get_stat("load:load-proc-1") is one
    assert S.get_stat("load:load").get() == 30
    # a process that reports nothing for two windows is idle
    p = S.load._ptr(1)
    shm.lib.shm_atomic_set(p + 1, shm.now_ns() - 3 * S.LOAD_WINDOW_NS)
    assert one.get() == 0 and S.get_stat("load:load").get() == 5
    S.close_registration()
    with pytest.raises(S.StatError, match="closed"):
        S.load.declare_proc(3)


def test_net_waiting_udp(fresh_stats):
    S = fresh_stats
    S.register_core_stats()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        assert S.get_stat("net:waiting_udp").get() == 0   # no sockets yet
        S.register_net_sockets(lambda: [("udp", "127.0.0.1", port)])
        assert S.get_stat("net:waiting_udp").get() == 0
        for _ in range(3):
            tx.sendto(b"x" * 500, ("127.0.0.1", port))
        deadline = time.monotonic() + 10
        while S.get_stat("net:waiting_udp").get() < 1500:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for _ in range(3):
            rx.recv(2000)
        assert S.get_stat("net:waiting_udp").get() == 0
        assert S.get_stat("net:waiting_tcp").get() == 0
    finally:
        rx.close()
        tx.close()


def test_proc_net_parser(tmp_path):
    from opensipy import statistics as S
    (tmp_path / "udp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:13C4 00000000:0000 07 00000000:00000300 00:00\n"
        "   1: 0100007F:13C5 00000000:0000 07 00000000:00000100 00:00\n")
    (tmp_path / "udp6").write_text(
        "  sl  local_address rem_address st tx_queue rx_queue\n"
        "   0: 00000000000000000000000001000000:13C4 "
        "00000000000000000000000000000000:0000 07 00000000:00000010 00:00\n")
    got = sorted(S._proc_net_queues("udp", str(tmp_path)))
    assert got == [("127.0.0.1", 5060, 0x300), ("127.0.0.1", 5061, 0x100),
                   ("::1", 5060, 0x10)]
