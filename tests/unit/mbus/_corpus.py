"""The M-Bus and wM-Bus corpora (copied into ``tests/corpora``)."""

from __future__ import annotations

from pathlib import Path

from tests.corpora import CORPORA, LIBMBUS, WMBUS  # noqa: F401  (re-exported)


def read_hex(path: Path) -> str:
    return path.read_text(encoding="ascii")
