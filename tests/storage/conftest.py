import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engines import PgCluster, RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster():
    """One throw-away PostgreSQL cluster for the session (removed after)."""
    c = PgCluster()
    try:
        c.init().start()
        yield c
    finally:
        c.destroy()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh, empty database in the session's cluster."""
    return pg_cluster.url(pg_cluster.new_database())


@pytest.fixture
def redis_server():
    r = RedisServer()
    try:
        yield r.start()
    finally:
        r.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """The same test on both engines: an empty database URL."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/sub/dir/test.db"
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.url(cluster.new_database())
