"""``meterline ingest run``: the long-running ingest service (MQTT, CoAP, ... sources → writer)."""

from __future__ import annotations

import argparse
import time

from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.ingest.service import IngestService, run_until_signal


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="serve every [ingest.sources.*] until SIGTERM (drain, commit, then exit)",
                       description="Start every source configured under [ingest.sources.<name>], feed the writer, "
                                   "expose Prometheus metrics on /metrics; SIGTERM or Ctrl-C drains and commits "
                                   "before exiting.")
    r.add_argument("--metrics-port", type=int, default=None, help="override ingest.metrics_port (0: off)")
    r.add_argument("--source", action="append", default=None, metavar="NAME",
                   help="run only this configured source (repeatable)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    import dataclasses

    settings = ctx.settings
    ingest = settings.ingest
    if args.metrics_port is not None:
        ingest = dataclasses.replace(ingest, metrics_port=args.metrics_port)
    if args.source:
        unknown = [s for s in args.source if s not in ingest.sources]
        if unknown:
            from meterline.errors import ConfigError

            raise ConfigError([f"--source {s}: no [ingest.sources.{s}] configured" for s in unknown])
        ingest = dataclasses.replace(ingest, sources={k: v for k, v in ingest.sources.items() if k in args.source})
    settings = dataclasses.replace(settings, ingest=ingest)
    db = ctx.database()  # checks migrations (the embedded default migrates itself)
    service = IngestService(settings, db.dsn)
    service.build_sources()
    names = ", ".join(f"{st.name} ({st.kind})" for st in service.sources)
    ctx.console.print(f"ingest: {names} → {db.describe()}; metrics "
                      f"{'off' if not ingest.metrics_port else f'on :{ingest.metrics_port}/metrics'}; "
                      "SIGTERM or Ctrl-C to stop")
    started = time.monotonic()
    code = run_until_signal(service)
    ctx.console.print(summary(service, time.monotonic() - started))
    return code


def summary(service: IngestService, seconds: float) -> Table:
    """What each source did, read back from the metrics (a supervisor's closing summary)."""
    reg = service.metrics.registry
    table = Table(title=f"ingest: {seconds:,.0f}s")
    for col in ("source", "received", "decoded", "written", "duplicates", "dead letters", "state"):
        table.add_column(col, justify="right" if col not in ("source", "state") else "left")

    def value(metric: str, **labels: str) -> int:
        total = 0.0
        for fam in reg.collect():
            for s in fam.samples:
                if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return int(total)

    for st in service.sources:
        n = st.name
        table.add_row(n, f"{value('meterline_ingest_messages_received_total', source=n):,}",
                      f"{value('meterline_ingest_readings_decoded_total', source=n):,}",
                      f"{value('meterline_ingest_readings_written_total', source=n):,}",
                      f"{value('meterline_ingest_duplicates_total', source=n):,}",
                      f"{value('meterline_ingest_dead_letters_total', source=n):,}",
                      "failed: " + str(st.error) if st.error else "ok")
    return table


COMMANDS = [Command("ingest", "ingest service: run the configured sources (MQTT, CoAP, ...)", run, configure,
                    permission="ingest.run", scope="group")]
