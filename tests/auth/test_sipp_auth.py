"""SIPp as the phone: REGISTER answered with 401 and INVITE with 407 by the
real server (auth_db on SQLite), SIPp computing its own digest
(``[authentication]``, qop auth) and getting 200; a wrong password gets a
second challenge instead."""
import shutil
import subprocess

import pytest

from server import free_port, mi_call
from test_auth_e2e import make_db, set_plain_passwords

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

SCRIPT = r"""
log_level=3
udp_workers=1
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "signaling.so"
loadmodule "sipmsgops.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "mi_datagram.so"
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
modparam("auth_db", "db_url", "{url}")
modparam("auth_db", "calculate_ha1", {calc})
modparam("auth_db", "password_column", "{pwcol}")
route {{
    if (is_method("ACK"))
        exit;
    if (is_method("REGISTER")) {{
        if (!www_authorize("", "subscriber")) {{
            www_challenge("", "auth");
            exit;
        }}
        send_reply(200, "OK");
        exit;
    }}
    if (!proxy_authorize("", "subscriber")) {{
        proxy_challenge("", "auth");
        exit;
    }}
    send_reply(200, "OK");
}}
"""

HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
"""

REGISTER = """
  <send retrans="500">
    <![CDATA[
      REGISTER sip:example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[service]@example.com>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@example.com>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:[service]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 300
      {auth}
      Content-Length: 0

    ]]>
  </send>
"""

INVITE = """
  <send retrans="500">
    <![CDATA[
      INVITE sip:bob@example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[service]@example.com>;tag=[pid]SIPpTag01[call_number]
      To: <sip:bob@example.com>
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <sip:[service]@[local_ip]:[local_port]>
      Max-Forwards: 70
      {auth}
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0

    ]]>
  </send>
"""

ACK = """
  <send>
    <![CDATA[
      ACK sip:bob@example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[service]@example.com>;tag=[pid]SIPpTag01[call_number]
      To: <sip:bob@example.com>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""


def scenario(good: bool) -> str:
    final = "200" if good else "401"
    x = HEAD.format(name="auth")
    x += REGISTER.format(cseq=1, auth="")
    x += '  <recv response="401" auth="true"/>\n'
    x += REGISTER.format(cseq=2, auth="[authentication]")
    x += f'  <recv response="{final}"/>\n'
    if good:
        x += INVITE.format(cseq=3, auth="")
        x += '  <recv response="407" auth="true"/>\n'
        x += ACK.format(cseq=3)
        x += INVITE.format(cseq=4, auth="[authentication]")
        x += '  <recv response="200"/>\n'
        x += ACK.format(cseq=4)
    x += "</scenario>\n"
    return x


def run_sipp(tmp_path, sip, password, good, calls=5):
    sc = tmp_path / f"auth_{'good' if good else 'bad'}.xml"
    sc.write_text(scenario(good))
    p = subprocess.run(
        ["sipp", f"127.0.0.1:{sip}", "-sf", str(sc), "-s", "alice",
         "-au", "alice", "-ap", password, "-i", "127.0.0.1",
         "-p", str(free_port()), "-m", str(calls), "-l", "1",
         # no retransmissions: on a loaded machine a reply can take more
         # than T1, and a copy would be challenged (counted) again
         "-nr", "-timeout", "30s", "-nostdin", "-trace_err",
         "-error_file", str(tmp_path / "sipp_err.log")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, cwd=str(tmp_path))
    err = (tmp_path / "sipp_err.log")
    return p, (err.read_text() if err.exists() else "")


@pytest.mark.parametrize("calc", [0, 1], ids=["ha1", "plain"])
def test_sipp_register_and_invite_with_digest(server, tmp_path, calc):
    url = f"sqlite://{tmp_path}/sipp.db"
    users = [("alice@example.com", "wonderland")]
    make_db(url, users)
    set_plain_passwords(url, users)
    sip, mi = free_port(), free_port()
    server.start(SCRIPT.format(sip=sip, mi=mi, url=url, calc=calc,
                               pwcol="password" if calc else "ha1"))
    p, err = run_sipp(tmp_path, sip, "wonderland", good=True)
    assert p.returncode == 0, p.stdout[-2000:] + err
    st = mi_call(mi, "get_statistics", {"statistics": ["auth:"]})
    assert st["auth:authorized"] == 10          # 5 REGISTERs, 5 INVITEs
    assert st["auth:challenges"] == 10
    # a wrong password: SIPp gets a second 401, as its scenario expects
    p, err = run_sipp(tmp_path, sip, "not-it", good=False, calls=3)
    assert p.returncode == 0, p.stdout[-2000:] + err
    st = mi_call(mi, "get_statistics", {"statistics": ["auth:"]})
    assert st["auth:invalid_passwords"] == 3
    assert st["auth:authorized"] == 10
