"""Benchmark: a handheld route upload imported (rows per second), against the naive way.

    python benchmarks/bench_route_import.py [--rows 1000000] [--meters 200000] [--sample 20000]

Builds a fresh database with ``--meters`` meters, writes a CSV upload of ``--rows`` rows (reads
spread over the last weeks, 1 % skip codes, 0.1 % bad rows), then, in the same run:

* import: ``ingest.handheld.import_upload`` (parse, vectorized checks, COPY to staging,
  INSERT … ON CONFLICT into ``reading`` and ``handheld_read``, bad rows recorded), whole file;
* baseline: the naive importer, csv.DictReader + per-row checks + one SELECT for the meter and
  one INSERT per row (``executemany``), on ``--sample`` rows.

Each figure is the median of ``--repeat`` runs (tables emptied between runs). Target: the
whole 1,000,000-row file in under 10 s.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_server_args, fresh_database, median_rate, server  # noqa: E402

from meterline.ingest import handheld  # noqa: E402
from meterline.store.company import get_company  # noqa: E402

TRUNCATE = "TRUNCATE reading, handheld_read, handheld_bad_row, handheld_import, dead_letter"


def make_meters(dsn: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        cid = c.execute("INSERT INTO company (code, name) VALUES ('bench', '基准水司') RETURNING id").fetchone()[0]
        c.execute("""INSERT INTO meter (company_id, serial, register_digits, protocol)
                     SELECT %s, 'WM' || lpad(g::text, 8, '0'), 6, 'handheld' FROM generate_series(1, %s) g""", [cid, n])


def make_upload(rows: int, meters: int, seed: int = 7) -> bytes:
    rnd = random.Random(seed)
    start = dt.datetime.now() - dt.timedelta(days=40)
    out = io.StringIO()
    out.write("meter,reader,read_at,register,skip_code,photo\n")
    for i in range(rows):
        m = i % meters + 1
        visit = i // meters
        ts = start + dt.timedelta(days=visit * 3, minutes=m % 600)
        r = rnd.random()
        if r < 0.001:
            out.write(f"WM{m:08d},R{m % 50:02d},{ts:%Y-%m-%d %H:%M},not-a-number,,\n")
        elif r < 0.011:
            out.write(f"WM{m:08d},R{m % 50:02d},{ts:%Y-%m-%d %H:%M},,no_access,\n")
        else:
            out.write(f"WM{m:08d},R{m % 50:02d},{ts:%Y-%m-%d %H:%M},{100 + visit * 3 + m % 97}.{m % 1000:03d},,"
                      f"IMG_{i:07d}.jpg\n")
    return out.getvalue().encode()


def naive_import(conn: psycopg.Connection, company_id: int, data: bytes) -> int:
    """What a first importer would do: row by row, one query per lookup and per insert."""
    good = []
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
        try:
            ts = dt.datetime.strptime(row["read_at"], "%Y-%m-%d %H:%M").replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
            value = int(Decimal(row["register"]) * 1000) if row["register"] else None
        except (ValueError, ArithmeticError):
            continue
        found = conn.execute("SELECT id, quantity FROM meter WHERE company_id = %s AND serial = %s",
                             [company_id, row["meter"]]).fetchone()
        if found is None:
            continue
        good.append((found[0], ts, value, found[1], row["reader"], row["skip_code"] or None, row["photo"] or None))
    with conn.cursor() as cur:
        imp = cur.execute("""INSERT INTO handheld_import (company_id, file_name, file_sha256, format)
                             VALUES (%s, 'naive', md5(random()::text), 'csv') RETURNING id""", [company_id]).fetchone()[0]
        cur.executemany(
            """INSERT INTO reading (meter_id, ts, value, received_at, company_id, quantity, source)
               VALUES (%s, %s, %s, now(), %s, %s, 7) ON CONFLICT DO NOTHING""",
            [(m, ts, v, company_id, q) for m, ts, v, q, *_ in good if v is not None])
        cur.executemany(
            """INSERT INTO handheld_read (company_id, meter_id, read_at, reader, value, skip_code, photo_ref, import_id, line)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0) ON CONFLICT DO NOTHING""",
            [(company_id, m, ts, rd, v, sk, ph, imp) for m, ts, v, _, rd, sk, ph in good])
    conn.commit()
    return len(good)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--meters", type=int, default=None, help="meters in the registry (default: rows / 5)")
    p.add_argument("--sample", type=int, default=20_000, help="rows for the naive baseline")
    add_server_args(p)
    args = p.parse_args()
    meters = args.meters or max(1, args.rows // 5)
    with server(args.dsn) as maintenance, fresh_database(maintenance, "bench_route", args.keep) as dsn:
        make_meters(dsn, meters)
        data = make_upload(args.rows, meters)
        sample = make_upload(min(args.sample, args.rows), meters, seed=11)
        print(f"upload: {args.rows:,} rows, {len(data) / 1e6:.1f} MB; {meters:,} meters", flush=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            company = get_company(conn, "bench")
            seconds: list[float] = []

            def run() -> None:
                t = time.perf_counter()
                report = handheld.import_upload(conn, company, data, name="route.csv")
                seconds.append(time.perf_counter() - t)
                assert report.rows_total == args.rows and report.readings_new > 0

            ours = median_rate("import_upload (whole file)", args.rows, run, args.repeat,
                               before=lambda: conn.execute(TRUNCATE))
            med = statistics.median(seconds)
            print(f"{'  whole file':<48} {med:>14.2f} s    target < 10 s for 1,000,000 rows: "
                  f"{'met' if med < 10 * args.rows / 1_000_000 else 'NOT met'} (scaled to --rows)", flush=True)
        with psycopg.connect(dsn) as conn:
            company_id = get_company(conn, "bench").id
            n = min(args.sample, args.rows)

            def naive() -> None:
                naive_import(conn, company_id, sample)

            def clear() -> None:
                conn.execute(TRUNCATE)
                conn.commit()

            base = median_rate(f"naive row-by-row importer ({n:,} rows)", n, naive, args.repeat, before=clear)
        print(f"ratio: import_upload is {ours / base:,.1f}x the naive importer's rate")


if __name__ == "__main__":
    main()
