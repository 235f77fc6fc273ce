"""The dialog API other modules bind (load_api("dialog")): callbacks per
dialog armed by name from the global DLGCB_CREATED, values and flags
through the API, events in the order a call makes them.  Driven through
the module's own paths (bench/dialog_shm.py: create_dialog over a parsed
INVITE, tm's reply callback, the in-dialog path), no sockets."""
import importlib.util
import time

import pytest

from opensipy.parser import SipMsg

from server import REPO

events = []


def _bench():
    spec = importlib.util.spec_from_file_location(
        "dialog_shm", REPO / "bench" / "dialog_shm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def dlg():
    from opensipy_modules import dialog
    from opensipy_modules.dialog import callbacks as cb
    b = _bench()
    core = b.setup(64)
    saved = {k: list(v) for k, v in cb._global.items()}
    api = dialog.load_api()

    def on_event(d, typ, params):
        events.append((typ, d.callid, params["param"],
                       params["direction"]))

    def on_created(d, typ, params):
        events.append((typ, d.callid, None, 0))
        api.register_dlgcb(d, api.DLGCB_CONFIRMED | api.DLGCB_TERMINATED
                           | api.DLGCB_EXPIRED | api.DLGCB_REQ_WITHIN
                           | api.DLGCB_EARLY | api.DLGCB_RESPONSE_FWDED,
                           "test_events", "P1")
        api.store_dlg_value(d, "acc", "on")

    api.register_dlgcb_func("test_events", on_event)
    api.register_dlgcb(None, api.DLGCB_CREATED, on_created)
    events.clear()
    yield b, core, api
    cb._global.clear()
    cb._global.update(saved)


def test_callbacks_follow_a_call_and_its_bye(dlg):
    b, core, api = dlg
    key = b.make_calls(core, 1, start=900)[0]
    d = api.get_dlg_by_key(key)
    assert d.state == api.DLG_STATE_CONFIRMED
    assert api.fetch_dlg_value(d, "acc") == "on"
    cid = d.callid
    bye = SipMsg(b.ACK.replace("ACK sip", "BYE sip")
                 .replace("1 ACK", "2 BYE").format(i=900, did=d.did)
                 .encode())
    found, dr = core.lookup(bye, d.did)
    assert found is not None and dr == api.DLG_DIR_DOWNSTREAM
    core.within(bye, found, dr)
    # ended: kept for delete_delay seconds (state 5), then dropped
    assert api.get_dlg_by_key(key).state == api.DLG_STATE_DELETED
    core.expire_due(int(time.time()) + core.st.delete_delay + 1)
    assert api.get_dlg_by_key(key) is None
    assert api.get_dlg(bye).end_reason == "Downstream BYE"
    types = [e[0] for e in events]
    assert types == [api.DLGCB_CREATED, api.DLGCB_RESPONSE_FWDED,
                     api.DLGCB_CONFIRMED, api.DLGCB_TERMINATED]
    assert all(e[1] == cid for e in events)
    assert events[2][2] == "P1"
    assert events[2][3] == api.DLG_DIR_UPSTREAM      # the 200 came up


def test_expiry_runs_expired_then_terminated(dlg):
    b, core, api = dlg
    key = b.make_calls(core, 1, start=901)[0]
    now = int(time.time())
    assert core.set_timeout(key, 0)
    core.st.tbl.wheel_done.set(now - 1)
    core.timer()
    assert api.get_dlg_by_key(key).end_reason == "Lifetime Timeout"
    core.expire_due(now + core.st.delete_delay + 1)
    assert api.get_dlg_by_key(key) is None
    types = [e[0] for e in events]
    assert types[-2:] == [api.DLGCB_EXPIRED, api.DLGCB_TERMINATED]


def test_per_dialog_callbacks_need_a_registered_name(dlg):
    b, core, api = dlg
    key = b.make_calls(core, 1, start=902)[0]
    d = api.get_dlg_by_key(key)
    from opensipy_modules.dialog.callbacks import DlgcbError
    with pytest.raises(DlgcbError):
        api.register_dlgcb(d, api.DLGCB_CONFIRMED, "nobody")
    with pytest.raises(DlgcbError):
        api.register_dlgcb(d, api.DLGCB_CREATED, "test_events")
    assert api.end_dlg(d, "test", send_bye=False)


def test_mi_context_callbacks_add_to_dlg_list_ctx(dlg):
    b, core, api = dlg
    from opensipy_modules import dialog

    def ctx(d, typ, params):
        params["context"]["acc"] = {"leg": d.caller[0]}
    api.register_dlgcb_func("test_ctx", ctx)
    key = b.make_calls(core, 1, start=903)[0]
    d = api.get_dlg_by_key(key)
    api.register_dlgcb(d, api.DLGCB_MI_CONTEXT, "test_ctx")
    out = dialog.mi_dlg_list_ctx({"callid": d.callid})["Dialog"]
    assert out["context"]["acc"] == {"leg": "8kd73hs903"}
    assert out["context"]["values"] == [{"acc": "on"}]
    assert out["ID"] == d.did and out["db_id"] == str(d.dlg_id)
    assert api.end_dlg(d, "test", send_bye=False)
