"""Core script functions, called the way compiled scripts call them:
resolve by name and argument count, prepare_param, bind_call."""
import pytest

from pvkit import make
from opensipy import config, core_cmds, log, pvar
from opensipy.core_cmds import core_exports
from opensipy.mod_fix import FixupError, bind_call, prepare_param
from opensipy.pvar import parse_pv
from opensipy.sr_module import ModuleError, check_exports


def cmd(name, *args):
    """Fix up a call ``name(args)`` and return call(msg) -> int."""
    found = [c for c in core_exports.cmds if c.name == name
             and c.min_args <= len(args) <= c.max_args]
    assert len(found) == 1, (name, len(args))
    c = found[0]
    full = list(args) + [None] * (c.max_args - len(args))
    return bind_call(c, [prepare_param(p, a) for p, a in zip(c.params, full)])


def test_exports_are_valid():
    check_exports(core_exports, "core")
    names = {c.name for c in core_exports.cmds}
    assert {"xlog", "xdbg", "log", "setflag", "resetflag", "isflagset",
            "setbflag", "resetbflag", "isbflagset", "setbranchflag",
            "append_branch", "force_rport", "force_send_socket",
            "is_myself"} <= names
    assert "forward" in names          # the stateless core's forward()


@pytest.fixture
def logs(capsys):
    saved = (log.state.level, log.state.xlog_level, log.state.stderr,
             log.state.syslog)
    log.state.stderr, log.state.syslog = True, False

    def read():
        return capsys.readouterr().err
    yield read
    (log.state.level, log.state.xlog_level, log.state.stderr,
     log.state.syslog) = saved


# --- logging ------------------------------------------------------------

def test_xlog_formats_and_honours_xlog_level(logs):
    m = make("INVITE")
    log.state.xlog_level = log.L_NOTICE
    assert cmd("xlog", "L_NOTICE", "call $ci from $fU\n")(m) == 1
    out = logs()
    assert "NOTICE:call a84b4c76e66710@pc33.atlanta.example.com from alice" \
        in out
    assert cmd("xlog", "L_INFO", "hidden $ru")(m) == 1
    assert logs() == ""
    log.state.xlog_level = log.L_DBG
    cmd("xlog", "L_INFO", "shown $rU")(m)
    assert "INFO:shown bob" in logs()
    # default level is L_ERR
    log.state.xlog_level = log.L_ERR
    cmd("xlog", "no level $var(none)")(m)
    assert "ERROR:no level <null>" in logs()
    log.state.xlog_level = log.L_CRIT
    cmd("xlog", "filtered")(m)
    assert logs() == ""


def test_xlog_level_from_variable(logs):
    m = make("INVITE")
    log.state.xlog_level = log.L_DBG
    pvar.script_vars["lvl"] = "L_WARN"
    cmd("xlog", parse_pv("$var(lvl)"), "warn $rm")(m)
    assert "WARNING:warn INVITE" in logs()
    pvar.script_vars["lvl"] = "L_BOGUS"
    assert cmd("xlog", parse_pv("$var(lvl)"), "x")(m) == -1
    assert "unknown log level" in logs()


def test_xlog_bad_level_is_a_fixup_error():
    with pytest.raises(FixupError, match="unknown log level 'L_LOUD'"):
        cmd("xlog", "L_LOUD", "x")


def test_xdbg_and_log(logs):
    m = make("INVITE")
    log.state.xlog_level = log.L_DBG
    cmd("xdbg", "dbg $rU")(m)
    assert "DBG:dbg bob" in logs()
    log.state.xlog_level = log.L_INFO
    cmd("xdbg", "dbg $rU")(m)
    assert logs() == ""
    # log(): plain text, obeys log_level, default L_DBG
    log.state.level = log.L_DBG
    cmd("log", "plain $ru")(m)
    assert "DBG:plain $ru" in logs()
    log.state.level = log.L_NOTICE
    cmd("log", "quiet")(m)
    assert logs() == ""
    cmd("log", 1, "warned")(m)
    assert "WARNING:warned" in logs()
    cmd("log", "L_ERR", "errored")(m)
    assert "ERROR:errored" in logs()


# --- message flags --------------------------------------------------------

def test_named_and_numeric_message_flags():
    m = make("INVITE")
    assert cmd("isflagset", "NAT")(m) == -1
    assert cmd("setflag", "NAT")(m) == 1
    assert cmd("isflagset", "NAT")(m) == 1
    assert cmd("setflag", 19)(m) == 1
    assert m.flags == (1 << pvar.msg_flags.bit("NAT")) | (1 << 19)
    assert cmd("isflagset", "19")(m) == 1
    assert parse_pv("$mf").get(m) == "NAT 19"
    assert cmd("resetflag", "NAT")(m) == 1
    assert cmd("isflagset", "NAT")(m) == -1
    assert cmd("isflagset", 19)(m) == 1
    # flags are per message
    assert cmd("isflagset", 19)(make("INVITE")) == -1


def test_flag_names_get_bits_in_first_use_order():
    cmd("setflag", 0)           # bit 0 taken by number
    cmd("setflag", "A")
    cmd("setflag", "B")
    assert pvar.msg_flags.bit("A") == 1 and pvar.msg_flags.bit("B") == 2


def test_flag_limits():
    for i in range(32):
        cmd("setflag", f"F{i}")
    with pytest.raises(FixupError, match="too many message flags"):
        cmd("setflag", "ONE_TOO_MANY")
    with pytest.raises(FixupError, match="out of range"):
        cmd("setflag", 32)
    with pytest.raises(FixupError, match="expected a constant"):
        cmd("setflag", parse_pv("$var(f)"))


# --- branch flags and branches --------------------------------------------

def test_branch_flags_on_ruri_and_appended_branches():
    m = make("INVITE")
    assert cmd("setbflag", "RTP")(m) == 1
    assert cmd("isbflagset", "RTP")(m) == 1
    assert cmd("isbflagset", 0, "RTP")(m) == 1
    assert parse_pv("$bf").get(m) == "RTP"
    # no branch 1 yet
    assert cmd("setbflag", 1, "RTP")(m) == -1
    assert cmd("append_branch", "sip:carol@chicago.example.com", "0.5")(m) \
        == 1
    assert cmd("isbflagset", 1, "RTP")(m) == -1
    assert cmd("setbranchflag", 1, "NAT")(m) == 1
    assert cmd("isbranchflagset", 1, "NAT")(m) == 1
    assert parse_pv("$branch(flags)").get(m) == "NAT"
    assert cmd("resetbflag", 1, "NAT")(m) == 1
    assert cmd("isbflagset", 1, "NAT")(m) == -1
    assert cmd("resetbflag", "RTP")(m) == 1
    assert cmd("isbflagset", "RTP")(m) == -1
    assert m.ruri_bflags == 0


def test_append_branch():
    m = make("INVITE")
    parse_pv("$du").set(m, "sip:10.0.0.9:5060")
    m.ruri_bflags = 1 << pvar.branch_flags.bit("KEEP")
    assert cmd("append_branch")(m) == 1                 # copy of the R-URI
    assert cmd("append_branch", "sip:$tU@backup.example.com")(m) == 1
    assert cmd("append_branch", "sip:x@y", "0.3")(m) == 1
    b0, b1, b2 = m.branches
    assert (b0.uri, b0.dst_uri, b0.bflags) == \
        ("sip:bob@biloxi.example.com:5070;transport=tcp;lr",
         "sip:10.0.0.9:5060", m.ruri_bflags)
    assert b1.uri == "sip:bob@backup.example.com" and b1.q is None
    assert (b2.uri, b2.q) == ("sip:x@y", "0.3")
    assert parse_pv("$br[*]").get(m) == (
        "sip:bob@biloxi.example.com:5070;transport=tcp;lr, "
        "sip:bob@backup.example.com, sip:x@y")
    assert parse_pv("$branch(duri)[0]").get(m) == "sip:10.0.0.9:5060"
    assert parse_pv("$branch(q)[2]").get(m) == "0.3"
    assert cmd("append_branch", "garbage")(m) == -1
    assert cmd("append_branch", "sip:a@b", "1.5")(m) == -1
    assert len(m.branches) == 3
    assert cmd("append_branch")(make("OK200")) == -1


# --- transport hints --------------------------------------------------------

def _listen(*socks, aliases=()):
    for s in socks:
        # (config.settings.set("socket", ...) calls parse_socket with a
        # second argument it does not take: reported to the lead)
        config.settings.sockets.append(config.parse_socket(s))
    for a in aliases:
        config.settings.set("alias", a)


def test_force_rport():
    m = make("INVITE")
    assert not getattr(m, "force_rport", False)
    assert cmd("force_rport")(m) == 1
    assert m.force_rport is True


def test_force_send_socket():
    _listen("udp:127.0.0.1:5060", "tcp:127.0.0.1:5070 as 198.51.100.1:5071")
    m = make("INVITE")
    assert cmd("force_send_socket", "tcp:127.0.0.1:5070")(m) == 1
    s = m.force_send_socket
    assert (s.proto, s.host, s.port) == ("tcp", "127.0.0.1", 5070)
    assert parse_pv("$fs").get(m) == "tcp:127.0.0.1:5070"
    assert cmd("force_send_socket", "127.0.0.1:5060")(m) == 1
    assert m.force_send_socket.proto == "udp"
    # the advertised address names the socket too
    assert cmd("force_send_socket", "tcp:198.51.100.1")(m) == 1
    assert m.force_send_socket.port == 5070
    with pytest.raises(FixupError, match="not one of the listening sockets"):
        cmd("force_send_socket", "udp:10.9.9.9:5060")
    with pytest.raises(FixupError, match="not one of the listening sockets"):
        cmd("force_send_socket", "tls:127.0.0.1:5060")
    with pytest.raises(FixupError, match="expected a constant"):
        cmd("force_send_socket", "udp:$si:5060")


@pytest.mark.parametrize("what,port,expected", [
    ("127.0.0.1", None, 1),
    ("127.0.0.1:5060", None, 1),
    ("127.0.0.1:5099", None, -1),
    ("127.0.0.1", 5070, 1),
    ("sip:bob@127.0.0.1:5060", None, 1),
    ("sip:bob@127.0.0.1:5070;transport=tcp", None, 1),
    ("sip:bob@127.0.0.1:5060;transport=tcp", None, -1),
    ("sip:bob@198.51.100.1:5071", None, 1),      # advertised address
    ("sip:bob@198.51.100.1:5070", None, -1),
    ("SIP.Example.com", None, 1),                # alias, any port
    ("sip:x@sip.example.com:9999", None, 1),
    ("other.example.com:5080", None, 1),         # alias with port
    ("other.example.com:5081", None, -1),
    ("sip:x@biloxi.example.com", None, -1),
    ("[::1]:5062", None, 1),
    ("sip:a@[::1]:5062", None, 1),
])
def test_is_myself(what, port, expected):
    _listen("udp:127.0.0.1:5060", "tcp:127.0.0.1:5070 as 198.51.100.1:5071",
            "udp:[::1]:5062",
            aliases=("sip.example.com", "other.example.com:5080"))
    args = (what,) if port is None else (what, port)
    assert cmd("is_myself", *args)(make("INVITE")) == expected


def test_is_myself_with_variables():
    _listen("udp:127.0.0.1:5060")
    m = make("INVITE")
    assert cmd("is_myself", "$rd")(m) == -1
    parse_pv("$rd").set(m, "127.0.0.1")
    parse_pv("$rp").set(m, None)
    assert cmd("is_myself", "$rd")(m) == 1
    # the R-URI still says transport=tcp and we only listen on udp
    assert cmd("is_myself", "$ru")(m) == -1
    parse_pv("$ru").set(m, "sip:bob@127.0.0.1")
    assert cmd("is_myself", "$ru")(m) == 1


# --- R-URI rewriting -----------------------------------------------------------

def test_ruri_rewriting_functions():
    m = make("INVITE")
    assert cmd("setuser", "0044123")(m) == 1
    assert cmd("strip", 2)(m) == 1
    assert parse_pv("$rU").get(m) == "44123"
    assert cmd("prefix", "+")(m) == 1
    assert parse_pv("$rU").get(m) == "+44123"
    assert cmd("sethost", "gw.example.net")(m) == 1
    assert parse_pv("$ru").get(m) == \
        "sip:+44123@gw.example.net:5070;transport=tcp;lr"
    assert cmd("sethostport", "10.0.0.1:5080")(m) == 1
    assert parse_pv("$ru").get(m) == "sip:+44123@10.0.0.1:5080;transport=tcp;lr"
    assert cmd("seturi", "sip:$fU@$fd")(m) == 1
    assert parse_pv("$ru").get(m) == "sip:alice@atlanta.example.com"
    assert cmd("seturi", "garbage")(m) == -1
    assert cmd("revert_uri")(m) == 1
    assert m.new_uri is None
    assert parse_pv("$rU").get(m) == "bob"
    with pytest.raises(FixupError, match="expected an integer"):
        cmd("strip", "two")
