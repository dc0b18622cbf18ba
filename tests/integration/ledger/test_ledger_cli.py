"""``meterline ledger`` and ``meterline bank`` in process against a fresh database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from meterline.cli import main
from meterline.ledger.channels.bankfile import load_formats, parse, render
from tests.integration.ledger.ledgerkit import add_bill, make_accounts, make_run


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_dsn: str, tmp_path: Path) -> tuple[str, int, list[int], int]:
    monkeypatch.setenv("METERLINE_DSN", db_dsn)
    monkeypatch.setenv("METERLINE_COMPANY", "acme")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        c = conn.execute("INSERT INTO company (code, name) VALUES ('acme', '测试水务') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO use_type (company_id, code, name) VALUES (%s, 'RES', '居民')", [c])
        accounts = make_accounts(conn, c, 3)
        run = make_run(conn, c, "2026-03")
        for a, amount in zip(accounts, (12345, 8800, 500)):
            add_bill(conn, c, run, a, [("water", amount, 0)], dt.date(2026, 4, 10))
    return db_dsn, c, accounts, run


def test_post_bills_statement_trial_balance_late_fees(env, capsys: pytest.CaptureFixture[str]) -> None:
    dsn, c, accounts, run = env
    assert main(["ledger", "post-bills", "--run", str(run), "--date", "2026-04-01"]) == 0
    assert "3 bill(s) posted, 216.45" in capsys.readouterr().out
    assert main(["ledger", "late-fees", "--date", "2026-04-12"]) == 0
    out = capsys.readouterr().out
    assert "3 bill(s)" in out  # 2 days x 3‰
    assert main(["ledger", "late-fees", "--date", "2026-04-12"]) == 0
    assert "run before" in capsys.readouterr().out
    assert main(["ledger", "statement", "A1"]) == 0
    out = capsys.readouterr().out
    assert "opening" in out and "bill" in out and "late_fee" in out and "closing balance 124.19" in out
    assert main(["ledger", "trial-balance", "--date", "2026-04-30"]) == 0
    out = capsys.readouterr().out
    assert "AR:*" in out and "REV:water" in out and "balanced" in out and "NOT" not in out
    assert main(["ledger", "balance", "A2"]) == 0
    assert "owes 88.53" in capsys.readouterr().out
    assert main(["ledger", "check"]) == 0
    assert "all consistent" in capsys.readouterr().out


def test_adjustment_needs_another_person(env, capsys: pytest.CaptureFixture[str]) -> None:
    dsn, c, accounts, run = env
    main(["ledger", "post-bills", "--run", str(run), "--date", "2026-04-01"])
    capsys.readouterr()
    assert main(["--user", "clerk", "ledger", "adjust", "--kind", "charge", "--account", "A3", "--amount", "300",
                 "--reason", "补收表费"]) == 0
    adj = int(capsys.readouterr().out.split()[1])
    assert main(["--user", "clerk", "ledger", "approve", str(adj)]) == 1
    assert "cannot also approve" in capsys.readouterr().out
    assert main(["--user", "boss", "ledger", "approve", str(adj)]) == 0
    assert main(["ledger", "balance", "A3"]) == 0
    assert "owes 8.00" in capsys.readouterr().out


def test_close_day_and_month(env, capsys: pytest.CaptureFixture[str]) -> None:
    dsn, c, accounts, run = env
    main(["ledger", "post-bills", "--run", str(run), "--date", "2026-04-01"])
    assert main(["ledger", "receipts", "--cashier", "c1", "--first", "1", "--last", "50", "--prefix", "X"]) == 0
    assert main(["ledger", "close-day", "--date", "2026-04-01"]) == 0
    out = capsys.readouterr().out
    assert "day 2026-04-01 closed" in out and "bill: 3 entries" in out
    assert main(["ledger", "close-month", "--month", "2026-04"]) == 0
    assert "debit 216.45 = credit 216.45" in capsys.readouterr().out
    assert main(["ledger", "close-month", "--month", "2026-13"]) == 1


def test_bank_out_and_in(env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dsn, c, accounts, run = env
    main(["ledger", "post-bills", "--run", str(run), "--date", "2026-04-01"])
    assert main(["bank", "formats"]) == 0
    assert "icbc" in capsys.readouterr().out
    for code, number, name in (("A1", "6222000011112222", "张伟"), ("A2", "6222000011113333", "欧阳娜娜")):
        assert main(["bank", "mandate", "--account", code, "--bank", "ccb", "--number", number, "--holder", name]) == 0
    assert main(["bank", "out", "--bank", "ccb", "--date", "2026-04-25", "--out", str(tmp_path / "out")]) == 0
    assert "2 account(s), 211.45" in capsys.readouterr().out
    (out_file,) = (tmp_path / "out").glob("ccb_acme_*_out.txt")
    fmt = load_formats()["ccb"]
    sent = parse(fmt, fmt.out, out_file.read_bytes())
    assert sent.problems == [] and [d["account_code"] for d in sent.details] == ["A1", "A2"]
    details = [{**d, "status": "S" if d["seq"] == 1 else "F", "reason_code": "" if d["seq"] == 1 else "E01",
                "reason_text": "", "bank_ref": "R1" if d["seq"] == 1 else ""} for d in sent.details]
    header = {**sent.header, "count": 2, "total": 21145, "paid_count": 1, "paid_total": 12345}
    ret = tmp_path / "ret.txt"
    ret.write_bytes(render(fmt, fmt.returns, {**header, "total": 21146}, details))
    assert main(["bank", "in", str(ret), "--bank", "ccb"]) == 1
    assert "REJECTED" in capsys.readouterr().out
    ret.write_bytes(render(fmt, fmt.returns, header, details))
    assert main(["bank", "in", str(ret), "--bank", "ccb"]) == 0
    out = capsys.readouterr().out
    assert "1 paid (123.45), 1 failed" in out and "余额不足" in out
    assert main(["bank", "in", str(ret), "--bank", "ccb"]) == 0
    assert "imported before" in capsys.readouterr().out
    with psycopg.connect(dsn) as conn:
        statuses = conn.execute("SELECT status FROM bank_return_file ORDER BY id").fetchall()
    assert [s for (s,) in statuses] == ["rejected", "accepted"]
