"""numba ``@njit`` int64 kernels of rating: pure array code (no database, clock or logging).

The engine (:mod:`meterline.rating.engine`) groups the bills to rate by tariff version and calls
:func:`rate_segments` once per version with that version's segment ids (ascending): first with
``write=False`` to count each segment's lines, then, at offsets from the exclusive cumulative
sum of the counts, with ``write=True`` to fill them. Inputs stay where they are: per-row arrays
(volume, household, ...) are read through segment -> row, and everything a (tariff, period)
group shares (days, months, the part's days) through segment -> part from small arrays. :func:`finish_rows` then numbers the lines of each bill,
computes tax (per line or per bill) and sums the bills. Every amount is computed once per line
in int64 with a named rounding rule (codes of :data:`meterline.rating.money.RULE_CODES`).

Conventions of :func:`rate_segments` (one *segment* = one bill, or the part of a bill under one
tariff version):

* a component's tier quantities are the overlap of ``[lo, lo + volume)`` with the tiers, where
  ``lo`` is 0 for per-period tiers and, for annual tiers, the year-to-date volume plus the
  period's volume before the part (from the part's tariff year start when that year began inside
  the period, ``p_ycb`` days in: then the year to date is not added), and the
  thresholds are ``T_j' = (T_j + max(0, hh - base) * per_person_j + (hh >= min) * raise_j) *
  dwellings`` (never below the threshold before it), then scaled for the segment by cumulative floors:
  ``floor(T' * mult * tca / (days * div)) - floor(T' * mult * tcb / (days * div))`` (so the parts
  of a split period sum exactly to the whole period's threshold); a volume exactly on a
  threshold stays in the lower tier;
* a line's amount is ``round(quantity * unit_price / (1000 * 10^4))``; fixed and minimum charges
  per month are spread over segments by cumulative rounding of ``price * months * days``;
* line kinds: 0 tier, 1 flat, 2 fixed, 3 minimum, 4 heating, 5 apportioned (:data:`KINDS`);
* heated days (:func:`heated_days`): the season days of the segment less the days of every
  suspension of its row (a union: a day is off once).

Every product fits in int64 within the limits of :mod:`meterline.rating.money` (``MAX_*``),
which the tariff loader and ``rate()`` enforce.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numba
import numpy as np
from numba import njit, prange

#: iterations a thread takes at a time in the parallel loops (dynamic scheduling: on a busy
#: machine a thread that got less CPU does not hold up the others)
CHUNK = 1 << 14


@contextmanager
def chunked(size: int = CHUNK) -> Iterator[None]:
    """Run the parallel kernels called inside with dynamic chunks of ``size`` iterations."""
    before = numba.get_parallel_chunksize()
    numba.set_parallel_chunksize(size)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(before)


KINDS = ("tier", "flat", "fixed", "minimum", "heating", "apportioned")
K_TIER, K_FLAT, K_FIXED, K_MINIMUM, K_HEATING, K_APPORTIONED = range(6)

PRICE_DEN = 10_000          # 10 ** PRICE_SCALE
VOLUME_DEN = 1000 * 10_000  # litres per m³ × 10 ** PRICE_SCALE
AREA_DEN = 100 * 10_000     # 0.01 m² per m² × 10 ** PRICE_SCALE
TAX_DEN = 1_000_000


@njit(cache=True, inline="always")
def div_round(num, den, rule):
    """num / den (den > 0) rounded: 0 half_up, 1 half_even, 2 down, 3 up; symmetric for num < 0."""
    if rule == 0 and num >= 0:  # the common case: one division
        return (num + den // 2) // den
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
def floor_div(a, d, inv):
    """``a // d`` for ``a >= 0`` and ``d > 0``, given ``inv = 1.0 / d``: a multiplication
    estimates the quotient (off by at most a few units: float rounding), integer steps make it
    exact. A hardware integer division costs several times more, and proration divides up to
    six times a bill."""
    if a >= 4611686018427387904:  # 2**62: q * d below might overflow; divide exactly
        return a // d
    q = np.int64(np.float64(a) * inv)
    r = a - q * d
    while r < 0:
        q -= 1
        r += d
    while r >= d:
        q += 1
        r -= d
    return q


@njit(cache=True, parallel=True)
def rate_segments(write,
                  # version parameters
                  basis, rule, hh_base, hh_min,
                  comp_code, comp_nthr, comp_toff, comp_poff, comp_app_price, comp_ppm, comp_min,
                  thr, per_person, raise_, prices,
                  fixed_lut, fixed_ppm, min_price, min_ppm, heat_price, heat_ppm,
                  tax_bill, comp_slot, fixed_slot, min_slot, heat_slot,
                  # the segments of this version: global segment ids, and segment -> row, segment -> part
                  seg_ids, seg_row, seg_part,
                  # per row (an empty array means 0 for every row)
                  volume, apportioned, ytd, hh, dwellings, size_off, size_code, area,
                  # per segment (empty: 0)
                  heat_days,
                  # per part (a (tariff, period) group's part under one version; small)
                  p_cb, p_ca, p_days, p_months, p_mult, p_div, p_tcb, p_tca, p_sdays, p_ycb,
                  # output, indexed by global segment id
                  counts, offsets,
                  # totals instead of lines (``write`` False, ``seg_amt`` not empty): per segment
                  seg_amt, seg_tax, seg_rate_amt,
                  out_seg, out_comp, out_tier, out_qty, out_price, out_amt, out_ppm, out_kind):
    """Count (``write`` False: into ``counts``) or write (at ``offsets``) the lines of the segments
    ``seg_ids`` of one tariff version. See the module docstring for the formulas.

    Totals (``write`` False and ``seg_amt`` not empty; ``counts`` is not written): every line's
    amount is computed as when writing, and summed per segment into ``seg_amt``; its tax goes, per line (``tax_bill`` 0),
    rounded into ``seg_tax``, or per bill (``tax_bill`` 1), unrounded by rate into
    ``seg_rate_amt[s, slot]`` (the slot of a line's rate: ``comp_slot[c]``, ``fixed_slot``,
    ``min_slot``, ``heat_slot``) for :func:`finish_totals`."""
    n = seg_ids.shape[0]
    ncomp = comp_code.shape[0]
    has_app = apportioned.shape[0] > 0
    has_ytd = ytd.shape[0] > 0
    has_fixed = fixed_lut.shape[0] > 0
    has_heat = heat_price >= 0 and heat_days.shape[0] > 0 and area.shape[0] > 0
    totals = not write and seg_amt.shape[0] > 0
    need_amt = write or totals or min_price >= 0
    for i in prange(n):
        tot = 0  # totals: the segment's amount and its tax per line
        ltax = 0
        s = seg_ids[i]
        r = seg_row[s]
        g = seg_part[s]
        pos = offsets[s] if write else 0
        start = pos
        days = p_days[g]
        cb = p_cb[g]
        ca = p_ca[g]
        whole_period = cb == 0 and ca == days
        vol = volume[r]
        if whole_period:
            v = vol
            before = 0
        else:
            inv_days = 1.0 / days
            before = floor_div(vol * cb, days, inv_days)
            v = floor_div(vol * ca, days, inv_days) - before
        a = 0
        if has_app:
            a = apportioned[r]
            if not whole_period:
                a = floor_div(a * ca, days, inv_days) - floor_div(a * cb, days, inv_days)
        base_lo = 0
        if basis == 1:
            ycb = p_ycb[g]
            if ycb > 0:  # the tariff year began inside the period, ycb days in: count from there
                base_lo = before - (vol * ycb) // days
            else:
                base_lo = before + (ytd[r] if has_ytd else 0)
        h = np.int64(hh[r])
        extra = h - hh_base if hh_base > 0 and h > hh_base else 0
        big = 1 if hh_min > 0 and h >= hh_min else 0
        dw = np.int64(dwellings[r])
        if dw < 1:
            dw = 1
        mult = p_mult[g]
        scale_den = days * p_div[g]
        inv_scale = 1.0 / scale_den
        tcb = p_tcb[g]
        tca = p_tca[g]
        whole = tcb == 0 and tca == days and p_div[g] == 1  # thresholds not prorated: no division
        months = p_months[g]
        min_sum = 0
        for c in range(ncomp):
            nthr = comp_nthr[c]
            code = comp_code[c]
            ppm = comp_ppm[c]
            if nthr == 0:
                if v > 0:
                    p = prices[comp_poff[c]]
                    amt = div_round(v * p, VOLUME_DEN, rule) if need_amt else 0
                    if comp_min[c]:
                        min_sum += amt
                    if totals:  # (written out at every line: a helper taking the arrays costs refcounts)
                        tot += amt
                        if ppm == 0:  # no tax on this component (most water tariffs): nothing to add
                            pass
                        elif tax_bill:
                            seg_rate_amt[s, comp_slot[c]] += amt
                        else:
                            ltax += div_round(amt * ppm, TAX_DEN, rule)
                    if write:  # written out here: a helper taking the arrays costs reference counting per line
                        out_seg[pos] = s
                        out_comp[pos] = code
                        out_tier[pos] = 0
                        out_qty[pos] = v
                        out_price[pos] = p
                        out_amt[pos] = amt
                        out_ppm[pos] = ppm
                        out_kind[pos] = K_FLAT
                    pos += 1
            elif v > 0:
                hi = base_lo + v
                prev = 0
                for j in range(nthr + 1):
                    if j < nthr:
                        k = comp_toff[c] + j
                        t = (thr[k] + extra * per_person[k] + big * raise_[k]) * dw
                        if whole:
                            t = t * mult
                        else:
                            t = floor_div(t * mult * tca, scale_den, inv_scale) - floor_div(t * mult * tcb, scale_den,
                                                                                           inv_scale)
                        if t < prev:  # a raise on a lower tier only may pass the next threshold
                            t = prev
                    else:
                        t = hi if hi > prev else prev
                    top = hi if hi < t else t
                    bottom = base_lo if base_lo > prev else prev
                    q = top - bottom
                    q = q if q > 0 else 0
                    line = 1 if q > 0 else 0  # counted without a branch: tiers are hit at random
                    if need_amt:
                        p = prices[comp_poff[c] + j]
                        amt = div_round(q * p, VOLUME_DEN, rule)
                        min_sum += amt * comp_min[c]
                        if totals:  # an empty tier adds 0: no branch on the tier hit
                            tot += amt
                            if ppm == 0:
                                pass
                            elif tax_bill:
                                seg_rate_amt[s, comp_slot[c]] += amt
                            else:
                                ltax += div_round(amt * ppm, TAX_DEN, rule)
                        if write and line:  # written out here: a helper taking the arrays costs refcounts
                            out_seg[pos] = s
                            out_comp[pos] = code
                            out_tier[pos] = j + 1
                            out_qty[pos] = q
                            out_price[pos] = p
                            out_amt[pos] = amt
                            out_ppm[pos] = ppm
                            out_kind[pos] = K_TIER
                    pos += line
                    prev = t
        if a > 0:
            for c in range(ncomp):
                p = comp_app_price[c]
                amt = div_round(a * p, VOLUME_DEN, rule) if need_amt else 0
                if comp_min[c]:
                    min_sum += amt
                if totals:
                    tot += amt
                    if tax_bill:
                        seg_rate_amt[s, comp_slot[c]] += amt
                    else:
                        ltax += div_round(amt * comp_ppm[c], TAX_DEN, rule)
                if write:
                    out_seg[pos] = s
                    out_comp[pos] = comp_code[c]
                    out_tier[pos] = 0
                    out_qty[pos] = a
                    out_price[pos] = p
                    out_amt[pos] = amt
                    out_ppm[pos] = comp_ppm[c]
                    out_kind[pos] = K_APPORTIONED
                pos += 1
        if has_fixed:  # one fixed charge per meter of the row (sizes size_code[size_off[r]:size_off[r + 1]])
            for k in range(size_off[r], size_off[r + 1]):
                fp = fixed_lut[size_code[k]]
                if fp < 0:
                    continue
                if whole_period:
                    amt = div_round(fp * months, PRICE_DEN, rule)
                else:
                    den = days * PRICE_DEN
                    amt = div_round(fp * months * ca, den, rule) - div_round(fp * months * cb, den, rule)
                if totals:
                    tot += amt
                    if tax_bill:
                        seg_rate_amt[s, fixed_slot] += amt
                    else:
                        ltax += div_round(amt * fixed_ppm, TAX_DEN, rule)
                if write:  # written out here: a helper taking the arrays costs reference counting per line
                    out_seg[pos] = s
                    out_comp[pos] = -K_FIXED
                    out_tier[pos] = 0
                    out_qty[pos] = months
                    out_price[pos] = fp
                    out_amt[pos] = amt
                    out_ppm[pos] = fixed_ppm
                    out_kind[pos] = K_FIXED
                pos += 1
        if has_heat and area[r] > 0 and heat_days[s] > 0:
            amt = div_round(area[r] * heat_price * heat_days[s], AREA_DEN * p_sdays[g], rule)
            if totals:
                tot += amt
                if tax_bill:
                    seg_rate_amt[s, heat_slot] += amt
                else:
                    ltax += div_round(amt * heat_ppm, TAX_DEN, rule)
            if write:
                out_seg[pos] = s
                out_comp[pos] = -K_HEATING
                out_tier[pos] = 0
                out_qty[pos] = area[r]
                out_price[pos] = heat_price
                out_amt[pos] = amt
                out_ppm[pos] = heat_ppm
                out_kind[pos] = K_HEATING
            pos += 1
        if min_price >= 0:
            den = days * PRICE_DEN
            floor_amt = (div_round(min_price * months * ca, den, rule)
                         - div_round(min_price * months * cb, den, rule))
            if min_sum < floor_amt:
                if totals:
                    tot += floor_amt - min_sum
                    if tax_bill:
                        seg_rate_amt[s, min_slot] += floor_amt - min_sum
                    else:
                        ltax += div_round((floor_amt - min_sum) * min_ppm, TAX_DEN, rule)
                if write:  # written out here: a helper taking the arrays costs reference counting per line
                    out_seg[pos] = s
                    out_comp[pos] = -K_MINIMUM
                    out_tier[pos] = 0
                    out_qty[pos] = months
                    out_price[pos] = min_price
                    out_amt[pos] = floor_amt - min_sum
                    out_ppm[pos] = min_ppm
                    out_kind[pos] = K_MINIMUM
                pos += 1
        if not write and not totals:
            counts[s] = pos - start
        if totals:
            seg_amt[s] = tot
            seg_tax[s] = ltax


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


@njit(cache=True, parallel=True)
def finish_totals(row_seg, seg_amt, seg_tax, seg_rate_amt, rates, tax_bill, rule, bill_amount, bill_tax):
    """Per bill r (segments ``row_seg[r]:row_seg[r+1]``) from :func:`rate_segments`' totals: the
    amount, and the tax :func:`finish_rows` gives its lines — per line: the sum of the lines'
    rounded tax; per bill: for each rate, ``round(sum(amount) * rate / 10^6)``."""
    for r in prange(row_seg.shape[0] - 1):
        a = 0
        t = 0
        for s in range(row_seg[r], row_seg[r + 1]):
            a += seg_amt[s]
            t += seg_tax[s]
        if tax_bill[r] != 0:
            t = 0
            for k in range(rates.shape[0]):
                num = 0
                for s in range(row_seg[r], row_seg[r + 1]):
                    num += seg_rate_amt[s, k]
                t += div_round(num * rates[k], TAX_DEN, rule[r])
        bill_amount[r] = a
        bill_tax[r] = t


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
def heated_days(seg_row, sfrom, sto, off, lo, hi):
    """Days of ``[sfrom[i], sto[i]]`` (segment i's days in the heating season, empty when
    ``sto < sfrom``) in none of its row's suspensions: row r's are ``[lo[k], hi[k]]`` (inclusive
    days) for k in ``off[r]:off[r + 1]``, sorted by ``lo``. A day in two suspensions is taken off
    once (a union), so the result is never negative nor more than the season's days of the segment."""
    n = seg_row.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in prange(n):
        r = seg_row[i]
        a = sfrom[i]
        b = sto[i]
        total = b - a + 1 if b >= a else 0
        covered = a - 1  # the last day of the segment already taken off (sweep over sorted stops)
        for k in range(off[r], off[r + 1]):
            first = lo[k] if lo[k] > covered + 1 else covered + 1
            last = hi[k] if hi[k] < b else b
            if last >= first:
                total -= last - first + 1
                covered = last
        out[i] = total
    return out
