"""``meterline demo``: a month of a utility end to end on the embedded default.

Runs on a fresh ``meterline_demo`` database (the embedded PostgreSQL unless a DSN is configured),
as the list of steps ``STEPS``; each prints its progress and wall time and adds lines to the
closing tables (every step's figures, then the month in a manager's terms):

1. create the database and migrate it;
2. seed a synthetic utility: registry and enough history to bill last month for every cycle
   (the NB-IoT meters' reads around the period end are held back for step 4);
3. deliver the latest readings again (duplicates change nothing) and some bad ones (dead letters);
4. pushing meters: the ingest service (MQTT on an in-process broker, ChirpStack uplinks, CoAP)
   against simulated meters with faults, and the held-back period-end reads late over MQTT
   (``cli/_demo_push.py``);
5. concentrators: simulated M-Bus segments and Modbus gateways polled by the ingest service's
   pollers, with faults (``cli/_demo_field.py``);
6. handheld routes: route files exported, the readers' uploads imported (with bad rows), the
   same upload again (``cli/_demo_field.py``);
7. maintenance: partitions ahead, the daily aggregate;
8. validation: what arrived today through the ingest hook, the batch VEE run over the months
   bounding the billing periods, the alerts by rule and what became of each injected fault;
9. the billing run of every cycle for last month (``rating.run``);
10. payments through every channel; 11. the bank withholding round trip; 12. late fees, a
    waiver, the daily close and the ledger's check (``cli/_demo_ledger.py``);
13. exports and reports of the period under ``--out``, a metrics snapshot;
14. group operation: what the application role sees.

Nothing is skipped silently: a step that cannot do its part says so or fails the demo.
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
from meterline.cli._demo_ledger import ledger_figures, step_close, step_payments, step_withholding
from meterline.cli._demo_push import step_push
from meterline.cli.ledger import money
from meterline.cli.seed import progress_bar, seed
from meterline.errors import MeterlineError
from meterline.ingest.model import Quantity, Reading, Source
from meterline.ingest.vee.batch import run_period
from meterline.ingest.vee.config import config_for
from meterline.ingest.writer import WriteResult, write_readings
from meterline.rating.run import BillRunResult, bill_run
from meterline.rating.tariff import load_book
from meterline.store import maintain as maintenance
from meterline.store import migrate as migrations
from meterline.store import partitions
from meterline.store.db import Database, open_database
from meterline.store.dsn import with_dbname
from meterline.store.personal import keyring_from_settings

DEMO_DATABASE = "meterline_demo"
DEMO_COMPANY = "demo"
SEED_CYCLES = ("M", "B")  #: the billing cycles of the books ``store.seed`` builds


@dataclass
class DemoState:
    ctx: Context
    args: argparse.Namespace
    db: Database | None = None
    company_id: int | None = None
    out_dir: Path = Path("demo-output")
    today: dt.date = field(default_factory=dt.date.today)  #: the company's today
    period: str = ""  #: the billing period (the last complete month)
    cycles: dict[str, int] = field(default_factory=dict)  #: billing cycle -> months it spans
    days: int = 0  #: days of seeded history
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
    # the NB-IoT (MQTT) meters' reads around the billing period's end were stuck in the network:
    # they arrive over MQTT in the pushing step (a backlog) and close the period's bills
    tz = ZoneInfo(state.ctx.settings.utility.timezone)
    y, m = (int(x) for x in state.period.split("-"))
    boundary = dt.datetime(y + m // 12, m % 12 + 1, 1, tzinfo=tz)
    window = (boundary - dt.timedelta(days=2), boundary + dt.timedelta(days=1))

    def hold_back(protocol: str, r: Reading) -> bool:
        return protocol == "mqtt" and window[0] <= r.ts < window[1]

    with progress_bar(state.ctx) as progress:
        report = seed(state.db, hold_back=hold_back, company_code=DEMO_COMPANY, company_name="演示水务有限公司",
                      timezone=state.ctx.settings.utility.timezone, meters=state.args.meters,
                      days=state.days, end=state.today, progress=progress, writer_settings=state.ctx.settings.writer,
                      keyring=keyring_from_settings(state.ctx.settings))
    state.company_id = report.company.id
    state.data["seed"] = report
    state.data["backlog"] = report.held
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
        report = maintenance.maintain(conn, refresh_days=max(1, state.days))
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


def _month(day: dt.date, back: int = 0) -> dt.date:
    """First day of the month ``back`` months before ``day``'s month."""
    n = day.year * 12 + day.month - 1 - back
    return dt.date(n // 12, n % 12 + 1, 1)


def billing_period(today: dt.date) -> str:
    """The last complete month before ``today`` (the period the seeded history covers whole)."""
    return f"{_month(today, 1):%Y-%m}"


def history_days(today: dt.date, longest_cycle: int) -> int:
    """Days of history that cover the billing period of the longest cycle and the month before it
    (its opening reads: walk-by books are read some days before a month ends)."""
    return (today - _month(today, longest_cycle + 1)).days + 1


def validation_periods(today: dt.date, longest_cycle: int) -> list[str]:
    """The months whose ends are the billing periods' boundaries, oldest first."""
    return [f"{_month(today, k):%Y-%m}" for k in range(longest_cycle + 1, 0, -1)]


def step_validate(state: DemoState) -> None:
    """The batch validation run over the billing period and over the month so far; alerts by rule."""
    assert state.db is not None and state.company_id is not None
    company = state.data["seed"].company
    config = config_for(state.ctx.settings)
    vs = state.ctx.settings.vee
    flagged: dict[str, int] = {}
    validator = state.data.pop("validator", None)
    if validator is not None:  # what the ingest path validated as it arrived
        with state.ctx.console.status("validating the readings received today (the ingest hook)"):
            validator.start()
            validator.close()
        h = validator.stats
        state.add("validation", "in the ingest path", f"{h.readings:,} readings delivered today validated as they "
                                                     f"committed ({h.replayed_meters:,} meters' history replayed), "
                                                     f"{h.flagged:,} flagged; alerts opened {h.alerts_opened:,}")
        if h.failures or h.skipped_readings:
            raise RuntimeError(f"validation in the ingest path failed on {h.failures} batch(es), "
                               f"left {h.skipped_readings} reading(s) unvalidated")
    with progress_bar(state.ctx) as progress:
        for p in validation_periods(state.today, max(state.cycles.values())):
            task = progress.add_task(f"validating {p}", total=None)

            def report(done: int, total: int, task=task) -> None:
                progress.update(task, completed=done, total=total)

            s = run_period(state.db.dsn, company.id, company.code, company.timezone, p, config,
                           chunk_meters=vs.chunk_meters, loaders=vs.loaders, actor="demo", progress=report)
            for rule, n in s.by_rule.items():
                flagged[rule] = flagged.get(rule, 0) + n
            if p != state.period:
                state.add("validation", f"period {p}", f"{s.readings:,} readings, {s.flagged:,} flagged, "
                                                       f"{s.estimated:,} period-end reads estimated")
                continue
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
        faults = dict(state.data.get("field_faults", {}))
        faults.update({k: v for k, v in state.data.get("handheld", {}).get("faults", {}).items()
                       if k in ("handheld spike", "handheld reverse")})
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
    analyze(state, ("reading_validation", "reading_estimate", "alert"))
    state.add("validation", "readings flagged by rule",
              ", ".join(f"{k} {v:,}" for k, v in sorted(flagged.items(), key=lambda kv: -kv[1])) or "none")
    state.add("validation", "open alerts", f"{sum(n for *_, n in alerts):,}: "
                                           + ", ".join(f"{r} {n:,}" for r, _s, n in alerts[:8]))
    for what, serial in faults.items():
        state.add("validation", f"injected {what} ({serial})", caught.get(serial) or (
            "no alert yet: a read far off stays pending until the meter's next read tells a corrupt read "
            "from a real jump" if "spike" in what else "no alert"))


LEDGER_TABLES = ("journal_entry", "posting", "receivable_item", "allocation", "payment", "ledger_balance",
                 "ledger_balance_delta", "bill", "bill_line", "meter_period_read")


def analyze(state: DemoState, tables: tuple[str, ...] = LEDGER_TABLES) -> None:
    """Refresh the planner's statistics of tables the last step filled from empty: a utility's
    autovacuum does it within minutes; the demo compresses a month into one and would otherwise
    have the next steps planned for empty tables."""
    assert state.db is not None
    with state.db.connect(autocommit=True, owner=True) as conn:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in tables)))


def step_billing(state: DemoState) -> None:
    """The billing run of every seeded cycle for the billing period: bills, lines, ledger postings."""
    assert state.db is not None and state.company_id is not None
    billing = state.ctx.settings.billing
    tariffs = load_book(state.ctx.settings)
    results: list[BillRunResult] = []
    with progress_bar(state.ctx) as progress:
        for cycle in state.cycles:
            task = progress.add_task(f"billing cycle {cycle} {state.period}", total=None)

            def report(stage: str, done: int, total: int, task=task) -> None:
                progress.update(task, completed=done, total=total)

            with state.db.connection(company_id=state.company_id) as conn:
                res = bill_run(conn, state.company_id, cycle, state.period, progress=report, tariffs=tariffs,
                               settings=billing, created_by="demo")
                conn.commit()
            progress.update(task, completed=res.accounts, total=res.accounts)
            results.append(res)
    state.data["billing"] = results
    analyze(state)
    table = Table(title=f"billing runs for {state.period}")
    for col in ("cycle", "period", "due", "accounts", "bills", "m³ billed", "amount", "tax", "total", "estimated",
                "skipped", "posted", "seconds"):
        table.add_column(col, justify="left" if col in ("cycle", "period", "due") else "right")
    for r in results:
        table.add_row(r.cycle, f"{r.period_start}..{r.period_end}", str(r.due_date), f"{r.accounts:,}", f"{r.bills:,}",
                      f"{r.consumption / 1000:,.1f}", money(r.amount), money(r.tax), money(r.total),
                      f"{r.estimated_share * 100:.1f}%", f"{len(r.skips):,}", f"{r.posted:,}", f"{r.seconds:.1f}")
    state.ctx.console.print(table)
    skipped: dict[str, int] = {}
    for r in results:
        for reason, n in r.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
        state.add("billing", f"cycle {r.cycle} ({r.period_start} to {r.period_end})",
                  f"{r.bills:,} bills, {r.consumption / 1000:,.0f} m³, {money(r.total)} yuan, due {r.due_date}")
    bills = sum(r.bills for r in results)
    estimated = sum(r.estimated for r in results)
    if any(r.already_billed for r in results):
        state.add("billing", "billed before (--keep)", f"{sum(r.already_billed for r in results):,} accounts")
    state.add("billing", "bills", f"{bills:,} ({estimated / bills * 100 if bills else 0:.1f}% on estimated reads), "
                                  f"{sum(r.posted for r in results):,} posted to the ledger")
    state.add("billing", "amount billed", f"{money(sum(r.total for r in results))} yuan "
                                          f"(tax {money(sum(r.tax for r in results))})")
    state.add("billing", "apportioned (master–sub)", f"{sum(r.apportioned for r in results) / 1000:,.1f} m³")
    state.add("billing", "accounts not billed", ", ".join(f"{k} {v:,}" for k, v in skipped.items()) or "none")
    if not bills and not any(r.already_billed for r in results):
        raise RuntimeError(f"the billing run of {state.period} wrote no bill; the seeded history covers "
                           f"{state.days} days (--days)")


def step_exports(state: DemoState) -> None:
    """Every export and report of the billing period under ``--out``, and a metrics snapshot."""
    assert state.db is not None and state.company_id is not None
    from prometheus_client import generate_latest

    from meterline.exporters.bundle import export_all
    from meterline.exporters.data import export_data
    from meterline.exporters.finance import export_finance
    from meterline.exporters.metrics import pipeline_registry
    from meterline.exporters.reports import build, report_all

    out = state.out_dir
    with state.ctx.console.status(f"writing the exports and reports of {state.period}"):
        with state.db.connection(company_id=state.company_id) as conn:
            files = export_all(conn, state.company_id, state.period, out / "exports")
            # the bills were posted and paid this month: the journal and payments of this month too
            month = f"{state.today:%Y-%m}"
            fin = export_finance(conn, state.company_id, month, out / "exports")
            data = export_data(conn, state.company_id, month, out / "exports")
            files += [fin.csv, fin.parquet, *data.files.values()]
            files += report_all(conn, state.company_id, state.period, out, as_of=state.today,
                                config=config_for(state.ctx.settings))
            districts = build(conn, state.company_id, "collection", state.period, as_of=state.today, months=1)
        metrics = out / "metrics" / "meterline.prom"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_bytes(generate_latest(pipeline_registry(state.db.dsn, min_interval_s=0)))
        files.append(metrics)
    for rep in districts[:1]:
        table = Table(title=rep.title)
        for col in rep.columns:
            table.add_column(col)
        for row in rep.rows:
            table.add_row(*(f"{v * 100:.1f}%" if k == "rate" and v is not None else
                            money(v) if k == "money" and v is not None else str(v if v is not None else "")
                            for v, k in zip(row, rep.kinds or ("text",) * len(row))))
        state.ctx.console.print(table)
    groups: dict[Path, list[Path]] = {}
    for f in files:
        groups.setdefault(f.parent, []).append(f)
    listing = Table(title=f"files written under {out}")
    for col in ("folder", "files", "size", "for example"):
        listing.add_column(col, justify="right" if col in ("files", "size") else "left")
    for folder, fs in sorted(groups.items()):
        fs = sorted(set(fs))
        size = sum(f.stat().st_size for f in fs)
        listing.add_row(str(folder.relative_to(out)), f"{len(fs):,}", f"{size / 1024:,.0f} KiB", fs[0].name)
        state.add("files", str(folder.relative_to(out)), f"{len(fs):,} files, {size / 1024:,.0f} KiB (e.g. {fs[0].name})")
    state.ctx.console.print(listing)
    state.data["files"] = files


STEPS: list[Step] = [
    ("database", step_database),
    ("seed utility", step_seed),
    ("redelivery & bad input", step_redelivery),
    ("pushing meters", step_push),
    ("concentrators (M-Bus, Modbus)", step_concentrators),
    ("handheld routes", step_handheld),
    ("maintenance", step_maintain),
    ("validation & alerts", step_validate),
    ("billing run", step_billing),
    ("payments", step_payments),
    ("bank withholding round trip", step_withholding),
    ("late fees & daily close", lambda state: (analyze(state), step_close(state))),
    ("exports & reports", step_exports),
    ("group operation", step_group),
]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meters", type=int, default=10_000, help="size of the synthetic utility (default 10000)")
    p.add_argument("--days", type=int, default=None,
                   help="days of reading history (default: enough for the billing periods of every cycle)")
    p.add_argument("--keep", action="store_true", help="reuse the demo database instead of recreating it")
    p.add_argument("--database", default=DEMO_DATABASE, help=f"database the demo (re)creates (default {DEMO_DATABASE})")
    p.add_argument("--out", type=Path, default=Path("demo-output"),
                   help="directory for the files the demo writes (default ./demo-output)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    state = DemoState(ctx=ctx, args=args, out_dir=args.out.resolve())
    state.today = dt.datetime.now(dt.timezone.utc).astimezone(ZoneInfo(ctx.settings.utility.timezone)).date()
    state.period = billing_period(state.today)
    # the seeded books' cycles (store.seed: monthly M, bi-monthly B) and how many months each spans
    state.cycles = {c: ctx.settings.billing.cycle_months.get(c, 1) for c in SEED_CYCLES}
    needed = history_days(state.today, max(state.cycles.values()))
    if args.days is not None and args.days < needed:
        raise MeterlineError(f"--days {args.days} is too short: billing {state.period} for cycles "
                             f"{', '.join(state.cycles)} needs at least {needed} days of history (the default)")
    state.days = args.days if args.days is not None else needed
    state.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        for i, (title, fn) in enumerate(STEPS, 1):
            ctx.console.rule(f"{i}/{len(STEPS)} {title}", style="bold")
            t = time.perf_counter()
            fn(state)
            state.timings.append((title, time.perf_counter() - t))
            ctx.console.print(f"[dim]{title}: {state.timings[-1][1]:.1f}s[/dim]")
        manager = _manager_summary(state)
    finally:
        validator = state.data.pop("validator", None)
        if validator is not None:
            validator.close()
        if state.db is not None:
            state.db.close()
    table = Table(title="meterline demo — every step", show_lines=False)
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
    ctx.console.print(manager)
    return 0


def _manager_summary(state: DemoState) -> Table:
    """The month in the terms a utility manager uses."""
    assert state.db is not None and state.company_id is not None
    with state.db.connection(company_id=state.company_id) as conn:
        # the demo's database is fresh: every reading but the seeded history was delivered today
        received = conn.execute("SELECT count(*) FROM reading WHERE source_ref IS DISTINCT FROM 'seed'").fetchone()[0]
        bad_rows = conn.execute("SELECT count(*) FROM handheld_bad_row").fetchone()[0]
        f = ledger_figures(conn, state.company_id)
    with state.db.connect(autocommit=True, owner=True) as conn:  # dead letters of no known meter have no company
        rejected = conn.execute("SELECT reason, count(*) FROM dead_letter GROUP BY reason "
                                "ORDER BY count(*) DESC, reason").fetchall()
    t = Table(title=f"{state.data['seed'].company.name} — {state.period} in one table", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("readings delivered", f"{received:,} stored; "
              f"{sum(n for _, n in rejected) + bad_rows:,} rejected: "
              + ", ".join([f"{r} {n}" for r, n in rejected] + ([f"handheld rows refused {bad_rows}"] if bad_rows else [])))
    alerts = state.data.get("alerts", [])
    t.add_row("open alerts by rule", ", ".join(f"{r} {n:,}" for r, _s, n in alerts) or "none")
    t.add_row("bills", f"{f.bills:,} bills, {money(f.billed)} yuan billed for {state.period}")
    t.add_row("collected", f"{money(f.collected)} yuan received; {money(f.bills_settled)} yuan of the bills "
                           f"paid; prepaid credit {money(f.prepaid_credit)} yuan")
    t.add_row("collection rate (回收率)", f"{f.collection_rate * 100:.1f}%")
    t.add_row("still owed", f"{money(f.receivables)} yuan by {f.accounts_owing:,} accounts "
                            f"(incl. late fees {money(f.late_fees)}, after waivers {money(f.adjustments)})")
    t.add_row("books reconcile", "yes: billed + late fees − collected − adjustments = receivables"
              if f.reconciles() else "NO: billed + late fees − collected − adjustments ≠ receivables")
    t.add_row("files", str(state.out_dir))
    return t


COMMANDS = [Command("demo", "run the main job end to end on the embedded default", run, configure)]
