"""The dialog table on SQLite without sockets: delayed writes (db_mode 2)
reach the table at the flush, rows of ended dialogs go, shutdown mode (3)
rewrites the table, and a load restores what was written."""
import importlib.util
import sqlite3

import pytest

from opensipy.db import admin

from server import REPO


def _bench():
    spec = importlib.util.spec_from_file_location(
        "dialog_shm", REPO / "bench" / "dialog_shm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def setup(tmp_path):
    from opensipy_modules.dialog import dbsync
    path = tmp_path / "d.db"
    url = f"sqlite://{path}"
    admin.create(url, ["dialog"])
    b = _bench()
    core = b.setup(64)
    yield b, core, dbsync, url, path
    core.st.db = None


def _rows(path):
    with sqlite3.connect(path) as c:
        return c.execute("select dlg_id, state, callid, vars from dialog "
                         "order by dlg_id").fetchall()


def test_delayed_mode_writes_at_the_flush(setup):
    b, core, dbsync, url, path = setup
    core.st.db = dbsync.DlgDb(url, "dialog", 2, 60)
    core.st.db_mode = 2
    keys = b.make_calls(core, 3, start=500)
    assert _rows(path) == []                 # nothing before the flush
    core.update(keys[0], lambda d: d.vals.update(x="1") or True)
    assert core.st.db.flush() == 3
    rows = _rows(path)
    assert [r[1] for r in rows] == [4, 4, 4]
    assert b'"x": "1"' in [r[3] for r in rows if r[3]][0]
    assert core.end_dialog(keys[1], "test", False)
    assert core.st.db.flush() == 1
    assert len(_rows(path)) == 2
    # a restart: the table loaded into a fresh memory table
    core2 = b.setup(64)
    db2 = dbsync.DlgDb(url, "dialog", 2, 60)
    core2.st.db = db2
    assert db2.load() == 2
    d = core2.st.tbl.get(keys[0])
    assert d.vals == {"x": "1"} and d.state == 4
    assert d.callee[1] == "sip:bob@10.0.0.2:5060"
    # new ids come after the loaded ones
    assert core2.st.tbl.new_id() > max(int(k.split(b".")[1], 16)
                                       for k in keys)


def test_shutdown_mode_rewrites_the_table(setup):
    b, core, dbsync, url, path = setup
    core.st.db = dbsync.DlgDb(url, "dialog", 3, 60)
    core.st.db_mode = 3
    keys = b.make_calls(core, 2, start=600)
    assert _rows(path) == []
    core.end_dialog(keys[0], "test", False)
    core.st.db.shutdown()
    rows = _rows(path)
    assert len(rows) == 1 and rows[0][2] == "601-4711@10.0.0.1"
