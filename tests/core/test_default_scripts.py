"""Our default script and OpenSIPS's own default script, as an operator
brings them: checked with ``opensipy -c`` and (ours) run on the wire."""
import re
import socket

import pytest

from opensipy.db import admin
from opensipy.parser import SipMsg

from server import REPO, free_port, run_opensipy
from shareddata import require_shared, shared_path

OURS = REPO / "etc" / "opensipy" / "opensipy.cfg"
ANCHOR = shared_path("anchors", "opensips-default.cfg")


def opensips_default_text(mpath, fifo, port=None):
    """OpenSIPS's default script as an operator brings it: unchanged but
    for mpath, the FIFO's path and (when given) the socket's port."""
    text = ANCHOR.read_text()
    text = re.sub(r'^mpath=.*$', f'mpath="{mpath}"', text, flags=re.M)
    text = text.replace("/run/opensips/opensips_fifo", str(fifo))
    if port is not None:
        text = text.replace("socket=udp:127.0.0.1:5060",
                            f"socket=udp:127.0.0.1:{port}")
    return text


def test_our_default_script_is_valid():
    r = run_opensipy(["-c", "-f", str(OURS)])
    assert r.returncode == 0, r.stderr


def test_opensips_default_script_is_valid_with_only_paths_changed(tmp_path):
    require_shared("anchors", "opensips-default.cfg")
    cfg = tmp_path / "opensips.cfg"
    cfg.write_text(opensips_default_text(f"{tmp_path}/modules/",
                                         tmp_path / "opensips_fifo"))
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 0, r.stderr


def our_default_text(tmp_path, port, url):
    """Our default script with the socket, the FIFO and the database moved
    into the test's folder."""
    text = OURS.read_text().replace("udp:127.0.0.1:5060",
                                    f"udp:127.0.0.1:{port}")
    text = text.replace("/run/opensipy/opensipy_fifo",
                        str(tmp_path / "fifo"))
    text = text.replace('"/run/opensipy/"', f'"{tmp_path}/"')  # reply_dir
    db = '"sqlite:///var/lib/opensipy/opensipy.db"'
    assert text.count(db) == 3          # dialog's, auth_db's, acc's db_url
    return text.replace(db, f'"{url}"')


@pytest.fixture
def default_server(server, tmp_path):
    port = free_port()
    url = f"sqlite://{tmp_path}/opensipy.db"
    admin.create(url)
    server.start(our_default_text(tmp_path, port, url))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    yield port, s
    s.close()


def ask(sock, port, method, ruri, maxfwd=70, from_dom="127.0.0.1",
        to=None):
    me = sock.getsockname()[1]
    sock.sendto((f"{method} {ruri} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{method}\r\n"
                 f"Max-Forwards: {maxfwd}\r\n"
                 f"From: <sip:alice@{from_dom}>;tag=1\r\n"
                 f"To: <{to or ruri}>\r\nCall-ID: {method}@test\r\n"
                 f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode(),
                ("127.0.0.1", port))
    while True:
        r = SipMsg(sock.recv(65535))
        if r.status >= 200:
            return r


@pytest.mark.slow
def test_default_script_challenges_and_refuses(default_server):
    port, s = default_server
    r = ask(s, port, "REGISTER", f"sip:127.0.0.1:{port}",
            to="sip:alice@127.0.0.1")
    assert r.status == 401 and 'realm="127.0.0.1"' in \
        r.hdr("WWW-Authenticate")
    r = ask(s, port, "INVITE", f"sip:bob@127.0.0.1:{port}")
    assert r.status == 407 and r.hdr("Proxy-Authenticate")
    assert ask(s, port, "MESSAGE", f"sip:bob@127.0.0.1:{port}",
               maxfwd=0).status == 483
    r = ask(s, port, "INVITE", "sip:bob@example.com", from_dom="example.org")
    assert (r.status, r.reason) == (403, "Relay Forbidden")


@pytest.mark.slow
def test_default_script_without_its_database_says_so(server, tmp_path):
    url = f"sqlite://{tmp_path}/never-made.db"
    with pytest.raises(RuntimeError) as e:
        server.start(our_default_text(tmp_path, free_port(), url))
    err = str(e.value)
    assert "create the database with opensipyctl db create" in err, err
    assert "Traceback" not in err, err
