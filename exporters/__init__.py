"""Exports: bill files, notices, finance and analyst data, reports, Prometheus metrics, alert sinks.

For callers that want everything of a period (the demo):

* ``export_all(conn, company_id, period, out_dir) -> list[Path]`` (:mod:`.bundle`);
* ``report_all(conn, company_id, period, out_dir) -> list[Path]`` (:mod:`.reports`).

Both take a connection in the company's scope. They are imported on first use, so importing
``meterline.exporters.alert_sinks`` does not load polars or matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_all(conn: Any, company_id: int, period: str, out_dir: Path, **kw: Any) -> list[Path]:
    from meterline.exporters.bundle import export_all as _export_all

    return _export_all(conn, company_id, period, out_dir, **kw)


def report_all(conn: Any, company_id: int, period: str, out_dir: Path, **kw: Any) -> list[Path]:
    from meterline.exporters.reports import report_all as _report_all

    return _report_all(conn, company_id, period, out_dir, **kw)
