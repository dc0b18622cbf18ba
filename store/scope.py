"""Company scope and group scope: what a session may see, set where its work begins.

Row-level security (migration 0100) keys on two session settings:

* ``meterline.company_id`` — the company a session acts for (``Database.connection(company_id=)``
  or :func:`set_scope`); its rows only, for reading and for writing;
* ``meterline.scope = 'group'`` — read every company's rows (roles with a group-wide
  ``group.read``); :func:`group_connection` also makes the session read-only, so group scope
  can look at everything and change nothing.

A session that set neither sees no business rows: forgetting the scope fails closed.

Group figures: reports run per company (company scope) or consolidated for the group with one
row per company (group scope), from the same SQL: group by ``company_id`` and let the scope
decide which companies are there. :func:`company_figures` is such a figure.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import psycopg
from psycopg.rows import dict_row

from meterline.store.db import Database, set_company


def set_scope(conn: psycopg.Connection, company_id: int | None = None, *, group: bool = False,
              read_only: bool = False) -> None:
    """Scope this session (until the pool resets it): a company, the group, or both."""
    if company_id is not None:
        set_company(conn, company_id)
    else:
        conn.execute("SELECT set_config('meterline.company_id', '', false)")
    conn.execute("SELECT set_config('meterline.scope', %s, false)", ["group" if group else "company"])
    if read_only or group:
        conn.execute("SELECT set_config('default_transaction_read_only', 'on', false)")


def current_scope(conn: psycopg.Connection) -> tuple[int | None, bool]:
    """(company id, group?) of this session."""
    row = conn.execute("SELECT meterline_scope_company(), meterline_scope_group()").fetchone()
    return row[0], bool(row[1])


@contextmanager
def group_connection(db: Database) -> Iterator[psycopg.Connection]:
    """A read-only pooled connection that sees every company (check ``group.read`` first)."""
    with db.connection() as conn:
        set_scope(conn, None, group=True)
        if not conn.autocommit:
            conn.commit()
        yield conn


@contextmanager
def company_connection(db: Database, company_id: int, *, read_only: bool = False) -> Iterator[psycopg.Connection]:
    """A pooled connection scoped to one company (read-only for read-only roles)."""
    with db.connection(company_id=company_id) as conn:
        if read_only:
            set_scope(conn, company_id, read_only=True)
            if not conn.autocommit:
                conn.commit()
        yield conn


def per_company(conn: psycopg.Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Run a query that returns a ``company_id`` column; add ``company`` (code) to every row.

    In company scope that is the one company's row; in group scope one row per company.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    codes = dict(conn.execute("SELECT id, code FROM company").fetchall())
    for row in rows:
        row["company"] = codes.get(row.get("company_id"), "(none)")
    return sorted(rows, key=lambda r: r["company"])


@dataclass(frozen=True, slots=True)
class CompanyFigures:
    company_id: int | None
    company: str
    name: str
    accounts: int        #: active accounts
    meters: int          #: active meters
    meters_read: int     #: active meters with at least one reading in the window
    readings: int        #: readings received in the window
    dead_letters: int    #: dead letters in the window (the unplaced ones have no company)
    open_alerts: int

    @property
    def reading_rate(self) -> float | None:
        """Share of active meters read in the window (抄见率)."""
        return self.meters_read / self.meters if self.meters else None


_FIGURES = """
WITH a AS (SELECT company_id, count(*) AS n FROM account WHERE status = 'active' GROUP BY company_id),
     m AS (SELECT company_id, count(*) AS n FROM meter WHERE status = 'active' GROUP BY company_id),
     r AS (SELECT r.company_id, count(*) AS n, count(DISTINCT r.meter_id) AS meters
           FROM reading r WHERE r.ts >= %(since)s AND r.ts < %(until)s GROUP BY r.company_id),
     d AS (SELECT company_id, count(*) AS n FROM dead_letter
           WHERE received_at >= %(since)s AND received_at < %(until)s GROUP BY company_id),
     al AS (SELECT company_id, count(*) AS n FROM alert WHERE status <> 'resolved' GROUP BY company_id)
SELECT c.id, c.code, c.name, coalesce(a.n, 0), coalesce(m.n, 0), coalesce(r.meters, 0), coalesce(r.n, 0),
       coalesce(d.n, 0), coalesce(al.n, 0)
FROM company c
LEFT JOIN a ON a.company_id = c.id LEFT JOIN m ON m.company_id = c.id LEFT JOIN r ON r.company_id = c.id
LEFT JOIN d ON d.company_id = c.id LEFT JOIN al ON al.company_id = c.id
WHERE meterline_scope_group() OR c.id = meterline_scope_company()
UNION ALL
SELECT NULL, '(unplaced)', 'dead letters of unknown senders', 0, 0, 0, 0, count(*), 0
FROM dead_letter WHERE company_id IS NULL AND received_at >= %(since)s AND received_at < %(until)s
HAVING count(*) > 0
ORDER BY 2
"""


def company_figures(conn: psycopg.Connection, *, days: int = 30, now: dt.datetime | None = None) -> list[CompanyFigures]:
    """Registry and reading figures per company over the last ``days`` (one row per visible company).

    In company scope: that company; in group scope: every company, plus a row for dead letters
    no company could be found for. Meters read are counted among meters with readings in the
    window (a meter removed since still counts as read).
    """
    until = now or dt.datetime.now(dt.timezone.utc)
    since = until - dt.timedelta(days=days)
    rows = conn.execute(_FIGURES, {"since": since, "until": until}).fetchall()
    return [CompanyFigures(*r) for r in rows]


def totals(figures: list[CompanyFigures]) -> CompanyFigures:
    """The group's total row (sums; the reading rate of the sums)."""
    return CompanyFigures(None, "(group)", "total", *(sum(getattr(f, k) for f in figures) for k in
                                                     ("accounts", "meters", "meters_read", "readings",
                                                      "dead_letters", "open_alerts")))
