"""Benchmark: the rating kernel alone, rate() end to end, and a pure-polars baseline.

    python benchmarks/bench_rating_kernel.py [--meters 1000000 10000000] [--repeat 3] [--threads N]

Data: ``--meters`` bills on the shipped ``water-residential`` tariff (water in three monthly
tiers, water-resource fee and sewage flat), households of 1–7 persons (thresholds +5 m³ per
person above 4), 1 % shared meters (thresholds × dwellings), volumes 0–60 m³, and half of the
bills prorated (a part of the period: volume and thresholds × days of the part / days).

Figures, each the median of ``--repeat`` runs, in meters (bills) per second:

* **kernel**: :func:`meterline.rating.kernels.rate_segments`, both passes (count the lines of
  every bill, then write them: component, tier, quantity, unit price, amount, tax rate);
* **kernel (bill amounts and tax)**: the same kernel's bills-only pass (every line's amount and
  tax computed and rounded as when written, summed per bill; no line table), as
  ``rate(lines=False)`` runs it (here a segment per bill and tax per line, so
  :func:`meterline.rating.kernels.finish_totals` has nothing to add) — what the issue's kernel
  target (all components, household adjustment, proration; ≥ 30 M meters/s) measures;
* **rate()**: :func:`meterline.rating.engine.rate` from a polars frame to the lines and bills
  frames (grouping, version split, tax, line numbers, the ``source`` JSON column), and
  ``rate(lines=False)`` to the bills frame (the billing run's dry run);
* **polars (line table)**: the same tiers, household raise, dwellings and proration as polars
  expressions, producing the same line table (bill, component, tier, quantity, unit price,
  amount; non-empty lines, grouped by bill) — the way one would write it without numba;
* **polars (bill amounts only)**: the same arithmetic down to one amount per bill, no lines (a
  lower bound for any polars version; the kernel does more: it writes every line).

The kernel, its bills-only pass and both baselines are checked to agree (line count; every
bill's amount) before timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

import numpy as np
import polars as pl

from meterline.rating import engine, kernels
from meterline.rating.tariff import TariffBook

TARIFF = "water-residential"
PERIOD = (dt.date(2026, 10, 1), dt.date(2026, 10, 31))


def median_seconds(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_data(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "volume": rng.integers(0, 60_000, n, dtype=np.int64),
        "hh": rng.integers(1, 8, n, dtype=np.int64),
        "dw": np.where(rng.random(n) < 0.01, rng.integers(2, 5, n), 1).astype(np.int64),
        "partial": rng.random(n) < 0.5,
        "part": rng.integers(0, 1 << 30, n, dtype=np.int64),
        "days": np.full(n, 31, dtype=np.int64),
    }


def kernel_inputs(book: TariffBook, d: dict[str, np.ndarray]) -> tuple[tuple, tuple]:
    """The kernel's arguments for one version: bills are rows; part k of the small part table
    covers days (cb, ca] of 31 (each bill picks one: half of them a whole month, half a part)."""
    tariff = book.get(TARIFF)
    reg = engine._Versions()  # the engine's numbering of versions and components
    version = tariff.version_at(PERIOD[0])
    reg.index(tariff, version)
    params = engine._version_params(reg, 0, np.zeros(0, dtype=np.int64), engine._tax_rates(reg))
    n = len(d["volume"])
    empty = np.zeros(0, dtype=np.int64)
    parts = [(0, 31)] + [(cb, ca) for cb in range(0, 31) for ca in range(cb + 1, 32) if (cb, ca) != (0, 31)]
    p_cb = np.array([p[0] for p in parts], dtype=np.int64)
    p_ca = np.array([p[1] for p in parts], dtype=np.int64)
    k = len(parts)
    ones = np.ones(k, dtype=np.int64)
    part = np.where(d["partial"], d["part"] % (k - 1) + 1, 0).astype(np.int64)
    segs = (np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), part,
            d["volume"], empty, empty, d["hh"].astype(np.int16), d["dw"].astype(np.int16), empty, empty, empty,
            empty,
            p_cb, p_ca, np.full(k, 31, dtype=np.int64), ones, ones, ones, p_cb, p_ca, ones, np.zeros(k, dtype=np.int64))
    d["cb"], d["ca"] = p_cb[part], p_ca[part]
    return params, segs


def run_kernel(params: tuple, segs: tuple) -> list[np.ndarray]:
    with kernels.chunked():  # as rate() runs it: dynamic scheduling
        return _run_kernel(params, segs)


def _run_kernel(params: tuple, segs: tuple) -> list[np.ndarray]:
    n = len(segs[0])
    counts = np.empty(n, dtype=np.int64)
    kernels.rate_segments(False, *params, *segs, counts, counts, *NO_TOTALS, *(np.zeros(0, t) for t in KINDS))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    outs = [np.empty(total, dtype=t) for t in KINDS]
    kernels.rate_segments(True, *params, *segs, counts, offsets, *NO_TOTALS, *outs)
    return outs  # seg, component, tier, quantity, unit price, amount, tax rate, kind


def run_totals(params: tuple, segs: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The bills-only pass as rate(lines=False) runs it: every line's amount and tax computed and
    summed per bill, no line table, no line counts (a segment per bill and tax per line: the
    segments' sums are the bills')."""
    n = len(segs[0])
    with kernels.chunked():
        totals = (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.zeros((0, 0), dtype=np.int64))
        kernels.rate_segments(False, *params, *segs, NO_COUNTS, NO_COUNTS, *totals, *(np.zeros(0, t) for t in KINDS))
    return totals[0], totals[1]


KINDS = (np.int64, np.int32, np.int16, np.int64, np.int64, np.int64, np.int32, np.int8)
NO_COUNTS = np.zeros(0, dtype=np.int64)
NO_TOTALS = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.int64))


T1, T2 = 22_000, 30_000
P1, P2, P3, RES, SEW = 1_750_000, 3_130_000, 4_130_000, 400_000, 1_300_000
DEN = 10_000_000


def _amount(q: pl.Expr, price: int) -> pl.Expr:
    return (q * price + DEN // 2) // DEN


def _tiers(frame: pl.DataFrame) -> pl.LazyFrame:
    """Per bill: prorated volume and thresholds (household raise, dwellings), tier quantities."""
    def thr(t: int) -> pl.Expr:
        raised = (pl.lit(t) + (pl.col("hh") - 4).clip(lower_bound=0) * 5_000) * pl.col("dw")
        return raised * pl.col("ca") // pl.col("days") - raised * pl.col("cb") // pl.col("days")

    vol = pl.col("volume")
    v = pl.col("v")
    return frame.lazy().with_columns(
        a=thr(T1), b=thr(T2), v=vol * pl.col("ca") // pl.col("days") - vol * pl.col("cb") // pl.col("days"),
    ).with_columns(
        q1=pl.min_horizontal(v, pl.col("a")),
        q2=(pl.min_horizontal(v, pl.col("b")) - pl.col("a")).clip(lower_bound=0),
        q3=(v - pl.col("b")).clip(lower_bound=0),
    )


def polars_baseline(frame: pl.DataFrame) -> pl.DataFrame:
    """Per-bill amounts of the same tariff with polars expressions (half-up, once per line)."""
    return _tiers(frame).select(
        amount=_amount(pl.col("q1"), P1) + _amount(pl.col("q2"), P2) + _amount(pl.col("q3"), P3)
        + _amount(pl.col("v"), RES) + _amount(pl.col("v"), SEW)
    ).collect()


def polars_lines(frame: pl.DataFrame) -> pl.DataFrame:
    """The same bills as a line table (the kernel's output): one row per non-empty line, by bill."""
    wide = _tiers(frame.with_row_index("bill")).collect()
    parts = []
    for comp, tier, q, price in (("water", 1, "q1", P1), ("water", 2, "q2", P2), ("water", 3, "q3", P3),
                                 ("resource_fee", None, "v", RES), ("sewage", None, "v", SEW)):
        parts.append(wide.lazy().select(
            bill=pl.col("bill"), component=pl.lit(comp), tier=pl.lit(tier, dtype=pl.Int16),
            quantity=pl.col(q), unit_price=pl.lit(price, dtype=pl.Int64), amount=_amount(pl.col(q), price),
        ).filter(pl.col("quantity") > 0))
    return pl.concat(parts).sort("bill", maintain_order=True).collect()


def rate_frame(d: dict[str, np.ndarray]) -> pl.DataFrame:
    n = len(d["volume"])
    return pl.DataFrame({
        "row": np.arange(n, dtype=np.int64), "tariff_id": pl.Series([TARIFF]).gather(np.zeros(n, dtype=np.int64)),
        "period_start": pl.Series([PERIOD[0]]).gather(np.zeros(n, dtype=np.int64)),
        "period_end": pl.Series([PERIOD[1]]).gather(np.zeros(n, dtype=np.int64)),
        "volume": d["volume"], "household_size": d["hh"].astype(np.int16), "dwellings": d["dw"].astype(np.int16),
    })


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--meters", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="numba threads (default: all cores)")
    p.add_argument("--rate-max", type=int, default=2_000_000,
                   help="time rate() end to end up to this many meters (its line frames take ~100 B a line)")
    args = p.parse_args()
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
    book = TariffBook.load()
    small = make_data(1000)
    run_kernel(*kernel_inputs(book, small))           # compile (or load the cache) before timing
    run_totals(*kernel_inputs(book, small))
    engine.rate(book, rate_frame(small))
    engine.rate(book, rate_frame(small), lines=False)
    import numba

    print(f"numba threads: {numba.get_num_threads()}; median of {args.repeat} runs")
    for n in args.meters:
        d = make_data(n)
        params, segs = kernel_inputs(book, d)
        outs = run_kernel(params, segs)
        n_lines = len(outs[0])
        frame = pl.DataFrame({k: d[k] for k in ("volume", "hh", "dw", "cb", "ca", "days")})
        # the kernel and the polars baseline agree on every bill's amount (prorated rows included)
        per_bill = np.bincount(outs[0], weights=outs[5], minlength=n).astype(np.int64)
        if not np.array_equal(per_bill, polars_baseline(frame)["amount"].to_numpy()):
            raise SystemExit("the kernel and the polars baseline disagree")
        if not np.array_equal(per_bill, run_totals(params, segs)[0]):
            raise SystemExit("the bills-only kernel pass and the line table disagree")
        del outs, per_bill
        if polars_lines(frame).height != n_lines:
            raise SystemExit("the kernel and the polars line table disagree")
        t_kernel = median_seconds(lambda: run_kernel(params, segs), args.repeat)
        t_totals = median_seconds(lambda: run_totals(params, segs), args.repeat)
        t_lines = median_seconds(lambda: polars_lines(frame), args.repeat)
        t_polars = median_seconds(lambda: polars_baseline(frame), args.repeat)
        print(f"{n:>11,} meters  kernel (line table)  {n / t_kernel / 1e6:7.1f} M meters/s "
              f"({n_lines:,} lines, {t_kernel:.3f} s)")
        print(f"{'':>11}         kernel (bill amounts and tax, no line table) {n / t_totals / 1e6:7.1f} M meters/s "
              f"({t_totals:.3f} s)   target 30 M/s: {n / t_totals / 30e6:4.2f}x")
        print(f"{'':>11}         polars (line table)  {n / t_lines / 1e6:7.1f} M meters/s ({t_lines:.3f} s)   "
              f"kernel / polars {t_lines / t_kernel:5.1f}x")
        print(f"{'':>11}         polars (bill amounts only, no lines) {n / t_polars / 1e6:7.1f} M meters/s "
              f"({t_polars:.3f} s)   kernel (bill amounts) / polars {t_polars / t_totals:5.1f}x")
        if n <= args.rate_max:
            f = rate_frame(d)
            t_rate = median_seconds(lambda: engine.rate(book, f), args.repeat)
            print(f"{'':>11}         rate() {n / t_rate / 1e6:8.1f} M meters/s ({t_rate:.3f} s, frame in, "
                  f"lines and bills frames out; whole periods)")
            t_bills = median_seconds(lambda: engine.rate(book, f, lines=False), args.repeat)
            print(f"{'':>11}         rate(lines=False) {n / t_bills / 1e6:5.1f} M meters/s ({t_bills:.3f} s, "
                  f"bills frame out: the dry run's)")
        del d, segs, frame


if __name__ == "__main__":
    main()
