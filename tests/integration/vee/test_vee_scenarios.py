"""Every validation rule as a readable scenario (tests/integration/vee/scenarios/*.txt), run in
each of its modes: the batch run and the ingest path must reach the same verdicts."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from meterline.ingest.vee.config import load_config
from meterline.store.company import Company

from .scenario import modes_of, play

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CASES = [pytest.param(p, mode, id=f"{p.stem}-{mode}") for p in sorted(SCENARIOS.glob("*.txt")) for mode in modes_of(p)]


@pytest.mark.parametrize(("path", "mode"), CASES)
def test_scenario(path: Path, mode: str, conn: psycopg.Connection, db_dsn: str, company: Company) -> None:
    play(path, conn, db_dsn, company.id, load_config(), mode)


def test_every_reading_rule_has_a_scenario() -> None:
    from meterline.ingest.vee import rules

    text = "\n".join(p.read_text(encoding="utf-8") for p in SCENARIOS.glob("*.txt"))
    # reread_requested is raised by a person's review action (test_vee_alerts_review), not by data
    missing = [code for code in rules.RULES if code not in text and code != "reread_requested"]
    assert not missing, f"rules without a scenario: {missing}"
