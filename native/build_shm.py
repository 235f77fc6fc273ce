"""cffi build script (API mode) for ``opensipy._shm`` from native/shm.c.

setup.py picks up ``native/build_shm.py:ffibuilder``.  For development,
``python native/build_shm.py`` compiles the extension in place into
``opensipy/`` (temporary files under ``native/_build``).
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(path):
    """Paths relative to the current directory when possible (setuptools
    prefers relative source paths), absolute otherwise."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


with open(os.path.join(HERE, "shm.h")) as _f:
    _header = _f.read()
_cdef = re.search(r"/\* CDEF-BEGIN \*/(.*)/\* CDEF-END \*/", _header, re.S).group(1)


def make_builder(absolute=False):
    fix = (lambda p: p) if absolute else _rel
    ffi = FFI()
    ffi.cdef(_cdef)
    # Reports a lock taken over from a dead process; implemented in Python
    # (opensipy.shm) and called from shm.c, a separate translation unit.
    ffi.cdef('extern "Python+C" void _shm_owner_dead(const char *what, int pid);')
    ffi.set_source(
        "opensipy._shm",
        '#include "shm.h"\n',
        sources=[fix(os.path.join(HERE, "shm.c"))],
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
    # compile() leaves the extension under tmpdir/opensipy/; move it in place
    import glob
    import shutil
    target = os.path.join(os.path.dirname(HERE), "opensipy")
    for so in glob.glob(os.path.join(tmp, "opensipy", "_shm*.so")):
        shutil.copy2(so, target)
        print("built", os.path.join(target, os.path.basename(so)))
