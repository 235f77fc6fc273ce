"""A UAS on 127.0.0.1 that challenges the first INVITE/REGISTER of a call
with 401 or 407 (MD5 or SHA-256, with or without qop=auth) and checks the
retried request: the digest response recomputed here with hashlib (not
with the project's digest module), the nonce/realm/opaque echoed, the uri
the Request-URI, cnonce and nc present exactly when a qop was offered,
the CSeq one more than the challenged one (with ``second_realm``, a valid
answer is challenged again with a 407 of that realm, and the third request
must carry both answers and a CSeq two more).  A good answer gets 200 (the
INVITE's with a To-tag, Contact and the Record-Route set), a bad one 403
whose reason says what was wrong.  Every request is recorded."""
from __future__ import annotations

import hashlib
import os
import re
import socket
import threading

_PARAM = re.compile(r'([A-Za-z0-9-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_HASH = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def _h(alg, text):
    return _HASH[alg](text.encode()).hexdigest()


def _headers(raw: str):
    head = raw.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    out = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        out.append((name.strip(), value.strip()))
    return lines[0], out


def _get(hdrs, name, short=None):
    for n, v in hdrs:
        if n.lower() in (name.lower(), (short or "").lower()):
            return v
    return None


def _all(hdrs, name, short=None):
    return [(n, v) for n, v in hdrs
            if n.lower() in (name.lower(), (short or "").lower())]


class Challenger:
    def __init__(self, user, password, realm="example.com", code=407,
                 algorithm="MD5", qop=True, challenge=True, bare=False,
                 second_realm=None):
        self.user, self.password, self.realm = user, password, realm
        self.challenge = challenge      # False: every request gets 200
        self.bare = bare                # True: the 401/407 has no challenge
        self.second_realm = second_realm    # then a 407 for this realm too
        self.code, self.algorithm, self.qop = code, algorithm, qop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = []          # (method, cseq, headers dict-ish, raw)
        self.results = []           # ("ok"|reason, method)
        self.replies = []           # replies to what we sent (send_bye)
        self._calls = {}            # Call-ID -> (nonce, opaque, cseq)
        self._totag = {}            # Call-ID -> our To of the 200
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()

    def set(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)

    # ------------------------------------------------------------------
    def _run(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            raw = data.decode("utf-8", "replace")
            if raw.startswith("SIP/2.0"):
                self.replies.append(raw)
                continue
            try:
                self._request(raw, addr)
            except Exception as e:          # noqa: BLE001 - keep serving
                self.results.append((f"uas error {e!r}", "?"))

    def send_bye(self, proxy_port):
        """Hang up the last call answered 200 as the callee: a BYE through
        the proxy along the Record-Route set, From/To swapped as the callee
        sees them."""
        inv = [r for r in self.requests if r["method"] == "INVITE"][-1]
        first, hdrs = _headers(inv["raw"])
        routes = [v for n, v in _all(hdrs, "Record-Route")]
        contact = _get(hdrs, "Contact", "m").strip("<>")
        lines = [f"BYE {contact} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKb"
                 + os.urandom(4).hex()]
        lines += [f"Route: {r}" for r in routes]
        lines += [f"From: {self._totag[_get(hdrs, 'Call-ID', 'i')]}",
                  f"To: {_get(hdrs, 'From', 'f')}",
                  f"Call-ID: {_get(hdrs, 'Call-ID', 'i')}",
                  "CSeq: 1 BYE", "Max-Forwards: 70", "Content-Length: 0"]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(),
                         ("127.0.0.1", proxy_port))

    def _reply(self, addr, hdrs, code, reason, extra=(), totag=False,
               rr=False):
        lines = [f"SIP/2.0 {code} {reason}"]
        for n, v in _all(hdrs, "Via", "v"):
            lines.append(f"Via: {v}")
        lines.append(f"From: {_get(hdrs, 'From', 'f')}")
        to = _get(hdrs, "To", "t")
        if totag and ";tag=" not in to:
            to += ";tag=uas" + os.urandom(3).hex()
        if code == 200:
            self._totag[_get(hdrs, "Call-ID", "i")] = to
        lines.append(f"To: {to}")
        lines.append(f"Call-ID: {_get(hdrs, 'Call-ID', 'i')}")
        lines.append(f"CSeq: {_get(hdrs, 'CSeq')}")
        if rr:
            for n, v in _all(hdrs, "Record-Route"):
                lines.append(f"Record-Route: {v}")
        lines.extend(extra)
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)

    def _request(self, raw, addr):
        first, hdrs = _headers(raw)
        method, ruri = first.split(" ")[0], first.split(" ")[1]
        cseq = int(_get(hdrs, "CSeq").split()[0])
        callid = _get(hdrs, "Call-ID", "i")
        self.requests.append({"method": method, "cseq": cseq,
                              "from": _get(hdrs, "From", "f"),
                              "to": _get(hdrs, "To", "t"), "raw": raw})
        if method == "ACK":
            return
        if method not in ("INVITE", "REGISTER"):
            self._reply(addr, hdrs, 200, "OK")
            return
        if not self.challenge:
            self.results.append(("ok", method))
            self._reply(addr, hdrs, 200, "OK",
                        [f"Contact: <sip:bob@127.0.0.1:{self.port}>"],
                        totag=True, rr=method == "INVITE")
            return
        issued = self._calls.get(callid)
        if issued is None:
            if _get(hdrs, "Authorization") or \
                    _get(hdrs, "Proxy-Authorization"):
                self.results.append(("credentials-without-challenge",
                                     method))
            self._calls[callid] = issued = {"cseq": cseq, "ch": []}
            self._challenge(addr, hdrs, issued, self.code, self.realm)
            return
        why = None
        want = issued["cseq"] + len(issued["ch"])
        if cseq != want:
            why = f"cseq-{cseq}-not-{want}"
        for code, realm, nonce, opaque in issued["ch"]:
            if why:
                break
            hname = "Authorization" if code == 401 else \
                "Proxy-Authorization"
            creds = [v for n, v in _all(hdrs, hname)
                     if f'realm="{realm}"' in v]
            if len(creds) != 1:
                why = f"{len(creds)}-{hname}-for-{realm}"
            else:
                why = self._check(method, ruri, realm, nonce, opaque,
                                  creds[0])
        if not why and self.second_realm and len(issued["ch"]) == 1:
            self._challenge(addr, hdrs, issued, 407, self.second_realm)
            return
        self.results.append((why or "ok", method))
        if why:
            self._reply(addr, hdrs, 403, "Bad " + why, totag=True)
            return
        extra = []
        if method == "INVITE":
            extra.append(f"Contact: <sip:bob@127.0.0.1:{self.port}>")
        self._reply(addr, hdrs, 200, "OK", extra, totag=True,
                    rr=method == "INVITE")

    def _challenge(self, addr, hdrs, issued, code, realm):
        nonce = os.urandom(12).hex()
        opaque = os.urandom(4).hex()
        issued["ch"].append((code, realm, nonce, opaque))
        ch = f'Digest realm="{realm}", nonce="{nonce}", ' \
             f'opaque="{opaque}", algorithm={self.algorithm}'
        if self.qop:
            ch += ', qop="auth"'
        chn = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        reason = "Unauthorized" if code == 401 else \
            "Proxy Authentication Required"
        self._reply(addr, hdrs, code, reason,
                    [] if self.bare else [f"{chn}: {ch}"], totag=True)

    def _check(self, method, ruri, realm, nonce, opaque, cred):
        if not cred.startswith("Digest "):
            return "scheme"
        p = {m.group(1).lower(): m.group(2) if m.group(2) is not None
             else m.group(3) for m in _PARAM.finditer(cred[7:])}
        for k, want in (("username", self.user), ("realm", realm),
                        ("nonce", nonce), ("opaque", opaque),
                        ("uri", ruri)):
            if p.get(k) != want:
                return f"{k}-{p.get(k)}"
        alg = p.get("algorithm", "MD5")
        if alg != self.algorithm:
            return f"algorithm-{alg}"
        ha1 = _h(alg, f"{self.user}:{realm}:{self.password}")
        ha2 = _h(alg, f"{method}:{ruri}")
        if self.qop:
            if p.get("qop") != "auth" or not p.get("cnonce") or \
                    not re.fullmatch(r"[0-9a-f]{8}", p.get("nc", "")):
                return "qop-cnonce-nc"
            want = _h(alg, f"{ha1}:{nonce}:{p['nc']}:{p['cnonce']}:auth:"
                           f"{ha2}")
        else:
            if "qop" in p or "nc" in p:
                return "qop-not-offered"
            want = _h(alg, f"{ha1}:{nonce}:{ha2}")
        if p.get("response") != want:
            return "response"
        return None
