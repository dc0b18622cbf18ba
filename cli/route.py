"""``meterline route``: handheld route files out (export) and readings back in (import)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.ingest import handheld
from meterline.protocols.handheld.upload import UploadError

SHOWN_ERRORS = 50


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = sub.add_parser("export", help="write the route file of a meter book for the handheld")
    e.add_argument("--book", required=True, help="meter book code")
    e.add_argument("--out", "-o", default="-", help="output file (default: stdout)")
    e.add_argument("--format", choices=("csv", "json"), default=None,
                   help="csv or json (default: from the file name, else csv)")
    e.add_argument("--date", type=dt.date.fromisoformat, default=None,
                   help="planned read date, for the expected range (default: today)")
    e.add_argument("--tolerance", type=float, default=0.5,
                   help="expected range: ± this share of the expected consumption (default 0.5)")
    i = sub.add_parser("import", help="import the readings a handheld brought back (CSV or JSON)")
    i.add_argument("file")
    i.add_argument("--encoding", default="utf-8", help="text encoding of the file (default utf-8; e.g. gb18030)")
    i.add_argument("--errors", default=None,
                   help="write every refused row to this CSV (default: FILE.errors.csv when there are any)")


def _export(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    fmt = args.format or ("json" if str(args.out).lower().endswith(".json") else "csv")
    with ctx.db.connection(company_id=company.id) as conn:
        entries = handheld.export_route(conn, company, args.book, on=args.date, tolerance=args.tolerance)
    tz = ZoneInfo(company.timezone)
    if args.out == "-":
        handheld.write_route(entries, fmt, sys.stdout, tz=tz, book=args.book)
        return 0
    with open(args.out, "w", encoding="utf-8-sig" if fmt == "csv" else "utf-8", newline="") as fh:
        n = handheld.write_route(entries, fmt, fh, tz=tz, book=args.book)
    no_history = sum(1 for e in entries if e.expected_high is None)
    ctx.console.print(f"route of book {args.book}: {n} meters written to {args.out} ({fmt}); "
                      f"{no_history} without enough history for an expected range")
    return 0


def _import(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    path = Path(args.file)
    data = path.read_bytes()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=ctx.console, transient=True) as progress:
        task = progress.add_task(f"importing {path.name}", total=None)

        def step(message: str) -> None:
            progress.update(task, description=f"{path.name}: {message}")

        # an ingest path, like the reading writer: the service role COPYs (row-level security
        # refuses COPY); the command's permission check and the company's meters scope it
        with ctx.db.connect(autocommit=True, company_id=company.id, owner=True) as conn:
            try:
                report = handheld.import_upload(conn, company, data, name=path.name, encoding=args.encoding,
                                                progress=step)
            except UploadError as exc:
                progress.stop()
                ctx.console.print(f"error: {exc}")
                ctx.console.print("nothing imported (recorded as a dead letter)")
                return 2
    summary = Table(title=f"route import of {path.name} into {company.code}", show_header=False)
    summary.add_column("what")
    summary.add_column("count", justify="right")
    summary.add_row("rows in the file", f"{report.rows_total:,}")
    summary.add_row("meters read", f"{report.rows_read:,}")
    summary.add_row("meters skipped (skip code)", f"{report.rows_skipped:,}")
    summary.add_row("rows refused", f"{report.rows_bad:,}")
    summary.add_row("repeated rows", f"{report.rows_duplicate:,}")
    summary.add_row("new readings stored", f"{report.readings_new:,}")
    summary.add_row("readings stored before", f"{report.readings_known:,}")
    ctx.console.print(summary)
    if report.already_imported_at is not None:
        ctx.console.print(f"this file was imported before (import #{report.import_id}, "
                          f"{report.already_imported_at:%Y-%m-%d %H:%M %Z}): nothing changed")
    else:
        ctx.console.print(f"recorded as import #{report.import_id}")
    if report.ignored_columns:
        ctx.console.print(f"columns ignored: {', '.join(report.ignored_columns)}")
    if report.errors:
        for err in report.errors[:SHOWN_ERRORS]:
            ctx.console.print(f"  {err}")
        if len(report.errors) > SHOWN_ERRORS:
            ctx.console.print(f"  ... and {len(report.errors) - SHOWN_ERRORS:,} more")
        out = Path(args.errors) if args.errors else path.with_name(path.name + ".errors.csv")
        with open(out, "w", encoding="utf-8-sig", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["line", "field", "message", "row"])
            for err in report.errors:
                w.writerow([err.line, err.field or "", err.message, err.raw])
        ctx.console.print(f"{report.rows_bad:,} row(s) refused: every one is listed in {out}"
                          + (f" and kept with import #{report.import_id}" if report.already_imported_at is None else ""))
        return 1
    return 0


def run(ctx: Context, args: argparse.Namespace) -> int:
    return _export(ctx, args) if args.action == "export" else _import(ctx, args)


COMMANDS = [Command("route", "handheld routes: export a meter book, import the readings", run, configure,
                   permission={"export": "routes.export", "import": "routes.import"})]
