"""The vectorized rating entry point: ``rate(book, frame) -> Rated``.

Clarifications of the rating contract (backward compatible; the names and columns are the
contract's):

* ``rate(book, frame, *, company=None, on_error="raise")``: ``company`` picks per-company tariff
  overrides (files with ``company = "code"``).
* Fixed and minimum charges are priced per **month**: their line's ``unit_price`` is the monthly
  price and ``quantity`` the months of the bill (1 for a monthly bill, 2 bi-monthly). The
  months of a bill are ``max(1, round(days / 30.4375))``; per-period tier thresholds are written
  per month and multiplied by them (``threshold_scaling = "days"`` in a tariff: × days / 30).
* A period spanning two tariff versions is split by days with **cumulative floors**
  (``floor(x * days_through_part / days) - floor(x * days_before_part / days)``) for the volume,
  the apportioned volume and every threshold; the parts sum exactly to the whole, and (because
  volume and thresholds use the same split) the per-tier quantities of the parts sum exactly to
  those of the whole period under one version. Fixed and minimum charges are split by
  cumulative rounding of ``price * months * days`` (the parts sum to the whole charge).
* Annual cumulative tiers: thresholds are per tariff year and not prorated; a later part of a
  split period starts where the earlier part ended (``ytd`` + its volume). A period that
  crosses the tariff's ``year_start`` is split there too (like a version change, by days with
  cumulative floors): the part in the new year starts from zero (``ytd`` belongs to the year
  the period started in); its lines' source names ``tier_year_from``. ``ytd`` is the volume the
  tiers priced on the year's earlier bills: ``volume`` only. The ``apportioned`` volume is priced
  flat on its own lines (``apportioned_price``) and takes no tier volume, neither in its own bill
  nor in the year to date of later ones (the billing run's year to date follows this rule).
* Heating (area-based): ``quantity`` = ``area_cm2``, ``unit_price`` = price per m² per season;
  amount = ``round(area × price × heated days / season days)`` under the tariff's rounding rule,
  once per line (one line per part of the period). Heated days are the part's days in the
  season less every day in a suspension: a suspension runs from its stop date to the day
  before its resume date (no stop date: from the season's start; no resume date: to the
  season's end). A row's suspensions are the pairs of the list columns ``heating_stops`` /
  ``heating_resumes`` (same length; element k of each is one suspension; any number, none
  overlapping, adjacent ones allowed: ``resume == next stop``) together with the single pair
  ``heating_stop`` / ``heating_resume`` (kept for older callers; ``quote`` and the billing run
  pass the lists: a single pair whose resume is on or before its stop suspends no day, as
  before). Refused rows: lists of unequal length, a list pair with neither date, a list pair
  resuming on or before its stop, and suspensions that overlap. Splitting a suspension into
  adjacent ones changes nothing. The source names the season and the heated days.
* Missing ``household_size`` (or 0) means the tariff's base size: no raise.
* Fixed charges are per meter: ``meter_sizes`` (a list; empty: no meter, no fixed charge) gives
  one fixed line per meter; where it is null (or absent) the row has one meter of ``meter_size``.
* ``Rated.errors`` (row, reason) lists the rows that were not rated (``on_error="collect"``); they
  have no bill. Reasons: unknown tariff, no version in force, period end before start, a
  negative or missing volume, no fixed charge for the meter size, heating without a floor area,
  a period touching two heating seasons.
* ``source`` JSON keys: ``kind``, ``version``, ``from``, ``to``, ``days`` (days of the part),
  ``period_days``, ``months``, and for heating ``season_from``, ``season_to``, ``season_days``,
  ``heated_days``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from meterline.rating import kernels
from meterline.rating.errors import RatingError
from meterline.rating.money import (MAX_AREA_CM2, MAX_DWELLINGS, MAX_HOUSEHOLD, MAX_VOLUME_LITRES, PRICE_SCALE,
                                    RULE_CODES)
from meterline.rating.tariff import Tariff, TariffBook, Version

__all__ = ["Rated", "RatingError", "rate", "months_of", "LINE_SCHEMA", "BILL_SCHEMA"]

EPOCH = dt.date(1970, 1, 1)

LINE_SCHEMA = {
    "row": pl.Int64, "line_no": pl.Int16, "component": pl.Utf8, "tier": pl.Int16, "quantity": pl.Int64,
    "unit_price": pl.Int64, "price_scale": pl.Int16, "amount": pl.Int64, "tax": pl.Int64,
    "tariff_version": pl.Utf8, "source": pl.Utf8,
}
BILL_SCHEMA = {"row": pl.Int64, "consumption": pl.Int64, "amount": pl.Int64, "tax": pl.Int64, "total": pl.Int64}
ERROR_SCHEMA = {"row": pl.Int64, "reason": pl.Utf8}

_DEFAULTS: dict[str, tuple[pl.DataType, object]] = {
    "apportioned": (pl.Int64, 0),
    "ytd": (pl.Int64, 0),
    "household_size": (pl.Int16, 0),
    "dwellings": (pl.Int16, 1),
    "meter_size": (pl.Utf8, None),
    "meter_sizes": (pl.List(pl.Utf8), None),
    "area_cm2": (pl.Int64, None),
    "heating_stop": (pl.Date, None),
    "heating_resume": (pl.Date, None),
    "heating_stops": (pl.List(pl.Date), None),
    "heating_resumes": (pl.List(pl.Date), None),
}
_REQUIRED = {"row": pl.Int64, "tariff_id": pl.Utf8, "period_start": pl.Date, "period_end": pl.Date,
             "volume": pl.Int64}
_SPECIAL_NAMES = ("fixed", "minimum", "heating")  # kernel component codes -2, -3, -4


@dataclass
class Rated:
    lines: pl.DataFrame
    bills: pl.DataFrame
    errors: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ERROR_SCHEMA))


def months_of(days: int) -> int:
    """Months of a bill of ``days`` days: round(days / 30.4375), at least 1 (28–45 days: 1, 46–76: 2)."""
    return max(1, (32 * days + 487) // 974)


def _day(d: dt.date) -> int:
    return (d - EPOCH).days


def _from_day(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(n))


class _Versions:
    """Global numbering of the versions and component codes met while rating."""

    def __init__(self) -> None:
        self.versions: list[Version] = []
        self.tariffs: list[Tariff] = []
        self._ids: dict[int, int] = {}
        self.codes: dict[str, int] = {}

    def index(self, tariff: Tariff, version: Version) -> int:
        key = id(version)
        if key not in self._ids:
            self._ids[key] = len(self.versions)
            self.versions.append(version)
            self.tariffs.append(tariff)
            for c in version.components:
                self.codes.setdefault(c.code, len(self.codes))
        return self._ids[key]


def _prepare(frame: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise RatingError(f"rate(): the frame lacks column(s) {', '.join(missing)}")
    exprs = []
    for name, dtype in _REQUIRED.items():
        exprs.append(pl.col(name).cast(dtype))
    for name, (dtype, default) in _DEFAULTS.items():
        if name in frame.columns:
            col = pl.col(name).cast(dtype)
            if default is not None:
                col = col.fill_null(default)
            exprs.append(col)
        else:
            exprs.append(pl.lit(default, dtype=dtype).alias(name))
    try:
        return frame.select(exprs)
    except pl.exceptions.PolarsError as exc:
        raise RatingError(f"rate(): a column has the wrong type: {exc}") from exc


def _codes(series: pl.Series) -> tuple[np.ndarray, list]:
    """Dense codes (int64, nulls get a code too) and the distinct values in first-seen order."""
    uniq = series.unique(maintain_order=True)
    table = pl.DataFrame({"v": uniq, "code": np.arange(len(uniq), dtype=np.int64)})
    codes = (pl.DataFrame({"v": series}).join(table, on="v", how="left", nulls_equal=True, maintain_order="left")
             ["code"].to_numpy())
    return codes, uniq.to_list()


def rate(book: TariffBook, frame: pl.DataFrame, *, company: str | None = None,
         on_error: Literal["raise", "collect"] = "raise", lines: bool = True) -> Rated:
    """Rate every row of ``frame`` (columns of the rating contract); see the module docstring.

    ``lines=False`` computes the bills only (amount, tax, total: the same figures, every line's
    amount and tax computed and rounded as when the lines are written) and returns an empty
    line frame: one pass of the kernel, no line table (the billing run's dry run)."""
    if on_error not in ("raise", "collect"):
        raise ValueError("on_error must be 'raise' or 'collect'")
    df = _prepare(frame)
    n = df.height
    row_key = df["row"].to_numpy()
    errors: list[tuple[np.ndarray, str, str | None]] = []  # (row positions, reason, tariff id)

    # -- per (tariff, period) group: versions, parts, days -------------------------------------
    keys = df.select("tariff_id", "period_start", "period_end")
    gidx, groups = _group_index(keys)
    reg = _Versions()
    gs: dict[str, list] = {k: [] for k in ("version", "from", "to", "cb", "ca", "days", "months", "mult", "div",
                                            "tcb", "tca", "sfrom", "sto", "sdays", "ycb", "year")}
    g_nseg = np.zeros(len(groups), dtype=np.int64)
    g_rule = np.zeros(len(groups), dtype=np.int64)
    g_taxbill = np.zeros(len(groups), dtype=np.int64)
    g_error: list[str | None] = []
    g_tariff: list[str | None] = []
    for g, (tid, start, end) in enumerate(groups):
        g_tariff.append(tid)
        try:
            if tid is None or start is None or end is None:
                raise RatingError("tariff_id, period_start and period_end are required", tid)
            if end < start:
                raise RatingError(f"period end {end} is before its start {start}", tid)
            tariff = book.get(tid, company)
            parts = tariff.rating_parts(start, end)
        except RatingError as exc:
            g_error.append(exc.reason)
            continue
        days = (end - start).days + 1
        months = months_of(days)
        g_rule[g] = RULE_CODES[tariff.rounding]
        g_taxbill[g] = 1 if tariff.tax_rounding == "bill" else 0
        reason = None
        before = 0
        for version, p_from, p_to, year_from in parts:
            pdays = (p_to - p_from).days + 1
            cb, ca = before, before + pdays
            before = ca
            # annual tiers: a tariff year that began inside the period starts from zero there
            gs["ycb"].append((year_from - start).days if year_from is not None and year_from > start else 0)
            gs["year"].append(_day(year_from) if year_from is not None else -1)
            gs["version"].append(reg.index(tariff, version))
            gs["from"].append(_day(p_from))
            gs["to"].append(_day(p_to))
            gs["cb"].append(cb)
            gs["ca"].append(ca)
            gs["days"].append(days)
            gs["months"].append(months)
            if version.basis == "annual":
                gs["mult"].append(1), gs["div"].append(1), gs["tcb"].append(0), gs["tca"].append(days)
            elif tariff.threshold_scaling == "days":
                gs["mult"].append(days), gs["div"].append(30), gs["tcb"].append(cb), gs["tca"].append(ca)
            else:
                gs["mult"].append(months), gs["div"].append(1), gs["tcb"].append(cb), gs["tca"].append(ca)
            sfrom, sto, sdays = 0, -1, 1
            if version.heating is not None:
                seasons = version.heating.seasons_overlapping(p_from, p_to)
                if len(seasons) > 1:
                    reason = f"period {start}..{end} touches two heating seasons of {version.label}; bill each season"
                elif seasons:
                    s_first, s_last = seasons[0]
                    sfrom, sto = _day(max(s_first, p_from)), _day(min(s_last, p_to))
                    sdays = (s_last - s_first).days + 1
            gs["sfrom"].append(sfrom)
            gs["sto"].append(sto)
            gs["sdays"].append(sdays)
        g_error.append(reason)
        g_nseg[g] = len(parts) if reason is None else 0
        if reason is not None:
            for k in gs:
                del gs[k][len(gs[k]) - len(parts):]
    g_gsoff = np.zeros(len(groups), dtype=np.int64)
    g_gsoff[1:] = np.cumsum(g_nseg)[:-1]
    gsa = {k: np.asarray(v, dtype=np.int64) for k, v in gs.items()}

    # -- row checks -----------------------------------------------------------------------------
    bad = np.zeros(n, dtype=bool)
    g_bad = np.array([r is not None for r in g_error], dtype=bool)
    if g_bad.any():
        rows_bad = g_bad[gidx]
        for g in np.flatnonzero(g_bad):
            errors.append((np.flatnonzero(gidx == g), g_error[g], g_tariff[g]))
        bad |= rows_bad
    vol_null = df["volume"].is_null().to_numpy()
    volume = df["volume"].fill_null(0).to_numpy()
    apportioned = df["apportioned"].to_numpy()
    ytd = df["ytd"].to_numpy()
    for mask, reason in ((vol_null, "volume is missing"),
                         (volume < 0, "volume is negative"),
                         (apportioned < 0, "apportioned volume is negative"),
                         (ytd < 0, "year-to-date volume is negative"),
                         ((volume > MAX_VOLUME_LITRES) | (apportioned > MAX_VOLUME_LITRES) | (ytd > MAX_VOLUME_LITRES),
                          f"volume above {MAX_VOLUME_LITRES // 1000:,} m³ (is the register or the unit wrong?)"),
                         (df["area_cm2"].fill_null(0).to_numpy() > MAX_AREA_CM2,
                          f"floor area above {MAX_AREA_CM2 // 100:,} m²"),
                         (df["dwellings"].to_numpy() < 1, "dwellings must be at least 1"),
                         (df["dwellings"].to_numpy() > MAX_DWELLINGS, f"more than {MAX_DWELLINGS} dwellings"),
                         (df["household_size"].to_numpy() < 0, "household size is negative"),
                         (df["household_size"].to_numpy() > MAX_HOUSEHOLD, f"more than {MAX_HOUSEHOLD} persons")):
        mask = mask & ~bad
        if mask.any():
            errors.append((np.flatnonzero(mask), reason, None))
            bad |= mask
    susp_off, susp_lo, susp_hi, susp_errors = _suspensions(df)
    for r, reason in susp_errors:
        if not bad[r]:
            errors.append((np.array([r], dtype=np.int64), reason, None))
            bad[r] = True

    # -- segments: one per (row, version part) ----------------------------------------------------
    seg = _segments(gidx, g_nseg, g_gsoff, bad)
    seg_row, seg_gs = seg
    seg_version = gsa["version"][seg_gs] if len(seg_gs) else np.zeros(0, dtype=np.int64)

    # fixed charges and heating need per-row data: check them before rating
    size_off, size_codes, sizes = _meter_sizes(df)
    size_row = np.repeat(np.arange(n, dtype=np.int64), np.diff(size_off))
    area_null = df["area_cm2"].is_null().to_numpy()
    fixed_lut: dict[int, np.ndarray] = {}
    more_bad = np.zeros(n, dtype=bool)
    for v, version in enumerate(reg.versions):
        in_v = seg_version == v
        if version.has_fixed:
            lut = np.array([(-1 if (p := version.fixed_price(s)) is None else p) for s in sizes] or [-1],
                           dtype=np.int64)
            fixed_lut[v] = lut
            unpriced = lut[size_codes] < 0
            row_code = np.full(n, -1, dtype=np.int64)  # a row's first meter size without a fixed charge
            row_code[size_row[unpriced][::-1]] = size_codes[unpriced][::-1]
            missing = in_v & (row_code[seg_row] >= 0)
            if missing.any():
                rows = np.unique(seg_row[missing])
                rows = rows[~more_bad[rows]]  # a row names one reason
                for code in np.unique(row_code[rows]):
                    sel = rows[row_code[rows] == code]
                    errors.append((sel, f"{version.label} has no fixed charge for meter size {sizes[code]!r}",
                                   version.tariff_id))
                more_bad[rows] = True
        if version.heating is not None:
            no_area = in_v & area_null[seg_row]
            if no_area.any():
                rows = np.unique(seg_row[no_area])
                rows = rows[~more_bad[rows]]
                if len(rows):
                    errors.append((rows, f"{version.label} is area-based heating and needs area_cm2",
                                   version.tariff_id))
                more_bad[rows] = True
    if more_bad.any():
        bad |= more_bad
        seg_row, seg_gs = _segments(gidx, g_nseg, g_gsoff, bad)
        seg_version = gsa["version"][seg_gs]

    if errors and on_error == "raise":
        rows, reason, tid = errors[0]
        raise RatingError(reason, tid, [int(row_key[i]) for i in rows])

    # -- inputs stay per row (read through segment -> row) and per part (segment -> part) ---------
    S = len(seg_row)
    empty = np.zeros(0, dtype=np.int64)
    row_in = {k: _writable(a) for k, a in dict(  # writable arrays: one compiled kernel, not one per flag
        volume=volume,
        apportioned=apportioned if apportioned.any() else empty,
        ytd=ytd if ytd.any() else empty,
        hh=df["household_size"].to_numpy(),
        dwellings=df["dwellings"].to_numpy(),
        size_off=size_off if fixed_lut else empty,
        size_code=size_codes if fixed_lut else empty,
        area=df["area_cm2"].fill_null(0).to_numpy() if not area_null.all() else empty,
    ).items()}
    seg_heat = empty
    if any(v.heating is not None for v in reg.versions):
        seg_heat = kernels.heated_days(seg_row, gsa["sfrom"][seg_gs], gsa["sto"][seg_gs], susp_off, susp_lo,
                                       susp_hi)
    part_in = [gsa[k] for k in ("cb", "ca", "days", "months", "mult", "div", "tcb", "tca", "sdays", "ycb")]
    if not part_in[0].size:
        part_in = [np.zeros(1, dtype=np.int64)] * len(part_in)

    with kernels.chunked():  # dynamic scheduling of the parallel kernels
        # -- rate: count lines per segment, then write them at their final places -----------------------
        order, bounds = _by_version(seg_version, len(reg.versions))
        rates = _tax_rates(reg)
        params = [_version_params(reg, v, fixed_lut.get(v, empty), rates) for v in range(len(reg.versions))]
        seg_counts = np.zeros(S if lines else 0, dtype=np.int64)  # the bills-only pass counts nothing
        # the counting pass gets empty outputs of the writing pass's types: one compiled kernel for both
        no_out = (empty, np.zeros(0, np.int32), np.zeros(0, np.int16), empty, empty, empty, np.zeros(0, np.int32),
                  np.zeros(0, np.int8))
        no_totals = (empty, empty, np.zeros((0, 0), dtype=np.int64))
        if not lines:  # bills only: one pass summing every line's amount and tax per segment
            totals = (np.zeros(S, dtype=np.int64), np.zeros(S, dtype=np.int64),
                      np.zeros((S if (g_taxbill != 0).any() else 0, len(rates)), dtype=np.int64))
        ids = []
        for v in range(len(reg.versions)):
            idx = order[bounds[v]:bounds[v + 1]] if order is not None else np.arange(S, dtype=np.int64)
            ids.append(idx)
            if len(idx):
                kernels.rate_segments(False, *params[v], idx, seg_row, seg_gs, *row_in.values(), seg_heat, *part_in,
                                      seg_counts, seg_counts, *(no_totals if lines else totals), *no_out)
        if not lines:
            if S == n and not bad.any() and not totals[2].size:
                bill_amount, bill_tax = totals[0], totals[1]  # a segment per row and tax per line: the bills' own
            else:
                row_seg = np.zeros(n + 1, dtype=np.int64)
                np.cumsum(np.bincount(seg_row, minlength=n), out=row_seg[1:])
                bill_amount = np.zeros(n, dtype=np.int64)
                bill_tax = np.zeros(n, dtype=np.int64)
                kernels.finish_totals(row_seg, *totals, rates, g_taxbill[gidx], g_rule[gidx], bill_amount, bill_tax)
            return _rated(pl.DataFrame(schema=LINE_SCHEMA), row_key, bad, volume, apportioned, bill_amount,
                          bill_tax, errors)
        seg_off = np.zeros(S + 1, dtype=np.int64)
        np.cumsum(seg_counts, out=seg_off[1:])
        L = int(seg_off[-1])
        out_seg = np.empty(L, dtype=np.int64)
        out_comp = np.empty(L, dtype=np.int32)
        out_tier = np.empty(L, dtype=np.int16)
        out_qty = np.empty(L, dtype=np.int64)
        out_price = np.empty(L, dtype=np.int64)
        out_amt = np.empty(L, dtype=np.int64)
        out_ppm = np.empty(L, dtype=np.int32)
        out_kind = np.empty(L, dtype=np.int8)
        for v, idx in enumerate(ids):
            if len(idx):
                kernels.rate_segments(True, *params[v], idx, seg_row, seg_gs, *row_in.values(), seg_heat, *part_in,
                                      seg_counts, seg_off, *no_totals, out_seg, out_comp, out_tier, out_qty, out_price, out_amt,
                                      out_ppm, out_kind)

        # -- bills: line numbers, tax, sums ---------------------------------------------------------
        row_lines = np.bincount(seg_row, weights=seg_counts, minlength=n).astype(np.int64)
        row_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(row_lines, out=row_off[1:])
        line_no = np.empty(L, dtype=np.int64)
        tax = np.empty(L, dtype=np.int64)
        bill_amount = np.zeros(n, dtype=np.int64)
        bill_tax = np.zeros(n, dtype=np.int64)
        kernels.finish_rows(row_off, g_taxbill[gidx], g_rule[gidx], out_amt, out_ppm, tax, line_no,
                            bill_amount, bill_tax)

    return _rated(_lines_frame(reg, gsa, row_key, seg_row, seg_gs, seg_heat, out_seg, out_comp, out_tier, out_qty,
                               out_price, out_amt, tax, out_kind, line_no),
                  row_key, bad, volume, apportioned, bill_amount, bill_tax, errors)


def _rated(lines: pl.DataFrame, row_key: np.ndarray, bad: np.ndarray, volume: np.ndarray, apportioned: np.ndarray,
           bill_amount: np.ndarray, bill_tax: np.ndarray, errors: list) -> Rated:
    good = ~bad
    bills = pl.DataFrame({
        "row": row_key[good],
        "consumption": volume[good] + apportioned[good],
        "amount": bill_amount[good],
        "tax": bill_tax[good],
    }, schema={k: BILL_SCHEMA[k] for k in ("row", "consumption", "amount", "tax")}).with_columns(
        total=pl.col("amount") + pl.col("tax"))
    err_rows = [row_key[rows] for rows, _, _ in errors]
    err_frame = pl.DataFrame({
        "row": np.concatenate(err_rows) if err_rows else np.zeros(0, dtype=np.int64),
        "reason": [reason for rows, reason, _ in errors for _ in range(len(rows))],
    }, schema=ERROR_SCHEMA)
    return Rated(lines=lines, bills=bills, errors=err_frame)


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable else a.copy()


def _meter_sizes(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list]:
    """Every row's meter sizes as offsets into one array of size codes, and the distinct sizes.

    ``meter_sizes`` (a list: one fixed charge per meter; empty: no meter) where it is not null,
    else the one ``meter_size`` (None: the tariff's default)."""
    n = df.height
    given = df["meter_sizes"]
    if given.null_count() == n:
        codes, sizes = _codes(df["meter_size"])
        return np.arange(n + 1, dtype=np.int64), codes, sizes
    lists = df.select(pl.when(pl.col("meter_sizes").is_null()).then(pl.concat_list(pl.col("meter_size")))
                      .otherwise(pl.col("meter_sizes")).alias("s"))["s"]
    lengths = lists.list.len().to_numpy().astype(np.int64)
    flat = lists.explode()
    if len(flat) != lengths.sum():  # polars before 2 exploded an empty list to one null
        flat = flat.filter(pl.Series(np.repeat(lengths > 0, np.maximum(lengths, 1))))
    codes, sizes = _codes(flat)
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return off, codes, sizes


def _group_index(keys: pl.DataFrame) -> tuple[np.ndarray, list[tuple]]:
    uniq = keys.unique(maintain_order=True)
    table = uniq.with_columns(pl.Series("_g", np.arange(uniq.height, dtype=np.int64)))
    cols = list(keys.columns)
    gidx = keys.join(table, on=cols, how="left", nulls_equal=True, maintain_order="left")["_g"].to_numpy()
    return gidx, list(uniq.iter_rows())


def _segments(gidx: np.ndarray, g_nseg: np.ndarray, g_gsoff: np.ndarray, bad: np.ndarray):
    nseg = np.where(bad, 0, g_nseg[gidx])
    n = len(gidx)
    if n and not bad.any() and (g_nseg == 1).all():
        return np.arange(n, dtype=np.int64), g_gsoff[gidx]
    seg_row = np.repeat(np.arange(n, dtype=np.int64), nseg)
    first = np.zeros(n, dtype=np.int64)
    if n:
        first[1:] = np.cumsum(nseg)[:-1]
    k = np.arange(len(seg_row), dtype=np.int64) - first[seg_row]
    return seg_row, g_gsoff[gidx[seg_row]] + k


def _by_version(seg_version: np.ndarray, nv: int):
    if nv <= 1:
        return None, np.array([0, len(seg_version)], dtype=np.int64)
    order = np.argsort(seg_version.astype(np.int16 if nv < 32000 else np.int64), kind="stable").astype(np.int64)
    bounds = np.zeros(nv + 1, dtype=np.int64)
    np.cumsum(np.bincount(seg_version, minlength=nv), out=bounds[1:])
    return order, bounds


def _version_params(reg: _Versions, v: int, fixed_lut: np.ndarray, rates: np.ndarray) -> tuple:
    version = reg.versions[v]
    tariff = reg.tariffs[v]
    comps = version.components
    code = np.array([reg.codes[c.code] for c in comps], dtype=np.int64)
    nthr = np.array([len(c.thresholds) for c in comps], dtype=np.int64)
    toff = np.zeros(len(comps), dtype=np.int64)
    toff[1:] = np.cumsum(nthr)[:-1]
    npr = np.array([len(c.prices) for c in comps], dtype=np.int64)
    poff = np.zeros(len(comps), dtype=np.int64)
    poff[1:] = np.cumsum(npr)[:-1]
    thr = np.array([t for c in comps for t in c.thresholds] or [0], dtype=np.int64)
    pp = np.array([t for c in comps for t in c.per_person] or [0], dtype=np.int64)
    rz = np.array([t for c in comps for t in c.raise_] or [0], dtype=np.int64)
    prices = np.array([p for c in comps for p in c.prices], dtype=np.int64)
    app = np.array([c.apportioned_price for c in comps], dtype=np.int64)
    ppm = np.array([c.tax_ppm for c in comps], dtype=np.int64)
    cmin = np.array([1 if c.minimum else 0 for c in comps], dtype=np.int64)
    heat = version.heating
    heat_ppm = 0 if heat is None else heat.tax_ppm
    slot = {int(r): k for k, r in enumerate(rates.tolist())}
    comp_slot = np.array([slot.get(int(x), 0) for x in ppm], dtype=np.int64)
    return (1 if version.basis == "annual" else 0, RULE_CODES[tariff.rounding], version.household_base,
            version.household_min, code, nthr, toff, poff, app, ppm, cmin, thr, pp, rz, prices,
            fixed_lut, version.fixed_tax_ppm, -1 if version.minimum is None else version.minimum, version.minimum_tax_ppm,
            -1 if heat is None else heat.price, heat_ppm,
            1 if tariff.tax_rounding == "bill" else 0, comp_slot, slot.get(version.fixed_tax_ppm, 0),
            slot.get(version.minimum_tax_ppm, 0), slot.get(heat_ppm, 0))


def _tax_rates(reg: _Versions) -> np.ndarray:
    """The distinct tax rates (ppm) of the versions' lines: the slots of per-bill tax totals."""
    rates = {0}
    for version in reg.versions:
        rates.update(c.tax_ppm for c in version.components)
        rates.update((version.fixed_tax_ppm, version.minimum_tax_ppm))
        if version.heating is not None:
            rates.add(version.heating.tax_ppm)
    return np.array(sorted(rates), dtype=np.int64)


_FAR = 1 << 40  # a suspension without a stop (resume) date runs from (to) far outside any season


def _suspensions(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Every row's heating suspensions as inclusive day ranges ``[lo, hi]`` (days since the epoch),
    sorted by row then ``lo``, with row offsets; and the rows refused, with the reason.

    The single pair ``heating_stop`` / ``heating_resume`` is one suspension where either is set
    (none when it resumes on or before its stop, as before the lists); the lists add theirs."""
    n = df.height
    errors: list[tuple[int, str]] = []
    stop_null = df["heating_stop"].is_null().to_numpy()
    resume_null = df["heating_resume"].is_null().to_numpy()
    rows = [np.zeros(0, dtype=np.int64)]
    los = [np.zeros(0, dtype=np.int64)]
    his = [np.zeros(0, dtype=np.int64)]
    if not (stop_null & resume_null).all():
        lo = np.where(stop_null, -_FAR, df["heating_stop"].cast(pl.Int64).fill_null(0).to_numpy())
        hi = np.where(resume_null, _FAR, df["heating_resume"].cast(pl.Int64).fill_null(0).to_numpy() - 1)
        keep = ~(stop_null & resume_null) & (hi >= lo)
        rows.append(np.flatnonzero(keep).astype(np.int64))
        los.append(lo[keep].astype(np.int64))
        his.append(hi[keep].astype(np.int64))
    if df["heating_stops"].null_count() < n or df["heating_resumes"].null_count() < n:
        lists = (df.select(pl.int_range(0, n, dtype=pl.Int64).alias("_r"), pl.col("heating_stops").alias("s"),
                           pl.col("heating_resumes").alias("e"))
                 .filter(pl.col("s").is_not_null() | pl.col("e").is_not_null())  # the few rows that have them
                 .with_columns(pl.col("s", "e").fill_null([])))
        uneven = lists.filter(pl.col("s").list.len() != pl.col("e").list.len())
        for r, s_, e_ in uneven.iter_rows():
            errors.append((r, f"heating_stops ({len(s_)}) and heating_resumes ({len(e_)}) differ in length"))
        pairs = (lists.filter((pl.col("s").list.len() == pl.col("e").list.len()) & (pl.col("s").list.len() > 0))
                 .explode("s", "e"))
        neither = pairs.filter(pl.col("s").is_null() & pl.col("e").is_null())
        for r in neither["_r"].unique(maintain_order=True).to_list():
            errors.append((r, "a heating suspension needs a stop or a resume date"))
        backwards = pairs.filter(pl.col("e") <= pl.col("s"))
        for r, s_, e_ in backwards.unique("_r", keep="first", maintain_order=True).iter_rows():
            errors.append((r, f"heating resumes on {e_} but stopped on {s_}: the resume date must be after the stop"))
        pairs = pairs.filter(~(pl.col("s").is_null() & pl.col("e").is_null())
                             & ~(pl.col("e") <= pl.col("s")).fill_null(False))
        rows.append(pairs["_r"].to_numpy().astype(np.int64))
        los.append(pairs["s"].cast(pl.Int64).fill_null(-_FAR).to_numpy().astype(np.int64))
        his.append((pairs["e"].cast(pl.Int64) - 1).fill_null(_FAR).to_numpy().astype(np.int64))
    row = np.concatenate(rows)
    lo = np.concatenate(los)
    hi = np.concatenate(his)
    order = np.lexsort((lo, row))
    row, lo, hi = row[order], lo[order], hi[order]
    # suspensions of one row never overlap (the database refuses it): a row that has them is refused
    over = np.flatnonzero((row[1:] == row[:-1]) & (lo[1:] <= hi[:-1])) + 1
    for k in over.tolist():
        if not any(r == row[k] for r, _ in errors):
            errors.append((int(row[k]), f"heating suspensions overlap: {_span(lo[k - 1], hi[k - 1])} and "
                                        f"{_span(lo[k], hi[k])}"))
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n), out=off[1:])
    return off, lo, hi, errors


def _span(lo: int, hi: int) -> str:
    first = "the season's start" if lo <= -_FAR else _from_day(lo).isoformat()
    last = "the season's end" if hi >= _FAR else _from_day(hi).isoformat()
    return f"{first}..{last}"


def _lines_frame(reg, gsa, row_key, seg_row, seg_gs, seg_heat, out_seg, out_comp, out_tier, out_qty, out_price,
                 out_amt, tax, out_kind, line_no) -> pl.DataFrame:
    names = list(reg.codes) + list(_SPECIAL_NAMES)
    ncodes = len(reg.codes)
    comp_idx = np.where(out_comp >= 0, out_comp, ncodes - out_comp - 2)
    line_gs = seg_gs[out_seg]
    ngs = len(gsa["version"])
    labels = [reg.versions[v].label for v in gsa["version"]]
    nk = len(kernels.KINDS)
    sources = []
    for g in range(ngs):
        base = {"version": labels[g], "from": _from_day(gsa["from"][g]).isoformat(),
                "to": _from_day(gsa["to"][g]).isoformat(), "days": int(gsa["ca"][g] - gsa["cb"][g]),
                "period_days": int(gsa["days"][g]), "months": int(gsa["months"][g])}
        if gsa["year"][g] >= 0:  # annual tiers: the tariff year the part's volume counts in
            base["tier_year_from"] = _from_day(gsa["year"][g]).isoformat()
        for kind in kernels.KINDS:
            sources.append(json.dumps({"kind": kind, **base}, separators=(",", ":")))
    key = line_gs * nk + out_kind
    source = pl.Series("source", sources or [""], dtype=pl.Utf8).gather(key)
    heat_mask = out_kind == kernels.K_HEATING
    if heat_mask.any():
        # heating lines name the season and the heated days of their account
        hl = np.flatnonzero(heat_mask)
        g = line_gs[hl]
        extra = []
        for gg, hd in zip(g.tolist(), seg_heat[out_seg[hl]].tolist()):
            version = reg.versions[gsa["version"][gg]]
            p_from = _from_day(gsa["from"][gg])
            season = version.heating.seasons_overlapping(p_from, _from_day(gsa["to"][gg]))
            s_first, s_last = season[0] if season else (None, None)
            d = json.loads(sources[gg * nk + kernels.K_HEATING])
            d.update({"season_from": s_first.isoformat() if s_first else None,
                      "season_to": s_last.isoformat() if s_last else None,
                      "season_days": int(gsa["sdays"][gg]), "heated_days": int(hd)})
            extra.append(json.dumps(d, separators=(",", ":")))
        source = source.scatter(hl, pl.Series(extra, dtype=pl.Utf8))
    tier = pl.Series("tier", out_tier, dtype=pl.Int16)
    return pl.DataFrame({
        "row": row_key[seg_row[out_seg]],
        "line_no": line_no.astype(np.int16),
        "component": pl.Series(names, dtype=pl.Utf8).gather(comp_idx),
        "tier": tier,
        "quantity": out_qty,
        "unit_price": out_price,
        "price_scale": np.full(len(out_qty), PRICE_SCALE, dtype=np.int16),
        "amount": out_amt,
        "tax": tax,
        "tariff_version": pl.Series(labels or [""], dtype=pl.Utf8).gather(line_gs),
        "source": source,
    }, schema=LINE_SCHEMA).with_columns(pl.when(pl.col("tier") > 0).then(pl.col("tier")).alias("tier"))
