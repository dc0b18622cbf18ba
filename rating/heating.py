"""Heating stopped and resumed per account (采暖报停 / 复供), for area-based heating charges.

A customer who stops heating for part of a season pays for the heated days only: the billing
run (:mod:`meterline.rating.run`) reads every suspension overlapping a bill's period from
``heating_suspension`` (migrations 0620, 0621) and rates them all, as the lists
``heating_stops`` / ``heating_resumes`` (:mod:`meterline.rating.engine`: the days ``stop_on`` ..
``resume_on - 1`` of each are not charged; an account stopped and resumed twice in one month
pays for the days between and around).

An account's suspensions never overlap (the database refuses it). A suspension is never deleted:
a wrong date is corrected with :func:`set_dates` (the audit trail records the change); a bill
already issued keeps what it charged, and a correction reaches the account through a reversal
and a new bill.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from meterline.errors import MeterlineError


class HeatingError(MeterlineError):
    """A suspension cannot be recorded (unknown account, overlap, dates in the wrong order)."""


@dataclass(frozen=True, slots=True)
class Suspension:
    id: int
    account_id: int
    stop_on: dt.date
    resume_on: dt.date | None
    reason: str


def _account(conn: psycopg.Connection, company_id: int, account_code: str) -> int:
    row = conn.execute("SELECT id FROM account WHERE company_id = %s AND code = %s",
                       [company_id, account_code]).fetchone()
    if row is None:
        raise HeatingError(f"no account {account_code!r} in this company")
    return row[0]


def _write(conn: psycopg.Connection, sql: str, params: list) -> Suspension:
    try:
        with conn.transaction():
            row = conn.execute(sql, params).fetchone()
    except (psycopg.errors.ExclusionViolation, psycopg.errors.CheckViolation,
            psycopg.errors.ForeignKeyViolation) as exc:
        raise HeatingError(str(exc).splitlines()[0]) from exc
    if row is None:
        raise HeatingError("no such heating suspension in this company")
    return Suspension(*row)


def stop_heating(conn: psycopg.Connection, company_id: int, account_code: str, stop_on: dt.date, reason: str, *,
                 resume_on: dt.date | None = None, recorded_by: str | None = None) -> Suspension:
    """Heating of the account stops on ``stop_on`` (its first unheated day), until ``resume_on``."""
    if not reason.strip():
        raise HeatingError("a heating stop needs a reason")
    if resume_on is not None and resume_on <= stop_on:
        raise HeatingError(f"resume date {resume_on} is not after the stop date {stop_on}")
    account_id = _account(conn, company_id, account_code)
    return _write(conn, """INSERT INTO heating_suspension (company_id, account_id, stop_on, resume_on, reason, recorded_by)
                           VALUES (%s, %s, %s, %s, %s, %s)
                           RETURNING id, account_id, stop_on, resume_on, reason""",
                  [company_id, account_id, stop_on, resume_on, reason.strip(), recorded_by])


def resume_heating(conn: psycopg.Connection, company_id: int, account_code: str, resume_on: dt.date) -> Suspension:
    """Heating of the account resumes on ``resume_on`` (its first heated day again)."""
    account_id = _account(conn, company_id, account_code)
    row = conn.execute("""SELECT id, stop_on FROM heating_suspension
                           WHERE account_id = %s AND resume_on IS NULL ORDER BY stop_on DESC LIMIT 1""",
                       [account_id]).fetchone()
    if row is None:
        raise HeatingError(f"account {account_code}: heating is not stopped")
    if resume_on <= row[1]:
        raise HeatingError(f"resume date {resume_on} is not after the stop date {row[1]}")
    return set_dates(conn, company_id, row[0], row[1], resume_on)


def set_dates(conn: psycopg.Connection, company_id: int, suspension_id: int, stop_on: dt.date,
              resume_on: dt.date | None) -> Suspension:
    """Correct a suspension's dates."""
    return _write(conn, """UPDATE heating_suspension SET stop_on = %s, resume_on = %s
                            WHERE id = %s AND company_id = %s
                           RETURNING id, account_id, stop_on, resume_on, reason""",
                  [stop_on, resume_on, suspension_id, company_id])


# the suspensions a period [%(start)s, %(end)s] is rated with: stopped by its last day and not
# resumed by its first (the billing run's selection; bill explain's)
OVERLAPS = "stop_on <= %(end)s AND (resume_on IS NULL OR resume_on > %(start)s)"


def overlapping(conn: psycopg.Connection, account_id: int, start: dt.date, end: dt.date) -> list[Suspension]:
    """An account's suspensions overlapping the period ``start`` .. ``end`` (inclusive), in stop order."""
    return [Suspension(*r) for r in conn.execute(
        f"""SELECT id, account_id, stop_on, resume_on, reason FROM heating_suspension
             WHERE account_id = %(account)s AND {OVERLAPS} ORDER BY stop_on""",
        {"account": account_id, "start": start, "end": end}).fetchall()]


def suspensions(conn: psycopg.Connection, company_id: int, account_code: str) -> list[Suspension]:
    account_id = _account(conn, company_id, account_code)
    return [Suspension(*r) for r in conn.execute(
        """SELECT id, account_id, stop_on, resume_on, reason FROM heating_suspension
            WHERE account_id = %s ORDER BY stop_on""", [account_id]).fetchall()]
