"""``meterline db``: migrate, status, maintain, info."""

from __future__ import annotations

import argparse

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.store import maintain as maintenance
from meterline.store import migrate as migrations


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("migrate", help="apply pending migrations (idempotent; safe from several processes)")
    sub.add_parser("status", help="applied and pending migrations, storage backend")
    m = sub.add_parser("maintain", help="create reading partitions ahead, refresh the daily aggregate")
    m.add_argument("--refresh-days", type=int, default=35, help="days of daily aggregate to recompute (default 35)")
    m.add_argument("--ahead", type=int, default=None, help="months of partitions to keep ahead (default: setting)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    db = ctx.database(migrate="skip")
    with db.connect(autocommit=True, owner=True) as conn:
        if args.action == "migrate":
            applied = ctx.migrate(conn)
            backend = migrations.backend(conn)
            if applied:
                for m in applied:
                    ctx.console.print(f"applied {m.version:04d}_{m.name} ({m.variant or 'common'})")
            else:
                ctx.console.print("nothing to apply: the schema is up to date")
            ctx.console.print(f"database: {db.describe()}; storage backend: {backend}")
            return 0
        if args.action == "status":
            table = Table(title=f"migrations on {db.describe()}")
            for col in ("version", "name", "variant", "applied at", "checksum"):
                table.add_column(col)
            pending = 0
            for s in migrations.status(conn):
                pending += s.applied_at is None
                table.add_row(f"{s.version:04d}", s.name, s.variant or "common",
                              str(s.applied_at or "pending"),
                              "" if s.checksum_ok is None else ("ok" if s.checksum_ok else "CHANGED"))
            ctx.console.print(table)
            ctx.console.print(f"storage backend: {migrations.backend(conn) or 'not chosen yet'}; pending: {pending}")
            return 1 if pending else 0
        if args.action == "maintain":
            s = ctx.settings.database
            report = maintenance.maintain(
                conn, ahead_months=s.partitions_ahead_months if args.ahead is None else args.ahead,
                refresh_days=args.refresh_days)
            created = ", ".join(report.partitions_created) or "none"
            ctx.console.print(f"backend {report.backend}; partitions created: {created}")
            rows = "continuous aggregate refreshed" if report.daily_rows is None else f"{report.daily_rows} daily rows"
            ctx.console.print(f"daily aggregate {report.refreshed_from:%Y-%m-%d %H:%M} .. {report.refreshed_to:%Y-%m-%d %H:%M} UTC: {rows}")
            return 0
    return 2


COMMANDS = [Command("db", "database: migrate, status, maintain", run, configure, permission="db.manage", scope="group")]
