"""Plain allocation: oldest first, late fee before or after its principal, never over what is open."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from meterline.ledger.allocation import OpenItem, allocate, order_items
from meterline.ledger.policy import AllocationPolicy

BEFORE = AllocationPolicy("before_principal")
AFTER = AllocationPolicy("after_principal")
D = dt.date(2026, 1, 1)


def test_oldest_bill_first_and_late_fee_per_policy() -> None:
    items = [OpenItem(1, "bill", 10, D.replace(month=2), 500), OpenItem(2, "bill", 11, D, 300),
             OpenItem(3, "late_fee", 11, D, 40), OpenItem(4, "charge", None, D, 25)]
    assert [i.id for i in order_items(items, BEFORE)] == [3, 2, 4, 1]
    assert [i.id for i in order_items(items, AFTER)] == [2, 3, 4, 1]
    assert allocate(330, items, BEFORE) == ([(3, 40), (2, 290)], 0)
    assert allocate(330, items, AFTER) == ([(2, 300), (3, 30)], 0)
    assert allocate(2000, items, BEFORE)[1] == 2000 - 865


items_st = st.lists(st.builds(lambda i, k, b, m, o: OpenItem(i, k, b, D.replace(month=m), o),
                              st.integers(1, 10**6), st.sampled_from(["bill", "late_fee", "charge"]),
                              st.integers(1, 5), st.integers(1, 12), st.integers(1, 10**6)),
                    max_size=8, unique_by=lambda i: i.id)


@given(items=items_st, amount=st.integers(1, 5 * 10**6), policy=st.sampled_from([BEFORE, AFTER]))
def test_allocation_conserves_money(items, amount, policy) -> None:
    allocs, rest = allocate(amount, items, policy)
    opens = {i.id: i.open for i in items}
    assert sum(a for _, a in allocs) + rest == amount
    assert all(0 < a <= opens[i] for i, a in allocs)
    assert rest == 0 or sum(a for _, a in allocs) == sum(opens.values())
    # only the last item touched may be left partly open
    ordered = [i.id for i in order_items(items, policy)]
    touched = [i for i, _ in allocs]
    assert touched == ordered[:len(touched)]
    assert all(a == opens[i] for i, a in allocs[:-1])
