"""Reading-operations figures per meter book and reader for a period (抄表率 and friends).

For each book (and its reader, ``meter_book.reader``: handheld reads do not carry their reader
yet, so the book's reader stands for every read of the book):

* ``meters``: meters in service on active accounts of the book;
* ``reading_rate``: share of them with an acceptable real read inside the period-end window;
* ``estimated_share``: share whose period-end read is an estimate;
* ``readings``: real readings in the period; ``corrected_share``: share a person corrected
  (override); ``rejected_share`` and ``held_share``: shares validation kept out;
* entry lead time, reading time → commit (``reading.committed_at``), in hours: median and 90th
  percentile (for walk-by books: how long readings take to reach the system).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from meterline.ingest.vee.config import GROUPS, VeeConfig
from meterline.ingest.vee.localtime import period_bounds


@dataclass(frozen=True, slots=True)
class BookFigures:
    book: str
    reader: str | None
    meters: int
    read: int
    estimated: int
    readings: int
    corrected: int
    rejected: int
    held: int
    lead_median_h: float | None
    lead_p90_h: float | None

    @property
    def reading_rate(self) -> float | None:
        return self.read / self.meters if self.meters else None

    @property
    def estimated_share(self) -> float | None:
        return self.estimated / self.meters if self.meters else None

    @property
    def corrected_share(self) -> float | None:
        return self.corrected / self.readings if self.readings else None

    @property
    def rejected_share(self) -> float | None:
        return self.rejected / self.readings if self.readings else None

    @property
    def held_share(self) -> float | None:
        return self.held / self.readings if self.readings else None

    def as_dict(self) -> dict[str, Any]:
        return {"book": self.book, "reader": self.reader, "meters": self.meters, "read": self.read,
                "reading_rate": self.reading_rate, "estimated": self.estimated,
                "estimated_share": self.estimated_share, "readings": self.readings, "corrected": self.corrected,
                "corrected_share": self.corrected_share, "rejected_share": self.rejected_share,
                "held_share": self.held_share, "lead_median_h": self.lead_median_h, "lead_p90_h": self.lead_p90_h}


_SQL = """
WITH bm AS (
    SELECT m.id, m.quantity, b.code AS book, b.reader,
           CASE m.protocol WHEN 'handheld' THEN 1 WHEN 'manual' THEN 2 ELSE 0 END AS grp
    FROM meter m JOIN account a ON a.id = m.account_id JOIN meter_book b ON b.id = a.book_id
    WHERE b.company_id = %(c)s AND m.status = 'active' AND a.status = 'active'
      AND (%(book)s::text IS NULL OR b.code = %(book)s)
), ends AS (
    SELECT bm.book, bm.reader,
           count(*) AS meters,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM reading_effective e
               WHERE e.meter_id = bm.id AND e.quantity = bm.quantity AND NOT e.estimated
                 AND e.ts >= %(end)s - (%(before)s::float8[])[bm.grp + 1] * interval '1 day'
                 AND e.ts <= %(end)s + (%(after)s::float8[])[bm.grp + 1] * interval '1 day')) AS read,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM reading_effective e
               WHERE e.meter_id = bm.id AND e.quantity = bm.quantity AND e.estimated AND e.ts = %(end)s)) AS estimated
    FROM bm GROUP BY bm.book, bm.reader
), reads AS (
    SELECT bm.book, count(*) AS readings,
           count(*) FILTER (WHERE v.review = 'overridden') AS corrected,
           count(*) FILTER (WHERE v.review IS NULL AND v.auto_state = 'rejected') AS rejected,
           count(*) FILTER (WHERE v.review IS NULL AND v.auto_state = 'held') AS held,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.committed_at - r.ts)) / 3600 AS lead_med,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM r.committed_at - r.ts)) / 3600 AS lead_p90
    FROM bm JOIN reading r ON r.meter_id = bm.id AND r.quantity = bm.quantity
    LEFT JOIN reading_validation v ON v.meter_id = r.meter_id AND v.ts = r.ts AND v.quantity = r.quantity
    WHERE r.ts >= %(start)s AND r.ts < %(end)s
    GROUP BY bm.book
)
SELECT ends.book, ends.reader, ends.meters, ends.read, ends.estimated,
       coalesce(reads.readings, 0) AS readings, coalesce(reads.corrected, 0) AS corrected,
       coalesce(reads.rejected, 0) AS rejected, coalesce(reads.held, 0) AS held,
       reads.lead_med, reads.lead_p90
FROM ends LEFT JOIN reads ON reads.book = ends.book
ORDER BY ends.book"""


def book_figures(conn: psycopg.Connection, company_id: int, period: str, tz: str, config: VeeConfig,
                 book: str | None = None) -> list[BookFigures]:
    start, end = period_bounds(period, tz)
    before = [config.params(g, None, None).period_end_before_days for g in GROUPS]
    after = [config.params(g, None, None).period_end_after_days for g in GROUPS]
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SQL, {"c": company_id, "book": book, "start": start, "end": end, "before": before,
                                  "after": after}).fetchall()
    return [BookFigures(r["book"], r["reader"], r["meters"], r["read"], r["estimated"], r["readings"], r["corrected"],
                        r["rejected"], r["held"],
                        None if r["lead_med"] is None else round(float(r["lead_med"]), 2),
                        None if r["lead_p90"] is None else round(float(r["lead_p90"]), 2)) for r in rows]


def by_reader(figures: list[BookFigures]) -> list[dict[str, Any]]:
    """The same figures summed per reader (lead times: the worst book's)."""
    out: dict[str | None, dict[str, Any]] = {}
    for f in figures:
        r = out.setdefault(f.reader, {"reader": f.reader, "books": 0, "meters": 0, "read": 0, "estimated": 0,
                                      "readings": 0, "corrected": 0, "lead_p90_h": None})
        r["books"] += 1
        for k in ("meters", "read", "estimated", "readings", "corrected"):
            r[k] += getattr(f, k)
        if f.lead_p90_h is not None:
            r["lead_p90_h"] = max(r["lead_p90_h"] or 0.0, f.lead_p90_h)
    for r in out.values():
        r["reading_rate"] = r["read"] / r["meters"] if r["meters"] else None
        r["estimated_share"] = r["estimated"] / r["meters"] if r["meters"] else None
        r["corrected_share"] = r["corrected"] / r["readings"] if r["readings"] else None
    return sorted(out.values(), key=lambda r: str(r["reader"]))


