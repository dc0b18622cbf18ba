"""Price one case without the database (``meterline quote``): customer service and tests.

``quote(book, QuoteRequest(...))`` rates a one-row frame with :func:`meterline.rating.engine.rate`
— the same code path as the billing run — and returns its lines and total. ``Quote.to_json()``
is the JSON the CLI prints: amounts in minor units (fen), unit prices at ``price_scale``,
quantities in litres (volume lines), 0.01 m² (heating) or months (fixed and minimum charges),
and ``heating_suspensions``, the suspensions the heating was rated with.

Heating suspensions: any number of ``(stop, resume)`` pairs in ``QuoteRequest.heating_suspensions``
(stop: the first unheated day, None from the season's start; resume: the first heated day again,
None not resumed) plus the single pair ``heating_stop`` / ``heating_resume`` where either is set.
They are checked (:func:`heating_suspensions`: a pair needs a date, resumes after its stop, and
no two overlap; adjacent ones are fine) and those overlapping the period are rated as the lists
``heating_stops`` / ``heating_resumes``, as the billing run rates an account's stored suspensions,
so a quote and a bill of the same case agree.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from meterline.rating.engine import rate
from meterline.rating.errors import RatingError
from meterline.rating.tariff import Tariff, TariffBook

QUANTITY_UNITS = {"fixed": "month", "minimum": "month", "heating": "0.01 m2"}

Suspension = tuple[dt.date | None, dt.date | None]   # (stop: first unheated day, resume: first heated day again)


class SuspensionError(RatingError):
    """Heating suspensions that cannot be rated: a pair without dates, resuming on or before its
    stop, or two that overlap. ``suspensions`` are the pairs at fault."""

    def __init__(self, reason: str, suspensions: list[Suspension]) -> None:
        super().__init__(reason)
        self.suspensions = suspensions


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    tariff_id: str
    volume: int                      # litres
    period_start: dt.date
    period_end: dt.date
    household_size: int = 0          # 0: the tariff's base size
    dwellings: int = 1
    ytd: int = 0                     # litres already billed this tariff year (annual tiers)
    apportioned: int = 0             # litres
    meter_size: str | None = None
    area_cm2: int | None = None      # 0.01 m²
    heating_stop: dt.date | None = None      # one suspension (kept for older callers) ...
    heating_resume: dt.date | None = None
    heating_suspensions: tuple[Suspension, ...] = ()   # ... and any number more


@dataclass(frozen=True)
class Quote:
    request: QuoteRequest
    tariff: Tariff
    lines: list[dict[str, Any]] = field(default_factory=list)
    amount: int = 0
    tax: int = 0
    heating_suspensions: list[Suspension] = field(default_factory=list)  # rated: those overlapping the period

    @property
    def total(self) -> int:
        return self.amount + self.tax

    def to_json(self) -> dict[str, Any]:
        r = self.request
        return {
            "tariff": self.tariff.id,
            "tariff_name": self.tariff.name,
            "period_start": r.period_start.isoformat(),
            "period_end": r.period_end.isoformat(),
            "volume": r.volume,
            "volume_unit": "litre",
            "household_size": r.household_size or None,
            "dwellings": r.dwellings,
            "year_to_date": r.ytd,
            "heating_suspensions": [{"stop": None if a is None else a.isoformat(),
                                     "resume": None if b is None else b.isoformat()}
                                    for a, b in self.heating_suspensions],
            "minor_units": self.tariff.minor_units,
            "lines": self.lines,
            "amount": self.amount,
            "tax": self.tax,
            "total": self.total,
        }


def month_of(day: dt.date) -> tuple[dt.date, dt.date]:
    """The calendar month containing ``day``: (first day, last day)."""
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


def describe(stop: dt.date | None, resume: dt.date | None) -> str:
    """One suspension in words: "stopped 2026-12-03, resumed 2026-12-05"."""
    first = "from the season's start" if stop is None else stop.isoformat()
    last = "not resumed" if resume is None else f"resumed {resume.isoformat()}"
    return f"stopped {first}, {last}"


def heating_suspensions(req: QuoteRequest) -> list[Suspension]:
    """The request's suspensions that overlap its period, in stop order (a stop from the season's
    start first); raises :class:`SuspensionError` for a pair with neither date, a pair resuming on or
    before its stop, and two pairs that overlap (checked over all of them, in the period or not)."""
    pairs = list(req.heating_suspensions)
    if req.heating_stop is not None or req.heating_resume is not None:
        pairs.insert(0, (req.heating_stop, req.heating_resume))
    for stop, resume in pairs:
        if stop is None and resume is None:
            raise SuspensionError("a heating suspension needs a stop or a resume date", [(stop, resume)])
        if stop is not None and resume is not None and resume <= stop:
            raise SuspensionError(f"heating {describe(stop, resume)}: the resume date must be after the stop date",
                                  [(stop, resume)])
    pairs.sort(key=lambda p: (p[0] is not None, p[0] or dt.date.min))
    for (s0, r0), (s1, r1) in zip(pairs, pairs[1:]):
        if r0 is None or s1 is None or r0 > s1:   # resuming on the next one's stop day is adjacent, not overlapping
            raise SuspensionError(f"heating suspensions overlap: {describe(s0, r0)} and {describe(s1, r1)}",
                                  [(s0, r0), (s1, r1)])
    # the billing run's selection: stopped by the period's end and not resumed before its start
    return [(s, r) for s, r in pairs
            if (s is None or s <= req.period_end) and (r is None or r > req.period_start)]


def quote(book: TariffBook, req: QuoteRequest, *, company: str | None = None) -> Quote:
    """Rate one case; raises RatingError (unknown tariff, no version in force, ...) and its
    SuspensionError (heating suspensions that overlap or resume before they stop)."""
    tariff = book.get(req.tariff_id, company)
    suspended = heating_suspensions(req)
    stops = [s for s, _ in suspended] or None
    resumes = [r for _, r in suspended] or None
    frame = pl.DataFrame({
        "row": [0], "tariff_id": [req.tariff_id], "period_start": [req.period_start], "period_end": [req.period_end],
        "volume": [req.volume], "apportioned": [req.apportioned], "ytd": [req.ytd],
        "household_size": [req.household_size], "dwellings": [req.dwellings], "meter_size": [req.meter_size],
        "area_cm2": [req.area_cm2], "heating_stops": [stops], "heating_resumes": [resumes],
    }, schema={"row": pl.Int64, "tariff_id": pl.Utf8, "period_start": pl.Date, "period_end": pl.Date,
               "volume": pl.Int64, "apportioned": pl.Int64, "ytd": pl.Int64, "household_size": pl.Int16,
               "dwellings": pl.Int16, "meter_size": pl.Utf8, "area_cm2": pl.Int64,
               "heating_stops": pl.List(pl.Date), "heating_resumes": pl.List(pl.Date)})
    try:
        rated = rate(book, frame, company=company)
    except RatingError as exc:  # one case: no row keys to name
        raise RatingError(exc.reason, exc.tariff_id) from None
    lines = []
    for line in rated.lines.sort("line_no").iter_rows(named=True):
        source = json.loads(line["source"])
        lines.append({
            "line_no": line["line_no"],
            "component": line["component"],
            "kind": source["kind"],
            "tier": line["tier"],
            "quantity": line["quantity"],
            "quantity_unit": QUANTITY_UNITS.get(source["kind"], "litre"),
            "unit_price": line["unit_price"],
            "price_scale": line["price_scale"],
            "amount": line["amount"],
            "tax": line["tax"],
            "tariff_version": line["tariff_version"],
            "source": source,
        })
    bill = rated.bills.row(0, named=True)
    return Quote(request=req, tariff=tariff, lines=lines, amount=bill["amount"], tax=bill["tax"],
                 heating_suspensions=suspended)
