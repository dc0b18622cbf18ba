"""Ledger scenarios written as readable text (scenarios/*.txt), run against a real database.

One command per line; ``#`` starts a comment; amounts are in yuan as a person writes them.
The commands and what they do are the functions registered in ``COMMANDS`` below.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import psycopg
import pytest

from meterline.ledger import balances, close
from meterline.ledger.bills import post_bills
from meterline.ledger.channels import counter, withholding
from meterline.ledger.channels.bankfile import load_formats, render
from tests.integration.ledger.ledgerkit import add_bill, make_run, new_company

HERE = Path(__file__).resolve().parent / "scenarios"
TZ = ZoneInfo("Asia/Shanghai")


def fen(text: str) -> int:
    value = Decimal(text) * 100
    assert value == value.to_integral_value(), text
    return int(value)


@dataclass
class World:
    conn: psycopg.Connection
    company: int
    tmp: Path
    accounts: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    receipts: dict[str, str] = field(default_factory=dict)
    payments: dict[str, Any] = field(default_factory=dict)
    last_close: close.CloseResult | None = None
    out_batch: withholding.OutBatch | None = None
    answers: dict[str, tuple[str, str]] = field(default_factory=dict)
    returned: withholding.ReturnResult | None = None


COMMANDS: dict[str, Callable[[World, list[str]], None]] = {}


def command(name: str) -> Callable:
    def register(fn: Callable[[World, list[str]], None]) -> Callable:
        COMMANDS[name] = fn
        return fn
    return register


@command("account")
def _account(w: World, a: list[str]) -> None:
    code, name = a[0], " ".join(a[1:])
    cust = w.conn.execute("INSERT INTO customer (company_id, code, name) VALUES (%s, %s, %s) RETURNING id",
                          [w.company, "C" + code, name]).fetchone()[0]
    w.accounts[code] = w.conn.execute(
        """INSERT INTO account (company_id, code, customer_id, address, use_type, tariff_id)
           VALUES (%s, %s, %s, '人民路1号', 'RES', 'T1') RETURNING id""", [w.company, code, cust]).fetchone()[0]


@command("bill")
def _bill(w: World, a: list[str]) -> None:
    code, period, _due_kw, due, *lines = a
    if period not in w.runs:
        w.runs[period] = make_run(w.conn, w.company, period)
    pairs = [(lines[i], fen(lines[i + 1]), 0) for i in range(0, len(lines), 2)]
    add_bill(w.conn, w.company, w.runs[period], w.accounts[code], pairs, dt.date.fromisoformat(due))


@command("post-bills")
def _post(w: World, a: list[str]) -> None:
    for run in w.runs.values():
        post_bills(w.conn, w.company, run, day=dt.date.fromisoformat(a[0]))


@command("receipts")
def _receipts(w: World, a: list[str]) -> None:
    counter.issue_range(w.conn, w.company, a[0], int(a[2]), int(a[3]), prefix=a[1])


@command("counter")
def _counter(w: World, a: list[str]) -> None:
    when, cashier, shift, tender, code, amount, txn = a
    at = dt.datetime.fromisoformat(when).replace(tzinfo=TZ)
    r = counter.pay(w.conn, w.company, cashier=cashier, shift=shift, tender=tender, transaction_id=txn,
                    account_id=w.accounts[code], amount=fen(amount), received_at=at)
    w.receipts[txn] = r.receipt
    w.payments[txn] = r.payment


@command("spoil")
def _spoil(w: World, a: list[str]) -> None:
    counter.spoil_receipt(w.conn, w.company, a[0], reason=" ".join(a[1:]), day=dt.date(2026, 4, 25))


@command("void")
def _void(w: World, a: list[str]) -> None:
    counter.void(w.conn, w.company, a[0], a[1], reason=" ".join(a[2:]), day=dt.date(2026, 4, 25))


@command("close-day")
def _close(w: World, a: list[str]) -> None:
    w.last_close = close.close_day(w.conn, w.company, dt.date.fromisoformat(a[0]), channel=a[1], cashier=a[2])


@command("mandate")
def _mandate(w: World, a: list[str]) -> None:
    withholding.add_mandate(w.conn, w.company, w.accounts[a[0]], a[1], a[2], " ".join(a[3:]))


@command("bank-out")
def _bank_out(w: World, a: list[str]) -> None:
    fmt = load_formats()[a[0]]
    w.out_batch = withholding.write_out(w.conn, w.company, fmt, day=dt.date.fromisoformat(a[1]), out_dir=w.tmp)
    w.answers = {}


@command("bank-answer")
def _answer(w: World, a: list[str]) -> None:
    w.answers[a[0]] = (a[1], a[1] if a[1] != "0000" else "")


@command("bank-return")
def _bank_return(w: World, a: list[str]) -> None:
    fmt = load_formats()[a[0]]
    batch_id, batch_no, day = w.conn.execute(
        "SELECT id, batch_no, business_day FROM withholding_batch WHERE company_id = %s AND bank = %s ORDER BY id LIMIT 1",
        [w.company, fmt.bank]).fetchone()
    details = []
    for seq, code, bank_no, amount in w.conn.execute(
            "SELECT seq, account_code, bank_account_no, amount FROM withholding_item WHERE batch_id = %s ORDER BY seq",
            [batch_id]).fetchall():
        status, reason = w.answers[code]
        details.append({"seq": seq, "account_code": code, "bank_account_no": bank_no, "amount": amount,
                        "status": status, "reason_code": reason, "bank_ref": f"R{seq:08d}" if not reason else ""})
    paid = [d for d in details if d["status"] in fmt.returns.success]
    header = {"batch_no": batch_no, "date": day, "count": len(details), "total": sum(d["amount"] for d in details),
              "paid_count": len(paid), "paid_total": sum(d["amount"] for d in paid)}
    if "tampered-total" in a:
        header["total"] += 1
    data = render(fmt, fmt.returns, header, details)
    w.returned = withholding.read_return(w.conn, w.company, fmt, data, file_name=f"{batch_no}_return.txt",
                                         received_at=dt.datetime(2026, 4, 26, 2, tzinfo=dt.timezone.utc))


@command("check")
def _check(w: World, a: list[str]) -> None:
    report = balances.check(w.conn, w.company)
    assert report.ok, report.problems


def _expect(w: World, a: list[str]) -> None:
    what, rest = a[0], a[1:]
    if what in ("owes", "credit"):
        acct = w.accounts[rest[0]]
        code = f"AR:{acct}" if what == "owes" else f"PREPAID:{acct}"
        got = balances.account_balance(w.conn, w.company, code) * (1 if what == "owes" else -1)
        assert got == fen(rest[1]), f"{what} {rest[0]}: {got}"
    elif what == "receipt":
        assert w.receipts[rest[0]] == rest[1]
    elif what == "booked":
        assert w.payments[rest[0]].booked_on == dt.date.fromisoformat(rest[1])
    elif what == "close":
        tender, count, amount = rest
        rows = [p for p in w.last_close.summary["payments"] if p["tender"] == tender]
        assert (sum(p["count"] for p in rows), sum(p["amount"] for p in rows)) == (int(count), fen(amount))
    elif what == "receipts-used":
        assert len(w.last_close.summary["receipts"]["used"]) == int(rest[0])
    elif what == "receipts-voided":
        assert len(w.last_close.summary["receipts"]["voided"]) == int(rest[0])
    elif what == "net-cash":
        assert w.last_close.summary["net_cash"] == fen(rest[0])
    elif what == "out-file":
        assert (w.out_batch.items, w.out_batch.total) == (int(rest[0]), fen(rest[1]))
        if w.out_batch.path is not None:
            assert w.out_batch.path.read_bytes().count(b"\n") == int(rest[0]) + 2
    elif what == "rejected":
        assert w.returned.status == "rejected", w.returned
        assert any(" ".join(rest) in p for p in w.returned.problems), w.returned.problems
    elif what == "imported":
        r = w.returned
        assert (r.status, r.paid, r.paid_amount, r.failed) == ("accepted", int(rest[1]), fen(rest[2]), int(rest[4])), r
    elif what == "failure":
        assert (rest[1], rest[2]) in {(code, meaning) for _seq, acct, code, meaning in w.returned.failures
                                     if acct == rest[0]}, w.returned.failures
    elif what == "duplicate":
        assert w.returned.status == "duplicate"
    else:
        raise AssertionError(f"unknown expectation {what}")


COMMANDS["expect"] = _expect


def run_scenario(conn: psycopg.Connection, path: Path, tmp: Path) -> World:
    w = World(conn, new_company(conn), tmp)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, *args = shlex.split(line)
        try:
            with conn.transaction():
                COMMANDS[name](w, args)
        except Exception as exc:
            raise AssertionError(f"{path.name}:{lineno}: {line}\n  {type(exc).__name__}: {exc}") from exc
    return w


@pytest.mark.parametrize("path", sorted(HERE.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(conn: psycopg.Connection, path: Path, tmp_path: Path) -> None:
    run_scenario(conn, path, tmp_path)
