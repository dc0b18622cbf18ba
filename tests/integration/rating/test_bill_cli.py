"""``meterline bill run|explain`` in process: summary, dry run, explanation, permissions, bad input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from meterline.cli import main
from tests.integration.rating.billkit import TARIFF, Utility, october


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def util(monkeypatch: pytest.MonkeyPatch, db_dsn: str, tmp_path: Path, conn: psycopg.Connection) -> Utility:
    u = october(Utility.create(conn))
    tariffs = tmp_path / "tariffs"
    tariffs.mkdir()
    (tariffs / "water-residential.toml").write_text(TARIFF, encoding="utf-8")
    monkeypatch.setenv("METERLINE_DSN", db_dsn)
    monkeypatch.setenv("METERLINE_COMPANY", u.code)
    monkeypatch.setenv("METERLINE__RATING__TARIFF_DIR", str(tariffs))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.delenv("METERLINE_USER", raising=False)
    monkeypatch.chdir(tmp_path)
    return u


def test_run_dry_run_and_explain(util: Utility, conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, "bill", "run", "--cycle", "M", "--period", "2026-10", "--dry-run")
    assert code == 0 and "dry run (nothing written)" in out and "10 new bill(s)" in out
    assert conn.execute("SELECT count(*) FROM bill").fetchone()[0] == 0
    code, out = cli(capsys, "bill", "run", "--cycle", "M", "--period", "2026-10")
    assert code == 0
    assert "bills written" in out and "no_closing_read" in out and "estimated closing reads" in out
    assert "1 (10.0%)" in out
    code, out = cli(capsys, "bill", "run", "--cycle", "M", "--period", "2026-10")
    assert code == 0 and "billed before this run started" in out
    bill = {code.split("-", 1)[1]: b for code, b in conn.execute(
        "SELECT a.code, b.id FROM bill b JOIN account a ON a.id = b.account_id").fetchall()}
    code, out = cli(capsys, "bill", "explain", str(bill["A3"]))
    assert code == 0
    assert "the meter was replaced" in out and "consumption 13.000 m³" in out
    assert "water tier 1: 13.000 m³ × 2.00 = 26.00 + tax 0.78" in out
    assert "Total: consumption 13.000 m³; amount 44.00 + tax 0.78 = 44.78" in out
    code, out = cli(capsys, "bill", "explain", str(bill["A2"]))
    assert "passed its maximum" in out
    code, out = cli(capsys, "bill", "explain", str(bill["A7"]))
    assert "shared by consumption" in out and "this account's share through meter" in out and "5.000 m³" in out
    assert "water (apportioned): 5.000 m³ × 2.00 = 10.00" in out
    code, out = cli(capsys, "bill", "explain", str(bill["A4"]))
    assert "(estimated)" in out and "closing read estimated" in out


def test_permissions_and_bad_input(util: Utility, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "user", "add", "boss", "管理员")[0] == 0
    for login, role in (("li", "cashier"), ("sun", "billing_administrator"), ("qian", "auditor")):
        assert cli(capsys, "--user", "boss", "user", "add", login, login)[0] == 0
        assert cli(capsys, "--user", "boss", "user", "grant", login, role, "--in", util.code)[0] == 0
    code, out = cli(capsys, "--user", "li", "bill", "run", "--cycle", "M", "--period", "2026-10")
    assert code == 3 and "billing.run" in out
    code, out = cli(capsys, "--user", "sun", "bill", "run", "--cycle", "M", "--period", "2026-10")
    assert code == 0
    code, out = cli(capsys, "--user", "sun", "bill", "run", "--cycle", "M", "--period", "2026-1")
    assert code != 0 and "expected YYYY-MM" in out and "Traceback" not in out
    code, out = cli(capsys, "--user", "sun", "bill", "run", "--cycle", "M", "--period", "2026-10", "--books", "XX")
    assert code != 0 and "unknown meter book(s): XX" in out
    for login in ("li", "qian"):
        code, out = cli(capsys, "--user", login, "bill", "explain", "1")
        assert code == 0 and "Bill 1" in out
    code, out = cli(capsys, "--user", "li", "bill", "explain", "999999")
    assert code != 0 and "does not exist" in out


def test_heating_stop_resume_and_list(util: Utility, conn: psycopg.Connection,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    acct = f"{util.code}-A1"
    code, out = cli(capsys, "bill", "heating", "stop", acct, "--on", "2026-12-11", "--reason", "away")
    assert code == 0 and "heating stopped 2026-12-11, not resumed (away)" in out
    code, out = cli(capsys, "bill", "heating", "resume", acct, "--on", "2026-12-11")
    assert code != 0 and "is not after the stop date" in out
    code, out = cli(capsys, "bill", "heating", "resume", acct, "--on", "2027-01-05")
    assert code == 0 and "resumed 2027-01-05" in out
    code, out = cli(capsys, "bill", "heating", "stop", acct, "--on", "2026-12-20", "--reason", "again")
    assert code != 0 and "overlaps" in out
    code, out = cli(capsys, "bill", "heating", "list", f"{util.code}-A2")
    assert code == 0 and "heating never stopped" in out
    assert conn.execute("SELECT stop_on, resume_on, reason FROM heating_suspension").fetchall() == [
        (dt.date(2026, 12, 11), dt.date(2027, 1, 5), "away")]


def test_reverse_correct_and_bill_again(util: Utility, conn: psycopg.Connection,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """红冲 → correct the closing read → 补开, the way a billing administrator does it."""
    assert cli(capsys, "bill", "run", "--cycle", "M", "--period", "2026-10")[0] == 0
    old = conn.execute("SELECT id FROM bill WHERE account_id = %s", [util.accounts["A1"]]).fetchone()[0]
    code, out = cli(capsys, "ledger", "reverse-bill", str(old), "--reason", "closing read mistyped")
    assert code == 0 and f"bill {old} reversed" in out
    code, out = cli(capsys, "readings", "review", "--book", "B1", "--period", "2026-10",
                    "--override", f"{util.code}-M1@2026-10-31T22:00=115")
    assert "override" in out and "recorded" in out     # (exit 1: the book's other blockers are still there)
    code, out = cli(capsys, "bill", "run", "--cycle", "M", "--period", "2026-10")
    assert code == 0 and "reversed" in out and "bills written" in out
    assert conn.execute("SELECT count(*) FROM bill WHERE account_id = %s", [util.accounts["A1"]]).fetchone()[0] == 1
    code, out = cli(capsys, "bill", "run", "--cycle", "M", "--period", "2026-10", "--rebill", "--dry-run")
    assert code == 0 and "1 new bill(s) (1 billing a reversed bill again)" in out and f"new, replaces {old}" in out
    code, out = cli(capsys, "bill", "run", "--cycle", "M", "--period", "2026-10", "--rebill")
    assert code == 0 and "of them billing a reversed bill again" in out
    new, cons = conn.execute("SELECT id, consumption FROM bill WHERE account_id = %s AND status = 'issued'",
                             [util.accounts["A1"]]).fetchone()
    assert cons == 15_000
    code, out = cli(capsys, "bill", "explain", str(new))
    assert code == 0 and f"replaces bill {old}" in out and "consumption 15.000 m³" in out


HEAT = '''
id = "heat"
use_type = "residential"
[[versions]]
effective = "2020-11-15"
[versions.heating]
price = "24.00"
season_start = "11-15"
season_end = "03-15"
'''


def test_explain_reads_out_the_heating_suspensions(util: Utility, conn: psycopg.Connection, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An agent records two stops, bills December and reads out why the heating charge is prorated."""
    (tmp_path / "tariffs" / "heat.toml").write_text(HEAT, encoding="utf-8")
    util.book("H", cycle="M")
    util.account("H1", "H", tariff="heat", area_m2="100.00")
    acct = f"{util.code}-H1"
    assert cli(capsys, "bill", "heating", "stop", acct, "--on", "2026-12-03", "--resume", "2026-12-05",
               "--reason", "repairs")[0] == 0
    assert cli(capsys, "bill", "heating", "stop", acct, "--on", "2026-12-28", "--reason", "moved out")[0] == 0
    assert cli(capsys, "bill", "run", "--cycle", "M", "--period", "2026-12", "--books", "H")[0] == 0
    bill_id = conn.execute("SELECT id FROM bill WHERE account_id = %s", [util.accounts["H1"]]).fetchone()[0]
    code, out = cli(capsys, "bill", "explain", str(bill_id))
    assert code == 0
    # 31 days less 3–4 and 28–31: 25 heated days; 240000 × 25 / 121 = 49586.8
    assert "heating: 100.00 m² × 24.00 = 495.87" in out and "25 of its 31 day(s) in the season heated" in out
    assert "heating suspensions overlapping the period (as stored now): 2" in out
    assert "stopped 2026-12-03, resumed 2026-12-05 (repairs) [#" in out and "2 day(s) off in this bill" in out
    assert "stopped 2026-12-28, not resumed (moved out) [#" in out and "4 day(s) off in this bill" in out
