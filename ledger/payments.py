"""Payments: idempotent by (channel, external transaction id), allocated and posted in bulk.

One code path for one payment (the HTTP API) and for a million (a bank return file, the
benchmark): :func:`record_payments` takes a batch, and per chunk runs one statement that

1. drops the payments already recorded (a replay changes nothing) and repeats inside the batch;
2. books each on the first open business day on or after the day it was received (company time
   zone), for its channel and cashier;
3. allocates each to its account's open items (:mod:`meterline.ledger.allocation`, set-based);
4. writes the journal entries (Dr ``CASH:…`` amount; Cr ``AR:<account>`` what was allocated;
   Cr ``PREPAID:<account>`` the rest, or ``SUSPENSE:<channel>`` when no account matched), the
   payment rows with their channel's evidence, the allocations, and the items' settled amounts.

The open items are locked as they are read (``FOR UPDATE`` in id order, as every allocating
operation does), so concurrent payments to one account queue instead of settling the same item
twice. :func:`record_payments_parallel` runs :func:`record_payments` on several connections at
once over disjoint sets of accounts (each part its own transaction), for bulk imports that need
not be one transaction.

Each INSERT statement on ``payment`` is audited by one ``audit_log`` row naming every payment
it wrote (migration 0630; ``payment_audit`` has who / when / from where per payment).
A payment replayed with a different amount or account is a conflict: reported per payment by
:func:`record_payments`, raised by :func:`record_payment`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import psycopg
from psycopg.types.json import Jsonb

from meterline.ledger import chart
from meterline.ledger.allocation import allocation_sql
from meterline.ledger.errors import DayClosed, InvalidPayment, PaymentConflict
from meterline.ledger.journal import CompanyInfo, company_info
from meterline.ledger.policy import AllocationPolicy
from meterline.store.db import local_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PaymentIn:
    """One payment as a channel reports it."""

    external_id: str
    account_id: int | None  # None: no account matched (the money goes to suspense)
    amount: int  # minor units, > 0
    received_at: dt.datetime  # aware
    cash_account: str | None = None  # default: CASH:<channel>[:<cashier>]
    cashier: str | None = None  # counter cashier, bank code, merchant id: the close scope
    tender: str | None = None  # cash, card, transfer, wallet, ...
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        if not self.external_id or len(self.external_id) > 128:
            out.append("external id must be 1 to 128 characters")
        if not isinstance(self.amount, int) or isinstance(self.amount, bool) or self.amount <= 0:
            out.append(f"amount must be a positive integer of minor units, got {self.amount!r}")
        if self.received_at.tzinfo is None:
            out.append("received_at has no time zone")
        if self.cash_account is not None:
            try:
                if chart.account_class(self.cash_account).prefix != "CASH":
                    out.append(f"cash account {self.cash_account} is not a CASH account")
            except Exception as exc:  # UnknownAccountCode
                out.append(str(exc))
        return out


@dataclass(frozen=True, slots=True)
class PaymentConflictInfo:
    external_id: str
    field: str
    stored: object
    given: object


@dataclass
class PaymentBatchResult:
    recorded: int = 0
    replayed: int = 0
    amount: int = 0
    allocated: int = 0
    to_prepaid: int = 0
    to_suspense: int = 0
    conflicts: list[PaymentConflictInfo] = field(default_factory=list)

    def add(self, other: PaymentBatchResult) -> None:
        """Add what another part of the batch recorded."""
        self.recorded += other.recorded
        self.replayed += other.replayed
        self.amount += other.amount
        self.allocated += other.allocated
        self.to_prepaid += other.to_prepaid
        self.to_suspense += other.to_suspense
        self.conflicts.extend(other.conflicts)


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A payment as stored (what a channel's query or a replay gets back)."""

    id: int
    channel: str
    external_id: str
    account_id: int | None
    amount: int
    received_at: dt.datetime
    booked_on: dt.date
    entry_id: int
    allocated: int
    reversed: bool
    evidence: dict
    replay: bool = False


# the items' settled amounts, from allocations ``alloc`` (entry_id, payment_id, item_id, amount)
_SETTLE = """
    UPDATE receivable_item i SET settled = i.settled + a.amount
      FROM (SELECT item_id, sum(amount) AS amount FROM {alloc} GROUP BY item_id) a
     WHERE i.id = a.item_id
"""


def _write_sql(numbered: str, alloc: str, settle: bool = True) -> str:
    """The writing half: entries, payments, postings, allocations, settled amounts.

    ``numbered`` has the new payments with their ``entry_id``, ``payment_id`` and ``booked_on``;
    ``alloc`` their allocations ``(entry_id, payment_id, item_id, amount)``. Without ``settle``
    the items' settled amounts are left to the caller (:data:`_SETTLE`).
    """
    up = f""",
up AS ({_SETTLE.format(alloc=alloc)})""" if settle else ""
    return f"""
paysum AS MATERIALIZED (
    SELECT n.*, coalesce(a.allocated, 0) AS allocated
      FROM {numbered} n LEFT JOIN (SELECT entry_id, sum(amount) AS allocated FROM {alloc} GROUP BY entry_id) a USING (entry_id)
),
je AS (
    INSERT INTO journal_entry (id, company_id, booked_on, kind, ref_type, ref_id, idempotency_key,
                               created_by, channel, cashier)
    SELECT entry_id, %(company)s, booked_on, 'payment', 'payment', payment_id,
           'pay:' || %(channel)s || ':' || ext, %(by)s, %(channel)s, cashier
      FROM {numbered}
),
pm AS (
    INSERT INTO payment (id, company_id, channel, external_id, account_id, amount, received_at, booked_on,
                         entry_id, evidence, created_by, cash_account, tender)
    SELECT payment_id, %(company)s, %(channel)s, ext, account_id, amount, received_at, booked_on,
           entry_id, evidence, %(by)s, cash_account, tender
      FROM {numbered}
),
po AS (
    INSERT INTO posting (entry_id, line_no, company_id, account_code, amount)
    SELECT entry_id, 1, %(company)s, cash_account, amount FROM paysum
    UNION ALL
    SELECT entry_id, 2, %(company)s, 'AR:' || account_id, -allocated FROM paysum WHERE allocated > 0
    UNION ALL
    SELECT entry_id, 3, %(company)s,
           CASE WHEN account_id IS NULL THEN %(suspense)s ELSE 'PREPAID:' || account_id END, allocated - amount
      FROM paysum WHERE amount > allocated
),
al AS (
    INSERT INTO allocation (company_id, entry_id, item_id, payment_id, source, amount)
    SELECT %(company)s, entry_id, item_id, payment_id, 'payment', amount FROM {alloc}
){up}
SELECT count(*),
       coalesce(sum(amount), 0)::bigint,
       coalesce(sum(allocated), 0)::bigint,
       coalesce(sum(amount - allocated) FILTER (WHERE account_id IS NOT NULL), 0)::bigint,
       coalesce(sum(amount) FILTER (WHERE account_id IS NULL), 0)::bigint
  FROM paysum
"""


def _payment_sql(policy: AllocationPolicy) -> str:
    """One statement for a small batch (one round trip; the API's path)."""
    return f"""
WITH input AS MATERIALIZED (
    SELECT u.* FROM unnest(%(ext)s::text[], %(acct)s::bigint[], %(amount)s::bigint[], %(received)s::timestamptz[],
                           %(cash)s::text[], %(cashier)s::text[], %(tender)s::text[], %(evidence)s::jsonb[])
         WITH ORDINALITY AS u(ext, account_id, amount, received_at, cash_account, cashier, tender, evidence, src_no)
),
{_NUMBER.format(source="input")},
{allocation_sql(policy, "numbered")},
{_write_sql("numbered", "alloc")}
"""


# replays (already recorded, or repeated in the batch) dropped; booked on the first open day
_NUMBER = """
days AS MATERIALIZED (
    SELECT d.day, d.ck, ledger_open_day(%(company)s, d.day, %(channel)s, nullif(d.ck, '')) AS booked_on
      FROM (SELECT DISTINCT (received_at AT TIME ZONE %(tz)s)::date AS day, coalesce(cashier, '') AS ck FROM {source}) d
),
numbered AS MATERIALIZED (
    SELECT f.*, dd.booked_on,
           nextval('journal_entry_id_seq') AS entry_id, nextval('payment_id_seq') AS payment_id
      FROM (SELECT DISTINCT ON (i.ext) i.* FROM {source} i
              LEFT JOIN LATERAL (SELECT 1 AS hit FROM payment p   -- an index probe per payment
                                  WHERE p.company_id = %(company)s AND p.channel = %(channel)s AND p.external_id = i.ext
                                  LIMIT 1) seen ON true
             WHERE seen.hit IS NULL
             ORDER BY i.ext, i.src_no) f
      JOIN days dd ON dd.day = (f.received_at AT TIME ZONE %(tz)s)::date AND dd.ck = coalesce(f.cashier, '')
)"""

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS ml_pay_in (
    src_no bigint, ext text, account_id bigint, amount bigint, received_at timestamptz, cash_account text,
    cashier text, tender text, evidence jsonb) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ml_pay (
    src_no bigint, ext text, account_id bigint, amount bigint, received_at timestamptz, cash_account text,
    cashier text, tender text, evidence jsonb, booked_on date, entry_id bigint, payment_id bigint) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ml_alloc (entry_id bigint, payment_id bigint, item_id bigint, amount bigint)
    ON COMMIT DELETE ROWS;
TRUNCATE ml_pay_in, ml_pay, ml_alloc
"""


_STAGE_TYPES = ["int8", "text", "int8", "int8", "timestamptz", "text", "text", "text", "jsonb"]


def _bulk_chunk(conn: psycopg.Connection, policy: AllocationPolicy, params: dict[str, Any],
                rows: list[tuple]) -> tuple[int, ...]:
    """A big batch in steps through analysed temporary tables, so every join is planned for its size."""
    for statement in _STAGE.strip().split(";\n"):
        conn.execute(statement)
    with conn.cursor() as cur:  # binary: half the client's time of text for a chunk of 50,000
        with cur.copy("COPY ml_pay_in (src_no, ext, account_id, amount, received_at, cash_account, cashier, tender,"
                      " evidence) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGE_TYPES)
            for row in rows:
                copy.write_row(row)
    conn.execute("ANALYZE ml_pay_in")
    conn.execute(f"WITH {_NUMBER.format(source='ml_pay_in')} INSERT INTO ml_pay SELECT * FROM numbered", params,
                 prepare=False)
    conn.execute("ANALYZE ml_pay")
    conn.execute(f"WITH {allocation_sql(policy, 'ml_pay')} INSERT INTO ml_alloc SELECT entry_id, payment_id, item_id, amount"
                 " FROM alloc", params, prepare=False)
    conn.execute("ANALYZE ml_alloc")
    out = conn.execute(f"WITH {_write_sql('ml_pay', 'ml_alloc', settle=False)}", params, prepare=False).fetchone()
    # the settled amounts by primary-key probes: a hash join would read all of receivable_item
    # (every item ever billed) once per chunk, which the planner prefers to 50,000 probes
    with local_settings(conn, enable_hashjoin="off", enable_mergejoin="off"):
        conn.execute(_SETTLE.format(alloc="ml_alloc"), prepare=False)
    return out


_CONFLICTS = """
SELECT i.ext, p.amount, i.amount, p.account_id, i.account_id
  FROM unnest(%(ext)s::text[], %(acct)s::bigint[], %(amount)s::bigint[]) AS i(ext, account_id, amount)
  JOIN payment p ON p.company_id = %(company)s AND p.channel = %(channel)s AND p.external_id = i.ext
 WHERE p.amount <> i.amount OR p.account_id IS DISTINCT FROM i.account_id
"""


def _check_accounts(conn: psycopg.Connection, company_id: int, company: CompanyInfo,
                    payments: Sequence[PaymentIn]) -> None:
    """Refuse the batch when one of its account ids is not an account of the company."""
    accounts = sorted({p.account_id for p in payments if p.account_id is not None})
    if accounts:
        foreign = conn.execute(
            "SELECT count(*) FROM unnest(%s::bigint[]) a(id) LEFT JOIN account ac ON ac.id = a.id AND ac.company_id = %s"
            " WHERE ac.id IS NULL", [accounts, company_id]).fetchone()[0]
        if foreign:
            raise InvalidPayment(f"{foreign} account id(s) are not accounts of company {company.code}")


def _conflicts(conn: psycopg.Connection, params: Mapping[str, Any]) -> list[PaymentConflictInfo]:
    """The payments of ``params`` (ext, acct, amount) stored before with another amount or account."""
    out = []
    for ext, s_amount, g_amount, s_acct, g_acct in conn.execute(_CONFLICTS, params).fetchall():
        if s_amount != g_amount:
            out.append(PaymentConflictInfo(ext, "amount", s_amount, g_amount))
        else:
            out.append(PaymentConflictInfo(ext, "account_id", s_acct, g_acct))
    return out


def invalid(payments: Sequence[PaymentIn]) -> InvalidPayment | None:
    """What :meth:`PaymentIn.problems` finds in ``payments``, as one error (None: nothing)."""
    problems = [f"{p.external_id}: {msg}" for p in payments for msg in p.problems()]
    return InvalidPayment(f"{len(problems)} invalid payment(s): " + "; ".join(problems[:20])) if problems else None


def _chunks(seq: Sequence[PaymentIn], size: int) -> Iterator[Sequence[PaymentIn]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def record_payments(
    conn: psycopg.Connection,
    company_id: int,
    channel: str,
    payments: Sequence[PaymentIn],
    *,
    policy: AllocationPolicy | None = None,
    created_by: str | None = None,
    chunk: int = 50_000,
    bulk_from: int = 200,
    company: CompanyInfo | None = None,
    accounts_checked: bool = False,
) -> PaymentBatchResult:
    """Record, allocate and post a batch of payments of one channel (in the caller's transaction).

    Batches up to ``bulk_from`` payments go through one statement; bigger ones are staged
    through temporary tables (:func:`_bulk_chunk`). Both give the same result. A caller that
    already holds the company and has resolved the accounts inside it (the API) passes
    ``company`` and ``accounts_checked=True`` to save the look-ups (the database still refuses an
    account of another company).
    """
    policy = policy or AllocationPolicy()
    error = invalid(payments)
    if error is not None:
        raise error
    company = company or company_info(conn, company_id)
    if not accounts_checked:
        _check_accounts(conn, company_id, company, payments)
    sql = _payment_sql(policy)
    result = PaymentBatchResult()
    if len(payments) > 1000:
        conn.execute("SELECT set_config('work_mem', '256MB', true)")
    default_cash = chart.cash(channel)
    cash_of = functools.lru_cache(maxsize=None)(lambda cashier: chart.cash(channel, cashier))  # per cashier, not per payment
    for part in _chunks(payments, chunk):
        params = {
            "company": company_id, "channel": channel, "by": created_by, "tz": company.timezone,
            "suspense": chart.suspense(channel),
            "ext": [p.external_id for p in part],
            "acct": [p.account_id for p in part],
            "amount": [p.amount for p in part],
            "received": [p.received_at for p in part],
            "cash": [p.cash_account or (cash_of(p.cashier) if p.cashier else default_cash) for p in part],
            "cashier": [p.cashier for p in part],
            "tender": [p.tender for p in part],
            "evidence": [Jsonb(dict(p.evidence)) for p in part],
            "accounts": sorted({p.account_id for p in part if p.account_id is not None}),
        }
        try:
            if len(part) <= bulk_from:  # one statement, its plan prepared and reused
                # never compile a one-payment statement (a stale estimate would make it cost 30+ ms)
                conn.execute("SELECT set_config('jit', 'off', true)")
                n, amount, allocated, prepaid, suspense = conn.execute(sql, params).fetchone()
            else:
                rows = [(i, *values) for i, values in enumerate(zip(
                    params["ext"], params["acct"], params["amount"], params["received"], params["cash"],
                    params["cashier"], params["tender"], params["evidence"]), start=1)]
                n, amount, allocated, prepaid, suspense = _bulk_chunk(conn, policy, params, rows)
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            raise DayClosed(part[0].received_at.date(), channel, None, str(exc).splitlines()[0]) from exc
        given = len(part)
        result.recorded += n
        result.replayed += given - n
        result.amount += amount
        result.allocated += allocated
        result.to_prepaid += prepaid
        result.to_suspense += suspense
        if given - n:
            result.conflicts.extend(_conflicts(conn, params))
    log.info("channel %s: %d payment(s) recorded, %d replayed, %d conflict(s)", channel, result.recorded,
             result.replayed - len(result.conflicts), len(result.conflicts))
    return result


def record_payments_parallel(
    connect: Callable[[], AbstractContextManager[psycopg.Connection]],
    company_id: int,
    channel: str,
    payments: Sequence[PaymentIn],
    *,
    workers: int = 2,
    policy: AllocationPolicy | None = None,
    created_by: str | None = None,
    chunk: int = 50_000,
) -> PaymentBatchResult:
    """:func:`record_payments` on ``workers`` connections at once, each committing its own part.

    For bulk imports where a batch need not be one transaction (a file that is the record of
    what was imported, such as a bank return file, goes through :func:`record_payments` in the
    caller's transaction instead). ``connect()`` gives a connection as a context manager
    (``lambda: psycopg.connect(dsn)``, ``lambda: db.connection(company_id)``).

    The parts are disjoint by account (every payment of an account goes to one worker, in the
    batch's order), so the workers never wait on each other's item locks, and each account's
    payments are allocated exactly as one call would allocate them. A payment repeated inside
    the batch is recorded once, by its first occurrence, as :func:`record_payments` does; the
    repeats are compared with the stored payment afterwards (conflicts reported the same way).

    Not atomic across workers: when one fails, the parts already committed stay recorded and
    the error is raised; recording the same batch again records the rest (payments are
    idempotent by external id) and changes nothing else.
    """
    policy = policy or AllocationPolicy()
    error = invalid(payments)
    if error is not None:
        raise error
    first: dict[str, PaymentIn] = {}
    repeats: list[PaymentIn] = []
    for p in payments:
        if p.external_id in first:
            repeats.append(p)
        else:
            first[p.external_id] = p
    parts: list[list[PaymentIn]] = [[] for _ in range(max(1, workers))]
    for p in first.values():
        parts[(p.account_id or 0) % len(parts)].append(p)
    with connect() as conn:
        company = company_info(conn, company_id)
        _check_accounts(conn, company_id, company, payments)

    def run(part: list[PaymentIn]) -> PaymentBatchResult:
        with connect() as conn:
            try:
                res = record_payments(conn, company_id, channel, part, policy=policy, created_by=created_by,
                                      chunk=chunk, company=company, accounts_checked=True)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return res

    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="payments") as pool:
        futures = [pool.submit(run, part) for part in parts if part]
        wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    result = PaymentBatchResult()
    for f in futures:
        result.add(f.result())
    if repeats:
        result.replayed += len(repeats)
        with connect() as conn:
            result.conflicts.extend(_conflicts(conn, {
                "company": company_id, "channel": channel, "ext": [p.external_id for p in repeats],
                "acct": [p.account_id for p in repeats], "amount": [p.amount for p in repeats]}))
            conn.rollback()
    return result


#: the columns of a :class:`PaymentRecord`, in its order, from ``payment p``
RECORD_COLUMNS = """p.id, p.channel, p.external_id, p.account_id, p.amount, p.received_at, p.booked_on, p.entry_id,
       coalesce((SELECT sum(a.amount) FROM allocation a WHERE a.payment_id = p.id AND a.source = 'payment'), 0)::bigint,
       EXISTS (SELECT 1 FROM payment_reversal r WHERE r.payment_id = p.id), p.evidence"""

_GET = f"""
SELECT {RECORD_COLUMNS}
  FROM payment p
 WHERE p.company_id = %s AND p.channel = %s AND p.external_id = %s
"""


def get_payment(conn: psycopg.Connection, company_id: int, channel: str, external_id: str) -> PaymentRecord | None:
    row = conn.execute(_GET, [company_id, channel, external_id]).fetchone()
    return PaymentRecord(*row) if row else None


def record_payment(
    conn: psycopg.Connection,
    company_id: int,
    channel: str,
    payment: PaymentIn,
    *,
    policy: AllocationPolicy | None = None,
    created_by: str | None = None,
    company: CompanyInfo | None = None,
    accounts_checked: bool = False,
) -> PaymentRecord:
    """Record one payment; a replay returns the stored payment (``replay=True``).

    Raises :class:`PaymentConflict` when the external id was used with another amount or account.
    """
    result = record_payments(conn, company_id, channel, [payment], policy=policy, created_by=created_by,
                             company=company, accounts_checked=accounts_checked)
    if result.conflicts:
        c = result.conflicts[0]
        raise PaymentConflict(channel, c.external_id, c.field, c.stored, c.given)
    stored = get_payment(conn, company_id, channel, payment.external_id)
    assert stored is not None
    if result.recorded == 0:
        return dataclasses.replace(stored, replay=True)
    return stored
