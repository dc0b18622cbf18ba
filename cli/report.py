"""``meterline report``: collection rate, reading rate, arrears aging, non-revenue water, billing runs."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.errors import MeterlineError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("collection", "reading", "aging", "nrw", "run"),
                   help="collection (回收率 by district and month), reading (抄表率 by book and reader), "
                        "aging (arrears by days past due), nrw (产销差 per master meter), run (billing runs)")
    p.add_argument("--period", default=None, metavar="YYYY-MM", help="the period (default: last month)")
    p.add_argument("--as-of", default=None, metavar="YYYY-MM-DD",
                   help="collection, aging: figures at the end of this business day (default: today)")
    p.add_argument("--months", type=int, default=12, help="collection: months back to --period (default 12)")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the report as CSV "
                                                               "(several tables: FILE gets a suffix per table)")
    p.add_argument("--chart", default=None, metavar="FILE.png", help="collection, nrw: draw a chart (PNG)")


def _last_month(today: dt.date) -> str:
    first = today.replace(day=1) - dt.timedelta(days=1)
    return f"{first.year:04d}-{first.month:02d}"


def _show(value: Any, kind: str, minor_units: int) -> str:
    from meterline.exporters._files import money, scaled

    if value is None:
        return ""
    if kind == "money":
        return money(value, minor_units)
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "float":
        return f"{value:,.2f}"
    if kind == "volume":
        return scaled(value, 3)  # base units (L) as m³
    if kind == "int":
        return f"{value:,}"
    return str(value)


def run(ctx: Context, args: argparse.Namespace) -> int:
    from meterline.exporters import reports as R
    from meterline.ingest.vee.config import config_for

    company = ctx.company
    as_of = None
    if args.as_of:
        try:
            as_of = dt.date.fromisoformat(args.as_of)
        except ValueError as exc:
            raise MeterlineError(f"--as-of {args.as_of!r} is not a date like 2026-10-31") from exc
    if args.months < 1 or args.months > 120:
        raise MeterlineError("--months must be between 1 and 120")
    if args.chart and args.kind not in ("collection", "nrw"):
        raise MeterlineError("--chart is drawn for collection and nrw only")
    from zoneinfo import ZoneInfo

    period = args.period or _last_month(dt.datetime.now(ZoneInfo(company.timezone)).date())
    with ctx.scoped() as conn:
        reports = R.build(conn, company.id, args.kind, period, as_of=as_of, config=config_for(ctx.settings),
                          months=args.months)
    for rep in reports:
        t = Table(title=rep.title)
        for col, kind in zip(rep.columns, rep.kinds):
            t.add_column(col, justify="left" if kind == "text" else "right")
        for row in rep.rows:
            t.add_row(*(_show(v, k, company.minor_units) for v, k in zip(row, rep.kinds)))
        ctx.console.print(t)
        if not rep.rows:
            ctx.console.print(f"{rep.name}: nothing to report for {period}")
    if args.csv:
        path = Path(args.csv)
        for i, rep in enumerate(reports):
            target = path if i == 0 else path.with_name(f"{path.stem}_{rep.name}{path.suffix}")
            R.write_csv(rep, target)
            ctx.console.print(f"CSV: {target}")
    if args.chart:
        drawn = R.collection_chart(reports[0], Path(args.chart)) if args.kind == "collection" else \
            R.nrw_chart(reports[0], Path(args.chart))
        ctx.console.print(f"chart: {drawn}")
    return 0


COMMANDS = [Command("report", "management reports: collection rate, reading rate, aging, non-revenue water, "
                              "billing runs (table, CSV, PNG)", run, configure, permission="reports.read")]
