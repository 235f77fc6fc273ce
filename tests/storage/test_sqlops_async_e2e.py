"""A slow PostgreSQL query in async() does not hold the only UDP receiver:
the requests sent while it runs are answered first, then the waiting
request resumes with the query's result."""
import os
import sys
import time

import pytest

from opensipy import db

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "modules"))
import modkit  # noqa: E402
from server import free_port  # noqa: E402

pytestmark = pytest.mark.slow

SCRIPT = r"""
log_level=3
udp_workers=1
socket=udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "db_postgres.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "sqlops.so"
modparam("sqlops", "db_url", "{url}")

route {{
    if ($rU == "db") {{
        async(sql_query("SELECT name, pg_sleep(0.6)::text FROM t WHERE id = 1",
                        "$avp(name);$avp(z)"), got_row);
        exit;
    }}
    sl_send_reply(200, "Fast");
}}

route[got_row] {{
    append_to_reply("X-Rc: $rc\r\nX-Name: $avp(name)\r\n");
    t_reply(200, "Queried");
}}
"""


def test_async_query_lets_other_requests_through(server, pg_url):
    con = db.db_bind_mod(pg_url).init(pg_url)
    con.raw_query("CREATE TABLE t (id INTEGER, name VARCHAR(20))")
    con.raw_query("INSERT INTO t VALUES (1, 'alice')")
    con.close()
    port = free_port()
    server.start(SCRIPT.format(port=port, url=pg_url))
    phone = modkit.Peer()
    try:
        phone.send(modkit.request(ruri="sip:db@example.com",
                                  via_port=phone.port, callid="db-1@x"),
                   port)
        time.sleep(0.1)
        for i in range(4):
            phone.send(modkit.request(method="OPTIONS",
                                      ruri="sip:fast@example.com",
                                      via_port=phone.port,
                                      callid=f"f{i}@x"), port)
        finals = []
        while len(finals) < 5:
            r = phone.recv(10)
            if r.status >= 200:
                finals.append(r)
    finally:
        phone.close()
    assert [r.reason for r in finals] == ["Fast"] * 4 + ["Queried"]
    assert finals[-1].hdr("X-Rc") == "1"
    assert finals[-1].hdr("X-Name") == "alice"
