"""The cachedb API end to end: real opensipy servers driven over MI
(mi_datagram) and SIP (the script's cache_* functions), on cachedb_local
(shared memory, several processes of one server) and cachedb_redis (a real
redis-server shared by two servers)."""
import json
import socket
import threading
import time

import pytest

from server import Server, free_port, mi_call, wait_for


def mi_raw(port, method, params=None, timeout=8.0):
    """The whole JSON-RPC reply (result or error)."""
    req = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        req["params"] = params
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(json.dumps(req).encode(), ("127.0.0.1", port))
        return json.loads(s.recv(65535))


def options(port, n=1, tag="o"):
    """Send n OPTIONS from one socket, one after the other's reply;
    return the (status, reason) list."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(8)
        me = s.getsockname()[1]
        for i in range(n):
            s.sendto((f"OPTIONS sip:x@127.0.0.1:{port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{tag}{i}"
                      f"\r\nMax-Forwards: 70\r\n"
                      f"From: <sip:t@127.0.0.1>;tag={tag}{i}\r\n"
                      f"To: <sip:x@127.0.0.1>\r\n"
                      f"Call-ID: {tag}{i}@test\r\nCSeq: 1 OPTIONS\r\n"
                      f"Content-Length: 0\r\n\r\n").encode(),
                     ("127.0.0.1", port))
            line = s.recv(65535).split(b"\r\n", 1)[0].decode()
            _, code, reason = line.split(" ", 2)
            out.append((int(code), reason))
    return out


SCRIPT = """
udp_workers={workers}
# every receiver on the socket: concurrent updates from several
udp_workers_standby=off
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "mi_datagram.so"
{engine}
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
route {{
    if ($rU == "x") {{
        if (!cache_add("{sid}", "hits", 1, 0, $var(n))) {{
            sl_send_reply(500, "add failed");
            exit;
        }}
        if (cache_fetch("{sid}", "greeting", $var(g)))
            sl_send_reply(200, "got $var(g) n=$var(n)");
        else
            sl_send_reply(404, "no greeting rc=$rc n=$var(n)");
        exit;
    }}
}}
"""

LOCAL = """loadmodule "cachedb_local.so"
modparam("cachedb_local", "cache_collections", "default; calls=4")
modparam("cachedb_local", "cachedb_url", "local://")
modparam("cachedb_local", "cachedb_url", "local:c:///calls")
modparam("cachedb_local", "cache_clean_period", 1)"""


def start(server, engine, sid="local", workers=4):
    sip, mi = free_port(), free_port()
    server.start(SCRIPT.format(workers=workers, sip=sip, mi=mi,
                               engine=engine, sid=sid))
    return sip, mi


def test_cachedb_local_is_shared_by_every_process(server):
    sip, mi = start(server, LOCAL)
    assert options(sip) == [(404, "no greeting rc=-2 n=1")]
    assert mi_call(mi, "cache_store", ["local", "greeting", "hello"]) == "OK"
    # the value the MI process stored is seen by the receivers, and
    # concurrent adds from every receiver lose no update
    threads = [threading.Thread(target=options, args=(sip, 25, f"t{i}"))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    code, reason = options(sip)[0]
    assert code == 200 and reason == "got hello n=102"
    assert mi_call(mi, "cache_fetch", {"system": "local", "attr": "hits"}) \
        == {"key": "hits", "value": "102"}
    # collections are separate tables
    err = mi_raw(mi, "cache_fetch", ["local:c", "hits"])["error"]
    assert err == {"code": 400, "message": "Value not found"}
    assert mi_call(mi, "cache_store", ["local:c", "hits", "x"]) == "OK"
    assert mi_call(mi, "cache_fetch", ["local", "hits"])["value"] == "102"
    assert mi_call(mi, "cache_remove", ["local", "greeting"]) == "OK"
    assert options(sip)[0] == (404, "no greeting rc=-2 n=103")


def test_cachedb_local_expiry_and_mi_errors(server):
    sip, mi = start(server, LOCAL, workers=1)
    assert mi_call(mi, "cache_store", {"system": "local", "attr": "k",
                                       "value": "v", "expire": 1}) == "OK"
    assert mi_call(mi, "cache_fetch", ["local", "k"])["value"] == "v"
    wait_for(lambda: "error" in mi_raw(mi, "cache_fetch", ["local", "k"]),
             timeout=5, what="expiry")
    assert mi_raw(mi, "cache_fetch", ["local", "k"])["error"]["code"] == 400
    e = mi_raw(mi, "cache_store", ["local", "k", "v", -1])["error"]
    assert e["code"] == -32602 and e["data"] == "Negative expire value"
    e = mi_raw(mi, "cache_store", ["", "k", "v"])["error"]
    assert e["data"] == "Empty memory cache id"
    e = mi_raw(mi, "cache_store", ["nosuch", "k", "v"])["error"]
    assert e == {"code": 500, "message": "Cache store command failed"}
    e = mi_raw(mi, "cache_fetch", ["local", ""])["error"]
    assert e["data"] == "Empty attribute name"
    # cache_remove_chunk (the module's MI command)
    for k in ("ab1", "ab2", "cd"):
        mi_call(mi, "cache_store", ["local", k, "v"])
    assert mi_call(mi, "cache_remove_chunk", ["ab*"]) == "OK"
    assert mi_raw(mi, "cache_fetch", ["local", "ab1"])["error"]["code"] == 400
    assert mi_call(mi, "cache_fetch", ["local", "cd"])["value"] == "v"


def test_unknown_storage_id_is_a_startup_error(tmp_path):
    s = Server(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="storage id 'redis'"):
            start(s, LOCAL, sid="redis", workers=1)
    finally:
        s.cleanup()


def test_script_functions_counters_and_raw_query_on_redis(server,
                                                          redis_server):
    sip, mi = free_port(), free_port()
    server.start(f"""
udp_workers=2
socket=udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "mi_datagram.so"
loadmodule "cachedb_redis.so"
modparam("cachedb_redis", "cachedb_url", "{redis_server.url}")
modparam("cachedb_redis", "cachedb_url",
         "redis:second://127.0.0.1:{redis_server.port}/1")
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi}")
route {{
    cache_store("redis", "k1", "v-$rU", 60);
    cache_add("redis", "c", 10, 0, $var(a));
    cache_sub("redis", "c", 3, 0, $var(b));
    cache_counter_fetch("redis", "c", $var(c));
    cache_counter_fetch("redis", "none", $var(d));
    $var(nf) = $rc;
    cache_raw_query("redis", "RPUSH l one two three");
    cache_raw_query("redis", "LRANGE l 0 -1", $avp(l));
    cache_raw_query("redis:second", "SET only-in-db1 yes");
    cache_remove("redis", "gone");
    sl_send_reply(200, "a=$var(a) b=$var(b) c=$var(c) nf=$var(nf) l0=$(avp(l)[0]) l2=$(avp(l)[2])");
}}
""")
    mi_call(mi, "cache_store", ["redis", "gone", "x"])
    assert options(sip) == [(200, "a=10 b=7 c=7 nf=-2 l0=one l2=three")]
    import redis
    r0 = redis.Redis(port=redis_server.port, db=0)
    r1 = redis.Redis(port=redis_server.port, db=1)
    assert r0.get("k1") == b"v-x" and 55 <= r0.ttl("k1") <= 60
    assert r0.get("gone") is None
    assert r1.get("only-in-db1") == b"yes" and r0.get("only-in-db1") is None
    r0.close()
    r1.close()


def test_two_servers_share_one_redis(tmp_path, redis_server):
    a, b = Server(tmp_path / "a"), Server(tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    engine = (f'loadmodule "cachedb_redis.so"\n'
              f'modparam("cachedb_redis", "cachedb_url", "{redis_server.url}")')
    try:
        sip_a, mi_a = start(a, engine, sid="redis", workers=2)
        sip_b, mi_b = start(b, engine, sid="redis", workers=2)
        assert mi_call(mi_a, "cache_store", ["redis", "greeting", "from-a"]) \
            == "OK"
        assert mi_call(mi_b, "cache_fetch", ["redis", "greeting"]) == \
            {"key": "greeting", "value": "from-a"}
        assert options(sip_b)[0] == (200, "got from-a n=1")
        assert options(sip_a)[0] == (200, "got from-a n=2")
        assert mi_call(mi_b, "cache_remove", ["redis", "greeting"]) == "OK"
        assert options(sip_a)[0] == (404, "no greeting rc=-2 n=3")
    finally:
        a.cleanup()
        b.cleanup()


def test_redis_going_away_fails_fast_then_recovers(server, redis_server):
    engine = (f'loadmodule "cachedb_redis.so"\n'
              f'modparam("cachedb_redis", "cachedb_url", "{redis_server.url}")')
    sip, mi = start(server, engine, sid="redis", workers=1)
    assert mi_call(mi, "cache_store", ["redis", "greeting", "hi"]) == "OK"
    redis_server.halt()
    t0 = time.monotonic()
    e = mi_raw(mi, "cache_fetch", ["redis", "greeting"])["error"]
    assert e == {"code": 500, "message": "Cache fetch command failed"}
    assert time.monotonic() - t0 < 4.0
    assert options(sip)[0] == (500, "add failed")
    redis_server.start()
    # a fresh redis (no persistence): the store works again, no restart
    wait_for(lambda: mi_raw(mi, "cache_store",
                            ["redis", "greeting", "back"]).get("result")
             == "OK", timeout=10, interval=0.3, what="redis recovery")
    assert options(sip)[0] == (200, "got back n=1")
    assert "cachedb redis" in server.stderr()
