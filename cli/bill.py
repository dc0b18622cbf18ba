"""``meterline bill``: run a billing cycle for a period (or see what it would do); explain a bill."""

from __future__ import annotations

import argparse
import datetime as dt
import re

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.errors import MeterlineError
from meterline.rating import heating
from meterline.rating.explain import explain_bill, render
from meterline.rating.run import BillRunResult, bill_run
from meterline.rating.tariff import load_book


def money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="bill every account of a cycle for a period (re-running changes nothing)")
    r.add_argument("--cycle", required=True, help="billing cycle code of the meter books (e.g. M, B)")
    r.add_argument("--period", required=True, metavar="YYYY-MM", help="the period's last month")
    r.add_argument("--books", nargs="+", metavar="BOOK", help="only these meter books")
    r.add_argument("--dry-run", action="store_true", help="write nothing; show the difference against what is billed")
    r.add_argument("--rebill", action="store_true",
                   help="also bill again (补开) the accounts whose bill of the period was reversed (红冲)")
    e = sub.add_parser("explain", help="how a bill came about: reads, consumption, apportionment, lines")
    e.add_argument("bill", type=int, help="bill id")
    h = sub.add_parser("heating", help="heating stopped / resumed for an account (area-based heating: heated days only)")
    hs = h.add_subparsers(dest="heating", metavar="WHAT", required=True)
    st = hs.add_parser("stop", help="heating of an account stops on a day (its first unheated day)")
    st.add_argument("account", help="account code")
    st.add_argument("--on", required=True, type=dt.date.fromisoformat, metavar="YYYY-MM-DD")
    st.add_argument("--resume", type=dt.date.fromisoformat, metavar="YYYY-MM-DD", help="first heated day again")
    st.add_argument("--reason", required=True)
    rs = hs.add_parser("resume", help="heating of an account resumes on a day (its first heated day again)")
    rs.add_argument("account", help="account code")
    rs.add_argument("--on", required=True, type=dt.date.fromisoformat, metavar="YYYY-MM-DD")
    ls = hs.add_parser("list", help="an account's heating stops")
    ls.add_argument("account", help="account code")


def _summary(ctx: Context, code: str, res: BillRunResult) -> None:
    c = ctx.console
    what = "dry run (nothing written)" if res.dry_run else f"billing run {res.run_id}"
    c.print(f"{what} for {code}, cycle {res.cycle}, period {res.period} ({res.period_start} to {res.period_end}), "
            f"due {res.due_date}: {res.seconds:.1f}s")
    t = Table(show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("accounts looked at", f"{res.accounts:,}")
    t.add_row("billed before this run started", f"{res.already_billed:,}")
    t.add_row("bills" + (" computed" if res.dry_run else " written"), f"{res.bills:,}")
    if res.rebilled:
        t.add_row("  of them billing a reversed bill again", f"{res.rebilled:,}")
    t.add_row("consumption (m³)", f"{res.consumption / 1000:,.3f}")
    t.add_row("amount", money(res.amount))
    t.add_row("tax", money(res.tax))
    t.add_row("total", money(res.total))
    t.add_row("estimated closing reads", f"{res.estimated:,} ({res.estimated_share * 100:.1f}%)")
    t.add_row("apportioned (m³)", f"{res.apportioned / 1000:,.3f}")
    t.add_row("master meters", ", ".join(f"{k} {v:,}" for k, v in sorted(res.trees.items())) or "none")
    if not res.dry_run:
        t.add_row("ledger entries posted", f"{res.posted:,}")
        t.add_row("imbalance alerts opened / updated", f"{res.alerts_opened:,} / {res.alerts_updated:,}")
    if not res.dry_run and res.shards:
        t.add_row("shards (books) / at once", f"{res.shards:,} / {res.workers}"
                  + ("" if res.workers == 1 else ", each committed on its own"))
    t.add_row("skipped accounts", f"{len(res.skips):,}")
    for reason, n in res.skipped.items():
        t.add_row(f"  {reason}", f"{n:,}")
    c.print(t)
    if res.dry_run:
        new = [x for x in res.changes if x.bill_id is None]
        changed = [x for x in res.changes if x.bill_id is not None]
        again = sum(1 for x in new if x.replaces is not None)
        c.print(f"against what is billed: {len(new):,} new bill(s)"
                + (f" ({again:,} billing a reversed bill again)" if again else "") + f", {len(changed):,} different, "
                f"{res.unchanged:,} the same")
        if res.changes:
            d = Table(title="differences (first 20)")
            for col in ("account id", "bill", "consumption billed", "consumption now", "total billed", "total now"):
                d.add_column(col, justify="right")
            for x in res.changes[:20]:
                d.add_row(str(x.account_id), str(x.bill_id or (f"new, replaces {x.replaces}" if x.replaces else "new")),
                          "" if x.consumption_billed is None else f"{x.consumption_billed:,}", f"{x.consumption_now:,}",
                          "" if x.total_billed is None else money(x.total_billed), money(x.total_now))
            c.print(d)


def _run(ctx: Context, args: argparse.Namespace) -> int:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", args.period):
        raise MeterlineError(f"--period {args.period!r}: expected YYYY-MM")
    company = ctx.company
    tariffs = load_book(ctx.settings)
    with Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=ctx.console, transient=True) as progress:
        task = progress.add_task("selecting", total=None)

        def report(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stage, completed=done, total=total)

        with ctx.scoped() as conn:
            res = bill_run(conn, company.id, args.cycle, args.period, books=args.books, dry_run=args.dry_run,
                           progress=report, tariffs=tariffs, settings=ctx.settings.billing, created_by=ctx.login,
                           db=ctx.db, rebill=args.rebill)
            conn.commit()
    _summary(ctx, company.code, res)
    return 0


def _explain(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.scoped() as conn:
        explanation = explain_bill(conn, args.bill)
    for line in render(explanation):
        ctx.console.print(line)
    return 0


def _heating(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    with ctx.scoped() as conn:
        if args.heating == "stop":
            done = [heating.stop_heating(conn, company.id, args.account, args.on, args.reason, resume_on=args.resume,
                                         recorded_by=ctx.login)]
        elif args.heating == "resume":
            done = [heating.resume_heating(conn, company.id, args.account, args.on)]
        else:
            done = heating.suspensions(conn, company.id, args.account)
        conn.commit()
    for s in done:
        ctx.console.print(f"{args.account}: heating stopped {s.stop_on}, "
                          f"{'resumed ' + str(s.resume_on) if s.resume_on else 'not resumed'} ({s.reason}) [#{s.id}]")
    if not done:
        ctx.console.print(f"{args.account}: heating never stopped")
    return 0


def run(ctx: Context, args: argparse.Namespace) -> int:
    return {"run": _run, "explain": _explain, "heating": _heating}[args.action](ctx, args)


COMMANDS = [Command("bill", "billing runs: bill a cycle for a period, explain a bill", run, configure,
                    permission=lambda a: {"run": "billing.run", "explain": "billing.explain"}.get(
                        a.action, "billing.read" if getattr(a, "heating", None) == "list" else "registry.write"))]
