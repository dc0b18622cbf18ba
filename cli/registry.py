"""``meterline registry``: import and export customers, accounts, meters and books (CSV)."""

from __future__ import annotations

import argparse
import sys

from meterline.cli._base import Command, Context
from meterline.store import audit, registry
from meterline.store.personal import Disclosure, keyring_from_settings


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = sub.add_parser("import", help="import a registry CSV (all rows or none)")
    i.add_argument("file")
    e = sub.add_parser("export", help="export the registry as CSV")
    e.add_argument("file", nargs="?", default="-", help="output file (default: stdout)")
    e.add_argument("--outside", action="store_true",
                   help="for an outside party: personal data as security.outside_personal_data says (default none)")


def disclosure_for(ctx: Context, outside: bool) -> Disclosure:
    """What the caller may see of personal data in an export."""
    if outside:
        wanted = Disclosure(ctx.settings.security.outside_personal_data)
        if wanted is Disclosure.FULL and not ctx.can("personal.read"):
            return Disclosure.MASKED
        return wanted
    return Disclosure.FULL if ctx.can("personal.read") else Disclosure.MASKED


def run(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    keyring = keyring_from_settings(ctx.settings)
    with ctx.scoped() as conn:
        if args.action == "import":
            summary = registry.import_file(conn, company.id, args.file, keyring=keyring)
            conn.commit()
            ctx.console.print(
                f"imported {summary.rows} rows into {company.code}: {summary.customers} customers, "
                f"{summary.accounts} accounts, {summary.meters} meters, {summary.books} books, "
                f"{summary.districts} districts")
            return 0
        disclosure = disclosure_for(ctx, args.outside)
        if args.file == "-":
            n = registry.export_csv(conn, company.id, sys.stdout, disclosure=disclosure, keyring=keyring)
        else:
            with open(args.file, "w", encoding="utf-8", newline="") as fh:
                n = registry.export_csv(conn, company.id, fh, disclosure=disclosure, keyring=keyring)
        audit.record(conn, None, "registry.export", "registry", company.code, None,
                     {"rows": n, "personal_data": disclosure.value, "outside": args.outside,
                      "file": None if args.file == "-" else args.file})
        conn.commit()
        if args.file != "-":
            ctx.console.print(f"exported {n} rows to {args.file} (personal data: {disclosure.value})")
    return 0


COMMANDS = [Command("registry", "registry import / export (CSV)", run, configure,
                    permission={"import": "registry.write", "export": "registry.export"})]
