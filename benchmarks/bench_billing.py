"""Billing run: period-end reads in the database → bills, lines and ledger postings committed.

    .venv/bin/python benchmarks/bench_billing.py --meters 1000000 [--repeat 3] [--sample 2000] [--profile]

Builds a utility of ``--meters`` meters (books of 1,000 accounts, cycle M; every 50th meter a
master meter billed to nobody over the next 49 in one block of five, so 20 % of the accounts
share a residual; 1 % of the closing reads are VEE estimates) and writes two reads per meter
straight into ``reading`` (server-side INSERT … SELECT, not the slow seeder): the October
opening read and a closing read an hour before the boundary.

Figures (medians of ``--repeat`` runs; each run starts from no bills):

* **whole run**: ``rating.run.bill_run`` on a scoped application-role connection for cycle M,
  period 2026-10, committed: accounts, reads, consumption, apportionment, rate(), COPY, INSERT,
  ``ledger.bills.post_bills``; once in one transaction (``--workers 1``) and once with shards
  billed on ``billing.workers`` connections at once, each committed on its own (the default of
  ``meterline bill run``);
* **rating kernel alone**: ``rating.engine.rate`` on the run's frame in memory;
* **SQL baseline**: the same tariff (``config/tariffs/water-residential.toml``: three blocks,
  resource fee and sewage, household adjustment) set-based inside PostgreSQL — consumption from
  the two reads, bills and bill lines with INSERT … SELECT, then the same ``post_bills`` (it does
  less than the run: no apportionment, no read provenance);
* **per-row loop baseline**: account by account in Python with a query per meter and an INSERT
  per bill, line and posting, on ``--sample`` accounts, extrapolated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import polars as pl
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_server_args, fresh_database, server  # noqa: E402

from meterline.config.settings import BillingSettings  # noqa: E402
from meterline.ledger.bills import post_bills  # noqa: E402
from meterline.ledger.journal import Posting, post_entry  # noqa: E402
from meterline.rating.engine import rate  # noqa: E402
from meterline.rating.run import bill_run  # noqa: E402
from meterline.rating.tariff import TariffBook  # noqa: E402
from meterline.store.db import Database  # noqa: E402

TZ = "Asia/Shanghai"
CHUNK = 500_000
OPEN = "2026-09-30 16:00+00"     # 2026-10-01 00:00 local
CLOSE = "2026-10-31 15:00+00"    # an hour before the boundary
BOUNDARY = "2026-10-31 16:00+00"
DAY = dt.date(2026, 11, 2)

# consumption per meter: 3–40 m³ a month, spread over the tiers; masters read their block plus 5 %
USE = "(3000 + (m * 7919) %% 37000)"


def build(dsn: str, n: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        cid = c.execute("INSERT INTO company (code, name, timezone) VALUES ('bench', '基准水司', %s) RETURNING id",
                        [TZ]).fetchone()[0]
        c.execute("INSERT INTO use_type VALUES (%s, 'residential', '居民')", [cid])
        c.execute("""INSERT INTO meter_book (company_id, code, name, supervisor, cycle)
                     SELECT %s, 'B' || lpad(g::text, 6, '0'), '第' || g || '册', '主管', 'M'
                     FROM generate_series(1, %s) g""", [cid, max(1, n // 1000)])
        c.execute("INSERT INTO customer (company_id, code, name) VALUES (%s, 'C1', '基准客户')", [cid])
        cust = c.execute("SELECT id FROM customer").fetchone()[0]
        book0 = c.execute("SELECT min(id) FROM meter_book").fetchone()[0]
        books = max(1, n // 1000)
        t = time.perf_counter()
        c.execute("""INSERT INTO meter (id, company_id, serial, account_id, protocol, size, register_digits,
                                        apportion_policy)
                     SELECT g, %s, 'M' || g, NULL, 'modbus', 'DN100', 7, 'by_consumption'
                     FROM generate_series(50, %s::bigint, 50) g""", [cid, n])
        for lo in range(1, n + 1, CHUNK):
            hi = min(n, lo + CHUNK - 1)
            c.execute("""INSERT INTO account (id, company_id, code, customer_id, address, use_type, tariff_id, book_id,
                                              household_size, opened_on)
                         SELECT g, %s, 'A' || g, %s, '地址' || g, 'residential', 'water-residential',
                                %s + least((g - 1) / 1000, %s - 1), 1 + g %% 6, '2020-01-01'
                         FROM generate_series(%s::bigint, %s::bigint) g WHERE g %% 50 <> 0""",
                      [cid, cust, book0, books, lo, hi])
            c.execute("""INSERT INTO meter (id, company_id, serial, account_id, protocol, size, parent_meter_id)
                         SELECT g, %s, 'M' || g, g, 'coap', 'DN15',
                                CASE WHEN (g / 50) %% 5 = 0 AND (g / 50 + 1) * 50 <= %s THEN (g / 50 + 1) * 50 END
                         FROM generate_series(%s::bigint, %s::bigint) g WHERE g %% 50 <> 0""", [cid, n, lo, hi])
        c.execute("SELECT setval(pg_get_serial_sequence('meter', 'id'), %s)", [n])
        c.execute("SELECT setval(pg_get_serial_sequence('account', 'id'), %s)", [n])
        print(f"registry: {n:,} meters in {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        for lo in range(1, n + 1, CHUNK):
            hi = min(n, lo + CHUNK - 1)
            # subs: 1,000,000 L + use; a master reads 105 %% of its block's subs (plus its own start)
            c.execute(f"""INSERT INTO reading (meter_id, ts, value, received_at, company_id, quantity, source)
                          SELECT m, %(o)s::timestamptz, 1000000, %(o)s::timestamptz, %(c)s, 1, 1
                            FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) m
                          UNION ALL
                          SELECT m, %(e)s::timestamptz, 1000000 + {USE}, %(e)s::timestamptz, %(c)s, 1, 1
                            FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) m
                           WHERE m %% 50 <> 0 AND m %% 100 <> 7""",
                      {"o": OPEN, "e": CLOSE, "c": cid, "lo": lo, "hi": hi})
        # masters: the sum of their subs' use plus 5 %; 1 % of the closing reads are estimates
        c.execute(f"""INSERT INTO reading (meter_id, ts, value, received_at, company_id, quantity, source)
                      SELECT p.id, %(e)s::timestamptz, 1000000 + sum({USE.replace('m *', 's.id *')}) * 105 / 100,
                             %(e)s::timestamptz, %(c)s, 1, 1
                        FROM meter p JOIN meter s ON s.parent_meter_id = p.id
                       GROUP BY p.id""", {"e": CLOSE, "c": cid})
        c.execute(f"""INSERT INTO reading_estimate (meter_id, ts, quantity, company_id, period, value, method,
                                                    window_before, window_after)
                      SELECT m, %(b)s::timestamptz, 1, %(c)s, '2026-10', 1000000 + {USE}, 'interpolation',
                             '3 days', '1 day'
                        FROM generate_series(7, %(n)s::bigint, 100) m""", {"b": BOUNDARY, "c": cid, "n": n})
        c.execute("VACUUM ANALYZE")
        rows = c.execute("SELECT count(*) FROM reading").fetchone()[0]
        print(f"readings: {rows:,} in {time.perf_counter() - t:.1f}s", flush=True)
    return cid


RESET = """
SET session_replication_role = replica;
TRUNCATE billing_run, bill, bill_line, meter_period_read, apportionment, apportionment_share, billing_run_skip,
         journal_entry, posting, receivable_item, allocation, ledger_balance_delta, ledger_balance, alert, alert_event
         CASCADE;
SET session_replication_role = origin
"""


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for statement in RESET.strip().split(";\n"):
            c.execute(statement)
        c.execute("VACUUM ANALYZE bill, bill_line, meter_period_read, journal_entry, posting, receivable_item")


def whole_run(db: Database, cid: int, book: TariffBook, settings: BillingSettings | None = None):
    """The run as ``meterline bill run`` does it: parallel shards when ``settings.workers`` > 1."""
    with db.connection(company_id=cid) as c:
        res = bill_run(c, cid, "M", "2026-10", tariffs=book, day=DAY, created_by="bench", settings=settings, db=db)
        c.commit()
    return res


# -- the set-based SQL baseline: the same tariff inside PostgreSQL ------------------------------------------
# water-residential@2025-07-01: blocks 22 / 30 m³ a month (+5 m³ a person above 4), water 1.75 / 3.13 / 4.13,
# resource fee 0.40, sewage 1.30 yuan/m³; each line rounded half up once
SQL_BASELINE = [
    """CREATE TEMP TABLE sb_use AS
       SELECT a.id AS account_id,
              CASE WHEN c.value >= o.value THEN c.value - o.value ELSE c.value + m.register_modulus - o.value END
                  * m.multiplier AS volume,
              (greatest(a.household_size - 4, 0) * 5000)::bigint AS raise
         FROM account a JOIN meter_book b ON b.id = a.book_id AND b.cycle = 'M'
         JOIN meter m ON m.account_id = a.id
         JOIN LATERAL (SELECT value FROM reading_effective r WHERE r.meter_id = m.id AND r.quantity = 1
                        AND r.ts BETWEEN %(b)s::timestamptz - interval '10 days' AND %(b)s::timestamptz + interval '5 days'
                        ORDER BY abs(extract(epoch FROM r.ts - %(b)s::timestamptz)), r.estimated LIMIT 1) c ON true
         JOIN LATERAL (SELECT value FROM reading_effective r WHERE r.meter_id = m.id AND r.quantity = 1
                        AND r.ts BETWEEN %(s)s::timestamptz - interval '10 days' AND %(s)s::timestamptz + interval '5 days'
                        ORDER BY abs(extract(epoch FROM r.ts - %(s)s::timestamptz)), r.estimated LIMIT 1) o ON true
        WHERE a.status = 'active'""",
    """CREATE TEMP TABLE sb_line AS
       SELECT u.account_id, x.line_no, x.component, x.tier, x.q AS quantity, x.price AS unit_price,
              (x.q * x.price + 5000000) / 10000000 AS amount
         FROM sb_use u CROSS JOIN LATERAL (VALUES
              (1, 'water', 1, least(u.volume, 22000 + u.raise), 1750000),
              (2, 'water', 2, greatest(least(u.volume, 30000 + u.raise) - (22000 + u.raise), 0), 3130000),
              (3, 'water', 3, greatest(u.volume - (30000 + u.raise), 0), 4130000),
              (4, 'resource_fee', NULL, u.volume, 400000),
              (5, 'sewage', NULL, u.volume, 1300000)) AS x(line_no, component, tier, q, price)
        WHERE x.q > 0 OR x.tier = 1""",
    """INSERT INTO billing_run (company_id, cycle, period, status) VALUES (%(c)s, 'M', '2026-10', 'completed')""",
    """CREATE TEMP TABLE sb_bill AS
       SELECT nextval(pg_get_serial_sequence('bill', 'id')) AS id, account_id, sum(quantity) FILTER (WHERE line_no >= 4
              AND component = 'sewage') AS consumption, sum(amount) AS amount
         FROM sb_line GROUP BY account_id""",
    """INSERT INTO bill (id, company_id, run_id, account_id, period, period_start, period_end, consumption, amount,
                         tax, total, due_date)
       SELECT id, %(c)s, (SELECT id FROM billing_run WHERE company_id = %(c)s), account_id, '2026-10', '2026-10-01',
              '2026-10-31', consumption, amount, 0, amount, '2026-11-15' FROM sb_bill""",
    """INSERT INTO bill_line (bill_id, line_no, company_id, component, tier, quantity, unit_price, price_scale, amount,
                              tariff_version)
       SELECT b.id, l.line_no, %(c)s, l.component, l.tier, l.quantity, l.unit_price, 4, l.amount,
              'water-residential@2025-07-01'
         FROM sb_line l JOIN sb_bill b ON b.account_id = l.account_id""",
]


def sql_baseline(db: Database, cid: int) -> None:
    with db.connection(company_id=cid) as c:
        params = {"c": cid, "b": BOUNDARY, "s": OPEN}
        for statement in SQL_BASELINE:
            c.execute(statement, params)
        run_id = c.execute("SELECT id FROM billing_run WHERE company_id = %s", [cid]).fetchone()[0]
        post_bills(c, cid, run_id, day=DAY)
        c.execute("DROP TABLE sb_use, sb_line, sb_bill")
        c.commit()


def per_row(db: Database, cid: int, sample: int) -> None:
    """Account by account: a query per meter, Python tiers, an INSERT per bill and line, an entry per bill."""
    tiers = [(22000, 1750000), (30000, 3130000), (None, 4130000)]
    with db.connection(company_id=cid) as c:
        run_id = c.execute("""INSERT INTO billing_run (company_id, cycle, period) VALUES (%s, 'M', '2026-10')
                              RETURNING id""", [cid]).fetchone()[0]
        accounts = c.execute("""SELECT a.id, a.household_size FROM account a JOIN meter_book b ON b.id = a.book_id
                                WHERE b.cycle = 'M' ORDER BY a.id LIMIT %s""", [sample]).fetchall()
        for account_id, household in accounts:
            volume = 0
            for meter_id, modulus in c.execute("SELECT id, register_modulus FROM meter WHERE account_id = %s",
                                               [account_id]).fetchall():
                vals = []
                for b in (OPEN, BOUNDARY):
                    vals.append(c.execute(
                        """SELECT value FROM reading_effective WHERE meter_id = %s AND quantity = 1
                             AND ts BETWEEN %s::timestamptz - interval '10 days' AND %s::timestamptz + interval '5 days'
                           ORDER BY abs(extract(epoch FROM ts - %s::timestamptz)), estimated LIMIT 1""",
                        [meter_id, b, b, b]).fetchone()[0])
                volume += vals[1] - vals[0] if vals[1] >= vals[0] else vals[1] + modulus - vals[0]
            raise_ = max(household - 4, 0) * 5000
            lines, lo = [], 0
            for k, (hi, price) in enumerate(tiers, 1):
                top = volume if hi is None else min(volume, hi + raise_)
                q = max(top - lo, 0)
                if q or k == 1:
                    lines.append(("water", k, q, price))
                if hi is None or volume <= hi + raise_:
                    break
                lo = hi + raise_
            lines += [("resource_fee", None, volume, 400000), ("sewage", None, volume, 1300000)]
            amounts = [(q * p + 5000000) // 10000000 for _c, _t, q, p in lines]
            total = sum(amounts)
            bill_id = c.execute(
                """INSERT INTO bill (company_id, run_id, account_id, period, period_start, period_end, consumption,
                                     amount, tax, total, due_date)
                   VALUES (%s, %s, %s, '2026-10', '2026-10-01', '2026-10-31', %s, %s, 0, %s, '2026-11-15')
                   RETURNING id""", [cid, run_id, account_id, volume, total, total]).fetchone()[0]
            for no, ((comp, tier, q, p), amt) in enumerate(zip(lines, amounts), 1):
                c.execute("""INSERT INTO bill_line (bill_id, line_no, company_id, component, tier, quantity, unit_price,
                                                    amount) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                          [bill_id, no, cid, comp, tier, q, p, amt])
            by_comp: dict[str, int] = {}
            for (comp, *_), amt in zip(lines, amounts):
                by_comp[comp] = by_comp.get(comp, 0) + amt
            if total:
                post_entry(c, cid, day=DAY, kind="bill", ref_type="bill", ref_id=bill_id,
                           postings=[Posting(f"AR:{account_id}", total)]
                           + [Posting(f"REV:{k}", -v) for k, v in by_comp.items() if v],
                           idempotency_key=f"bill:{bill_id}")
        c.commit()


def frame_for_kernel(db: Database, cid: int) -> pl.DataFrame:
    with db.connection(company_id=cid) as c:
        rows = c.execute("""SELECT b.account_id, b.consumption FROM bill b WHERE b.company_id = %s""", [cid]).fetchall()
    acc = pl.DataFrame(rows, schema={"row": pl.Int64, "volume": pl.Int64}, orient="row")
    return acc.with_columns(tariff_id=pl.lit("water-residential"), period_start=pl.lit(dt.date(2026, 10, 1)),
                            period_end=pl.lit(dt.date(2026, 10, 31)),
                            household_size=((pl.col("row") % 6) + 1).cast(pl.Int16),
                            apportioned=(pl.col("row") % 3 == 0).cast(pl.Int64) * 700)


def timed(label: str, n: int, fn, repeat: int, before=None) -> float:
    secs = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        secs.append(time.perf_counter() - t)
    med = statistics.median(secs)
    print(f"{label:<44} {med:8.2f} s  {n / med:>14,.0f} meters/s   (runs: {', '.join(f'{s:.2f}' for s in secs)})",
          flush=True)
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meters", type=int, default=1_000_000)
    p.add_argument("--sample", type=int, default=2_000, help="accounts for the per-row baseline")
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--profile", action="store_true", help="print the run's stage timings")
    p.add_argument("--shard-accounts", type=int, default=BillingSettings().shard_accounts,
                   help="accounts per shard of the run (billing.shard_accounts)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, BillingSettings().workers],
                   help="billing.workers to time (1: the whole run in one transaction)")
    add_server_args(p)
    args = p.parse_args()
    n = args.meters
    book = TariffBook.load()
    with server(args.dsn) as maint, fresh_database(maint, "bench_billing", args.keep) as dsn:
        cid = build(dsn, n)
        db = Database(dsn, min_size=1, max_size=4, role="meterline_app").open()
        try:
            last: dict = {}

            runs = {}
            for workers in sorted(set(args.workers), reverse=True):
                def go(workers: int = workers) -> None:
                    last["res"] = whole_run(db, cid, book, BillingSettings(shard_accounts=args.shard_accounts,
                                                                           workers=workers))

                label = "one transaction" if workers == 1 else f"{workers} workers, shards committed"
                runs[workers] = timed(f"whole run ({label})", n, go, args.repeat, lambda: reset(dsn))
                if args.profile:
                    print("  stages (summed over shards): " + ", ".join(
                        f"{k} {v:.2f}s" for k, v in last["res"].timings.items()), flush=True)
            if len(runs) > 1:
                print(f"  parallel / one transaction: {runs[1] / min(v for k, v in runs.items() if k > 1):.2f}x",
                      flush=True)
            whole = min(runs.values())
            res = last["res"]
            print(f"  bills {res.bills:,}, total {res.total / 100:,.2f} yuan, estimated {res.estimated:,}, "
                  f"skipped {len(res.skips):,}, trees {res.trees}, apportioned {res.apportioned / 1000:,.0f} m³, "
                  f"posted {res.posted:,}", flush=True)
            frame = frame_for_kernel(db, cid)
            rated = {}

            def kernel() -> None:
                rated["r"] = rate(book, frame)

            kern = timed("rating kernel alone: rate() in memory", frame.height, kernel, args.repeat)
            print(f"  {rated['r'].lines.height:,} lines for {frame.height:,} bills", flush=True)
            if args.skip_baselines:
                return
            sql_s = timed("baseline: set-based SQL (same tariff)", n, lambda: sql_baseline(db, cid), args.repeat,
                          lambda: reset(dsn))
            sample = min(args.sample, n)
            row_s = timed(f"baseline: per-row loop on {sample:,} accounts", sample, lambda: per_row(db, cid, sample),
                          1, lambda: reset(dsn))
            row_full = row_s * n / sample
            print(f"  per-row loop extrapolated to {n:,} meters: {row_full:,.0f} s", flush=True)
            print(f"whole run vs SQL baseline: {sql_s / whole:.2f}x;  vs per-row loop: {row_full / whole:.1f}x;  "
                  f"kernel {frame.height / kern:,.0f} bills/s", flush=True)
        finally:
            db.close()


if __name__ == "__main__":
    main()
