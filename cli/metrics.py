"""``meterline metrics``: the pipeline's Prometheus metrics (billing runs, payments, dead letters, alerts)."""

from __future__ import annotations

import argparse
import time

from meterline.cli._base import Command, Context
from meterline.errors import MeterlineError


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("serve", help="serve /metrics for Prometheus (read from the database at scrape time)")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=9465, help="default 9465 (the ingest service has 9464)")
    s.add_argument("--min-interval", type=float, default=10.0, metavar="S",
                   help="query the database at most every S seconds (default 10)")
    sub.add_parser("show", help="print the metrics once")


def run(ctx: Context, args: argparse.Namespace) -> int:
    from prometheus_client import generate_latest, start_http_server

    from meterline.exporters.metrics import pipeline_registry

    dsn = ctx.db.dsn
    if args.action == "show":
        ctx.console.print(generate_latest(pipeline_registry(dsn, 0)).decode(), end="", soft_wrap=True)
        return 0
    if not 0 < args.port <= 65535:
        raise MeterlineError(f"--port {args.port} is not a TCP port")
    server, thread = start_http_server(args.port, args.host, registry=pipeline_registry(dsn, args.min_interval))
    ctx.console.print(f"metrics on http://{args.host}:{server.server_port}/metrics; Ctrl-C stops")
    try:
        while thread.is_alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


COMMANDS = [Command("metrics", "Prometheus metrics of the pipeline: billing runs, payments, dead letters, alerts",
                    run, configure, permission="metrics.read", scope="group")]
