"""Estimating a missing period-end read.

A meter needs an estimate when no acceptable real read lies within its period-end window
(``period_end_before_days`` / ``period_end_after_days`` around the period boundary). Methods,
tried in the configured order:

* ``interpolation``: linear in time between the last acceptable read before the boundary and the
  first after it (at most ``bracket_max_days`` later), through a rollover if there was one; not
  across a device replacement or a reset;
* ``same_period_last_year``: the meter's average daily use between reads near the same
  period's start and end a year earlier, carried forward from the last acceptable read;
* ``average_last_periods``: its average daily use from a read near the boundary
  ``average_periods`` months back up to the last acceptable read, carried forward likewise.

The estimate is stored at the boundary instant (``reading_estimate``, method and basis
recorded) and is part of ``reading_effective`` until an acceptable real read inside its window
exists: the view leaves it out from then on, and validation marks it superseded. A person's
override (method ``override``) is never re-estimated.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import psycopg

from meterline.ingest.vee.config import VeeConfig
from meterline.ingest.vee.localtime import period_bounds, shift_period, to_us
from meterline.store.consumption import Kind, consumption, replacement_terms

DAY = dt.timedelta(days=1)
_ACCEPTED = ("LEFT JOIN reading_validation v ON v.meter_id = r.meter_id AND v.ts = r.ts AND v.quantity = r.quantity "
             "WHERE r.meter_id = x.meter_id AND r.quantity = x.quantity "
             "AND (v.meter_id IS NULL OR meterline_reading_accepted(v.auto_state, v.review))")


@dataclass(frozen=True, slots=True)
class Candidate:
    meter_id: int
    quantity: int
    modulus: int
    multiplier: int
    before_days: float
    after_days: float


@dataclass(slots=True)
class EstimationResult:
    estimated: list[tuple[int, int, str]] = field(default_factory=list)  # (meter, value, method)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (meter, reason)
    kept_override: int = 0


def _side(conn: psycopg.Connection, cands: Sequence[Candidate], at: dt.datetime, before: bool,
          reach: dt.timedelta) -> dict[int, tuple[dt.datetime, int]]:
    """Last acceptable read before ``at`` (or first after it) within ``reach``, per meter."""
    if not cands:
        return {}
    cmp, order, bound = ("<", "DESC", at - reach) if before else (">", "ASC", at + reach)
    rng = f"r.ts {cmp} %(at)s AND r.ts {'>=' if before else '<='} %(bound)s"
    rows = conn.execute(
        f"""SELECT x.meter_id, y.ts, y.value
            FROM unnest(%(m)s::bigint[], %(q)s::smallint[]) AS x(meter_id, quantity)
            JOIN LATERAL (SELECT r.ts, coalesce(v.corrected_value, r.value) AS value FROM reading r {_ACCEPTED}
                          AND {rng} ORDER BY r.ts {order} LIMIT 1) y ON true""",
        {"m": [c.meter_id for c in cands], "q": [c.quantity for c in cands], "at": at, "bound": bound}).fetchall()
    return {m: (ts, v) for m, ts, v in rows}


def _nearest(conn: psycopg.Connection, cands: Sequence[Candidate], at: dt.datetime,
             window: dt.timedelta) -> dict[int, tuple[dt.datetime, int]]:
    """The acceptable read nearest ``at`` within ± window, per meter."""
    if not cands:
        return {}
    rows = conn.execute(
        f"""SELECT x.meter_id, y.ts, y.value
            FROM unnest(%(m)s::bigint[], %(q)s::smallint[]) AS x(meter_id, quantity)
            JOIN LATERAL (SELECT r.ts, coalesce(v.corrected_value, r.value) AS value FROM reading r {_ACCEPTED}
                          AND r.ts >= %(lo)s AND r.ts <= %(hi)s
                          ORDER BY abs(extract(epoch FROM r.ts - %(at)s)), r.ts LIMIT 1) y ON true""",
        {"m": [c.meter_id for c in cands], "q": [c.quantity for c in cands], "at": at, "lo": at - window,
         "hi": at + window}).fetchall()
    return {m: (ts, v) for m, ts, v in rows}


def _installations(conn: psycopg.Connection, meter_ids: Sequence[int]) -> tuple[np.ndarray, ...]:
    rows = conn.execute(
        """SELECT meter_id, installed_at, initial_register, removed_at, final_register FROM meter_installation
           WHERE meter_id = ANY(%s)""", [list(meter_ids)]).fetchall()
    if not rows:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, z, z
    return (np.array([r[0] for r in rows], dtype=np.int64), np.array([to_us(r[1]) for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.int64),
            np.array([-1 if r[3] is None else to_us(r[3]) for r in rows], dtype=np.int64),
            np.array([-1 if r[4] is None else r[4] for r in rows], dtype=np.int64))


def _pair_consumption(c: Candidate, a: tuple[dt.datetime, int], b: tuple[dt.datetime, int], inst, config: VeeConfig,
                      multiplier: int | None = None) -> tuple[int, int]:
    fo, ini, btw = replacement_terms(np.array([c.meter_id]), np.array([to_us(a[0])]), np.array([to_us(b[0])]),
                                     *inst, np.array([c.modulus]))
    p = config.defaults
    cons, kind = consumption([a[1]], [b[1]], c.modulus, c.multiplier if multiplier is None else multiplier,
                             fo, ini, btw, reverse_max=p.reverse_max, rollover_window=p.rollover_window)
    return int(cons[0]), int(kind[0])


def estimate(conn: psycopg.Connection, company_id: int, period: str, tz: str, cands: Sequence[Candidate],
             config: VeeConfig, run_id: int | None = None) -> EstimationResult:
    """Estimate the period-end read of each candidate and store it (in the caller's transaction)."""
    res = EstimationResult()
    if not cands:
        return res
    start, end = period_bounds(period, tz)
    est = config.estimation
    overridden = {m for (m,) in conn.execute(
        "SELECT meter_id FROM reading_estimate WHERE ts = %s AND method = 'override' AND meter_id = ANY(%s)",
        [end, [c.meter_id for c in cands]]).fetchall()}
    todo = [c for c in cands if c.meter_id not in overridden]
    res.kept_override = len(cands) - len(todo)
    before = _side(conn, todo, end, True, dt.timedelta(days=400))
    after = _side(conn, todo, end, False, dt.timedelta(days=est.bracket_max_days))
    inst = _installations(conn, [c.meter_id for c in todo])
    window = dt.timedelta(days=est.basis_window_days)
    history: dict[str, tuple[dict, dict]] = {}
    if "same_period_last_year" in est.methods:
        ly_start, ly_end = period_bounds(shift_period(period, -12), tz)
        history["same_period_last_year"] = (_nearest(conn, todo, ly_start, window), _nearest(conn, todo, ly_end, window))
    if "average_last_periods" in est.methods:
        back, _ = period_bounds(shift_period(period, -(est.average_periods - 1)), tz)
        history["average_last_periods"] = (_nearest(conn, todo, back, window), {})
    rows: list[tuple[Any, ...]] = []
    for c in todo:
        a = before.get(c.meter_id)
        b = after.get(c.meter_id)
        chosen: tuple[int, str, dict[str, Any]] | None = None
        for method in est.methods:
            if a is None:
                break
            if method == "interpolation" and b is not None:
                adv, kind = _pair_consumption(c, a, b, inst, config, multiplier=1)
                if kind in (Kind.FORWARD, Kind.ROLLOVER, Kind.REVERSE):
                    frac = (end - a[0]) / (b[0] - a[0])
                    value = (a[1] + int(round(adv * frac))) % c.modulus
                    chosen = (value, method, {"before": [a[0].isoformat(), a[1]], "after": [b[0].isoformat(), b[1]]})
                    break
            elif method in history:
                h0, h1 = history[method]
                p0 = h0.get(c.meter_id)
                p1 = h1.get(c.meter_id) if method == "same_period_last_year" else a
                if p0 is None or p1 is None or p1[0] <= p0[0]:
                    continue
                use, kind = _pair_consumption(c, p0, p1, inst, config)
                if kind == Kind.RESET or use < 0:
                    continue
                per_day = use / ((p1[0] - p0[0]) / DAY)
                days = (end - a[0]) / DAY
                value = (a[1] + int(round(per_day * days / c.multiplier))) % c.modulus
                chosen = (value, method, {"from": [p0[0].isoformat(), p0[1]], "to": [p1[0].isoformat(), p1[1]],
                                          "per_day": round(per_day, 3), "carried_from": [a[0].isoformat(), a[1]],
                                          "days": round(days, 3)})
                break
        if chosen is None:
            res.failed.append((c.meter_id, "no acceptable read before the period end" if a is None
                               else "no basis: no read after the period end and no usable history"))
            continue
        value, method, basis = chosen
        res.estimated.append((c.meter_id, value, method))
        rows.append((c.meter_id, end, c.quantity, company_id, period, value, method, json.dumps(basis),
                     dt.timedelta(days=c.before_days), dt.timedelta(days=c.after_days), run_id))
    if rows:
        conn.cursor().executemany(
            """INSERT INTO reading_estimate AS e (meter_id, ts, quantity, company_id, period, value, method, basis,
                                                 window_before, window_after, run_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (meter_id, ts, quantity) DO UPDATE SET
                   value = EXCLUDED.value, method = EXCLUDED.method, basis = EXCLUDED.basis,
                   window_before = EXCLUDED.window_before, window_after = EXCLUDED.window_after,
                   run_id = EXCLUDED.run_id, superseded_at = NULL, superseded_by_ts = NULL, created_at = now()
               WHERE e.method <> 'override'
                 AND (e.value, e.method, e.superseded_at IS NULL) IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.method, true)""",
            rows)
    return res


def supersede(conn: psycopg.Connection, company_id: int, boundary: dt.datetime, meter_ids: Sequence[int] = (),
              meter_range: tuple[int, int] | None = None, keep: Sequence[int] = ()) -> int:
    """Mark estimates at ``boundary`` superseded where an acceptable real read inside the window exists.

    Scope: the listed meters, or the meters of ``meter_range`` except ``keep``.
    """
    scope, args = ("e.meter_id = ANY(%s)", [list(meter_ids)]) if meter_range is None else (
        "e.meter_id >= %s AND e.meter_id <= %s AND NOT (e.meter_id = ANY(%s))", [*meter_range, list(keep)])
    rows = conn.execute(
        f"""UPDATE reading_estimate e SET superseded_at = now(), superseded_by_ts = y.ts
            FROM reading_estimate x
            JOIN LATERAL (SELECT r.ts FROM reading r {_ACCEPTED}
                          AND r.ts >= x.ts - x.window_before AND r.ts <= x.ts + x.window_after
                          ORDER BY abs(extract(epoch FROM r.ts - x.ts)) LIMIT 1) y ON true
            WHERE e.meter_id = x.meter_id AND e.ts = x.ts AND e.quantity = x.quantity
              AND e.company_id = %s AND e.ts = %s AND e.superseded_at IS NULL AND {scope}
            RETURNING e.meter_id""", [company_id, boundary, *args]).fetchall()
    return len(rows)


def supersede_for_reads(conn: psycopg.Connection, meter: Sequence[int], ts: Sequence[dt.datetime]) -> int:
    """Mark estimates superseded by the given (acceptable) real reads (the ingest path)."""
    if not meter:
        return 0
    rows = conn.execute(
        """UPDATE reading_estimate e SET superseded_at = now(), superseded_by_ts = k.ts
           FROM unnest(%s::bigint[], %s::timestamptz[]) AS k(meter_id, ts)
           WHERE e.meter_id = k.meter_id AND e.superseded_at IS NULL
             AND k.ts >= e.ts - e.window_before AND k.ts <= e.ts + e.window_after
           RETURNING e.meter_id""", [list(meter), list(ts)]).fetchall()
    return len(rows)
