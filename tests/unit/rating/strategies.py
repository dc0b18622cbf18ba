"""hypothesis strategies: random tariff files (as TOML text) and bills to rate."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

DAY0 = dt.date(2026, 1, 1)


def _m3(litres: int) -> str:
    return f"{litres // 1000}.{litres % 1000:03d}"


def _yuan(fen4: int) -> str:
    """price in fen × 10^4 → yuan with up to 6 decimals"""
    return f"{fen4 // 1_000_000}.{fen4 % 1_000_000:06d}"


@st.composite
def tariff_toml(draw, tid: str = "t", *, versions: int | None = None, heating: bool | None = None,
                basis: str | None = None, rising: bool = False) -> str:
    """A random, valid tariff file (``rising``: every tiered price at least the one before, a
    block tariff 阶梯 as utilities publish them)."""
    nver = versions if versions is not None else draw(st.integers(1, 2))
    rounding = draw(st.sampled_from(["half_up", "half_even", "down", "up"]))
    tax_rounding = draw(st.sampled_from(["line", "bill"]))
    scaling = draw(st.sampled_from(["months", "days"]))
    # annual tiers restart at the year start: often inside the bills' periods (DAY0 + 0..270 days)
    year_start = draw(st.sampled_from(["01-01", "03-01", "04-15", "07-01"]))
    out = [f'id = "{tid}"', 'use_type = "residential"', f'rounding = "{rounding}"',
           f'tax_rounding = "{tax_rounding}"', f'threshold_scaling = "{scaling}"', f'year_start = "{year_start}"']
    dates = sorted(draw(st.lists(st.integers(0, 200), min_size=nver - 1, max_size=nver - 1, unique=True)))
    effective = [dt.date(2020, 1, 1)] + [DAY0 + dt.timedelta(days=d) for d in dates]
    for eff in effective:
        b = basis or draw(st.sampled_from(["period", "annual"]))
        nthr = draw(st.integers(1, 4))
        thr = sorted(draw(st.lists(st.integers(1, 400_000), min_size=nthr, max_size=nthr, unique=True)))
        out += ["", "[[versions]]", f'effective = "{eff.isoformat()}"', f'basis = "{b}"',
                "thresholds = [" + ", ".join(f'"{_m3(t)}"' for t in thr) + "]"]
        heat = heating if heating is not None else draw(st.booleans())
        ncomp = draw(st.integers(0 if heat else 1, 3))
        counted = tiered = False
        for c in range(ncomp):
            out += ["[[versions.components]]", f'code = "c{c}"']
            if draw(st.booleans()):
                tiered = True
                prices = [draw(st.integers(0, 20_000_000)) for _ in range(nthr + 1)]
                if rising:
                    prices.sort()
                out.append("prices = [" + ", ".join(f'"{_yuan(p)}"' for p in prices) + "]")
            else:
                out.append(f'price = "{_yuan(draw(st.integers(0, 20_000_000)))}"')
            if draw(st.booleans()):
                out.append(f'apportioned_price = "{_yuan(draw(st.integers(0, 20_000_000)))}"')
            out.append(f'tax_rate = "0.{draw(st.integers(0, 999_999)):06d}"')
            minimum = draw(st.booleans())
            counted |= minimum
            out.append(f"minimum = {'true' if minimum else 'false'}")
        hh = draw(st.sampled_from(["none", "per_person", "raise", "both"])) if tiered else "none"
        if hh != "none":
            out.append("[versions.household]")
            if hh in ("per_person", "both"):
                out += [f"base_size = {draw(st.integers(1, 5))}", f'per_person = "{_m3(draw(st.integers(0, 20_000)))}"']
            if hh in ("raise", "both"):
                raises = [draw(st.integers(0, 100_000)) for _ in thr]
                out += [f"min_size = {draw(st.integers(1, 6))}",
                        "raise = [" + ", ".join(f'"{_m3(r)}"' for r in raises) + "]"]
        if draw(st.booleans()):
            out += ["[versions.fixed]", f'tax_rate = "0.{draw(st.integers(0, 200_000)):06d}"',
                    f'sizes = {{ DN15 = "{_yuan(draw(st.integers(0, 50_000_000)))}", '
                    f'DN20 = "{_yuan(draw(st.integers(0, 50_000_000)))}" }}']
            if draw(st.booleans()):
                out.append(f'default = "{_yuan(draw(st.integers(0, 50_000_000)))}"')
        if counted and draw(st.booleans()):
            out += ["[versions.minimum]", f'amount = "{_yuan(draw(st.integers(0, 100_000_000)))}"']
        if heat:
            out += ["[versions.heating]", f'price = "{_yuan(draw(st.integers(0, 400_000_000)))}"',
                    'season_start = "11-15"', 'season_end = "03-15"',
                    f'tax_rate = "0.{draw(st.integers(0, 100_000)):06d}"']
    return "\n".join(out) + "\n"


@st.composite
def bill_row(draw, tid: str = "t", row: int = 0, *, max_days: int = 70) -> dict:
    start = DAY0 + dt.timedelta(days=draw(st.integers(0, 200)))
    end = start + dt.timedelta(days=draw(st.integers(0, max_days)))
    stop = draw(st.none() | st.integers(-30, 120))
    resume = draw(st.none() | st.integers(-30, 120))
    # more suspensions as lists (cut points in order: none overlap each other; adjacent ones
    # share a day; the first may lack its stop, the last its resume), or none
    cuts = sorted(draw(st.sets(st.integers(-30, 120), max_size=6)))
    pairs = [(cuts[k], cuts[k + 1]) for k in range(0, len(cuts) - 1, draw(st.sampled_from([1, 2])))]
    pairs = [p for p in pairs if draw(st.booleans())]
    day = lambda k: None if k is None else start + dt.timedelta(days=k)  # noqa: E731
    if pairs and draw(st.booleans()):
        pairs[0] = (None, pairs[0][1])
    if pairs and pairs[-1][0] is not None and draw(st.booleans()):
        pairs[-1] = (pairs[-1][0], None)
    listed = draw(st.booleans())
    return {
        "row": row, "tariff_id": tid, "period_start": start, "period_end": end,
        "volume": draw(st.integers(0, 600_000)),
        "apportioned": draw(st.sampled_from([0, 0, draw(st.integers(0, 50_000))])),
        "ytd": draw(st.integers(0, 500_000)),
        "household_size": draw(st.integers(0, 9)),
        "dwellings": draw(st.integers(1, 4)),
        "meter_size": draw(st.sampled_from(["DN15", "DN20", "DN50", None])),
        # one fixed charge per meter: several meters (or none) where meter_sizes is given
        "meter_sizes": draw(st.none() | st.lists(st.sampled_from(["DN15", "DN20", "DN50"]), max_size=3)),
        "area_cm2": draw(st.integers(0, 2_000_000)),
        "heating_stop": None if stop is None else start + dt.timedelta(days=stop),
        "heating_resume": None if resume is None else start + dt.timedelta(days=resume),
        "heating_stops": [day(a) for a, _ in pairs] if listed else None,
        "heating_resumes": [day(b) for _, b in pairs] if listed else None,
    }
