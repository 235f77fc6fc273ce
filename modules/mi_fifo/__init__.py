"""mi_fifo: the MI over a named pipe, OpenSIPS 3.x framing.

The FIFO is created by mod_init (so a bad path stops the start with a clear
error), read by one dedicated module process ("MI FIFO"), and removed by
the module's destroy function when the server stops.  See README.md.
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import select
import stat
import time

from opensipy import log, mi
from opensipy.mi.fifo import FifoParser
from opensipy.sr_module import (INT_PARAM, PROC_FLAG_INITCHILD, STR_PARAM,
                                ModuleExports, ParamExport, ProcExport)

# ---- parameters
fifo_name = "/run/opensipy/opensipy_fifo"
fifo_mode = 0o600
fifo_user = ""
fifo_group = ""
reply_dir = "/tmp/"

REPLY_OPEN_WAIT = 2.0     # seconds to wait for the client to open its FIFO
REPLY_WRITE_WAIT = 5.0    # seconds to wait for the client to read a reply
CHECK_EVERY = 5.0         # seconds between checks that our FIFO is there

_created_ino = None       # (st_dev, st_ino) of the FIFO mod_init created


def _ids():
    uid = gid = -1
    if fifo_user:
        try:
            uid = pwd.getpwnam(fifo_user).pw_uid
        except KeyError:
            raise ValueError(f"mi_fifo: unknown fifo_user '{fifo_user}'")
    if fifo_group:
        try:
            gid = grp.getgrnam(fifo_group).gr_gid
        except KeyError:
            raise ValueError(f"mi_fifo: unknown fifo_group '{fifo_group}'")
    return uid, gid


def create_fifo() -> tuple:
    """Create the FIFO (and its directory); a stale FIFO left by a previous
    run is replaced, any other file at that path is an error."""
    path = fifo_name
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISFIFO(st.st_mode):
            raise ValueError(f"mi_fifo: {path} exists and is not a FIFO")
        log.LM_NOTICE(f"mi_fifo: replacing the stale FIFO {path}")
        os.unlink(path)
    uid, gid = _ids()
    os.mkfifo(path, 0o600)
    os.chmod(path, fifo_mode)
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid)
    st = os.stat(path)
    return st.st_dev, st.st_ino


def mod_init() -> int:
    global _created_ino
    if not fifo_name:
        raise ValueError("mi_fifo: fifo_name is empty")
    if not 0 <= fifo_mode <= 0o7777:
        raise ValueError(f"mi_fifo: bad fifo_mode {fifo_mode:o}")
    try:
        _created_ino = create_fifo()
    except OSError as e:
        raise ValueError(f"mi_fifo: cannot create {fifo_name}: "
                         f"{e.strerror}") from None
    if not os.path.exists(reply_dir):
        # as the FIFO's own folder (the default script puts both in
        # /run/opensipy: a private /tmp would hide /tmp replies)
        try:
            os.makedirs(reply_dir, mode=0o750, exist_ok=True)
        except OSError as e:
            raise ValueError(f"mi_fifo: cannot create reply_dir "
                             f"{reply_dir}: {e.strerror}") from None
    if not os.path.isdir(reply_dir):
        raise ValueError(f"mi_fifo: reply_dir {reply_dir} is not a "
                         f"directory")
    return 0


def mod_destroy() -> None:
    """Remove the FIFO we created (not one a newer server replaced)."""
    if _created_ino is None:
        return
    try:
        st = os.lstat(fifo_name)
        if (st.st_dev, st.st_ino) == _created_ino:
            os.unlink(fifo_name)
    except OSError:
        pass


# ------------------------------------------------------------ the process

def write_reply(name: bytes, text: str) -> bool:
    """Write one reply line into reply_dir/name; False when the client is
    gone or never opened its FIFO."""
    path = os.path.join(reply_dir, name.decode("ascii"))
    deadline = time.monotonic() + REPLY_OPEN_WAIT
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as e:
            if e.errno == errno.ENXIO and time.monotonic() < deadline:
                time.sleep(0.005)       # the client opens it right after
                continue
            log.LM_ERR(f"mi_fifo: cannot open reply FIFO {path}: "
                       f"{e.strerror}")
            return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            log.LM_ERR(f"mi_fifo: reply target {path} is not a FIFO")
            return False
        data = (text + "\n").encode("utf-8")
        deadline = time.monotonic() + REPLY_WRITE_WAIT
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                log.LM_ERR(f"mi_fifo: client of {path} does not read its "
                           f"reply; dropped")
                return False
            _, w, _ = select.select([], [fd], [], left)
            if not w:
                continue
            try:
                n = os.write(fd, data)
            except BlockingIOError:
                continue
            except BrokenPipeError:
                log.LM_ERR(f"mi_fifo: client of {path} went away")
                return False
            data = data[n:]
        return True
    finally:
        os.close(fd)


def serve(name: bytes, body) -> None:
    text = mi.handle_text(body if body is not None else b"")
    try:
        if text is not None and name:
            write_reply(name, text)
    finally:
        mi.run_after_reply()


def _open_fds() -> tuple:
    """Read end, plus our own write end that keeps the FIFO from reporting
    EOF between clients."""
    rfd = os.open(fifo_name, os.O_RDONLY | os.O_NONBLOCK)
    try:
        wfd = os.open(fifo_name, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        os.close(rfd)
        raise
    return rfd, wfd


_inherited = None     # (rfd, wfd) opened by the attendant for the child


def pre_fork() -> int:
    """In the attendant, just before the FIFO process is forked: open the
    FIFO so that it has a reader from the moment the server is ready."""
    global _inherited
    _inherited = _open_fds()
    return 0


def post_fork() -> int:
    """In the attendant, once forked: only the child keeps the FIFO open."""
    global _inherited
    if _inherited is not None:
        for fd in _inherited:
            os.close(fd)
        _inherited = None
    return 0


class FifoServer:
    def __init__(self):
        self.rfd = self.wfd = -1
        self.parser = FifoParser(max_request=mi.MAX_REQUEST)

    def open(self) -> None:
        global _inherited
        self.close()
        if _inherited is not None:
            self.rfd, self.wfd = _inherited
            _inherited = None
        else:
            self.rfd, self.wfd = _open_fds()

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                os.close(fd)
        self.rfd = self.wfd = -1

    def still_ours(self) -> bool:
        try:
            st = os.stat(fifo_name)
        except OSError:
            return False
        mine = os.fstat(self.rfd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def run(self) -> None:
        global _created_ino
        self.open()
        next_check = time.monotonic() + CHECK_EVERY
        while True:
            log.refresh()
            r, _, _ = select.select([self.rfd], [], [], 1.0)
            if r:
                try:
                    data = os.read(self.rfd, 65536)
                except BlockingIOError:
                    data = b""
                for name, body in self.parser.feed(data):
                    serve(name, body)
            for name, body in self.parser.expire():
                serve(name, body)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_EVERY
                if not self.still_ours():
                    log.LM_WARN(f"mi_fifo: {fifo_name} was removed or "
                                f"replaced; creating it again")
                    try:
                        _created_ino = create_fifo()
                        self.open()
                    except (OSError, ValueError) as e:
                        log.LM_ERR(f"mi_fifo: cannot recreate "
                                   f"{fifo_name}: {e}")


def fifo_process(rank: int) -> None:
    mi.init_child()
    FifoServer().run()


exports = ModuleExports(
    name="mi_fifo",
    params=[
        ParamExport("fifo_name", STR_PARAM, "fifo_name"),
        ParamExport("fifo_mode", INT_PARAM, "fifo_mode"),
        ParamExport("fifo_user", STR_PARAM, "fifo_user"),
        ParamExport("fifo_group", STR_PARAM, "fifo_group"),
        ParamExport("reply_dir", STR_PARAM, "reply_dir"),
    ],
    procs=[ProcExport("MI FIFO", pre_fork, post_fork, fifo_process, 1,
                      PROC_FLAG_INITCHILD)],
    init_f=mod_init,
    destroy_f=mod_destroy,
)
