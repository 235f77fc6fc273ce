"""The dialog table in shm without sockets: records, the Call-ID index,
the timer wheel, and several processes changing them at once."""
import time

from shm_forking import reap, spawn

from opensipy_modules.dialog.table import (Dialog, DlgTable, L_TAG,
                                           dlg_key, parse_did, split_dlg_id)


def _dialog(t, callid, n=0):
    d = Dialog(t.hash(callid), t.new_id(), callid)
    d.from_uri = "sip:alice@example.com"
    d.to_uri = "sip:bob@example.com"
    d.caller = [f"tag{n}", "sip:alice@10.0.0.1:5060", "1", "", "udp:x", ""]
    return d


def test_a_record_round_trips_and_ids_name_it():
    t = DlgTable(64)
    d = _dialog(t, "abc@host")
    d.vals["x"] = "y"
    d.profiles.append(["calls", None])
    d.callees.append(["t2", "sip:bob@10.0.0.2", "0", "<sip:p;lr>", "", ""])
    d.callee_idx = 0
    with t.locked(d.h_entry):
        t.put(d, new=True)
    back = t.get(d.key)
    assert back.callid == "abc@host" and back.vals == {"x": "y"}
    assert back.callee[L_TAG] == "t2"
    assert parse_did(d.did) == (d.h_entry, d.h_id)
    assert split_dlg_id(d.dlg_id) == (d.h_entry, d.h_id)
    assert dlg_key(d.h_entry, d.h_id) == d.key
    assert t.ids_of_callid("abc@host") == [d.key]
    assert parse_did("zz") is None and parse_did("12") is None
    # OpenSIPS writes both numbers in hex, least significant digit first
    d2 = Dialog(0xb6c, 0x1f, "x")
    assert d2.did == "c6b.f1" and parse_did("c6b.f1") == (0xb6c, 0x1f)
    with t.locked(d.h_entry):
        t.remove(d)
    assert t.get(d.key) is None and t.ids_of_callid("abc@host") == []


def test_the_timer_wheel_gives_due_ids_once():
    t = DlgTable(64)
    now = int(time.time())
    t.wheel_done.set(now)
    ds = []
    for i in range(5):
        d = _dialog(t, f"w{i}@h")
        d.timeout = now + (i % 2)
        t.arm_timeout(d)
        ds.append(d)
    assert sorted(t.due(now)) == sorted(d.key for d in ds[0::2])
    assert t.due(now) == []
    assert sorted(t.due(now + 1)) == sorted(d.key for d in ds[1::2])


def test_several_processes_hammer_the_table():
    t = DlgTable(32)
    shared = _dialog(t, "shared@h")
    shared.vals["n"] = 0
    with t.locked(shared.h_entry):
        t.put(shared, new=True)
    n, procs = 200, 4

    def child(k):
        mine = []
        for i in range(n):
            # a few Call-IDs shared by every child: their index entries
            # are changed by all of them
            d = _dialog(t, f"cid{i % 7}@h", k)
            with t.locked(d.h_entry):
                t.put(d, new=True)
            mine.append(d)
            with t.locked(shared.h_entry):
                s = t.get(shared.key)
                s.vals["n"] += 1
                t.put(s)
            if i % 3 == 0:
                old = mine.pop(0)
                with t.locked(old.h_entry):
                    t.remove(old)
        for d in mine:
            with t.locked(d.h_entry):
                t.remove(d)

    pids = [spawn(child, k) for k in range(procs)]
    assert set(reap(pids).values()) == {0}
    assert t.get(shared.key).vals["n"] == n * procs
    assert len(t) == 1
    for i in range(7):
        assert t.ids_of_callid(f"cid{i}@h") == []
    ids = {d.h_id for d in t.all()}
    assert ids == {shared.h_id}
    assert t.ids.get() == 1 + n * procs      # every id taken once
