"""Benchmark: readings per second through the writer, against executemany INSERT.

    python benchmarks/bench_writer.py [--readings 2000000] [--meters 100000] [--sample 50000]

Builds a fresh database with ``--meters`` meters, then, in the same run:

* writer, new readings: ``--readings`` readings (hourly registers across the meters) through
  ``BatchingWriter`` (binary COPY to staging, meter resolution, ON CONFLICT DO NOTHING);
* writer, all duplicates: the same readings again (deduplication cost);
* baseline: the naive way, ``executemany`` of one INSERT per reading, on ``--sample`` readings.

Each figure is the median of ``--repeat`` runs (tables emptied between runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_server_args, fresh_database, median_rate, server  # noqa: E402

from meterline.config.settings import WriterSettings  # noqa: E402
from meterline.ingest.model import Reading, Source  # noqa: E402
from meterline.ingest.writer import BatchingWriter  # noqa: E402


def make_meters(dsn: str, n: int) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        cid = c.execute("INSERT INTO company (code, name) VALUES ('bench', '基准水司') RETURNING id").fetchone()[0]
        c.execute(
            """INSERT INTO meter (company_id, serial, comm_address, register_digits)
               SELECT %s, 'B' || g, 'dev' || g, 6 FROM generate_series(1, %s) g""", [cid, n])
        lo, hi = c.execute("SELECT min(id), max(id) FROM meter").fetchone()
    return lo, hi


def make_readings(lo: int, n_meters: int, n: int) -> list[Reading]:
    start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=30)
    steps = (n + n_meters - 1) // n_meters
    out = []
    for k in range(steps):
        ts = start + dt.timedelta(hours=k)
        for m in range(n_meters):
            if len(out) == n:
                return out
            out.append(Reading(ts=ts, value=1000 * k + m % 1000, meter_id=lo + m, source=Source.MQTT))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=2_000_000)
    p.add_argument("--meters", type=int, default=100_000)
    p.add_argument("--sample", type=int, default=50_000, help="readings for the executemany baseline")
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=20_000)
    p.add_argument("--chunk", type=int, default=5_000, help="readings per submission (a concentrator message, a file part)")
    add_server_args(p)
    args = p.parse_args()

    with server(args.dsn) as maint, fresh_database(maint, "ml_bench_writer", args.keep) as dsn:
        lo, _hi = make_meters(dsn, args.meters)
        readings = make_readings(lo, args.meters, args.readings)
        chunk = args.chunk
        chunks = [readings[i:i + chunk] for i in range(0, len(readings), chunk)]
        settings = WriterSettings(batch_size=args.batch_size, connections=args.connections, max_delay_ms=20,
                                  queue_max=max(args.batch_size * 8, 200_000))
        print(f"{args.readings:,} readings across {args.meters:,} meters; writer: {args.connections} connection(s), "
              f"batches of {args.batch_size:,}; server {dsn.split(' dbname=')[0]}", flush=True)

        def truncate() -> None:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("TRUNCATE reading, dead_letter")
                c.execute("CHECKPOINT")

        def write_all() -> None:
            with BatchingWriter(dsn, settings) as w:
                futures = [w.submit(c) for c in chunks]
                total = sum(f.result().written + f.result().duplicates for f in futures)
            assert total == len(readings), total

        new_rate = median_rate("writer: new readings (COPY + dedupe)", len(readings), write_all, args.repeat, truncate)
        dup_rate = median_rate("writer: all duplicates", len(readings), write_all, args.repeat)

        sample = readings[: args.sample]

        def naive() -> None:
            with psycopg.connect(dsn) as c:
                with c.cursor() as cur:
                    cur.executemany(
                        """INSERT INTO reading (meter_id, ts, value, received_at, company_id, status, quantity, source)
                           VALUES (%s, %s, %s, now(), 1, 0, %s, %s) ON CONFLICT DO NOTHING""",
                        [(r.meter_id, r.ts, r.value, int(r.quantity), int(r.source)) for r in sample])
                c.commit()

        base = median_rate(f"baseline: executemany INSERT ({len(sample):,})", len(sample), naive, args.repeat, truncate)
        print(f"ratio writer/executemany: {new_rate / base:.1f}x (new), {dup_rate / base:.1f}x (duplicates)")


if __name__ == "__main__":
    main()
