"""The external SIP corpus (../shared/sip-corpus beside the clone) for the
parser tests."""
import csv
import hashlib
from pathlib import Path

from shareddata import need_shared, shared_path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = shared_path("sip-corpus")


def corpus_rows(folder):
    """MANIFEST.tsv rows of one corpus folder ([] when the corpus is absent)."""
    path = CORPUS / folder / "MANIFEST.tsv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def corpus_bytes(folder, name, sha256=None):
    data = (CORPUS / folder / (name + ".dat")).read_bytes()
    if sha256 is not None:
        assert hashlib.sha256(data).hexdigest() == sha256, f"{name}.dat changed"
    return data


def rfc5118_wire(data):
    """RFC 5118's archive uses bare LF and two files lack the empty line that
    ends the headers: make a wire message (CRLF, closing empty line,
    Content-Length recomputed from the body as found)."""
    text = data.replace(b"\r\n", b"\n")
    if b"\n\n" in text:
        head, body = text.split(b"\n\n", 1)
    else:
        head, body = text.rstrip(b"\n"), b""
    lines = head.split(b"\n")
    body = body.replace(b"\n", b"\r\n")
    out = []
    for line in lines:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"content-length", b"l"):
            line = b"Content-Length: " + str(len(body)).encode()
        out.append(line)
    return b"\r\n".join(out) + b"\r\n\r\n" + body


# skips when ../shared is missing (fails under CI)
need_corpus = need_shared("sip-corpus", "rfc4475", "MANIFEST.tsv")
