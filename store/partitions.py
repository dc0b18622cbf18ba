"""Monthly range partitions of ``reading`` on plain PostgreSQL.

Partition ``reading_yYYYYmMM`` holds readings with ``ts`` in that UTC calendar month.
``ensure_months`` creates missing partitions (serialized by an advisory lock, so concurrent
writers and ``db maintain`` do not collide); the writer calls it before inserting a batch
whose months it has not seen. On TimescaleDB, chunks are created automatically and these
functions do nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Iterable

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6D6C_7061  # "mlpa"
#: readings before this are refused by the writer (far past: a clock that was never set)
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)

Month = tuple[int, int]


def month_of(ts: dt.datetime) -> Month:
    ts = ts.astimezone(dt.timezone.utc)
    return ts.year, ts.month


def next_month(month: Month) -> Month:
    y, m = month
    return (y + 1, 1) if m == 12 else (y, m + 1)


def add_months(month: Month, n: int) -> Month:
    y, m = month
    k = y * 12 + (m - 1) + n
    return k // 12, k % 12 + 1


def months_between(first: Month, last: Month) -> list[Month]:
    out, cur = [], first
    while cur <= last:
        out.append(cur)
        cur = next_month(cur)
    return out


def partition_name(month: Month) -> str:
    return f"reading_y{month[0]:04d}m{month[1]:02d}"


def existing_months(conn: psycopg.Connection) -> set[Month]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'reading'::regclass"""
    ).fetchall()
    out = set()
    for (name,) in rows:
        if name.startswith("reading_y") and len(name) == len("reading_y0000m00"):
            out.add((int(name[9:13]), int(name[14:16])))
    return out


def is_partitioned(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('reading')").fetchone()
    return bool(row) and row[0] == "p"


def ensure_months(conn: psycopg.Connection, months: Iterable[Month]) -> list[str]:
    """Create the partitions of ``months`` that do not exist; return the names created.

    Runs in its own transaction on ``conn`` (which must not be inside one).
    """
    wanted = sorted(set(months))
    if not wanted or not is_partitioned(conn):
        return []
    created: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        have = existing_months(conn)
        for month in wanted:
            if month in have:
                continue
            start = dt.datetime(month[0], month[1], 1, tzinfo=dt.timezone.utc)
            ny, nm = next_month(month)
            end = dt.datetime(ny, nm, 1, tzinfo=dt.timezone.utc)
            name = partition_name(month)
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF reading FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(name), sql.Literal(start), sql.Literal(end)
                )
            )
            created.append(name)
    if created:
        log.info("created reading partitions: %s", ", ".join(created))
    return created


def ensure_window(conn: psycopg.Connection, today: dt.date, behind: int, ahead: int) -> list[str]:
    """Partitions from ``behind`` months before ``today``'s month to ``ahead`` months after."""
    this = (today.year, today.month)
    return ensure_months(conn, months_between(add_months(this, -behind), add_months(this, ahead)))
