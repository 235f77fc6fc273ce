"""opensipyctl as root reaching a server that runs as its own user (the
unit's User=opensipy): the reply FIFO is given to the server's user (it
could not open a root-owned 0600 FIFO otherwise)."""
import json
import os
import re
import select
import threading
import time

import pytest

from opensipy.ctl.client import FifoClient

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_reply_fifo_belongs_to_the_servers_user(tmp_path):
    fifo = tmp_path / "opensipy_fifo"
    os.mkfifo(fifo, 0o600)
    os.chown(fifo, NOBODY, NOBODY)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    seen = {}

    def serve():
        data = b""
        deadline = time.monotonic() + 10
        m = None
        while m is None and time.monotonic() < deadline:
            if select.select([rfd], [], [], 0.1)[0]:
                data += os.read(rfd, 65536)
            m = re.fullmatch(rb":([^:]+):(\{.*\})\s*", data, re.S)
        name = m.group(1).decode()
        req = json.loads(m.group(2))
        path = tmp_path / name
        seen["uid"] = os.stat(path).st_uid
        seen["mode"] = os.stat(path).st_mode & 0o777
        with open(path, "w") as f:
            f.write(json.dumps({"jsonrpc": "2.0", "result": "OK",
                                "id": req["id"]}) + "\n")

    th = threading.Thread(target=serve)
    th.start()
    try:
        assert FifoClient(str(fifo), str(tmp_path), 10).call("ps") == "OK"
    finally:
        th.join()
        os.close(rfd)
    assert seen == {"uid": NOBODY, "mode": 0o600}
