"""The console script, in process, against a fresh database."""

import uuid
from pathlib import Path

import psycopg
import pytest

from meterline.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "registry_sample.csv"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_dsn: str, tmp_path: Path) -> str:
    monkeypatch.setenv("METERLINE_DSN", db_dsn)
    monkeypatch.setenv("METERLINE_COMPANY", "acme")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return db_dsn


def test_registry_commands_round_trip(env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "migrate"]) == 0
    assert "nothing to apply" in capsys.readouterr().out
    assert main(["company", "add", "acme", "测试水务公司"]) == 0
    assert main(["registry", "import", str(SAMPLE)]) == 0
    assert "5 meters" in capsys.readouterr().out
    out = tmp_path / "export.csv"
    assert main(["registry", "export", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("customer_code,customer_name")
    assert "王秀英" in text and "滨江食品加工厂" in text


def test_import_errors_exit_nonzero_with_line_numbers(env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["company", "add", "acme", "测试水务公司"])
    bad = tmp_path / "bad.csv"
    bad.write_text("meter_serial,register_digits\nX1,99\n", encoding="utf-8")
    assert main(["registry", "import", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "line 2" in out and "register_digits" in out and "nothing imported" in out


def test_unknown_company_is_a_clear_error(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--company", "ghost", "registry", "export"]) == 1
    assert "company 'ghost' does not exist" in capsys.readouterr().out


def test_seed_and_maintain(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed", "--meters", "300", "--days", "5"]) == 0
    out = capsys.readouterr().out
    assert "300 meters" in out and "0 refused" in out
    assert main(["db", "maintain", "--refresh-days", "6"]) == 0
    with psycopg.connect(env) as conn:
        meters = conn.execute("SELECT count(*) FROM meter").fetchone()[0]
        trees = conn.execute("SELECT count(*) FROM meter WHERE parent_meter_id IS NOT NULL").fetchone()[0]
        readings = conn.execute("SELECT count(*) FROM reading").fetchone()[0]
        daily = conn.execute("SELECT count(*) FROM reading_daily").fetchone()[0]
    assert meters == 300 and trees > 0
    assert readings > 300 * 3
    assert daily > 0
    # seeding again changes nothing: same registry, same readings
    assert main(["seed", "--meters", "300", "--days", "5"]) == 0
    assert "0 readings written" in capsys.readouterr().out


def test_pending_migrations_are_reported(monkeypatch: pytest.MonkeyPatch, pg_server, capsys: pytest.CaptureFixture[str]) -> None:
    from psycopg import sql

    name = f"ml_bare_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        from meterline.store.dsn import with_dbname

        monkeypatch.setenv("METERLINE_DSN", with_dbname(pg_server.dsn, name))
        assert main(["company", "list"]) == 1
        assert "pending migration" in capsys.readouterr().out
        assert main(["db", "status"]) == 1
    finally:
        with pg_server.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_demo_runs_small(monkeypatch: pytest.MonkeyPatch, pg_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from psycopg import sql

    monkeypatch.setenv("METERLINE_DSN", pg_server.dsn)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)
    name = f"ml_demo_{uuid.uuid4().hex[:8]}"
    try:
        assert main(["demo", "--meters", "200", "--database", name]) == 0
        out = capsys.readouterr().out
        assert "every step" in out and "dead letters" in out and "books reconcile" in out
        assert "duplicates, 0 new" in out
        assert "unknown_meter 1" in out and "naive_timestamp 1" in out
    finally:
        with pg_server.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
