"""mi_datagram: the MI over UDP or a Unix datagram socket.

One JSON-RPC request per datagram; the reply goes back to the sender's
address in one datagram.  The socket is bound by mod_init (so a bad
address or a busy port stops the start) and served by one dedicated module
process ("MI Datagram").  See README.md.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import select
import socket
import stat

from opensipy import log, mi
from opensipy.sr_module import (INT_PARAM, PROC_FLAG_INITCHILD, STR_PARAM,
                                ModuleExports, ParamExport, ProcExport)

# ---- parameters
socket_name = "udp:127.0.0.1:8080"
unix_socket_mode = 0o660
unix_socket_user = ""
unix_socket_group = ""

MAX_DATAGRAM = 65535
MAX_UDP_REPLY = 65507

_sock = None
_unix_path = None
_unix_ino = None


def parse_socket_name(name: str):
    """('udp', (host, port)) or ('unix', path)."""
    name = name.strip()
    if name.lower().startswith("udp:"):
        rest = name[4:]
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"mi_datagram: bad socket_name '{name}' "
                             f"(udp:host:port)")
        port = int(port)
        if not 0 <= port < 65536:
            raise ValueError(f"mi_datagram: bad port in '{name}'")
        return "udp", (host.strip("[]"), port)
    if name.startswith("/") or name.startswith("."):
        return "unix", name
    raise ValueError(f"mi_datagram: bad socket_name '{name}' (udp:host:port "
                     f"or the path of a Unix socket)")


def bound_address():
    """The address actually bound (a UDP port 0 becomes the real one)."""
    return _sock.getsockname() if _sock is not None else None


def mod_init() -> int:
    global _sock, _unix_path, _unix_ino
    kind, addr = parse_socket_name(socket_name)
    if kind == "udp":
        infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_DGRAM)
        family, _, _, _, sa = infos[0]
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind(sa)
        except OSError as e:
            s.close()
            raise ValueError(f"mi_datagram: cannot bind {socket_name}: "
                             f"{e.strerror}") from None
    else:
        try:
            st = os.lstat(addr)
            if not stat.S_ISSOCK(st.st_mode):
                raise ValueError(f"mi_datagram: {addr} exists and is not a "
                                 f"socket")
            os.unlink(addr)
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(os.path.abspath(addr)), mode=0o755,
                    exist_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.bind(addr)
            os.chmod(addr, unix_socket_mode)
            uid = pwd.getpwnam(unix_socket_user).pw_uid \
                if unix_socket_user else -1
            gid = grp.getgrnam(unix_socket_group).gr_gid \
                if unix_socket_group else -1
            if uid != -1 or gid != -1:
                os.chown(addr, uid, gid)
        except (OSError, KeyError) as e:
            s.close()
            raise ValueError(f"mi_datagram: cannot set up {addr}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
        _unix_path = addr
        st = os.stat(addr)
        _unix_ino = (st.st_dev, st.st_ino)
    _sock = s
    return 0


def mod_destroy() -> None:
    global _sock
    if _sock is not None:
        _sock.close()
        _sock = None
    if _unix_path:
        try:
            st = os.lstat(_unix_path)
            if (st.st_dev, st.st_ino) == _unix_ino:
                os.unlink(_unix_path)
        except OSError:
            pass


def _too_large(text: str) -> str:
    try:
        rid = json.loads(text).get("id")
    except ValueError:
        rid = None
    err = mi.MIError(mi.SERVER_ERROR, data="reply too large for a datagram")
    return json.dumps({"jsonrpc": "2.0", "error": err.to_json(), "id": rid})


def serve_one(sock) -> None:
    try:
        data, addr = sock.recvfrom(MAX_DATAGRAM)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as e:
        log.LM_ERR(f"mi_datagram: receive failed: {e}")
        return
    text = mi.handle_text(data)
    try:
        if text is None or not addr:
            return
        out = text.encode("utf-8")
        if len(out) > MAX_UDP_REPLY:
            out = _too_large(text).encode("utf-8")
        try:
            sock.sendto(out, addr)
        except OSError as e:
            log.LM_ERR(f"mi_datagram: cannot reply to {addr}: {e}")
    finally:
        mi.run_after_reply()


def datagram_process(rank: int) -> None:
    mi.init_child()
    sock = _sock
    sock.setblocking(False)
    while True:
        log.refresh()
        r, _, _ = select.select([sock], [], [], 1.0)
        if r:
            serve_one(sock)


exports = ModuleExports(
    name="mi_datagram",
    params=[
        ParamExport("socket_name", STR_PARAM, "socket_name"),
        ParamExport("unix_socket_mode", INT_PARAM, "unix_socket_mode"),
        ParamExport("unix_socket_user", STR_PARAM, "unix_socket_user"),
        ParamExport("unix_socket_group", STR_PARAM, "unix_socket_group"),
    ],
    procs=[ProcExport("MI Datagram", None, None, datagram_process, 1,
                      PROC_FLAG_INITCHILD)],
    init_f=mod_init,
    destroy_f=mod_destroy,
)
