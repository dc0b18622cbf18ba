"""The demo's pushing-meters step: simulated meters through the ingest service, faults included."""

import re
import uuid
from pathlib import Path

import pytest

from meterline.cli import main


def test_demo_pushes_readings_through_the_ingest_service(monkeypatch: pytest.MonkeyPatch, pg_server, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from psycopg import sql

    monkeypatch.setenv("METERLINE_DSN", pg_server.dsn)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)
    name = f"ml_demo_{uuid.uuid4().hex[:8]}"
    try:
        assert main(["demo", "--meters", "400", "--database", name]) == 0
        out = capsys.readouterr().out
    finally:
        with pg_server.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    sent = int(re.search(r"messages sent\s*│\s*([\d,]+)", out).group(1).replace(",", ""))
    written = int(re.search(r"readings written\s*│\s*([\d,]+)", out).group(1).replace(",", ""))
    repeats = int(re.search(r"repeats recognised\s*│\s*([\d,]+)", out).group(1).replace(",", ""))
    dead_line = re.search(r"pushing meters.*?dead letters\s*│\s*([^│]+)│", out, re.S).group(1)
    dead = sum(int(n) for n in re.findall(r"(\d+)", dead_line))
    assert sent > 200 and written > 0
    assert written + repeats + dead == sent  # every message accounted for: stored, a repeat, or refused
