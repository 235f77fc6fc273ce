"""Benchmark (not a timed test) of one www_authorize through auth_db on a
SQLite subscriber table of 1000 users: the credentials parsed and checked,
the nonce verified and spent in the shm index, the HA1 read (from SQLite,
or from the per-process row cache), the response computed.  Each round
gets a request with a fresh nonce (made outside the timing).  Run with
--benchmark-enable; normal runs check the path once.

    python3 -m pytest tests/auth/test_bench_auth.py --benchmark-enable
"""
import hashlib
import itertools

import pytest

from opensipy import shm
from opensipy.db import admin, db_bind_mod

import modkit
from digestclient import credentials
import opensipy_modules.auth as auth
import opensipy_modules.auth_db as auth_db
from opensipy_modules.auth import nonce as nm

USERS = 1000


@pytest.fixture(scope="module")
def subscribers(tmp_path_factory):
    if not shm.is_initialised():
        shm.shm_init(shm.DEFAULT_SHM_SIZE)
    path = tmp_path_factory.mktemp("bench") / "sub.db"
    url = f"sqlite://{path}"
    admin.create(url, ["auth_db"])
    con = db_bind_mod(url).init(url)
    con.use_table("subscriber")
    rows = []
    for i in range(USERS):
        t = f"user{i}:example.com:pw{i}".encode()
        rows.append([f"user{i}", "example.com",
                     hashlib.md5(t).hexdigest(),
                     hashlib.sha256(t).hexdigest(),
                     hashlib.new("sha512_256", t).hexdigest()])
    con.insert(["username", "domain", "ha1", "ha1_sha256",
                "ha1_sha512t256"], rows)
    con.close()
    saved = (auth._secret, auth._index, auth.sig, auth_db.db_url,
             auth_db._dbf, auth_db.auth, auth_db.credentials_cache_ttl)
    auth._secret = b"bench"
    auth._index = nm.NonceIndex()
    auth_db.db_url = url
    auth_db._dbf = db_bind_mod(url)
    auth_db.auth = auth.load_api()
    yield url
    auth._index.destroy()
    (auth._secret, auth._index, auth.sig, auth_db.db_url, auth_db._dbf,
     auth_db.auth, auth_db.credentials_cache_ttl) = saved
    auth_db._cache.clear()


def make_request(i):
    user = f"user{i % USERS}"
    ch = {"realm": "example.com", "nonce": auth.new_nonce(), "qop": "auth"}
    cred = credentials(ch, user, f"pw{i % USERS}", "REGISTER",
                       "sip:example.com")
    data = modkit.request(method="REGISTER", ruri="sip:example.com",
                          extra=[f"Authorization: {cred}"],
                          callid=f"b{i}@bench")
    data = data.replace(b"To: <sip:bob@example.com>",
                        f"To: <sip:{user}@example.com>".encode())
    return modkit.parse(data)


def run(benchmark, cache_ttl, users_seen):
    auth_db.credentials_cache_ttl = cache_ttl
    auth_db._cache.clear()
    counter = itertools.count()
    if cache_ttl:
        # the rows are in the cache before the timing starts
        for i in range(users_seen):
            assert auth_db.www_authorize(make_request(i), "",
                                         "subscriber") == 1

    def setup():
        return (make_request(next(counter) % users_seen),), {}

    def one(msg):
        rc = auth_db.www_authorize(msg, "", "subscriber")
        assert rc == 1
    benchmark.pedantic(one, setup=setup, rounds=2000 if
                       benchmark.enabled else 3)


def test_www_authorize_row_uncached(benchmark, subscribers):
    run(benchmark, 0, USERS)


def test_www_authorize_row_cached(benchmark, subscribers):
    run(benchmark, 600, 50)
