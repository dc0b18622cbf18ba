"""``meterline audit``: an account's whole history, a cashier's day."""

from __future__ import annotations

import argparse
import datetime as dt

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.store import audit


def configure(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--account", metavar="CODE", help="the account's history from opening to closing")
    what.add_argument("--cashier", metavar="LOGIN", help="a cashier's day: payments taken and every audited action")
    p.add_argument("--date", metavar="YYYY-MM-DD", type=dt.date.fromisoformat,
                   help="the business day (with --cashier; default today in the company's zone)")
    p.add_argument("--source", action="append", choices=sorted(audit.HISTORY_SOURCES),
                   help="only these kinds of event (repeatable)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    with ctx.scoped() as conn:
        if args.account:
            h = audit.account_history(conn, company.id, args.account, sources=args.source)
            table = Table(title=f"{company.code} account {h.account_code} (customer {h.customer_code}, {h.status})")
            for col in ("when", "what", "entity", "who", "detail"):
                table.add_column(col)
            for e in h.events:
                table.add_row(_when(e.at, company.timezone), e.event, e.entity, e.actor or "", e.detail)
            ctx.console.print(table)
            ctx.console.print(f"{len(h.events)} events")
            return 0
        day = args.date or dt.datetime.now(dt.timezone.utc).astimezone(_zone(company.timezone)).date()
        d = audit.cashier_day(conn, company.id, args.cashier, day)
        table = Table(title=f"{company.code} cashier {d.cashier} on {d.day}: payments")
        for col in ("received", "channel", "transaction", "account", "amount"):
            table.add_column(col, justify="right" if col == "amount" else "left")
        for at, channel, ext, account, amount in d.payments:
            table.add_row(_when(at, company.timezone), channel, ext, account or "(suspense)", audit.money(amount, d.minor_units))
        ctx.console.print(table)
        for channel, amount in sorted(d.totals.items()):
            ctx.console.print(f"  {channel}: {audit.money(amount, d.minor_units)}")
        ctx.console.print(f"{len(d.payments)} payments, total {audit.money(d.total, d.minor_units)}; "
                          f"{len(d.events)} audited actions")
        if d.events:
            actions = Table(title="audited actions")
            for col in ("when", "what", "entity", "detail"):
                actions.add_column(col)
            for e in d.events:
                actions.add_row(_when(e.at, company.timezone), e.event, e.entity, e.detail)
            ctx.console.print(actions)
    return 0


def _zone(name: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _when(at: dt.datetime, tz: str) -> str:
    return at.astimezone(_zone(tz)).strftime("%Y-%m-%d %H:%M:%S")


COMMANDS = [Command("audit", "audit trail: an account's history, a cashier's day", run, configure,
                    permission="audit.read")]
