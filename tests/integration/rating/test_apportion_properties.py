"""Apportionment invariants (hypothesis): shares are exact integer parts of every residual."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meterline.rating import apportion as ap


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**9), min_size=1, max_size=30))
@example(999996138321, [7, 4000176])   # total × W just above 4e18: the compiled split coarsened the weights
@example(10**12, [1, 2_999_999_998])   # W just below the compiled split's limit
@settings(max_examples=300, deadline=None)
def test_largest_remainder_sums_exactly(total: int, weights: list[int]) -> None:
    parts = ap.largest_remainder(total, weights)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    if sum(weights) > 0:
        for p, w in zip(parts, weights):   # each part within one unit of its exact share
            assert abs(p * sum(weights) - total * w) < sum(weights) or (p == 0 and w == 0)


@st.composite
def forests(draw):
    n = draw(st.integers(2, 40))
    parent = [-1]
    for i in range(1, n):
        parent.append(draw(st.one_of(st.just(-1), st.integers(0, i - 1))))
    cons = draw(st.lists(st.integers(0, 200_000), min_size=n, max_size=n))
    has_account = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    area = draw(st.lists(st.integers(0, 20_000), min_size=n, max_size=n))
    policy = draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n))
    ids = np.arange(100, 100 + n, dtype=np.int64)
    par = np.array([ids[p] if p >= 0 else -1 for p in parent], dtype=np.int64)
    acc = np.array([1000 + i if a else -1 for i, a in enumerate(has_account)], dtype=np.int64)
    return ids, par, np.array(cons, dtype=np.int64), acc, np.array(area, dtype=np.int64), np.array(policy, dtype=np.int8)


@given(forests(), st.sampled_from(ap.POLICIES))
@settings(max_examples=300, deadline=None)
def test_shares_sum_exactly_to_what_each_master_shares_out(forest, default: str) -> None:
    ids, par, cons, acc, area, pol = forest
    res = ap.apportion(ids, par, cons, np.ones(len(ids), bool), acc, area, pol, default_policy=default)
    children = {i: [j for j in range(len(ids)) if par[j] == ids[i]] for i in range(len(ids))}
    passed = {}   # inherited amounts handed to account-less subs, by receiving index
    for k, m in enumerate(res.master.tolist()):
        residual = int(cons[m]) - sum(int(cons[c]) for c in children[m])
        assert res.residual[k] == residual
        assert res.inherited[k] == passed.get(m, 0)
        status = ap.STATUSES[res.status[k]]
        assert (status == "negative") == (residual < 0) or status == "no_recipients"
        own = max(residual, 0)
        given_to_accounts = int(res.share[res.share_master == m].sum())
        if status == "no_recipients" or (status == "negative" and res.distributed[k] == 0):
            assert given_to_accounts == 0
            continue
        assert res.distributed[k] == own + res.inherited[k]
        # what did not go to an account went, exactly, to account-less subs to share out further
        handed_down = res.distributed[k] - given_to_accounts
        assert handed_down >= 0
        later = [j for j, mm in enumerate(res.master.tolist()) if par[mm] == ids[m] and acc[mm] < 0]
        assert handed_down == sum(int(res.inherited[j]) for j in later)
        for j in later:
            passed[res.master[j]] = int(res.inherited[j])
    assert (res.share >= 0).all()


def test_incomplete_tree_apportions_nothing() -> None:
    ids = np.array([1, 2, 3])
    res = ap.apportion(ids, np.array([-1, 1, 1]), np.array([100, 40, 30]), np.array([True, True, False]),
                       np.array([-1, 10, 11]), np.zeros(3, np.int64), np.array([1, -1, -1], np.int8))
    assert [ap.STATUSES[s] for s in res.status] == ["incomplete"] and len(res.share) == 0


def test_policies_on_one_level() -> None:
    ids = np.array([1, 2, 3, 4])
    par = np.array([-1, 1, 1, 1])
    cons = np.array([1000, 100, 200, 600])   # residual 100
    acc = np.array([9, 10, 11, 12])
    area = np.array([0, 5000, 5000, 10000])
    expect = {"master_account": {9: 100}, "by_consumption": {10: 11, 11: 22, 12: 67},
              "equal": {10: 34, 11: 33, 12: 33}, "by_area": {10: 25, 11: 25, 12: 50}}
    for policy, shares in expect.items():
        res = ap.apportion(ids, par, cons, np.ones(4, bool), acc, area,
                           np.array([ap.POLICY_CODE[policy], -1, -1, -1], np.int8))
        assert dict(zip(res.share_account.tolist(), res.share.tolist())) == shares, policy
