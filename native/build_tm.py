"""cffi build script (API mode) for ``opensipy._tm`` from native/tm.c.

setup.py picks up ``native/build_tm.py:ffibuilder``.  For development,
``python native/build_tm.py`` compiles the extension in place into
``opensipy/``.  The structs are declared with ``...;`` so cffi takes their
layout from tm.h (the mutexes stay hidden from Python); the functions are
read from tm.h's interface block, so they are declared once.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

_TYPES = """
enum {
    TM_MAX_BRANCHES, TM_MAX_BUF, TM_MAX_KEY, TM_NLISTS,
    TM_F_INVITE, TM_F_CANCELED, TM_F_DELETED, TM_F_LOCAL, TM_F_IN_FAILURE,
    TM_F_FINAL_SENT, TM_F_NOCANCEL, TM_F_ACKED, TM_F_LOCAL_UAC, TM_F_DELCB,
    TM_B_USED, TM_B_PROVISIONAL, TM_B_CANCEL_PENDING, TM_B_CANCEL_SENT,
    TM_B_FINAL, TM_B_TIMEOUT, TM_B_DROPPED,
    TM_BUF_REQ, TM_BUF_RPL, TM_BUF_BLOB, TM_BUF_BR_REQ, TM_BUF_BR_RPL,
    TM_BUF_BR_CANCEL,
    TM_TW_UAS_RETR, TM_TW_WAIT, TM_TW_BR_RETR, TM_TW_BR_FR,
    TM_K_RETR_REQ, TM_K_RETR_RPL, TM_K_RETR_CANCEL, TM_K_PY, TM_K_DELETE,
};

typedef struct { int32_t list; int32_t kind; uint32_t gen; ...; } tm_timer_t;
typedef struct { int32_t fd; int32_t salen; int32_t si; int32_t conn; uint8_t sa[32]; ...; } tm_dst_t;
typedef struct {
    int32_t state; int32_t status; int32_t flags;
    tm_dst_t dst;
    char *req; uint32_t req_len;
    char *rpl; uint32_t rpl_len;
    char *cancel; uint32_t cancel_len;
    tm_timer_t retr; tm_timer_t fr;
    ...;
} tm_branch_t;
typedef struct tm_cell {
    uint32_t magic; uint32_t hash; uint32_t label; int32_t ref;
    int32_t flags; int32_t method_id; int32_t uas_state; int32_t uas_status;
    int32_t nbranches; int32_t first_branch; int32_t relayed_branch;
    int32_t deleted;
    int64_t fr_timeout; int64_t fr_inv_timeout; int64_t created;
    uint32_t cseq; uint32_t key_len; char *key;
    char *req; uint32_t req_len;
    char *rpl; uint32_t rpl_len;
    char *blob; uint32_t blob_len;
    tm_dst_t uas_dst;
    tm_timer_t uas_retr; tm_timer_t wait;
    tm_branch_t br[];
    ...;
} tm_cell_t;
typedef struct { tm_cell_t *cell; int32_t which; int32_t branch; uint32_t gen; ...; } tm_event_t;

"""

# the functions: tm.h's interface block, read as it is (one declaration)
_IFACE = "/* the interface (cffi reads this block from here to #endif) */"


def _prototypes() -> str:
    with open(os.path.join(HERE, "tm.h")) as f:
        text = f.read()
    start = text.index(_IFACE) + len(_IFACE)
    return text[start:text.rindex("#endif")]


CDEF = _TYPES + _prototypes()


def _rel(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def make_builder(absolute=False):
    fix = (lambda p: p) if absolute else _rel
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "opensipy._tm",
        '#include "tm.h"\n',
        sources=[fix(os.path.join(HERE, "tm.c"))],
        include_dirs=[fix(HERE)],
        extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra",
                            "-Wno-unused-parameter"],
        libraries=["pthread"],
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    tmp = os.path.join(HERE, "_build")
    os.makedirs(tmp, exist_ok=True)
    make_builder(absolute=True).compile(tmpdir=tmp, verbose=False)
    import glob
    import shutil
    target = os.path.join(os.path.dirname(HERE), "opensipy")
    for so in glob.glob(os.path.join(tmp, "opensipy", "_tm*.so")):
        shutil.copy2(so, target)
        print("built", os.path.join(target, os.path.basename(so)))
