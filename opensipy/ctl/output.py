"""Output formats of opensipyctl (``-o``), shaped like opensips-cli's:
``json`` (one line), ``pretty`` (indented JSON, the default), ``yaml``
(needs PyYAML), ``lines`` (``key: value`` lines, nested indented), ``none``.
"""
from __future__ import annotations

import json
from typing import Any, List

FORMATS = ("json", "pretty", "yaml", "lines", "none")


class OutputError(Exception):
    pass


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise OutputError(f"unknown output format '{fmt}' (one of: "
                          f"{', '.join(FORMATS)})")
    if fmt == "yaml":
        try:
            import yaml  # noqa: F401
        except ImportError:
            raise OutputError("output format 'yaml' needs PyYAML: install "
                              "it with 'pip install PyYAML'") from None


def _lines(value: Any, indent: int, out: List[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                out.append(f"{pad}{k}:")
                _lines(v, indent + 4, out)
            else:
                out.append(f"{pad}{k}: {v}")
    elif isinstance(value, list):
        for v in value:
            _lines(v, indent, out)
    else:
        out.append(f"{pad}{value}")


def render(result: Any, fmt: str) -> str:
    """The text to print for a result ('' for none)."""
    check_format(fmt)
    if fmt == "none":
        return ""
    if fmt == "json":
        return json.dumps(result)
    if fmt == "pretty":
        return json.dumps(result, indent=4)
    if fmt == "yaml":
        import yaml
        return yaml.safe_dump(result, default_flow_style=False,
                              sort_keys=False).rstrip("\n")
    out: List[str] = []
    _lines(result, 0, out)
    return "\n".join(out)
