"""Benchmark (not a timed test) of what uac_auth() computes per challenge:
the challenge parsed, the credentials looked up, the answer line built
(MD5 and SHA-256 with qop=auth: HA1, HA2, response, a fresh cnonce).  Run
with --benchmark-enable; normal runs check the path once.

    python3 -m pytest tests/auth/test_bench_uac.py --benchmark-enable
"""
import pytest

import opensipy_modules.uac_auth as uac_auth
from opensipy_modules.auth import digest


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
def test_bench_uac_auth_answer(benchmark, monkeypatch, alg):
    monkeypatch.setattr(uac_auth, "_credentials", [
        uac_auth.parse_credential(f"user{i}:realm{i}.net:pw{i}")
        for i in range(100)] + [
        uac_auth.parse_credential("alice:example.com:wonderland")])
    text = (f'Digest realm="example.com", nonce="5f2b1c0a9e8d7c6b", '
            f'opaque="abc", qop="auth,auth-int", algorithm={alg}')

    def answer():
        ch = digest.parse_challenge(text)
        crd = uac_auth.lookup_realm(None, ch.realm)
        return uac_auth.build_authorization_hdr(
            407, ch, crd, "INVITE", "sip:bob@example.com")

    line = benchmark(answer)
    c = digest.parse_credentials(line.split(": ", 1)[1])
    ha1 = digest.calc_ha1(alg, "alice", "example.com", "wonderland")
    assert c.response == digest.calc_response(
        alg, ha1, "5f2b1c0a9e8d7c6b", "INVITE", "sip:bob@example.com",
        "auth", c.nc, c.cnonce)
