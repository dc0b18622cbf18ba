"""Consumption of every meter of the master–sub trees (总分表) over a period, once for everyone.

Validation judges each master against the sum of its direct sub-meters (``master_sub_imbalance``,
``subs_exceed_master``) and the non-revenue-water report (产销差) shows the same figures:
both take them from :func:`tree_consumption`. A meter's consumption is the advance between its
effective reads nearest the period's start and end (within the period-end window; an actual read
preferred to an estimate at the same distance), through :mod:`meterline.store.consumption`
(multiplier, rollover, replacement); ``None`` when a read is missing or the register reset.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import psycopg

from meterline.ingest.vee import estimate as E
from meterline.ingest.vee.localtime import to_us
from meterline.store.consumption import consumption, replacement_terms

_SQL = """
WITH tree AS (
    SELECT m.id, m.parent_meter_id, m.quantity, m.register_modulus, m.multiplier FROM meter m
    WHERE m.company_id = %(c)s AND m.status = 'active'
      AND (m.parent_meter_id IS NOT NULL
           OR EXISTS (SELECT 1 FROM meter s WHERE s.parent_meter_id = m.id AND s.status = 'active')))
SELECT t.id, t.parent_meter_id, t.register_modulus, t.multiplier, a.ts, a.value, b.ts, b.value
FROM tree t
LEFT JOIN LATERAL (SELECT r.ts, r.value FROM reading_effective r
                   WHERE r.meter_id = t.id AND r.quantity = t.quantity
                     AND r.ts >= %(s)s - %(wb)s AND r.ts <= %(s)s + %(wa)s
                   ORDER BY abs(extract(epoch FROM r.ts - %(s)s)), r.estimated LIMIT 1) a ON true
LEFT JOIN LATERAL (SELECT r.ts, r.value FROM reading_effective r
                   WHERE r.meter_id = t.id AND r.quantity = t.quantity
                     AND r.ts >= %(e)s - %(wb)s AND r.ts <= %(e)s + %(wa)s
                   ORDER BY abs(extract(epoch FROM r.ts - %(e)s)), r.estimated LIMIT 1) b ON true"""


@dataclass(frozen=True, slots=True)
class Trees:
    use: dict[int, int | None]         #: meter id -> consumption over the period (base units × multiplier)
    children: dict[int, list[int]]     #: master meter id -> its direct sub-meters (active)
    parent: dict[int, int | None]      #: meter id -> its master (None for a root)


def tree_consumption(conn: psycopg.Connection, company_id: int, start: dt.datetime, end: dt.datetime, *,
                     before_days: float, after_days: float, reverse_max: int, rollover_window: float) -> Trees:
    """Consumption of the active meters of every master–sub tree of the company between ``start`` and ``end``.

    Raises ``ValueError`` when the installation history cannot be placed (the caller records it).
    """
    rows = conn.execute(_SQL, {"c": company_id, "s": start, "e": end, "wb": dt.timedelta(days=before_days),
                               "wa": dt.timedelta(days=after_days)}).fetchall()
    children: dict[int, list[int]] = {}
    parent: dict[int, int | None] = {}
    for x in rows:
        parent[x[0]] = x[1]
        if x[1] is not None:
            children.setdefault(x[1], []).append(x[0])
    if not rows:
        return Trees({}, {}, {})
    ids = np.array([x[0] for x in rows], dtype=np.int64)
    has = np.array([x[4] is not None and x[6] is not None for x in rows])
    none = np.iinfo(np.int64).min
    cons = np.full(len(rows), none, dtype=np.int64)
    hi = np.flatnonzero(has)
    if len(hi):
        inst = E._installations(conn, ids.tolist())
        t_a = np.array([to_us(rows[i][4]) for i in hi], dtype=np.int64)
        t_b = np.array([to_us(rows[i][6]) for i in hi], dtype=np.int64)
        mod = np.array([rows[i][2] for i in hi], dtype=np.int64)
        fo, ini, btw = replacement_terms(ids[hi], t_a, t_b, *inst, mod)
        c, kind = consumption([rows[i][5] for i in hi], [rows[i][7] for i in hi], mod,
                              [rows[i][3] for i in hi], fo, ini, btw, reverse_max=reverse_max,
                              rollover_window=rollover_window)
        cons[hi] = np.where(kind == 4, none, c)
    use = {int(i): (None if c == none else int(c)) for i, c in zip(ids.tolist(), cons.tolist())}
    return Trees(use, {k: sorted(v) for k, v in children.items()}, parent)
