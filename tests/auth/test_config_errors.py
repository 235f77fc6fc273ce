"""Bad configuration of auth, auth_db and permissions stops the start with
a clear error (the script location where there is one)."""
import pytest

from opensipy.db import admin

from server import free_port, run_opensipy

pytestmark = pytest.mark.slow

HEAD = r"""
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "permissions.so"
modparam("auth_db", "db_url", "{url}")
"""


def start(tmp_path, body):
    url = f"sqlite://{tmp_path}/c.db"
    if not (tmp_path / "c.db").exists():
        admin.create(url, ["auth_db", "permissions"])
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(HEAD.format(sip=free_port(), url=url) + body)
    return run_opensipy(["-F", "-E", "-f", str(cfg)], timeout=30)


@pytest.mark.parametrize("body,line,why", [
    ('route {\n    www_challenge("", "auth-conf");\n}\n', 12, "bad qop"),
    ('route {\n    proxy_challenge("", "auth", "MD5,SHA-1");\n}\n', 12,
     "unsupported algorithm"),
    ('route {\n    www_authorize("", "nosuchtable");\n}\n', 12,
     "nosuchtable"),
    ('route {\n    allow_routing("rules");\n}\n', 12, "rules.allow:1"),
])
def test_bad_function_parameters_name_the_line(tmp_path, body, line, why):
    (tmp_path / "rules.allow").write_text('"unterminated : ALL\n')
    r = start(tmp_path, body)
    assert r.returncode != 0
    assert f"bad.cfg:{line}" in r.stderr, r.stderr
    assert why in r.stderr, r.stderr


@pytest.mark.parametrize("param,why", [
    ('modparam("auth_db", "load_credentials", "$avp(x)=no-such col")',
     "load_credentials"),
    ('modparam("auth", "nonce_expire", 0)', "nonce_expire"),
    ('modparam("auth", "password_spec", "$nosuchvar")', "password_spec"),
])
def test_bad_module_parameters(tmp_path, param, why):
    r = start(tmp_path, param + "\nroute {\n    exit;\n}\n")
    assert r.returncode != 0
    assert why in r.stderr, r.stderr
