"""uac: a proxy acting as a user agent client on a request it relays
(OpenSIPS's uac module).

* ``uac_replace_from([display,] uri)`` / ``uac_replace_to(...)`` rewrite
  the display name and/or URI of From/To.  With ``restore_mode`` ``auto``
  (default) or ``manual`` the replies of the transaction are given the
  original back; the original is also stored, XOR-ed with the new text (and
  with ``restore_passwd``) and base64-encoded, in a parameter of our
  Record-Route (``rr_from_store_param`` / ``rr_to_store_param``), so that
  in-dialog requests are rewritten again (downstream) or restored
  (upstream) by ``loose_route()`` (``auto``) or ``uac_restore_from()`` /
  ``uac_restore_to()`` (``manual``), their replies too.
* ``uac_auth([algorithms])`` in a failure_route answers the 401/407 of the
  picked branch with the credentials of the uac_auth module: it adds the
  ``Authorization``/``Proxy-Authorization`` header, puts the branch's
  Request-URI back and increases the CSeq; ``t_relay()`` then sends it.
  Replies going upstream get the caller's CSeq back; a Record-Route
  parameter ``aci`` makes ``loose_route()`` increase the CSeq of the
  caller's later in-dialog requests (and restore it in their replies).
* ``uac_inc_cseq(n)`` increases the CSeq of the request by ``n`` (replies
  get the original back).

Return codes as OpenSIPS: 1 done, -1 failed (the reason is logged).
"""
from __future__ import annotations

import base64
import re
from typing import Optional

from opensipy import log, modloader
from opensipy.parser import ParseError
from opensipy.sr_module import (BRANCH_ROUTE, CMD_PARAM_FIX_NULL,
                                CMD_PARAM_INT, CMD_PARAM_OPT, CMD_PARAM_STR,
                                FAILURE_ROUTE, REQUEST_ROUTE, STR_PARAM,
                                CmdExport, CmdParam, DepExport, ModuleDep,
                                ModuleExports, ParamExport)

from opensipy_modules.auth import digest

# --- parameters (OpenSIPS names) --------------------------------------------------
restore_mode = "auto"
restore_passwd = ""
rr_from_store_param = "vsf"
rr_to_store_param = "vst"

RR_CSEQ_PARAM = "aci"          # OpenSIPS's rr_uac_cseq_param

NO_RESTORE, MANUAL_RESTORE, AUTO_RESTORE = 0, 1, 2
_mode = AUTO_RESTORE

tm = None                      # the tm API
rrb = None                     # the rr API, when rr is loaded
uac_auth_api = None            # bound by uac_auth()'s fixup

_CB_CSEQ = "uac_cseq"
_CB_RESTORE = "uac_restore"
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+\Z")
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f]")


# --- state kept with the request (tm carries msg.persist to failure_route) ---------

def _persist(msg) -> dict:
    p = msg.__dict__.get("persist")
    if p is None:
        p = msg.persist = {}
    return p


def _arm(msg, name: str, param) -> None:
    """Run callback ``name`` on the replies relayed for this request's
    transaction: now when it exists, else when t_relay makes it."""
    cell = tm.t_gett(msg)
    if cell is not None:
        tm.register_tmcb(cell, tm.TMCB_RESPONSE_FWDED, name, param)
        return
    pend = msg.__dict__.get("uac_pending")
    if pend is None:
        pend = msg.uac_pending = []
    pend.append((name, param))


def _on_request_in(cell, typ, params) -> None:
    req = params.get("req")
    pend = req.__dict__.pop("uac_pending", None) if req is not None else None
    for name, param in pend or ():
        tm.register_tmcb(cell, tm.TMCB_RESPONSE_FWDED, name, param)


# --- CSeq ---------------------------------------------------------------------------

def _bump_cseq(msg, delta: int) -> Optional[int]:
    """Increase the request's CSeq by ``delta`` (again: the change made
    earlier is replaced, the increments add up); the replies get the
    original back.  The new number, or None."""
    cs = msg.cseq
    if cs is None:
        log.LM_ERR("uac: the request has no valid CSeq")
        return None
    p = _persist(msg)
    kept = p.get("uac_cseq")
    if kept is not None:
        # the change made earlier must still be there (a branch_route's
        # changes are taken back after each branch)
        lumps = msg.lumps()
        i = kept[1]
        if i >= len(lumps) or not lumps[i][3].startswith(
                f"{kept[0] + kept[2]} ".encode()):
            kept = None
    if kept is None:
        orig, idx, total = cs.num, msg.n_lumps, delta
    else:
        orig, idx, total = kept[0], kept[1], kept[2] + delta
    if not 0 < orig + total < 2 ** 31:
        log.LM_ERR(f"uac: CSeq {orig}+{total} leaves the range of RFC 3261")
        return None
    try:
        if kept is None:
            msg.set_hdr_body("CSeq", f"{orig + total} {cs.method}")
        else:
            # the earlier change out, the new one in, what came after back
            later = msg.lumps()[idx + 1:]
            msg.lump_rollback(idx)
            msg.set_hdr_body("CSeq", f"{orig + total} {cs.method}")
            for kind, off, removed, data in later:
                msg._lump(kind, off, removed, data)
    except (ValueError, KeyError) as e:
        log.LM_ERR(f"uac: cannot change the CSeq: {e}")
        return None
    p["uac_cseq"] = (orig, idx, total)
    if not p.get("uac_cseq_armed"):
        _arm(msg, _CB_CSEQ, orig)
        p["uac_cseq_armed"] = 1
    return orig + total


def _cb_cseq(cell, typ, params) -> None:
    """A reply going upstream gets the CSeq number the caller used."""
    rpl = params.get("rpl")
    orig = params.get("param")
    if rpl is None or orig is None:
        return
    cs = rpl.cseq
    if cs is not None and cs.num != orig:
        rpl.set_hdr_body("CSeq", f"{orig} {cs.method}")


def w_uac_inc_cseq(msg, value) -> int:
    """uac_inc_cseq(cseq): 1, or -1 (not a request, bad value)."""
    if not msg.is_request:
        log.LM_ERR("uac_inc_cseq: called for a reply")
        return -1
    if value is None or int(value) <= 0:
        log.LM_ERR(f"uac_inc_cseq: the increment must be positive "
                   f"(got {value})")
        return -1
    return 1 if _bump_cseq(msg, int(value)) is not None else -1


# --- From / To ------------------------------------------------------------------

def _hdr(msg, which: str):
    try:
        return msg.from_ if which == "from" else msg.to
    except (ParseError, ValueError) as e:
        log.LM_ERR(f"uac: bad {which} header: {e}")
        return None


def _addr_text(msg, na) -> str:
    return msg.raw[na.start:na.addr_end].decode("utf-8", "surrogateescape")


def _xor(a: bytes, b: bytes) -> bytes:
    n = max(len(a), len(b))
    a, b = a.ljust(n, b"\0"), b.ljust(n, b"\0")
    out = bytes(x ^ y for x, y in zip(a, b))
    if restore_passwd:
        pw = restore_passwd.encode()
        out = bytes(x ^ pw[i % len(pw)] for i, x in enumerate(out))
    return out


def encode_restore(old: str, new: str) -> str:
    """The Record-Route parameter value that turns either text into the
    other (base64url of their XOR, with restore_passwd)."""
    x = _xor(old.encode("utf-8", "surrogateescape"),
             new.encode("utf-8", "surrogateescape"))
    return base64.urlsafe_b64encode(x).decode().rstrip("=")


def decode_restore(value: str, current: str) -> Optional[str]:
    """The other text, from the parameter and the text the header holds
    now; None when they do not belong together."""
    try:
        x = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError):
        return None
    cur = current.encode("utf-8", "surrogateescape")
    if len(cur) > len(x):
        return None
    if restore_passwd:
        pw = restore_passwd.encode()
        x = bytes(c ^ pw[i % len(pw)] for i, c in enumerate(x))
    other = bytes(a ^ b for a, b in zip(x, cur.ljust(len(x), b"\0")))
    other = other.rstrip(b"\0")
    text = other.decode("utf-8", "surrogateescape")
    if not text or _BAD_TEXT.search(text) or "<" not in text:
        return None
    return text


def _quote_display(display: str) -> str:
    d = display.strip()
    if (len(d) >= 2 and d[0] == '"' and d[-1] == '"') or _TOKEN.match(d):
        return d
    return '"' + d.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uri_of(text: str) -> str:
    i = text.rfind("<")
    j = text.rfind(">")
    return text[i + 1:j] if 0 <= i < j else text


def replace_uri(msg, which: str, display, uri) -> int:
    if not msg.is_request:
        log.LM_ERR(f"uac_replace_{which}: called for a reply")
        return -1
    na = _hdr(msg, which)
    if na is None:
        log.LM_ERR(f"uac_replace_{which}: the request has no {which} header")
        return -1
    for what, v in (("display", display), ("uri", uri)):
        if v is not None and _BAD_TEXT.search(str(v)):
            log.LM_ERR(f"uac_replace_{which}: the {what} holds a control "
                       f"character (CR, LF, ...): refused")
            return -1
    if uri and any(c in uri for c in ' <>"'):
        log.LM_ERR(f"uac_replace_{which}: {uri!r} is not a URI")
        return -1
    old = _addr_text(msg, na)
    if display is None:
        disp = na.display_raw.strip() if na.display_raw else ""
    else:
        disp = _quote_display(display) if display.strip() else ""
    new = (f"{disp} " if disp else "") + f"<{uri or na.uri}>"
    if new == old:
        return 1
    cp = msg.lump_checkpoint()
    try:
        msg.replace(na.start, na.addr_end - na.start, new)
        if _mode != NO_RESTORE and rrb is not None:
            name = rr_from_store_param if which == "from" \
                else rr_to_store_param
            if rrb.add_rr_param(msg, f";{name}={encode_restore(old, new)}") \
                    < 0:
                raise ValueError("cannot add the Record-Route parameter")
    except ValueError as e:
        # (a second change of the same header overlaps the first)
        log.LM_ERR(f"uac_replace_{which}: {e} (call it once per branch)")
        msg.lump_rollback(cp)
        return -1
    if _mode != NO_RESTORE:
        _arm(msg, _CB_RESTORE, (which, _uri_of(new), old))
    return 1


def w_replace_from(msg, display=None, uri=None) -> int:
    return replace_uri(msg, "from", display, uri)


def w_replace_to(msg, display=None, uri=None) -> int:
    return replace_uri(msg, "to", display, uri)


def _cb_restore(cell, typ, params) -> None:
    """A reply going upstream gets the From/To the caller sent back."""
    rpl = params.get("rpl")
    which, seen_uri, orig = params.get("param")
    na = _hdr(rpl, which) if rpl is not None else None
    if na is None or na.uri != seen_uri:
        return
    done = rpl.__dict__.setdefault("uac_restored", set())
    if which in done:                # armed once per branch: once is enough
        return
    rpl.replace(na.start, na.addr_end - na.start, orig)
    done.add(which)


def restore_uri(msg, which: str) -> int:
    """The in-dialog side: the Route of ours carries the parameter; the
    From (to) of a downstream request is rewritten as the initial one
    was, the To (from) of an upstream one restored.  1 changed, -1 not."""
    if rrb is None:
        return -1
    name = rr_from_store_param if which == "from" else rr_to_store_param
    val = rrb.get_route_param(msg, name)
    if not val:
        return -1
    down = rrb.is_direction(msg, "downstream") == 1
    hdr = which if down else ("to" if which == "from" else "from")
    p = _persist(msg)
    if p.get("uac_" + hdr):
        return -1
    na = _hdr(msg, hdr)
    if na is None:
        return -1
    cur = _addr_text(msg, na)
    other = decode_restore(val, cur)
    if other is None:
        log.LM_ERR(f"uac: the {name} Route parameter does not match the "
                   f"{hdr} header ({cur!r}): not restored")
        return -1
    try:
        msg.replace(na.start, na.addr_end - na.start, other)
    except ValueError as e:
        log.LM_ERR(f"uac: cannot restore the {hdr} header: {e}")
        return -1
    p["uac_" + hdr] = 1
    _arm(msg, _CB_RESTORE, (hdr, _uri_of(other), cur))
    return 1


def w_restore_from(msg) -> int:
    if not msg.is_request:
        log.LM_ERR("uac_restore_from: called for a reply")
        return -1
    return restore_uri(msg, "from")


def w_restore_to(msg) -> int:
    if not msg.is_request:
        log.LM_ERR("uac_restore_to: called for a reply")
        return -1
    return restore_uri(msg, "to")


def _rr_callback(msg, params, param) -> None:
    """loose_route() found a Route of ours: the CSeq of the caller's
    requests after a uac_auth() (downstream only), and in auto mode the
    From/To."""
    aci = rrb.get_route_param(msg, RR_CSEQ_PARAM)
    if aci is not None and rrb.is_direction(msg, "downstream") == 1:
        try:
            n = int(aci) if aci else 1
        except ValueError:
            n = 0
        if not 0 < n < 1000:
            log.LM_ERR(f"uac: bad {RR_CSEQ_PARAM} Route parameter {aci!r}")
        else:
            _bump_cseq(msg, n)
    if _mode == AUTO_RESTORE:
        restore_uri(msg, "from")
        restore_uri(msg, "to")


# --- uac_auth -----------------------------------------------------------------------

def uac_auth(msg, algorithms=None) -> int:
    """uac_auth([algorithms]) in a failure_route: 1 the request carries the
    answer (t_relay() sends it), -1 it cannot be answered (logged)."""
    api = uac_auth_api
    cell = tm.t_gett(msg)
    if cell is None or api is None:
        log.LM_ERR("uac_auth: no transaction (call it in a failure_route)")
        return -1
    idx = tm.t_get_picked_branch()
    if idx < 0:
        log.LM_ERR("uac_auth: no picked branch (call it in a failure_route)")
        return -1
    rpl = tm.t_get_branch_reply(cell, idx)
    if rpl is None:
        log.LM_ERR("uac_auth: the picked branch has no received reply (a "
                   "local one, e.g. a timeout): nothing to answer")
        return -1
    code = rpl.status
    if code not in (401, 407):
        log.LM_ERR(f"uac_auth: the picked reply is a {code}, not 401/407")
        return -1
    hf = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    bodies = rpl.hdrs(hf) or []
    if not bodies:
        log.LM_ERR(f"uac_auth: the {code} has no {hf} header: no challenge "
                   f"to answer")
        return -1
    uri = tm.t_get_branch_uri(cell, idx) or msg.new_uri or msg.ruri
    why = []
    line = None
    for body in bodies:
        try:
            ch = api.parse_challenge(body)
        except api.DigestError as e:
            why.append(f"unusable challenge ({e})")
            continue
        if ch.algorithm is None:
            why.append(f"realm {ch.realm!r}: unsupported algorithm "
                       f"{ch.algorithm_raw!r}")
            continue
        if algorithms and ch.algorithm not in algorithms:
            why.append(f"realm {ch.realm!r}: algorithm {ch.algorithm} not "
                       f"in {','.join(algorithms)}")
            continue
        crd = api.lookup_realm(msg, ch.realm)
        if crd is None:
            why.append(f"realm {ch.realm!r}: no credentials")
            continue
        body_bytes = msg.body if ch.pick_qop() == "auth-int" else b""
        try:
            line = api.build_authorization_hdr(code, ch, crd, msg.method,
                                               uri, body_bytes)
        except api.DigestError as e:
            why.append(f"realm {ch.realm!r}: {e}")
            continue
        break
    if line is None:
        log.LM_ERR(f"uac_auth: cannot answer the {code} to {msg.method} "
                   f"{uri}: {'; '.join(why)}")
        return -1
    p = _persist(msg)
    if _bump_cseq(msg, 1) is None:
        return -1
    if rrb is not None:
        # later in-dialog requests of the caller get the CSeq increased by
        # as much (set again after another challenge round)
        rrb.set_rr_param(msg, RR_CSEQ_PARAM, str(p["uac_cseq"][2]))
    try:
        msg.append_hdr(line)
    except ValueError as e:
        log.LM_ERR(f"uac_auth: cannot add the {code} answer: {e}")
        return -1
    msg.new_uri = uri
    p["uac_auth"] = p.get("uac_auth", 0) + 1
    return 1


def fixup_algorithms(value):
    """The optional algorithm list; also binds the uac_auth API (so a
    script using uac_auth() without the uac_auth module is refused)."""
    global uac_auth_api
    uac_auth_api = modloader.load_api("uac_auth", needed_by="uac_auth()")
    if value is None:
        return None
    return digest.parse_algorithms(value)


def fixup_replace(value):
    """uac_replace_*()'s display (run even when omitted): restoring needs
    rr with append_fromtag."""
    if _mode != NO_RESTORE:
        if rrb is None:
            raise ValueError(f"restore_mode {restore_mode!r} needs the rr "
                             f"module (loadmodule \"rr.so\"), or set "
                             f"restore_mode to \"none\"")
        if _mode == AUTO_RESTORE and not rrb.append_fromtag:
            raise ValueError("restore_mode \"auto\" needs rr's "
                             "append_fromtag enabled")
    return value


# --- lifecycle ----------------------------------------------------------------------

def mod_init() -> int:
    global tm, rrb, _mode
    m = str(restore_mode).strip().lower()
    modes = {"none": NO_RESTORE, "manual": MANUAL_RESTORE,
             "auto": AUTO_RESTORE}
    if m not in modes:
        raise ValueError(f"unsupported restore_mode {restore_mode!r} "
                         f"(none, manual, auto)")
    _mode = modes[m]
    for n in ("rr_from_store_param", "rr_to_store_param"):
        v = globals()[n]
        if _mode != NO_RESTORE and not re.match(r"[A-Za-z0-9_.-]+\Z", v):
            raise ValueError(f"{n} {v!r} must be a non-empty token")
    tm = modloader.load_api("tm", needed_by="uac")
    rrb = None
    if modloader.registry.get("rr") is not None:
        rrb = modloader.load_api("rr", needed_by="uac")
        rrb.register_rrcb(_rr_callback, None, 2)
    tm.register_tmcb_func(_CB_CSEQ, _cb_cseq)
    tm.register_tmcb_func(_CB_RESTORE, _cb_restore)
    tm.register_tmcb(None, tm.TMCB_REQUEST_IN, _on_request_in)
    return 0


_ROUTES = REQUEST_ROUTE | BRANCH_ROUTE | FAILURE_ROUTE
_DISPLAY = CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT | CMD_PARAM_FIX_NULL,
                    fixup=fixup_replace)
_URI = CmdParam(CMD_PARAM_STR)

exports = ModuleExports(
    name="uac",
    deps=DepExport(md=[ModuleDep("tm")]),
    cmds=[
        CmdExport("uac_replace_from", w_replace_from, [_DISPLAY, _URI],
                  _ROUTES),
        CmdExport("uac_replace_to", w_replace_to, [_DISPLAY, _URI], _ROUTES),
        CmdExport("uac_restore_from", w_restore_from, [], _ROUTES),
        CmdExport("uac_restore_to", w_restore_to, [], _ROUTES),
        CmdExport("uac_auth", uac_auth,
                  [CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT |
                            CMD_PARAM_FIX_NULL, fixup=fixup_algorithms)],
                  FAILURE_ROUTE),
        CmdExport("uac_inc_cseq", w_uac_inc_cseq, [CmdParam(CMD_PARAM_INT)],
                  _ROUTES),
    ],
    params=[
        ParamExport("restore_mode", STR_PARAM, "restore_mode"),
        ParamExport("restore_passwd", STR_PARAM, "restore_passwd"),
        ParamExport("rr_from_store_param", STR_PARAM, "rr_from_store_param"),
        ParamExport("rr_to_store_param", STR_PARAM, "rr_to_store_param"),
    ],
    init_f=mod_init,
)
