"""auth: digest challenges and the checks every authentication backend
shares (OpenSIPS's auth module).

``www_challenge(realm[, qop[, algorithms]])`` / ``proxy_challenge(...)``
answer 401/407 through the signaling module (statefully once the request has
a transaction) with one ``WWW-Authenticate``/``Proxy-Authenticate`` per
algorithm; ``pv_www_authorize(realm)`` / ``pv_proxy_authorize(realm)`` check
the credentials against the user and password held by ``username_spec`` /
``password_spec``; ``consume_credentials()`` removes the checked header;
``is_rpid_user_e164()`` and ``append_rpid_hf()`` use the RPID a backend
loaded into ``rpid_avp``.

Return codes of the authorize functions (OpenSIPS's ``auth_result_t``): 1
authorized; -1 unknown user; -2 wrong password; -3 stale nonce (expired,
used already, or not made by this server: the next challenge says
``stale=true``); -4 no credentials for the realm; -5 an error, no reply
sent; 0 malformed credentials: a 400 was sent and the script stops.

Other modules (auth_db) bind :class:`AuthApi` with
``modloader.load_api("auth")``.
"""
from __future__ import annotations

import os
import re
import time
from typing import Optional, Tuple

from opensipy import log, modloader
from opensipy.parser import METHODS, ParseError, parse_uri
from opensipy.pvar import PVError, parse_pv
from opensipy.sr_module import (BRANCH_ROUTE, CMD_PARAM_OPT, CMD_PARAM_STR,
                                FAILURE_ROUTE, INT_PARAM, REQUEST_ROUTE,
                                STR_PARAM, CmdExport, CmdParam, DepExport,
                                ModuleDep, ModuleExports, ParamExport,
                                StatExport)

from . import digest, nonce as nonce_mod
from .digest import DigestError

# --- parameters (OpenSIPS names) --------------------------------------------------
secret = ""
nonce_expire = 30
rpid_prefix = ""
rpid_suffix = ";party=calling;id-type=subscriber;screen=yes"
realm_prefix = ""
rpid_avp = "$avp(rpid)"
username_spec = ""
password_spec = ""
calculate_ha1 = 0
disable_nonce_check = 0

# --- statistics (opensipy additions, see README) ---------------------------------
st_challenges = st_authorized = st_unknown_users = None
st_invalid_passwords = st_stale_nonces = st_invalid_nonces = None
st_bad_credentials = None

# --- auth_result_t ----------------------------------------------------------------
AUTH_ERROR = -5          # an error, no reply sent
NO_CREDENTIALS = -4
STALE_NONCE = -3
INVALID_PASSWORD = -2
USER_UNKNOWN = -1
ERROR = 0                # a reply (400/500) was sent: stop the script
AUTHORIZED = 1
DO_AUTHORIZATION = 2     # pre_auth only: go on and check the response

HDR_AUTHORIZATION = "Authorization"
HDR_PROXY_AUTHORIZATION = "Proxy-Authorization"

_ACK = METHODS["METHOD_ACK"]
_CANCEL = METHODS["METHOD_CANCEL"]
_REGISTER = METHODS["METHOD_REGISTER"]

_secret: bytes = b""
_index: Optional[nonce_mod.NonceIndex] = None
_rpid_spec = None
_user_spec = None
_pass_spec = None
sig = None


def _inc(stat) -> None:
    if stat is not None:
        stat.inc()


# --- realm, credentials ---------------------------------------------------------

def strip_realm(realm: str) -> str:
    if realm_prefix and realm.startswith(realm_prefix):
        return realm[len(realm_prefix):]
    return realm


def get_realm(msg, hf_name: str) -> Optional[str]:
    """The realm made from the request: the To host of a REGISTER
    answered with 401, the From host otherwise (OpenSIPS's get_realm)."""
    hdr = msg.to if (hf_name == HDR_AUTHORIZATION
                     and msg.method_id == _REGISTER) else msg.from_
    if hdr is None:
        return None
    try:
        u = hdr.parsed_uri
    except (ParseError, ValueError):
        return None
    if u is None or not u.host:
        return None
    return strip_realm(u.host)


def _cred_headers(msg, hf_name: str):
    low = hf_name.lower()
    return [h for h in msg.headers if h.name.lower() == low]


class AuthState:
    """What authorizing left on the message: the credentials, which of the
    headers of that name held them (``hdr``, an index) and whether the
    nonce was stale (for the next challenge)."""
    __slots__ = ("cred", "hdr", "stale", "authorized")

    def __init__(self, cred=None, hdr=None):
        self.cred = cred
        self.hdr = hdr
        self.stale = False
        self.authorized = False


def _state(msg, hf_name: str) -> AuthState:
    states = getattr(msg, "auth_state", None)
    if states is None:
        states = msg.auth_state = {}
    st = states.get(hf_name)
    if st is None:
        st = states[hf_name] = AuthState()
    return st


def _send(msg, code: int, reason: str, headers=()) -> int:
    if sig is None:
        log.LM_ERR("auth: the signaling API is not bound")
        return -1
    return sig.reply(msg, code, reason, list(headers))


def pre_auth(msg, realm: str, hf_name: str) -> Tuple[int, object]:
    """Find the credentials of ``realm`` in the ``hf_name`` headers, check
    their form and their nonce.  Returns (result, DigestCredentials|None):
    AUTHORIZED for ACK/CANCEL, NO_CREDENTIALS, ERROR (a 400 was sent),
    STALE_NONCE, or DO_AUTHORIZATION."""
    mid = msg.method_id
    if mid == _ACK or mid == _CANCEL:
        return AUTHORIZED, None
    if not realm:
        realm = get_realm(msg, hf_name)
        if realm is None:
            log.LM_ERR("auth: cannot make the realm from the request")
            _inc(st_bad_credentials)
            _send(msg, 400, "Bad Request")
            return ERROR, None
    found = None
    for k, body in enumerate(msg.hdrs(hf_name) or ()):
        try:
            scheme, _ = digest.split_scheme(body)
            if scheme != "digest":
                continue          # another scheme: not ours to judge
            cred = digest.parse_credentials(body)
        except DigestError as e:
            log.LM_INFO(f"auth: malformed {hf_name} header from "
                        f"{_source(msg)}: {e}")
            _inc(st_bad_credentials)
            _send(msg, 400, "Bad Request")
            return ERROR, None
        if cred.realm.lower() == realm.lower():
            found = (cred, k)
            break
    if found is None:
        return NO_CREDENTIALS, None
    cred, k = found
    st = _state(msg, hf_name)
    st.cred, st.hdr = cred, k
    rc = nonce_mod.check_nonce(_secret, cred.nonce)
    if rc != nonce_mod.NONCE_OK:
        st.stale = True
        if rc == nonce_mod.NONCE_EXPIRED:
            _inc(st_stale_nonces)
        else:
            log.LM_DBG(f"auth: nonce not ours from {_source(msg)}")
            _inc(st_invalid_nonces)
        return STALE_NONCE, cred
    return DO_AUTHORIZATION, cred


def post_auth(msg, cred, hf_name: str) -> int:
    """After a good response: the nonce is spent (replay protection);
    AUTHORIZED or STALE_NONCE."""
    if msg.method_id in (_ACK, _CANCEL):
        return AUTHORIZED
    st = _state(msg, hf_name)
    if not disable_nonce_check and _index is not None:
        parsed = nonce_mod.parse_nonce(cred.nonce)
        if parsed is None or not _index.use(parsed[1]):
            st.stale = True
            _inc(st_stale_nonces)
            return STALE_NONCE
    st.authorized = True
    _inc(st_authorized)
    return AUTHORIZED


def check_response(cred, method: str, body: bytes, ha1: str) -> bool:
    """True when the credentials' response is the one ``ha1`` gives
    (``ha1``: the stored HA1 of the credentials' algorithm; the session key
    is made here for ``*-sess``)."""
    alg = cred.algorithm
    if len(ha1) != digest.hex_len(alg):
        return False
    key = digest.sess_key(alg, ha1.lower(), cred.nonce, cred.cnonce or "")
    expected = digest.calc_response(alg, key, cred.nonce, method, cred.uri,
                                    cred.qop, cred.nc or "",
                                    cred.cnonce or "", body or b"")
    return digest.same(expected, cred.response)


def calc_HA1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 of a plain password (not the session key)."""
    return digest.H(algorithm, f"{username}:{realm}:{password}")


def authorize(msg, realm: str, hf_name: str, get_ha1) -> int:
    """The whole check, for this module and the backends: pre_auth, the
    backend's ``get_ha1(msg, cred, realm) -> str | None`` (None: unknown
    user, or an int: that result), the response, post_auth."""
    if not realm:
        realm = get_realm(msg, hf_name) or ""
    rc, cred = pre_auth(msg, realm, hf_name)
    if rc != DO_AUTHORIZATION:
        return rc
    ha1 = get_ha1(msg, cred, realm or cred.realm)
    if ha1 is None:
        _inc(st_unknown_users)
        return USER_UNKNOWN
    if isinstance(ha1, int):
        return ha1
    if not check_response(cred, msg.method, msg.body or b"", ha1):
        log.LM_DBG(f"auth: wrong response for {cred.username} from "
                   f"{_source(msg)}")
        _inc(st_invalid_passwords)
        return INVALID_PASSWORD
    return post_auth(msg, cred, hf_name)


def _source(msg) -> str:
    r = getattr(msg, "rcv", None)
    return f"{r.src_ip}:{r.src_port}" if r is not None else "?"


# --- challenges ---------------------------------------------------------------------

def new_nonce() -> str:
    seq = _index.reserve() if (_index is not None and
                               not disable_nonce_check) else 0
    return nonce_mod.make_nonce(_secret, int(time.time()) + nonce_expire, seq)


def challenge(msg, realm: str, qop: int, algorithms, code: int,
              reason: str, hf_name: str, cred_hf: str) -> int:
    if not realm:
        realm = get_realm(msg, cred_hf)
        if realm is None:
            log.LM_ERR("auth: cannot make the realm from the request")
            if _send(msg, 400, "Bad Request") < 0:
                return -1
            return 0
    states = getattr(msg, "auth_state", None) or {}
    st = states.get(cred_hf)
    stale = bool(st is not None and st.stale)
    nonce = new_nonce()
    lines = [digest.build_challenge(hf_name, realm, nonce, qop, stale, alg)
             for alg in (algorithms or ["MD5"])]
    # queued as reply headers (OpenSIPS's add_lump_rpl), so whichever of
    # sl or tm sends the reply carries them
    hdrs = getattr(msg, "reply_hdrs", None)
    if hdrs is None:
        hdrs = msg.reply_hdrs = []
    hdrs.extend(line + "\r\n" for line in lines)
    _inc(st_challenges)          # before the send: a test may ask at once
    if _send(msg, code, reason) < 0:
        log.LM_ERR("auth: failed to send the challenge")
        return -1
    return 0


def fixup_qop(value):
    return digest.parse_qop(value)


def fixup_algorithms(value):
    return digest.parse_algorithms(value)


def www_challenge(msg, realm, qop=None, algorithms=None) -> int:
    return challenge(msg, realm, qop or 0, algorithms, 401, "Unauthorized",
                     "WWW-Authenticate", HDR_AUTHORIZATION)


def proxy_challenge(msg, realm, qop=None, algorithms=None) -> int:
    return challenge(msg, realm, qop or 0, algorithms, 407,
                     "Proxy Authentication Required", "Proxy-Authenticate",
                     HDR_PROXY_AUTHORIZATION)


def consume_credentials(msg) -> int:
    """Remove the credentials the authorize functions accepted."""
    states = getattr(msg, "auth_state", None) or {}
    for hf in (HDR_AUTHORIZATION, HDR_PROXY_AUTHORIZATION):
        st = states.get(hf)
        if st is not None and st.authorized and st.hdr is not None:
            h = _cred_headers(msg, hf)[st.hdr]
            try:
                msg.delete(h.start, h.end - h.start)
            except ValueError as e:
                log.LM_ERR(f"consume_credentials: cannot remove the "
                           f"credentials: {e}")
                return -1
            st.hdr = None
            return 1
    if msg.method_id not in (_ACK, _CANCEL):
        log.LM_ERR("consume_credentials: no authorized credentials found "
                   "(error in scripts)")
    return -1


# --- pv_*_authorize -----------------------------------------------------------------

def _pv_ha1(msg, cred, realm):
    if _user_spec is None or _pass_spec is None:
        log.LM_ERR("pv_authorize: username_spec and password_spec must be "
                   "set")
        return AUTH_ERROR
    user = _user_spec.get(msg)
    if user is None or user == "" or str(user).lower() != cred.user.lower():
        return None
    pw = _pass_spec.get(msg)
    if pw is None:
        return None
    pw = str(pw)
    if calculate_ha1:
        return calc_HA1(cred.algorithm, cred.username, realm, pw)
    return pw


def pv_www_authorize(msg, realm) -> int:
    return authorize(msg, realm, HDR_AUTHORIZATION, _pv_ha1)


def pv_proxy_authorize(msg, realm) -> int:
    return authorize(msg, realm, HDR_PROXY_AUTHORIZATION, _pv_ha1)


# --- RPID -------------------------------------------------------------------------

_E164 = re.compile(r"\+\d{1,15}\Z")


def _rpid(msg) -> Optional[str]:
    if _rpid_spec is None:
        return None
    v = _rpid_spec.get(msg)
    if v is None or v == "":
        return None
    return str(v)


def is_rpid_user_e164(msg) -> int:
    v = _rpid(msg)
    if v is None:
        log.LM_DBG("is_rpid_user_e164: no RPID")
        return -1
    user = v
    m = re.search(r"<?(sips?|tel):([^>]*)", v, re.I)
    if m:
        try:
            u = parse_uri(m.group(1) + ":" + m.group(2))
            user = u.user or ""
        except (ParseError, ValueError):
            return -1
    return 1 if _E164.match(user) else -1


def append_rpid_hf(msg, prefix=None, suffix=None) -> int:
    v = _rpid(msg)
    if v is None:
        log.LM_DBG("append_rpid_hf: no RPID")
        return -1
    if prefix is None and suffix is None:
        prefix, suffix = rpid_prefix, rpid_suffix
    try:
        msg.append_hdr(f"Remote-Party-ID: {prefix or ''}{v}{suffix or ''}")
    except ValueError as e:
        log.LM_ERR(f"append_rpid_hf: {e}")
        return -1
    return 1


# --- API ----------------------------------------------------------------------------

class AuthApi:
    """``load_api("auth")`` (OpenSIPS's ``auth_api_t``), with the
    ``auth_result_t`` codes as attributes."""
    AUTH_ERROR = AUTH_ERROR
    NO_CREDENTIALS = NO_CREDENTIALS
    STALE_NONCE = STALE_NONCE
    INVALID_PASSWORD = INVALID_PASSWORD
    USER_UNKNOWN = USER_UNKNOWN
    ERROR = ERROR
    AUTHORIZED = AUTHORIZED
    pre_auth = staticmethod(pre_auth)
    post_auth = staticmethod(post_auth)
    check_response = staticmethod(check_response)
    calc_HA1 = staticmethod(calc_HA1)
    authorize = staticmethod(authorize)
    get_realm = staticmethod(get_realm)

    @property
    def rpid_avp(self):
        return _rpid_spec


def load_api() -> AuthApi:
    return AuthApi()


# --- lifecycle ----------------------------------------------------------------------

def _spec(text: str, what: str):
    try:
        spec = parse_pv(text, modloader.registry)
    except PVError as e:
        raise ValueError(f"{what} {text!r}: {e}") from None
    return spec


def mod_init() -> int:
    global _secret, _index, _rpid_spec, _user_spec, _pass_spec, sig
    sig = modloader.load_api("signaling", needed_by="auth")
    if nonce_expire <= 0:
        raise ValueError(f"nonce_expire must be positive (got "
                         f"{nonce_expire})")
    _secret = secret.encode() if secret else os.urandom(32)
    if not disable_nonce_check:
        _index = nonce_mod.NonceIndex()
    _rpid_spec = _spec(rpid_avp, "rpid_avp") if rpid_avp else None
    _user_spec = _spec(username_spec, "username_spec") \
        if username_spec else None
    _pass_spec = _spec(password_spec, "password_spec") \
        if password_spec else None
    return 0


_REALM = CmdParam(CMD_PARAM_STR)
_QOP = CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT, fixup=fixup_qop)
_ALGS = CmdParam(CMD_PARAM_STR | CMD_PARAM_OPT, fixup=fixup_algorithms)
_RPID_ROUTES = REQUEST_ROUTE | FAILURE_ROUTE | BRANCH_ROUTE

exports = ModuleExports(
    name="auth",
    deps=DepExport(md=[ModuleDep("signaling")]),
    cmds=[
        CmdExport("www_challenge", www_challenge, [_REALM, _QOP, _ALGS],
                  REQUEST_ROUTE),
        CmdExport("proxy_challenge", proxy_challenge, [_REALM, _QOP, _ALGS],
                  REQUEST_ROUTE),
        CmdExport("consume_credentials", consume_credentials, [],
                  REQUEST_ROUTE),
        CmdExport("is_rpid_user_e164", is_rpid_user_e164, [], REQUEST_ROUTE),
        CmdExport("append_rpid_hf", append_rpid_hf, [], _RPID_ROUTES),
        CmdExport("append_rpid_hf", append_rpid_hf,
                  [CmdParam(CMD_PARAM_STR), CmdParam(CMD_PARAM_STR)],
                  _RPID_ROUTES),
        CmdExport("pv_www_authorize", pv_www_authorize, [_REALM],
                  REQUEST_ROUTE),
        CmdExport("pv_proxy_authorize", pv_proxy_authorize, [_REALM],
                  REQUEST_ROUTE),
    ],
    params=[
        ParamExport("secret", STR_PARAM, "secret"),
        ParamExport("nonce_expire", INT_PARAM, "nonce_expire"),
        ParamExport("rpid_prefix", STR_PARAM, "rpid_prefix"),
        ParamExport("rpid_suffix", STR_PARAM, "rpid_suffix"),
        ParamExport("realm_prefix", STR_PARAM, "realm_prefix"),
        ParamExport("rpid_avp", STR_PARAM, "rpid_avp"),
        ParamExport("username_spec", STR_PARAM, "username_spec"),
        ParamExport("password_spec", STR_PARAM, "password_spec"),
        ParamExport("calculate_ha1", INT_PARAM, "calculate_ha1"),
        ParamExport("disable_nonce_check", INT_PARAM, "disable_nonce_check"),
    ],
    stats=[
        StatExport("challenges", 0, "st_challenges"),
        StatExport("authorized", 0, "st_authorized"),
        StatExport("unknown_users", 0, "st_unknown_users"),
        StatExport("invalid_passwords", 0, "st_invalid_passwords"),
        StatExport("stale_nonces", 0, "st_stale_nonces"),
        StatExport("invalid_nonces", 0, "st_invalid_nonces"),
        StatExport("bad_credentials", 0, "st_bad_credentials"),
    ],
    init_f=mod_init,
)
