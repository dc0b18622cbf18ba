"""``meterline group``: figures per company, for one company or the whole group."""

from __future__ import annotations

import argparse

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.store import scope


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = sub.add_parser("figures", help="accounts, meters, reading rate, dead letters and open alerts per company")
    f.add_argument("--days", type=int, default=30, help="window for readings and dead letters (default 30)")
    f.add_argument("--consolidated", action="store_true",
                   help="every company of the group, one row each, and the total (needs group.read)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    if args.consolidated:
        with ctx.group() as conn:
            figures = scope.company_figures(conn, days=args.days)
    else:
        with ctx.scoped() as conn:
            figures = scope.company_figures(conn, days=args.days)
    table = Table(title=f"figures of the last {args.days} days" + (" — group" if args.consolidated else ""))
    for col in ("company", "name", "accounts", "meters", "read", "reading rate", "readings", "dead letters", "open alerts"):
        table.add_column(col, justify="left" if col in ("company", "name") else "right")
    rows = figures + ([scope.totals([f for f in figures if f.company_id is not None] +
                                    [f for f in figures if f.company_id is None])] if args.consolidated else [])
    for f in rows:
        rate = "" if f.reading_rate is None else f"{f.reading_rate:.1%}"
        table.add_row(f.company, f.name, f"{f.accounts:,}", f"{f.meters:,}", f"{f.meters_read:,}", rate,
                      f"{f.readings:,}", f"{f.dead_letters:,}", f"{f.open_alerts:,}")
    ctx.console.print(table)
    return 0


COMMANDS = [Command("group", "group operation: figures per company", run, configure, permission="reports.read")]
