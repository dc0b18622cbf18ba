"""``meterline registry``: import and export customers, accounts, meters and books (CSV)."""

from __future__ import annotations

import argparse
import sys

from meterline.cli._base import Command, Context
from meterline.store import registry


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = sub.add_parser("import", help="import a registry CSV (all rows or none)")
    i.add_argument("file")
    e = sub.add_parser("export", help="export the registry as CSV")
    e.add_argument("file", nargs="?", default="-", help="output file (default: stdout)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    with ctx.db.connection(company_id=company.id) as conn:
        if args.action == "import":
            summary = registry.import_file(conn, company.id, args.file)
            ctx.console.print(
                f"imported {summary.rows} rows into {company.code}: {summary.customers} customers, "
                f"{summary.accounts} accounts, {summary.meters} meters, {summary.books} books, "
                f"{summary.districts} districts")
            return 0
        if args.file == "-":
            n = registry.export_csv(conn, company.id, sys.stdout)
        else:
            with open(args.file, "w", encoding="utf-8", newline="") as fh:
                n = registry.export_csv(conn, company.id, fh)
            ctx.console.print(f"exported {n} rows to {args.file}")
    return 0


COMMANDS = [Command("registry", "registry import / export (CSV)", run, configure)]
