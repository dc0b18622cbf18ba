"""Group commit for the API's payments: concurrent requests recorded by one statement, one commit.

Each API payment on its own costs a transaction: a pooled connection, about ten round trips
(scope, the account, the payment statement, the stored payment, commit, reset) and a WAL
flush, plus a hop to a handler thread. Under many concurrent requests those are what the
server spends its time on, not the payments. :class:`PaymentBatcher` gathers the payments that
arrive for one (company, channel, API key) while the batches of that key in flight are
committing and records them with one :func:`~meterline.ledger.payments.record_payments` call
in one transaction; every request is answered after that commit, with its own outcome, the same as
the one-by-one path gives it:

* a new payment: the stored payment (``replay=False``);
* a replay of a recorded transaction id, or a repeat of an id earlier in the same batch:
  the stored payment with ``replay=True`` (recorded once);
* the id recorded (before or earlier in the batch) with another amount or account:
  :class:`~meterline.ledger.errors.PaymentConflict`, for that payment only;
* a payment :meth:`PaymentIn.problems` refuses: :class:`~meterline.ledger.errors.InvalidPayment`, for that payment only;
* an account code that names no account of the company: recorded to suspense (``account_code``
  None in the answer).

A batch whose transaction fails as a whole (a business day closed under it, a concurrent
replay of one of its ids from another server process that outlives the retries, anything
else) is rolled back and its payments are recorded one by one, each in its own transaction,
so that one bad payment never fails the others. A payment alone in its batch (no concurrency)
takes the one-by-one path directly.

The batcher lives in the event loop: the batch's database work runs in one handler thread,
the requests only wait for their result (no thread each).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, TypeVar

import anyio.to_thread
import psycopg

from meterline.ledger.errors import PaymentConflict
from meterline.ledger.journal import CompanyInfo
from meterline.ledger.payments import (RECORD_COLUMNS, PaymentIn, PaymentRecord, invalid, record_payment,
                                       record_payments)
from meterline.ledger.policy import AllocationPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

#: payments per batch at most: record_payments' one-statement path (its plan prepared and reused)
MAX_BATCH = 200
#: batches of one key committing at once (each on its own pooled connection)
IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class PendingPayment:
    """One API payment before its account is resolved: ``payment.account_id`` is not used."""

    payment: PaymentIn
    account_code: str | None


@dataclass(frozen=True, slots=True)
class BatchKey:
    company: CompanyInfo
    channel: str
    created_by: str
    policy: AllocationPolicy


_Slot = tuple[asyncio.AbstractEventLoop, "BatchKey"]
Outcome = tuple[PaymentRecord, str | None]  # the stored payment, the account code it was matched to


def resolve(item: PendingPayment, account_id: int | None) -> PaymentIn:
    return dataclasses.replace(item.payment, account_id=account_id)


def record_one(conn: psycopg.Connection, key: BatchKey, item: PendingPayment) -> Outcome:
    """The one-by-one path: the account looked up, the payment recorded (raises its error)."""
    account_id = None
    if item.account_code:
        row = conn.execute("SELECT id FROM account WHERE company_id = %s AND code = %s",
                           [key.company.id, item.account_code]).fetchone()
        account_id = row[0] if row else None
    record = record_payment(conn, key.company.id, key.channel, resolve(item, account_id), policy=key.policy,
                            created_by=key.created_by, company=key.company, accounts_checked=True)
    return record, item.account_code if account_id is not None else None


# the stored payments of a batch; ``mine``: written by this transaction (recorded by this batch).
# An index probe per id (LATERAL ... LIMIT 1): ``external_id = ANY(...)`` was planned as a filter
# over the company's whole channel (128 ms instead of 1.5 ms for 150 ids among 60,000)
_STORED = f"""
SELECT {RECORD_COLUMNS},
       coalesce(e.tx = txid_current_if_assigned(), false)
  FROM unnest(%(ext)s::text[]) x(ext)
 CROSS JOIN LATERAL (SELECT * FROM payment p WHERE p.company_id = %(company)s AND p.channel = %(channel)s
                        AND p.external_id = x.ext LIMIT 1) p
  JOIN journal_entry e ON e.id = p.entry_id
"""

_ACCOUNTS = """
SELECT a.code, a.id
  FROM unnest(%(codes)s::text[]) x(code)
 CROSS JOIN LATERAL (SELECT code, id FROM account a WHERE a.company_id = %(company)s AND a.code = x.code LIMIT 1) a
"""


def record_batch(conn: psycopg.Connection, key: BatchKey, items: list[PendingPayment]) -> list[Outcome | Exception]:
    """Record ``items`` in the caller's transaction; each gets its outcome or its own error.

    Raises when the batch as a whole fails (the caller rolls back and goes one by one).
    """
    codes = sorted({i.account_code for i in items if i.account_code})
    accounts = dict(conn.execute(_ACCOUNTS, {"codes": codes, "company": key.company.id}).fetchall()) if codes else {}
    payments = [resolve(i, accounts.get(i.account_code) if i.account_code else None) for i in items]
    results: list[Outcome | Exception | None] = [None] * len(items)
    valid = []
    for n, p in enumerate(payments):
        error = invalid([p])  # as record_payments words it for a batch of one
        if error is not None:
            results[n] = error
        else:
            valid.append(p)
    if valid:
        # planned for each batch, not prepared: a generic plan cached while the tables were small
        # does not follow their growth until the next ANALYZE re-plans it (on a fresh database,
        # three 10 s runs of 200 concurrent payments: 1,422, 1,101, 948/s prepared; 3,431,
        # 3,221, 3,144/s planned each time). Planning is about 2 ms a batch.
        threshold = conn.prepare_threshold
        conn.prepare_threshold = None
        try:
            record_payments(conn, key.company.id, key.channel, valid, policy=key.policy, created_by=key.created_by,
                            company=key.company, accounts_checked=True)
        finally:
            conn.prepare_threshold = threshold
    stored = {row[2]: (PaymentRecord(*row[:11]), row[11]) for row in conn.execute(
        _STORED, {"ext": sorted({p.external_id for p in valid}), "company": key.company.id, "channel": key.channel}
    ).fetchall()} if valid else {}
    first_of: set[str] = set()
    for n, p in enumerate(payments):
        if results[n] is not None:
            continue
        record, mine = stored[p.external_id]
        if record.amount != p.amount:
            results[n] = PaymentConflict(key.channel, p.external_id, "amount", record.amount, p.amount)
        elif record.account_id != p.account_id:
            results[n] = PaymentConflict(key.channel, p.external_id, "account_id", record.account_id, p.account_id)
        else:
            # recorded by this batch: the first of its id is the new payment, any later one a replay
            new = mine and p.external_id not in first_of
            first_of.add(p.external_id)
            code = items[n].account_code if p.account_id is not None else None
            results[n] = (record if new else dataclasses.replace(record, replay=True), code)
    return results  # type: ignore[return-value]


class PaymentBatcher:
    """Gathers concurrent payments per (company, channel, key) into one transaction each batch.

    ``run(company_id, fn)`` runs ``fn(conn)`` in one transaction and commits it (retrying a lost
    race): :meth:`meterline.ledger.api.app.ApiContext.run`. Up to ``in_flight`` batches of one
    key run at once, each on its own connection (so one batch's statement can overlap another's
    commit); a batch takes what is waiting when it starts, ``max_batch`` at most. The same id in
    two batches at once (a client's quick retry, two server processes): the later insert waits
    for the earlier commit, fails on the unique key and its batch is retried, finding a replay.
    """

    def __init__(self, run: Callable[[int, Callable[[psycopg.Connection], T]], T], *, max_batch: int = MAX_BATCH,
                 in_flight: int = IN_FLIGHT) -> None:
        self._run = run
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._pending: dict[_Slot, list[tuple[PendingPayment, asyncio.Future]]] = {}
        self._running: dict[_Slot, int] = {}
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, key: BatchKey, item: PendingPayment) -> Outcome:
        """Record ``item`` with whatever else is waiting for ``key``; its outcome once committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        slot = (loop, key)
        self._pending.setdefault(slot, []).append((item, fut))
        if self._running.get(slot, 0) < self.in_flight:
            self._start(slot)
        return await fut

    def _start(self, slot: _Slot) -> None:
        self._running[slot] = self._running.get(slot, 0) + 1
        task = slot[0].create_task(self._batch(slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _batch(self, slot: _Slot) -> None:
        batch: list[tuple[PendingPayment, asyncio.Future]] = []
        failed = False
        try:
            await asyncio.sleep(0)  # let the requests already read join this batch
            queue = self._pending.get(slot, [])
            batch = queue[:self.max_batch]
            del queue[:self.max_batch]
            if batch:
                outcomes = await anyio.to_thread.run_sync(self._commit, slot[1], [i for i, _ in batch])
                for (_, fut), outcome in zip(batch, outcomes):
                    if not fut.done():
                        if isinstance(outcome, BaseException):
                            fut.set_exception(outcome)
                        else:
                            fut.set_result(outcome)
        except BaseException as exc:  # cancelled (shutdown) or a bug: nobody may wait forever
            failed = True
            error = exc if isinstance(exc, Exception) else RuntimeError("the server is shutting down")
            for _, fut in batch + (self._pending.pop(slot, []) if self._running[slot] == 1 else []):
                if not fut.done():
                    fut.set_exception(error)
            raise
        finally:
            self._running[slot] -= 1
            if self._pending.get(slot) and not failed:
                self._start(slot)  # what arrived meanwhile
            elif not self._running[slot]:
                del self._running[slot]
                self._pending.pop(slot, None)

    def _commit(self, key: BatchKey, items: list[PendingPayment]) -> list[Outcome | Exception]:
        """In a handler thread: the batch in one transaction, else each payment in its own."""
        if len(items) > 1:
            try:
                return self._run(key.company.id, lambda conn: record_batch(conn, key, items))
            except Exception as exc:
                log.info("a batch of %d %s payments failed as a whole (%s); recording them one by one",
                         len(items), key.channel, exc)
        out: list[Outcome | Exception] = []
        for item in items:
            try:
                out.append(self._run(key.company.id, lambda conn: record_one(conn, key, item)))
            except Exception as exc:
                out.append(exc)
        return out
