"""Allocation: which open items a payment (or prepaid credit) settles, and by how much.

Open items of an account are settled **oldest bill first** (by due date, then bill), and within a
bill its late fee before or after its principal as the policy says; items that belong to no bill
(manual charges, reinstated debts) follow the bills of their due date. A payment larger than
what is open leaves the rest as prepaid credit; a smaller one settles items partially.

Two implementations that must agree (a test holds them to it):

* :func:`allocate` — plain Python over a sorted list, for one payment;
* :func:`allocation_sql` — set-based SQL for many payments at once: the items' open amounts
  and the payments' amounts are laid end to end per account as intervals of cumulative sums,
  and a payment settles exactly the overlap of its interval with each item's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Sequence

from meterline.ledger.policy import AllocationPolicy


@dataclass(frozen=True, slots=True)
class OpenItem:
    id: int
    kind: str  # bill, late_fee, charge, reinstated
    bill_id: int | None
    due_date: dt.date
    open: int  # amount - settled


def sort_key(item: OpenItem, policy: AllocationPolicy) -> tuple:
    late = item.kind == "late_fee"
    rank = (0 if late else 1) if policy.late_fee_first else (1 if late else 0)
    return (item.due_date, item.bill_id is None, item.bill_id or 0, rank, item.id)


def order_items(items: Iterable[OpenItem], policy: AllocationPolicy) -> list[OpenItem]:
    return sorted(items, key=lambda i: sort_key(i, policy))


def allocate(amount: int, items: Sequence[OpenItem], policy: AllocationPolicy) -> tuple[list[tuple[int, int]], int]:
    """Split ``amount`` over ``items`` in policy order: ``([(item id, amount)], rest)``."""
    out: list[tuple[int, int]] = []
    left = amount
    for item in order_items(items, policy):
        if left <= 0:
            break
        take = min(left, item.open)
        if take > 0:
            out.append((item.id, take))
            left -= take
    return out, left


def order_sql(policy: AllocationPolicy, alias: str = "i") -> str:
    """The SQL ORDER BY list of :func:`sort_key` (for window functions over receivable_item)."""
    first, second = ("0", "1") if policy.late_fee_first else ("1", "0")
    a = alias
    return (f"{a}.due_date, {a}.bill_id IS NULL, coalesce({a}.bill_id, 0), "
            f"CASE WHEN {a}.kind = 'late_fee' THEN {first} ELSE {second} END, {a}.id")


def allocation_sql(policy: AllocationPolicy, sources: str) -> str:
    """CTEs ``locked``, ``items``, ``srcs`` and ``alloc`` (a WITH-list fragment, without the WITH).

    The open items are locked (``FOR UPDATE``, in id order like every allocating operation) by the
    statement that reads them: a concurrent payment to the same account waits, then sees what
    this one settled.

    ``sources`` names a relation with ``(src_no, account_id, amount, entry_id, payment_id)``,
    taken in ``src_no`` order per account. ``alloc`` has ``(entry_id, payment_id, item_id,
    amount)``. Expects ``%(company)s`` and ``%(accounts)s`` (the sources' account ids, an array:
    an index condition, whatever the planner thinks of the sources' size) among the parameters.
    """
    return f"""
locked AS MATERIALIZED (
    SELECT id, account_id, kind, bill_id, due_date, amount, settled FROM receivable_item
     WHERE company_id = %(company)s AND status = 'open' AND settled < amount AND account_id = ANY(%(accounts)s::bigint[])
     ORDER BY id FOR UPDATE
),
items AS MATERIALIZED (
    SELECT i.id, i.account_id, i.amount - i.settled AS open,
           sum(i.amount - i.settled) OVER (PARTITION BY i.account_id ORDER BY {order_sql(policy)}
                                           ROWS UNBOUNDED PRECEDING) AS cum
      FROM locked i
),
srcs AS MATERIALIZED (
    SELECT entry_id, payment_id, account_id, amount,
           sum(amount) OVER (PARTITION BY account_id ORDER BY src_no ROWS UNBOUNDED PRECEDING) AS cum
      FROM {sources} WHERE account_id IS NOT NULL
),
alloc AS MATERIALIZED (
    SELECT s.entry_id, s.payment_id, it.id AS item_id,
           least(s.cum, it.cum) - greatest(s.cum - s.amount, it.cum - it.open) AS amount
      FROM srcs s JOIN items it ON it.account_id = s.account_id
       AND it.cum - it.open < s.cum AND s.cum - s.amount < it.cum
)"""


LOCK_ITEMS_SQL = """
SELECT count(*) FROM (
    SELECT id FROM receivable_item
     WHERE company_id = %(company)s AND account_id = ANY(%(accounts)s) AND status = 'open' AND settled < amount
     ORDER BY id FOR UPDATE) locked
"""

LOCK_ACCOUNTS_SQL = """
SELECT count(*) FROM (
    SELECT id FROM account WHERE company_id = %(company)s AND id = ANY(%(accounts)s) ORDER BY id FOR NO KEY UPDATE) locked
"""
