"""Every export of a period at once (what the demo and ``meterline export all`` call)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from meterline.exporters.bills import export_bills
from meterline.exporters.data import export_data
from meterline.exporters.finance import export_finance
from meterline.exporters.notice import export_notices
from meterline.store.personal import Disclosure, KeyRing


def export_all(conn: psycopg.Connection, company_id: int, period: str, out_dir: Path, *,
               disclosure: Disclosure = Disclosure.NONE, keyring: KeyRing | None = None) -> list[Path]:
    """Bills (JSONL, CSV), notices (HTML per account), finance (CSV, Parquet) and data (Parquet)
    of ``period`` under ``out_dir``; returns the files written, in a stable order."""
    out = Path(out_dir)
    b = export_bills(conn, company_id, period, out, disclosure=disclosure, keyring=keyring)
    n = export_notices(conn, company_id, period, out, disclosure=disclosure, keyring=keyring)
    f = export_finance(conn, company_id, period, out)
    d = export_data(conn, company_id, period, out)
    return [b.jsonl, b.csv, *n.files, f.csv, f.parquet, *d.files.values()]
