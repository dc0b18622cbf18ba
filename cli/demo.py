"""``meterline demo``: the main job end to end on the embedded default.

Runs on a fresh ``meterline_demo`` database (the embedded PostgreSQL unless a DSN is configured),
as a list of steps, each adding lines to the closing summary:

1. create the database and migrate it;
2. seed a synthetic utility (registry + reading history);
3. deliver the latest readings again (duplicates must change nothing) and some bad ones
   (they must become dead letters with a reason);
4. pushing meters: the ingest service (MQTT on an in-process broker, ChirpStack uplinks, CoAP)
   against the simulated meters, with a few faults (``cli/_demo_push.py``);
5. concentrators: simulated M-Bus segments and Modbus gateways polled by the ingest service's
   pollers, with faults (``cli/_demo_field.py``);
6. handheld routes: route files exported, the readers' uploads imported (with bad rows), the
   same upload again (``cli/_demo_field.py``);
7. maintenance: partitions ahead, the daily aggregate;
8. validation: the batch VEE run over the billing period and over the month so far, and the
   alerts it raised by rule;
9. group operation: what the application role sees.

Every step adds lines to the closing summary; its wall time is printed when it ends. Files
the demo writes (route files, uploads, bank files, exports, reports) go under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.cli._demo_field import step_concentrators, step_handheld
from meterline.cli._demo_push import step_push
from meterline.cli.seed import progress_bar, seed
from meterline.ingest.model import Quantity, Reading, Source
from meterline.ingest.vee.batch import run_period
from meterline.ingest.vee.config import config_for
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
    out_dir: Path = Path("demo-output")
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


def billing_period(today: dt.date) -> str:
    """The last complete month before ``today`` (the period the seeded history covers whole)."""
    last = today.replace(day=1) - dt.timedelta(days=1)
    return f"{last:%Y-%m}"


def step_validate(state: DemoState) -> None:
    """The batch validation run over the billing period and over the month so far; alerts by rule."""
    assert state.db is not None and state.company_id is not None
    company = state.data["seed"].company
    today = dt.datetime.now(dt.timezone.utc).astimezone(ZoneInfo(company.timezone)).date()
    period = billing_period(today)
    state.data["period"] = period
    config = config_for(state.ctx.settings)
    vs = state.ctx.settings.vee
    flagged: dict[str, int] = {}
    validator = state.data.pop("validator", None)
    if validator is not None:  # what the ingest path validated as it arrived
        with state.ctx.console.status("validating the readings received live"):
            validator.close()
        h = validator.stats
        state.add("validation", "in the ingest path", f"{h.validated:,} readings received today, {h.flagged:,} flagged; "
                                                     f"alerts opened {h.alerts_opened:,}")
        if h.failures or h.skipped_readings:
            raise RuntimeError(f"validation in the ingest path failed on {h.failures} batch(es), "
                               f"left {h.skipped_readings} reading(s) unvalidated")
    with progress_bar(state.ctx) as progress:
        for p in (period,):
            task = progress.add_task(f"validating {p}", total=None)

            def report(done: int, total: int, task=task) -> None:
                progress.update(task, completed=done, total=total)

            s = run_period(state.db.dsn, company.id, company.code, company.timezone, p, config,
                           chunk_meters=vs.chunk_meters, loaders=vs.loaders, actor="demo", progress=report)
            for rule, n in s.by_rule.items():
                flagged[rule] = flagged.get(rule, 0) + n
            methods = ", ".join(f"{k} {v:,}" for k, v in sorted(s.estimated_by_method.items()))
            state.add("validation", f"period {p}", f"{s.readings:,} readings of {s.meters:,} meters, "
                                                   f"{s.flagged:,} flagged ({s.held:,} held, {s.rejected:,} rejected) "
                                                   f"in {s.seconds:.1f}s")
            state.add("validation", f"{p} period-end reads estimated", f"{s.estimated:,}"
                                                                       + (f" ({methods})" if methods else "")
                                                                       + f"; cannot estimate {s.estimation_failed:,}")
    with state.db.connection(company_id=state.company_id) as conn:
        alerts = conn.execute(
            """SELECT rule, severity, count(*) FROM alert WHERE company_id = %s AND status <> 'resolved'
               GROUP BY rule, severity ORDER BY count(*) DESC, rule""", [state.company_id]).fetchall()
        faults = state.data.get("field_faults", {})
        caught = dict(conn.execute(
            """SELECT m.serial, string_agg(DISTINCT a.rule, ',') FROM alert a JOIN meter m ON m.id = a.meter_id
                WHERE a.company_id = %s AND m.serial = ANY(%s) GROUP BY m.serial""",
            [state.company_id, list(faults.values())]).fetchall()) if faults else {}
    table = Table(title="open alerts by rule")
    for col in ("rule", "severity", "alerts"):
        table.add_column(col, justify="right" if col == "alerts" else "left")
    for rule, severity, n in alerts:
        table.add_row(rule, severity, f"{n:,}")
    state.ctx.console.print(table)
    state.data["alerts"] = [(r, sev, n) for r, sev, n in alerts]
    state.add("validation", "readings flagged by rule",
              ", ".join(f"{k} {v:,}" for k, v in sorted(flagged.items(), key=lambda kv: -kv[1])) or "none")
    state.add("validation", "open alerts", f"{sum(n for *_, n in alerts):,}: "
                                           + ", ".join(f"{r} {n:,}" for r, _s, n in alerts[:8]))
    for what, serial in faults.items():
        state.add("validation", f"injected {what} ({serial})", caught.get(serial) or "no alert")


STEPS: list[Step] = [
    ("database", step_database),
    ("seed utility", step_seed),
    ("redelivery & bad input", step_redelivery),
    ("pushing meters", step_push),
    ("concentrators (M-Bus, Modbus)", step_concentrators),
    ("handheld routes", step_handheld),
    ("maintenance", step_maintain),
    ("validation & alerts", step_validate),
    ("group operation", step_group),
]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meters", type=int, default=10_000, help="size of the synthetic utility (default 10000)")
    p.add_argument("--days", type=int, default=62, help="days of reading history (default 62)")
    p.add_argument("--keep", action="store_true", help="reuse the demo database instead of recreating it")
    p.add_argument("--database", default=DEMO_DATABASE, help=f"database the demo (re)creates (default {DEMO_DATABASE})")
    p.add_argument("--out", type=Path, default=Path("demo-output"),
                   help="directory for the files the demo writes (default ./demo-output)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    state = DemoState(ctx=ctx, args=args, out_dir=args.out.resolve())
    state.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        for i, (title, fn) in enumerate(STEPS, 1):
            ctx.console.rule(f"{i}/{len(STEPS)} {title}", style="bold")
            t = time.perf_counter()
            fn(state)
            state.timings.append((title, time.perf_counter() - t))
            ctx.console.print(f"[dim]{title}: {state.timings[-1][1]:.1f}s[/dim]")
    finally:
        validator = state.data.pop("validator", None)
        if validator is not None:
            validator.close()
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
    table.add_row("time", "steps", ", ".join(f"{t} {s:.1f}s" for t, s in state.timings))
    table.add_row("", "total", f"{time.perf_counter() - started:.1f}s")
    ctx.console.print(table)
    return 0


COMMANDS = [Command("demo", "run the main job end to end on the embedded default", run, configure)]
