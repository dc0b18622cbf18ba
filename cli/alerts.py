"""``meterline alerts``: what the metering supervisors see, and the sinks that tell them."""

from __future__ import annotations

import argparse
import json
import time

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.ingest.vee import alerts as A


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="alerts (open and acknowledged unless --status says otherwise)")
    ls.add_argument("--status", choices=("open", "acknowledged", "resolved", "active", "all"), default="active")
    ls.add_argument("--rule")
    ls.add_argument("--severity", choices=("info", "warning", "critical"))
    ls.add_argument("--book", help="meter book code")
    ls.add_argument("--assignee", help="supervisor the alerts are routed to")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    for name, verb in (("ack", "acknowledge"), ("resolve", "resolve")):
        a = sub.add_parser(name, help=f"{verb} alerts (records who and when)")
        a.add_argument("ids", nargs="+", type=int, metavar="ID")
        a.add_argument("--note", default=None)
    d = sub.add_parser("dispatch", help="deliver alert events to the configured MQTT topic and webhook")
    d.add_argument("--once", action="store_true", help="deliver what is pending and stop")
    sub.add_parser("metrics", help="print the Prometheus gauge of open alerts")


def _list(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    statuses = {"active": ("open", "acknowledged"), "all": A.STATUSES}.get(args.status, (args.status,))
    with ctx.db.connection(company_id=company.id) as conn:
        rows = A.list_alerts(conn, company.id, statuses=statuses, rule=args.rule, severity=args.severity,
                             book=args.book, assignee=args.assignee, limit=args.limit)
    if args.json:
        for r in rows:
            ctx.console.print(json.dumps(r, ensure_ascii=False, default=str), soft_wrap=True)
        return 0
    t = Table(title=f"alerts of {company.code} ({args.status})")
    for col in ("id", "severity", "rule", "status", "meter", "book", "assignee", "seen", "last", "message"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(str(r["id"]), r["severity"], r["rule"], r["status"], r["serial"] or "", r["book"] or "",
                  r["assignee"] or "", str(r["occurrences"]), f"{r['last_seen']:%Y-%m-%d %H:%M}", r["message"])
    ctx.console.print(t)
    ctx.console.print(f"{len(rows)} alert(s)")
    return 0


def _transition(ctx: Context, args: argparse.Namespace) -> int:
    company = ctx.company
    who = ctx.login
    fn = A.acknowledge if args.action == "ack" else A.resolve
    failed = 0
    with ctx.db.connection(company_id=company.id) as conn:
        for alert_id in args.ids:
            try:
                row = fn(conn, company.id, alert_id, who, args.note)
                conn.commit()
                ctx.console.print(f"alert {alert_id} ({row['rule']}, meter {row['serial'] or '-'}) is now "
                                  f"{row['status']} by {who}")
            except A.AlertStateError as exc:
                conn.rollback()
                ctx.console.print(f"alert {alert_id}: {exc}")
                failed += 1
    return 1 if failed else 0


def _dispatch(ctx: Context, args: argparse.Namespace) -> int:
    from meterline.exporters.alert_sinks import AlertDispatcher

    s = ctx.settings.alerts
    dispatcher = AlertDispatcher.from_settings(ctx.db.dsn, s)
    if not dispatcher.sinks:
        ctx.console.print("no alert sinks configured: set alerts.mqtt_host and/or alerts.webhook_url")
        return 2
    try:
        if args.once:
            report = dispatcher.run_once()
            ctx.console.print(f"delivered {report.delivered or 'nothing'}; failed {report.failed or 'nothing'}")
            return 1 if report.failed else 0
        ctx.console.print(f"delivering alert events to {', '.join(x.name for x in dispatcher.sinks)}; Ctrl-C stops")
        dispatcher.start()
        while True:
            time.sleep(3600)
    finally:
        dispatcher.close()


def _metrics(ctx: Context, args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, generate_latest

    from meterline.exporters.alert_sinks import OpenAlertsCollector

    registry = CollectorRegistry()
    registry.register(OpenAlertsCollector(ctx.db.dsn, min_interval_s=0))
    ctx.console.print(generate_latest(registry).decode(), end="", soft_wrap=True)
    return 0


def run(ctx: Context, args: argparse.Namespace) -> int:
    return {"list": _list, "ack": _transition, "resolve": _transition, "dispatch": _dispatch,
            "metrics": _metrics}[args.action](ctx, args)


COMMANDS = [Command("alerts", "alerts for metering supervisors: list, ack, resolve, dispatch, metrics", run, configure,
                   permission={"list": "alerts.read", "metrics": "alerts.read", "*": "alerts.manage"})]
