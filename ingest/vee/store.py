"""Reading and writing what validation needs, in bulk.

Loading millions of readings row by row costs more in the client than in the server; here the
server packs each chunk (a range of meter ids) into one ``bytea`` of fixed-width big-endian
records (``string_agg`` of ``int8send`` …), which numpy reads with one ``frombuffer``. Writing
goes the other way: results are few (flagged readings, alerts, estimates) and are staged with
COPY and merged with one statement each.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import psycopg

from meterline.ingest.vee.localtime import to_us

PG_EPOCH_US = 946_684_800_000_000
#: SQL for a Unix-µs bigint as timestamptz (lists of integers cross the wire much cheaper than datetimes)
US_TO_TS = "('1970-01-01 00:00:00+00'::timestamptz + {} * interval '1 microsecond')"

_READING_DTYPE = np.dtype([("meter", ">i8"), ("ts", ">i8"), ("value", ">i8"), ("packed", ">i8"), ("received", ">i8")])
_METER_DTYPE = np.dtype([("id", ">i8"), ("quantity", ">i2"), ("modulus", ">i8"), ("multiplier", ">i4"),
                         ("active", ">i2"), ("in_service", ">i2"), ("group", ">i2"), ("book", ">i8"), ("account", ">i8"), ("combo", ">i4")])

GROUP_OF_PROTOCOL_SQL = "CASE m.protocol WHEN 'handheld' THEN 1 WHEN 'manual' THEN 2 ELSE 0 END"

READINGS_SQL = f"""
SELECT string_agg(int8send(r.meter_id) || timestamptz_send(r.ts) || int8send(r.value)
                  || int8send((r.status::bigint << 16) | (r.source::bigint << 8) | r.quantity::bigint)
                  || timestamptz_send(r.received_at), ''::bytea)
FROM reading r
WHERE r.company_id = %(company)s AND r.meter_id >= %(lo)s AND r.meter_id <= %(hi)s
  AND r.ts >= %(t0)s AND r.ts < %(t1)s"""

METERS_SQL = f"""
SELECT string_agg(int8send(m.id) || int2send(m.quantity) || int8send(m.register_modulus) || int4send(m.multiplier)
                  || int2send((m.status = 'active' AND coalesce(a.status, '') = 'active')::int::int2)
                  || int2send((m.status = 'active' AND coalesce(a.status, 'active') = 'active')::int::int2)
                  || int2send(({GROUP_OF_PROTOCOL_SQL})::int2)
                  || int8send(coalesce(a.book_id, -1)) || int8send(coalesce(m.account_id, -1))
                  || int4send(c.k::int), ''::bytea ORDER BY m.id)
FROM meter m
LEFT JOIN account a ON a.id = m.account_id
JOIN unnest(%(use_types)s::text[], %(sizes)s::text[]) WITH ORDINALITY AS c(use_type, size, k)
  ON c.use_type = coalesce(a.use_type, '') AND c.size = coalesce(m.size, '')
WHERE m.company_id = %(company)s AND m.id >= %(lo)s AND m.id <= %(hi)s"""


def _be(buf: bytes | memoryview | None, dtype: np.dtype) -> np.ndarray:
    return np.frombuffer(buf, dtype=dtype) if buf else np.zeros(0, dtype=dtype)


@dataclass(slots=True)
class Meters:
    """Facts of the meters of one chunk, sorted by id (arrays of one length)."""

    id: np.ndarray
    quantity: np.ndarray
    modulus: np.ndarray
    multiplier: np.ndarray
    active: np.ndarray  # occupied: meter and its account active (stuck rule)
    in_service: np.ndarray  # meter active, and its account if it has one (missing reads, estimation)
    group: np.ndarray  # 0 remote, 1 handheld, 2 manual (from meter.protocol)
    book: np.ndarray  # -1: none
    account: np.ndarray  # -1: none
    combo: np.ndarray  # index into the run's (use_type, size) combos

    def __len__(self) -> int:
        return len(self.id)


def combos(conn: psycopg.Connection, company_id: int) -> list[tuple[str, str]]:
    """The (use type, size) pairs of a company's meters ('' for none)."""
    rows = conn.execute(
        """SELECT DISTINCT coalesce(a.use_type, ''), coalesce(m.size, '')
           FROM meter m LEFT JOIN account a ON a.id = m.account_id WHERE m.company_id = %s ORDER BY 1, 2""",
        [company_id]).fetchall()
    return [(u, s) for u, s in rows]


def meter_ids(conn: psycopg.Connection, company_id: int) -> np.ndarray:
    buf = conn.execute("SELECT string_agg(int8send(id), ''::bytea ORDER BY id) FROM meter WHERE company_id = %s",
                       [company_id], binary=True).fetchone()[0]
    return np.frombuffer(buf, dtype=">i8").astype(np.int64) if buf else np.zeros(0, dtype=np.int64)


def load_meters(conn: psycopg.Connection, company_id: int, lo: int, hi: int,
                combo_list: Sequence[tuple[str, str]]) -> Meters:
    buf = conn.execute(METERS_SQL, {"company": company_id, "lo": lo, "hi": hi,
                                    "use_types": [c[0] for c in combo_list], "sizes": [c[1] for c in combo_list]},
                       binary=True).fetchone()[0]
    a = _be(buf, _METER_DTYPE)
    return Meters(
        id=a["id"].astype(np.int64), quantity=a["quantity"].astype(np.int64), modulus=a["modulus"].astype(np.int64),
        multiplier=a["multiplier"].astype(np.int64), active=a["active"].astype(bool),
        in_service=a["in_service"].astype(bool),
        group=a["group"].astype(np.int64), book=a["book"].astype(np.int64), account=a["account"].astype(np.int64),
        combo=a["combo"].astype(np.int64) - 1,
    )


@dataclass(slots=True)
class Readings:
    """Readings of one chunk as columns (sorted by meter, then time)."""

    meter: np.ndarray
    ts: np.ndarray  # Unix µs
    value: np.ndarray
    status: np.ndarray
    source: np.ndarray
    quantity: np.ndarray
    received: np.ndarray

    def __len__(self) -> int:
        return len(self.meter)

    def take(self, idx: np.ndarray) -> "Readings":
        return Readings(*(getattr(self, f)[idx] for f in self.__slots__))  # type: ignore[attr-defined]


def fetch_readings_blob(conn: psycopg.Connection, company_id: int, lo: int, hi: int,
                        t0: dt.datetime, t1: dt.datetime) -> bytes | None:
    """The server-packed readings of meters lo..hi in [t0, t1) (runs in a loader thread)."""
    row = conn.execute(READINGS_SQL, {"company": company_id, "lo": lo, "hi": hi, "t0": t0, "t1": t1},
                       binary=True).fetchone()
    return row[0] if row else None


#: reads before a replay window loaded besides it: a meter read monthly (a walk-by book) has no
#: read in ``history_days`` before a new one, yet its previous reads are what the new one is judged by
REPLAY_READS_BEFORE = 3

REPLAY_SQL = f"""
SELECT string_agg(int8send(r.meter_id) || timestamptz_send(r.ts) || int8send(r.value)
                  || int8send((r.status::bigint << 16) | (r.source::bigint << 8) | r.quantity::bigint)
                  || timestamptz_send(r.received_at), ''::bytea)
FROM unnest(%s::bigint[], %s::smallint[], %s::bigint[], %s::bigint[]) AS x(meter_id, quantity, since, upto)
CROSS JOIN LATERAL (
    SELECT coalesce(min(p.ts), {US_TO_TS.format('x.since')}) AS lo
      FROM (SELECT r0.ts FROM reading r0
             WHERE r0.meter_id = x.meter_id AND r0.quantity = x.quantity AND r0.ts < {US_TO_TS.format('x.since')}
             ORDER BY r0.ts DESC LIMIT {REPLAY_READS_BEFORE}) p) b
JOIN reading r ON r.meter_id = x.meter_id AND r.quantity = x.quantity
 AND r.ts >= b.lo AND r.ts <= {US_TO_TS.format('x.upto')}"""


def fetch_meter_windows(conn: psycopg.Connection, meters: list[int], quantities: list[int], since_us: list[int],
                        upto_us: list[int]) -> Readings:
    """The readings of each meter in its own window [since, upto] (µs) and the
    :data:`REPLAY_READS_BEFORE` reads before it, packed like a chunk."""
    row = conn.execute(REPLAY_SQL, [meters, quantities, since_us, upto_us], binary=True).fetchone()
    return parse_readings(row[0] if row else None)


def parse_readings(buf: bytes | None) -> Readings:
    a = _be(buf, _READING_DTYPE)
    meter = a["meter"].astype(np.int64)
    ts = a["ts"].astype(np.int64)
    ts += PG_EPOCH_US
    if len(meter) > 1 and not _ordered(meter, ts):
        # rows come in storage order (by time, then meter): a stable sort by meter keeps each
        # meter's reads in time order (merging the runs is cheap); else sort by both
        order = np.argsort(meter, kind="stable")
        if not _ordered(meter[order], ts[order]):
            order = np.lexsort((ts, meter))
        a = a[order]
        meter, ts = meter[order], ts[order]
    packed = a["packed"].astype(np.int64)
    received = a["received"].astype(np.int64)
    received += PG_EPOCH_US
    return Readings(meter=meter, ts=ts, value=a["value"].astype(np.int64), status=packed >> 16,
                    source=(packed >> 8) & 0xFF, quantity=packed & 0xFF, received=received)


def _ordered(meter: np.ndarray, ts: np.ndarray) -> bool:
    dm = np.diff(meter)
    if (dm < 0).any():
        return False
    same = dm == 0
    return not (same & (ts[1:] <= ts[:-1])).any()


def load_events(conn: psycopg.Connection, company_id: int, lo: int, hi: int) -> dict[int, tuple[np.ndarray, ...]]:
    """Replacement events per meter: (installed_at µs, final register of the removed device,
    initial register of the new one), from ``meter_installation``. A replaced device without a
    final register shows as final -1 (the caller records the meter as failed)."""
    rows = conn.execute(
        """SELECT meter_id, installed_at, initial_register, final_register,
                  lag(final_register) OVER w, lag(id) OVER w, id
           FROM meter_installation
           WHERE company_id = %s AND meter_id >= %s AND meter_id <= %s
           WINDOW w AS (PARTITION BY meter_id ORDER BY installed_at)
           ORDER BY meter_id, installed_at""", [company_id, lo, hi]).fetchall()
    out: dict[int, list[tuple[int, int, int]]] = {}
    for meter_id, installed_at, initial, _final, prev_final, prev_id, _id in rows:
        if prev_id is None:
            continue
        out.setdefault(meter_id, []).append((to_us(installed_at), -1 if prev_final is None else prev_final, initial))
    return {m: (np.array([e[0] for e in ev], dtype=np.int64), np.array([e[1] for e in ev], dtype=np.int64),
                np.array([e[2] for e in ev], dtype=np.int64)) for m, ev in out.items()}


def load_reviews(conn: psycopg.Connection, company_id: int, lo: int, hi: int, t0: dt.datetime,
                 t1: dt.datetime) -> list[tuple[int, dt.datetime, int, str, int | None]]:
    return conn.execute(
        """SELECT meter_id, ts, quantity, review, corrected_value FROM reading_validation
           WHERE company_id = %s AND meter_id >= %s AND meter_id <= %s AND ts >= %s AND ts < %s
             AND review IS NOT NULL""", [company_id, lo, hi, t0, t1]).fetchall()


# -- writing -------------------------------------------------------------------------------

STAGE_VALIDATION = """CREATE TEMP TABLE IF NOT EXISTS vee_stage_validation (
    meter_id bigint, ts timestamptz, quantity smallint, company_id integer, flags text[], auto_state text,
    consumption bigint, detail jsonb) ON COMMIT DELETE ROWS"""


@dataclass(slots=True)
class ValidationRows:
    """Readings to write verdicts for (flags as rule-code lists)."""

    meter: list[int]
    ts: list[dt.datetime]
    quantity: list[int]
    flags: list[list[str]]
    state: list[str]
    consumption: list[int | None]
    detail: list[dict[str, Any]]

    @classmethod
    def empty(cls) -> "ValidationRows":
        return cls([], [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.meter)


def write_validation(conn: psycopg.Connection, company_id: int, rows: ValidationRows, run_id: int | None,
                     clear: tuple[int, int, dt.datetime, dt.datetime] | None = None,
                     clear_keys: tuple[list[int], list[int], list[int]] | None = None) -> None:
    """Upsert verdicts in one transaction (a savepoint inside the caller's), keeping people's
    review decisions.

    ``clear`` = (lo, hi, t0, t1): readings of meters lo..hi in [t0, t1) were all re-evaluated;
    verdicts there not among ``rows`` are removed (or, where a person reviewed, cleared of flags).
    ``clear_keys`` = (meter ids, Unix µs timestamps, quantities) does the same for listed readings.
    """
    with conn.transaction():
        conn.execute(STAGE_VALIDATION)
        cur = conn.cursor()
        if len(rows):
            with cur.copy("COPY vee_stage_validation (meter_id, ts, quantity, company_id, flags, auto_state, "
                          "consumption, detail) FROM STDIN") as copy:
                for i in range(len(rows)):
                    copy.write_row((rows.meter[i], rows.ts[i], rows.quantity[i], company_id, rows.flags[i],
                                    rows.state[i], rows.consumption[i], json.dumps(rows.detail[i])))
        not_staged = ("NOT EXISTS (SELECT 1 FROM vee_stage_validation s WHERE s.meter_id = v.meter_id "
                      "AND s.ts = v.ts AND s.quantity = v.quantity)")
        if clear is not None:
            lo, hi, t0, t1 = clear
            where = (f"v.company_id = %s AND v.meter_id >= %s AND v.meter_id <= %s AND v.ts >= %s AND v.ts < %s "
                     f"AND {not_staged}")
            args = [company_id, lo, hi, t0, t1]
            cur.execute(f"DELETE FROM reading_validation v WHERE {where} AND v.review IS NULL", args)
            cur.execute(f"UPDATE reading_validation v SET flags = '{{}}', auto_state = 'valid', detail = '{{}}', "
                        f"validated_at = now(), run_id = %s WHERE {where} AND v.review IS NOT NULL "
                        f"AND v.auto_state <> 'valid'", [run_id, *args])
        if clear_keys is not None and len(clear_keys[0]):
            keys = (f"(SELECT u.meter_id, {US_TO_TS.format('u.us')} AS ts, u.quantity "
                    "FROM unnest(%s::bigint[], %s::bigint[], %s::smallint[]) AS u(meter_id, us, quantity)) AS k")
            match = f"v.meter_id = k.meter_id AND v.ts = k.ts AND v.quantity = k.quantity AND {not_staged}"
            cur.execute(f"DELETE FROM reading_validation v USING {keys} WHERE {match} AND v.review IS NULL",
                        list(clear_keys))
            cur.execute(f"UPDATE reading_validation v SET flags = '{{}}', auto_state = 'valid', detail = '{{}}', "
                        f"validated_at = now(), run_id = %s FROM {keys} WHERE {match} AND v.review IS NOT NULL "
                        f"AND v.auto_state <> 'valid'", [run_id, *clear_keys])
        if len(rows):
            cur.execute(
                """INSERT INTO reading_validation AS v (meter_id, ts, quantity, company_id, flags, auto_state,
                                                       consumption, detail, run_id, validated_at)
                   SELECT meter_id, ts, quantity, company_id, flags, auto_state, consumption, detail, %s, now()
                   FROM vee_stage_validation
                   ON CONFLICT (meter_id, ts, quantity) DO UPDATE SET
                       flags = EXCLUDED.flags, auto_state = EXCLUDED.auto_state, consumption = EXCLUDED.consumption,
                       detail = EXCLUDED.detail, run_id = EXCLUDED.run_id, validated_at = now()
                   WHERE (v.flags, v.auto_state, v.consumption, v.detail)
                         IS DISTINCT FROM (EXCLUDED.flags, EXCLUDED.auto_state, EXCLUDED.consumption, EXCLUDED.detail)""",
                [run_id])
            cur.execute("DELETE FROM vee_stage_validation")


def record_failure(conn: psycopg.Connection, run_id: int | None, company_id: int | None, meter_id: int | None,
                   stage: str, error: BaseException | str, detail: dict[str, Any] | None = None) -> None:
    conn.execute(
        "INSERT INTO vee_failure (run_id, company_id, meter_id, stage, error, detail) VALUES (%s, %s, %s, %s, %s, %s)",
        [run_id, company_id, meter_id, stage, f"{type(error).__name__}: {error}" if isinstance(error, BaseException)
         else str(error), json.dumps(detail or {})])
