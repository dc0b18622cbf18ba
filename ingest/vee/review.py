"""What blocks billing in a meter book, and the supervisor's actions on it.

:func:`blockers` lists, for a book and period, what a billing run could not bill cleanly:

* ``held``: readings validation holds for review (register reset, spike, tamper, ...);
* ``reread``: readings a person asked to have read again;
* ``no_period_end_read``: meters in service with neither an acceptable real read inside the
  period-end window nor an estimate;
* ``critical_alert``: open critical alerts on the book's meters.

Estimated period-end reads are listed too (they do not block; the bill says "estimated").

Actions, each recorded append-only in ``reading_review_action`` with who, when, before and
after (the general audit trail of the deployment can pick these rows up):

* :func:`approve`: a held or rejected reading counts for billing as read;
* :func:`override`: a reading (or an estimate) gets a corrected value (method ``override``);
* :func:`request_reread`: the reading is kept out of billing and the meter is to be read again
  (an alert ``reread_requested`` tells the book's supervisor).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from meterline.errors import MeterlineError, NotFound
from meterline.ingest.vee import alerts as A
from meterline.ingest.vee import rules as R
from meterline.ingest.vee.config import GROUPS, VeeConfig
from meterline.ingest.vee.engine import AlertEvent
from meterline.ingest.vee.localtime import period_bounds

REREAD_REQUESTED = R.REREAD_REQUESTED
DISPLAY_FACTOR = {"m3": 1000, "L": 1, "kWh": 1000, "MWh": 1_000_000}


class ReviewError(MeterlineError):
    """A review action that cannot be done as asked (the reading is not there, nothing to approve...)."""

    def __init__(self, message: str, meter: str | None = None, ts: dt.datetime | None = None) -> None:
        self.meter = meter
        self.ts = ts
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Blocker:
    kind: str  # held, reread, no_period_end_read, critical_alert
    meter_id: int
    serial: str
    account: str | None
    ts: dt.datetime | None
    value: int | None
    what: str


@dataclass(slots=True)
class BookReview:
    book: str
    period: str
    supervisor: str | None
    meters: int
    blockers: list[Blocker] = field(default_factory=list)
    estimated: list[dict[str, Any]] = field(default_factory=list)


def _windows(config: VeeConfig) -> tuple[list[float], list[float]]:
    before = [config.params(g, None, None).period_end_before_days for g in GROUPS]
    after = [config.params(g, None, None).period_end_after_days for g in GROUPS]
    return before, after


_BOOK_METERS = """
SELECT m.id, m.serial, a.code AS account, m.quantity, m.display_unit,
       CASE m.protocol WHEN 'handheld' THEN 1 WHEN 'manual' THEN 2 ELSE 0 END AS grp
FROM meter m JOIN account a ON a.id = m.account_id JOIN meter_book b ON b.id = a.book_id
WHERE b.company_id = %(c)s AND b.code = %(book)s AND m.status = 'active' AND a.status = 'active'"""


def blockers(conn: psycopg.Connection, company_id: int, book: str, period: str, tz: str,
             config: VeeConfig) -> BookReview:
    row = conn.execute("SELECT id, supervisor FROM meter_book WHERE company_id = %s AND code = %s",
                       [company_id, book]).fetchone()
    if row is None:
        raise NotFound(f"meter book {book!r} does not exist")
    supervisor = row[1]
    start, end = period_bounds(period, tz)
    before, after = _windows(config)
    reach = dt.timedelta(days=max(after))
    args = {"c": company_id, "book": book, "start": start, "end": end, "reach": reach,
            "before": before, "after": after}
    with conn.cursor(row_factory=dict_row) as cur:
        meters = cur.execute(_BOOK_METERS, args).fetchall()
        review = BookReview(book, period, supervisor, len(meters))
        held = cur.execute(
            f"""SELECT bm.id, bm.serial, bm.account, v.ts, r.value, v.flags, v.auto_state, v.review
                FROM ({_BOOK_METERS}) bm
                JOIN reading_validation v ON v.meter_id = bm.id AND v.quantity = bm.quantity
                JOIN reading r ON r.meter_id = v.meter_id AND r.ts = v.ts AND r.quantity = v.quantity
                WHERE v.ts >= %(start)s AND v.ts <= %(end)s + %(reach)s
                  AND ((v.auto_state = 'held' AND v.review IS NULL) OR v.review = 'reread_requested')
                ORDER BY bm.serial, v.ts""", args).fetchall()
        for h in held:
            kind = "reread" if h["review"] == "reread_requested" else "held"
            what = ("re-read requested" if kind == "reread" else "held: " + ", ".join(h["flags"]))
            review.blockers.append(Blocker(kind, h["id"], h["serial"], h["account"], h["ts"], h["value"], what))
        ends = cur.execute(
            f"""SELECT bm.id, bm.serial, bm.account,
                       (SELECT e.ts FROM reading_effective e
                        WHERE e.meter_id = bm.id AND e.quantity = bm.quantity AND NOT e.estimated
                          AND e.ts >= %(end)s - (%(before)s::float8[])[bm.grp + 1] * interval '1 day'
                          AND e.ts <= %(end)s + (%(after)s::float8[])[bm.grp + 1] * interval '1 day'
                        ORDER BY abs(extract(epoch FROM e.ts - %(end)s)) LIMIT 1) AS real_ts,
                       (SELECT jsonb_build_object('value', e.value, 'method', e.method)
                        FROM reading_effective e
                        WHERE e.meter_id = bm.id AND e.quantity = bm.quantity AND e.estimated AND e.ts = %(end)s
                        LIMIT 1) AS estimate
                FROM ({_BOOK_METERS}) bm ORDER BY bm.serial""", args).fetchall()
        for e in ends:
            if e["real_ts"] is not None:
                continue
            if e["estimate"] is not None:
                review.estimated.append({"meter_id": e["id"], "serial": e["serial"], "account": e["account"],
                                         **e["estimate"]})
            else:
                review.blockers.append(Blocker("no_period_end_read", e["id"], e["serial"], e["account"], end, None,
                                               "no acceptable read near the period end and no estimate"))
        alerts = cur.execute(
            f"""SELECT al.id, al.rule, al.message, bm.id AS meter_id, bm.serial, bm.account, al.event_ts
                FROM ({_BOOK_METERS}) bm JOIN alert al ON al.meter_id = bm.id
                WHERE al.status <> 'resolved' AND al.severity = 'critical' ORDER BY bm.serial, al.id""",
            args).fetchall()
        for al in alerts:
            review.blockers.append(Blocker("critical_alert", al["meter_id"], al["serial"], al["account"],
                                           al["event_ts"], None, f"alert {al['id']} {al['rule']}: {al['message']}"))
    return review


# -- actions ---------------------------------------------------------------------------------

def _meter(conn: psycopg.Connection, company_id: int, serial: str) -> tuple[int, int, str]:
    row = conn.execute("SELECT id, quantity, display_unit FROM meter WHERE company_id = %s AND serial = %s",
                       [company_id, serial]).fetchone()
    if row is None:
        raise NotFound(f"meter {serial!r} does not exist")
    return row


def to_base_units(value: str, display_unit: str) -> int:
    """A value as a person types it, in the meter's display unit (``12.345`` m³ → 12345 L)."""
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(value)
    except InvalidOperation as exc:
        raise ReviewError(f"{value!r} is not a number") from exc
    base = d * DISPLAY_FACTOR[display_unit]
    if base < 0 or base != base.to_integral_value():
        raise ReviewError(f"{value} {display_unit} is not a whole number of base units or is negative")
    return int(base)


def _state(conn: psycopg.Connection, meter_id: int, ts: dt.datetime, quantity: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT r.value, v.flags, v.auto_state, v.review, v.corrected_value, v.method, v.reviewed_by
               FROM reading r LEFT JOIN reading_validation v
                 ON v.meter_id = r.meter_id AND v.ts = r.ts AND v.quantity = r.quantity
               WHERE r.meter_id = %s AND r.ts = %s AND r.quantity = %s""", [meter_id, ts, quantity]).fetchone()


def _estimate(conn: psycopg.Connection, meter_id: int, ts: dt.datetime, quantity: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT value, method, basis, superseded_at FROM reading_estimate
               WHERE meter_id = %s AND ts = %s AND quantity = %s""", [meter_id, ts, quantity]).fetchone()


def _audit(conn: psycopg.Connection, company_id: int, meter_id: int, ts: dt.datetime, quantity: int, target: str,
           action: str, actor: str, before: dict[str, Any], after: dict[str, Any], note: str | None) -> None:
    conn.execute(
        """INSERT INTO reading_review_action (company_id, meter_id, ts, quantity, target, action, actor, before,
                                              after, note)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        [company_id, meter_id, ts, quantity, target, action, actor, json.dumps(before, default=str),
         json.dumps(after, default=str), note])


def _set_review(conn: psycopg.Connection, company_id: int, meter_id: int, ts: dt.datetime, quantity: int,
                review: str, corrected: int | None, actor: str) -> None:
    conn.execute(
        """INSERT INTO reading_validation AS v (meter_id, ts, quantity, company_id, review, corrected_value, method,
                                               reviewed_by, reviewed_at)
           VALUES (%(m)s, %(ts)s, %(q)s, %(c)s, %(rv)s, %(cv)s, %(method)s, %(who)s, now())
           ON CONFLICT (meter_id, ts, quantity) DO UPDATE SET review = EXCLUDED.review,
               corrected_value = EXCLUDED.corrected_value, method = EXCLUDED.method,
               reviewed_by = EXCLUDED.reviewed_by, reviewed_at = now()""",
        {"m": meter_id, "ts": ts, "q": quantity, "c": company_id, "rv": review, "cv": corrected,
         "method": "override" if corrected is not None else None, "who": actor})


def _act(conn: psycopg.Connection, company_id: int, serial: str, ts: dt.datetime, actor: str, note: str | None,
         action: str, value: str | None = None) -> dict[str, Any]:
    if not actor:
        raise ReviewError(f"{action}: say who does it")
    with conn.transaction():
        meter_id, quantity, unit = _meter(conn, company_id, serial)
        before = _state(conn, meter_id, ts, quantity)
        target = "reading"
        if before is None:
            est = _estimate(conn, meter_id, ts, quantity)
            if est is None:
                raise ReviewError(f"meter {serial} has no reading or estimate at {ts.isoformat()}", serial, ts)
            if action == "request_reread":
                raise ReviewError("a re-read is requested on a reading, not on an estimate", serial, ts)
            target = "estimate"
            after = dict(est)
            if action == "override":
                v = to_base_units(value or "", unit)
                conn.execute("""UPDATE reading_estimate SET value = %s, method = 'override',
                                    basis = basis || jsonb_build_object('overridden_by', %s::text, 'previous',
                                                                        jsonb_build_object('value', value, 'method', method)),
                                    superseded_at = NULL
                                WHERE meter_id = %s AND ts = %s AND quantity = %s""",
                             [v, actor, meter_id, ts, quantity])
                after.update(value=v, method="override")
            else:
                conn.execute("""UPDATE reading_estimate SET basis = basis || jsonb_build_object('approved_by', %s::text)
                                WHERE meter_id = %s AND ts = %s AND quantity = %s""", [actor, meter_id, ts, quantity])
                after["approved_by"] = actor
            _audit(conn, company_id, meter_id, ts, quantity, target, action, actor, dict(est), after, note)
            return {"target": target, "before": dict(est), "after": after}
        if action == "approve":
            if before["auto_state"] in (None, "valid", "flagged") and before["review"] is None:
                raise ReviewError(f"reading of {serial} at {ts.isoformat()} already counts for billing: nothing to "
                                  "approve", serial, ts)
            _set_review(conn, company_id, meter_id, ts, quantity, "approved", None, actor)
        elif action == "override":
            _set_review(conn, company_id, meter_id, ts, quantity, "overridden", to_base_units(value or "", unit), actor)
        else:
            _set_review(conn, company_id, meter_id, ts, quantity, "reread_requested", None, actor)
            A.raise_alerts(conn, [AlertEvent(REREAD_REQUESTED.code, REREAD_REQUESTED.severity, meter_id,
                                             dt.datetime.now(dt.timezone.utc),
                                             f"re-read of meter {serial} requested by {actor}"
                                             + (f": {note}" if note else ""),
                                             {"reading_ts": ts.isoformat(), "requested_by": actor})])
        after = _state(conn, meter_id, ts, quantity)
        _audit(conn, company_id, meter_id, ts, quantity, target, action, actor, before, after or {}, note)
        return {"target": target, "before": before, "after": after}


def approve(conn: psycopg.Connection, company_id: int, serial: str, ts: dt.datetime, actor: str,
            note: str | None = None) -> dict[str, Any]:
    return _act(conn, company_id, serial, ts, actor, note, "approve")


def override(conn: psycopg.Connection, company_id: int, serial: str, ts: dt.datetime, value: str, actor: str,
             note: str | None = None) -> dict[str, Any]:
    """Correct a reading's (or an estimate's) value; ``value`` in the meter's display unit."""
    return _act(conn, company_id, serial, ts, actor, note, "override", value)


def request_reread(conn: psycopg.Connection, company_id: int, serial: str, ts: dt.datetime, actor: str,
                   note: str | None = None) -> dict[str, Any]:
    return _act(conn, company_id, serial, ts, actor, note, "request_reread")


def history(conn: psycopg.Connection, company_id: int, serial: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Review actions, newest first."""
    where, args = "a.company_id = %s", [company_id]
    if serial:
        where += " AND m.serial = %s"
        args.append(serial)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"""SELECT a.id, m.serial, a.ts, a.target, a.action, a.actor, a.at, a.before, a.after, a.note
                               FROM reading_review_action a JOIN meter m ON m.id = a.meter_id
                               WHERE {where} ORDER BY a.id DESC LIMIT %s""", [*args, limit]).fetchall()
