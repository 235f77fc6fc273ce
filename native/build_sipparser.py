"""cffi build script for opensipy._sipparser (out-of-line API mode).

setup.py picks up ``native/build_sipparser.py:ffibuilder``.  For a development
build in place run ``python native/build_sipparser.py``: the extension is
compiled in native/_build and copied next to the opensipy package.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _cdef_text():
    with open(os.path.join(HERE, "sipparser.h")) as f:
        text = f.read()
    start = text.index("/* CDEF-BEGIN */") + len("/* CDEF-BEGIN */")
    end = text.index("/* CDEF-END */")
    return text[start:end]


def make_builder(absolute=False):
    """The FFI builder; setup.py wants source paths relative to the project
    root, the in-place build (which compiles inside native/_build) absolute."""
    rel = (lambda p: p) if absolute else (lambda p: os.path.relpath(p, os.path.dirname(HERE)))
    builder = FFI()
    builder.cdef(_cdef_text())
    builder.set_source(
        "opensipy._sipparser",
        '#include "sipparser.h"',
        sources=[rel(os.path.join(HERE, "sipparser.c"))],
        include_dirs=[rel(HERE)],
        depends=[rel(os.path.join(HERE, "sipparser.h"))],
        extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wno-unused-function"],
    )
    return builder


ffibuilder = make_builder()


if __name__ == "__main__":
    import glob
    import shutil

    root = os.path.dirname(HERE)
    os.chdir(root)
    tmp = os.path.join("native", "_build")
    make_builder(absolute=True).compile(tmpdir=tmp, verbose=False)
    dest = os.path.join(root, "opensipy")
    for path in glob.glob(os.path.join(tmp, "opensipy", "_sipparser*.so")):
        shutil.copy2(path, dest)
        print("built", os.path.join(dest, os.path.basename(path)))
