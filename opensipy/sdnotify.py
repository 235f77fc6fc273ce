"""The sd_notify protocol without libsystemd: one datagram to $NOTIFY_SOCKET.

systemd gives a ``Type=notify`` service the path of a unix datagram socket in
``NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).  We send
``READY=1`` once every process finished its initialisation (the attendant,
after child_init of every child and its own), ``STOPPING=1`` when shutdown
starts (the attendant, before it stops the children), ``RELOADING=1`` and
then ``READY=1`` around MI ``reload_routes`` (the MI process: the unit says
``NotifyAccess=all``), and ``STATUS=...`` lines for ``systemctl status``.
"""
from __future__ import annotations

import os
import socket

from . import log


def notify(state: str, env=None) -> bool:
    """Send one notification; False when not under systemd or on error."""
    env = os.environ if env is None else env
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError as e:
        log.LM_WARN(f"sd_notify to {env.get('NOTIFY_SOCKET')!r} failed: {e}")
        return False
