"""Invariants of rating (hypothesis), on random tariffs and bills.

"Splitting a period equals billing the whole" is checked like this: the same tariff is given a
second version with identical prices effective on a day inside the period, so rate() splits the
period there (volume and thresholds prorated by days with cumulative floors). Then, for
per-period tiers scaled by months and for annual tiers:

* per (component, tier, kind) the quantities of the two parts sum *exactly* to the whole's;
* per (component, tier, kind) the amounts differ from the whole's by at most 1 fen (each of the
  three lines involved is rounded once, so the rounding errors stay below 2 fen and the
  difference is an integer of magnitude <= 1);
* fixed charges of the parts sum exactly to the whole's (cumulative rounding); a fixed line's
  quantity is the bill's months on every part (its source gives the part's days); a heating
  line's quantity is the floor area on every part, and its heated days sum exactly.

Minimum charges are applied per part (a part below its prorated minimum is topped up), so the
split tariffs here have none; tariffs scaling thresholds by days (× days / 30) can differ by a
litre per threshold at the split and are left out.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict

import numpy as np
import polars as pl
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meterline.rating import kernels
from meterline.rating.engine import rate
from meterline.rating.money import largest_remainder
from meterline.rating.tariff import TariffBook

from tests.unit.rating.strategies import bill_row, tariff_toml
from tests.unit.rating.test_kernel_reference import frame

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(st.data())
def test_lines_sum_to_the_bill(data) -> None:
    book = TariffBook.from_texts({"t.toml": data.draw(tariff_toml("t"))})
    rows = [data.draw(bill_row("t", i)) for i in range(data.draw(st.integers(1, 8)))]
    rated = rate(book, frame(rows), on_error="collect")
    sums = rated.lines.group_by("row").agg(pl.col("amount").sum().alias("a"), pl.col("tax").sum().alias("t"))
    joined = rated.bills.join(sums, on="row", how="left").with_columns(pl.col("a", "t").fill_null(0))
    assert (joined["amount"] == joined["a"]).all()
    assert (joined["tax"] == joined["t"]).all()
    assert (joined["total"] == joined["amount"] + joined["tax"]).all()
    assert rated.bills.height + rated.errors["row"].n_unique() == len(rows)
    # line numbers are 1..n per bill
    numbered = rated.lines.group_by("row").agg(pl.col("line_no").sort().alias("n"), pl.len().alias("k"))
    for n, k in zip(numbered["n"].to_list(), numbered["k"].to_list()):
        assert n == list(range(1, k + 1))


def _min_tax_le_components(text: str) -> bool:
    """True when no minimum charge is taxed above a component it stands in for."""
    for block in text.split("[[versions]]")[1:]:
        m = re.search(r'\[versions\.minimum\]\namount = "[^"]*"(?:\ntax_rate = "([^"]*)")?', block)
        if m and m.group(1) and float(m.group(1)) > 0:
            return False
    return True


def _split_into_annual(lines: pl.DataFrame, book: TariffBook) -> int:
    """Tier lines of the later parts of a bill split across versions whose later part has annual
    tiers (0 when the bill is not such a split)."""
    versions = lines["tariff_version"].unique(maintain_order=True).to_list()
    if len(versions) < 2:
        return 0
    annual = {f"{v.tariff_id}@{v.effective.isoformat()}" for v in book.get("t").versions if v.basis == "annual"}
    later = set(versions[1:]) & annual
    return lines.filter(pl.col("tariff_version").is_in(list(later))).height


@SETTINGS
@given(st.data())
def test_charges_never_decrease_as_volume_rises(data) -> None:
    """More volume never costs less, for block tariffs (阶梯: a tier's price is never below the
    tier before it; with a falling block, an annual tier's cheaper upper block is reached sooner).

    One exception, bounded: when a bill is split across versions and a later part has annual
    tiers, the earlier part's extra litres count in that part's year-to-date and move a few of
    its litres one tier up; those lines are each rounded once, so the rounded amount may fall by
    at most one fen per tier line of the later part (the exact charge never falls)."""
    text = data.draw(tariff_toml("t", rising=True))
    book = TariffBook.from_texts({"t.toml": text})
    row = data.draw(bill_row("t"))
    more = data.draw(st.integers(1, 300_000))
    rows = [dict(row, row=0), dict(row, row=1, volume=row["volume"] + more)]
    rated = rate(book, frame(rows), on_error="collect")
    assume(rated.errors.height == 0)
    low, high = rated.bills.sort("row").to_dicts()
    slack = _split_into_annual(rated.lines.filter(pl.col("row") == 0), book)
    assert high["amount"] >= low["amount"] - slack
    if _min_tax_le_components(text):  # sample minimums here carry no tax; see the module docstring
        assert high["total"] >= low["total"] - 2 * slack


TIERED = """
id = "t"
use_type = "residential"
[[versions]]
effective = "2020-01-01"
basis = "{basis}"
thresholds = ["{t1}", "{t2}"]
[versions.household]
base_size = 3
per_person = "{pp}"
min_size = 6
raise = ["{rz}", "0"]
[[versions.components]]
code = "water"
prices = ["1.00", "2.00", "3.00"]
"""


def _m3(litres: int) -> str:
    return f"{litres // 1000}.{litres % 1000:03d}"


@SETTINGS
@given(t1=st.integers(1, 50_000), gap=st.integers(1, 50_000), pp=st.integers(0, 9_000), rz=st.integers(0, 9_000),
       hh=st.integers(0, 8), dw=st.integers(1, 4), basis=st.sampled_from(["period", "annual"]),
       ytd=st.integers(0, 60_000), bimonthly=st.booleans())
def test_a_volume_on_a_threshold_stays_in_the_lower_tier(t1, gap, pp, rz, hh, dw, basis, ytd, bimonthly) -> None:
    book = TariffBook.from_texts({"t.toml": TIERED.format(basis=basis, t1=_m3(t1), t2=_m3(t1 + gap), pp=_m3(pp),
                                                           rz=_m3(rz))})
    start = dt.date(2026, 9, 1)
    end = dt.date(2026, 10, 31) if bimonthly else dt.date(2026, 9, 30)
    months = 2 if bimonthly and basis == "period" else 1
    threshold = (t1 + max(0, hh - 3) * pp + (rz if hh >= 6 else 0)) * dw * months
    second = (t1 + gap + max(0, hh - 3) * pp) * dw * months
    assume(threshold < second)  # a raise on tier 1 only may swallow tier 2 (tested in the examples)
    lo = ytd if basis == "annual" else 0
    assume(threshold > lo)
    on = threshold - lo
    rows = [dict(row=0, tariff_id="t", period_start=start, period_end=end, volume=on, ytd=ytd,
                 household_size=hh, dwellings=dw),
            dict(row=1, tariff_id="t", period_start=start, period_end=end, volume=on + 1, ytd=ytd,
                 household_size=hh, dwellings=dw)]
    lines = rate(book, pl.DataFrame(rows)).lines
    exact = lines.filter(pl.col("row") == 0)
    assert exact["tier"].to_list() == [1] and exact["quantity"].to_list() == [on]
    over = lines.filter(pl.col("row") == 1).sort("tier")
    assert over["tier"].to_list() == [1, 2] and over["quantity"].to_list() == [on, 1]


def _with_split(text: str, split: dt.date) -> str:
    """The tariff with every version repeated, identically, from ``split`` on."""
    head, *versions = text.split("[[versions]]")
    in_force = [v for v in versions if re.search(r'effective = "([^"]*)"', v).group(1) <= split.isoformat()][-1]
    later = [v for v in versions if re.search(r'effective = "([^"]*)"', v).group(1) > split.isoformat()]
    copy = re.sub(r'effective = "[^"]*"', f'effective = "{split.isoformat()}"', in_force)
    kept = [v for v in versions if v not in later]
    return head + "".join("[[versions]]" + v for v in kept + [copy] + later)


def _by_key(lines: pl.DataFrame) -> dict:
    out: dict = defaultdict(lambda: [0, 0])
    for line in lines.iter_rows(named=True):
        source = json.loads(line["source"])
        kind = source["kind"]
        key = (line["component"], line["tier"], kind)
        out[key][0] += source["heated_days"] if kind == "heating" else line["quantity"]
        out[key][1] += line["amount"]
    return dict(out)


@SETTINGS
@given(st.data())
def test_splitting_a_period_under_one_version_equals_the_whole(data) -> None:
    text = data.draw(tariff_toml("t", versions=1))
    text = re.sub(r'threshold_scaling = "days"', 'threshold_scaling = "months"', text)
    text = re.sub(r'\[versions\.minimum\]\namount = "[^"]*"\n?', "", text)
    row = data.draw(bill_row("t", max_days=90))
    days = (row["period_end"] - row["period_start"]).days + 1
    assume(days >= 2)
    split = row["period_start"] + dt.timedelta(days=data.draw(st.integers(1, days - 1)))
    whole = rate(TariffBook.from_texts({"t.toml": text}), frame([row]), on_error="collect")
    parts = rate(TariffBook.from_texts({"t.toml": _with_split(text, split)}), frame([row]), on_error="collect")
    assume(whole.errors.height == 0)
    assert parts.errors.height == 0
    assert all(json.loads(s)["days"] < days for s in parts.lines["source"].to_list())  # it was split
    w, p = _by_key(whole.lines), _by_key(parts.lines)
    assert set(w) == set(p)
    for key in w:
        if key[2] == "fixed":
            assert p[key][1] == w[key][1], key             # fixed charges: exact (quantity: the bill's months)
            continue
        assert p[key][0] == w[key][0], key                 # quantities: exact
        assert abs(p[key][1] - w[key][1]) <= 1, key        # amounts: within one fen per line


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 10**9), weights=st.lists(st.integers(0, 10**6), min_size=1, max_size=30))
def test_largest_remainder_sums_exactly(total, weights) -> None:
    parts = largest_remainder(total, weights)
    assert sum(parts) == total
    assert all(p >= 0 for p in parts)
    wsum = sum(weights) or len(weights)
    eff = weights if sum(weights) else [1] * len(weights)
    for p, w in zip(parts, eff):
        assert abs(p * wsum - total * w) < wsum     # each part within one unit of its exact share
    assert kernels.largest_remainder(total, np.array(weights, dtype=np.int64)).tolist() == parts


@settings(max_examples=100, deadline=None)
@given(groups=st.lists(st.tuples(st.integers(0, 10**7), st.lists(st.integers(0, 10**5), min_size=1, max_size=10)),
                       min_size=1, max_size=20))
def test_largest_remainder_groups_match_one_by_one(groups) -> None:
    totals = np.array([t for t, _ in groups], dtype=np.int64)
    weights = np.array([w for _, ws in groups for w in ws], dtype=np.int64)
    offsets = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([len(ws) for _, ws in groups], out=offsets[1:])
    out = kernels.largest_remainder_groups(totals, offsets, weights)
    for g, (t, ws) in enumerate(groups):
        part = out[offsets[g]:offsets[g + 1]].tolist()
        assert part == largest_remainder(t, ws)
        assert sum(part) == t
