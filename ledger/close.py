"""Daily and monthly close (日结 / 月结) and the trial balance.

A **daily close** is per channel and cashier (``close_day(..., channel="counter", cashier="张伟")``)
or for the whole company (``channel="*"``, which also closes the non-cash entries: bills, late
fees, adjustments). It records what the cashier or channel took that day — payments by tender,
reversals, refunds paid out, receipts used and voided, the net cash to hand over — and from then
on the database refuses any entry booked on that day in that scope. Corrections are booked on the
next open day (every posting function asks :func:`meterline.ledger.journal.open_day`).

Closing waits for entries of the day still in flight (an advisory lock that every entry of a
day takes shared), so an entry either commits before the close sees it or is refused after.

A **monthly close** closes every day of the month for everything and keeps the month's trial
balance (``trial_balance``); the debits and credits must be equal.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from meterline.ledger.errors import LedgerError
from meterline.ledger.journal import company_info


@dataclass(frozen=True, slots=True)
class CloseResult:
    id: int
    kind: str
    first_day: dt.date
    last_day: dt.date
    channel: str
    cashier: str
    created: bool
    summary: dict[str, Any]


def _scope_sql(channel: str, cashier: str) -> str:
    out = ""
    if channel != "*":
        out += " AND e.channel = %(channel)s"
        if cashier != "*":
            out += " AND coalesce(e.cashier, '') = %(cashier)s"
    return out


def day_summary(conn: psycopg.Connection, company_id: int, day: dt.date, channel: str = "*", cashier: str = "*") -> dict[str, Any]:
    """What was booked on ``day`` in this scope (the figures a close records)."""
    p = {"company": company_id, "day": day, "channel": channel, "cashier": cashier}
    scope = _scope_sql(channel, cashier)
    payments = [
        {"channel": ch, "cashier": ca, "tender": t, "count": n, "amount": int(a)}
        for ch, ca, t, n, a in conn.execute(
            f"""SELECT p.channel, coalesce(e.cashier, ''), coalesce(p.tender, ''), count(*), sum(p.amount)
                  FROM payment p JOIN journal_entry e ON e.id = p.entry_id
                 WHERE p.company_id = %(company)s AND e.booked_on = %(day)s {scope}
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", p).fetchall()]
    by_kind = {
        k: {"entries": n, "cash": int(c)}
        for k, n, c in conn.execute(
            f"""SELECT e.kind, count(DISTINCT e.id),
                       coalesce(sum(po.amount) FILTER (WHERE po.account_code LIKE 'CASH:%%'), 0)
                  FROM journal_entry e JOIN posting po ON po.entry_id = e.id
                 WHERE e.company_id = %(company)s AND e.booked_on = %(day)s {scope}
                 GROUP BY e.kind ORDER BY e.kind""", p).fetchall()}
    receipts: dict[str, Any] = {}
    if channel in ("*", "counter"):
        rscope = " AND {t}cashier = %(cashier)s" if cashier != "*" else ""
        used = conn.execute(
            f"""SELECT prefix, number FROM receipt WHERE company_id = %(company)s AND business_day = %(day)s {rscope.format(t="")}
                 ORDER BY prefix, number""", p).fetchall()
        voided = conn.execute(
            f"""SELECT v.prefix, v.number, v.reason FROM receipt_void v JOIN receipt r USING (company_id, prefix, number)
                 WHERE v.company_id = %(company)s AND v.business_day = %(day)s {rscope.format(t="r.")}
                 ORDER BY 1, 2""", p).fetchall()
        receipts = {"used": [f"{a}{b}" for a, b in used], "voided": [{"receipt": f"{a}{b}", "reason": r} for a, b, r in voided]}
    net_cash = sum(v["cash"] for v in by_kind.values())
    return {"day": day.isoformat(), "channel": channel, "cashier": cashier, "payments": payments,
            "payments_total": sum(x["amount"] for x in payments), "entries": by_kind, "net_cash": net_cash,
            "receipts": receipts}


def _existing(conn: psycopg.Connection, company_id: int, kind: str, first: dt.date, channel: str, cashier: str) -> CloseResult | None:
    row = conn.execute(
        """SELECT id, kind, first_day, last_day, channel, cashier, summary FROM ledger_close
            WHERE company_id = %s AND kind = %s AND first_day = %s AND channel = %s AND cashier = %s""",
        [company_id, kind, first, channel, cashier]).fetchone()
    return CloseResult(*row[:6], False, row[6]) if row else None


def close_day(conn: psycopg.Connection, company_id: int, day: dt.date, *, channel: str = "*", cashier: str = "*",
              closed_by: str | None = None) -> CloseResult:
    """Close ``day`` for a channel and cashier (or everything); idempotent."""
    if channel == "*" and cashier != "*":
        raise LedgerError("a cashier is closed within a channel: give --channel too")
    company_info(conn, company_id)
    conn.execute("SELECT pg_advisory_xact_lock(ledger_day_lock_key(%s, %s))", [company_id, day])
    found = _existing(conn, company_id, "day", day, channel, cashier)
    if found:
        return found
    summary = day_summary(conn, company_id, day, channel, cashier)
    close_id = conn.execute(
        """INSERT INTO ledger_close (company_id, kind, first_day, last_day, channel, cashier, closed_at, closed_by, summary)
           VALUES (%s, 'day', %s, %s, %s, %s, clock_timestamp(), %s, %s) RETURNING id""",
        [company_id, day, day, channel, cashier, closed_by, Jsonb(summary)]).fetchone()[0]
    if channel == "*":
        conn.execute("SELECT ledger_fold_balances()")
    return CloseResult(close_id, "day", day, day, channel, cashier, True, summary)


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    account: str  # a code, or 'AR:*' / 'PREPAID:*' for the per-customer accounts together
    debit: int  # sum of debit postings
    credit: int  # sum of credit postings (positive)
    balance: int  # debit - credit


def trial_balance(conn: psycopg.Connection, company_id: int, as_of: dt.date, *, detail: bool = False,
                  since: dt.date | None = None) -> list[TrialBalanceRow]:
    """Totals per account of every entry booked up to ``as_of`` (from ``since`` if given)."""
    key = "p.account_code" if detail else (
        "CASE WHEN split_part(p.account_code, ':', 1) IN ('AR', 'PREPAID') "
        "THEN split_part(p.account_code, ':', 1) || ':*' ELSE p.account_code END")
    rows = conn.execute(
        f"""SELECT {key} AS account,
                   coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0)::bigint,
                   coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0)::bigint
              FROM posting p JOIN journal_entry e ON e.id = p.entry_id
             WHERE e.company_id = %s AND e.booked_on <= %s AND e.booked_on >= %s
             GROUP BY 1 ORDER BY 1""", [company_id, as_of, since or dt.date(1900, 1, 1)]).fetchall()
    return [TrialBalanceRow(a, d, c, d - c) for a, d, c in rows]


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    try:
        first = dt.date(int(month[:4]), int(month[5:7]), 1)
    except (ValueError, IndexError) as exc:
        raise LedgerError(f"month {month!r} is not YYYY-MM") from exc
    if len(month) != 7 or month[4] != "-":
        raise LedgerError(f"month {month!r} is not YYYY-MM")
    nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, nxt - dt.timedelta(days=1)


def close_month(conn: psycopg.Connection, company_id: int, month: str, *, closed_by: str | None = None) -> CloseResult:
    """Close every day of ``month`` (YYYY-MM) and keep its trial balance; idempotent."""
    first, last = month_bounds(month)
    company_info(conn, company_id)
    conn.execute(
        "SELECT pg_advisory_xact_lock(ledger_day_lock_key(%s, d::date)) FROM generate_series(%s::date, %s::date, '1 day') d",
        [company_id, first, last])
    found = _existing(conn, company_id, "month", first, "*", "*")
    if found:
        return found
    rows = trial_balance(conn, company_id, last)
    debit = sum(r.debit for r in rows)
    credit = sum(r.credit for r in rows)
    if debit != credit:  # the database guarantees it; a failure here means the journal was tampered with
        raise LedgerError(f"trial balance to {last} does not balance: debit {debit}, credit {credit}")
    month_rows = trial_balance(conn, company_id, last, since=first)
    summary = {"month": month, "through": last.isoformat(), "debit": debit, "credit": credit, "accounts": len(rows),
               "month_debit": sum(r.debit for r in month_rows), "month_credit": sum(r.credit for r in month_rows)}
    close_id = conn.execute(
        """INSERT INTO ledger_close (company_id, kind, first_day, last_day, channel, cashier, closed_at, closed_by, summary)
           VALUES (%s, 'month', %s, %s, '*', '*', clock_timestamp(), %s, %s) RETURNING id""",
        [company_id, first, last, closed_by, Jsonb(summary)]).fetchone()[0]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO trial_balance (close_id, company_id, account_code, debit, credit, balance) VALUES (%s, %s, %s, %s, %s, %s)",
            [(close_id, company_id, r.account, r.debit, r.credit, r.balance) for r in rows])
    conn.execute("SELECT ledger_fold_balances()")
    return CloseResult(close_id, "month", first, last, "*", "*", True, summary)


def closes(conn: psycopg.Connection, company_id: int, since: dt.date | None = None) -> list[CloseResult]:
    rows = conn.execute(
        """SELECT id, kind, first_day, last_day, channel, cashier, summary FROM ledger_close
            WHERE company_id = %s AND last_day >= %s ORDER BY first_day, kind, channel, cashier""",
        [company_id, since or dt.date(1900, 1, 1)]).fetchall()
    return [CloseResult(*r[:6], False, r[6]) for r in rows]
