"""Group commit of API bank payments (meterline.ledger.api.batcher): a batch answers every payment
as the one-by-one path does, and writes the same journal."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from typing import Any

import psycopg
import pytest

from meterline.ledger.api.app import ApiContext
from meterline.ledger.api.batcher import BatchKey, PaymentBatcher, PendingPayment, record_one
from meterline.ledger.close import close_day
from meterline.ledger.errors import PaymentConflict
from meterline.ledger.payments import PaymentIn
from meterline.store.db import Database
from tests.integration.ledger.apikit import ApiWorld, AsgiClient, build_world

BILLS = (5000, 1200, 3000, 800, 0, 2500)
UTC = dt.timezone.utc


def _key(world: ApiWorld) -> BatchKey:
    ctx: ApiContext = world.app.state.ctx
    return BatchKey(ctx.companies[world.company_code], "bank", "bank-key",
                    ctx.policies.for_company(world.company_code).allocation)


def _item(ext: str, code: str | None, amount: int, at: dt.datetime) -> PendingPayment:
    return PendingPayment(PaymentIn(ext, None, amount, at, cashier="icbc", tender="transfer",
                                    evidence={"bank": "icbc", "account_code": code, "key": "bank-key"}), code)


def _counting(ctx: ApiContext) -> tuple[Any, list[int]]:
    calls: list[int] = []

    def run(company_id: int, fn: Any) -> Any:
        calls.append(company_id)
        return ctx.run(company_id, fn)
    return run, calls


def _submit_together(batcher: PaymentBatcher, key: BatchKey, items: list[PendingPayment]) -> list[Any]:
    # every submit queues its payment before the batch task first runs: one batch, in this order
    async def main() -> list[Any]:
        return await asyncio.gather(*(batcher.submit(key, i) for i in items), return_exceptions=True)
    return asyncio.run(main())


def _one_by_one(world: ApiWorld, items: list[PendingPayment]) -> list[Any]:
    ctx: ApiContext = world.app.state.ctx
    key = _key(world)
    out: list[Any] = []
    for item in items:
        try:
            out.append(ctx.run(world.company_id, lambda conn: record_one(conn, key, item)))
        except Exception as exc:  # noqa: BLE001 - compared below
            out.append(exc)
    return out


def _answers(outcomes: list[Any], world: ApiWorld) -> list[tuple]:
    """What each request is told, account ids as the account's position in the world."""
    pos = {a: n for n, a in enumerate(world.accounts)}
    out = []
    for o in outcomes:
        if isinstance(o, PaymentConflict):
            mapped = (pos.get(o.stored), pos.get(o.given)) if o.field == "account_id" else (o.stored, o.given)
            out.append((type(o).__name__, o.external_id, o.field, *mapped))
        elif isinstance(o, Exception):
            out.append((type(o).__name__, str(o)))
        else:
            p, code = o
            out.append((p.external_id, p.amount, code, p.booked_on, int(p.allocated), p.replay, p.reversed))
    return out


def _journal(conn: psycopg.Connection, world: ApiWorld) -> dict[str, Any]:
    """A company's payments, their entries' postings, allocations, items and balances, ids mapped to
    the account's position in the world (AR:<id> -> AR:#n)."""
    pos = {a: n for n, a in enumerate(world.accounts)}

    def code(c: str) -> str:
        head, _, tail = c.partition(":")
        return f"{head}:#{pos[int(tail)]}" if head in ("AR", "PREPAID") else c

    cid = world.company_id
    payments = sorted(
        (ext, amount, None if acct is None else pos[acct], booked, cash, tender, tuple(sorted(evidence.items())),
         tuple((code(a), m) for a, m in postings), tuple(sorted((pos[ia], kind, m) for ia, kind, m in allocs)))
        for ext, amount, acct, booked, cash, tender, evidence, postings, allocs in (
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6],
             conn.execute("SELECT account_code, amount FROM posting WHERE entry_id = %s ORDER BY line_no", [r[7]]).fetchall(),
             conn.execute("""SELECT i.account_id, i.kind, a.amount FROM allocation a JOIN receivable_item i ON i.id = a.item_id
                              WHERE a.payment_id = %s""", [r[8]]).fetchall())
            for r in conn.execute("""SELECT external_id, amount, account_id, booked_on, cash_account, tender, evidence,
                                            entry_id, id FROM payment WHERE company_id = %s""", [cid]).fetchall()))
    items = sorted((pos[a], kind, amount, settled) for a, kind, amount, settled in conn.execute(
        "SELECT account_id, kind, amount, settled FROM receivable_item WHERE company_id = %s", [cid]).fetchall())
    balances = sorted((code(c), int(b)) for c, b in conn.execute(
        "SELECT account_code, sum(amount) FROM posting WHERE company_id = %s GROUP BY 1 HAVING sum(amount) <> 0",
        [cid]).fetchall())
    return {"payments": payments, "items": items, "balances": balances}


def _transactions(conn: psycopg.Connection, world: ApiWorld, exts: list[str]) -> int:
    return conn.execute("""SELECT count(DISTINCT e.tx) FROM payment p JOIN journal_entry e ON e.id = p.entry_id
                            WHERE p.company_id = %s AND p.channel = 'bank' AND p.external_id = ANY(%s)""",
                        [world.company_id, exts]).fetchone()[0]


def test_a_batch_answers_and_writes_as_one_by_one(conn: psycopg.Connection, db: Database) -> None:
    batched, single = build_world(conn, db, 6, BILLS), build_world(conn, db, 6, BILLS)
    now = dt.datetime.now(UTC)
    yesterday = now - dt.timedelta(days=1)
    for w in (batched, single):
        # a payment of a closed day is booked on the next open one; one recorded before the batch
        day = yesterday.astimezone(_key(w).company.tz).date()
        with psycopg.connect(db.dsn) as c:
            close_day(c, w.company_id, day, channel="bank", cashier="icbc")
        _one_by_one(w, [_item("OLD-1", w.codes[1], 700, now)])
    a0, a1, a2, a3, a4, a5 = batched.codes
    items = [
        _item("B-1", a0, 2000, now),            # part of a bill
        _item("B-2", a0, 4000, now),            # the rest of it, then prepaid credit (after B-1: src order)
        _item("B-3", a2, 3000, yesterday),      # received on a closed day: booked today
        _item("B-4", "NOPE", 77, now),          # no such account: suspense
        _item("B-5", None, 55, now),            # no account given: suspense
        _item("B-1", a0, 2000, now),            # repeated in the batch: a replay, recorded once
        _item("B-2", a0, 4001, now),            # the id earlier in the batch with another amount: conflict
        _item("OLD-1", a1, 700, now),           # recorded before: a replay
        _item("OLD-1", a3, 700, now),           # recorded before with another account: conflict
        _item("B-6", a4, 900, now),             # an account that owes nothing: all prepaid
        _item("B-7", a5, 0, now),               # refused by PaymentIn.problems: only this one
        _item("B-8", a5, 2500, now),
        _item("B-9", a3, 100, now),
        _item("B-10", a3, 100, now),
    ]
    run, calls = _counting(batched.app.state.ctx)
    got = _submit_together(PaymentBatcher(run, in_flight=1), _key(batched), items)
    want = _one_by_one(single, items)

    assert len(calls) == 1  # one transaction for the whole batch
    assert _answers(got, batched) == _answers(want, single)
    assert [type(o).__name__ for o in got if isinstance(o, Exception)] == ["PaymentConflict", "PaymentConflict", "InvalidPayment"]
    answers = {a[0]: a for a in _answers(got, batched) if isinstance(a[1], int)}
    assert answers["B-3"][3] == now.astimezone(_key(batched).company.tz).date()
    assert _journal(conn, batched) == _journal(conn, single)
    assert _transactions(conn, batched, ["B-1", "B-2", "B-3", "B-4", "B-5", "B-6", "B-8", "B-9", "B-10"]) == 1


def test_concurrent_replays_of_one_id_record_it_once(conn: psycopg.Connection, db: Database) -> None:
    world = build_world(conn, db, 3)
    code = world.codes[0]
    body = {"transaction_id": "ICBC-R-1", "account_code": code, "amount": 1500}

    async def burst(client: Any, bodies: list[dict]) -> list[Any]:
        return await asyncio.gather(*(client.post("/v1/bank/payments", json=b, headers=world.h("bank")) for b in bodies))

    with AsgiClient(world.app) as c:
        first = c.portal.call(burst, c.client, [body] * 20 + [{**body, "amount": 1501}] * 5)
        again = c.portal.call(burst, c.client, [body] * 10)
    assert sorted(r.status_code for r in first) == [200] * 20 + [409] * 5
    ok = [r.json() for r in first if r.status_code == 200]
    assert sorted(p["replay"] for p in ok) == [False] + [True] * 19
    assert len({p["id"] for p in ok}) == 1
    assert all(r.status_code == 200 and r.json()["replay"] and r.json()["id"] == ok[0]["id"] for r in again)
    assert conn.execute("SELECT count(*) FROM payment WHERE company_id = %s", [world.company_id]).fetchone()[0] == 1
    assert conn.execute("SELECT coalesce(sum(amount), 0) FROM posting WHERE company_id = %s AND account_code = 'CASH:bank:icbc'",
                        [world.company_id]).fetchone()[0] == 1500


def test_replays_racing_in_two_batchers(conn: psycopg.Connection, db: Database) -> None:
    """Two server processes' batches with the same id: one records it, the other answers a replay."""
    world = build_world(conn, db, 3)
    ctx: ApiContext = world.app.state.ctx
    key = _key(world)
    now = dt.datetime.now(UTC)
    items = [_item(f"X-{n}", world.codes[n % 3], 100 + n, now) for n in range(8)]
    results: dict[int, list[Any]] = {}

    def process(n: int) -> None:
        results[n] = _submit_together(PaymentBatcher(ctx.run, in_flight=1), key, items)

    threads = [threading.Thread(target=process, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(isinstance(o, Exception) for r in results.values() for o in r), results
    for n, item in enumerate(items):
        answers = [results[k][n][0] for k in range(2)]
        assert sorted(p.replay for p in answers) == [False, True] and answers[0].id == answers[1].id
    assert conn.execute("SELECT count(*) FROM payment WHERE company_id = %s", [world.company_id]).fetchone()[0] == 8


def test_a_batch_failing_as_a_whole_is_recorded_one_by_one(conn: psycopg.Connection, db: Database,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A day closed while the batch waits for it: the batch is refused, each payment then booked alone."""
    world = build_world(conn, db, 4)
    ctx: ApiContext = world.app.state.ctx
    company = ctx.companies[world.company_code]
    now = dt.datetime.now(UTC)
    yesterday = now - dt.timedelta(days=1)
    day = yesterday.astimezone(company.tz).date()
    items = [_item("D-0", world.codes[0], 300, yesterday)] + [_item(f"D-{n}", world.codes[n], 200, now) for n in (1, 2, 3)]
    closer = psycopg.connect(db.dsn)
    try:
        close_day(closer, world.company_id, day, channel="bank", cashier="icbc")  # holds the day's lock until commit
        results: list[Any] = []
        t = threading.Thread(target=lambda: results.extend(
            _submit_together(PaymentBatcher(ctx.run, in_flight=1), _key(world), items)))
        with caplog.at_level(logging.INFO, logger="meterline.ledger.api.batcher"):
            t.start()
            deadline = time.monotonic() + 30
            while not conn.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)").fetchone()[0]:
                assert time.monotonic() < deadline, "the batch never waited for the close"
                time.sleep(0.02)
            closer.commit()
            t.join(60)
    finally:
        closer.close()
    assert "recording them one by one" in caplog.text
    assert not any(isinstance(o, Exception) for o in results), [o for o in results if isinstance(o, Exception)]
    booked = {p.external_id: p.booked_on for p, _ in results}
    assert booked["D-0"] == day + dt.timedelta(days=1)  # the next open day, as alone
    assert {booked[f"D-{n}"] for n in (1, 2, 3)} == {now.astimezone(company.tz).date()}
    assert _transactions(conn, world, [f"D-{n}" for n in range(4)]) == 4
