"""Parser tests: an in-place (re)build of opensipy._sipparser when its C
sources are newer (corpus helpers live in sipcorpus.py)."""
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native"


def _ensure_built():
    """(re)build the extension in place when the one Python would import is
    missing or older than the C sources (a development convenience; an
    installed package is left alone)"""
    import importlib.util
    spec = importlib.util.find_spec("opensipy._sipparser")
    newest_src = max(os.path.getmtime(NATIVE / n) for n in ("sipparser.c", "sipparser.h"))
    if spec is not None and spec.origin and os.path.getmtime(spec.origin) >= newest_src:
        return
    if spec is not None and spec.origin and not spec.origin.startswith(str(ROOT)):
        return
    if not os.access(ROOT / "opensipy", os.W_OK):
        return
    subprocess.run([sys.executable, str(NATIVE / "build_sipparser.py")], check=True,
                   cwd=str(ROOT), stdout=subprocess.DEVNULL)


_ensure_built()
