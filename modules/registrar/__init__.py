"""registrar: REGISTER processing and location lookup (OpenSIPS's registrar).

``save(table[, flags[, aor]])`` applies a REGISTER to the usrloc table per
RFC 3261 §10.3 and answers it (through the signaling module: statefully
when the request has a transaction, statelessly otherwise).
``lookup(table[, flags[, aor]])`` rewrites the Request-URI to the AOR's
best contact and adds the others as branches.  ``is_registered``,
``is_contact_registered``, ``is_ip_registered``, ``remove`` and
``remove_ip_port`` read and change the table.
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import re
import time
from typing import List, Optional

from opensipy import config, log, modloader, shm
from opensipy.db import DBError
from opensipy.parser import METHODS, ParseError, parse_uri
from opensipy.parser.uri import unescape
from opensipy.pvar import Branch, get_branches
from opensipy.sr_module import (CMD_PARAM_INT, CMD_PARAM_OPT, CMD_PARAM_STR,
                                CMD_PARAM_STATIC, FAILURE_ROUTE, INT_PARAM,
                                ONREPLY_ROUTE, REQUEST_ROUTE, STR_PARAM,
                                BRANCH_ROUTE, CmdExport, CmdParam, DepExport,
                                ModuleDep, ModuleExports, ParamExport,
                                StatExport)
from opensipy.statistics import STAT_IS_FUNC

# --- parameters (OpenSIPS names) -----------------------------------------------
default_expires = 3600
min_expires = 60
max_expires = 0
default_q = 0
case_sensitive = 1
max_contacts = 0
allow_dup_cseq = 0
received_avp = ""
retry_after = 0
gruu_secret = ""
disable_gruu = 1
sock_hdr_name = ""
tcp_persistent_flag = ""
_tcp_flag_bit = -1         # its bit (mod_init), -1: not set

accepted_regs = None
rejected_regs = None
_max_contacts_seen = 0

ul = None      # the usrloc API
sig = None     # the signaling API

REGISTER = METHODS["METHOD_REGISTER"]
MAX_CONTACT_LEN = 255
MAX_AOR_LEN = 256

# lookup() return codes
LOOKUP_OK = 1
LOOKUP_NOT_FOUND = -1
LOOKUP_METHOD_UNSUP = -2
LOOKUP_ERROR = -3


class RegError(Exception):
    """A REGISTER refused: the reply to send."""

    def __init__(self, code: int, reason: str, headers=()):
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.headers = list(headers)


class SaveFlags:
    __slots__ = ("memory_only", "no_reply", "max_contacts", "force_reg",
                 "matching_mode", "path_mode", "path_received",
                 "only_request_contacts", "min_expires", "max_expires",
                 "socket_header")

    def __init__(self):
        self.memory_only = False
        self.no_reply = False
        self.max_contacts = None      # None: the max_contacts parameter
        self.force_reg = False
        self.matching_mode = None     # None: usrloc's matching_mode
        self.path_mode = None         # None: Path not stored
        self.path_received = False
        self.only_request_contacts = False
        self.min_expires = None
        self.max_expires = None
        self.socket_header = False


class LookupFlags:
    __slots__ = ("no_branches", "to_branches_only", "method_filtering",
                 "ua_regex")

    def __init__(self):
        self.no_branches = False
        self.to_branches_only = False
        self.method_filtering = False
        self.ua_regex = None


PATH_OFF, PATH_LAZY, PATH_STRICT = 0, 1, 2


def _tokens(text):
    """'memory-only, max-contacts=5' -> [('memory-only', None, raw),
    ('max-contacts', '5', raw)]"""
    out = []
    for tok in re.split(r"[,\s]+", str(text or "").strip()):
        if not tok:
            continue
        name, eq, value = tok.partition("=")
        out.append((name.strip().lower(), value.strip() if eq else None,
                    name.strip()))
    return out


def _int_flag(name, value):
    if value is None or not value.isdigit():
        raise ValueError(f"flag '{name}' needs a number ({name}=N)")
    return int(value)


# OpenSIPS 2.x single-letter save flags, still accepted: m r c<N> f p<N> v
# o s e<N> E<N> (3.x spells them as words)
_OLD_SAVE = re.compile(r"^(m|r|f|v|o|s|c\d+|p[012]|e\d+|E\d+)+$")


_OLD_WORDS = {"m": "memory-only", "r": "no-reply", "f": "force-registration",
              "v": "path-received", "o": "only-request-contacts",
              "s": "socket-header", "c": "max-contacts", "e": "min-expires",
              "E": "max-expires", "p0": "path-off", "p1": "path-lazy",
              "p2": "path-strict"}


def _old_save_tokens(t: str):
    """An old letter string as the (word, value) tokens it stands for."""
    out = []
    for m in re.finditer(r"(p[012]|[mrfvos])|([ceE])(\d+)", t):
        if m.group(1):
            out.append((_OLD_WORDS[m.group(1)], None))
        else:
            out.append((_OLD_WORDS[m.group(2)], m.group(3)))
    return out


def fixup_domain(name):
    """The usrloc table, registered (created) before the fork."""
    if ul is None:
        raise ValueError("usrloc is not loaded")
    return ul.register_udomain(str(name))


def fixup_save_flags(text) -> SaveFlags:
    global _max_contacts_seen
    f = SaveFlags()
    tokens = []
    for name, value, raw in _tokens(text):
        if value is None and _OLD_SAVE.match(raw):
            tokens += _old_save_tokens(raw)
        else:
            tokens.append((name, value))
    for name, value in tokens:
        if name == "memory-only":
            f.memory_only = True
        elif name == "no-reply":
            f.no_reply = True
        elif name == "max-contacts":
            f.max_contacts = _int_flag(name, value)
        elif name == "force-registration":
            f.force_reg = True
        elif name == "matching-mode":
            if value not in ("0", "1"):
                raise ValueError("matching-mode is 0 or 1 here (matching "
                                 "on a URI param is not supported)")
            f.matching_mode = int(value)
        elif name == "path-off":
            f.path_mode = PATH_OFF
        elif name == "path-lazy":
            f.path_mode = PATH_LAZY
        elif name == "path-strict":
            f.path_mode = PATH_STRICT
        elif name == "path-received":
            f.path_received = True
        elif name == "only-request-contacts":
            f.only_request_contacts = True
        elif name == "socket-header":
            f.socket_header = True
        elif name == "min-expires":
            f.min_expires = _int_flag(name, value)
        elif name == "max-expires":
            f.max_expires = _int_flag(name, value)
        else:
            raise ValueError(f"unknown save() flag {name!r}")
    if f.max_contacts:
        _max_contacts_seen = max(_max_contacts_seen, f.max_contacts)
    return f


def fixup_lookup_flags(text) -> LookupFlags:
    f = LookupFlags()
    for name, value, _ in _tokens(text):
        if name in ("no-branches", "b"):
            f.no_branches = True
        elif name == "to-branches-only":
            f.to_branches_only = True
        elif name in ("method-filtering", "m"):
            f.method_filtering = True
        elif name == "ua-filtering":
            if not value or len(value) < 2 or value[0] != "/" \
                    or "/" not in value[1:]:
                raise ValueError("ua-filtering needs /regexp/")
            body, _, opts = value[1:].rpartition("/")
            try:
                f.ua_regex = re.compile(body, re.I if "i" in opts else 0)
            except re.error as e:
                raise ValueError(f"ua-filtering: {e}") from None
        elif name == "case-insensitive":
            if f.ua_regex is not None:
                f.ua_regex = re.compile(f.ua_regex.pattern, re.I)
        else:
            raise ValueError(f"unknown or unsupported lookup() flag "
                             f"{name!r}")
    return f


# --- helpers --------------------------------------------------------------------

def extract_aor(uri_text, parsed=None) -> str:
    """user[@host] of a URI, unescaped; lower-cased unless case_sensitive
    (the host always).  Raises RegError 400 when it is not a SIP URI.
    ``parsed``: the URI already parsed (the To header's)."""
    try:
        u = parsed if parsed is not None or uri_text is None else \
            parse_uri(uri_text.strip().strip("<>"))
    except (ValueError, ParseError):
        raise RegError(400, "Bad Address of Record") from None
    host = u.host if u is not None else None
    if not host:
        raise RegError(400, "Bad Address of Record")
    user = u.user or ""
    if "%" in user:
        user = unescape(user)
    if not case_sensitive:
        user = user.lower()
    host = host.lower()
    if user and ul is not None and not ul.use_domain:
        # what ul.fix_aor() leaves of user@host: the user (the length
        # checked is still that of user@host)
        if len(user) + 1 + len(host) > MAX_AOR_LEN:
            raise RegError(400, "Bad Address of Record")
        return user
    aor = f"{user}@{host}" if user else host
    if len(aor) > MAX_AOR_LEN:
        raise RegError(400, "Bad Address of Record")
    return ul.fix_aor(aor) if ul is not None else aor


def _reply(msg, code: int, reason: str, headers=()) -> int:
    if sig is None:
        log.LM_ERR("registrar: no reply function (signaling not bound)")
        return -1
    return sig.reply(msg, code, reason, headers)


def _expires_hdr(msg) -> Optional[int]:
    v = msg.hdr("Expires")
    if v is None:
        return None
    return _expires_value(v)


def _expires_value(text: str) -> int:
    """An Expires value: ASCII digits only (str.isdigit() alone also takes
    '³', which int() refuses), at most 10 of them; else 400."""
    v = text.strip()
    if not v.isascii() or not v.isdigit() or len(v) > 10:
        raise RegError(400, "Bad Expires")
    return int(v)


def _contact_expires(raw: Optional[str], hdr_expires: Optional[int],
                     flags: "SaveFlags") -> int:
    """The expires of one Contact: its ``expires`` param (``raw``), else
    the Expires header, else default_expires; checked against the limits."""
    if raw is not None:
        e = _expires_value(raw)
    elif hdr_expires is not None:
        e = hdr_expires
    else:
        e = default_expires
    if e == 0:
        return 0
    lo = flags.min_expires if flags.min_expires is not None else min_expires
    hi = flags.max_expires if flags.max_expires is not None else max_expires
    # RFC 3261 10.3 step 7: below the minimum (and under an hour) -> 423
    if lo and e < lo and e < 3600:
        raise RegError(423, "Interval Too Brief", [f"Min-Expires: {lo}"])
    if hi and e > hi:
        e = hi
    return e


_allow_masks = {}      # Allow text -> methods mask (a phone repeats its own)


def _methods_of(msg) -> int:
    if msg.hdr("Allow") is None:
        return 0xFFFFFFFF
    allow = ",".join(msg.hdrs("Allow"))
    mask = _allow_masks.get(allow)
    if mask is not None:
        return mask
    mask = 0
    for name in allow.split(","):
        bit = METHODS.get("METHOD_" + name.strip().upper())
        if bit:
            mask |= bit
    mask = mask or 0xFFFFFFFF
    if len(_allow_masks) < 256:
        _allow_masks[allow] = mask
    return mask


def _socket_str(msg) -> str:
    rcv = msg.rcv
    si = getattr(msg, "force_send_socket", None) or (rcv.socket if rcv
                                                      else None)
    return si.name if si is not None else ""


def _tcp_persistent(msg) -> bool:
    """A REGISTER over TCP with the script's tcp_persistent_flag set."""
    rcv = msg.rcv
    return (_tcp_flag_bit >= 0 and rcv is not None and rcv.proto == "tcp"
            and bool(rcv.conn_id)
            and bool((msg.flags or 0) & (1 << _tcp_flag_bit)))


def _received_of(msg) -> str:
    if received_avp:
        from opensipy.pvar import get_avps
        vals = get_avps(msg).get(received_avp.lstrip("$").replace(
            "avp(", "").rstrip(")"))
        if vals:
            return str(vals[0])
    return ""


def _path_of(msg, flags: SaveFlags) -> str:
    """The Path header values (RFC 3327) when a path mode is set."""
    if flags.path_mode is None:
        return ""
    return ",".join(p.strip() for p in msg.hdrs("Path"))


def _path_received(path: str) -> str:
    """The ``received`` param of the first Path URI (the save 'v' flag),
    unescaped into a SIP URI."""
    first = path.split(",")[0].strip().strip("<>")
    try:
        u = parse_uri(first)
    except (ValueError, ParseError):
        return ""
    r = u.param("received") if u is not None else None
    return unescape(r) if r else ""


# --- GRUU (RFC 5627) ---------------------------------------------------------

def _instance_urn(instance: str) -> str:
    """'"<urn:uuid:x>"' -> 'urn:uuid:x'"""
    return instance.strip().strip('"').strip("<>")


def _keystream(n: int) -> bytes:
    key = (gruu_secret or "OpenSIPS").encode()
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(key + block.to_bytes(4, "big")).digest()
        block += 1
    return bytes(out[:n])


def temp_gruu_token(aor: str, instance: str, callid: str) -> str:
    """An opaque token that names the binding (aor, instance, Call-ID) to
    this registrar only: XORed with a key stream of gruu_secret, as
    OpenSIPS's temporary GRUUs are; a new Call-ID gives a new one."""
    data = f"{aor} {_instance_urn(instance)} {callid}".encode()
    xored = bytes(a ^ b for a, b in zip(data, _keystream(len(data))))
    return base64.urlsafe_b64encode(xored).decode().rstrip("=")


def decode_temp_gruu(token: str):
    """(aor, instance urn, callid) or None."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        return None
    data = bytes(a ^ b for a, b in zip(raw, _keystream(len(raw))))
    parts = data.decode("utf-8", "replace").split(" ")
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


def _gruu_params(c, aor: str, aor_uri) -> str:
    if aor_uri is None or not c.instance:
        return ""
    host = aor_uri.host
    user = aor_uri.user
    base = f"sip:{user}@{host}" if user else f"sip:{host}"
    urn = _instance_urn(c.instance)
    pub = f'{base};gr={urn}'
    temp = f"sip:tgruu.{temp_gruu_token(aor, c.instance, c.callid)}@{host};gr"
    return f';pub-gruu="{pub}";temp-gruu="{temp}"'


def _contact_lines(contacts, now: float, gruu=None) -> List[str]:
    """The Contact lines of a 200 to REGISTER; ``gruu`` = (aor, its parsed
    URI) when GRUUs are to be given (RFC 5627)."""
    q2str = ul.q2str
    lines = []
    for c in contacts:
        e = 0 if c.expires == 0 else max(int(c.expires - now), 0)
        line = f"Contact: <{c.contact}>;expires={e}"
        if c.q >= 0:
            line += f";q={q2str(c.q)}"
        if c.instance:
            line += f";+sip.instance={c.instance}"
            if gruu is not None:
                line += _gruu_params(c, gruu[0], gruu[1])
        if c.reg_id:
            line += f";reg-id={c.reg_id}"
        lines.append(line)
    return lines


# --- save -------------------------------------------------------------------------

_NO_FLAGS = SaveFlags()        # save() without flags (never changed)


def save(msg, dom, flags: Optional[SaveFlags] = None,
         aor_uri: Optional[str] = None) -> int:
    flags = flags or _NO_FLAGS
    try:
        contacts, path = _save(msg, dom, flags, aor_uri)
    except RegError as e:
        if rejected_regs is not None:
            rejected_regs.inc()
        log.LM_DBG(f"registrar: REGISTER refused: {e}")
        if not flags.no_reply:
            hdrs = list(e.headers)
            if 500 <= e.code < 600 and retry_after:
                hdrs.append(f"Retry-After: {retry_after}")
            _reply(msg, e.code, e.reason, hdrs)
        return -1
    if accepted_regs is not None:
        accepted_regs.inc()
    if flags.no_reply:
        return 1
    now = time.time()
    gruu = None
    if not disable_gruu and _supports(msg, "gruu"):
        try:
            to_uri = msg.to.parsed_uri if aor_uri is None \
                else parse_uri(aor_uri.strip().strip("<>"))
            gruu = (extract_aor(None, to_uri), to_uri)
        except (RegError, ParseError, ValueError, AttributeError):
            gruu = None
    hdrs = _contact_lines(contacts, now, gruu)
    if path and flags.path_mode in (PATH_LAZY, PATH_STRICT) \
            and _supports_path(msg):
        hdrs.append(f"Path: {path}")
    hdrs.append(_date_hdr(now))
    if _reply(msg, 200, "OK", hdrs) < 0:
        return -1
    return 1


_date_cache = [0, ""]


def _date_hdr(now: float) -> str:
    """``Date:`` (RFC 3261 §20.17), made once a second."""
    sec = int(now)
    if _date_cache[0] != sec:
        _date_cache[0] = sec
        _date_cache[1] = "Date: " + email.utils.formatdate(sec, usegmt=True)
    return _date_cache[1]


def _supports(msg, option: str) -> bool:
    """The UA listed ``option`` in Supported."""
    return any(x.strip().lower() == option
               for h in msg.hdrs("Supported") for x in h.split(","))


def _supports_path(msg) -> bool:
    """The UA said ``Supported: path`` (RFC 3327)."""
    return _supports(msg, "path")


def _store(dom, new, old, flags: SaveFlags, aor: str) -> None:
    try:
        dom.put(new, old, memory_only=flags.memory_only)
    except shm.ShmOutOfMemory as e:
        log.LM_ERR(f"registrar: no shared memory for {aor}: {e}")
        raise RegError(500, "Server Internal Error") from None
    except DBError as e:
        log.LM_ERR(f"registrar: the location database failed for {aor}: "
                   f"{e}")
        raise RegError(500, "Server Internal Error") from None


def _save(msg, dom, flags: SaveFlags, aor_uri):
    """Apply the REGISTER; returns (contacts for the 200, Path)."""
    if not msg.is_request or msg.method_id != REGISTER:
        raise RegError(400, "Bad Request")
    if aor_uri is None:
        to = msg.to
        if to is None:
            raise RegError(400, "To header not found")
        try:
            aor = extract_aor(None, to.parsed_uri)
        except ParseError:
            raise RegError(400, "Bad Address of Record") from None
    else:
        aor = extract_aor(aor_uri)
    try:
        contacts = msg.contacts
    except ParseError:
        raise RegError(400, "Bad Contact") from None
    hdr_expires = _expires_hdr(msg)
    star = any(c.star for c in contacts)
    if star:
        if len(contacts) > 1:
            raise RegError(400, "Non-star Contact present")
        if hdr_expires != 0:
            raise RegError(400, "Expires must be zero")
    path = _path_of(msg, flags)
    if path and flags.path_mode == PATH_STRICT and not _supports_path(msg):
        raise RegError(420, "Bad Extension",
                       ["Unsupported: path", f"Path: {path}"])
    limit = flags.max_contacts if flags.max_contacts is not None \
        else max_contacts
    mmode = flags.matching_mode
    callid = msg.callid or ""
    cs = msg.cseq
    cseq = cs.num if cs is not None else 0
    now = int(time.time())
    with dom.locked(aor):
        old = dom.get(aor)
        if not contacts:                              # a fetch
            return (old.alive(now) if old is not None else []), path
        if star:
            if old is not None:
                for c in old.contacts:
                    if c.callid == callid and cseq < c.cseq:
                        raise RegError(400, "Invalid CSeq number")
                _store(dom, ul.URecord(aor), old, flags, aor)
            return [], path
        new = ul.URecord(aor, old.alive(now) if old is not None else [])
        ua = (msg.hdr("User-Agent") or "")[:255]
        methods = _methods_of(msg)
        received = _received_of(msg) if received_avp else ""
        if flags.path_received and path:
            received = _path_received(path) or received
        persist = _tcp_persistent(msg)
        if persist and not received:
            # the connection's far end (the NAT's public side): lookup()
            # sends there, i.e. on this very connection
            ip = msg.rcv.src_ip
            ip = f"[{ip}]" if ":" in ip else ip
            received = f"sip:{ip}:{msg.rcv.src_port};transport=tcp"
        sock = _socket_str(msg)
        if flags.socket_header and sock_hdr_name:
            given = (msg.hdr(sock_hdr_name) or "").strip()
            if given:
                try:
                    sock = config.parse_socket(given).name
                except ValueError:
                    raise RegError(400, "Bad socket header") from None
        cflags = getattr(msg, "ruri_bflags", 0) or 0
        mine = []           # the request's bindings, for only-request-contacts
        for c in contacts:
            uri = c.uri
            if not uri or len(uri) > MAX_CONTACT_LEN:
                raise RegError(400, "Contact/received too long")
            try:
                c.parsed_uri
            except ParseError:
                raise RegError(400, "Bad Contact") from None
            params = c.params
            e = _contact_expires(params.get("expires"), hdr_expires, flags)
            q = default_q
            if c.q is not None:
                try:
                    q = ul.str2q(c.q)
                except ValueError:
                    raise RegError(400, "Invalid q") from None
            instance = params.get("+sip.instance") or ""
            reg_id = params.get("reg-id") or ""
            reg_id = int(reg_id) if reg_id.isascii() and reg_id.isdigit() \
                else 0
            cur = ul.match_contact(new, uri, callid, instance, reg_id, mmode)
            if cur is not None and cur.callid == callid:
                retrans = cseq == cur.cseq and \
                    now - cur.last_modified <= ul.cseq_delay
                if cseq < cur.cseq or (cseq == cur.cseq and not retrans
                                       and not allow_dup_cseq):
                    raise RegError(400, "Invalid CSeq number")
                if retrans:
                    mine.append(cur)
                    continue      # a retransmission: answered, not applied
            if e == 0:
                if cur is not None:
                    new.contacts.remove(cur)
                continue
            if cur is None:
                if limit and len(new.contacts) >= limit:
                    if not flags.force_reg:
                        raise RegError(503, "Too Many Registered Contacts")
                    # force-registration: the oldest give way
                    oldest = min(new.contacts,
                                 key=lambda x: x.last_modified)
                    new.contacts.remove(oldest)
                cur = ul.UContact(uri, contact_id=ul.new_contact_id(aor),
                                  last_modified=now)
                new.contacts.append(cur)
            else:
                cur.contact = uri
            # what this REGISTER says of the binding (a new or a known one)
            cur.expires = now + e
            cur.q = q
            cur.callid = callid
            cur.cseq = cseq
            cur.cflags = cflags
            cur.user_agent = ua
            cur.socket = sock
            cur.methods = methods
            cur.received = received
            cur.path = path
            cur.instance = instance
            cur.reg_id = reg_id
            cur.last_modified = now
            mine.append(cur)
        new.contacts = ul.order_contacts(new.contacts)
        _store(dom, new, old, flags, aor)
        if persist:
            # the connection lives as long as the longest-lived binding
            # made on it (0: back to tcp_connection_lifetime)
            from opensipy.net import tcp
            until = max((c.expires for c in new.contacts
                         if c.received == received and c.alive(now)),
                        default=0)
            tcp.keep_open(msg.rcv.conn_id, until)
        if flags.only_request_contacts:
            return [c for c in mine if c in new.contacts], path
        return new.alive(now), path


# --- lookup ------------------------------------------------------------------------

def _apply_contact(msg, c, first: bool):
    dst = None
    if c.received:
        dst = c.received
    path = c.path or None
    if path:
        # the request goes to the first Path URI; the rest become Route
        first_hop = path.split(",")[0].strip().strip("<>")
        dst = first_hop
    sock = _find_socket(c.socket) if c.socket else None
    if first:
        msg.new_uri = c.contact
        msg.dst_uri = dst
        # the branch flags the REGISTER carried (NAT and co) come back
        msg.ruri_bflags = (getattr(msg, "ruri_bflags", 0) or 0) | c.cflags
        if path:
            msg.path_vec = path
        if sock is not None:
            msg.force_send_socket = sock
        return None
    return Branch(c.contact, dst, ul.q2str(c.q) if c.q >= 0 else None, path,
              c.cflags, sock)


def _gruu_of(uri_text: str):
    """(aor or None, instance urn, callid or None) when the URI is a GRUU
    (it has a ``gr`` parameter), else None."""
    if ";gr" not in uri_text:
        return None
    try:
        u = parse_uri(uri_text.strip().strip("<>"))
    except (ValueError, ParseError):
        return None
    if u is None:
        return None
    gr = u.param("gr")
    if gr is None:
        return None
    if u.user and u.user.startswith("tgruu.") and not gr:
        dec = decode_temp_gruu(u.user[6:])
        if dec is None:
            return (None, "", "")           # matches nothing
        return dec
    return (None, gr, None)


def _find_socket(name: str):
    for si in config.settings.sockets:
        if si.name == name:
            return si
    return None


def lookup(msg, dom, flags: Optional[LookupFlags] = None,
           aor_uri: Optional[str] = None) -> int:
    flags = flags or LookupFlags()
    target = aor_uri if aor_uri is not None else (msg.new_uri or msg.ruri)
    gr = _gruu_of(target)
    try:
        if gr is not None and gr[0] is not None:
            aor = gr[0]                          # a temporary GRUU
        else:
            aor = extract_aor(target)
    except RegError:
        log.LM_ERR("registrar: lookup(): bad AOR")
        return LOOKUP_ERROR
    try:
        with dom.locked(aor):
            rec = dom.get(aor)
    except DBError as e:
        log.LM_ERR(f"registrar: lookup of {aor}: {e}")
        return LOOKUP_ERROR
    if rec is None:
        return LOOKUP_NOT_FOUND
    alive = rec.alive()
    if not alive:
        return LOOKUP_NOT_FOUND
    if gr is not None:
        # RFC 5627 §8.4.1: a GRUU reaches its one instance (a temporary one
        # only while the registration of that Call-ID lasts)
        _, urn, callid = gr
        alive = [c for c in alive if _instance_urn(c.instance) == urn
                 and (callid is None or c.callid == callid)]
        if not alive:
            return LOOKUP_NOT_FOUND
        alive = alive[:1]
    if flags.ua_regex is not None:
        alive = [c for c in alive if flags.ua_regex.search(c.user_agent)]
        if not alive:
            return LOOKUP_NOT_FOUND
    if flags.method_filtering and msg.is_request:
        mid = msg.method_id
        alive = [c for c in alive if c.methods & mid]
        if not alive:
            return LOOKUP_METHOD_UNSUP
    if flags.to_branches_only:
        branches = get_branches(msg)
        for c in alive:
            branches.append(_apply_contact(msg, c, False))
        return LOOKUP_OK
    _apply_contact(msg, alive[0], True)
    if not flags.no_branches:
        branches = get_branches(msg)
        for c in alive[1:]:
            branches.append(_apply_contact(msg, c, False))
    return LOOKUP_OK


# --- is_registered & co ---------------------------------------------------------

def _aor_for_check(msg, aor_uri):
    if aor_uri is not None:
        return extract_aor(aor_uri)
    if msg.is_request and msg.method_id == REGISTER and msg.to is not None:
        return extract_aor(msg.to.uri)
    return extract_aor(msg.new_uri or msg.ruri)


def _read(dom, aor):
    """The record of an AOR; None also when the database fails (logged)."""
    try:
        with dom.locked(aor):
            return dom.get(aor)
    except DBError as e:
        log.LM_ERR(f"registrar: reading {aor}: {e}")
        return None


def is_registered(msg, dom, aor_uri=None) -> int:
    try:
        aor = _aor_for_check(msg, aor_uri)
    except RegError:
        return -1
    rec = _read(dom, aor)
    return 1 if rec is not None and rec.alive() else -1


def is_contact_registered(msg, dom, aor_uri=None, contact=None,
                          callid=None) -> int:
    try:
        aor = _aor_for_check(msg, aor_uri)
    except RegError:
        return -1
    rec = _read(dom, aor)
    if rec is None:
        return -1
    wanted = []
    if contact is not None:
        wanted = [contact]
    elif msg.is_request:
        try:
            wanted = [c.uri for c in msg.contacts if not c.star]
        except ParseError:
            return -1
    for c in rec.alive():
        if callid is not None and c.callid != callid:
            continue
        if not wanted or c.contact in wanted:
            return 1
    return -1


def is_ip_registered(msg, dom, aor_uri=None, ip=None) -> int:
    try:
        aor = _aor_for_check(msg, aor_uri)
    except RegError:
        return -1
    ip = ip if ip is not None else (msg.rcv.src_ip if msg.rcv else None)
    if ip is None:
        return -1
    rec = _read(dom, aor)
    if rec is None:
        return -1
    for c in rec.alive():
        host = c.received or c.contact
        try:
            u = parse_uri(host)
            h = u.host.strip("[]") if u is not None else ""
        except (ValueError, ParseError):
            continue
        if h == ip:
            return 1
    return -1


def remove(msg, dom, aor_uri, contact=None, next_hop=None,
           instance=None) -> int:
    try:
        aor = extract_aor(aor_uri)
    except RegError:
        return -1
    with dom.locked(aor):
        rec = dom.get(aor)
        if rec is None:
            return -1
        keep = []
        for c in rec.contacts:
            hit = True
            if contact is not None and c.contact != contact:
                hit = False
            if instance is not None and c.instance != instance:
                hit = False
            if next_hop is not None and next_hop not in (c.received,
                                                         c.contact):
                hit = False
            if not hit:
                keep.append(c)
        if len(keep) == len(rec.contacts):
            return -1
        dom.put(ul.URecord(aor, keep), rec)
    return 1


def remove_ip_port(msg, ip, port, dom, aor_uri=None) -> int:
    removed = 0
    recs = [dom.get(extract_aor(aor_uri))] if aor_uri else dom.records()
    for rec in recs:
        if rec is None:
            continue
        with dom.locked(rec.aor):
            cur = dom.get(rec.aor)
            if cur is None:
                continue
            keep = []
            for c in cur.contacts:
                try:
                    u = parse_uri(c.received or c.contact)
                except (ValueError, ParseError):
                    keep.append(c)
                    continue
                if u is not None and u.host.strip("[]") == ip and \
                        (u.port or 5060) == port:
                    removed += 1
                else:
                    keep.append(c)
            if len(keep) != len(cur.contacts):
                dom.put(ul.URecord(cur.aor, keep), cur)
    return 1 if removed else -1


def add_sock_hdr(msg, name: str) -> int:
    """Add ``name: proto:ip:port`` naming the socket the request came in
    on (for a registrar behind this one, with save()'s socket-header)."""
    rcv = msg.rcv
    if rcv is None or rcv.socket is None:
        return -1
    try:
        msg.append_hdr(f"{name}: {rcv.socket.name}")
    except ValueError as e:
        log.LM_ERR(f"registrar: add_sock_hdr: {e}")
        return -1
    return 1


def _fixup_hdr_name(name):
    if not re.fullmatch(r"[A-Za-z0-9!%*_.+`'~-]+", str(name)):
        raise ValueError(f"{name!r} is not a header name")
    return str(name)


# --- lifecycle -------------------------------------------------------------------

def mod_init() -> int:
    global ul, sig, _tcp_flag_bit
    if tcp_persistent_flag:
        from opensipy.pvar import msg_flags
        _tcp_flag_bit = msg_flags.bit(tcp_persistent_flag)
    ul = modloader.load_api("usrloc", needed_by="registrar")
    sig = modloader.load_api("signaling", needed_by="registrar")
    if default_expires < 1:
        raise ValueError("default_expires must be at least 1")
    if min_expires < 0 or (max_expires and max_expires < min_expires):
        raise ValueError("min_expires/max_expires are inconsistent")
    if not 0 <= default_q <= 1000:
        raise ValueError("default_q must be in 0..1000 (thousandths)")
    return 0


_ALL_REQ = REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE
_TABLE = CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC, fixup=fixup_domain)

exports = ModuleExports(
    name="registrar",
    deps=DepExport(md=[ModuleDep("usrloc"), ModuleDep("signaling")]),
    cmds=[
        CmdExport("save", save, [
            _TABLE,
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT | CMD_PARAM_STATIC,
                     fixup=fixup_save_flags),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)],
            REQUEST_ROUTE | ONREPLY_ROUTE),
        CmdExport("lookup", lookup, [
            _TABLE,
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT | CMD_PARAM_STATIC,
                     fixup=fixup_lookup_flags),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _ALL_REQ),
        CmdExport("is_registered", is_registered, [
            _TABLE, CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)],
            _ALL_REQ | ONREPLY_ROUTE),
        CmdExport("is_contact_registered", is_contact_registered, [
            _TABLE, CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _ALL_REQ),
        CmdExport("is_ip_registered", is_ip_registered, [
            _TABLE, CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)], _ALL_REQ),
        CmdExport("remove", remove, [
            _TABLE, CmdParam(CMD_PARAM_STR),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT),
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)],
            _ALL_REQ | ONREPLY_ROUTE),
        CmdExport("add_sock_hdr", add_sock_hdr, [
            CmdParam(CMD_PARAM_STR | CMD_PARAM_STATIC,
                     fixup=_fixup_hdr_name)], REQUEST_ROUTE),
        CmdExport("remove_ip_port", remove_ip_port, [
            CmdParam(CMD_PARAM_STR), CmdParam(CMD_PARAM_INT), _TABLE,
            CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT)],
            _ALL_REQ | ONREPLY_ROUTE),
    ],
    params=[
        ParamExport("default_expires", INT_PARAM, "default_expires"),
        ParamExport("min_expires", INT_PARAM, "min_expires"),
        ParamExport("max_expires", INT_PARAM, "max_expires"),
        ParamExport("default_q", INT_PARAM, "default_q"),
        ParamExport("case_sensitive", INT_PARAM, "case_sensitive"),
        ParamExport("max_contacts", INT_PARAM, "max_contacts"),
        ParamExport("allow_dup_cseq", INT_PARAM, "allow_dup_cseq"),
        ParamExport("tcp_persistent_flag", STR_PARAM, "tcp_persistent_flag"),
        ParamExport("received_avp", STR_PARAM, "received_avp"),
        ParamExport("retry_after", INT_PARAM, "retry_after"),
        ParamExport("gruu_secret", STR_PARAM, "gruu_secret"),
        ParamExport("sock_hdr_name", STR_PARAM, "sock_hdr_name"),
        ParamExport("disable_gruu", INT_PARAM, "disable_gruu"),
    ],
    stats=[
        StatExport("accepted_regs", 0, "accepted_regs"),
        StatExport("rejected_regs", 0, "rejected_regs"),
        StatExport("max_expires", STAT_IS_FUNC, lambda: max_expires),
        StatExport("max_contacts", STAT_IS_FUNC,
                   lambda: max_contacts or _max_contacts_seen),
        StatExport("default_expire", STAT_IS_FUNC, lambda: default_expires),
    ],
    init_f=mod_init,
)
