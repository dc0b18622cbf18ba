"""Invariants of validation, checked with generated meter histories against a real database:

* validation never changes a raw reading;
* the ingest path, fed the same readings in any order and batching, reaches the batch run's
  verdicts on the period's readings;
* the SQL consumption function equals the array one.
"""

from __future__ import annotations

import datetime as dt
import random

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.ingest.model import MeterStatus, Reading, Source
from meterline.ingest.vee.batch import run_period
from meterline.ingest.vee.config import load_config
from meterline.ingest.vee.hook import IngestValidator
from meterline.ingest.writer import write_readings
from meterline.store.company import Company
from meterline.store.consumption import Kind, consumption

CONFIG = load_config()
START = dt.datetime(2026, 9, 30, 16, 0, tzinfo=dt.timezone.utc)  # 2026-10-01 00:00 Asia/Shanghai
MODULUS = 100_000_000  # five-digit m³ register
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# one step of a meter's history: how the register moves and what the meter says
step = st.tuples(
    st.sampled_from(["normal", "normal", "normal", "zero", "spike", "drop", "back", "wrap", "stuck"]),
    st.integers(0, 600),                                   # litres in a normal step
    st.sampled_from([0, 0, 0, int(MeterStatus.LEAK), int(MeterStatus.TAMPER), int(MeterStatus.LOW_BATTERY)]),
    st.sampled_from([Source.LORAWAN, Source.LORAWAN, Source.HANDHELD, Source.MANUAL]),
    st.sampled_from([24, 24, 24, 6, 1, 72]),                # hours to the next reading
)


def _history(steps: list[tuple], start_value: int) -> list[tuple[dt.datetime, int, int, Source]]:
    out = []
    v, t = start_value, START
    for kind, litres, status, source, hours in steps:
        if kind == "normal":
            v = (v + litres) % MODULUS
        elif kind == "spike":
            out.append((t, (v + 15_429_224) % MODULUS, status, source))
            t += dt.timedelta(hours=hours)
            continue  # one telegram off, the register itself did not move
        elif kind == "zero":
            out.append((t, 0, status, source))
            t += dt.timedelta(hours=hours)
            continue
        elif kind == "drop":
            v = max(0, v - 50)
        elif kind == "back":
            v = max(0, v - 400_000)
        elif kind == "wrap":
            v = (MODULUS - 300 + litres) % MODULUS
        out.append((t, v, status, source))
        t += dt.timedelta(hours=hours)
        if t > START + dt.timedelta(days=33):
            break
    return out


def _setup(conn: psycopg.Connection, company_id: int, n: int) -> list[int]:
    conn.execute("""INSERT INTO use_type VALUES (%s, 'residential', '居民') ON CONFLICT DO NOTHING""", [company_id])
    ids = []
    for i in range(n):
        ids.append(conn.execute(
            """INSERT INTO meter (company_id, serial, size, protocol) VALUES (%s, %s, 'DN15', 'lorawan')
               ON CONFLICT (company_id, serial) DO UPDATE SET size = EXCLUDED.size RETURNING id""",
            [company_id, f"P{i}"]).fetchone()[0])
    return ids


def _reset(conn: psycopg.Connection) -> None:
    conn.execute("""TRUNCATE reading, reading_validation, reading_estimate, alert_delivery, alert_event, alert,
                    vee_failure, vee_run""")


def _raw(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("""SELECT meter_id, ts, quantity, value, status, source, received_at, committed_at,
                                  company_id, source_ref FROM reading ORDER BY 1, 2, 3""").fetchall()


def _verdicts(conn: psycopg.Connection) -> dict[tuple, tuple]:
    rows = conn.execute("""SELECT meter_id, ts, flags, auto_state FROM reading_validation
                           WHERE ts >= '2026-09-30 16:00+00' AND ts < '2026-10-31 16:00+00'""").fetchall()
    return {(m, t): (tuple(sorted(f)), s) for m, t, f, s in rows if f or s != "valid"}


def _readings(meters: list[int], histories: list[list[tuple]]) -> list[Reading]:
    return [Reading(ts=t, value=v, meter_id=m, source=src, status=stt, received_at=t + dt.timedelta(minutes=3))
            for m, h in zip(meters, histories) for t, v, stt, src in h]


@SETTINGS
@given(histories=st.lists(st.lists(step, min_size=2, max_size=45), min_size=1, max_size=3), seed=st.integers(0, 99))
def test_validation_never_changes_a_raw_value(histories, seed: int, conn: psycopg.Connection, db_dsn: str,
                                              company: Company) -> None:
    _reset(conn)
    meters = _setup(conn, company.id, len(histories))
    hs = [_history(h, 1_000_000 * (i + 1)) for i, h in enumerate(histories)]
    readings = _readings(meters, hs)
    write_readings(conn, readings, future_tolerance_s=10**9)
    before = _raw(conn)
    run_period(db_dsn, company.id, "acme", "Asia/Shanghai", "2026-10", CONFIG, chunk_meters=2)
    v = IngestValidator(db_dsn, CONFIG)
    try:
        rnd = random.Random(seed)
        rnd.shuffle(readings)
        for i in range(0, len(readings), 7):
            v.validate(readings[i:i + 7])
    finally:
        v.close()
    assert _raw(conn) == before
    # every verdict belongs to a stored reading; effective values of untouched reads are the raw ones
    assert conn.execute("""SELECT count(*) FROM reading_validation v LEFT JOIN reading r
                           USING (meter_id, ts, quantity) WHERE r.meter_id IS NULL""").fetchone() == (0,)
    assert conn.execute("""SELECT count(*) FROM reading_effective e JOIN reading r USING (meter_id, ts, quantity)
                           WHERE NOT e.estimated AND e.value <> r.value""").fetchone() == (0,)


@SETTINGS
@given(histories=st.lists(st.lists(step, min_size=2, max_size=40), min_size=1, max_size=3),
       seed=st.integers(0, 99), batch=st.sampled_from([1, 3, 50]))
def test_ingest_path_reaches_the_batch_verdicts(histories, seed: int, batch: int, conn: psycopg.Connection,
                                               db_dsn: str, company: Company) -> None:
    _reset(conn)
    meters = _setup(conn, company.id, len(histories))
    readings = _readings(meters, [_history(h, 1_000_000 * (i + 1)) for i, h in enumerate(histories)])
    write_readings(conn, readings, future_tolerance_s=10**9)
    run_period(db_dsn, company.id, "acme", "Asia/Shanghai", "2026-10", CONFIG)
    by_batch = _verdicts(conn)
    if any(s[0] == "spike" for h in histories for s in h[1:5]):
        assert by_batch, "a corrupt telegram in the period must be flagged"
    conn.execute("TRUNCATE reading_validation")
    rnd = random.Random(seed)
    order = sorted(readings, key=lambda r: r.ts) if seed % 2 else rnd.sample(readings, len(readings))
    v = IngestValidator(db_dsn, CONFIG)
    try:
        for i in range(0, len(order), batch):
            v.validate(order[i:i + batch])
    finally:
        v.close()
    assert _verdicts(conn) == by_batch


@pytest.fixture
def plain(conn: psycopg.Connection) -> psycopg.Connection:
    return conn


pair = st.tuples(st.integers(0, 10**5 - 1), st.integers(0, 10**5 - 1), st.sampled_from([1, 10, 100]),
                 st.one_of(st.none(), st.tuples(st.integers(0, 10**5 - 1), st.integers(0, 10**5 - 1),
                                                st.integers(0, 500))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(pair, min_size=1, max_size=40), digits=st.sampled_from([3, 4, 5]))
def test_sql_and_array_consumption_agree(pairs, digits: int, plain: psycopg.Connection) -> None:
    modulus = 10**digits
    prev = [p[0] % modulus for p in pairs]
    cur = [p[1] % modulus for p in pairs]
    mult = [p[2] for p in pairs]
    fo = [-1 if p[3] is None else p[3][0] % modulus for p in pairs]
    ini = [0 if p[3] is None else p[3][1] % modulus for p in pairs]
    btw = [0 if p[3] is None else p[3][2] for p in pairs]
    cons, kinds = consumption(prev, cur, modulus, mult, fo, ini, btw)
    rows = plain.execute(
        """SELECT c.consumption, c.kind FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::bigint[], %s::bigint[],
                                                   %s::bigint[]) WITH ORDINALITY AS x(p, c, m, f, i, b, n)
           CROSS JOIN LATERAL meterline_consumption(x.p, x.c, %s, x.m, nullif(x.f, -1), x.i, x.b) c
           ORDER BY x.n""", [prev, cur, mult, fo, ini, btw, modulus]).fetchall()
    assert [(int(c), Kind(k).name.lower()) for c, k in zip(cons, kinds)] == [(c, k) for c, k in rows]
