"""Master–sub apportionment (总分表分摊): the residual of every master meter, shared out exactly.

For every master meter (a meter with active sub-meters; trees may be several levels deep) and
one billing period:

    residual = master consumption − Σ consumption of its *direct* sub-meters

computed per master, so a two-level tree (compound master → building masters → households)
has a residual at every level. What a master shares out is its residual (when >= 0) plus what
the master above passed down to it (a sub-meter billed to nobody, e.g. a building master, hands
its share on to its own subs). Masters are processed top-down over all trees at once.

Policies (``meter.apportion_policy`` of the master; NULL: the configured default):

* ``master_account``: everything to the master meter's own account (a master without an
  account falls back to ``by_consumption``);
* ``by_consumption``: among the direct subs by their consumption;
* ``equal``: equally among the direct subs;
* ``by_area``: by the floor area of the subs' accounts (a sub billed to nobody weighs the area
  of the accounts below it).

Only subs that lead to an account receive a share; when every weight is zero the split is
equal. Shares are integer litres split by **largest remainder** (ties to the earlier sub), so
they sum exactly to what the master shares out. A **negative residual is never billed**: the
master is reported with status ``negative`` (the billing run raises the alert) and shares out
only what was passed down to it; its subs are billed on their own reads. A tree with any
meter's consumption unknown is ``incomplete``: nothing of it is apportioned.

Pure array code (numpy + numba), no database: :func:`apportion` takes arrays over the meters of
the trees and returns per-master results and per-account shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

POLICIES = ("master_account", "by_consumption", "equal", "by_area")
POLICY_CODE = {p: i for i, p in enumerate(POLICIES)}
MASTER_ACCOUNT, BY_CONSUMPTION, EQUAL, BY_AREA = range(4)

#: status codes of a master's result
STATUSES = ("apportioned", "negative", "no_recipients", "incomplete")
APPORTIONED, NEGATIVE, NO_RECIPIENTS, INCOMPLETE = range(4)

#: the compiled split is exact while the weights sum below this (their square fits in int64)
_WSUM_MAX = 3_000_000_000


@numba.njit(cache=True, nogil=True)
def _split_segment(total: int, weights: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Largest remainder of ``total`` over ``weights`` (W = Σ weights > 0) into ``out``."""
    n = weights.shape[0]
    wsum = 0
    for i in range(n):
        wsum += weights[i]
    if wsum >= _WSUM_MAX:  # r * weight below could overflow: coarser weights (not exact to one unit any more)
        factor = wsum // _WSUM_MAX + 1
        weights = weights // factor
        wsum = 0
        for i in range(n):
            wsum += weights[i]
        if wsum == 0:
            weights = np.ones(n, dtype=np.int64)
            wsum = n
    # total * w / W without the product total * w: total = q * W + r, so the share is
    # q * w + (r * w) // W with r < W; r * w < W² fits in int64 while W < _WSUM_MAX
    q = total // wsum
    r = total - q * wsum
    rem = np.empty(n, dtype=np.int64)
    given = 0
    for i in range(n):
        p = r * weights[i]
        f = p // wsum
        out[i] = q * weights[i] + f
        rem[i] = p - f * wsum
        given += out[i]
    left = total - given
    if left > 0:
        order = np.argsort(-rem, kind="mergesort")  # stable: ties to the earlier part
        for k in range(left):
            out[order[k]] += 1


@numba.njit(cache=True, nogil=True)
def split_segments(totals: np.ndarray, weights: np.ndarray, offsets: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Segmented largest remainder: segment ``g`` splits ``totals[g]`` over
    ``weights[offsets[g]:offsets[g+1]]`` (all >= 0); a segment whose weights are all zero is
    split equally. Parts are int64 and sum exactly to each total."""
    out = np.zeros(weights.shape[0], dtype=np.int64)
    for g in range(totals.shape[0]):
        a, b = offsets[g], offsets[g + 1]
        if b <= a:
            continue
        w = weights[a:b]
        if w.sum() <= 0:
            w = np.ones(b - a, dtype=np.int64)
        _split_segment(totals[g], w, out[a:b])
    return out


def largest_remainder(total: int, weights) -> list[int]:
    """Split ``total`` (>= 0) over ``weights`` (>= 0) by largest remainder: parts sum to ``total``.

    Exact for any size (Python integers when int64 products could overflow)."""
    w = [int(x) for x in weights]
    if not w:
        return []
    if sum(w) <= 0:
        w = [1] * len(w)
    W = sum(w)
    if W < _WSUM_MAX and total < 2**63:
        return split_segments(np.array([total], dtype=np.int64), np.array(w, dtype=np.int64),
                              np.array([0, len(w)], dtype=np.int64)).tolist()
    parts = [total * x // W for x in w]
    rems = [total * x - p * W for x, p in zip(w, parts)]
    for i in sorted(range(len(w)), key=lambda i: (-rems[i], i))[:total - sum(parts)]:
        parts[i] += 1
    return parts


@dataclass(frozen=True, slots=True)
class Apportioned:
    """Per master (rows of the input that have subs) and per share given to an account."""

    #: index (into the input arrays) of each master, top-down order
    master: np.ndarray
    root: np.ndarray            # index of the tree's top master
    policy: np.ndarray          # policy applied (int8 code; after fallbacks)
    master_consumption: np.ndarray
    subs_consumption: np.ndarray
    residual: np.ndarray
    inherited: np.ndarray
    distributed: np.ndarray     # what the master shared out (0 for incomplete / no recipients)
    status: np.ndarray          # int8 code of STATUSES
    # shares: one row per (master, receiving account)
    share_master: np.ndarray    # index of the master
    share_via: np.ndarray       # index of the direct sub (or the master itself for master_account)
    share_account: np.ndarray   # account id
    share_weight: np.ndarray
    share: np.ndarray


def apportion(meter_id: np.ndarray, parent: np.ndarray, consumption: np.ndarray, known: np.ndarray,
              account_id: np.ndarray, area: np.ndarray, policy: np.ndarray, *,
              default_policy: str = "by_consumption") -> Apportioned:
    """Apportion every master–sub tree in the arrays at once.

    Arrays are over the meters of the trees (masters and subs, any order): ``meter_id`` int64;
    ``parent`` the parent meter's id (-1 or a meter not in the arrays: a root); ``consumption``
    int64 litres; ``known`` bool (a closing and opening read exist); ``account_id`` (-1: billed to
    nobody); ``area`` floor area of the meter's account in 0.01 m² (0 when none); ``policy``
    int8 code of :data:`POLICIES` (-1: ``default_policy``).
    """
    n = len(meter_id)
    meter_id = np.asarray(meter_id, dtype=np.int64)
    order = np.argsort(meter_id, kind="stable")
    sorted_ids = meter_id[order]
    par = np.asarray(parent, dtype=np.int64)
    pidx = np.full(n, -1, dtype=np.int64)
    if n:
        pos = np.minimum(np.searchsorted(sorted_ids, par), n - 1)
        hit = (par >= 0) & (sorted_ids[pos] == par)
        pidx[hit] = order[pos[hit]]
    pol = np.asarray(policy, dtype=np.int8).copy()
    pol[pol < 0] = POLICY_CODE[default_policy]
    fallback = BY_CONSUMPTION if default_policy == "master_account" else POLICY_CODE[default_policy]
    out = _apportion(pidx, np.asarray(consumption, dtype=np.int64), np.asarray(known, dtype=np.bool_),
                     np.asarray(account_id, dtype=np.int64), np.asarray(area, dtype=np.int64), pol, np.int8(fallback))
    (m_idx, m_root, m_pol, m_cons, m_subs, m_res, m_inh, m_dist, m_status,
     s_master, s_via, s_acc, s_w, s_share) = out
    return Apportioned(m_idx, m_root, m_pol, m_cons, m_subs, m_res, m_inh, m_dist, m_status,
                       s_master, s_via, s_acc, s_w, s_share)


@numba.njit(cache=True, nogil=True)
def _apportion(pidx, cons, known, account, area, pol, fallback):  # pragma: no cover - compiled
    n = pidx.shape[0]
    # children in CSR form
    nchild = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if pidx[i] >= 0:
            nchild[pidx[i]] += 1
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        start[i + 1] = start[i] + nchild[i]
    fill = start[:-1].copy()
    kids = np.empty(start[n], dtype=np.int64)
    for i in range(n):
        p = pidx[i]
        if p >= 0:
            kids[fill[p]] = i
            fill[p] += 1
    # root and depth (walk up; trees are shallow)
    root = np.empty(n, dtype=np.int64)
    depth = np.zeros(n, dtype=np.int64)
    for i in range(n):
        r = i
        d = 0
        while pidx[r] >= 0 and d <= n:
            r = pidx[r]
            d += 1
        root[i] = r
        depth[i] = d
    # bottom-up (deepest first): billable (an account at or below), area below, tree complete
    order = np.argsort(-depth, kind="mergesort")
    billable = account >= 0
    area_below = np.where(account >= 0, area, 0)
    tree_ok = np.ones(n, dtype=np.bool_)
    for k in range(n):
        i = order[k]
        if not known[i]:
            tree_ok[root[i]] = False
        p = pidx[i]
        if p >= 0:
            if billable[i]:
                billable[p] = True
            if account[p] < 0:
                area_below[p] += area_below[i]
    # masters top-down
    masters = 0
    for i in range(n):
        if nchild[i] > 0:
            masters += 1
    m_idx = np.empty(masters, dtype=np.int64)
    m_root = np.empty(masters, dtype=np.int64)
    m_pol = np.empty(masters, dtype=np.int8)
    m_cons = np.zeros(masters, dtype=np.int64)
    m_subs = np.zeros(masters, dtype=np.int64)
    m_res = np.zeros(masters, dtype=np.int64)
    m_inh = np.zeros(masters, dtype=np.int64)
    m_dist = np.zeros(masters, dtype=np.int64)
    m_status = np.zeros(masters, dtype=np.int8)
    cap = kids.shape[0] + masters
    s_master = np.empty(cap, dtype=np.int64)
    s_via = np.empty(cap, dtype=np.int64)
    s_acc = np.empty(cap, dtype=np.int64)
    s_w = np.empty(cap, dtype=np.int64)
    s_share = np.empty(cap, dtype=np.int64)
    ns = 0
    inherited = np.zeros(n, dtype=np.int64)
    top_down = order[::-1]
    j = 0
    for k in range(n):
        i = top_down[k]
        if nchild[i] == 0:
            continue
        subs = 0
        for c in range(start[i], start[i + 1]):
            subs += cons[kids[c]]
        m_idx[j] = i
        m_root[j] = root[i]
        m_cons[j] = cons[i]
        m_subs[j] = subs
        m_res[j] = cons[i] - subs
        m_inh[j] = inherited[i]
        policy = pol[i]
        if policy == 0 and account[i] < 0:
            policy = fallback
        m_pol[j] = policy
        if not tree_ok[root[i]]:
            m_status[j] = 3
            j += 1
            continue
        total = inherited[i]
        if m_res[j] < 0:
            m_status[j] = 1
        else:
            total += m_res[j]
        if policy == 0:
            m_dist[j] = total
            if total == 0 and m_status[j] == 1:
                j += 1
                continue
            s_master[ns] = i
            s_via[ns] = i
            s_acc[ns] = account[i]
            s_w[ns] = 1
            s_share[ns] = total
            ns += 1
            j += 1
            continue
        # recipients: direct subs leading to an account
        nrec = 0
        for c in range(start[i], start[i + 1]):
            if billable[kids[c]]:
                nrec += 1
        if nrec == 0:
            if m_status[j] == 0:
                m_status[j] = 2
            j += 1
            continue
        rec = np.empty(nrec, dtype=np.int64)
        w = np.empty(nrec, dtype=np.int64)
        r = 0
        for c in range(start[i], start[i + 1]):
            kid = kids[c]
            if billable[kid]:
                rec[r] = kid
                if policy == 1:
                    w[r] = max(cons[kid], 0)
                elif policy == 2:
                    w[r] = 1
                else:
                    w[r] = area_below[kid]
                r += 1
        if w.sum() <= 0:
            w[:] = 1
        parts = np.zeros(nrec, dtype=np.int64)
        _split_segment(total, w, parts)
        m_dist[j] = total
        for r in range(nrec):
            kid = rec[r]
            if account[kid] >= 0:
                s_master[ns] = i
                s_via[ns] = kid
                s_acc[ns] = account[kid]
                s_w[ns] = w[r]
                s_share[ns] = parts[r]
                ns += 1
            else:
                inherited[kid] += parts[r]
        j += 1
    return (m_idx, m_root, m_pol, m_cons, m_subs, m_res, m_inh, m_dist, m_status,
            s_master[:ns], s_via[:ns], s_acc[:ns], s_w[:ns], s_share[:ns])


def apportioned_per_account(result: Apportioned) -> tuple[np.ndarray, np.ndarray]:
    """(account ids, total litres apportioned to each), accounts ascending."""
    if len(result.share_account) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    acc, inv = np.unique(result.share_account, return_inverse=True)
    total = np.zeros(len(acc), dtype=np.int64)
    np.add.at(total, inv, result.share)
    return acc, total
