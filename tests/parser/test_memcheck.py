"""The C parser under valgrind over the whole SIP corpus: every entry point
the fuzz target exercises (parse, bodies, URIs, params, lumps, build, reply,
framing) and the lump-mode seeds (random lump operations against a reference
builder), no invalid access, no leak (native/fuzz/Makefile, target valgrind)."""
import shutil
import subprocess

import pytest

from sipcorpus import ROOT, CORPUS
from shareddata import need_shared


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("gcc") is None,
                    reason="valgrind and gcc are needed")
@need_shared("sip-corpus", "rfc4475")
def test_valgrind_clean_over_the_corpus():
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "native" / "fuzz"), "valgrind",
                        "CC=gcc", f"CORPUS={CORPUS.resolve()}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ran 69 inputs" in r.stdout   # 63 SIP messages, 6 lump-mode seeds
    assert "ERROR SUMMARY" not in r.stderr and "definitely lost" not in r.stderr
