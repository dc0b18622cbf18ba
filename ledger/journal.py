"""The journal: entries of postings that sum to zero, appended and never changed.

``post_entry`` writes one entry and its postings in one statement (one round trip), inside the
caller's transaction. It checks in code what the database checks again at the end of the
statement (``0600_ledger.sql``): the postings balance, every code is in the chart, the business
day is open. Bulk writers (bills, payments, late fees) build their entries in SQL instead and
rely on the same database checks.

Business days: an entry is booked on a company-local date (``booked_on``). Closed days take no
entries; :func:`open_day` gives the first open day on or after the one wanted, which is where
corrections of a closed day go.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from meterline.errors import NotFound
from meterline.ledger import chart
from meterline.ledger.errors import DayClosed, LedgerError, UnbalancedEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Posting:
    account_code: str
    amount: int  # signed minor units: debit > 0, credit < 0


@dataclass(frozen=True, slots=True)
class CompanyInfo:
    id: int
    code: str
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def day_of(self, ts: dt.datetime) -> dt.date:
        """The company-local business day of an aware timestamp."""
        if ts.tzinfo is None:
            raise LedgerError(f"timestamp {ts.isoformat()} has no time zone")
        return ts.astimezone(self.tz).date()

    def today(self, now: dt.datetime | None = None) -> dt.date:
        return self.day_of(now or dt.datetime.now(dt.timezone.utc))


def company_info(conn: psycopg.Connection, company_id: int) -> CompanyInfo:
    row = conn.execute("SELECT id, code, timezone FROM company WHERE id = %s", [company_id]).fetchone()
    if row is None:
        raise NotFound(f"company {company_id} does not exist")
    return CompanyInfo(*row)


def combine(postings: Iterable[Posting]) -> list[Posting]:
    """Postings with the same code merged, zero amounts dropped, order of first appearance kept."""
    sums: dict[str, int] = {}
    for p in postings:
        sums[p.account_code] = sums.get(p.account_code, 0) + int(p.amount)
    return [Posting(code, amount) for code, amount in sums.items() if amount != 0]


def check_postings(kind: str, postings: Sequence[Posting]) -> None:
    total = sum(p.amount for p in postings)
    if total != 0:
        raise UnbalancedEntry(kind, total, len(postings))
    for p in postings:
        chart.account_class(p.account_code)
        if p.amount == 0:
            raise LedgerError(f"{kind} entry has a zero posting on {p.account_code}")


def open_day(conn: psycopg.Connection, company_id: int, wanted: dt.date,
             channel: str | None = None, cashier: str | None = None) -> dt.date:
    """The first day on or after ``wanted`` that is open for this channel and cashier."""
    return conn.execute("SELECT ledger_open_day(%s, %s, %s, %s)", [company_id, wanted, channel, cashier]).fetchone()[0]


_INSERT = """
WITH e AS (
    INSERT INTO journal_entry (company_id, booked_on, kind, ref_type, ref_id, reverses_id, memo,
                               idempotency_key, created_by, channel, cashier)
    VALUES (%(company)s, ledger_open_day(%(company)s, %(day)s, %(channel)s, %(cashier)s), %(kind)s,
            %(ref_type)s, %(ref_id)s, %(reverses)s, %(memo)s, %(key)s, %(by)s, %(channel)s, %(cashier)s)
    ON CONFLICT (company_id, idempotency_key) DO NOTHING
    RETURNING id, booked_on
), p AS (
    INSERT INTO posting (entry_id, line_no, company_id, account_code, amount)
    SELECT e.id, u.n, %(company)s, u.code, u.amount
      FROM e, unnest(%(codes)s::text[], %(amounts)s::bigint[]) WITH ORDINALITY AS u(code, amount, n)
)
SELECT id, booked_on FROM e
"""


@dataclass(frozen=True, slots=True)
class PostedEntry:
    id: int
    booked_on: dt.date
    created: bool  # False: the idempotency key was used before, ``id`` is that entry


def post_entry(
    conn: psycopg.Connection,
    company_id: int,
    *,
    day: dt.date,
    kind: str,
    postings: Sequence[Posting],
    ref_type: str | None = None,
    ref_id: int | None = None,
    reverses_id: int | None = None,
    memo: str | None = None,
    idempotency_key: str | None = None,
    created_by: str | None = None,
    channel: str | None = None,
    cashier: str | None = None,
) -> PostedEntry:
    """Append one balanced entry, booked on the first open day on or after ``day``."""
    lines = combine(postings)
    check_postings(kind, lines)
    params = {
        "company": company_id, "day": day, "kind": kind, "ref_type": ref_type, "ref_id": ref_id,
        "reverses": reverses_id, "memo": memo, "key": idempotency_key, "by": created_by,
        "channel": channel, "cashier": cashier,
        "codes": [p.account_code for p in lines], "amounts": [p.amount for p in lines],
    }
    try:
        row = conn.execute(_INSERT, params).fetchone()
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:  # closed concurrently
        raise DayClosed(day, channel, cashier, str(exc).splitlines()[0]) from exc
    if row is None:
        if idempotency_key is None:
            raise LedgerError("entry was not written")
        found = conn.execute(
            "SELECT id, booked_on FROM journal_entry WHERE company_id = %s AND idempotency_key = %s",
            [company_id, idempotency_key]).fetchone()
        return PostedEntry(found[0], found[1], False)
    return PostedEntry(row[0], row[1], True)


def entry_postings(conn: psycopg.Connection, entry_id: int) -> list[Posting]:
    rows = conn.execute("SELECT account_code, amount FROM posting WHERE entry_id = %s ORDER BY line_no", [entry_id]).fetchall()
    return [Posting(c, a) for c, a in rows]


def jsonb(value: object) -> Jsonb:
    return Jsonb(value)
