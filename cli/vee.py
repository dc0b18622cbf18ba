"""``meterline vee``: validate, estimate and alert over a period (the batch run); past runs."""

from __future__ import annotations

import argparse
import re

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.errors import MeterlineError
from meterline.ingest.vee.batch import run_period
from meterline.ingest.vee.config import config_for


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="validate every meter's readings of a period, estimate missing period-end "
                                   "reads, raise alerts (re-running a period is safe)")
    r.add_argument("--period", required=True, metavar="YYYY-MM", help="billing period, cut in the company's zone")
    r.add_argument("--chunk", type=int, default=None, help="meters per chunk (default: setting vee.chunk_meters)")
    s = sub.add_parser("runs", help="recent validation runs and their figures")
    s.add_argument("--limit", type=int, default=10)
    sub.add_parser("rules", help="the rules, their severity, action and alert, per source group")


def _run(ctx: Context, args: argparse.Namespace) -> int:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", args.period):
        raise MeterlineError(f"--period {args.period!r}: expected YYYY-MM")
    company = ctx.company
    config = config_for(ctx.settings)
    s = ctx.settings.vee
    db = ctx.db
    with Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=ctx.console, transient=False) as progress:
        task = progress.add_task(f"validating {args.period}", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = run_period(db.dsn, company.id, company.code, company.timezone, args.period, config,
                             chunk_meters=args.chunk or s.chunk_meters, loaders=s.loaders,
                             actor=ctx.login, progress=report)
    c = ctx.console
    c.print(f"VEE run {summary.run_id} for {company.code} {args.period}: {summary.meters:,} meters, "
            f"{summary.readings:,} readings in {summary.seconds:.1f}s")
    share = (summary.flagged / summary.readings * 100) if summary.readings else 0.0
    c.print(f"  flagged {summary.flagged:,} ({share:.2f}%): held for review {summary.held:,}, "
            f"rejected {summary.rejected:,}; pending reads of earlier periods decided: {summary.revised:,}")
    if summary.by_rule:
        c.print("  by rule: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.by_rule.items(), key=lambda kv: -kv[1])))
    methods = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.estimated_by_method.items()))
    c.print(f"  period-end reads estimated {summary.estimated:,}{f' ({methods})' if methods else ''}; "
            f"cannot estimate {summary.estimation_failed:,}; estimates replaced by real reads "
            f"{summary.estimates_superseded:,}; meters without recent reads {summary.missing:,}")
    c.print(f"  books below the reading-rate target: {summary.books_below_target} of {summary.books_judged}; "
            f"master–sub trees judged {summary.trees_judged}, alerted {summary.trees_alerted}, "
            f"incomplete {summary.trees_incomplete}")
    c.print(f"  alerts opened {summary.alerts_opened:,}, updated {summary.alerts_updated:,}, "
            f"resolved {summary.alerts_resolved:,}")
    if summary.failures:
        c.print(f"  {summary.failures} rule failure(s) on meters' data recorded (table vee_failure, run "
                f"{summary.run_id}); the other meters were validated")
    return 0


def _runs(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    with ctx.db.connection(company_id=company.id) as conn:
        rows = conn.execute(
            """SELECT id, mode, period, status, started_at, finished_at, stats, created_by,
                      (SELECT count(*) FROM vee_failure f WHERE f.run_id = r.id)
               FROM vee_run r WHERE company_id = %s ORDER BY id DESC LIMIT %s""", [company.id, args.limit]).fetchall()
    t = Table(title=f"validation runs of {company.code}")
    for col in ("run", "mode", "period", "status", "started", "seconds", "readings", "flagged", "estimated",
                "alerts opened", "failures", "by"):
        t.add_column(col)
    for rid, mode, period, status, started, finished, stats, by, failures in rows:
        t.add_row(str(rid), mode, period or "", status, f"{started:%Y-%m-%d %H:%M}", f"{stats.get('seconds', 0):.1f}",
                  f"{stats.get('readings', 0):,}", f"{stats.get('flagged', 0):,}", f"{stats.get('estimated', 0):,}",
                  f"{stats.get('alerts_opened', 0):,}", str(failures), by or "")
    ctx.console.print(t)
    return 0


def _rules(ctx: Context, args: argparse.Namespace) -> int:
    from meterline.ingest.vee import rules as R
    from meterline.ingest.vee.config import GROUPS

    config = config_for(ctx.settings)
    t = Table(title="validation rules")
    for col in ("rule", "scope", "severity", "action", "alert", *GROUPS, "what it means"):
        t.add_column(col)
    for code in R.RULES:
        r = config.rule(code)
        t.add_row(code, r.scope, r.severity, r.action if r.scope == "reading" else "", "yes" if r.alert else "no",
                  *("on" if code in config.enabled(g) else "" for g in GROUPS), r.description)
    ctx.console.print(t)
    return 0


def run(ctx: Context, args: argparse.Namespace) -> int:
    return {"run": _run, "runs": _runs, "rules": _rules}[args.action](ctx, args)


COMMANDS = [Command("vee", "validation, estimation and alerts over a period (batch run)", run, configure,
                   permission={"run": "readings.review", "*": "readings.read"})]
