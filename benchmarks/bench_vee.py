"""Benchmark: validation (VEE) as a batch over a period, and its cost in the ingest path.

    python benchmarks/bench_vee.py [--meters 1000000] [--sample 2000] [--ingest-readings 1000000]

Part 1, ``vee run``: a utility of ``--meters`` meters with 30 daily reads each in 2026-10 (built
in the server with generate_series; a few in a thousand carry anomalies: corrupt telegrams,
stuck registers, rollovers, reverse flow, status bits, meters silent at the end of the month),
then :func:`run_period` over the period: every rule, verdicts, alerts, estimates of missing
period-end reads, book reading rates. Same-run baseline: the naive way, one query per meter
fetching its reads, checked in a Python loop, flags inserted one by one, on ``--sample`` meters.

Part 2, ingest path: ``--ingest-readings`` hourly readings across ``--ingest-meters`` meters
through the batching writer alone, and through the writer with the ingest hook validating each
committed batch (the time includes the hook catching up). The ratio is the hook's cost. Both
start from the same state: one hour of every meter already written and, for the hook, validated
(a running service has seen its meters; the first sight, a replay from the database, is timed
apart).

Each figure is the median of ``--repeat`` runs. ``--reuse NAME`` keeps the part-1 database
(built once) for later runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_server_args, fresh_database, median_rate, server  # noqa: E402

from meterline.config.settings import WriterSettings  # noqa: E402
from meterline.ingest.model import Reading, Source  # noqa: E402
from meterline.ingest.vee.batch import run_period  # noqa: E402
from meterline.ingest.vee.config import load_config  # noqa: E402
from meterline.ingest.vee.hook import IngestValidator  # noqa: E402
from meterline.ingest.vee.kernel import warm_up  # noqa: E402
from meterline.ingest.writer import BatchingWriter  # noqa: E402
from meterline.store import migrate as migrations  # noqa: E402
from meterline.store import partitions  # noqa: E402
from meterline.store.dsn import with_dbname  # noqa: E402

TZ = "Asia/Shanghai"
PERIOD = "2026-10"
CHUNK = 100_000

RESET = """TRUNCATE reading_validation, reading_estimate, alert_delivery, alert_event, alert, vee_failure, vee_run"""

# 30 daily reads at 08:00 local, 2026-10-02 .. 2026-10-31; per meter use 150..449 L/day. Anomalies
# by meter id modulo 1000: 1 corrupt telegram, 2 stuck, 3 rollover, 4 reverse flow, 5 leak bit,
# 6..7 silent for the last 6 days
READINGS = """
INSERT INTO reading (meter_id, ts, value, received_at, committed_at, company_id, status, quantity, source)
SELECT m, ts, value, ts + interval '2 minutes', ts + interval '3 minutes', %(c)s, status, 1, 2
FROM (
    SELECT m, '2026-10-02 08:00+08'::timestamptz + d * interval '1 day' AS ts,
           CASE
             WHEN m %% 1000 = 1 AND d = 14 THEN 15430611
             WHEN m %% 1000 = 2 AND d >= 10 THEN 1000000 + 10 * (150 + m %% 300)
             WHEN m %% 1000 = 3 THEN (99995000 + d * (150 + m %% 300)) %% 100000000
             WHEN m %% 1000 = 4 AND d = 20 THEN 1000000 + 19 * (150 + m %% 300) - 50
             ELSE 1000000 + d * (150 + m %% 300)
           END AS value,
           CASE WHEN m %% 1000 = 5 AND d >= 25 THEN 1 ELSE 0 END AS status, d
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) m, generate_series(0, 29) d
) x
WHERE NOT (m %% 1000 IN (6, 7) AND d >= 24)"""


def build_utility(dsn: str, n: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        cid = c.execute("INSERT INTO company (code, name, timezone) VALUES ('bench', '基准水司', %s) RETURNING id",
                        [TZ]).fetchone()[0]
        c.execute("INSERT INTO use_type VALUES (%s, 'residential', '居民')", [cid])
        c.execute("""INSERT INTO meter_book (company_id, code, name, reader, supervisor, cycle)
                     SELECT %s, 'B' || g, '第' || g || '册', '抄表员' || (g %% 50), '主管' || (g %% 8), 'M'
                     FROM generate_series(1, %s) g""", [cid, max(1, n // 1000)])
        c.execute("INSERT INTO customer (company_id, code, name) VALUES (%s, 'C1', '基准客户')", [cid])
        cust = c.execute("SELECT id FROM customer").fetchone()[0]
        book0 = c.execute("SELECT min(id) FROM meter_book").fetchone()[0]
        t = time.perf_counter()
        for lo in range(1, n + 1, CHUNK):
            hi = min(n, lo + CHUNK - 1)
            c.execute("""INSERT INTO account (id, company_id, code, customer_id, address, use_type, tariff_id, book_id)
                         SELECT g, %s, 'A' || g, %s, '地址' || g, 'residential', 'water-residential',
                                %s + (g - 1) / 1000
                         FROM generate_series(%s::bigint, %s::bigint) g""", [cid, cust, book0, lo, hi])
            c.execute("""INSERT INTO meter (id, company_id, serial, account_id, protocol, size)
                         SELECT g, %s, 'M' || g, g, 'coap', 'DN15' FROM generate_series(%s::bigint, %s::bigint) g""",
                      [cid, lo, hi])
        print(f"registry: {n:,} meters in {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        for lo in range(1, n + 1, CHUNK):
            c.execute(READINGS, {"c": cid, "lo": lo, "hi": min(n, lo + CHUNK - 1)})
            print(f"  readings for meters ..{min(n, lo + CHUNK - 1):,} ({time.perf_counter() - t:.0f}s)", flush=True)
        c.execute("VACUUM ANALYZE reading")
        c.execute("ANALYZE")
        rows = c.execute("SELECT count(*) FROM reading").fetchone()[0]
        print(f"readings: {rows:,} in {time.perf_counter() - t:.1f}s", flush=True)
    return cid


def naive(dsn: str, cid: int, sample: int) -> None:
    """What one would write without the vectorized run: a query per meter and a Python loop."""
    start = dt.datetime(2026, 9, 30, 16, tzinfo=dt.timezone.utc)
    end = dt.datetime(2026, 10, 31, 16, tzinfo=dt.timezone.utc)
    with psycopg.connect(dsn) as c:
        ids = [m for (m,) in c.execute("SELECT id FROM meter WHERE company_id = %s ORDER BY id LIMIT %s", [cid, sample])]
        for m in ids:
            rows = c.execute("SELECT ts, value, status FROM reading WHERE meter_id = %s AND ts >= %s AND ts < %s "
                             "ORDER BY ts", [m, start, end]).fetchall()
            uses = []
            prev = None
            for ts, value, status in rows:
                flags = []
                if prev is not None:
                    use = value - prev
                    if use < 0:
                        flags.append("rollover" if use + 100_000_000 < 10_000_000 else "backwards")
                    med = statistics.median(uses[-14:]) if len(uses) >= 5 else None
                    if med is not None and use > 5 * med and use > 500:
                        flags.append("spike")
                    uses.append(use)
                if status:
                    flags.append("status")
                if flags:
                    c.execute("""INSERT INTO reading_validation (meter_id, ts, quantity, company_id, flags, auto_state)
                                 VALUES (%s, %s, 1, %s, %s, 'flagged') ON CONFLICT DO NOTHING""", [m, ts, cid, flags])
                prev = value
        c.rollback()


def part1(maint: str, args: argparse.Namespace) -> None:
    def run(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            cid = c.execute("SELECT id FROM company WHERE code = 'bench'").fetchone()[0]
            n = c.execute("SELECT count(*) FROM meter").fetchone()[0]
        config = load_config()
        t = time.perf_counter()
        warm_up()
        print(f"kernel loaded (compiled when not cached yet): {time.perf_counter() - t:.1f}s", flush=True)
        times = []
        summary = None
        for _ in range(args.repeat):
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(RESET)
                c.execute("CHECKPOINT")
            t = time.perf_counter()
            summary = run_period(dsn, cid, "bench", TZ, PERIOD, config, chunk_meters=args.chunk, loaders=args.loaders)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        assert summary is not None
        print(f"vee run {PERIOD}: {n:,} meters, {summary.readings:,} readings: median {med:.1f}s "
              f"({', '.join(f'{x:.1f}' for x in times)}); {summary.readings / med:,.0f} readings/s, "
              f"{n / med:,.0f} meters/s", flush=True)
        print(f"  flagged {summary.flagged:,} (held {summary.held:,}, rejected {summary.rejected:,}); by rule "
              f"{summary.by_rule}; missing reads {summary.missing:,}; estimated {summary.estimated:,}, cannot "
              f"estimate {summary.estimation_failed:,}; books below target {summary.books_below_target:,}; alerts "
              f"opened {summary.alerts_opened:,}; failures {summary.failures}", flush=True)
        sample = min(args.sample, n)
        base = median_rate(f"baseline: per-meter query + Python loop ({sample:,})", sample,
                           lambda: naive(dsn, cid, sample), args.repeat)
        print(f"ratio vee run / per-meter loop: {(n / med) / base:.1f}x (meters/s); "
              f"naive whole utility would take ~{n / base:,.0f}s", flush=True)

    if args.reuse:
        dsn = with_dbname(maint, args.reuse)
        with psycopg.connect(maint, autocommit=True) as c:
            exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [args.reuse]).fetchone()
            if not exists:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args.reuse)))
        with psycopg.connect(dsn, autocommit=True) as c:
            migrations.migrate(c, allow_timescaledb=False, day_timezone=TZ)
            partitions.ensure_window(c, dt.date.today(), 24, 3)
            built = c.execute("SELECT count(*) FROM meter").fetchone()[0]
        if built != args.meters:
            if built:
                raise SystemExit(f"database {args.reuse} holds {built:,} meters, not {args.meters:,}: drop it first")
            build_utility(dsn, args.meters)
        run(dsn)
        return
    with fresh_database(maint, "ml_bench_vee", args.keep) as dsn:
        build_utility(dsn, args.meters)
        run(dsn)


def part2(maint: str, args: argparse.Namespace) -> None:
    with fresh_database(maint, "ml_bench_vee_ingest", args.keep) as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            cid = c.execute("INSERT INTO company (code, name, timezone) VALUES ('bench', '基准水司', %s) RETURNING id",
                            [TZ]).fetchone()[0]
            c.execute("""INSERT INTO meter (company_id, serial, comm_address, size, protocol)
                         SELECT %s, 'B' || g, 'dev' || g, 'DN15', 'coap' FROM generate_series(1, %s) g""",
                      [cid, args.ingest_meters])
            lo = c.execute("SELECT min(id) FROM meter").fetchone()[0]
        n_m = args.ingest_meters
        start = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)

        def hour(k: int) -> list[Reading]:
            return [Reading(ts=start + dt.timedelta(hours=k), value=100_000 + 25 * k + (m % 7) * k, meter_id=lo + m,
                            source=Source.MQTT, received_at=start + dt.timedelta(hours=k, minutes=1))
                    for m in range(n_m)]

        # hour 0 is written (and, with the hook, validated) before the clock starts: the steady
        # state of a running ingest service, whose validator has seen every meter once
        warm = hour(0)
        steps = (args.ingest_readings + n_m - 1) // n_m
        readings = [r for k in range(1, steps + 1) for r in hour(k)][: args.ingest_readings]
        chunks = [readings[i:i + args.ingest_chunk] for i in range(0, len(readings), args.ingest_chunk)]
        settings = WriterSettings(batch_size=20_000, connections=2, max_delay_ms=20, queue_max=400_000,
                                  future_tolerance_s=10**9)
        config = load_config()
        print(f"ingest path: {len(readings):,} hourly readings across {n_m:,} meters, writer 2 connections, "
              f"submissions of {args.ingest_chunk:,}", flush=True)
        state: dict = {}

        def reset(validate: bool) -> None:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("TRUNCATE reading, dead_letter")
                c.execute(RESET)
                with BatchingWriter(dsn, settings) as w:
                    w.write(warm)
                c.execute("CHECKPOINT")
            if validate:
                v = IngestValidator(dsn, config, batch_max=200_000)
                t = time.perf_counter()
                v.validate(warm)
                state["cold_s"] = time.perf_counter() - t
                state["v"] = v.start()

        def alone() -> None:
            with BatchingWriter(dsn, settings) as w:
                for f in [w.submit(ch) for ch in chunks]:
                    f.result()

        def with_hook() -> None:
            v = state["v"]
            try:
                with BatchingWriter(dsn, settings, on_commit=v.on_commit) as w:
                    for f in [w.submit(ch) for ch in chunks]:
                        f.result()
                assert v.flush(3600)
            finally:
                v.close()
            state["last"] = v.stats

        r_alone = median_rate("writer alone", len(readings), alone, args.repeat, lambda: reset(False))
        r_hook = median_rate("writer + ingest hook (validated, caught up)", len(readings), with_hook, args.repeat,
                             lambda: reset(True))
        s = state["last"]
        print(f"  hook: {s.validated - n_m:,} validated in the timed part, {s.batches - 1:,} hook batches, "
              f"{s.seconds - state['cold_s']:.1f}s busy in the hook thread; first sight of {n_m:,} meters "
              f"(replay from the database) took {state['cold_s']:.1f}s before", flush=True)
        print(f"ratio writer+hook / writer alone: {r_hook / r_alone:.2f} (target >= 0.80)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meters", type=int, default=1_000_000)
    p.add_argument("--sample", type=int, default=2_000, help="meters for the per-meter baseline")
    p.add_argument("--chunk", type=int, default=100_000, help="meters per vee-run chunk")
    p.add_argument("--loaders", type=int, default=2)
    p.add_argument("--ingest-readings", type=int, default=1_000_000)
    p.add_argument("--ingest-meters", type=int, default=100_000)
    p.add_argument("--ingest-chunk", type=int, default=5_000, help="readings per writer submission")
    p.add_argument("--skip-batch", action="store_true")
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--reuse", metavar="NAME", help="build the part-1 database once under this name and keep it")
    add_server_args(p)
    args = p.parse_args()
    with server(args.dsn) as maint:
        if not args.skip_batch:
            part1(maint, args)
        if not args.skip_ingest:
            part2(maint, args)


if __name__ == "__main__":
    main()
