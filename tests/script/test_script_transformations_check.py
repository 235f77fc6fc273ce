"""``opensipy -c`` accepts every transformation OpenSIPS 3.x/4.x accepts
(its manual's list: s.*, uri.*, via.*, param.*, nameaddr.* with and
without an index, ip.*, csv.*, sdp.*, re.subst; names in any case) and
rejects an unknown one, or bad constant
arguments, with FILE:LINE:COL."""
from opensipy.transformations import TRANSFORMATIONS
from tests.server import run_opensipy

HEAD = 'socket=udp:127.0.0.1:5999\nloadmodule "proto_udp.so"\n'

# the names OpenSIPS's manual lists (3.5 and 4.x), written out here so a
# name missing from TRANSFORMATIONS fails this test
OPENSIPS_NAMES = """
s.len s.int s.md5 s.reverse s.substr s.select s.encode.hexa s.decode.hexa
s.escape.common s.unescape.common s.escape.user s.unescape.user
s.escape.param s.unescape.param s.tolower s.toupper s.index s.rindex
s.fill.left s.fill.right s.width s.trim s.trimr s.triml s.dec2hex
s.hex2dec s.b64encode s.b64decode s.xor s.eval s.sha1 s.sha224 s.sha256
s.sha384 s.sha512 s.sha1_hmac s.sha224_hmac s.sha256_hmac s.sha384_hmac
s.sha512_hmac s.date2unix s.crc32
uri.user uri.host uri.passwd uri.port uri.params uri.param uri.headers
uri.transport uri.ttl uri.uparam uri.maddr uri.method uri.lr uri.r2
uri.schema
param.value param.valueat param.name param.count param.exist
nameaddr.name nameaddr.uri nameaddr.len nameaddr.param nameaddr.params
csv.count csv.value re.subst
via.name via.version via.transport via.host via.domain via.port via.params
via.param via.comment via.branch via.received via.rport
ip.family ip.ntop ip.pton ip.isip ip.isip4 ip.isip6 ip.resolve ip.matches
ip.isprivate sdp.line sdp.stream sdp.stream-delete
""".split()

ARGS = {"s.substr": ",1,2", "s.select": ",1,;", "s.index": ",a",
        "s.rindex": ",a", "s.fill.left": ",0,5", "s.fill.right": ",0,5",
        "s.width": ",5", "s.xor": ",k", "uri.param": ",lr",
        "param.value": ",a", "param.valueat": ",0", "param.name": ",0",
        "param.exist": ",a", "nameaddr.param": ",tag", "csv.value": ",0",
        "re.subst": ",/a/b/g", "via.param": ",branch",
        "ip.matches": ",10.0.0.0/8", "sdp.line": ",a,1",
        "sdp.stream": ",audio", "sdp.stream-delete": ",0"}


def _args(name):
    if name.endswith("_hmac"):
        return ",key"
    return ARGS.get(name, "")


def test_every_opensips_transformation_passes_check_mode(tmp_path):
    assert set(OPENSIPS_NAMES) <= set(TRANSFORMATIONS)
    lines = [f'    $var(r) = $(var(v){{{n}{_args(n)}}});'
             for n in OPENSIPS_NAMES]
    lines += ['    $var(r) = $(var(v){nameaddr.1.uri});',
              '    $var(r) = $(var(v){nameaddr.-1.name}{s.len});',
              '    $var(r) = $(avp(a)[1]{uri.user}{s.toupper}{s.len});',
              '    $var(r) = $(hdr(Via)[-1]{s.select,0, }{s.trim});',
              '    $var(r) = $(hdr(Via){via.BRANCH});']
    cfg = tmp_path / "tr.cfg"
    cfg.write_text(HEAD + "route {\n" + "\n".join(lines) + "\n}\n")
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 0, r.stderr
    assert "is valid" in r.stderr


def test_unknown_and_bad_transformations_fail_with_the_location(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(HEAD + "route {\n"
                   '    $var(r) = $(var(v){s.nope});\n'
                   '    xlog("L_INFO", "x=$(var(v){s.width,0})\\n");\n'
                   '    $var(r) = $(var(v){re.subst,/*a/b/});\n'
                   '    if ($(ru{uri.nope}) == "a") exit;\n'
                   '    $var(r) = $(hdr(From){nameaddr.tag});\n'
                   "}\n")
    r = run_opensipy(["-c", "-f", str(cfg)])
    assert r.returncode == 1
    err = r.stderr
    assert f"{cfg}:4:15: unknown transformation {{s.nope}}" in err
    assert f"{cfg}:5:" in err and "{s.width} must be at least 1" in err
    assert f"{cfg}:6:15: {{re.subst}}: bad regular expression" in err
    assert f"{cfg}:7:9: unknown transformation {{uri.nope}}" in err
    assert f"{cfg}:8:15: unknown transformation {{nameaddr.tag}}" in err
