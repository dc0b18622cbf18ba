"""Where the shared conformance corpora are (``<repo root>/../shared/corpora``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CORPORA = ROOT.parent / "shared" / "corpora"
LIBMBUS = CORPORA / "mbus-libmbus"
WMBUS = CORPORA / "wmbus"


def read_hex(path: Path) -> str:
    return path.read_text(encoding="ascii")
