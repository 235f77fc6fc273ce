"""Digest computations (RFC 2617, RFC 7616, RFC 8760) and the parser of a
Digest credentials header, without sockets or shared state.

Algorithms: ``MD5``, ``MD5-sess``, ``SHA-256``, ``SHA-256-sess``,
``SHA-512-256``, ``SHA-512-256-sess``.  For an algorithm ``H``:

* HA1 = H(username ":" realm ":" password); for ``*-sess`` algorithms the
  session key H(HA1 ":" nonce ":" cnonce) replaces it;
* HA2 = H(method ":" uri), or H(method ":" uri ":" H(body)) with
  ``qop=auth-int``;
* response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2) with a qop,
  H(HA1 ":" nonce ":" HA2) without (RFC 2069 compatibility).

Every value is hex, lower case.  Text is hashed as UTF-8.
"""
from __future__ import annotations

import hashlib
import os
import hmac
import re
from typing import Dict, Optional

# name (as written in headers, upper case for matching) -> hashlib name
_HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}

ALGORITHMS = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256",
              "SHA-512-256-sess")
_CANON = {a.upper(): a for a in ALGORITHMS}

QOP_AUTH = 1
QOP_AUTH_INT = 2


class DigestError(ValueError):
    """Credentials that cannot be used: the text says why (a 400)."""


def canonical_algorithm(name: Optional[str]) -> Optional[str]:
    """``"md5-SESS"`` -> ``"MD5-sess"``; None (absent) -> ``"MD5"``;
    an unknown name -> None."""
    if name is None or name == "":
        return "MD5"
    return _CANON.get(name.upper())


def base_hash(algorithm: str) -> str:
    """The hashlib name behind an algorithm (``MD5-sess`` -> ``md5``)."""
    a = algorithm[:-5] if algorithm.endswith("-sess") else algorithm
    return _HASHES[a.upper()]


def hex_len(algorithm: str) -> int:
    """Length of the hex digests of ``algorithm`` (32 or 64)."""
    return 32 if base_hash(algorithm) == "md5" else 64


def H(algorithm: str, data) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return hashlib.new(base_hash(algorithm), data).hexdigest()


def calc_ha1(algorithm: str, username: str, realm: str, password: str,
             nonce: str = "", cnonce: str = "") -> str:
    """HA1 from a plain password (the session key for ``*-sess``)."""
    ha1 = H(algorithm, f"{username}:{realm}:{password}")
    return sess_key(algorithm, ha1, nonce, cnonce)


def sess_key(algorithm: str, ha1: str, nonce: str, cnonce: str) -> str:
    """For ``*-sess`` algorithms the session key made from a stored HA1;
    the HA1 itself otherwise."""
    if algorithm.endswith("-sess"):
        return H(algorithm, f"{ha1}:{nonce}:{cnonce}")
    return ha1


def calc_ha2(algorithm: str, method: str, uri: str, qop: str = "",
             body: bytes = b"") -> str:
    if qop.lower() == "auth-int":
        return H(algorithm, f"{method}:{uri}:{H(algorithm, body)}")
    return H(algorithm, f"{method}:{uri}")


def calc_response(algorithm: str, ha1: str, nonce: str, method: str,
                  uri: str, qop: str = "", nc: str = "", cnonce: str = "",
                  body: bytes = b"") -> str:
    """The expected ``response``; ``ha1`` is already the session key for
    ``*-sess`` algorithms."""
    ha2 = calc_ha2(algorithm, method, uri, qop, body)
    if qop:
        return H(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return H(algorithm, f"{ha1}:{nonce}:{ha2}")


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two hex strings (case-insensitive)."""
    return hmac.compare_digest(a.lower().encode(), b.lower().encode())


# --- the credentials header ------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_WS = " \t\r\n"
_NC = re.compile(r"[0-9A-Fa-f]{8}\Z")
_HEX = re.compile(r"[0-9A-Fa-f]+\Z")
MAX_PARAMS = 32


class DigestCredentials:
    """One parsed Authorization / Proxy-Authorization value."""
    __slots__ = ("params", "algorithm", "qop")

    def __init__(self, params: Dict[str, str], algorithm: str, qop: str):
        self.params = params
        self.algorithm = algorithm     # canonical spelling
        self.qop = qop                 # "", "auth" or "auth-int"

    def __getattr__(self, name):
        if name in ("username", "realm", "nonce", "uri", "response",
                    "cnonce", "nc", "opaque"):
            return self.params.get(name)
        raise AttributeError(name)

    @property
    def user(self) -> str:
        """The username without an ``@domain`` part."""
        return self.params["username"].split("@", 1)[0]

    @property
    def domain(self) -> str:
        """The ``@domain`` part of the username ('' when none)."""
        u = self.params["username"]
        return u.split("@", 1)[1] if "@" in u else ""

    def __repr__(self):
        return f"DigestCredentials({self.params!r})"


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)
_SEP = re.compile(r"[ \t\r\n]*(?:,|\Z)")
_SKIP = re.compile(r"[ \t\r\n]*")


def _parse_params_checked(text: str, pos: int) -> Dict[str, str]:
    """Parameter by parameter, saying precisely what is wrong."""
    out: Dict[str, str] = {}
    n = len(text)
    skip = _SKIP.match
    pos = skip(text, pos).end()
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise DigestError(f"bad character {text[pos]!r} at {pos}")
        name = m.group(0).lower()
        pos = skip(text, m.end()).end()
        if pos >= n or text[pos] != "=":
            raise DigestError(f"parameter {name!r} has no value")
        pos = skip(text, pos + 1).end()
        if pos < n and text[pos] == '"':
            m = _QUOTED.match(text, pos)
            if m is None:
                raise DigestError(f"unterminated quoted value of {name!r}")
            value = m.group(1)
            if "\\" in value:
                value = _UNESCAPE.sub(r"\1", value)
        else:
            m = _TOKEN.match(text, pos)
            if m is None:
                raise DigestError(f"parameter {name!r} has a bad value")
            value = m.group(0)
        if name in out:
            raise DigestError(f"parameter {name!r} given twice")
        out[name] = value
        if len(out) > MAX_PARAMS:
            raise DigestError("too many parameters")
        end = m.end()
        m = _SEP.match(text, end)
        if m is None:
            raise DigestError(f"',' expected at {skip(text, end).end()}")
        pos = skip(text, m.end()).end()
    return out


_PARAM = re.compile(
    r'[ \t\r\n]*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)[ \t\r\n]*=[ \t\r\n]*'
    r'(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9!#$%&\'*+.^_`|~-]+))'
    r'[ \t\r\n]*(?:,[ \t\r\n]*|\Z)', re.S)


def _parse_params(text: str, pos: int) -> Dict[str, str]:
    """One regular expression per parameter; anything it does not take is
    parsed again step by step for the precise error."""
    out: Dict[str, str] = {}
    n = len(text)
    match = _PARAM.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            if not text[pos:].strip(" \t\r\n"):
                break
            rest = _parse_params_checked(text, pos)
            for name in rest:
                if name in out:
                    raise DigestError(f"parameter {name!r} given twice")
            out.update(rest)
            if len(out) > MAX_PARAMS:
                raise DigestError("too many parameters")
            break
        name = m.group(1).lower()
        q = m.group(2)
        if q is None:
            value = m.group(3)
        else:
            value = _UNESCAPE.sub(r"\1", q) if "\\" in q else q
        if name in out:
            raise DigestError(f"parameter {name!r} given twice")
        out[name] = value
        if len(out) > MAX_PARAMS:
            raise DigestError("too many parameters")
        pos = m.end()
    return out


def split_scheme(text: str):
    """``("digest", rest_pos)``: the scheme (lower case) of a credentials
    value and where its parameters start."""
    t = text.lstrip(_WS)
    lead = len(text) - len(t)
    m = _TOKEN.match(t)
    if m is None:
        raise DigestError("no authentication scheme")
    return m.group(0).lower(), lead + m.end()


def parse_credentials(text: str) -> DigestCredentials:
    """Parse and check a Digest credentials value (what OpenSIPS's
    ``parse_credentials`` and ``check_dig_cred`` do); DigestError says what
    is wrong."""
    scheme, pos = split_scheme(text)
    if scheme != "digest":
        raise DigestError(f"scheme {scheme!r} is not Digest")
    if pos < len(text) and text[pos] not in _WS:
        raise DigestError("no space after the scheme")
    p = _parse_params(text, pos)
    for need in ("username", "realm", "nonce", "uri", "response"):
        if need not in p:
            raise DigestError(f"{need} is missing")
    if not p["username"]:
        raise DigestError("username is empty")
    alg = canonical_algorithm(p.get("algorithm"))
    if alg is None:
        raise DigestError(f"unsupported algorithm {p['algorithm']!r}")
    qop = p.get("qop", "")
    if qop:
        ql = qop.lower()
        if ql not in ("auth", "auth-int"):
            raise DigestError(f"unsupported qop {qop!r}")
        qop = ql
        if "cnonce" not in p or not p["cnonce"]:
            raise DigestError("qop without cnonce")
        if "nc" not in p or not _NC.match(p["nc"]):
            raise DigestError("qop without a valid nc (8 hex digits)")
    elif alg.endswith("-sess") and not p.get("cnonce"):
        raise DigestError(f"{alg} without cnonce")
    r = p["response"]
    if len(r) != hex_len(alg) or not _HEX.match(r):
        raise DigestError(f"response is not {hex_len(alg)} hex digits")
    return DigestCredentials(p, alg, qop)


def build_challenge(hf_name: str, realm: str, nonce: str, qop: int,
                    stale: bool, algorithm: Optional[str]) -> str:
    """One ``WWW-Authenticate``/``Proxy-Authenticate`` line (no CRLF)."""
    realm = realm.replace("\\", "\\\\").replace('"', '\\"')
    line = f'{hf_name}: Digest realm="{realm}", nonce="{nonce}"'
    if qop == QOP_AUTH:
        line += ', qop="auth"'
    elif qop == QOP_AUTH_INT:
        line += ', qop="auth-int"'
    elif qop == QOP_AUTH | QOP_AUTH_INT:
        line += ', qop="auth,auth-int"'
    if stale:
        line += ", stale=true"
    if algorithm:
        line += f", algorithm={algorithm}"
    return line


def parse_qop(text) -> int:
    """``"auth"``, ``"auth-int"``, ``"auth,auth-int"`` -> QOP_* bits; ''
    or None -> 0.  The old 1/0 of OpenSIPS 2.x mean auth / none."""
    if text is None:
        return 0
    t = str(text).strip()
    if t in ("", "0"):
        return 0
    if t == "1":
        return QOP_AUTH
    bits = 0
    for part in t.split(","):
        p = part.strip().lower()
        if p == "auth":
            bits |= QOP_AUTH
        elif p == "auth-int":
            bits |= QOP_AUTH_INT
        else:
            raise ValueError(f"bad qop {part.strip()!r} (auth, auth-int)")
    return bits


def parse_algorithms(text) -> list:
    """``"MD5,SHA-256"`` -> ``["MD5", "SHA-256"]`` (order kept, the
    preferred first as RFC 8760 asks); '' or None -> ``["MD5"]``."""
    if text is None or not str(text).strip():
        return ["MD5"]
    out = []
    for part in str(text).split(","):
        a = canonical_algorithm(part.strip())
        if a is None or not part.strip():
            raise ValueError(f"unsupported algorithm {part.strip()!r} "
                             f"({', '.join(ALGORITHMS)})")
        if a not in out:
            out.append(a)
    return out


# --- the client side (uac_auth): challenges in, credentials out -------------------

class DigestChallenge:
    """One parsed ``WWW-Authenticate``/``Proxy-Authenticate`` Digest value:
    ``realm``, ``nonce``, ``opaque`` (None when absent), ``algorithm``
    (canonical, or None when the server named one we do not know;
    ``algorithm_raw`` keeps what it wrote), ``qops`` (the offered qop
    values, lower case), ``stale``."""
    __slots__ = ("realm", "nonce", "opaque", "algorithm", "algorithm_raw",
                 "qops", "stale")

    def __init__(self, realm, nonce, opaque, algorithm, algorithm_raw, qops,
                 stale):
        self.realm = realm
        self.nonce = nonce
        self.opaque = opaque
        self.algorithm = algorithm
        self.algorithm_raw = algorithm_raw
        self.qops = qops
        self.stale = stale

    def pick_qop(self) -> str:
        """``auth`` when offered (preferred, as OpenSIPS), else
        ``auth-int``, else '' (RFC 2069 form)."""
        if "auth" in self.qops:
            return "auth"
        if "auth-int" in self.qops:
            return "auth-int"
        return ""

    def __repr__(self):
        return (f"DigestChallenge(realm={self.realm!r}, "
                f"algorithm={self.algorithm_raw!r}, qops={self.qops!r})")


def parse_challenge(text: str) -> DigestChallenge:
    """Parse a Digest challenge value; DigestError says what is unusable
    (another scheme, no realm, no nonce, a bad parameter list).  An
    algorithm we do not know is not an error here: ``algorithm`` is None
    and the caller decides."""
    scheme, pos = split_scheme(text)
    if scheme != "digest":
        raise DigestError(f"scheme {scheme!r} is not Digest")
    p = _parse_params(text, pos)
    for need in ("realm", "nonce"):
        if need not in p:
            raise DigestError(f"{need} is missing")
    if not p["nonce"]:
        raise DigestError("nonce is empty")
    raw = p.get("algorithm")
    qops = tuple(q.strip().lower() for q in p.get("qop", "").split(",")
                 if q.strip())
    return DigestChallenge(p["realm"], p["nonce"], p.get("opaque"),
                           canonical_algorithm(raw), raw or "MD5", qops,
                           p.get("stale", "").lower() == "true")


def make_cnonce() -> str:
    """A fresh client nonce (16 hex digits from the OS's random source)."""
    return os.urandom(8).hex()


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def build_credentials(hf_name: str, ch: DigestChallenge, username: str,
                      ha1: str, method: str, uri: str, body: bytes = b"",
                      cnonce: Optional[str] = None, nc: int = 1) -> str:
    """One ``Authorization``/``Proxy-Authorization`` line (no CRLF)
    answering ``ch``: ``ha1`` is H(username:realm:password) of the
    challenge's algorithm (the session key is made here for ``*-sess``);
    with a qop, ``cnonce`` (made when None) and ``nc`` are used."""
    alg = ch.algorithm
    if alg is None:
        raise DigestError(f"unsupported algorithm {ch.algorithm_raw!r}")
    if len(ha1) != hex_len(alg) or not _HEX.match(ha1):
        raise DigestError(f"HA1 is not {hex_len(alg)} hex digits for {alg}")
    qop = ch.pick_qop()
    ncs = ""
    if qop or alg.endswith("-sess"):
        if cnonce is None:
            cnonce = make_cnonce()
        ncs = f"{nc:08x}"
    else:
        cnonce = ""
    key = sess_key(alg, ha1.lower(), ch.nonce, cnonce)
    resp = calc_response(alg, key, ch.nonce, method, uri, qop,
                         ncs if qop else "", cnonce if qop else "", body)
    line = (f'{hf_name}: Digest username="{_quote(username)}", '
            f'realm="{_quote(ch.realm)}", nonce="{_quote(ch.nonce)}", '
            f'uri="{_quote(uri)}"')
    if ch.opaque is not None:
        line += f', opaque="{_quote(ch.opaque)}"'
    if qop:
        line += f', qop={qop}, nc={ncs}, cnonce="{cnonce}"'
    elif alg.endswith("-sess"):
        line += f', cnonce="{cnonce}"'
    line += f', response="{resp}", algorithm={alg}'
    return line
