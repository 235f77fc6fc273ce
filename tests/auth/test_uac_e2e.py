"""uac + uac_auth end to end: a SIPp UAC calls (INVITE, ACK, BYE) and
registers through the real opensipy to a UAS that challenges with 401/407
(tests/auth/challenger.py, which recomputes the digest with hashlib and
checks the CSeq).  opensipy answers the challenge in its failure_route with
uac_auth() and t_relay(); the caller must see its own CSeq in every reply,
the callee one more in the ACK and BYE (the ``aci`` Record-Route
parameter).  uac_replace_from/to: the callee sees the new From/To, the
caller the original in the replies, and the BYE is rewritten again."""
import re
import shutil
import subprocess

import pytest

from challenger import Challenger
from server import free_port, popen, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None,
                                 reason="sipp is not installed "
                                        "(apt-get install -y sip-tester)")]

PASSWORD = "wonderland"
HA1_MD5 = "0x" + __import__("hashlib").md5(
    f"alice:example.com:{PASSWORD}".encode()).hexdigest()

SCRIPT = r"""
log_level=3
udp_workers=2
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "uac_auth.so"
loadmodule "uac.so"
{params}
route {{
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        sl_send_reply(404, "Not here");
        exit;
    }}
{pre}
    if (is_method("INVITE"))
        record_route();
    $du = "sip:127.0.0.1:{uas}";
    t_on_failure("auth");
    t_relay();
}}
failure_route[auth] {{
    if (t_check_status("40[17]")) {{
        if (uac_auth({algs})) {{
            t_on_failure("auth");      # a next challenge is answered too
            t_relay();
            exit;
        }}
        xlog("L_ERR", "uac_auth refused the $T_reply_code\n");
    }}
}}
"""

HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac">
"""


def _check(hdr, regexp, name):
    if regexp.startswith("^"):          # SIPp keeps the space after ':'
        regexp = "^ *" + regexp[1:]
    return (f'<ereg regexp="{regexp}" search_in="hdr" header="{hdr}:" '
            f'check_it="true" assign_to="{name}"/>')


def call_scenario(from_re="sip:alice@example.com",
                  to_re="sip:bob@example.com", final="200"):
    keep = (_check("From", from_re, "f1") + _check("To", to_re, "t1"))
    x = HEAD + """
  <send retrans="500">
    <![CDATA[
      INVITE sip:bob@example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:alice@example.com>;tag=[pid]c[call_number]
      To: "Bob" <sip:bob@example.com>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
"""
    if final != "200":
        x += f"""  <recv response="{final}">
    <action>{_check("CSeq", "^1 INVITE", "c0")}</action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:bob@example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:alice@example.com>;tag=[pid]c[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="c0"/>
</scenario>
"""
        return x
    x += f"""  <recv response="200" rrs="true">
    <action>{_check("CSeq", "^1 INVITE", "c1")}{keep}</action>
  </recv>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Alice" <sip:alice@example.com>;tag=[pid]c[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="100"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Alice" <sip:alice@example.com>;tag=[pid]c[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200">
    <action>{_check("CSeq", "^2 BYE", "c2")}{keep.replace('"f1"', '"f2"').replace('"t1"', '"t2"')}</action>
  </recv>
  <Reference variables="c1,c2,f1,f2,t1,t2"/>
</scenario>
"""
    return x


REGISTER = HEAD + """
  <send retrans="500">
    <![CDATA[
      REGISTER sip:example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@example.com>;tag=[pid]r[call_number]
      To: <sip:alice@example.com>
      Call-ID: [call_id]
      CSeq: 7 REGISTER
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 300
      Content-Length: 0

    ]]>
  </send>
  <recv response="200">
    <action>""" + _check("CSeq", "^7 REGISTER", "c") + """</action>
  </recv>
  <Reference variables="c"/>
</scenario>
"""


def run_sipp(tmp_path, sip, text, name, calls=1):
    sc = tmp_path / f"{name}.xml"
    sc.write_text(text)
    err = tmp_path / f"{name}_err.log"
    p = subprocess.run(
        ["sipp", f"127.0.0.1:{sip}", "-sf", str(sc), "-i", "127.0.0.1",
         "-p", str(free_port()), "-m", str(calls), "-l", "1",
         "-timeout", "20s", "-nostdin", "-trace_err",
         "-error_file", str(err)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, cwd=str(tmp_path))
    return p, (err.read_text() if err.exists() else "")


AVP_PRE = """    $avp(arealm) = "example.com";
    $avp(auser) = "alice";
    $avp(apass) = "{secret}";"""
AVP_PARAMS = """modparam("uac_auth", "auth_realm_avp", "$avp(arealm)")
modparam("uac_auth", "auth_username_avp", "$avp(auser)")
modparam("uac_auth", "auth_password_avp", "$avp(apass)")
modparam("uac_auth", "credential", "alice:other.org:nothing")"""


@pytest.fixture
def uas():
    u = Challenger("alice", PASSWORD)
    yield u
    u.close()


def start(server, uas, params="", pre="", algs=""):
    sip = free_port()
    server.start(SCRIPT.format(sip=sip, uas=uas.port, params=params,
                               pre=pre, algs=algs))
    return sip


CASES = [
    # code, algorithm, qop, credentials from
    (407, "MD5", True, "modparam"),
    (401, "MD5", False, "avp"),
    (407, "SHA-256", True, "avp"),
    (401, "SHA-256", False, "modparam"),
    (407, "MD5", True, "ha1"),
]


@pytest.mark.parametrize("code,alg,qop,source", CASES,
                         ids=[f"{c}-{a}-{'qop' if q else 'noqop'}-{s}"
                              for c, a, q, s in CASES])
def test_uac_auth_answers_the_challenge(server, tmp_path, uas, code, alg,
                                        qop, source):
    uas.set(code=code, algorithm=alg, qop=qop)
    if source == "modparam":
        params = f'modparam("uac_auth", "credential", ' \
                 f'"alice:example.com:{PASSWORD}")'
        pre = ""
    elif source == "ha1":
        params = f'modparam("uac_auth", "credential", ' \
                 f'"alice:example.com:{HA1_MD5}")'
        pre = ""
    else:
        params = AVP_PARAMS
        pre = AVP_PRE.format(secret=PASSWORD)
    sip = start(server, uas, params, pre)
    p, err = run_sipp(tmp_path, sip, call_scenario(), "call")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    p, err = run_sipp(tmp_path, sip, REGISTER, "register")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    assert uas.results == [("ok", "INVITE"), ("ok", "REGISTER")], \
        uas.results
    seen = [(r["method"], r["cseq"]) for r in uas.requests]
    # the challenged INVITE (1), its hop-by-hop ACK (1), the answer (2),
    # the caller's ACK and BYE moved up by one (2, 3); REGISTER 7 then 8
    assert seen == [("INVITE", 1), ("ACK", 1), ("INVITE", 2), ("ACK", 2),
                    ("BYE", 3), ("REGISTER", 7), ("REGISTER", 8)], seen


def test_uac_auth_algorithm_list_and_bad_challenges(server, tmp_path, uas):
    """What uac_auth() cannot answer is relayed to the caller as it came,
    with a log line saying why; nothing crashes and the next call works."""
    params = f'modparam("uac_auth", "credential", ' \
             f'"alice:example.com:{PASSWORD}")'
    sip = start(server, uas, params, algs='"SHA-256"')
    # MD5 is not in uac_auth("SHA-256")
    uas.set(code=407, algorithm="MD5", qop=True)
    p, err = run_sipp(tmp_path, sip, call_scenario(final="407"), "md5")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    # an unknown realm
    uas.set(algorithm="SHA-256", realm="other.org")
    p, err = run_sipp(tmp_path, sip, call_scenario(final="407"), "realm")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    # an algorithm nobody knows
    uas.set(algorithm="SHA-1", realm="example.com")
    p, err = run_sipp(tmp_path, sip, call_scenario(final="407"), "sha1")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    # a 401 without WWW-Authenticate
    uas.set(code=401, algorithm="SHA-256", bare=True)
    p, err = run_sipp(tmp_path, sip, call_scenario(final="401"), "bare")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    # and a good one still goes through
    uas.set(code=401, bare=False)
    p, err = run_sipp(tmp_path, sip, call_scenario(), "good")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    log = server.stderr()
    assert "algorithm MD5 not in SHA-256" in log, log
    assert "realm 'other.org': no credentials" in log, log
    assert "unsupported algorithm 'SHA-1'" in log, log
    assert "the 401 has no WWW-Authenticate header" in log, log
    assert log.count("uac_auth refused the") == 4, log
    assert uas.results == [("ok", "INVITE")], uas.results


REPLACE_PRE = """    if (is_method("INVITE")) {
        uac_replace_from("Anonymous", "sip:anonymous@anonymous.invalid");
        uac_replace_to("", "sip:callee@example.net");
    }"""


BRANCH_PRE = """    t_on_branch("anon");"""
BRANCH_ROUTE = """
branch_route[anon] {
    if (is_method("INVITE")) {
        uac_replace_from("Anonymous", "sip:anonymous@anonymous.invalid");
        uac_replace_to("", "sip:callee@example.net");
    }
}
"""


@pytest.mark.parametrize("passwd,where", [("", "request_route"),
                                          ("s3cret", "branch_route")])
def test_uac_replace_from_to_restored_for_the_caller(server, tmp_path, uas,
                                                     passwd, where):
    uas.set(challenge=False)
    params = f'modparam("uac", "restore_passwd", "{passwd}")'
    if where == "request_route":
        sip = start(server, uas, params, REPLACE_PRE)
    else:
        sip = free_port()
        server.start(SCRIPT.format(sip=sip, uas=uas.port, params=params,
                                   pre=BRANCH_PRE, algs="") + BRANCH_ROUTE)
    # (&quot; is the XML spelling of the display's quotes)
    sc = call_scenario(
        from_re="^&quot;Alice&quot; &lt;sip:alice@example.com&gt;;tag=",
        to_re="^&quot;Bob&quot; &lt;sip:bob@example.com&gt;;tag=")
    p, err = run_sipp(tmp_path, sip, sc, "replace")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    inv, ack, bye = uas.requests
    assert (inv["method"], ack["method"], bye["method"]) == \
        ("INVITE", "ACK", "BYE")
    for r in (inv, ack, bye):
        assert re.match(r'Anonymous <sip:anonymous@anonymous\.invalid>;tag=',
                        r["from"]), r["from"]
        assert r["to"].startswith("<sip:callee@example.net>"), r["to"]


def test_uac_inc_cseq(server, tmp_path, uas):
    uas.set(challenge=False)
    sip = start(server, uas, "", '    if (is_method("REGISTER")) '
                                 'uac_inc_cseq(5);')
    p, err = run_sipp(tmp_path, sip, REGISTER, "register")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    assert [(r["method"], r["cseq"]) for r in uas.requests] == \
        [("REGISTER", 12)]


MANUAL = r"""
log_level=3
udp_workers=1
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "uac.so"
modparam("uac", "restore_mode", "manual")
modparam("uac", "rr_from_store_param", "myf")
route {{
    if (has_totag()) {{
        if (loose_route()) {{
            if (is_method("BYE")) {{
                uac_restore_from();
                uac_restore_to();
            }}
            t_relay();
            exit;
        }}
        sl_send_reply(404, "Not here");
        exit;
    }}
    uac_replace_from("", "sip:hidden@example.org");
    uac_replace_to("Callee", "sip:callee@example.net");
    record_route();
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
}}
"""


def test_uac_restore_mode_manual(server, tmp_path, uas):
    """manual: replies are restored, in-dialog requests only where the
    script calls uac_restore_from()/uac_restore_to() (the BYE here, not
    the ACK); the Record-Route parameter has the configured name."""
    uas.set(challenge=False)
    sip = free_port()
    server.start(MANUAL.format(sip=sip, uas=uas.port))
    sc = call_scenario(
        from_re="^&quot;Alice&quot; &lt;sip:alice@example.com&gt;;tag=",
        to_re="^&quot;Bob&quot; &lt;sip:bob@example.com&gt;;tag=")
    p, err = run_sipp(tmp_path, sip, sc, "manual")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    inv, ack, bye = uas.requests
    assert inv["from"].startswith("<sip:hidden@example.org>;tag="), inv
    assert ";myf=" in inv["raw"]
    assert ack["from"].startswith('"Alice" <sip:alice@example.com>'), ack
    assert bye["from"].startswith("<sip:hidden@example.org>;tag="), bye
    assert inv["to"] == "Callee <sip:callee@example.net>", inv
    assert ack["to"].startswith('"Bob" <sip:bob@example.com>;tag='), ack
    assert bye["to"].startswith("Callee <sip:callee@example.net>;tag="), bye


CONFIG_HEAD = r"""
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "tm.so"
"""


@pytest.mark.parametrize("body,why", [
    ('loadmodule "uac.so"\nfailure_route[f] {\n    uac_auth();\n}\n'
     'route {\n    t_on_failure("f");\n    t_relay();\n}\n',
     "cannot bind the API of module 'uac_auth' (needed by 'uac_auth()')"),
    ('loadmodule "uac.so"\nroute {\n    uac_replace_from("", "sip:a@b");\n'
     '}\n', "restore_mode 'auto' needs the rr module"),
    ('loadmodule "uac.so"\nmodparam("uac", "restore_mode", "always")\n'
     'route {\n    exit;\n}\n', "unsupported restore_mode 'always'"),
    ('loadmodule "uac_auth.so"\nloadmodule "uac.so"\nfailure_route[f] {\n'
     '    uac_auth("MD5,SHA-1");\n}\nroute {\n    exit;\n}\n',
     "unsupported algorithm 'SHA-1'"),
    ('loadmodule "uac_auth.so"\n'
     'modparam("uac_auth", "credential", "alice:example.com")\n'
     'route {\n    exit;\n}\n', "is not user:realm:password"),
    ('loadmodule "uac_auth.so"\n'
     'modparam("uac_auth", "auth_realm_avp", "$avp(r)")\n'
     'route {\n    exit;\n}\n',
     "auth_password_avp, auth_username_avp not set"),
])
def test_bad_configuration_is_refused(tmp_path, body, why):
    from server import run_opensipy
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(CONFIG_HEAD.format(sip=free_port()) + body)
    r = run_opensipy(["-F", "-E", "-f", str(cfg)], timeout=30)
    assert r.returncode != 0
    assert why in r.stderr, r.stderr


SIPP_DIR = __import__("pathlib").Path(__file__).resolve().parent / "sipp"


def test_uac_auth_against_sipp_uas_verifyauth(server, tmp_path):
    """SIPp as the challenging UAS too: its verifyauth checks the digest
    uac_auth sent (MD5, qop=auth for the INVITE, none for the REGISTER;
    both 401, as SIPp 3.6's verifyauth reads only the Authorization
    header: the 407 cases are the challenger's above) and the scenarios
    check the CSeq of the retried request and of the caller's ACK and
    BYE."""
    inv_port, reg_port = free_port(), free_port()
    uases = []
    try:
        for name, port in (("uas_401_invite", inv_port),
                           ("uas_401_register", reg_port)):
            err = tmp_path / f"{name}_err.log"
            uases.append((name, err, popen(
                ["sipp", "-sf", str(SIPP_DIR / f"{name}.xml"),
                 "-i", "127.0.0.1", "-p", str(port), "-m", "1",
                 "-timeout", "30s", "-nostdin", "-trace_err",
                 "-error_file", str(err)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))))
        sip = free_port()
        params = f'modparam("uac_auth", "credential", ' \
                 f'"alice:example.com:{PASSWORD}")'
        script = SCRIPT.format(sip=sip, uas=inv_port, params=params, pre="",
                               algs="").replace(
            f'$du = "sip:127.0.0.1:{inv_port}";',
            f'if (is_method("REGISTER")) $du = "sip:127.0.0.1:{reg_port}";'
            f' else $du = "sip:127.0.0.1:{inv_port}";')
        server.start(script)
        p, err = run_sipp(tmp_path, sip, call_scenario(), "call")
        assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
        p, err = run_sipp(tmp_path, sip, REGISTER, "register")
        assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
        for name, err, proc in uases:
            proc.wait(timeout=30)
            assert proc.returncode == 0, (
                name, proc.stderr.read(),
                err.read_text() if err.exists() else "")
    finally:
        for _, _, proc in uases:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


CALLEE_HANGS_UP = HEAD + """
  <send retrans="500">
    <![CDATA[
      INVITE sip:bob@example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:alice@example.com>;tag=[pid]c[call_number]
      To: "Bob" <sip:bob@example.com>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Alice" <sip:alice@example.com>;tag=[pid]c[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE">
    <action>""" + _check("From", "^&quot;Bob&quot; &lt;sip:bob@example.com&gt;;tag=", "f") + \
    _check("To", "^&quot;Alice&quot; &lt;sip:alice@example.com&gt;;tag=", "t") + \
    _check("CSeq", "^1 BYE", "c") + """</action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="f,t,c"/>
</scenario>
"""


def test_uac_replace_restored_in_the_callees_bye(server, tmp_path, uas):
    """The callee hangs up: its BYE (From/To as it knows them: the
    replaced ones) reaches the caller with the originals, CSeq untouched
    (aci applies to the caller's requests only); the caller's 200 goes
    back to the callee rewritten again."""
    uas.set(code=407, algorithm="SHA-256", qop=True)
    params = f'modparam("uac_auth", "credential", ' \
             f'"alice:example.com:{PASSWORD}")'
    sip = start(server, uas, params, REPLACE_PRE)
    sc = tmp_path / "callee_bye.xml"
    sc.write_text(CALLEE_HANGS_UP)
    err = tmp_path / "callee_bye_err.log"
    caller = popen(
        ["sipp", f"127.0.0.1:{sip}", "-sf", str(sc), "-i", "127.0.0.1",
         "-p", str(free_port()), "-m", "1", "-timeout", "20s", "-nostdin",
         "-trace_err", "-error_file", str(err)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path))
    try:
        wait_for(lambda: [r for r in uas.requests if r["method"] == "ACK"
                          and r["cseq"] == 2], timeout=15,
                 what="the caller's ACK at the callee")
        uas.send_bye(sip)
        out, _ = caller.communicate(timeout=30)
        assert caller.returncode == 0, out[-3000:] + (
            err.read_text() if err.exists() else "") + server.stderr()
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    wait_for(lambda: uas.replies, timeout=5, what="the 200 for the BYE")
    ok = uas.replies[-1]
    assert ok.startswith("SIP/2.0 200"), ok
    assert "\r\nFrom: <sip:callee@example.net>;tag=" in ok, ok
    assert "\r\nTo: Anonymous <sip:anonymous@anonymous.invalid>;tag=" in ok, ok
    assert "\r\nCSeq: 1 BYE\r\n" in ok, ok
    assert uas.results == [("ok", "INVITE")], uas.results


def test_uac_auth_two_rounds_401_then_407(server, tmp_path, uas):
    """A 401 answered, then a 407 of another realm: the third INVITE
    carries both answers and CSeq 3; the caller still sees CSeq 1 and its
    ACK/BYE reach the callee moved up by two (aci=2), so the ACK matches
    the INVITE that got the 200."""
    uas.set(code=401, algorithm="MD5", qop=True,
            second_realm="proxy.example.net")
    params = "\n".join(
        f'modparam("uac_auth", "credential", "alice:{r}:{PASSWORD}")'
        for r in ("example.com", "proxy.example.net"))
    sip = start(server, uas, params)
    p, err = run_sipp(tmp_path, sip, call_scenario(), "call")
    assert p.returncode == 0, p.stdout[-3000:] + err + server.stderr()
    assert uas.results == [("ok", "INVITE")], uas.results
    seen = [(r["method"], r["cseq"]) for r in uas.requests]
    assert seen == [("INVITE", 1), ("ACK", 1), ("INVITE", 2), ("ACK", 2),
                    ("INVITE", 3), ("ACK", 3), ("BYE", 4)], seen
    rr = [ln for ln in uas.requests[4]["raw"].split("\r\n")
          if ln.startswith("Record-Route:")]
    assert len(rr) == 1 and rr[0].count("aci=") == 1 and ";aci=2" in rr[0], rr
