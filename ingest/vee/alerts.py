"""Alerts for metering supervisors: raise (one open alert per meter and rule), acknowledge, resolve.

An alert is raised from :class:`~meterline.ingest.vee.engine.AlertEvent` s: a new one is opened
(routed to the supervisor of the meter's book, ``meter_book.supervisor``); an open or
acknowledged one is updated (last seen, occurrences, the worst severity, the latest message)
only when the event is newer than what it already recorded, so re-running validation over the
same period changes nothing. Book-level alerts (reading rate) are one open per (book, rule).

Every change also writes an ``alert_event`` row (the outbox the sinks deliver from:
:mod:`meterline.exporters.alert_sinks`) in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Sequence

import psycopg
from psycopg.rows import dict_row

from meterline.errors import MeterlineError, NotFound
from meterline.ingest.vee.engine import AlertEvent

STATUSES = ("open", "acknowledged", "resolved")

_PAYLOAD = """jsonb_build_object(
    'alert_id', a.id, 'company', c.code, 'rule', a.rule, 'severity', a.severity, 'status', a.status,
    'message', a.message, 'detail', a.detail, 'meter_id', a.meter_id, 'serial', m.serial,
    'account_id', a.account_id, 'book_id', a.book_id, 'book', b.code, 'assignee', a.assignee,
    'first_seen', a.first_seen, 'last_seen', a.last_seen, 'occurrences', a.occurrences,
    'event_ts', a.event_ts, 'period', a.period, 'acknowledged_by', a.acknowledged_by,
    'acknowledged_at', a.acknowledged_at, 'resolved_by', a.resolved_by, 'resolved_at', a.resolved_at)"""

_SEV = "array_position(ARRAY['info','warning','critical'], {})"

_UPSERT_METER = f"""
WITH ev AS (
    SELECT * FROM unnest(%(meter)s::bigint[], %(rule)s::text[], %(severity)s::text[], %(message)s::text[],
                         %(detail)s::jsonb[], %(event_ts)s::timestamptz[], %(n)s::int[], %(period)s::text[])
             AS e(meter_id, rule, severity, message, detail, event_ts, n, period)
), routed AS (
    SELECT ev.*, m.company_id, m.account_id, a.book_id, b.supervisor
    FROM ev JOIN meter m ON m.id = ev.meter_id
    LEFT JOIN account a ON a.id = m.account_id
    LEFT JOIN meter_book b ON b.id = a.book_id
), up AS (
    INSERT INTO alert AS al (company_id, meter_id, account_id, book_id, rule, severity, message, detail,
                             first_seen, last_seen, occurrences, assignee, event_ts, period)
    SELECT company_id, meter_id, account_id, book_id, rule, severity, message, detail, now(), now(), n,
           supervisor, event_ts, period
    FROM routed
    ON CONFLICT (meter_id, rule) WHERE status <> 'resolved' DO UPDATE SET
        last_seen = now(),
        occurrences = al.occurrences + EXCLUDED.occurrences,
        severity = CASE WHEN {_SEV.format('EXCLUDED.severity')} > {_SEV.format('al.severity')}
                        THEN EXCLUDED.severity ELSE al.severity END,
        message = EXCLUDED.message, detail = EXCLUDED.detail,
        event_ts = EXCLUDED.event_ts, period = coalesce(EXCLUDED.period, al.period)
    WHERE al.event_ts IS NULL OR EXCLUDED.event_ts > al.event_ts
    RETURNING al.*, (xmax = 0) AS inserted
)
INSERT INTO alert_event (company_id, alert_id, kind, payload)
SELECT a.company_id, a.id, CASE WHEN a.inserted THEN 'opened' ELSE 'updated' END, {_PAYLOAD}
FROM up a
JOIN company c ON c.id = a.company_id
LEFT JOIN meter m ON m.id = a.meter_id
LEFT JOIN meter_book b ON b.id = a.book_id
RETURNING alert_id, kind"""

_UPSERT_BOOK = f"""
WITH ev AS (
    SELECT * FROM unnest(%(book)s::bigint[], %(rule)s::text[], %(severity)s::text[], %(message)s::text[],
                         %(detail)s::jsonb[], %(event_ts)s::timestamptz[], %(n)s::int[], %(period)s::text[])
             AS e(book_id, rule, severity, message, detail, event_ts, n, period)
), up AS (
    INSERT INTO alert AS al (company_id, book_id, rule, severity, message, detail, first_seen, last_seen,
                             occurrences, assignee, event_ts, period)
    SELECT b.company_id, ev.book_id, ev.rule, ev.severity, ev.message, ev.detail, now(), now(), ev.n,
           b.supervisor, ev.event_ts, ev.period
    FROM ev JOIN meter_book b ON b.id = ev.book_id
    ON CONFLICT (book_id, rule) WHERE meter_id IS NULL AND status <> 'resolved' DO UPDATE SET
        last_seen = now(), occurrences = al.occurrences + EXCLUDED.occurrences,
        severity = EXCLUDED.severity, message = EXCLUDED.message, detail = EXCLUDED.detail,
        event_ts = EXCLUDED.event_ts, period = coalesce(EXCLUDED.period, al.period)
    WHERE al.event_ts IS NULL OR EXCLUDED.event_ts > al.event_ts
       OR (EXCLUDED.event_ts = al.event_ts AND EXCLUDED.detail <> al.detail)
    RETURNING al.*, (xmax = 0) AS inserted
)
INSERT INTO alert_event (company_id, alert_id, kind, payload)
SELECT a.company_id, a.id, CASE WHEN a.inserted THEN 'opened' ELSE 'updated' END, {_PAYLOAD}
FROM up a
JOIN company c ON c.id = a.company_id
LEFT JOIN meter m ON m.id = a.meter_id
LEFT JOIN meter_book b ON b.id = a.book_id
RETURNING alert_id, kind"""


@dataclass(frozen=True, slots=True)
class RaiseResult:
    opened: int = 0
    updated: int = 0


def _merge(events: Sequence[AlertEvent], key) -> list[AlertEvent]:
    """One event per key: the latest, counting all (a statement may touch an alert once)."""
    best: dict[Any, AlertEvent] = {}
    counts: dict[Any, int] = {}
    for e in events:
        k = key(e)
        counts[k] = counts.get(k, 0) + e.count
        if k not in best or e.event_ts >= best[k].event_ts:
            best[k] = e
    return [AlertEvent(e.rule, e.severity, e.meter_id, e.event_ts, e.message, e.detail, counts[k], e.book_id, e.period)
            for k, e in best.items()]


def raise_alerts(conn: psycopg.Connection, events: Sequence[AlertEvent]) -> RaiseResult:
    """Open or update alerts for the events (in the caller's transaction, if any)."""
    meter_ev = _merge([e for e in events if e.meter_id is not None], lambda e: (e.meter_id, e.rule))
    book_ev = _merge([e for e in events if e.meter_id is None and e.book_id is not None], lambda e: (e.book_id, e.rule))
    opened = updated = 0
    for evs, sql, key in ((meter_ev, _UPSERT_METER, "meter"), (book_ev, _UPSERT_BOOK, "book")):
        if not evs:
            continue
        params = {
            key: [e.meter_id if key == "meter" else e.book_id for e in evs],
            "rule": [e.rule for e in evs], "severity": [e.severity for e in evs],
            "message": [e.message for e in evs], "detail": [json.dumps(e.detail, default=str) for e in evs],
            "event_ts": [e.event_ts for e in evs], "n": [e.count for e in evs], "period": [e.period for e in evs],
        }
        for _id, kind in conn.execute(sql, params).fetchall():
            opened += kind == "opened"
            updated += kind == "updated"
    return RaiseResult(opened, updated)


def resolve_cleared(conn: psycopg.Connection, rule: str, meter_ids: Sequence[int] = (), book_ids: Sequence[int] = (),
                    by: str = "vee", note: str = "condition no longer present", *,
                    meter_range: tuple[int, int] | None = None, keep: Sequence[int] = (),
                    company_id: int | None = None) -> int:
    """Resolve open alerts of ``rule`` where validation found it cleared: on the listed meters /
    books, or on the meters of ``meter_range`` (of ``company_id``) except those in ``keep``."""
    n = 0
    scopes: list[tuple[str, list[Any]]] = []
    if meter_ids:
        scopes.append(("a.meter_id = ANY(%s)", [list(meter_ids)]))
    if book_ids:
        scopes.append(("a.book_id = ANY(%s) AND a.meter_id IS NULL", [list(book_ids)]))
    if meter_range is not None:
        scopes.append(("a.company_id = %s AND a.meter_id >= %s AND a.meter_id <= %s AND NOT (a.meter_id = ANY(%s))",
                       [company_id, meter_range[0], meter_range[1], list(keep)]))
    for where, args in scopes:
        rows = conn.execute(
            f"""WITH done AS (
                    UPDATE alert a SET status = 'resolved', resolved_by = %s, resolved_at = now(),
                           detail = a.detail || jsonb_build_object('resolution', %s::text)
                    WHERE a.rule = %s AND a.status <> 'resolved' AND {where}
                    RETURNING a.*)
                INSERT INTO alert_event (company_id, alert_id, kind, payload)
                SELECT a.company_id, a.id, 'resolved', {_PAYLOAD}
                FROM done a JOIN company c ON c.id = a.company_id
                LEFT JOIN meter m ON m.id = a.meter_id LEFT JOIN meter_book b ON b.id = a.book_id
                RETURNING alert_id""", [by, note, rule, *args]).fetchall()
        n += len(rows)
    return n


def resolve_explained(conn: psycopg.Connection, meter_ids: Sequence[int], event_ts: Sequence[dt.datetime],
                      rules: Sequence[str], note: str, by: str = "vee") -> int:
    """Resolve alerts of ``rules`` that a read raised last (same meter and event time), now that a
    later read explained it (e.g. the read was an isolated outlier, rejected under its own rule)."""
    if not meter_ids:
        return 0
    rows = conn.execute(
        f"""WITH done AS (
                UPDATE alert a SET status = 'resolved', resolved_by = %s, resolved_at = now(),
                       detail = a.detail || jsonb_build_object('resolution', %s::text)
                FROM unnest(%s::bigint[], %s::timestamptz[]) AS k(meter_id, event_ts)
                WHERE a.meter_id = k.meter_id AND a.event_ts = k.event_ts AND a.rule = ANY(%s)
                  AND a.status <> 'resolved'
                RETURNING a.*)
            INSERT INTO alert_event (company_id, alert_id, kind, payload)
            SELECT a.company_id, a.id, 'resolved', {_PAYLOAD}
            FROM done a JOIN company c ON c.id = a.company_id
            LEFT JOIN meter m ON m.id = a.meter_id LEFT JOIN meter_book b ON b.id = a.book_id
            RETURNING alert_id""", [by, note, list(meter_ids), list(event_ts), list(rules)]).fetchall()
    return len(rows)


class AlertStateError(MeterlineError):
    """An alert cannot make the requested step (e.g. acknowledging a resolved alert)."""

    def __init__(self, alert_id: int, status: str, action: str) -> None:
        self.alert_id = alert_id
        self.status = status
        self.action = action
        super().__init__(f"alert {alert_id} is {status}: cannot {action} it")


def _transition(conn: psycopg.Connection, company_id: int, alert_id: int, action: str, who: str,
                note: str | None) -> dict[str, Any]:
    if not who:
        raise MeterlineError(f"{action}: say who does it")
    with conn.transaction():
        row = conn.execute("SELECT status FROM alert WHERE id = %s AND company_id = %s FOR UPDATE",
                           [alert_id, company_id]).fetchone()
        if row is None:
            raise NotFound(f"alert {alert_id} does not exist")
        status = row[0]
        if action == "acknowledge":
            if status != "open":
                raise AlertStateError(alert_id, status, action)
            sets = "status = 'acknowledged', acknowledged_by = %(who)s, acknowledged_at = now()"
            kind = "acknowledged"
        else:
            if status == "resolved":
                raise AlertStateError(alert_id, status, action)
            sets = "status = 'resolved', resolved_by = %(who)s, resolved_at = now()"
            kind = "resolved"
        if note:
            sets += ", detail = detail || jsonb_build_object('note_' || %(kind)s, %(note)s::text)"
        conn.execute(f"UPDATE alert SET {sets} WHERE id = %(id)s", {"who": who, "id": alert_id, "note": note,
                                                                   "kind": kind})
        conn.execute(f"""INSERT INTO alert_event (company_id, alert_id, kind, payload)
                         SELECT a.company_id, a.id, %s, {_PAYLOAD}
                         FROM alert a JOIN company c ON c.id = a.company_id
                         LEFT JOIN meter m ON m.id = a.meter_id LEFT JOIN meter_book b ON b.id = a.book_id
                         WHERE a.id = %s""", [kind, alert_id])
    return get_alert(conn, company_id, alert_id)


def acknowledge(conn: psycopg.Connection, company_id: int, alert_id: int, who: str, note: str | None = None) -> dict[str, Any]:
    """open → acknowledged, recording who and when."""
    return _transition(conn, company_id, alert_id, "acknowledge", who, note)


def resolve(conn: psycopg.Connection, company_id: int, alert_id: int, who: str, note: str | None = None) -> dict[str, Any]:
    """open or acknowledged → resolved, recording who and when."""
    return _transition(conn, company_id, alert_id, "resolve", who, note)


_LIST = """SELECT a.id, a.rule, a.severity, a.status, a.message, a.detail, a.meter_id, m.serial, a.book_id,
                  b.code AS book, a.assignee, a.first_seen, a.last_seen, a.occurrences, a.event_ts, a.period,
                  a.acknowledged_by, a.acknowledged_at, a.resolved_by, a.resolved_at
           FROM alert a LEFT JOIN meter m ON m.id = a.meter_id LEFT JOIN meter_book b ON b.id = a.book_id"""


def get_alert(conn: psycopg.Connection, company_id: int, alert_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_LIST + " WHERE a.id = %s AND a.company_id = %s", [alert_id, company_id]).fetchone()
    if row is None:
        raise NotFound(f"alert {alert_id} does not exist")
    return row


def list_alerts(conn: psycopg.Connection, company_id: int, *, statuses: Sequence[str] = ("open", "acknowledged"),
                rule: str | None = None, severity: str | None = None, book: str | None = None,
                assignee: str | None = None, meter_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
    where = ["a.company_id = %s", "a.status = ANY(%s)"]
    args: list[Any] = [company_id, list(statuses)]
    for cond, val in (("a.rule = %s", rule), ("a.severity = %s", severity), ("b.code = %s", book),
                      ("a.assignee = %s", assignee), ("a.meter_id = %s", meter_id)):
        if val is not None:
            where.append(cond)
            args.append(val)
    sql = (_LIST + " WHERE " + " AND ".join(where) +
           " ORDER BY array_position(ARRAY['critical','warning','info'], a.severity), a.last_seen DESC, a.id LIMIT %s")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, [*args, limit]).fetchall()


def open_counts(conn: psycopg.Connection) -> list[tuple[str, str, str, int]]:
    """(company code, rule, severity, count) of alerts not resolved: the Prometheus gauge's figures."""
    return conn.execute(
        """SELECT c.code, a.rule, a.severity, count(*) FROM alert a JOIN company c ON c.id = a.company_id
           WHERE a.status <> 'resolved' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""").fetchall()


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
