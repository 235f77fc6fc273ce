"""uac_auth: the credentials a proxy answers digest challenges with, and the
API that builds the answer (OpenSIPS's uac_auth module).

Credentials come from ``credential`` module parameters
(``user:realm:password``, the password being either plain text or ``0x``
followed by the HA1 in hex) and, looked at first, from the AVPs named by
``auth_realm_avp`` / ``auth_username_avp`` / ``auth_password_avp`` (the
realm AVP must equal the challenge's realm).

Other modules (uac) bind :class:`UacAuthApi` with
``modloader.load_api("uac_auth")``.  The digest maths are the auth module's
(``opensipy_modules.auth.digest``).
"""
from __future__ import annotations

import re
from typing import List, Optional

from opensipy import log, modloader
from opensipy.pvar import PVError, parse_pv
from opensipy.sr_module import (STR_PARAM, USE_FUNC_PARAM, ModuleExports,
                                ParamExport)

from opensipy_modules.auth import digest
from opensipy_modules.auth.digest import DigestError

# --- parameters (OpenSIPS names) --------------------------------------------------
auth_realm_avp = ""
auth_username_avp = ""
auth_password_avp = ""

_HA1 = re.compile(r"0x([0-9a-fA-F]{32}|[0-9a-fA-F]{64})\Z")


class Credential:
    """One set of credentials: ``user``, ``realm`` and either ``password``
    or ``ha1`` (hex, for the algorithm family of its length)."""
    __slots__ = ("user", "realm", "password", "ha1")

    def __init__(self, user: str, realm: str, secret: str):
        self.user = user
        self.realm = realm
        m = _HA1.match(secret)
        if m:
            self.password, self.ha1 = None, m.group(1).lower()
        else:
            self.password, self.ha1 = secret, None

    def ha1_for(self, algorithm: str) -> str:
        """H(user:realm:password) for ``algorithm``; DigestError when only
        an HA1 of another hash is known."""
        if self.ha1 is None:
            return digest.calc_ha1(algorithm, self.user, self.realm,
                                   self.password)
        if len(self.ha1) != digest.hex_len(algorithm):
            raise DigestError(f"the HA1 given for {self.user}@{self.realm} "
                              f"is {len(self.ha1)} hex digits: not usable "
                              f"with {algorithm}")
        if algorithm.startswith("SHA-512") and len(self.ha1) == 64:
            # a 64-digit HA1 cannot say which hash made it: SHA-256 is
            # assumed (the common case), SHA-512-256 needs a password
            raise DigestError(f"a stored HA1 is taken as SHA-256; "
                              f"{algorithm} needs the plain password")
        return self.ha1

    def __repr__(self):
        return f"Credential({self.user!r}@{self.realm!r})"


_credentials: List[Credential] = []
_realm_spec = _user_spec = _pass_spec = None


def parse_credential(value: str) -> Credential:
    """``user:realm:password`` (spaces around the parts ignored, none
    inside them); ValueError says what is wrong."""
    text = str(value).strip()
    parts = [p.strip() for p in text.split(":", 2)]
    if len(parts) != 3:
        raise ValueError(f"credential {value!r} is not user:realm:password")
    user, realm, secret = parts
    for name, v in (("user", user), ("realm", realm), ("password", secret)):
        if not v:
            raise ValueError(f"credential {value!r}: the {name} is empty")
        if any(c.isspace() for c in v):
            raise ValueError(f"credential {value!r}: the {name} holds "
                             f"whitespace")
    if secret.startswith("0x") and not _HA1.match(secret):
        log.LM_WARN(f"uac_auth: the password of {user}@{realm} starts with "
                    f"0x but is not 32 or 64 hex digits: used as plain text")
    return Credential(user, realm, secret)


def add_credential(value) -> int:
    """``credential`` (USE_FUNC_PARAM): may be set many times."""
    _credentials.append(parse_credential(value))
    return 0


def _avp_text(spec, msg) -> Optional[str]:
    try:
        v = spec.get(msg)
    except Exception:            # noqa: BLE001 - a variable that cannot be read
        return None
    if v is None or isinstance(v, int):
        return None
    v = str(v)
    return v or None


def lookup_realm(msg, realm: str) -> Optional[Credential]:
    """The credentials for ``realm``: the AVPs first (when their realm
    matches), then the ``credential`` parameters (realm compared exactly,
    as OpenSIPS)."""
    if _realm_spec is not None and msg is not None:
        r = _avp_text(_realm_spec, msg)
        if r is not None and r == realm:
            u = _avp_text(_user_spec, msg)
            p = _avp_text(_pass_spec, msg)
            if u is not None and p is not None:
                return Credential(u, r, p)
            log.LM_DBG(f"uac_auth: realm AVP {realm!r} set but the username "
                       f"or password AVP is empty")
    for c in _credentials:
        if c.realm == realm:
            return c
    return None


def build_authorization_hdr(code: int, ch, crd: Credential, method: str,
                            uri: str, body: bytes = b"") -> str:
    """The ``Authorization`` (401) / ``Proxy-Authorization`` (407) line
    answering the challenge ``ch`` with ``crd``; DigestError when it
    cannot be made."""
    name = "Authorization" if code == 401 else "Proxy-Authorization"
    return digest.build_credentials(name, ch, crd.user,
                                    crd.ha1_for(ch.algorithm), method, uri,
                                    body)


class UacAuthApi:
    """``load_api("uac_auth")`` (OpenSIPS's ``uac_auth_api_t``)."""
    lookup_realm = staticmethod(lookup_realm)
    build_authorization_hdr = staticmethod(build_authorization_hdr)
    parse_challenge = staticmethod(digest.parse_challenge)
    DigestError = DigestError

    @staticmethod
    def has_credentials() -> bool:
        return bool(_credentials) or _realm_spec is not None


def load_api() -> UacAuthApi:
    return UacAuthApi()


def _spec(text: str, what: str):
    try:
        spec = parse_pv(text, modloader.registry)
    except PVError as e:
        raise ValueError(f"{what} {text!r}: {e}") from None
    if not spec.writable:
        raise ValueError(f"{what} {text!r} is not a variable that can "
                         f"hold a value")
    return spec


def mod_init() -> int:
    global _realm_spec, _user_spec, _pass_spec
    given = [n for n in ("auth_realm_avp", "auth_username_avp",
                         "auth_password_avp") if globals()[n]]
    if given and len(given) != 3:
        missing = sorted({"auth_realm_avp", "auth_username_avp",
                          "auth_password_avp"} - set(given))
        raise ValueError(f"partial definition of the auth AVPs: "
                         f"{', '.join(missing)} not set")
    if given:
        _realm_spec = _spec(auth_realm_avp, "auth_realm_avp")
        _user_spec = _spec(auth_username_avp, "auth_username_avp")
        _pass_spec = _spec(auth_password_avp, "auth_password_avp")
    return 0


exports = ModuleExports(
    name="uac_auth",
    params=[
        ParamExport("credential", STR_PARAM | USE_FUNC_PARAM,
                    add_credential),
        ParamExport("auth_realm_avp", STR_PARAM, "auth_realm_avp"),
        ParamExport("auth_username_avp", STR_PARAM, "auth_username_avp"),
        ParamExport("auth_password_avp", STR_PARAM, "auth_password_avp"),
    ],
    init_f=mod_init,
)
