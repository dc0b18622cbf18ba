"""``meterline company``: add and list the companies of this deployment."""

from __future__ import annotations

import argparse

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.store import audit
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
            existed = conn.execute("SELECT 1 FROM company WHERE code = %s", [args.code]).fetchone()
            c = ensure_company(conn, args.code, args.name, timezone=args.timezone or ctx.settings.utility.timezone)
            if not existed:
                audit.record(conn, None, "company.add", "company", c.id, None,
                             {"code": c.code, "name": c.name, "timezone": c.timezone}, group_level=True)
            conn.commit()
            ctx.console.print(f"company {c.code} (id {c.id}): {c.name}, {c.timezone}")
            return 0
        table = Table()
        for col in ("id", "code", "name", "timezone", "currency"):
            table.add_column(col)
        mine = ctx.actor.companies()  # the companies the caller has roles in (all: a group-wide role)
        for c in list_companies(conn):
            if None not in mine and c.id not in mine:
                continue
            table.add_row(str(c.id), c.code, c.name, c.timezone, c.currency)
        ctx.console.print(table)
    return 0


COMMANDS = [Command("company", "companies of this deployment", run, configure,
                   permission={"add": "company.manage"}, scope="group")]
