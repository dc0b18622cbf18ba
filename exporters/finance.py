"""Journal totals by account code and business day, for a general-ledger import.

:func:`export_finance` writes ``finance/<company>_<period>_journal.csv`` and ``.parquet``: for
every business day of the period (``journal_entry.booked_on``) and account code, the debit
total, the credit total (positive), the net (debit − credit) and the number of entries, in
minor units. The per-customer accounts are rolled up as the trial balance does — ``AR:*`` and
``PREPAID:*`` — since a general ledger carries the control accounts, not one account per
customer (``detail=True`` keeps them). Each code carries its class from the chart of accounts
(type, Chinese name) for mapping to the general ledger's own codes.

Rows are ordered by day and code; a re-run for a past period gives the same bytes, whatever was
booked on later days (entries are append-only; a closed day takes no new entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg

from meterline.exporters._files import Period, company_ref, csv_bytes, money, parquet_bytes, write_file

_SQL = """
SELECT e.booked_on AS day, {key} AS account_code, c.type AS account_type, c.name_zh AS account_name,
       coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0)::bigint AS debit,
       coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0)::bigint AS credit,
       count(DISTINCT e.id)::bigint AS entries
  FROM journal_entry e
  JOIN posting p ON p.entry_id = e.id
  LEFT JOIN ledger_account_class c ON c.prefix = split_part(p.account_code, ':', 1)
 WHERE e.company_id = %(c)s AND e.booked_on BETWEEN %(first)s AND %(last)s
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2
"""
_ROLLUP = ("CASE WHEN split_part(p.account_code, ':', 1) IN ('AR', 'PREPAID') "
           "THEN split_part(p.account_code, ':', 1) || ':*' ELSE p.account_code END")

SCHEMA = {"day": pl.Date, "account_code": pl.String, "account_type": pl.String, "account_name": pl.String,
          "debit": pl.Int64, "credit": pl.Int64, "net": pl.Int64, "entries": pl.Int64}


@dataclass(frozen=True, slots=True)
class FinanceExport:
    csv: Path
    parquet: Path
    rows: int
    debit: int
    credit: int


def journal_totals(conn: psycopg.Connection, company_id: int, period: str, *, detail: bool = False) -> pl.DataFrame:
    company = company_ref(conn, company_id)
    per = Period.parse(period, company.timezone)
    rows = conn.execute(_SQL.format(key="p.account_code" if detail else _ROLLUP),
                        {"c": company_id, "first": per.first_day, "last": per.last_day}).fetchall()
    data = [(d, code, t, n, dr, cr, dr - cr, k) for d, code, t, n, dr, cr, k in rows]
    return pl.DataFrame(data, schema=SCHEMA, orient="row")


def export_finance(conn: psycopg.Connection, company_id: int, period: str, out_dir: Path, *,
                   detail: bool = False) -> FinanceExport:
    company = company_ref(conn, company_id)
    frame = journal_totals(conn, company_id, period, detail=detail)
    stem = f"{company.code}_{period}_journal" + ("_detail" if detail else "")
    base = Path(out_dir) / "finance"
    mu = company.minor_units
    csv_path = write_file(base / f"{stem}.csv", csv_bytes(
        ("day", "account_code", "account_type", "account_name", "debit", "credit", "net", "entries", "currency"),
        ((r["day"], r["account_code"], r["account_type"], r["account_name"], money(r["debit"], mu),
          money(r["credit"], mu), money(r["net"], mu), r["entries"], company.currency)
         for r in frame.iter_rows(named=True))))
    pq = write_file(base / f"{stem}.parquet", parquet_bytes(frame))
    return FinanceExport(csv_path, pq, frame.height, int(frame["debit"].sum() or 0), int(frame["credit"].sum() or 0))
