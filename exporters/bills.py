"""Bills of a period (or of one billing run) for print shops and e-invoicing platforms.

Two files, written by :func:`export_bills`:

* ``bills/<company>_<period>_bills.jsonl`` — one JSON object per bill: the bill (period, dates,
  consumption in base units, amount / tax / total in **minor units**, due date, estimated,
  status), the account, the customer's invoice title (发票抬头) and tax id (纳税人识别号) where
  present, its ``lines`` (component, tier, quantity, unit price at its scale, amount, tax,
  tariff version, source) and ``taxes`` — amount and tax per component (what an e-invoice
  lists per item);
* ``bills/<company>_<period>_bills.csv`` — the same, flat: one row per bill line with the bill's
  columns repeated, money as decimal text in currency units (``123.45``) for spreadsheets.

Bills are ordered by account code, run and bill id; lines by line number. Reversed bills
(红冲) are included with ``status = reversed`` (an e-invoicing platform issues the red-letter
invoice from it); a bill reversed after an export shows ``reversed`` when the period is exported
again — the one way a past period's file changes, and the change is the news. Only the columns of ``0001_core.sql`` are read from ``bill`` / ``bill_line``, a line's source
through ``bill_line_sourced`` (0660: the document as a line stores it or as the run stores it
once per bill and per rating document).

Personal data: these files go to outside parties, so a customer's phone and a person's tax id
(for a person it is the national ID number) are written as ``disclosure`` says —
:attr:`Disclosure.NONE` (the default: blank), ``MASKED`` (``138****0001``) or ``FULL``. An
organisation's tax id and invoice title are business data and always written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from meterline.exporters._files import (CompanyRef, Period, company_ref, csv_bytes, json_line, money,
                                        unit_price_text, write_file)
from meterline.store.personal import Disclosure, KeyRing, default_keyring, mask

_BILLS = """
SELECT b.id AS bill_id, b.run_id, r.cycle, b.period, b.period_start, b.period_end, b.consumption,
       b.amount, b.tax, b.total, b.due_date, b.estimated, b.status,
       a.id AS account_id, a.code AS account, a.address, a.use_type,
       d.code AS district, d.name AS district_name, mb.code AS book,
       cu.code AS customer, cu.name AS customer_name, cu.kind AS customer_kind,
       cu.invoice_title, cu.tax_id, cu.phone
  FROM bill b
  JOIN billing_run r ON r.id = b.run_id
  JOIN account a ON a.id = b.account_id
  JOIN customer cu ON cu.id = a.customer_id
  LEFT JOIN district d ON d.id = a.district_id
  LEFT JOIN meter_book mb ON mb.id = a.book_id
 WHERE b.company_id = %(c)s AND b.period = %(p)s AND (%(run)s::bigint IS NULL OR b.run_id = %(run)s)
 ORDER BY a.code, b.run_id, b.id
"""

_LINES = """
SELECT l.bill_id, l.line_no, l.component, l.tier, l.quantity, l.unit_price, l.price_scale, l.amount, l.tax,
       l.tariff_version, l.source
  FROM bill_line_sourced l JOIN bill b ON b.id = l.bill_id
 WHERE b.company_id = %(c)s AND b.period = %(p)s AND (%(run)s::bigint IS NULL OR b.run_id = %(run)s)
 ORDER BY l.bill_id, l.line_no
"""

CSV_COLUMNS = ("bill_id", "run_id", "cycle", "period", "period_start", "period_end", "status", "estimated",
               "account", "address", "district", "book", "use_type", "customer", "customer_name", "invoice_title",
               "tax_id", "phone", "consumption", "bill_amount", "bill_tax", "bill_total", "due_date", "line_no",
               "component", "tier", "quantity", "unit_price", "line_amount", "line_tax", "tariff_version")


@dataclass(frozen=True, slots=True)
class BillExport:
    jsonl: Path
    csv: Path
    bills: int
    total: int  #: minor units, bills with status issued


def bill_records(conn: psycopg.Connection, company_id: int, period: str, *, run_id: int | None = None,
                 disclosure: Disclosure = Disclosure.NONE, keyring: KeyRing | None = None) -> list[dict[str, Any]]:
    """The bills of ``period`` (of run ``run_id`` if given) as records with their lines, in export order."""
    company = company_ref(conn, company_id)
    Period.parse(period, company.timezone)  # a clear error for a bad period
    params = {"c": company_id, "p": period, "run": run_id}
    with conn.cursor(row_factory=dict_row) as cur:
        bills = cur.execute(_BILLS, params).fetchall()
        lines = cur.execute(_LINES, params).fetchall()
    by_bill: dict[int, list[dict[str, Any]]] = {}
    for ln in lines:
        by_bill.setdefault(ln["bill_id"], []).append(ln)
    ring = keyring if keyring is not None or disclosure is Disclosure.NONE else default_keyring()
    out = []
    for b in bills:
        own = by_bill.get(b["bill_id"], [])
        taxes: dict[str, list[int]] = {}
        for ln in own:
            t = taxes.setdefault(ln["component"], [0, 0])
            t[0] += ln["amount"]
            t[1] += ln["tax"]
        out.append({
            "bill_id": b["bill_id"], "run_id": b["run_id"], "cycle": b["cycle"], "period": b["period"],
            "period_start": b["period_start"].isoformat(), "period_end": b["period_end"].isoformat(),
            "status": b["status"], "estimated": b["estimated"], "consumption": b["consumption"],
            "amount": b["amount"], "tax": b["tax"], "total": b["total"], "due_date": b["due_date"].isoformat(),
            "currency": company.currency, "minor_units": company.minor_units,
            "account": {"code": b["account"], "address": b["address"], "use_type": b["use_type"],
                        "district": b["district"], "district_name": b["district_name"], "book": b["book"]},
            "customer": {"code": b["customer"], "name": b["customer_name"], "kind": b["customer_kind"],
                         "invoice_title": b["invoice_title"],
                         "tax_id": _tax_id(b, disclosure, ring, company_id),
                         "phone": _personal(b["phone"], "phone", disclosure, ring, company_id)},
            "lines": [{"line_no": ln["line_no"], "component": ln["component"], "tier": ln["tier"],
                       "quantity": ln["quantity"], "unit_price": ln["unit_price"], "price_scale": ln["price_scale"],
                       "amount": ln["amount"], "tax": ln["tax"], "tariff_version": ln["tariff_version"],
                       "source": ln["source"]} for ln in own],
            "taxes": [{"component": c, "amount": a, "tax": t} for c, (a, t) in sorted(taxes.items())],
        })
    return out


def _personal(stored: str | None, field: str, disclosure: Disclosure, ring: KeyRing | None, company_id: int) -> str | None:
    if stored is None or disclosure is Disclosure.NONE or ring is None:
        return None
    return ring.reveal(stored, disclosure, company_id=company_id, field=field)


def _tax_id(b: dict[str, Any], disclosure: Disclosure, ring: KeyRing | None, company_id: int) -> str | None:
    tax_id = b["tax_id"]
    if tax_id is None or b["customer_kind"] == "organisation":
        return tax_id
    if disclosure is Disclosure.NONE:
        return None
    return tax_id if disclosure is Disclosure.FULL else mask(tax_id)


def _csv_rows(records: list[dict[str, Any]], company: CompanyRef) -> list[list[Any]]:
    mu = company.minor_units
    rows = []
    for r in records:
        head = [r["bill_id"], r["run_id"], r["cycle"], r["period"], r["period_start"], r["period_end"], r["status"],
                r["estimated"], r["account"]["code"], r["account"]["address"], r["account"]["district"],
                r["account"]["book"], r["account"]["use_type"], r["customer"]["code"], r["customer"]["name"],
                r["customer"]["invoice_title"], r["customer"]["tax_id"], r["customer"]["phone"], r["consumption"],
                money(r["amount"], mu), money(r["tax"], mu), money(r["total"], mu), r["due_date"]]
        if not r["lines"]:
            rows.append(head + [None] * 8)
        for ln in r["lines"]:
            rows.append(head + [ln["line_no"], ln["component"], ln["tier"], ln["quantity"],
                                unit_price_text(ln["unit_price"], ln["price_scale"], mu), money(ln["amount"], mu),
                                money(ln["tax"], mu), ln["tariff_version"]])
    return rows


def export_bills(conn: psycopg.Connection, company_id: int, period: str, out_dir: Path, *, run_id: int | None = None,
                 disclosure: Disclosure = Disclosure.NONE, keyring: KeyRing | None = None) -> BillExport:
    """Write the period's bills as JSON Lines and CSV under ``out_dir/bills/``."""
    company = company_ref(conn, company_id)
    records = bill_records(conn, company_id, period, run_id=run_id, disclosure=disclosure, keyring=keyring)
    stem = f"{company.code}_{period}" + (f"_run{run_id}" if run_id is not None else "") + "_bills"
    base = Path(out_dir) / "bills"
    jsonl = write_file(base / f"{stem}.jsonl", "".join(json_line(r) + "\n" for r in records).encode("utf-8"))
    csv_path = write_file(base / f"{stem}.csv", csv_bytes(CSV_COLUMNS, _csv_rows(records, company)))
    total = sum(r["total"] for r in records if r["status"] == "issued")
    return BillExport(jsonl, csv_path, len(records), total)
