"""Benchmarks of dialog's per-call work (pytest-benchmark).  Normal runs
pass --benchmark-disable, so each body runs once as a plain test; measure
with:

    python -m pytest tests/dialog/test_bench_dialog.py --benchmark-enable

* a whole call's dialog work: create_dialog over a parsed INVITE, the 200
  through tm's reply callback, the ACK and the BYE through the in-dialog
  path (the dialog made, confirmed, established and ended), with 10,000
  other dialogs in the table;
* a sequential request matched by its did and run through the state
  machine (a re-INVITE's bookkeeping).
"""
import importlib.util

from opensipy.parser import SipMsg

from server import REPO


def _bench():
    spec = importlib.util.spec_from_file_location(
        "dialog_shm", REPO / "bench" / "dialog_shm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_a_calls_dialog_work(benchmark):
    b = _bench()
    core = b.setup(4096)
    others = b.make_calls(core, 10_000, start=100_000)
    n = [0]

    def one_call():
        i = n[0]
        n[0] += 1
        key = b.make_calls(core, 1, start=i)[0]
        d = core.st.tbl.get(key)
        bye = SipMsg(b.ACK.replace("ACK sip", "BYE sip")
                     .replace("1 ACK", "2 BYE").format(i=i, did=d.did)
                     .encode())
        found, dr = core.lookup(bye, d.did)
        core.within(bye, found, dr)
    benchmark(one_call)
    import time
    core.expire_due(int(time.time()) + core.st.delete_delay + 1)
    assert len(core.st.tbl) == len(others)
    for k in others:
        core.end_dialog(k, "bench", False)


def test_bench_sequential_request(benchmark):
    b = _bench()
    core = b.setup(4096)
    key = b.make_calls(core, 1, start=7)[0]
    d = core.st.tbl.get(key)
    raw = (b.ACK.replace("ACK sip", "INFO sip").replace("1 ACK", "{n} INFO")
           .replace("{i}", "7").replace("{did}", d.did))
    n = [2]

    def seq():
        msg = SipMsg(raw.replace("{n}", str(n[0])).encode())
        n[0] += 1
        found, dr = core.lookup(msg, d.did)
        core.within(msg, found, dr)
    benchmark(seq)
    assert int(core.st.tbl.get(key).caller[2]) == n[0] - 1
    core.end_dialog(key, "bench", False)
