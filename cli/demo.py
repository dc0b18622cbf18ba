"""``meterline demo``: the main job end to end on the embedded default.

Runs on a fresh ``meterline_demo`` database (the embedded PostgreSQL unless a DSN is configured),
as a list of steps, each adding lines to the closing summary:

1. create the database and migrate it;
2. seed a synthetic utility (registry + reading history);
3. deliver the latest readings again (duplicates must change nothing) and some bad ones
   (they must become dead letters with a reason);
4. pushing meters: the ingest service (MQTT on an in-process broker, ChirpStack uplinks, CoAP)
   against the simulated meters, with a few faults (``cli/_demo_push.py``);
5. maintenance: partitions ahead, the daily aggregate.

Later stages of the pipeline (ingest service, validation, billing, ledger, exports) add
their steps to ``STEPS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Callable

import psycopg
from psycopg import sql
from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.cli._demo_push import step_push
from meterline.cli.seed import progress_bar, seed
from meterline.ingest.model import Quantity, Reading, Source
from meterline.ingest.writer import WriteResult, write_readings
from meterline.store import maintain as maintenance
from meterline.store import migrate as migrations
from meterline.store import partitions
from meterline.store.db import Database, open_database
from meterline.store.dsn import with_dbname
from meterline.store.personal import keyring_from_settings

DEMO_DATABASE = "meterline_demo"
DEMO_COMPANY = "demo"


@dataclass
class DemoState:
    ctx: Context
    args: argparse.Namespace
    db: Database | None = None
    company_id: int | None = None
    summary: list[tuple[str, str, str]] = field(default_factory=list)  # (section, item, value)
    timings: list[tuple[str, float]] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)

    def add(self, section: str, item: str, value: object) -> None:
        self.summary.append((section, item, str(value)))


Step = tuple[str, Callable[[DemoState], None]]


def step_database(state: DemoState) -> None:
    settings = state.ctx.settings
    if settings.database.dsn:
        maintenance_dsn = settings.database.dsn
        _recreate(maintenance_dsn, state.args.database, keep=state.args.keep)
        demo_settings = dataclasses.replace(settings, database=dataclasses.replace(
            settings.database, dsn=with_dbname(settings.database.dsn, state.args.database)))
        state.db = open_database(demo_settings)
    else:
        demo_settings = dataclasses.replace(settings, database=dataclasses.replace(
            settings.database, embedded_database=state.args.database))
        from meterline.store.embedded import start_embedded

        server = start_embedded(settings.database.embedded_data_dir)
        try:
            _recreate(server.dsn, state.args.database, keep=state.args.keep)
        finally:
            server.stop()
        state.db = open_database(demo_settings)
    with state.db.connect(autocommit=True, owner=True) as conn:
        migrations.migrate(conn, allow_timescaledb=settings.database.timescaledb, day_timezone=settings.utility.timezone,
                           compress_readings=settings.database.compress_readings)
        partitions.ensure_window(conn, dt.date.today(), 3, settings.database.partitions_ahead_months)
        state.add("storage", "database", state.db.describe())
        state.add("storage", "backend", migrations.backend(conn))


def _recreate(maintenance_dsn: str, name: str, *, keep: bool) -> None:
    with psycopg.connect(maintenance_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and keep:
            return
        if exists:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(sql.Identifier(name)))


def step_seed(state: DemoState) -> None:
    assert state.db is not None
    with progress_bar(state.ctx) as progress:
        report = seed(state.db, company_code=DEMO_COMPANY, company_name="演示水务有限公司",
                      timezone=state.ctx.settings.utility.timezone, meters=state.args.meters,
                      days=state.args.days, progress=progress, writer_settings=state.ctx.settings.writer,
                      keyring=keyring_from_settings(state.ctx.settings))
    state.company_id = report.company.id
    state.data["seed"] = report
    u = report.utility
    trees = sum(1 for p in u.profiles.values() if p.children and not p.parent)
    state.add("registry", "meters", f"{u.n_meters:,}")
    state.add("registry", "accounts", f"{sum(1 for r in u.rows if r.account_code):,}")
    state.add("registry", "meter books", f"{len({r.book_code for r in u.rows if r.book_code}):,}")
    state.add("registry", "master–sub trees", f"{trees:,}")
    r = report.readings
    state.add("readings", "history written", f"{r.written:,} in {report.seconds_history:.1f}s "
                                             f"({r.submitted / max(report.seconds_history, 1e-9):,.0f}/s)")


def step_redelivery(state: DemoState) -> None:
    """The same readings again, and some bad ones: idempotence and dead letters."""
    assert state.db is not None and state.company_id is not None
    with state.db.connect(autocommit=True, owner=True) as conn:
        last = conn.execute(
            """SELECT meter_id, ts, value, quantity, source FROM reading
               WHERE ts >= (SELECT max(ts) FROM reading) - interval '1 day'""").fetchall()
        again = [Reading(ts=ts, value=v, quantity=Quantity(q), meter_id=m, source=Source(s), source_ref="redelivery")
                 for m, ts, v, q, s in last]
        now = dt.datetime.now(dt.timezone.utc)
        some_meter = last[0][0] if last else 1
        bad = [
            Reading(ts=now, value=1000, device="NO-SUCH-METER", source=Source.MQTT),
            Reading(ts=now.replace(tzinfo=None), value=1000, meter_id=some_meter, source=Source.MQTT),
            Reading(ts=now, value=-5, meter_id=some_meter, source=Source.MQTT),
            Reading(ts=now - dt.timedelta(minutes=1), value=10**12, meter_id=some_meter, source=Source.MQTT),
            Reading(ts=now + dt.timedelta(days=3), value=1000, meter_id=some_meter, source=Source.MQTT),
        ]
        result = write_readings(conn, again + bad)
    state.data["redelivery"] = result
    state.add("readings", "delivered again", f"{len(again):,} → {result.duplicates:,} duplicates, {result.written} new")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.reasons.items()))
    state.add("readings", "refused (dead letters)", f"{result.dead}: {reasons}")


def step_maintain(state: DemoState) -> None:
    assert state.db is not None
    with state.db.connect(autocommit=True, owner=True) as conn:
        report = maintenance.maintain(conn, refresh_days=max(1, state.args.days))
        total = conn.execute("SELECT count(*) FROM reading").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
    state.add("readings", "stored", f"{total:,}")
    state.add("readings", "dead letters stored", f"{dead:,}")
    daily = "continuous aggregate" if report.daily_rows is None else f"{report.daily_rows:,} meter-days"
    state.add("storage", "daily aggregate", daily)


def step_group(state: DemoState) -> None:
    """What the application role sees: one company, its audit trail, personal data encrypted."""
    assert state.db is not None and state.company_id is not None
    with state.db.connection(company_id=state.company_id) as conn:
        role = conn.execute("SELECT current_user").fetchone()[0]
        companies = conn.execute("SELECT count(DISTINCT company_id) FROM meter").fetchone()[0]
        audited = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        phones, encrypted = conn.execute(
            "SELECT count(phone), count(phone) FILTER (WHERE phone LIKE 'ml1:%') FROM customer").fetchone()
    with state.db.connection() as conn:
        unscoped = conn.execute("SELECT count(*) FROM meter").fetchone()[0]
    state.add("group operation", "application role", f"{role}: {companies} company visible, {unscoped} meters unscoped")
    state.add("group operation", "audit rows", f"{audited:,}")
    state.add("group operation", "phones stored encrypted", f"{encrypted:,} of {phones:,}")


STEPS: list[Step] = [
    ("database", step_database),
    ("seed utility", step_seed),
    ("redelivery & bad input", step_redelivery),
    ("pushing meters", step_push),
    ("maintenance", step_maintain),
    ("group operation", step_group),
]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meters", type=int, default=10_000, help="size of the synthetic utility (default 10000)")
    p.add_argument("--days", type=int, default=62, help="days of reading history (default 62)")
    p.add_argument("--keep", action="store_true", help="reuse the demo database instead of recreating it")
    p.add_argument("--database", default=DEMO_DATABASE, help=f"database the demo (re)creates (default {DEMO_DATABASE})")


def run(ctx: Context, args: argparse.Namespace) -> int:
    state = DemoState(ctx=ctx, args=args)
    started = time.perf_counter()
    try:
        for i, (title, fn) in enumerate(STEPS, 1):
            ctx.console.rule(f"{i}/{len(STEPS)} {title}", style="bold")
            t = time.perf_counter()
            fn(state)
            state.timings.append((title, time.perf_counter() - t))
    finally:
        if state.db is not None:
            state.db.close()
    table = Table(title="meterline demo — summary", show_lines=False)
    table.add_column("")
    table.add_column("")
    table.add_column("", justify="right")
    last = None
    for section, item, value in state.summary:
        table.add_row(section if section != last else "", item, value)
        last = section
    table.add_row("time", "total", f"{time.perf_counter() - started:.1f}s")
    ctx.console.print(table)
    return 0


COMMANDS = [Command("demo", "run the main job end to end on the embedded default", run, configure)]
