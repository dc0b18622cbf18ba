"""Helpers for ledger tests: companies, accounts, billing runs and bills written directly."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Sequence

import psycopg

_counter = itertools.count(1)


def new_company(conn: psycopg.Connection, timezone: str = "Asia/Shanghai") -> int:
    code = f"c{uuid.uuid4().hex[:10]}"
    cid = conn.execute("INSERT INTO company (code, name, timezone) VALUES (%s, %s, %s) RETURNING id",
                       [code, f"水司{code}", timezone]).fetchone()[0]
    conn.execute("INSERT INTO use_type (company_id, code, name) VALUES (%s, 'RES', '居民')", [cid])
    return cid


def make_accounts(conn: psycopg.Connection, company_id: int, n: int) -> list[int]:
    rows = conn.execute(
        """WITH c AS (
               INSERT INTO customer (company_id, code, name)
               SELECT %(c)s, 'CU' || g, '客户' || g FROM generate_series(1, %(n)s) g
               RETURNING id, code)
           INSERT INTO account (company_id, code, customer_id, address, use_type, tariff_id)
           SELECT %(c)s, 'A' || substr(c.code, 3), c.id, '人民路' || substr(c.code, 3) || '号', 'RES', 'T1'
             FROM c ORDER BY c.id
           RETURNING id""", {"c": company_id, "n": n}).fetchall()
    return sorted(r[0] for r in rows)


def account_code(conn: psycopg.Connection, account_id: int) -> str:
    return conn.execute("SELECT code FROM account WHERE id = %s", [account_id]).fetchone()[0]


def make_run(conn: psycopg.Connection, company_id: int, period: str | None = None, cycle: str = "M") -> int:
    period = period or f"2{next(_counter):03d}-01"
    return conn.execute("INSERT INTO billing_run (company_id, cycle, period, status) VALUES (%s, %s, %s, 'completed') RETURNING id",
                        [company_id, cycle, period]).fetchone()[0]


def add_bill(
    conn: psycopg.Connection,
    company_id: int,
    run_id: int,
    account_id: int,
    lines: Sequence[tuple[str, int, int]],
    due_date: dt.date,
    period: str | None = None,
) -> int:
    """A bill with ``lines`` of (component, amount, tax); totals computed from the lines."""
    period = period or conn.execute("SELECT period FROM billing_run WHERE id = %s", [run_id]).fetchone()[0]
    amount = sum(a for _, a, _ in lines)
    tax = sum(t for _, _, t in lines)
    start = dt.date(int(period[:4]), int(period[5:7]), 1)
    bill_id = conn.execute(
        """INSERT INTO bill (company_id, run_id, account_id, period, period_start, period_end, consumption,
                             amount, tax, total, due_date)
           VALUES (%s, %s, %s, %s, %s, %s, 10000, %s, %s, %s, %s) RETURNING id""",
        [company_id, run_id, account_id, period, start, start + dt.timedelta(days=27), amount, tax, amount + tax,
         due_date]).fetchone()[0]
    for no, (component, a, t) in enumerate(lines, start=1):
        conn.execute(
            """INSERT INTO bill_line (bill_id, line_no, company_id, component, quantity, amount, tax)
               VALUES (%s, %s, %s, %s, 1000, %s, %s)""", [bill_id, no, company_id, component, a, t])
    return bill_id


def balance(conn: psycopg.Connection, company_id: int, code: str) -> int:
    row = conn.execute("SELECT coalesce(sum(amount), 0) FROM posting WHERE company_id = %s AND account_code = %s",
                       [company_id, code]).fetchone()
    return int(row[0])


def balances(conn: psycopg.Connection, company_id: int) -> dict[str, int]:
    return {c: int(b) for c, b in conn.execute(
        "SELECT account_code, sum(amount) FROM posting WHERE company_id = %s GROUP BY 1 HAVING sum(amount) <> 0",
        [company_id]).fetchall()}
