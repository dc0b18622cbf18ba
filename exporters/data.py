"""Readings, bills, bill lines and payments of a period as Parquet, for analysts.

:func:`export_data` writes hive-style partitions, one file per dataset, company and period::

    data/readings/company=acme/period=2026-10/part-0.parquet
    data/bills/company=acme/period=2026-10/part-0.parquet
    data/bill_lines/company=acme/period=2026-10/part-0.parquet
    data/payments/company=acme/period=2026-10/part-0.parquet

so ``pl.scan_parquet("data/readings", hive_partitioning=True)`` (or pyarrow / DuckDB / Spark)
reads every period with ``company`` and ``period`` as columns. Exporting a period rewrites only
its own partitions; an empty period gets an empty file with the schema.

* readings: what billing may use (``reading_effective``): real reads timed inside the period and
  the estimated reads that close it (timed at its end); meter, account, UTC time, quantity,
  register value in base units (L, Wh), source, estimated, method, validation state;
* bills and bill_lines: the bills of the period (by ``bill.period``), amounts in minor units;
* payments: payments booked on a business day of the period: channel, account, amount (minor
  units), received at (UTC), booked on, tender, cash account. No personal data in any of them
  (account codes, not names; no external ids of wallets beyond the channel's transaction id).

A bill reversed (红冲) after an export carries ``status = reversed`` when its period is exported
again; nothing else in a past period's files changes. Rows are sorted by their key, schemas are explicit and the writer's settings fixed
(:mod:`meterline.exporters._files`), so a re-run gives the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import psycopg

from meterline.exporters._files import Period, company_ref, parquet_bytes, write_file

UTC_US = pl.Datetime("us", "UTC")

_READINGS = """
SELECT r.meter_id, m.serial, a.code AS account, (extract(epoch FROM r.ts) * 1000000)::bigint AS ts,
       r.quantity, r.value, s.name AS source, r.estimated::text, r.method, r.state
  FROM reading_effective r
  JOIN meter m ON m.id = r.meter_id
  LEFT JOIN account a ON a.id = m.account_id
  LEFT JOIN reading_source s ON s.code = r.source
 WHERE r.company_id = {c} AND r.ts >= '{s}' AND r.ts <= '{e}'
   AND ((NOT r.estimated AND r.ts >= '{s}' AND r.ts < '{e}') OR (r.estimated AND r.ts > '{s}' AND r.ts <= '{e}'))
 ORDER BY r.meter_id, r.ts, r.quantity, r.estimated
"""
READINGS = {"meter_id": pl.Int64, "serial": pl.String, "account": pl.String, "ts": pl.Int64, "quantity": pl.Int16,
            "value": pl.Int64, "source": pl.String, "estimated": pl.Boolean, "method": pl.String, "state": pl.String}

_BILLS = """
SELECT b.id AS bill_id, b.run_id, r.cycle, a.code AS account, d.code AS district, mb.code AS book, a.use_type,
       to_char(b.period_start, 'YYYY-MM-DD'), to_char(b.period_end, 'YYYY-MM-DD'), b.consumption, b.amount, b.tax,
       b.total, to_char(b.due_date, 'YYYY-MM-DD'), b.estimated::text, b.status
  FROM bill b JOIN billing_run r ON r.id = b.run_id JOIN account a ON a.id = b.account_id
  LEFT JOIN district d ON d.id = a.district_id LEFT JOIN meter_book mb ON mb.id = a.book_id
 WHERE b.company_id = {c} AND b.period = '{p}'
 ORDER BY b.id
"""
BILLS = {"bill_id": pl.Int64, "run_id": pl.Int64, "cycle": pl.String, "account": pl.String, "district": pl.String,
         "book": pl.String, "use_type": pl.String, "period_start": pl.Date, "period_end": pl.Date,
         "consumption": pl.Int64, "amount": pl.Int64, "tax": pl.Int64, "total": pl.Int64, "due_date": pl.Date,
         "estimated": pl.Boolean, "status": pl.String}

_LINES = """
SELECT l.bill_id, l.line_no, l.component, l.tier, l.quantity, l.unit_price, l.price_scale, l.amount, l.tax,
       l.tariff_version
  FROM bill_line l JOIN bill b ON b.id = l.bill_id
 WHERE b.company_id = {c} AND b.period = '{p}'
 ORDER BY l.bill_id, l.line_no
"""
LINES = {"bill_id": pl.Int64, "line_no": pl.Int16, "component": pl.String, "tier": pl.Int16, "quantity": pl.Int64,
         "unit_price": pl.Int64, "price_scale": pl.Int16, "amount": pl.Int64, "tax": pl.Int64,
         "tariff_version": pl.String}

_PAYMENTS = """
SELECT p.id AS payment_id, p.channel, p.external_id, a.code AS account, p.amount,
       (extract(epoch FROM p.received_at) * 1000000)::bigint AS received_at,
       to_char(p.booked_on, 'YYYY-MM-DD'), p.tender, p.cash_account
  FROM payment p LEFT JOIN account a ON a.id = p.account_id
 WHERE p.company_id = {c} AND p.booked_on BETWEEN '{first}' AND '{last}'
 ORDER BY p.id
"""
PAYMENTS = {"payment_id": pl.Int64, "channel": pl.String, "external_id": pl.String, "account": pl.String,
            "amount": pl.Int64, "received_at": pl.Int64, "booked_on": pl.Date, "tender": pl.String,
            "cash_account": pl.String}


@dataclass(frozen=True, slots=True)
class DataExport:
    files: dict[str, Path]
    rows: dict[str, int]


def _copy(conn: psycopg.Connection, query: str, schema: dict[str, Any]) -> pl.DataFrame:
    """A query's rows through COPY (CSV) into a frame of ``schema`` (fast, and no per-row Python)."""
    buf = io.BytesIO()
    with conn.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER false)") as cp:
        for chunk in cp:
            buf.write(chunk)
    if buf.tell() == 0:
        return pl.DataFrame(schema=schema)
    buf.seek(0)
    return pl.read_csv(buf, has_header=False, new_columns=list(schema), schema=schema, try_parse_dates=False)


def datasets(conn: psycopg.Connection, company_id: int, period: str) -> dict[str, pl.DataFrame]:
    company = company_ref(conn, company_id)
    per = Period.parse(period, company.timezone)
    c = int(company_id)
    fmt = {"c": c, "p": per.code, "s": per.start.isoformat(), "e": per.end.isoformat(),
           "first": per.first_day.isoformat(), "last": per.last_day.isoformat()}
    readings = _copy(conn, _READINGS.format(**fmt), READINGS).with_columns(pl.col("ts").cast(UTC_US))
    payments = _copy(conn, _PAYMENTS.format(**fmt), PAYMENTS).with_columns(pl.col("received_at").cast(UTC_US))
    return {"readings": readings, "bills": _copy(conn, _BILLS.format(**fmt), BILLS),
            "bill_lines": _copy(conn, _LINES.format(**fmt), LINES), "payments": payments}


def export_data(conn: psycopg.Connection, company_id: int, period: str, out_dir: Path) -> DataExport:
    company = company_ref(conn, company_id)
    files, rows = {}, {}
    for name, frame in datasets(conn, company_id, period).items():
        path = Path(out_dir) / "data" / name / f"company={company.code}" / f"period={period}" / "part-0.parquet"
        files[name] = write_file(path, parquet_bytes(frame))
        rows[name] = frame.height
    return DataExport(files, rows)
