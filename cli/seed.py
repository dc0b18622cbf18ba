"""``meterline seed``: build a synthetic utility with its consumption history."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from meterline.cli._base import Command, Context
from meterline.ingest.synthetic import history
from meterline.ingest.model import Reading
from meterline.ingest.writer import BatchingWriter, WriteResult
from meterline.store.company import Company, ensure_company
from meterline.store.db import Database
from meterline.store.personal import KeyRing, keyring_from_settings
from meterline.store.registry import load_rows
from meterline.store.seed import SyntheticUtility, build_utility


@dataclass
class SeedReport:
    company: Company
    utility: SyntheticUtility
    meter_ids: dict[str, int]
    readings: WriteResult
    seconds_registry: float
    seconds_history: float
    held: list[Reading] = field(default_factory=list)  #: history readings held back (not written)


def seed(
    db: Database,
    *,
    company_code: str,
    company_name: str,
    timezone: str,
    meters: int,
    days: int,
    seed_value: int = 42,
    end: dt.date | None = None,
    progress: Progress | None = None,
    writer_settings=None,
    keyring: KeyRing | None = None,
    company_prefix: str = "",
    hold_back: Callable[[str, Reading], bool] | None = None,
) -> SeedReport:
    """Create the company, its synthetic registry and ``days`` of history ending ``end``.

    ``hold_back(protocol, reading)``: history readings it accepts are not written but returned in
    :attr:`SeedReport.held` (the demo delivers them later over the meters' own protocol).
    """
    t0 = time.perf_counter()
    with db.connection() as conn:
        company = ensure_company(conn, company_code, company_name, timezone=timezone)
        conn.commit()
    utility = build_utility(meters, seed=seed_value, company_prefix=company_prefix)
    task = progress.add_task("registry", total=1) if progress else None
    with db.connection(company_id=company.id) as conn:
        load_rows(conn, company.id, utility.rows, source="seed", keyring=keyring)
        conn.commit()
        meter_ids = dict(conn.execute("SELECT serial, id FROM meter WHERE company_id = %s", [company.id]).fetchall())
    if progress is not None and task is not None:
        progress.update(task, completed=1)
    t1 = time.perf_counter()
    total = WriteResult()
    held: list[Reading] = []
    protocol_of = {meter_ids[serial]: p.protocol for serial, p in utility.profiles.items()}
    if days > 0:
        end = end or dt.date.today()
        expected = _expected_readings(utility, days)
        htask = progress.add_task("history readings", total=expected) if progress else None
        with BatchingWriter(db.dsn, writer_settings) as writer:
            futures = []
            for chunk in history(utility, meter_ids, end=end, days=days, tz=timezone):
                if hold_back is not None:
                    keep = [r for r in chunk if not hold_back(protocol_of[r.meter_id], r)]
                    held += [r for r in chunk if hold_back(protocol_of[r.meter_id], r)]
                    if progress is not None and htask is not None:
                        progress.advance(htask, len(chunk) - len(keep))
                    chunk = keep
                futures.append(writer.submit(chunk))
                done = [f for f in futures if f.done()]
                for f in done:
                    res = f.result()
                    total.add(res)
                    if progress is not None and htask is not None:
                        progress.advance(htask, res.submitted)
                futures = [f for f in futures if not f.done()]
            for f in futures:
                res = f.result()
                total.add(res)
                if progress is not None and htask is not None:
                    progress.advance(htask, res.submitted)
        if progress is not None and htask is not None:
            progress.update(htask, total=total.submitted, completed=total.submitted)
    return SeedReport(company, utility, meter_ids, total, t1 - t0, time.perf_counter() - t1, held)


def _expected_readings(utility: SyntheticUtility, days: int) -> int:
    handheld = sum(1 for p in utility.profiles.values() if p.protocol == "handheld")
    return (utility.n_meters - handheld) * days + handheld * max(1, days // 30)


def progress_bar(ctx: Context) -> Progress:
    return Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=ctx.console, transient=False)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meters", type=int, default=10_000, help="metering points (default 10000)")
    p.add_argument("--days", type=int, default=62, help="days of reading history ending today (default 62; 0 for none)")
    p.add_argument("--seed", type=int, default=42, help="random seed (the same seed builds the same utility)")
    p.add_argument("--name", default="演示水务有限公司", help="company name when the company is created")
    p.add_argument("--prefix", default="", help="prefix of codes, serials and addresses (several companies side by side)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    code = ctx.company_code or ctx.settings.utility.company
    with progress_bar(ctx) as progress:
        report = seed(ctx.db, company_code=code, company_name=args.name, timezone=ctx.settings.utility.timezone,
                      meters=args.meters, days=args.days, seed_value=args.seed, progress=progress,
                      writer_settings=ctx.settings.writer, keyring=keyring_from_settings(ctx.settings),
                      company_prefix=args.prefix)
    r = report.readings
    rate = r.submitted / report.seconds_history if report.seconds_history > 0 else 0
    ctx.console.print(
        f"company {report.company.code}: {report.utility.n_meters} meters in {report.seconds_registry:.1f}s; "
        f"{r.written} readings written, {r.duplicates} already present, {r.dead} refused "
        f"in {report.seconds_history:.1f}s ({rate:,.0f}/s)")
    return 0


COMMANDS = [Command("seed", "build a synthetic utility (registry + reading history)", run, configure,
                   permission="seed.run", scope="group")]
