import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for d in ("auth", "modules", "storage", "core"):
    p = str(HERE.parent / d)
    if p not in sys.path:
        sys.path.insert(0, p)
