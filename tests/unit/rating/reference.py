"""A plain-Python reference of rating, one bill at a time, written from the rules in
rating/engine.py and rating/kernels.py (not from their code): the numba path must agree with it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from fractions import Fraction

from meterline.rating.errors import RatingError
from meterline.rating.money import div_round
from meterline.rating.tariff import TariffBook


@dataclass
class RefBill:
    lines: list[dict] = field(default_factory=list)
    amount: int = 0
    tax: int = 0


def months(days: int) -> int:
    return max(1, int(Fraction(days * 16, 487) + Fraction(1, 2)))


def _suspensions(row: dict) -> list[tuple]:
    """The row's heating suspensions (stop, resume), checked as the engine's contract says."""
    out = []
    stop, resume = row.get("heating_stop"), row.get("heating_resume")
    if (stop is not None or resume is not None) and (stop is None or resume is None or resume > stop):
        out.append((stop, resume))
    stops, resumes = row.get("heating_stops"), row.get("heating_resumes")
    if stops is not None or resumes is not None:
        stops, resumes = stops or [], resumes or []
        if len(stops) != len(resumes):
            raise RatingError("uneven suspension lists")
        for s, r in zip(stops, resumes):
            if s is None and r is None:
                raise RatingError("a suspension without dates")
            if s is not None and r is not None and r <= s:
                raise RatingError("resumes before its stop")
            out.append((s, r))
    far = dt.date.max
    ranges = sorted((s or dt.date.min, (r - dt.timedelta(days=1)) if r else far) for s, r in out)
    for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
        if lo <= hi:
            raise RatingError("suspensions overlap")
    return out


def rate_one(book: TariffBook, row: dict, company: str | None = None) -> RefBill:
    tariff = book.get(row["tariff_id"], company)
    start, end = row["period_start"], row["period_end"]
    if end < start:
        raise RatingError("period end before start", tariff.id)
    suspended = _suspensions(row)
    parts = []
    for version, p_from, p_to in tariff.versions_between(start, end):
        if version.basis != "annual":
            parts.append((version, p_from, p_to))
            continue
        # annual tiers restart on every day that is the start of a tariff year
        cut = p_from
        day = p_from + dt.timedelta(days=1)
        while day <= p_to:
            if tariff.year_start_for(day) == day:
                parts.append((version, cut, day - dt.timedelta(days=1)))
                cut = day
            day += dt.timedelta(days=1)
        parts.append((version, cut, p_to))
    D = (end - start).days + 1
    m = months(D)
    rule = tariff.rounding
    V = row["volume"]
    A = row.get("apportioned", 0) or 0
    ytd = row.get("ytd", 0) or 0
    hh = row.get("household_size", 0) or 0
    dw = row.get("dwellings", 1) or 1
    lines: list[dict] = []
    cum = 0
    for version, p_from, p_to in parts:
        d = (p_to - p_from).days + 1
        cb, ca = cum, cum + d
        cum = ca
        vs = V * ca // D - V * cb // D
        aps = A * ca // D - A * cb // D
        annual = version.basis == "annual"
        year_from = tariff.year_start_for(p_from)
        if annual and year_from > start:  # the year began inside the period: count from its first day
            lo = V * cb // D - V * ((year_from - start).days) // D
        else:
            lo = ytd + V * cb // D if annual else 0
        part = {"version": version.label, "from": p_from, "to": p_to, "days": d}
        min_sum = 0
        for comp in version.components:
            if not comp.tiered:
                if vs > 0:
                    amt = div_round(vs * comp.prices[0], 10_000_000, rule)
                    min_sum += amt if comp.minimum else 0
                    lines.append(dict(part, component=comp.code, tier=None, kind="flat", quantity=vs,
                                      unit_price=comp.prices[0], amount=amt, ppm=comp.tax_ppm))
                continue
            if vs == 0:
                continue
            bounds = []
            for j, t in enumerate(comp.thresholds):
                raised = t
                if version.household_base and hh > version.household_base:
                    raised += (hh - version.household_base) * comp.per_person[j]
                if version.household_min and hh >= version.household_min:
                    raised += comp.raise_[j]
                raised *= dw
                if bounds:
                    raised = max(raised, bounds[-1][0])
                bounds.append((raised, None))
            scaled = []
            for raised, _ in bounds:
                if annual:
                    scaled.append(raised)
                elif tariff.threshold_scaling == "days":
                    scaled.append(raised * ca // 30 - raised * cb // 30)
                else:
                    scaled.append(raised * m * ca // D - raised * m * cb // D)
            edges = [0] + scaled + [None]
            for j in range(len(scaled) + 1):
                low, high = edges[j], edges[j + 1]
                top = lo + vs if high is None else min(lo + vs, high)
                q = top - max(lo, low)
                if q > 0:
                    amt = div_round(q * comp.prices[j], 10_000_000, rule)
                    min_sum += amt if comp.minimum else 0
                    lines.append(dict(part, component=comp.code, tier=j + 1, kind="tier", quantity=q,
                                      unit_price=comp.prices[j], amount=amt, ppm=comp.tax_ppm))
        if aps > 0:
            for comp in version.components:
                amt = div_round(aps * comp.apportioned_price, 10_000_000, rule)
                min_sum += amt if comp.minimum else 0
                lines.append(dict(part, component=comp.code, tier=None, kind="apportioned", quantity=aps,
                                  unit_price=comp.apportioned_price, amount=amt, ppm=comp.tax_ppm))
        if version.has_fixed:  # one fixed charge per meter
            sizes = row.get("meter_sizes")
            for size in (sizes if sizes is not None else [row.get("meter_size")]):
                fp = version.fixed_price(size)
                if fp is None:
                    raise RatingError("no fixed charge for the size", tariff.id)
                amt = div_round(fp * m * ca, D * 10_000, rule) - div_round(fp * m * cb, D * 10_000, rule)
                lines.append(dict(part, component="fixed", tier=None, kind="fixed", quantity=m, unit_price=fp,
                                  amount=amt, ppm=version.fixed_tax_ppm))
        if version.heating is not None:
            area = row.get("area_cm2")
            if area is None:
                raise RatingError("heating needs an area", tariff.id)
            seasons = version.heating.seasons_overlapping(p_from, p_to)
            if len(seasons) > 1:
                raise RatingError("two seasons", tariff.id)
            if seasons and area > 0:
                s_first, s_last = seasons[0]
                heated = 0
                day = max(s_first, p_from)
                while day <= min(s_last, p_to):
                    stopped = any((stop is None or day >= stop) and (resume is None or day < resume)
                                  for stop, resume in suspended)
                    heated += 0 if stopped else 1
                    day += dt.timedelta(days=1)
                if heated > 0:
                    sdays = (s_last - s_first).days + 1
                    amt = div_round(area * version.heating.price * heated, 1_000_000 * sdays, rule)
                    lines.append(dict(part, component="heating", tier=None, kind="heating", quantity=area,
                                      unit_price=version.heating.price, amount=amt, ppm=version.heating.tax_ppm,
                                      heated_days=heated))
        if version.minimum is not None:
            floor_amt = (div_round(version.minimum * m * ca, D * 10_000, rule)
                         - div_round(version.minimum * m * cb, D * 10_000, rule))
            if min_sum < floor_amt:
                lines.append(dict(part, component="minimum", tier=None, kind="minimum", quantity=m,
                                  unit_price=version.minimum, amount=floor_amt - min_sum,
                                  ppm=version.minimum_tax_ppm))
    # tax
    if tariff.tax_rounding == "line":
        for line in lines:
            line["tax"] = div_round(line["amount"] * line["ppm"], 1_000_000, rule)
    else:
        for rate in dict.fromkeys(line["ppm"] for line in lines):
            group = [line for line in lines if line["ppm"] == rate]
            exact = [line["amount"] * rate for line in group]
            total = div_round(sum(exact), 1_000_000, rule)
            taxes = [e // 1_000_000 for e in exact]
            order = sorted(range(len(group)), key=lambda i: (-(exact[i] % 1_000_000), i))
            for i in order[:total - sum(taxes)]:
                taxes[i] += 1
            for line, t in zip(group, taxes):
                line["tax"] = t
    for i, line in enumerate(lines, 1):
        line["line_no"] = i
    return RefBill(lines=lines, amount=sum(x["amount"] for x in lines), tax=sum(x["tax"] for x in lines))
