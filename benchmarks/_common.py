"""Shared set-up for benchmarks: a server, a fresh migrated database, figures and ratios."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psycopg
from psycopg import sql

from meterline.store import migrate as migrations
from meterline.store import partitions
from meterline.store.dsn import with_dbname

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


def add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", default=os.environ.get("METERLINE_BENCH_DSN"),
                   help="maintenance DSN of the server (default: 127.0.0.1:5432 if it answers, else embedded)")
    p.add_argument("--repeat", type=int, default=3, help="measurements per figure; the median is reported")
    p.add_argument("--keep", action="store_true", help="keep the benchmark database")


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[str]:
    """Yield a maintenance DSN: the given one, the local server, or an embedded one."""
    if dsn:
        yield dsn
        return
    try:
        psycopg.connect(LOCAL, connect_timeout=2).close()
        yield LOCAL
        return
    except psycopg.OperationalError:
        pass
    from meterline.store.embedded import start_embedded

    srv = start_embedded(Path(tempfile.mkdtemp(prefix="meterline-bench-")) / "pgdata", delete_on_stop=True)
    try:
        yield srv.dsn
    finally:
        srv.stop()


@contextlib.contextmanager
def fresh_database(maintenance_dsn: str, prefix: str, keep: bool = False) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(maintenance_dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
    dsn = with_dbname(maintenance_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            migrations.migrate(c, allow_timescaledb=False)
            import datetime as dt

            partitions.ensure_window(c, dt.date.today(), 24, 3)
        yield dsn
    finally:
        if not keep:
            with psycopg.connect(maintenance_dsn, autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def median_rate(label: str, n: int, run: Callable[[], None], repeat: int, before: Callable[[], None] | None = None) -> float:
    """Run ``run`` ``repeat`` times (``before`` untimed before each); print and return the median rate."""
    rates = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        run()
        rates.append(n / (time.perf_counter() - t))
    med = statistics.median(rates)
    print(f"{label:<48} {med:>14,.0f} /s   (median of {repeat}: {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)
    return med
