"""Local day and minute of UTC microsecond timestamps in a company's IANA time zone, vectorized.

Zone offsets change only at transitions; the offset is looked up once per quarter hour of the
covered span (zoneinfo) and gathered for every timestamp, so millions of timestamps cost a few
numpy operations. Day numbers count local days since 1970-01-01.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
QUARTER_US = 15 * 60 * 1_000_000
DAY_US = 86_400_000_000
MINUTE_US = 60_000_000


def offsets_us(ts_us: np.ndarray, tz: str) -> np.ndarray:
    """UTC offset (µs) of each timestamp in ``tz``."""
    if len(ts_us) == 0:
        return np.zeros(0, dtype=np.int64)
    zone = ZoneInfo(tz)
    lo = int(ts_us.min()) // QUARTER_US
    hi = int(ts_us.max()) // QUARTER_US
    table = np.empty(hi - lo + 1, dtype=np.int64)
    for k in range(hi - lo + 1):
        when = EPOCH + dt.timedelta(microseconds=(lo + k) * QUARTER_US)
        off = when.astimezone(zone).utcoffset()
        table[k] = off // dt.timedelta(microseconds=1) if off is not None else 0
    if table.min() == table.max():  # no transition in the span (most zones, most months)
        return np.full(len(ts_us), table[0], dtype=np.int64)
    return table[ts_us // QUARTER_US - lo]


def local_day_minute(ts_us: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray]:
    """(local day number int64, local minute of the day int64) of UTC µs timestamps."""
    local = ts_us + offsets_us(ts_us, tz)
    return local // DAY_US, (local % DAY_US) // MINUTE_US


def to_us(ts: dt.datetime) -> int:
    return (ts - EPOCH) // dt.timedelta(microseconds=1)


def from_us(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=int(us))


def period_bounds(period: str, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """Start and end (exclusive) of a ``YYYY-MM`` period: local midnights, as aware UTC datetimes."""
    try:
        year, month = (int(x) for x in period.split("-"))
        start = dt.datetime(year, month, 1, tzinfo=ZoneInfo(tz))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"period {period!r} is not YYYY-MM") from exc
    end = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=ZoneInfo(tz))
    return start.astimezone(UTC), end.astimezone(UTC)


def shift_period(period: str, months: int) -> str:
    year, month = (int(x) for x in period.split("-"))
    k = year * 12 + (month - 1) + months
    return f"{k // 12:04d}-{k % 12 + 1:02d}"
