"""From loaded readings to kernel rows, and from kernel outputs to verdicts and alert events.

Shared by the batch run and the ingest path, so both decide the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from meterline.ingest.model import Source
from meterline.ingest.vee import rules as R
from meterline.ingest.vee.config import GROUP_CODE, VeeConfig
from meterline.ingest.vee.kernel import NO_CONS, REVIEW_CODE
from meterline.ingest.vee.localtime import from_us, local_day_minute, to_us
from meterline.ingest.vee.store import Readings, ValidationRows
from meterline.store.consumption import Kind

#: validation rule group of each reading_source code (estimates are validated as manual reads)
GROUP_OF_SOURCE = np.zeros(256, dtype=np.int64)
for _s in Source:
    GROUP_OF_SOURCE[int(_s)] = GROUP_CODE.get(_s.group, GROUP_CODE["manual"])
KIND_NAME = {int(k): k.name.lower() for k in Kind}


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A rule fired for a meter (or a book): the alert to open or update."""

    rule: str
    severity: str
    meter_id: int | None
    event_ts: dt.datetime
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    count: int = 1
    book_id: int | None = None
    period: str | None = None


def kernel_rows(readings: Readings, slot: np.ndarray, combo_of_slot: np.ndarray, tz: str, emit: np.ndarray,
                review: np.ndarray | None = None, override: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Kernel input columns for readings already sorted by (slot, ts)."""
    n = len(readings)
    lday, lmin = local_day_minute(readings.ts, tz)
    group = GROUP_OF_SOURCE[readings.source & 0xFF]
    return {
        "slot": slot.astype(np.int64, copy=False),
        "ts": readings.ts,
        "value": readings.value,
        "status": readings.status,
        "pset": combo_of_slot[slot] * len(GROUP_CODE) + group,
        "received": readings.received,
        "lday": lday,
        "lmin": lmin,
        "emit": emit.astype(np.bool_, copy=False),
        "review": np.zeros(n, dtype=np.int64) if review is None else review,
        "override": np.zeros(n, dtype=np.int64) if override is None else override,
    }


def apply_reviews(meter: np.ndarray, ts: np.ndarray, quantity: np.ndarray,
                  reviews: list[tuple[int, dt.datetime, int, str, int | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Review codes and corrected values per row (rows sorted by meter, ts)."""
    n = len(meter)
    review = np.zeros(n, dtype=np.int64)
    override = np.zeros(n, dtype=np.int64)
    if not reviews or n == 0:
        return review, override
    lo = np.searchsorted(meter, [r[0] for r in reviews], side="left")
    hi = np.searchsorted(meter, [r[0] for r in reviews], side="right")
    for (mid, t, q, rv, corrected), a, b in zip(reviews, lo.tolist(), hi.tolist()):
        if b <= a:
            continue
        t_us = to_us(t)
        j = a + int(np.searchsorted(ts[a:b], t_us))
        while j < b and ts[j] == t_us:
            if quantity[j] == q:
                review[j] = REVIEW_CODE.get(rv, 0)
                override[j] = corrected or 0
                break
            j += 1
    return review, override


class FlagNames:
    """Rule-code lists of flag words, cached (few distinct words occur)."""

    def __init__(self) -> None:
        self._cache: dict[int, list[str]] = {}

    def __call__(self, flags: int) -> list[str]:
        names = self._cache.get(flags)
        if names is None:
            names = self._cache[flags] = R.codes_of(flags)
        return names


def _detail(cons: int, kind: int, median: float, x: float, value: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if cons != NO_CONS:
        d["consumption"] = int(cons)
        d["kind"] = KIND_NAME.get(int(kind), str(kind))
    if median == median:  # not NaN
        d["median_per_day"] = round(float(median), 1)
    if x == x:
        d["x"] = round(float(x), 3)
    if value is not None:
        d["value"] = int(value)
    return d


def verdicts(readings: Readings, out: dict[str, np.ndarray], emit: np.ndarray, names: FlagNames,
             rows: ValidationRows | None = None) -> ValidationRows:
    """Verdict rows for emitted readings that a rule flagged."""
    rows = rows or ValidationRows.empty()
    idx = np.flatnonzero(emit & (out["flags"] != 0))
    states = R.STATE_OF_ACTION
    for i in idx.tolist():
        f = int(out["flags"][i])
        c = int(out["consumption"][i])
        rows.meter.append(int(readings.meter[i]))
        rows.ts.append(from_us(int(readings.ts[i])))
        rows.quantity.append(int(readings.quantity[i]))
        rows.flags.append(names(f))
        rows.state.append(states[int(out["action"][i])])
        rows.consumption.append(None if c == NO_CONS else c)
        rows.detail.append(_detail(c, int(out["kind"][i]), float(out["median"][i]), float(out["x"][i]),
                                   int(readings.value[i])))
    return rows


#: flags that only explain why a read was suspect; once the next read showed it an isolated
#: outlier, the outlier alone is alerted
_EXPLAINED_BY_OUTLIER = (1 << R.SPIKE.bit) | (1 << R.HIGH_LIMIT.bit) | (1 << R.REGISTER_RESET.bit)


def alert_events(config: VeeConfig, meter: np.ndarray, ts: np.ndarray, value: np.ndarray, flags: np.ndarray,
                 consumption: np.ndarray, kind: np.ndarray, median: np.ndarray, x: np.ndarray,
                 period: str | None = None, tz: str = "UTC") -> list[AlertEvent]:
    """One event per (meter, alerting rule) among the given rows (sorted by meter, ts): the
    latest occurrence, with how many rows fired."""
    events: list[AlertEvent] = []
    outlier = (flags >> R.ISOLATED_OUTLIER.bit) & 1 == 1
    if outlier.any():
        flags = np.where(outlier, flags & ~_EXPLAINED_BY_OUTLIER, flags)
    zone = ZoneInfo(tz)
    any_flags = np.bitwise_or.reduce(flags) if len(flags) else 0
    for r in R.READING_RULES:
        if not any_flags >> r.bit & 1:
            continue
        rule = config.rule(r.code)
        if not rule.alert:
            continue
        idx = np.flatnonzero((flags >> r.bit) & 1)
        m = meter[idx]
        last = np.r_[m[1:] != m[:-1], True] if len(m) else np.zeros(0, dtype=bool)
        starts = np.flatnonzero(np.r_[True, m[1:] != m[:-1]]) if len(m) else np.zeros(0, dtype=np.int64)
        counts = np.diff(np.r_[starts, len(m)])
        for j, n in zip(idx[last].tolist(), counts.tolist()):
            c = int(consumption[j])
            detail = _detail(c, int(kind[j]), float(median[j]), float(x[j]), int(value[j]))
            when = from_us(int(ts[j]))
            events.append(AlertEvent(rule=rule.code, severity=rule.severity, meter_id=int(meter[j]), event_ts=when,
                                     message=describe(rule, when.astimezone(zone), detail), detail=detail, count=int(n),
                                     period=period))
    return events


def describe(rule: R.Rule, when: dt.datetime, detail: dict[str, Any]) -> str:
    """A supervisor's one-line account of a rule firing on a reading."""
    parts = [rule.description, f"reading of {when.isoformat(timespec='minutes')}"]
    if "value" in detail:
        parts.append(f"register {detail['value']}")
    if "consumption" in detail:
        parts.append(f"consumption {detail['consumption']} ({detail['kind']})")
    if "median_per_day" in detail:
        parts.append(f"median {detail['median_per_day']}/day")
    if rule.code == "stuck" and "x" in detail:
        parts.append(f"unchanged for {detail['x']:.1f} days")
    elif rule.code == "night_flow" and "x" in detail:
        parts.append(f"minimum night flow {detail['x']:.1f}/h")
    elif rule.code == "reading_gap" and "x" in detail:
        parts.append(f"{detail['x']:.1f} days since the previous reading")
    return "; ".join(parts)
