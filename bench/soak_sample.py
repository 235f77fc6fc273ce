"""Samples a running opensipy during a soak: the RSS of its process tree
(psutil), and over MI (mi_datagram, BENCH_MI_PORT, default 8099) shared
memory in use and tm's transactions in use, every INTERVAL seconds for
DURATION seconds; prints one line a sample.  Use beside a long fixed-rate
step of the harness:

    bench/run.sh --proxies opensipy --rates 1200 --step-seconds 600 stateful &
    python3 bench/soak_sample.py 620 30
"""
import json
import os
import socket
import sys
import time

import psutil


def opensipy_root():
    """The attendant (its title, set with setproctitle, names it)."""
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("opensipy: attendant"):
            return p
    return None


def mi(port, stats):
    req = {"jsonrpc": "2.0", "id": 1, "method": "get_statistics",
           "params": {"statistics": stats}}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(json.dumps(req).encode(), ("127.0.0.1", port))
        return json.loads(s.recv(65535)).get("result", {})


def main():
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 600
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 30
    port = int(os.environ.get("BENCH_MI_PORT", "8099"))
    end = time.time() + duration
    print("t_s  rss_kb  shm_used  inuse_transactions  processes", flush=True)
    t0 = time.time()
    while time.time() < end:
        root = opensipy_root()
        if root is None:
            time.sleep(1)
            continue
        procs = [root] + root.children(recursive=True)
        rss = 0
        for p in procs:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        try:
            st = mi(port, ["shmem:used_size", "tm:inuse_transactions"])
        except OSError:
            st = {}
        print(f"{time.time() - t0:5.0f}  {rss // 1024:7d}  "
              f"{st.get('shmem:used_size', '?')}  "
              f"{st.get('tm:inuse_transactions', '?')}  {len(procs)}",
              flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    main()
