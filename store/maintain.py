"""Routine maintenance (``meterline db maintain``), the same call on both storage paths.

* plain PostgreSQL: create reading partitions ahead of time; recompute the daily aggregate
  table ``reading_daily_agg`` over a recent window (late readings inside the window are
  picked up; ``refresh_days`` widens it, like a continuous aggregate's manual refresh);
* TimescaleDB: chunks and compression are automatic; the continuous aggregate is refreshed
  over the same window with ``refresh_continuous_aggregate``.

After ``maintain`` with the same window, ``reading_daily`` reads the same on both paths.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import psycopg

from meterline.store import partitions
from meterline.store.migrate import backend as get_backend
from meterline.store.migrate import get_meta

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    backend: str
    partitions_created: list[str] = field(default_factory=list)
    refreshed_from: dt.datetime | None = None
    refreshed_to: dt.datetime | None = None
    daily_rows: int | None = None


def refresh_window(now: dt.datetime, days: int, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """[local midnight ``days`` days ago, local midnight after ``now``) as UTC instants."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    end_day = local.date() + dt.timedelta(days=1)
    start_day = end_day - dt.timedelta(days=days + 1)
    start = dt.datetime.combine(start_day, dt.time(), tzinfo=zone).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(end_day, dt.time(), tzinfo=zone).astimezone(dt.timezone.utc)
    return start, end


def refresh_daily(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> int | None:
    """Recompute daily buckets whose local day starts in [start, end). Autocommit conn."""
    tz = get_meta(conn, "day_timezone") or "UTC"
    if get_backend(conn) == "timescaledb":
        conn.execute("CALL refresh_continuous_aggregate('reading_daily_agg', %s, %s)", [start, end])
        return None
    with conn.transaction():
        conn.execute("DELETE FROM reading_daily_agg WHERE bucket >= %s AND bucket < %s", [start, end])
        cur = conn.execute(
            """INSERT INTO reading_daily_agg
                   (meter_id, quantity, bucket, first_ts, first_value, last_ts, last_value, min_value, max_value, n)
               SELECT meter_id, quantity, date_trunc('day', ts, %(tz)s) AS bucket,
                      min(ts), (array_agg(value ORDER BY ts))[1],
                      max(ts), (array_agg(value ORDER BY ts DESC))[1],
                      min(value), max(value), count(*)
               FROM reading
               WHERE ts >= %(start)s AND ts < %(end)s
               GROUP BY meter_id, quantity, date_trunc('day', ts, %(tz)s)""",
            {"tz": tz, "start": start, "end": end},
        )
        return cur.rowcount


def maintain(
    conn: psycopg.Connection,
    *,
    now: dt.datetime | None = None,
    ahead_months: int = 3,
    behind_months: int = 0,
    refresh_days: int = 35,
) -> MaintenanceReport:
    """Create partitions ahead and refresh the daily aggregate. ``conn`` must be autocommit."""
    now = now or dt.datetime.now(dt.timezone.utc)
    chosen = get_backend(conn) or "plain"
    report = MaintenanceReport(backend=chosen)
    if chosen == "plain":
        report.partitions_created = partitions.ensure_window(conn, now.date(), behind_months, ahead_months)
    tz = get_meta(conn, "day_timezone") or "UTC"
    start, end = refresh_window(now, refresh_days, tz)
    report.refreshed_from, report.refreshed_to = start, end
    report.daily_rows = refresh_daily(conn, start, end)
    return report
