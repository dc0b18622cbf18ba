"""The audit trail: record actions, read an account's history and a cashier's day.

Rows of ``audit_log`` (migration 0101) come from database triggers on the audited tables
(registry, payments, billing runs, bill and alert changes, role grants) and from
:func:`record` for actions that are not a row change of an audited table. The actor and origin
of trigger rows are the session settings :func:`set_actor` puts there (the CLI and the API do
it for every connection they hand out). Payments, which never change once written, are audited
once per INSERT statement (0630): one row naming every payment id it wrote; the view
``payment_audit`` gives who, when and from where for each payment.

Rule for callers: a change to an audited table is recorded by its trigger — do not also call
:func:`record` for it (one action, one audit row). Call :func:`record` for decisions and
events: an approval, an export of personal data, a billing run started, a login refused.
To audit a new table: ``SELECT meterline_audit_table('my_table');`` in its migration.

Account history (``meterline audit --account``) is a union of :data:`HISTORY_SOURCES`, one
query per kind of event; a module that adds a table adds a source with
:func:`register_history_source` (sources whose tables do not exist are skipped).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from meterline.errors import NotFound
from meterline.store.personal import PERSONAL_FIELDS


def set_actor(conn: psycopg.Connection, actor: str, origin: str) -> None:
    """Name who acts on this session, and from where (read by the audit triggers)."""
    conn.execute("SELECT set_config('meterline.actor', %s, false), set_config('meterline.origin', %s, false)",
                 [actor, origin])


def session_settings(actor: str, origin: str) -> dict[str, str]:
    """The same as settings for ``Database.session_settings`` (applied to every connection)."""
    return {"meterline.actor": actor, "meterline.origin": origin}


def record(
    conn: psycopg.Connection,
    actor: str | None,
    action: str,
    entity_type: str,
    entity_id: Any = None,
    before: Any = None,
    after: Any = None,
    origin: str | None = None,
    *,
    company_id: int | None = None,
    account_id: int | None = None,
    group_level: bool = False,
) -> None:
    """Append one audit row in the caller's transaction.

    ``actor`` / ``origin`` default to the session's (:func:`set_actor`); ``company_id`` to the
    session's company (``group_level=True`` records a group-level action with no company).
    ``before`` / ``after`` are anything JSON can hold (dicts of the changed fields, typically).
    """
    conn.execute(
        """INSERT INTO audit_log (company_id, actor, origin, action, entity_type, entity_id, account_id, before, after)
           VALUES (CASE WHEN %(group)s THEN NULL ELSE coalesce(%(company)s, meterline_scope_company()) END,
                   coalesce(%(actor)s, meterline_audit_actor()), coalesce(%(origin)s, meterline_audit_origin()),
                   %(action)s, %(etype)s, %(eid)s, %(account)s, %(before)s, %(after)s)""",
        {"group": group_level, "company": company_id, "actor": actor, "origin": origin, "action": action,
         "etype": entity_type, "eid": None if entity_id is None else str(entity_id), "account": account_id,
         "before": None if before is None else Jsonb(before), "after": None if after is None else Jsonb(after)},
    )


# -- reading it back -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HistoryEvent:
    at: dt.datetime
    source: str      #: audit, account, reading, bill, payment, alert, ...
    event: str       #: what happened, for people
    entity: str      #: type:id
    actor: str | None
    detail: str      #: changed fields, amounts, ...


@dataclass(frozen=True, slots=True)
class HistorySource:
    """One kind of event in an account's history.

    ``sql`` returns rows ``(at timestamptz, event text, entity text, actor text, detail jsonb)``
    for the parameters ``company_id``, ``account_id``, ``customer_id``, ``tz``; ``requires`` names the
    tables it reads (the source is skipped while one is missing); ``describe`` turns a row's
    detail into text.
    """

    name: str
    sql: str
    requires: tuple[str, ...]
    describe: Callable[[dict[str, Any], int], str] = lambda detail, minor: ""


HISTORY_SOURCES: dict[str, HistorySource] = {}


def register_history_source(source: HistorySource) -> HistorySource:
    HISTORY_SOURCES[source.name] = source
    return source


def money(amount: int | None, minor_units: int = 100) -> str:
    """Minor units as a decimal string (exact)."""
    if amount is None:
        return ""
    digits = len(str(minor_units)) - 1
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(int(amount)), minor_units)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"


def describe_change(detail: dict[str, Any], _minor: int = 100) -> str:
    before, after = detail.get("before") or {}, detail.get("after") or {}
    skip = {"created_at", "company_id", "register_modulus"}
    if not before:
        keys = [k for k, v in after.items() if v is not None and k not in skip]
        return ", ".join(f"{k}={_show(k, after[k])}" for k in keys)
    if not after:
        return "deleted"
    changed = [k for k in after if k not in skip and before.get(k) != after.get(k)]
    return ", ".join(f"{k}: {_show(k, before.get(k))} → {_show(k, after.get(k))}" for k in changed)


def _show(key: str, value: Any) -> str:
    if key in PERSONAL_FIELDS and value is not None:
        return "(protected)"  # ciphertext: only its change is worth showing
    if isinstance(value, list) and len(value) > 6:  # the ids of a batch (0630): its ends and size
        return f"[{', '.join(json.dumps(v, ensure_ascii=False) for v in value[:3])}, … {json.dumps(value[-1])}] ({len(value)})"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


register_history_source(HistorySource(
    "audit",
    """SELECT l.at, l.action || ' ' || l.entity_type, l.entity_type || ':' || coalesce(l.entity_id, ''), l.actor,
              jsonb_build_object('before', l.before, 'after', l.after, 'origin', l.origin)
       FROM audit_log l
       WHERE l.company_id = %(company_id)s
         AND (l.account_id = %(account_id)s
              OR (l.entity_type = 'customer' AND l.entity_id = %(customer_id)s::text))""",
    ("audit_log",), describe_change))

register_history_source(HistorySource(
    "account",
    """SELECT a.opened_on::timestamp AT TIME ZONE %(tz)s, 'account opened', 'account:' || a.id, NULL::text,
              jsonb_build_object('address', a.address, 'use_type', a.use_type, 'tariff', a.tariff_id)
       FROM account a WHERE a.id = %(account_id)s
       UNION ALL
       SELECT a.closed_on::timestamp AT TIME ZONE %(tz)s, 'account closed', 'account:' || a.id, NULL, '{}'::jsonb
       FROM account a WHERE a.id = %(account_id)s AND a.closed_on IS NOT NULL""",
    ("account",), lambda d, m: f"{d.get('address', '')} ({d.get('use_type', '')}, {d.get('tariff', '')})"))

register_history_source(HistorySource(
    "reading",
    """SELECT max(r.ts), 'readings ' || to_char(date_trunc('month', r.ts AT TIME ZONE %(tz)s), 'YYYY-MM'),
              'meter:' || m.serial, NULL,
              jsonb_build_object('n', count(*), 'first', min(r.value), 'last', max(r.value))
       FROM reading r JOIN meter m ON m.id = r.meter_id
       WHERE m.account_id = %(account_id)s
       GROUP BY m.serial, date_trunc('month', r.ts AT TIME ZONE %(tz)s)""",
    ("reading", "meter"), lambda d, m: f"{d['n']} readings, register {d['first']} → {d['last']}"))

register_history_source(HistorySource(
    "bill",
    """SELECT b.created_at, 'bill ' || b.period || CASE WHEN b.status = 'reversed' THEN ' (reversed)' ELSE '' END,
              'bill:' || b.id, NULL,
              jsonb_build_object('total', b.total, 'consumption', b.consumption, 'due', b.due_date)
       FROM bill b WHERE b.account_id = %(account_id)s""",
    ("bill",), lambda d, m: f"total {money(d.get('total'), m)}, {d.get('consumption')} L, due {d.get('due')}"))

register_history_source(HistorySource(
    "payment",
    """SELECT p.received_at, 'payment ' || p.channel, 'payment:' || p.id, p.created_by,
              jsonb_build_object('amount', p.amount, 'external_id', p.external_id)
       FROM payment p WHERE p.account_id = %(account_id)s""",
    ("payment",), lambda d, m: f"{money(d.get('amount'), m)} ({d.get('external_id')})"))

register_history_source(HistorySource(
    "alert",
    """SELECT al.first_seen, 'alert ' || al.rule || ' (' || al.severity || ', ' || al.status || ')',
              'alert:' || al.id, coalesce(al.resolved_by, al.acknowledged_by),
              jsonb_build_object('message', al.message, 'occurrences', al.occurrences)
       FROM alert al WHERE al.account_id = %(account_id)s
          OR al.meter_id IN (SELECT id FROM meter WHERE account_id = %(account_id)s)""",
    ("alert",), lambda d, m: f"{d.get('message')} ×{d.get('occurrences')}"))


@dataclass(frozen=True, slots=True)
class AccountHistory:
    account_id: int
    account_code: str
    customer_code: str
    status: str
    events: list[HistoryEvent] = field(default_factory=list)


def _existing(conn: psycopg.Connection, tables: tuple[str, ...]) -> bool:
    return all(conn.execute("SELECT to_regclass(%s) IS NOT NULL", [t]).fetchone()[0] for t in tables)


def account_history(conn: psycopg.Connection, company_id: int, account_code: str, *,
                    sources: list[str] | None = None) -> AccountHistory:
    """Everything that happened to an account (in the session's scope), oldest first."""
    row = conn.execute(
        """SELECT a.id, a.code, c.code, a.customer_id, a.status, co.timezone, co.minor_units
           FROM account a JOIN customer c ON c.id = a.customer_id JOIN company co ON co.id = a.company_id
           WHERE a.company_id = %s AND a.code = %s""", [company_id, account_code]).fetchone()
    if row is None:
        raise NotFound(f"account {account_code!r} does not exist in this company")
    account_id, code, customer_code, customer_id, status, tz, minor = row
    params = {"company_id": company_id, "account_id": account_id, "customer_id": customer_id, "tz": tz}
    events: list[HistoryEvent] = []
    for name, src in HISTORY_SOURCES.items():
        if sources is not None and name not in sources:
            continue
        if not _existing(conn, src.requires):
            continue
        for at, event, entity, actor, detail in conn.execute(src.sql, params).fetchall():
            events.append(HistoryEvent(at, name, event, entity, actor, src.describe(detail or {}, minor)))
    events.sort(key=lambda e: (e.at, e.source != "account", e.source))
    return AccountHistory(account_id, code, customer_code, status, events)


@dataclass(frozen=True, slots=True)
class CashierDay:
    cashier: str
    day: dt.date
    payments: list[tuple[dt.datetime, str, str, str | None, int]]  #: (received, channel, external id, account, amount)
    totals: dict[str, int]                                          #: amount by channel
    events: list[HistoryEvent]                                      #: the cashier's audited actions that day
    minor_units: int = 100

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def cashier_day(conn: psycopg.Connection, company_id: int, cashier: str, day: dt.date) -> CashierDay:
    """A cashier's business day: payments taken (booked that day) and every audited action."""
    tz, minor = conn.execute("SELECT timezone, minor_units FROM company WHERE id = %s", [company_id]).fetchone()
    zone = ZoneInfo(tz)
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    payments = conn.execute(
        """SELECT p.received_at, p.channel, p.external_id, a.code, p.amount
           FROM payment p LEFT JOIN account a ON a.id = p.account_id
           WHERE p.company_id = %s AND p.created_by = %s AND p.booked_on = %s ORDER BY p.received_at, p.id""",
        [company_id, cashier, day]).fetchall()
    totals: dict[str, int] = {}
    for _at, channel, _ext, _acc, amount in payments:
        totals[channel] = totals.get(channel, 0) + amount
    events = [
        HistoryEvent(at, "audit", f"{action} {etype}", f"{etype}:{eid or ''}", actor,
                     describe_change({"before": before, "after": after}))
        for at, action, etype, eid, actor, before, after in conn.execute(
            """SELECT at, action, entity_type, entity_id, actor, before, after FROM audit_log
               WHERE company_id = %s AND actor = %s AND at >= %s AND at < %s ORDER BY at, id""",
            [company_id, cashier, start, end]).fetchall()
    ]
    return CashierDay(cashier, day, payments, totals, events, minor)
