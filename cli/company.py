"""``meterline company``: add and list the companies of this deployment."""

from __future__ import annotations

import argparse

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.store.company import ensure_company, list_companies


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = sub.add_parser("add", help="create a company")
    a.add_argument("code")
    a.add_argument("name")
    a.add_argument("--timezone", default=None, help="IANA zone (default: utility.timezone)")
    sub.add_parser("list", help="list companies")


def run(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.db.connection() as conn:
        if args.action == "add":
            c = ensure_company(conn, args.code, args.name, timezone=args.timezone or ctx.settings.utility.timezone)
            conn.commit()
            ctx.console.print(f"company {c.code} (id {c.id}): {c.name}, {c.timezone}")
            return 0
        table = Table()
        for col in ("id", "code", "name", "timezone", "currency"):
            table.add_column(col)
        for c in list_companies(conn):
            table.add_row(str(c.id), c.code, c.name, c.timezone, c.currency)
        ctx.console.print(table)
    return 0


COMMANDS = [Command("company", "companies of this deployment", run, configure)]
