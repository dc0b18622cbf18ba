"""``meterline export``, ``meterline report`` and ``meterline metrics`` in process against a fresh database."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from meterline.cli import main
from tests.integration.exports import exportkit


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_dsn: str, tmp_path: Path, utility: exportkit.Utility) -> exportkit.Utility:
    monkeypatch.setenv("METERLINE_DSN", db_dsn)
    monkeypatch.setenv("METERLINE_COMPANY", "acme")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.delenv("METERLINE_USER", raising=False)
    monkeypatch.chdir(tmp_path)
    return utility


def test_export_commands(env: exportkit.Utility, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "all", "--period", "2026-10", "--out", "out"]) == 0
    out = capsys.readouterr().out
    assert "bills: 4 bill(s), 153.72 issued" in out and "notices: 4 account(s), 183.72 due" in out
    assert "readings 6, bills 4, bill_lines 8, payments 1" in out
    first = {p: p.read_bytes() for p in sorted((tmp_path / "out").rglob("*")) if p.is_file()}
    assert len(first) == 12
    for kind in ("bills", "notices", "finance", "data"):
        assert main(["export", kind, "--period", "2026-10", "--out", "out"]) == 0
    assert {p: p.read_bytes() for p in sorted((tmp_path / "out").rglob("*")) if p.is_file()} == first
    capsys.readouterr()
    assert main(["export", "bills", "--period", "2026-1", "--out", "out"]) != 0
    err = capsys.readouterr().out
    assert "not YYYY-MM" in err and "Traceback" not in err
    with psycopg.connect(env_dsn()) as conn:
        actions = conn.execute("SELECT action, after FROM audit_log WHERE action = 'export.run' ORDER BY id").fetchall()
    assert len(actions) == 5 and actions[0][1]["personal_data"] == "none"


def env_dsn() -> str:
    import os

    return os.environ["METERLINE_DSN"]


def test_report_commands(env: exportkit.Utility, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "collection", "--period", "2026-10", "--as-of", "2026-11-24", "--months", "2",
                 "--csv", "c.csv", "--chart", "c.png"]) == 0
    out = capsys.readouterr().out
    assert "回收率" in out and "D1" in out and "40.00" in out
    assert (tmp_path / "c.csv").read_text(encoding="utf-8").startswith("district,month,bills,billed")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", "reading", "--period", "2026-10", "--csv", "r.csv"]) == 0
    out = capsys.readouterr().out
    assert "50.0%" in out and "李四" in out
    assert (tmp_path / "r.csv").exists() and (tmp_path / "r_reading_readers.csv").exists()
    assert main(["report", "aging", "--as-of", "2026-11-24"]) == 0
    assert "d31_60" in capsys.readouterr().out
    assert main(["report", "nrw", "--period", "2026-10", "--chart", "n.png"]) == 0
    assert "20.0%" in capsys.readouterr().out and (tmp_path / "n.png").exists()
    assert main(["report", "run", "--period", "2026-10"]) == 0
    assert "completed" in capsys.readouterr().out
    assert main(["report", "aging", "--chart", "x.png"]) == 1
    assert "collection and nrw only" in capsys.readouterr().out
    assert main(["report", "aging", "--as-of", "yesterday"]) == 1
    assert "is not a date" in capsys.readouterr().out
    assert main(["export", "notices", "--period", "2026-10", "--run", "1"]) == 1
    assert "--run applies to" in capsys.readouterr().out
    assert main(["report", "aging", "--as-of", "tomorrow"]) == 1
    assert "is not a date" in capsys.readouterr().out


def test_permissions(env: exportkit.Utility, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "add", "boss", "Boss"]) == 0
    assert main(["--user", "boss", "user", "add", "rd", "Reader"]) == 0
    assert main(["--user", "boss", "user", "grant", "rd", "meter_reader", "--in", "acme"]) == 0
    assert main(["--user", "boss", "user", "add", "fin", "Finance"]) == 0
    assert main(["--user", "boss", "user", "grant", "fin", "finance", "--in", "acme"]) == 0
    capsys.readouterr()
    assert main(["--user", "rd", "export", "bills", "--period", "2026-10"]) == 3
    assert "exports.run" in capsys.readouterr().out
    assert main(["--user", "rd", "report", "aging"]) == 3
    assert "reports.read" in capsys.readouterr().out
    assert main(["--user", "fin", "export", "finance", "--period", "2026-10", "--out", "o"]) == 0
    assert main(["--user", "fin", "report", "aging"]) == 0


def test_metrics_show(env: exportkit.Utility, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(env_dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO dead_letter (company_id, source, reason, message) VALUES (%s, 'mqtt', 'bad_json', 'x'),"
                     " (%s, 'mqtt', 'bad_json', 'y'), (NULL, 'coap', 'unknown_meter', 'z')", [env.company_id] * 2)
        conn.execute("INSERT INTO alert (company_id, meter_id, rule, severity, message) VALUES (%s, %s, 'leak', "
                     "'warning', 'flow')", [env.company_id, env.meters["M1"]])
    assert main(["metrics", "show"]) == 0
    text = capsys.readouterr().out
    lines = set(text.splitlines())
    assert 'meterline_billing_run_duration_seconds{company="acme",cycle="M"} 10.0' in lines
    assert 'meterline_billing_run_accounts_per_second{company="acme",cycle="M"} 0.4' in lines
    assert 'meterline_payments_total{channel="counter",company="acme"} 1.0' in lines
    assert 'meterline_payments_amount_minor_total{channel="counter",company="acme"} 4000.0' in lines
    assert 'meterline_dead_letters_total{company="acme",reason="bad_json",source="mqtt"} 2.0' in lines
    assert 'meterline_dead_letters_total{company="(unplaced)",reason="unknown_meter",source="coap"} 1.0' in lines
    assert 'meterline_alerts_open{company="acme",rule="leak",severity="warning"} 1.0' in lines
    assert 'meterline_billing_runs{company="acme",status="completed"} 2.0' in lines


def test_grafana_dashboard_has_the_pipeline_panels() -> None:
    root = Path(__file__).resolve().parents[3]
    board = json.loads((root / "config" / "grafana" / "meterline.json").read_text(encoding="utf-8"))
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for metric in ("meterline_ingest_readings_written_total", "meterline_ingest_commit_latency_seconds_bucket",
                   "meterline_dead_letters_total", "meterline_alerts_open", "meterline_billing_run_duration_seconds",
                   "meterline_billing_run_accounts_per_second", "meterline_payments_total",
                   "meterline_payments_amount_minor_total"):
        assert metric in exprs, metric
    compose = (root / "docker-compose.yml").read_text(encoding="utf-8")
    assert "./config/grafana:/var/lib/grafana/dashboards/meterline" in compose
    assert "9465" in (root / "config" / "docker" / "prometheus.yml").read_text(encoding="utf-8")


def test_metrics_endpoint_serves_the_pipeline_figures(env: exportkit.Utility) -> None:
    import urllib.request

    from prometheus_client import start_http_server

    from meterline.exporters.metrics import pipeline_registry

    server, thread = start_http_server(0, "127.0.0.1", registry=pipeline_registry(env_dsn(), 60))
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read().decode()
        assert 'meterline_billing_run_accounts{company="acme",cycle="M"} 4.0' in body
        with psycopg.connect(env_dsn(), autocommit=True) as conn:  # within min_interval: the cached figures
            conn.execute("INSERT INTO dead_letter (company_id, source, reason, message) VALUES (%s, 'mqtt', 'x', 'y')",
                         [env.company_id])
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read().decode()
        assert 'reason="x"' not in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
