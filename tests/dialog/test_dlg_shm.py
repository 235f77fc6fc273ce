"""Dialogs made through the module's own paths (bench/dialog_shm.py: a
parsed INVITE through create_dialog, its 200 through tm's reply callback,
the ACK through the in-dialog path): every one established, and the shared
memory they took given back when they end (no leak per dialog)."""
import importlib.util

from opensipy import shm

from server import REPO


def _bench():
    spec = importlib.util.spec_from_file_location(
        "dialog_shm", REPO / "bench" / "dialog_shm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dialogs_made_and_ended_give_their_memory_back():
    b = _bench()
    base = shm.stats()["used_size"]
    core = b.setup(256)
    tables = shm.stats()["used_size"] - base
    keys = b.make_calls(core, 1000)
    used = shm.stats()["used_size"] - base - tables
    ds = core.st.tbl.all()
    assert len(ds) == 1000 and {d.state for d in ds} == {4}
    assert 0 < used / 1000 < 2048
    # ended (no BYEs: nothing listens); timer slots popped
    for k in keys:
        assert core.end_dialog(k, "test", False)
    assert len(core.st.tbl) == 1000          # waiting out delete_delay
    import time
    core.expire_due(int(time.time()) + core.st.delete_delay + 1)
    assert len(core.st.tbl) == 0
    core.st.tbl.due(max(d.timeout for d in ds))
    assert shm.stats()["used_size"] - base == tables
