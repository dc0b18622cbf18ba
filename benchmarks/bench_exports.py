"""Benchmark: the exports and reports of a period on a seeded utility.

    python benchmarks/bench_exports.py [--meters 10000] [--sample 200] [--repeat 3]

Builds a utility of ``--meters`` meters with 40 days of readings (``meterline seed``), one
October bill per account (water and sewage lines, written set-based), posts them through the
ledger and records a payment for every second account. Then times, in the company's scope:
bills (JSONL + CSV), notices (one HTML page per account), finance (CSV + Parquet), data
(Parquet) and every report. Same-run baseline for the notices (the biggest export): the naive
way, per account one query each for its bills, lines, meters' reads and open items, on
``--sample`` accounts, extrapolated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_server_args, fresh_database, server  # noqa: E402

from meterline.cli.seed import seed  # noqa: E402
from meterline.exporters.bills import export_bills  # noqa: E402
from meterline.exporters.data import export_data  # noqa: E402
from meterline.exporters.finance import export_finance  # noqa: E402
from meterline.exporters.notice import export_notices, render_notice  # noqa: E402
from meterline.exporters._files import company_ref  # noqa: E402
from meterline.exporters.reports import report_all  # noqa: E402
from meterline.ledger.bills import post_bills  # noqa: E402
from meterline.ledger.payments import PaymentIn, record_payments  # noqa: E402
from meterline.store.db import Database  # noqa: E402
from meterline.store.personal import KeyRing, generate_key  # noqa: E402

PERIOD = "2026-10"

BILLS = """
WITH a AS (SELECT id, (id * 7919) %% 20000 + 2000 AS litres FROM account WHERE company_id = %(c)s)
INSERT INTO bill (company_id, run_id, account_id, period, period_start, period_end, consumption, amount, tax, total,
                  due_date)
SELECT %(c)s, %(run)s, id, '2026-10', '2026-10-01', '2026-10-31', litres, litres * 3 / 10 + litres / 10,
       litres * 3 / 10 * 9 / 100, litres * 3 / 10 + litres / 10 + litres * 3 / 10 * 9 / 100, '2026-11-20'
  FROM a
"""
LINES = """
INSERT INTO bill_line (bill_id, line_no, company_id, component, tier, quantity, unit_price, price_scale, amount, tax)
SELECT id, 1, company_id, 'water', 1, consumption, 3000000, 4, consumption * 3 / 10, tax FROM bill WHERE run_id = %(run)s
UNION ALL
SELECT id, 2, company_id, 'sewage', NULL, consumption, 1000000, 4, consumption / 10, 0 FROM bill WHERE run_id = %(run)s
"""


def build(dsn: str, meters: int) -> tuple[Database, int]:
    db = Database(dsn, min_size=1, max_size=4, role="meterline_app").open()
    t = time.perf_counter()
    report = seed(db, company_code="bench", company_name="bench water", timezone="Asia/Shanghai", meters=meters,
                  days=40, end=dt.date(2026, 11, 5), keyring=KeyRing.from_text({"k": generate_key()}, "k"))
    c = report.company.id
    with psycopg.connect(dsn, autocommit=True) as owner:
        run = owner.execute("INSERT INTO billing_run (company_id, cycle, period, status, finished_at, accounts) "
                            "VALUES (%s, 'M', %s, 'completed', now(), 0) RETURNING id", [c, PERIOD]).fetchone()[0]
        owner.execute(BILLS, {"c": c, "run": run})
        owner.execute(LINES, {"run": run})
    with db.connection(company_id=c) as conn:
        post_bills(conn, c, run, day=dt.date(2026, 11, 2))
        due = conn.execute("SELECT account_id, total FROM bill WHERE run_id = %s ORDER BY account_id", [run]).fetchall()
        pays = [PaymentIn(f"W{a}", a, total, dt.datetime(2026, 11, 10, 12, tzinfo=dt.timezone.utc))
                for i, (a, total) in enumerate(due) if i % 2 == 0 and total > 0]
        record_payments(conn, c, "wechat", pays)
        conn.commit()
        accounts = len(due)
    print(f"built: {meters:,} meters, {accounts:,} bills, {len(pays):,} payments in {time.perf_counter() - t:.1f} s")
    return db, c


def naive_notices(conn: psycopg.Connection, company_id: int, sample: int) -> float:
    """Per-account queries (the obvious loop); seconds per account."""
    company = company_ref(conn, company_id)
    ids = [r[0] for r in conn.execute("SELECT account_id FROM bill WHERE company_id = %s AND period = %s "
                                      "ORDER BY account_id LIMIT %s", [company_id, PERIOD, sample]).fetchall()]
    t = time.perf_counter()
    for a in ids:
        b = conn.execute("""SELECT b.id, b.period_start, b.period_end, b.consumption, b.amount, b.tax, b.total,
                                   b.due_date, b.estimated, ac.code, ac.address, cu.name
                              FROM bill b JOIN account ac ON ac.id = b.account_id JOIN customer cu ON cu.id = ac.customer_id
                             WHERE b.account_id = %s AND b.period = %s""", [a, PERIOD]).fetchone()
        lines = conn.execute("SELECT component, tier, quantity, unit_price, price_scale, amount, tax FROM bill_line "
                             "WHERE bill_id = %s ORDER BY line_no", [b[0]]).fetchall()
        reads = []
        for (m, serial) in conn.execute("SELECT id, serial FROM meter WHERE account_id = %s", [a]).fetchall():
            for edge in ("2026-10-01", "2026-11-01"):
                reads.append(conn.execute(
                    """SELECT ts, value FROM reading_effective WHERE meter_id = %s
                        ORDER BY abs(extract(epoch FROM ts - %s::timestamptz)) LIMIT 1""", [m, edge]).fetchone())
        items = conn.execute(
            """SELECT i.id, i.amount - coalesce((SELECT sum(x.amount) FROM allocation x JOIN journal_entry e
                                                  ON e.id = x.entry_id WHERE x.item_id = i.id AND e.booked_on <= %s), 0)
                 FROM receivable_item i WHERE i.account_id = %s""", [dt.date(2026, 11, 2), a]).fetchall()
        render_notice({"account": b[9], "address": b[10], "book": None, "customer_name": b[11], "phone": None,
                       "period": PERIOD, "period_start": b[1], "period_end": b[2], "as_of": dt.date(2026, 11, 2),
                       "due_date": b[7], "estimated": b[8], "consumption": b[3], "medium": "water", "reads": [],
                       "lines": [dict(zip(("component", "tier", "quantity", "unit_price", "price_scale", "amount",
                                           "tax"), ln)) for ln in lines],
                       "amount": b[4], "tax": b[5], "total": b[6], "covered": 0, "this_due": b[6], "arrears": [],
                       "arrears_total": 0, "total_due": b[6] + sum(x[1] for x in items if x[0] is None)}, company)
        del reads
    return (time.perf_counter() - t) / max(len(ids), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meters", type=int, default=10_000)
    p.add_argument("--sample", type=int, default=200)
    add_server_args(p)
    args = p.parse_args()
    with server(args.dsn) as maint, fresh_database(maint, "ml_bench_exports", args.keep) as dsn:
        db, c = build(dsn, args.meters)
        try:
            with db.connection(company_id=c) as conn:
                bills = conn.execute("SELECT count(*) FROM bill WHERE company_id = %s", [c]).fetchone()[0]
                out = Path(tempfile.mkdtemp(prefix="meterline-bench-exports-"))
                figures: dict[str, list[float]] = {}
                steps = {
                    "bills (JSONL + CSV)": lambda: export_bills(conn, c, PERIOD, out),
                    "notices (HTML per account)": lambda: export_notices(conn, c, PERIOD, out),
                    "finance (CSV + Parquet)": lambda: export_finance(conn, c, "2026-11", out),
                    "data (Parquet)": lambda: export_data(conn, c, PERIOD, out),
                    "reports (all, CSV + PNG)": lambda: report_all(conn, c, PERIOD, out, as_of=dt.date(2026, 11, 24)),
                }
                for _ in range(args.repeat):
                    for name, step in steps.items():
                        t = time.perf_counter()
                        step()
                        figures.setdefault(name, []).append(time.perf_counter() - t)
                        conn.rollback()
                for name, secs in figures.items():
                    s = statistics.median(secs)
                    print(f"{name:30s} {s:8.2f} s   {bills / s:12,.0f} bills/s")
                naive = naive_notices(conn, c, args.sample)
                fast = statistics.median(figures["notices (HTML per account)"]) / bills
                print(f"{'notices, naive per-account':30s} {naive * bills:8.2f} s   {1 / naive:12,.0f} bills/s "
                      f"(extrapolated from {args.sample})")
                print(f"notices: {naive / fast:.1f}x the naive per-account loop")
        finally:
            db.close()


if __name__ == "__main__":
    main()
