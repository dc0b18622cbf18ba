"""``meterline readings``: what blocks billing in a book and the supervisor's actions; figures."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from zoneinfo import ZoneInfo

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.errors import MeterlineError
from meterline.ingest.vee import figures as F
from meterline.ingest.vee import review as RV
from meterline.ingest.vee.config import config_for


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser("review", help="what blocks billing in a meter book; approve / override / request re-read")
    r.add_argument("--book", required=True, help="meter book code")
    r.add_argument("--period", required=True, metavar="YYYY-MM")
    r.add_argument("--approve", action="append", default=[], metavar="SERIAL@TIME",
                   help="count this held or rejected reading (or estimate) for billing as it is")
    r.add_argument("--override", action="append", default=[], metavar="SERIAL@TIME=VALUE",
                   help="correct the reading (or estimate) to VALUE in the meter's display unit")
    r.add_argument("--reread", action="append", default=[], metavar="SERIAL@TIME",
                   help="keep the reading out of billing and ask for the meter to be read again")
    r.add_argument("--note", default=None)
    f = sub.add_parser("figures", help="reading rate, estimated and corrected shares, entry lead time per book "
                                       "and reader")
    f.add_argument("--period", required=True, metavar="YYYY-MM")
    f.add_argument("--book", default=None)
    f.add_argument("--json", action="store_true")
    h = sub.add_parser("actions", help="review actions taken (append-only record)")
    h.add_argument("--meter", default=None, help="meter serial")
    h.add_argument("--limit", type=int, default=50)


def _target(text: str, tz: str) -> tuple[str, dt.datetime, str | None]:
    """``SERIAL@2026-10-31T08:00[=VALUE]``; the time is local to the company."""
    value = None
    if "=" in text:
        text, value = text.rsplit("=", 1)
    if "@" not in text:
        raise MeterlineError(f"{text!r}: expected SERIAL@TIME (time in the company's zone, e.g. 2026-10-31T08:00)")
    serial, when = text.split("@", 1)
    try:
        ts = dt.datetime.fromisoformat(when)
    except ValueError as exc:
        raise MeterlineError(f"{when!r} is not a time like 2026-10-31T08:00") from exc
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=ZoneInfo(tz))
    return serial, ts.astimezone(dt.timezone.utc), value


def _review(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    config = config_for(ctx.settings)
    who = ctx.login
    zone = ZoneInfo(company.timezone)
    with ctx.db.connection(company_id=company.id) as conn:
        for kind, items in (("approve", args.approve), ("override", args.override), ("reread", args.reread)):
            for item in items:
                serial, ts, value = _target(item, company.timezone)
                if kind == "approve":
                    out = RV.approve(conn, company.id, serial, ts, who, args.note)
                elif kind == "override":
                    if value is None:
                        raise MeterlineError(f"--override {item!r}: give the value, SERIAL@TIME=VALUE")
                    out = RV.override(conn, company.id, serial, ts, value, who, args.note)
                else:
                    out = RV.request_reread(conn, company.id, serial, ts, who, args.note)
                conn.commit()
                ctx.console.print(f"{kind} {serial} {ts.astimezone(zone):%Y-%m-%d %H:%M} ({out['target']}) by {who}: "
                                  f"recorded")
        review = RV.blockers(conn, company.id, args.book, args.period, company.timezone, config)
    t = Table(title=f"book {review.book} {review.period}: what blocks billing (supervisor {review.supervisor or '-'})")
    for col in ("meter", "account", "what", "time", "register", "detail"):
        t.add_column(col, overflow="fold")
    for b in review.blockers:
        t.add_row(b.serial, b.account or "", b.kind, "" if b.ts is None else f"{b.ts.astimezone(zone):%Y-%m-%d %H:%M}",
                  "" if b.value is None else str(b.value), b.what)
    ctx.console.print(t)
    ctx.console.print(f"{review.meters} meters in service; {len(review.blockers)} item(s) block billing; "
                      f"{len(review.estimated)} period-end read(s) estimated (billable, marked estimated)")
    for e in review.estimated:
        ctx.console.print(f"  estimated: {e['serial']} ({e['account']}) {e['value']} by {e['method']}")
    return 1 if review.blockers else 0


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:.1f}%"


def _figures(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    config = config_for(ctx.settings)
    with ctx.db.connection(company_id=company.id) as conn:
        figs = F.book_figures(conn, company.id, args.period, company.timezone, config, args.book)
    if args.json:
        for f in figs:
            ctx.console.print(json.dumps(f.as_dict(), ensure_ascii=False), soft_wrap=True)
        return 0
    t = Table(title=f"reading operations {company.code} {args.period} (reader: the book's reader)")
    for col in ("book", "reader", "meters", "reading rate", "estimated", "readings", "corrected", "rejected",
                "held", "lead median h", "lead p90 h"):
        t.add_column(col)
    for f in figs:
        t.add_row(f.book, f.reader or "", str(f.meters), _pct(f.reading_rate), _pct(f.estimated_share),
                  f"{f.readings:,}", _pct(f.corrected_share), _pct(f.rejected_share), _pct(f.held_share),
                  "" if f.lead_median_h is None else f"{f.lead_median_h:.1f}",
                  "" if f.lead_p90_h is None else f"{f.lead_p90_h:.1f}")
    ctx.console.print(t)
    t2 = Table(title="by reader")
    for col in ("reader", "books", "meters", "reading rate", "estimated", "corrected", "lead p90 h (worst book)"):
        t2.add_column(col)
    for r in F.by_reader(figs):
        t2.add_row(str(r["reader"] or ""), str(r["books"]), str(r["meters"]), _pct(r["reading_rate"]),
                   _pct(r["estimated_share"]), _pct(r["corrected_share"]),
                   "" if r["lead_p90_h"] is None else f"{r['lead_p90_h']:.1f}")
    ctx.console.print(t2)
    return 0


def _actions(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    zone = ZoneInfo(company.timezone)
    with ctx.db.connection(company_id=company.id) as conn:
        rows = RV.history(conn, company.id, args.meter, args.limit)
    t = Table(title="review actions")
    for col in ("id", "meter", "reading time", "target", "action", "by", "at", "before → after", "note"):
        t.add_column(col, overflow="fold")
    for r in rows:
        change = f"{json.dumps(r['before'], ensure_ascii=False)} → {json.dumps(r['after'], ensure_ascii=False)}"
        t.add_row(str(r["id"]), r["serial"], f"{r['ts'].astimezone(zone):%Y-%m-%d %H:%M}", r["target"], r["action"],
                  r["actor"], f"{r['at'].astimezone(zone):%Y-%m-%d %H:%M}", change, r["note"] or "")
    ctx.console.print(t)
    return 0


def run(ctx: Context, args: argparse.Namespace) -> int:
    return {"review": _review, "figures": _figures, "actions": _actions}[args.action](ctx, args)


COMMANDS = [Command("readings", "reading review for billing (approve / override / re-read) and reading figures",
                    run, configure, permission=lambda a: "readings.read" if a.action != "review" or not (
                        getattr(a, "approve", False) or getattr(a, "override", None) or getattr(a, "reread", None))
                    else "readings.review")]
