"""The conformance corpora copied into the tests (sources and licences: README.md here)."""

from pathlib import Path

CORPORA = Path(__file__).resolve().parent
LIBMBUS = CORPORA / "mbus-libmbus"
WMBUS = CORPORA / "wmbus"
LORAWAN = CORPORA / "lorawan"
