"""dialog's database side: OpenSIPS's ``dialog`` table (version 11)
through the DB API.

``db_mode`` (OpenSIPS's): 1 REALTIME, every change of a confirmed dialog
written at once and an ended one deleted; 2 DELAYED, changed dialogs
marked in shm and written by the timer every ``db_update_period`` seconds
(and at shutdown); 3 SHUTDOWN, the table rewritten when the server stops.
Dialogs are loaded from the table when the server starts (any mode > 0):
a restart keeps the established calls.

Only confirmed dialogs are stored (as OpenSIPS does).  ``vars`` holds the
dialog's values and ``profiles`` its profile links as JSON (OpenSIPS uses
its own length-prefixed encodings there: a table written by OpenSIPS loads
the other columns; values and profiles are not read from it).
"""
from __future__ import annotations

import json
import time
from opensipy import db, log

from . import callbacks as cb
from . import profiles as prof
from .table import (DLG_STATE_CONFIRMED, DLG_STATE_CONFIRMED_NA,
                    L_CONTACT, L_CSEQ, L_ROUTES, L_SOCK, L_TAG, PING_FLAGS,
                    Dialog, split_dlg_id)

TABLE_VERSION = 11
COLUMNS = ["dlg_id", "callid", "from_uri", "from_tag", "to_uri", "to_tag",
           "caller_cseq", "callee_cseq", "caller_ping_cseq",
           "callee_ping_cseq", "caller_route_set", "callee_route_set",
           "caller_contact", "callee_contact", "caller_sock", "callee_sock",
           "state", "start_time", "timeout", "vars", "profiles",
           "script_flags", "module_flags", "flags", "rt_on_answer",
           "rt_on_timeout", "rt_on_hangup"]


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= (1 << 31) else v


def row_of(d: Dialog) -> list:
    c = d.callee or ["", "", "0", "", "", ""]
    return [d.dlg_id, d.callid, d.from_uri, d.caller[L_TAG], d.to_uri,
            c[L_TAG], d.caller[L_CSEQ] or "0", c[L_CSEQ] or "0",
            d.ping_cseq[0], d.ping_cseq[1], d.caller[L_ROUTES] or None,
            c[L_ROUTES] or None, d.caller[L_CONTACT] or None,
            c[L_CONTACT] or None, d.caller[L_SOCK], c[L_SOCK], d.state,
            d.start_ts, d.timeout,
            json.dumps(d.vals).encode() if d.vals else None,
            json.dumps(d.profiles) if d.profiles else None,
            _int32(d.user_flags), d.mflags, 0, d.rt_on_answer or None,
            d.rt_on_timeout or None, d.rt_on_hangup or None]


def dialog_of(row: dict) -> Dialog:
    he, hid = split_dlg_id(int(row["dlg_id"]))
    d = Dialog(he, hid, row["callid"] or "")
    d.from_uri = row["from_uri"] or ""
    d.to_uri = row["to_uri"] or ""
    d.caller = [row["from_tag"] or "", row["caller_contact"] or "",
                str(row["caller_cseq"] or "0"),
                row["caller_route_set"] or "", row["caller_sock"] or "", ""]
    d.callees = [[row["to_tag"] or "", row["callee_contact"] or "",
                  str(row["callee_cseq"] or "0"),
                  row["callee_route_set"] or "", row["callee_sock"] or "",
                  ""]]
    d.callee_idx = 0
    d.state = int(row["state"] or DLG_STATE_CONFIRMED)
    d.start_ts = int(row["start_time"] or 0)
    d.timeout = int(row["timeout"] or 0)
    d.lifetime = max(d.timeout - d.start_ts, 0)
    d.user_flags = int(row["script_flags"] or 0) & 0xFFFFFFFF
    d.mflags = int(row["module_flags"] or 0)
    d.ping_cseq = [int(row["caller_ping_cseq"] or 0),
                   int(row["callee_ping_cseq"] or 0)]
    for f in ("rt_on_answer", "rt_on_timeout", "rt_on_hangup"):
        setattr(d, f, row.get(f) or "")
    try:
        v = row.get("vars")
        if v:
            d.vals = json.loads(bytes(v).decode() if not isinstance(v, str)
                                else v)
        p = row.get("profiles")
        if p:
            d.profiles = [list(x) for x in json.loads(p)]
    except (ValueError, TypeError):
        log.LM_WARN(f"dialog: values/profiles of {d.callid} are not in "
                    f"our encoding: not loaded")
    return d


class DlgDb:
    def __init__(self, url: str, table: str, mode: int, period: int):
        self.url = url
        self.table = table
        self.mode = mode
        self.period = max(int(period), 1)
        self.dbf = db.db_bind_mod(url, needed_by="dialog")
        self._con = None
        self._last = time.monotonic()

    @property
    def con(self):
        if self._con is None:
            self._con = self.dbf.init(self.url)
        self._con.use_table(self.table)
        return self._con

    def close(self):
        if self._con is not None:
            self._con.close()
            self._con = None

    # ---- writes
    def _write(self, d: Dialog) -> None:
        self.con.replace(COLUMNS, row_of(d))

    def _delete(self, d: Dialog) -> None:
        self.con.delete(["dlg_id"], ["="], [d.dlg_id])

    def changed(self, d: Dialog) -> None:
        """Under the dialog's lock, after a change."""
        from .core import st
        if self.mode == 1:
            try:
                self._write(d)
            except Exception as e:   # noqa: BLE001 - DBError & co
                log.LM_ERR(f"dialog: writing {d.callid} to {self.table} "
                           f"failed: {e}")
        elif self.mode == 2:
            st.tbl.dirty.put(d.key, b"1")

    def deleted(self, d: Dialog) -> None:
        from .core import st
        if d.state < DLG_STATE_CONFIRMED_NA and not d.start_ts:
            return
        if self.mode == 1:
            try:
                self._delete(d)
            except Exception as e:   # noqa: BLE001
                log.LM_ERR(f"dialog: deleting {d.callid} from "
                           f"{self.table} failed: {e}")
        elif self.mode == 2:
            st.tbl.dirty.put(d.key, b"1")

    def flush(self) -> int:
        """Write-back: the marked dialogs written (or their rows deleted
        when they ended); returns how many."""
        from .core import st
        from .table import parse_key
        t = st.tbl
        n = 0
        for key in t.dirty.keys():
            he, hid = parse_key(key.decode())
            with t.locked(he):
                t.dirty.delete(key)
                d = t.get(key)
                try:
                    if d is None or d.state > DLG_STATE_CONFIRMED:
                        self.con.delete(["dlg_id"], ["="],
                                        [(he << 32) | hid])
                    else:
                        self._write(d)
                except Exception as e:   # noqa: BLE001
                    log.LM_ERR(f"dialog: flushing {key.decode()} failed: "
                               f"{e}")
                    t.dirty.put(key, b"1")
                    continue
            n += 1
        return n

    def flush_due(self, mono: float) -> None:
        if mono - self._last >= self.period:
            self._last = mono
            self.flush()

    def shutdown(self) -> None:
        from .core import st
        if self.mode == 2:
            self.flush()
        elif self.mode == 3:
            con = self.con
            con.delete()
            for d in st.tbl.all():
                if d.state in (DLG_STATE_CONFIRMED_NA, DLG_STATE_CONFIRMED):
                    self._write(d)
        self.close()

    # ---- reads
    def _rows(self):
        return self.con.query(None, None, None, COLUMNS).dicts()

    def load(self) -> int:
        """Start-up (mod_init, in the attendant): every stored dialog into
        memory; the connection is closed before the fork."""
        try:
            db.db_check_table_version(self.dbf, self.con, self.table,
                                      TABLE_VERSION)
            n = self._load_rows(self._rows())
        finally:
            self.close()
        return n

    def sync_from_db(self) -> int:
        """MI dlg_db_sync: the dialogs of the table not in memory loaded."""
        return self._load_rows(self._rows())

    def _load_rows(self, rows) -> int:
        from .core import _inc, st
        t = st.tbl
        now = int(time.time())
        n = 0
        for row in rows:
            try:
                d = dialog_of(row)
            except (KeyError, ValueError, TypeError) as e:
                log.LM_ERR(f"dialog: bad row in {self.table}: {e}")
                continue
            if d.state not in (DLG_STATE_CONFIRMED_NA, DLG_STATE_CONFIRMED):
                continue
            if d.timeout and d.timeout <= now:
                d.timeout = now + 1          # expires at the first tick
            with t.locked(d.h_entry):
                if t.get(d.key) is not None:
                    continue
                t.put(d, new=True)
                t.arm_timeout(d)
                if d.mflags & PING_FLAGS:
                    t.pings.put(d.key, b"1")
            if t.ids.get() < d.h_id:
                t.ids.set(d.h_id)           # new ids after the loaded ones
            for name, value in d.profiles:
                if name in prof.profiles:
                    prof._add(name, value, 1)
            _inc(st.active)
            cb.run_global(cb.DLGCB_LOADED, d)
            n += 1
        return n
