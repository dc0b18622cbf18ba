"""numba ``@njit`` int64 kernels of rating: pure array code (no database, clock or logging).

The engine (:mod:`meterline.rating.engine`) groups the bills to rate by tariff version and calls
:func:`rate_segments` once per version over contiguous arrays: first with ``write=False`` to
count each segment's lines, then, at offsets from the exclusive cumulative sum of the counts,
with ``write=True`` to fill them. :func:`finish_rows` then numbers the lines of each bill,
computes tax (per line or per bill) and sums the bills. Every amount is computed once per line
in int64 with a named rounding rule (codes of :data:`meterline.rating.money.RULE_CODES`).

Conventions of :func:`rate_segments` (one *segment* = one bill, or the part of a bill under one
tariff version):

* a component's tier quantities are the overlap of ``[lo, lo + volume)`` with the tiers, where
  ``lo`` is 0 for per-period tiers and the year-to-date volume for annual tiers, and the
  thresholds are ``T_j' = (T_j + max(0, hh - base) * per_person_j + (hh >= min) * raise_j) *
  dwellings``, then scaled for the segment by cumulative floors:
  ``floor(T' * mult * tca / (days * div)) - floor(T' * mult * tcb / (days * div))`` (so the parts
  of a split period sum exactly to the whole period's threshold); a volume exactly on a
  threshold stays in the lower tier;
* a line's amount is ``round(quantity * unit_price / (1000 * 10^4))``; fixed and minimum charges
  per month are spread over segments by cumulative rounding of ``price * months * days``;
* line kinds: 0 tier, 1 flat, 2 fixed, 3 minimum, 4 heating, 5 apportioned (:data:`KINDS`).

Limits: ``quantity * unit_price`` must fit in int64 (a 1.5·10^9 m³ line at 6 yuan/m³ does).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

KINDS = ("tier", "flat", "fixed", "minimum", "heating", "apportioned")
K_TIER, K_FLAT, K_FIXED, K_MINIMUM, K_HEATING, K_APPORTIONED = range(6)

PRICE_DEN = 10_000          # 10 ** PRICE_SCALE
VOLUME_DEN = 1000 * 10_000  # litres per m³ × 10 ** PRICE_SCALE
AREA_DEN = 100 * 10_000     # 0.01 m² per m² × 10 ** PRICE_SCALE
TAX_DEN = 1_000_000


@njit(cache=True, inline="always")
def div_round(num, den, rule):
    """num / den (den > 0) rounded: 0 half_up, 1 half_even, 2 down, 3 up; symmetric for num < 0."""
    neg = num < 0
    if neg:
        num = -num
    q = num // den
    r = num - q * den
    if rule == 0:
        if 2 * r >= den:
            q += 1
    elif rule == 1:
        if 2 * r > den or (2 * r == den and q % 2 == 1):
            q += 1
    elif rule == 3:
        if r > 0:
            q += 1
    return -q if neg else q


@njit(cache=True, inline="always")
def _emit(write, pos, out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm, out_kind,
          seg, comp, tier, qty, price, amt, ppm, kind):
    if write:
        out_seg[pos] = seg
        out_comp[pos] = comp
        out_tier[pos] = tier
        out_qty[pos] = qty
        out_price[pos] = price
        out_amt[pos] = amt
        out_ppm[pos] = ppm
        out_kind[pos] = kind
    return pos + 1


@njit(cache=True, parallel=True)
def rate_segments(write,
                  # version parameters
                  basis, rule, hh_base, hh_min,
                  comp_code, comp_nthr, comp_toff, comp_poff, comp_app_price, comp_ppm, comp_min,
                  thr, per_person, raise_, prices,
                  fixed_ppm, min_price, min_ppm, heat_price, heat_ppm,
                  # segments (length n)
                  seg_id, volume, apportioned, lo, hh, dwellings, mult, div, tcb, tca, cb, ca, days, months,
                  fixed_price, area, heat_days, season_days,
                  # output
                  counts, offsets,
                  out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm, out_kind):
    """Count (``write`` False: into ``counts``) or write (at ``offsets``) the lines of n segments
    of one tariff version. See the module docstring for the formulas."""
    n = volume.shape[0]
    ncomp = comp_code.shape[0]
    for i in prange(n):
        pos = offsets[i] if write else 0
        start = pos
        v = volume[i]
        a = apportioned[i]
        base_lo = lo[i] if basis == 1 else 0
        extra = hh[i] - hh_base if hh_base > 0 and hh[i] > hh_base else 0
        big = 1 if hh_min > 0 and hh[i] >= hh_min else 0
        dw = dwellings[i] if dwellings[i] > 0 else 1
        scale_den = days[i] * div[i]
        min_sum = 0
        for c in range(ncomp):
            nthr = comp_nthr[c]
            code = comp_code[c]
            ppm = comp_ppm[c]
            if nthr == 0:
                if v > 0:
                    p = prices[comp_poff[c]]
                    amt = div_round(v * p, VOLUME_DEN, rule)
                    if comp_min[c]:
                        min_sum += amt
                    pos = _emit(write, pos, out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm,
                                out_kind, seg_id[i], code, 0, v, p, amt, ppm, K_FLAT)
            elif v > 0:
                hi = base_lo + v
                prev = 0
                for j in range(nthr + 1):
                    if j < nthr:
                        k = comp_toff[c] + j
                        t = (thr[k] + extra * per_person[k] + big * raise_[k]) * dw
                        t = (t * mult[i] * tca[i]) // scale_den - (t * mult[i] * tcb[i]) // scale_den
                    else:
                        t = hi if hi > prev else prev
                    top = hi if hi < t else t
                    bottom = base_lo if base_lo > prev else prev
                    q = top - bottom
                    if q > 0:
                        p = prices[comp_poff[c] + j]
                        amt = div_round(q * p, VOLUME_DEN, rule)
                        if comp_min[c]:
                            min_sum += amt
                        pos = _emit(write, pos, out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm,
                                    out_kind, seg_id[i], code, j + 1, q, p, amt, ppm, K_TIER)
                    prev = t
        if a > 0:
            for c in range(ncomp):
                p = comp_app_price[c]
                amt = div_round(a * p, VOLUME_DEN, rule)
                if comp_min[c]:
                    min_sum += amt
                pos = _emit(write, pos, out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm, out_kind,
                            seg_id[i], comp_code[c], 0, a, p, amt, comp_ppm[c], K_APPORTIONED)
        fp = fixed_price[i]
        if fp >= 0:
            den = days[i] * PRICE_DEN
            amt = div_round(fp * months[i] * ca[i], den, rule) - div_round(fp * months[i] * cb[i], den, rule)
            pos = _emit(write, pos, out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm, out_kind,
                        seg_id[i], -K_FIXED, 0, months[i], fp, amt, fixed_ppm, K_FIXED)
        if heat_price >= 0 and area[i] > 0 and heat_days[i] > 0:
            amt = div_round(area[i] * heat_price * heat_days[i], AREA_DEN * season_days[i], rule)
            pos = _emit(write, pos, out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm, out_kind,
                        seg_id[i], -K_HEATING, 0, area[i], heat_price, amt, heat_ppm, K_HEATING)
        if min_price >= 0:
            den = days[i] * PRICE_DEN
            floor_amt = (div_round(min_price * months[i] * ca[i], den, rule)
                         - div_round(min_price * months[i] * cb[i], den, rule))
            if min_sum < floor_amt:
                pos = _emit(write, pos, out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm,
                            out_kind, seg_id[i], -K_MINIMUM, 0, months[i], min_price, floor_amt - min_sum, min_ppm,
                            K_MINIMUM)
        if not write:
            counts[i] = pos - start


@njit(cache=True, parallel=True)
def finish_rows(row_offsets, tax_bill, rule, amount, ppm, tax, line_no, bill_amount, bill_tax):
    """Per bill r (lines ``row_offsets[r]:row_offsets[r+1]``): number the lines, compute tax and sums.

    Tax per line: ``round(amount * ppm / 10^6)``. Per bill (``tax_bill[r]`` = 1): for each rate,
    ``round(sum(amount) * ppm / 10^6)``, spread over that rate's lines by largest remainder (ties
    to the earlier line), so the lines' tax sums exactly to the bill's.
    """
    nrows = row_offsets.shape[0] - 1
    for r in prange(nrows):
        s = row_offsets[r]
        e = row_offsets[r + 1]
        total_a = 0
        total_t = 0
        for k in range(s, e):
            line_no[k] = k - s + 1
            total_a += amount[k]
            if tax_bill[r] == 0:
                tax[k] = div_round(amount[k] * ppm[k], TAX_DEN, rule[r])
            else:
                tax[k] = -1
        if tax_bill[r] != 0:
            for k in range(s, e):
                if tax[k] != -1:
                    continue
                rate = ppm[k]
                num = 0
                floors = 0
                for m in range(k, e):
                    if tax[m] == -1 and ppm[m] == rate:
                        w = amount[m] * rate
                        num += w
                        tax[m] = w // TAX_DEN
                        floors += tax[m]
                left = div_round(num, TAX_DEN, rule[r]) - floors
                if left > 0:
                    topped = np.zeros(e - k, dtype=np.bool_)
                    for _ in range(left):
                        best = -1
                        best_rem = -1
                        for m in range(k, e):
                            if ppm[m] == rate and not topped[m - k]:
                                rem = (amount[m] * rate) % TAX_DEN
                                if rem > best_rem:
                                    best = m
                                    best_rem = rem
                        if best < 0:
                            break
                        topped[best - k] = True
                        tax[best] += 1
        for k in range(s, e):
            total_t += tax[k]
        bill_amount[r] = total_a
        bill_tax[r] = total_t


@njit(cache=True)
def largest_remainder(total, weights):
    """Split ``total`` (>= 0) into parts proportional to ``weights`` (>= 0) summing exactly; leftover
    units go to the largest remainders, ties to the earlier part; all-zero weights split equally.
    ``total * max(weights)`` must fit in int64."""
    n = weights.shape[0]
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out
    wsum = 0
    for i in range(n):
        wsum += weights[i]
    equal = wsum == 0
    if equal:
        wsum = n
    rem = np.empty(n, dtype=np.int64)
    given = 0
    for i in range(n):
        w = 1 if equal else weights[i]
        out[i] = (total * w) // wsum
        rem[i] = (total * w) % wsum
        given += out[i]
    left = total - given
    if left > 0:
        order = np.argsort(-rem, kind="mergesort")  # stable: ties keep the earlier part first
        for k in range(left):
            out[order[k]] += 1
    return out


@njit(cache=True, parallel=True)
def largest_remainder_groups(totals, offsets, weights):
    """:func:`largest_remainder` for many groups at once: group g splits ``totals[g]`` over
    ``weights[offsets[g]:offsets[g+1]]``."""
    out = np.zeros(weights.shape[0], dtype=np.int64)
    for g in prange(totals.shape[0]):
        s = offsets[g]
        e = offsets[g + 1]
        out[s:e] = largest_remainder(totals[g], weights[s:e])
    return out


@njit(cache=True, parallel=True)
def split_cumulative(total, cb, ca, den):
    """Part of ``total[i]`` for the days ``(cb[i], ca[i]]`` of ``den[i]`` by cumulative floors:
    ``floor(total * ca / den) - floor(total * cb / den)``; the parts of one total sum exactly."""
    n = total.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in prange(n):
        out[i] = (total[i] * ca[i]) // den[i] - (total[i] * cb[i]) // den[i]
    return out
