"""The billing run: a cycle's period reads → consumption → apportionment → tariffs → bills → ledger.

``bill_run(conn, company_id, cycle, period)`` bills every active account of the meter books of
``cycle`` (``meter_book.cycle``) for ``period`` (``YYYY-MM``, the period's last month; a cycle
spans ``billing.cycle_months[cycle]`` months, default 1), in one transaction:

1. **Reads.** For every meter of the accounts, the *closing read* is the effective read
   (``reading_effective``: validated, corrected or estimated) nearest the period boundary — the
   company-local midnight after the period's last day — within ``billing.closing_before_days``
   before it or ``closing_after_days`` after it; on a tie the real read wins over an estimate
   (VEE's estimates stand exactly at the boundary). The *opening read* is the closing read of
   the meter's latest earlier billed period (``meter_period_read``; of that period's latest
   revision: a re-bill's, not the reversed bill's), so nothing is billed twice or skipped; for a
   meter never billed: the effective read nearest the period start (same
   window), else the initial register of a device installed in the period, else the first read
   inside the period.
2. **Consumption** between the two reads with :mod:`meterline.store.consumption` (multiplier,
   rollover, device replacement from ``meter_installation``). An account's volume is the sum
   over its meters that are not master meters.
3. **Apportionment** of every master–sub tree with an account in the run
   (:mod:`meterline.rating.apportion`); a negative residual raises VEE's ``subs_exceed_master``
   alert (the master–sub imbalance alert for sub-meters above their master) and is not billed.
4. **Rating** with :func:`meterline.rating.engine.rate`. For annual tiers, ``ytd`` is the volume
   the tiers priced on the earlier bills of the tariff year that still stand (status
   ``issued``: a bill reversed, 红冲, counts no longer): each bill's ``consumption`` less its
   ``apportioned`` litres (0640), i.e. the account's meters that are not master meters. The
   apportioned residual is priced on its own lines and takes no tier volume, then or later; a
   master meter the account holds is never part of its volume. Of a bill that crossed the year
   start only the part after it counts, ``vol - floor(vol * days_before_year_start / days)``,
   the split the rating made (``p_ycb`` in :mod:`meterline.rating.kernels`). Area-based
   heating gets every ``heating_suspension`` of the account overlapping the period
   (``heating_stops`` / ``heating_resumes``), however many.
5. **Writing**: bills, bill lines (every line's source — ``bill_line_sourced.source`` — is the
   rating's source plus ``reads`` — ``[meter id, opening read ts, closing read ts, closing
   estimated]`` per meter, the reading keys — and, on apportioned lines, ``shares`` —
   ``[master meter id, via meter id, litres]``), ``meter_period_read``, ``apportionment`` (+
   shares) and skipped accounts with reasons; bulk-copied into temporary tables and inserted
   from there (row-level security refuses COPY into the business tables); then
   :func:`meterline.ledger.bills.post_bills`. A source is stored where it is common (0660): the
   few distinct rating documents of a shard once each in ``bill_line_source`` (a line names its
   own by ``source_id``), the reads and shares once per bill (``bill.reads``, ``bill.shares``);
   the lines go over in binary COPY, PostgreSQL parses JSON once per bill and per distinct
   document, and a line is ~90 bytes instead of ~400. The trees' meters, few and scattered
   over the company's ids, have their reads probed per meter by key (:func:`meter_reads`).

**Idempotent** by (company, cycle, period): the run is one ``billing_run`` row; accounts that
already have a bill in it that stands (status ``issued``) are not billed again, so re-running
changes nothing (an account skipped before is billed when its reads have arrived). No run bills
an account whose bill of the period stands in another run (``billed_in_other_run``), and the
database holds one standing bill per account and period (0650).

**Billing again after a reversal (补开 after 红冲).** An account whose bill of the period was
reversed (``ledger.bills.reverse_bill``) and that has no standing bill of it is billed again
only when asked, ``rebill=True`` (``meterline bill run --rebill``): a plain re-run skips it
(``reversed``), so a bill reversed for good (billed in error, the customer had moved out) is
never re-issued by a re-run done for other accounts. The re-bill belongs to the run of the
account's cycle for the period (usually the run of the reversed bill), reads the reads as they
are now (a corrected or supervisor-entered read, VEE's review), is rated like any bill and
posted; ``bill.replaces`` names the reversed bill, which stays with its lines and its period
reads, so the ledger shows the bill, its reversal and the new bill. Its period reads are the
next ``revision`` of the meter's period; the next period opens from them. Two guards keep
"nothing billed twice or skipped" per meter: a meter whose period read stands (another
account's bill, a master meter) is not billed again (``meter_billed``); and when a later
period's standing bill opened from another read than the one this period now closes at (the
closing read was corrected after the next period was billed), the account waits
(``billed_later``) until that bill is reversed too and the periods are billed again in order. A
bill reversed for something other than its reads (tariff, household size) is billed again while
the next period's bill stands: that bill opened where it closes. A reversed bill not billed again
still ends its period for the next one (its closing read opens the next period), and its litres
are billed by its re-bill. The apportionment of a master–sub tree stored for the period is kept:
a re-bill gets the share stored (correcting a tree's reads does not re-apportion it).

``dry_run=True`` computes everything, writes nothing and reports the difference against what
is billed (a re-bill: a new bill, compared with the reversed bill it replaces). Accounts are processed in
shards of whole meter books (``billing.shard_accounts``) so memory stays bounded.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import psycopg

from meterline.config.settings import BillingSettings
from meterline.errors import MeterlineError
from meterline.ingest.vee.alerts import raise_alerts
from meterline.ingest.vee.engine import AlertEvent
from meterline.ledger.bills import post_bills
from meterline.rating import apportion as ap
from meterline.rating import heating
from meterline.rating.engine import rate
from meterline.rating.errors import RatingError
from meterline.rating.frames import copy_in, query_frame
from meterline.rating.tariff import TariffBook
from meterline.store.consumption import Kind, consumption, replacement_terms

if TYPE_CHECKING:
    from meterline.store.db import Database

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
#: the VEE rule raised for a negative residual (sub-meters together above their master)
IMBALANCE_RULE = "subs_exceed_master"
OPENING_BASES = ("previous", "read", "installation", "last_read", "first_read")
SKIP_REASONS = {
    "no_meter": "the account has no active meter",
    "no_closing_read": "no effective read near the end of the period",
    "no_opening_read": "no opening read (no earlier bill, no read near the period start)",
    "register_reset": "a register went back without a recorded replacement",
    "negative_consumption": "consumption in the period is negative (reverse flow)",
    "installation_history": "the meter's installation history has a removed device without a final register",
    "billed_in_other_run": "already billed for this period by another run",
    "reversed": "the account's bill of this period was reversed (红冲): bill it again with rebill (--rebill)",
    "meter_billed": "a meter of the account is billed for this period on a bill that stands",
    "billed_later": "a later bill that stands opened from another read than this period's closing read: "
                    "reverse it too and bill again in period order",
    "tariff": "the tariff cannot rate this account",
}

Progress = Callable[[str, int, int], None]


class BillingError(MeterlineError):
    """A billing run cannot start (bad period, unknown books, ...)."""


@dataclass(frozen=True, slots=True)
class Skip:
    account_id: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class BillChange:
    """Dry run: an account whose bill would differ from the one billed (or would be new)."""

    account_id: int
    bill_id: int | None          # None: not billed yet
    consumption_billed: int | None
    consumption_now: int
    total_billed: int | None
    total_now: int
    replaces: int | None = None  # a re-bill: the reversed bill it bills again (billed figures are that bill's)


@dataclass
class BillRunResult:
    """What a billing run did (or, dry, would do)."""

    run_id: int | None
    company_id: int
    cycle: str
    period: str
    period_start: dt.date
    period_end: dt.date
    due_date: dt.date
    dry_run: bool
    accounts: int = 0                 # accounts of the cycle looked at (not billed before)
    already_billed: int = 0           # accounts of the cycle with a bill in this run before it started
    bills: int = 0                    # bills written (dry run: that would be written)
    rebilled: int = 0                 # of them, bills that bill a reversed bill again (rebill=True)
    consumption: int = 0              # litres billed
    amount: int = 0                   # minor units before tax
    tax: int = 0
    total: int = 0
    estimated: int = 0                # bills whose closing read is estimated
    posted: int = 0                   # ledger entries posted
    skips: list[Skip] = field(default_factory=list)
    trees: dict[str, int] = field(default_factory=dict)   # master meters by apportionment status
    apportioned: int = 0              # litres apportioned to accounts billed
    alerts_opened: int = 0
    alerts_updated: int = 0
    changes: list[BillChange] = field(default_factory=list)   # dry run: new or different bills
    unchanged: int = 0                # dry run: bills that would come out the same
    shards: int = 0                   # shards of whole meter books the accounts were billed in
    workers: int = 1                  # shards billed at once (1: the whole run in one transaction)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.skips:
            out[s.reason] = out.get(s.reason, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    @property
    def estimated_share(self) -> float:
        return self.estimated / self.bills if self.bills else 0.0

    def lap(self, name: str, since: float) -> float:
        """Add the time since ``since`` to stage ``name``; return now (the next stage's start)."""
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - since
        return now

    def merge(self, shard: "BillRunResult") -> None:
        """Add what one shard of the run did (parallel runs)."""
        for name in ("bills", "rebilled", "consumption", "amount", "tax", "total", "estimated", "posted", "apportioned"):
            setattr(self, name, getattr(self, name) + getattr(shard, name))
        self.skips.extend(shard.skips)
        for name, seconds in shard.timings.items():
            self.timings[name] = self.timings.get(name, 0.0) + seconds


# -- periods ---------------------------------------------------------------------------------

def period_dates(period: str, months: int = 1) -> tuple[dt.date, dt.date]:
    """First and last day of a billing period named by its last month ``YYYY-MM``."""
    try:
        year, month = (int(x) for x in period.split("-"))
        if len(period) != 7 or not 1 <= month <= 12:
            raise ValueError
    except ValueError as exc:
        raise BillingError(f"period {period!r}: expected YYYY-MM") from exc
    k = year * 12 + month - 1 - (months - 1)
    start = dt.date(k // 12, k % 12 + 1, 1)
    end = dt.date(year, month, calendar.monthrange(year, month)[1])
    return start, end


def local_midnight(day: dt.date, tz: str) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def _us(ts: dt.datetime) -> int:
    return int((ts - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))


_US = "(extract(epoch FROM {c}) * 1000000)::bigint"


# -- reads and consumption -------------------------------------------------------------------

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS ml_bill_meter (id bigint PRIMARY KEY, quantity smallint) ON COMMIT DROP;
TRUNCATE ml_bill_meter
"""

_NEAREST = f"""
SELECT DISTINCT ON (r.meter_id) r.meter_id, {_US.format(c="r.ts")} AS ts, r.value, r.estimated
  FROM reading_effective r JOIN ml_bill_meter s ON s.id = r.meter_id AND s.quantity = r.quantity
 WHERE r.ts >= %(b)s::timestamptz - %(wb)s AND r.ts <= %(b)s::timestamptz + %(wa)s
   AND r.meter_id BETWEEN %(lo)s AND %(hi)s {{extra}}
 ORDER BY r.meter_id, abs(extract(epoch FROM r.ts - %(b)s::timestamptz)), r.estimated, r.ts"""

# the same for a few meters scattered over a wide id range (the master–sub trees): one index probe
# per meter instead of reading every meter's readings in the range
_NEAREST_EACH = f"""
SELECT s.id AS meter_id, n.ts, n.value, n.estimated
  FROM ml_bill_meter s CROSS JOIN LATERAL (
       SELECT {_US.format(c="r.ts")} AS ts, r.value, r.estimated FROM reading_effective r
        WHERE r.meter_id = s.id AND r.quantity = s.quantity
          AND r.ts >= %(b)s::timestamptz - %(wb)s AND r.ts <= %(b)s::timestamptz + %(wa)s
        ORDER BY abs(extract(epoch FROM r.ts - %(b)s::timestamptz)), r.estimated, r.ts LIMIT 1) n
 WHERE true {{extra}}"""

_PREVIOUS_EACH = f"""
SELECT s.id AS meter_id, p.ts, p.value, p.estimated
  FROM ml_bill_meter s CROSS JOIN LATERAL (
       SELECT {_US.format(c="p.closing_ts")} AS ts, p.closing_value AS value, p.closing_estimated AS estimated
         FROM meter_period_read p WHERE p.meter_id = s.id AND p.period < %(period)s
        ORDER BY p.period DESC, p.revision DESC LIMIT 1) p"""

_INSTALLS_EACH = f"""
SELECT s.id AS meter_id, i.installed, i.initial, i.removed, i.final
  FROM ml_bill_meter s CROSS JOIN LATERAL (
       SELECT {_US.format(c="i.installed_at")} AS installed, i.initial_register AS initial,
              coalesce({_US.format(c="i.removed_at")}, -1) AS removed, coalesce(i.final_register, -1) AS final
         FROM meter_installation i WHERE i.meter_id = s.id) i"""

_PREVIOUS = f"""
SELECT DISTINCT ON (p.meter_id) p.meter_id, {_US.format(c="p.closing_ts")} AS ts, p.closing_value AS value,
       p.closing_estimated AS estimated
  FROM meter_period_read p JOIN ml_bill_meter s ON s.id = p.meter_id
 WHERE p.period < %(period)s AND p.meter_id BETWEEN %(lo)s AND %(hi)s
 ORDER BY p.meter_id, p.period DESC, p.revision DESC"""

# the meters' period reads of this period and later ones (none, usually): a revision of this period
# comes after them; one whose bill stands (or that no bill holds: a master meter) means the meter
# is billed for the period; the first later period's standing read must open where this one closes
_THIS_AND_LATER = f"""
SELECT p.meter_id, p.period, p.revision, {_US.format(c="p.opening_ts")} AS ts, p.opening_value AS value,
       (p.bill_id IS NULL OR b.status = 'issued') AS standing
  FROM meter_period_read p JOIN ml_bill_meter s ON s.id = p.meter_id
  LEFT JOIN bill b ON b.id = p.bill_id
 WHERE p.period >= %(period)s AND p.meter_id BETWEEN %(lo)s AND %(hi)s"""
_LATER_SCHEMA = {"meter_id": pl.Int64, "period": pl.Utf8, "revision": pl.Int16, "ts": pl.Int64, "value": pl.Int64,
                 "standing": pl.Boolean}

_FALLBACK = f"""
SELECT s.id AS meter_id, coalesce(b.ts, f.ts) AS ts, coalesce(b.value, f.value) AS value,
       coalesce(b.estimated, f.estimated) AS estimated, (b.ts IS NULL)::int AS first_read
  FROM ml_bill_meter s
  LEFT JOIN LATERAL (SELECT {_US.format(c="r.ts")} AS ts, r.value, r.estimated FROM reading_effective r
                      WHERE r.meter_id = s.id AND r.quantity = s.quantity AND r.ts <= %(s)s
                      ORDER BY r.ts DESC LIMIT 1) b ON true
  LEFT JOIN LATERAL (SELECT {_US.format(c="r.ts")} AS ts, r.value, r.estimated FROM reading_effective r
                      WHERE r.meter_id = s.id AND r.quantity = s.quantity AND r.ts > %(s)s AND r.ts < %(e)s
                      ORDER BY r.ts LIMIT 1) f ON b.ts IS NULL
 WHERE coalesce(b.ts, f.ts) IS NOT NULL"""

_INSTALLS = f"""
SELECT i.meter_id, {_US.format(c="i.installed_at")} AS installed, i.initial_register AS initial,
       coalesce({_US.format(c="i.removed_at")}, -1) AS removed, coalesce(i.final_register, -1) AS final
  FROM meter_installation i JOIN ml_bill_meter s ON s.id = i.meter_id
 WHERE i.meter_id BETWEEN %(lo)s AND %(hi)s"""

_READ_SCHEMA = {"meter_id": pl.Int64, "ts": pl.Int64, "value": pl.Int64, "estimated": pl.Boolean}
_INST_SCHEMA = {"meter_id": pl.Int64, "installed": pl.Int64, "initial": pl.Int64, "removed": pl.Int64,
                "final": pl.Int64}


def meter_reads(conn: psycopg.Connection, meters: pl.DataFrame, period: str, start_b: dt.datetime,
                end_b: dt.datetime, settings: BillingSettings, probe: bool | None = None) -> pl.DataFrame:
    """Opening and closing reads and consumption of ``meters`` (columns meter_id, quantity,
    modulus, multiplier) for the period ``[start_b, end_b)``; one row per meter.

    Output columns: meter_id, has_close, close_ts (µs), close_value, close_est, has_open,
    open_basis (index into :data:`OPENING_BASES`), open_ts, open_value, open_est, consumption,
    kind (:class:`~meterline.store.consumption.Kind`; -1 when not computed), bad_history.

    ``probe``: look each meter's reads up by its key (True) or read the readings of the meters' id
    range (False); None: probe when the meters are few for their id range (the master–sub trees,
    scattered over the company). Both give the same rows.
    """
    for statement in _STAGE.strip().split(";\n"):
        conn.execute(statement)
    copy_in(conn, "ml_bill_meter", meters.select(pl.col("meter_id").alias("id"), pl.col("quantity").cast(pl.Int16)))
    conn.execute("ANALYZE ml_bill_meter")
    wb = dt.timedelta(days=settings.closing_before_days)
    wa = dt.timedelta(days=settings.closing_after_days)
    # the id range of these meters lets every query read only their part of the readings (a shard
    # of books is usually a range of meter ids), not the whole company's window once per shard
    ids = {"lo": int(meters["meter_id"].min() or 0), "hi": int(meters["meter_id"].max() or 0)}
    # few meters over a wide range of ids (the trees): probe each meter's readings by its key
    if probe is None:
        probe = meters.height * 8 < ids["hi"] - ids["lo"] + 1
    nearest, previous, installs = (_NEAREST_EACH, _PREVIOUS_EACH, _INSTALLS_EACH) if probe else (
        _NEAREST, _PREVIOUS, _INSTALLS)
    close = query_frame(conn, nearest.format(extra=""), {"b": end_b, "wb": wb, "wa": wa, **ids}, _READ_SCHEMA)
    prev = query_frame(conn, previous, {"period": period, **ids}, _READ_SCHEMA)
    start = query_frame(conn, nearest.format(
        extra="AND NOT EXISTS (SELECT 1 FROM meter_period_read p WHERE p.meter_id = s.id AND p.period < %(period)s)"),
        {"b": start_b, "wb": wb, "wa": wa, "period": period, **ids}, _READ_SCHEMA)
    inst = query_frame(conn, installs, ids, _INST_SCHEMA).sort("meter_id", "installed")
    later = query_frame(conn, _THIS_AND_LATER, {"period": period, **ids}, _LATER_SCHEMA)

    # a device removed without a final register (and not the last one) breaks the history
    bad = (inst.with_columns(last=pl.col("installed").rank("ordinal", descending=True).over("meter_id") == 1)
               .filter(~pl.col("last") & (pl.col("final") < 0))["meter_id"].unique())
    inst_ok = inst.filter(~pl.col("meter_id").is_in(bad.implode()))
    # installation basis: the first device of a meter installed after the period start window
    first_inst = inst.group_by("meter_id").agg(pl.col("installed").min().alias("inst_ts"),
                                               pl.col("initial").sort_by("installed").first().alias("inst_value"))

    def tagged(frame: pl.DataFrame, basis: int) -> pl.DataFrame:
        return frame.select("meter_id", pl.col("ts").alias("open_ts"), pl.col("value").alias("open_value"),
                            pl.col("estimated").alias("open_est"), pl.lit(basis, pl.Int8).alias("open_basis"))

    out = (meters.select("meter_id", "modulus", "multiplier")
           .join(close.rename({"ts": "close_ts", "value": "close_value", "estimated": "close_est"}),
                 on="meter_id", how="left")
           .with_columns(has_close=pl.col("close_ts").is_not_null()))
    start_bound = _us(start_b) - int(wb / dt.timedelta(microseconds=1))
    inst_open = (first_inst.filter(pl.col("inst_ts") >= start_bound)
                 .select("meter_id", pl.col("inst_ts").alias("ts"), pl.col("inst_value").alias("value"),
                         pl.lit(False).alias("estimated")))
    opening = pl.concat([tagged(prev, 0), tagged(start, 1), tagged(inst_open, 2)])
    opening = (opening.join(out.select("meter_id", "close_ts"), on="meter_id", how="inner")
               .filter(pl.col("open_ts") <= pl.col("close_ts"))
               .sort("meter_id", "open_basis").unique("meter_id", keep="first"))
    # meters never billed with no read near the period start (few): the latest read before it,
    # else the first read inside the period
    lacking = out.filter(pl.col("has_close")).join(opening, on="meter_id", how="anti")
    if lacking.height:
        conn.execute("TRUNCATE ml_bill_meter")
        copy_in(conn, "ml_bill_meter", lacking.join(meters.select("meter_id", "quantity"), on="meter_id").select(
            pl.col("meter_id").alias("id"), pl.col("quantity").cast(pl.Int16)))
        more = query_frame(conn, _FALLBACK, {"s": start_b, "e": end_b},
                           {**_READ_SCHEMA, "first_read": pl.Int8})
        more = more.select("meter_id", pl.col("ts").alias("open_ts"), pl.col("value").alias("open_value"),
                           pl.col("estimated").alias("open_est"), (pl.col("first_read") + 3).alias("open_basis"))
        more = (more.join(out.select("meter_id", "close_ts"), on="meter_id", how="inner")
                .filter(pl.col("open_ts") <= pl.col("close_ts")))
        opening = pl.concat([opening, more])
    out = (out.join(opening, on="meter_id", how="left")
           .with_columns(has_open=pl.col("open_ts").is_not_null(),
                         bad_history=pl.col("meter_id").is_in(bad.implode())))
    ok = out.filter(pl.col("has_close") & pl.col("has_open") & ~pl.col("bad_history"))
    cons = np.full(out.height, 0, dtype=np.int64)
    kind = np.full(out.height, -1, dtype=np.int8)
    if ok.height:
        pm = ok["meter_id"].to_numpy()
        fo, ini, btw = replacement_terms(pm, ok["open_ts"].to_numpy(), ok["close_ts"].to_numpy(),
                                         inst_ok["meter_id"].to_numpy(), inst_ok["installed"].to_numpy(),
                                         inst_ok["initial"].to_numpy(), inst_ok["removed"].to_numpy(),
                                         inst_ok["final"].to_numpy(), ok["modulus"].to_numpy())
        c, k = consumption(ok["open_value"].to_numpy(), ok["close_value"].to_numpy(), ok["modulus"].to_numpy(),
                           ok["multiplier"].to_numpy(), fo, ini, btw)
        sel = (out["has_close"] & out["has_open"] & ~out["bad_history"]).to_numpy()
        cons[sel] = c
        kind[sel] = k
    return _revisions(out.with_columns(consumption=pl.Series(cons), kind=pl.Series(kind)), later, period)


def _revisions(out: pl.DataFrame, later: pl.DataFrame, period: str) -> pl.DataFrame:
    """Add ``revision`` (of the meter's period read to write: one after those of the period
    already there, reversed ones), ``billed_now`` (a read of the period stands) and
    ``billed_later`` (the first later period's standing read does not open at this period's
    closing read: billing it would bill litres twice or leave some out) to ``out``."""
    now = (later.filter(pl.col("period") == period).group_by("meter_id")
           .agg(revision=(pl.col("revision").max() + 1).cast(pl.Int16), billed_now=pl.col("standing").any()))
    nxt = (later.filter((pl.col("period") > period) & pl.col("standing"))
           .sort("meter_id", "period", pl.col("revision"), descending=[False, False, True])
           .unique("meter_id", keep="first")
           .select("meter_id", pl.col("ts").alias("next_ts"), pl.col("value").alias("next_value")))
    return (out.join(now, on="meter_id", how="left", maintain_order="left")
            .join(nxt, on="meter_id", how="left", maintain_order="left")
            .with_columns(revision=pl.col("revision").fill_null(0), billed_now=pl.col("billed_now").fill_null(False),
                          billed_later=(pl.col("next_ts").is_not_null() & pl.col("has_close")
                                        & ((pl.col("next_ts") != pl.col("close_ts"))
                                           | (pl.col("next_value") != pl.col("close_value")))).fill_null(False))
            .drop("next_ts", "next_value"))


# -- the run ---------------------------------------------------------------------------------

_ACCOUNTS = """
SELECT a.id AS account_id, a.book_id, b.code AS book, a.tariff_id, a.household_size, a.dwellings,
       (a.floor_area_m2 * 100)::bigint AS area_cm2, ms.sizes AS meter_sizes,
       x.run_id IS NOT NULL AS billed, o.account_id IS NOT NULL AS other_run, rv.id AS replaces
  FROM account a JOIN meter_book b ON b.id = a.book_id
  LEFT JOIN (SELECT m.account_id, string_agg(coalesce(m.size, ''), ',' ORDER BY m.id) AS sizes FROM meter m
              WHERE m.status = 'active' AND m.account_id IS NOT NULL GROUP BY m.account_id) ms
         ON ms.account_id = a.id
  LEFT JOIN (SELECT DISTINCT account_id, run_id FROM bill WHERE run_id = %(run)s AND status = 'issued') x
         ON x.account_id = a.id
  LEFT JOIN (SELECT DISTINCT account_id FROM bill WHERE period = %(period)s AND status = 'issued'
                AND run_id IS DISTINCT FROM %(run)s) o ON o.account_id = a.id
  -- the latest reversed bill of the period (any run), of an account without a bill that stands
  LEFT JOIN (SELECT DISTINCT ON (r.account_id) r.account_id, r.id FROM bill r
              WHERE r.period = %(period)s AND r.status = 'reversed'
                AND NOT EXISTS (SELECT 1 FROM bill i WHERE i.account_id = r.account_id AND i.period = r.period
                                   AND i.status = 'issued')
              ORDER BY r.account_id, r.id DESC) rv ON rv.account_id = a.id
 WHERE b.cycle = %(cycle)s AND a.status = 'active' AND a.opened_on <= %(end)s
   AND (%(books)s::text[] IS NULL OR b.code = ANY(%(books)s::text[]))
 ORDER BY b.code, a.id"""

_ACCOUNT_SCHEMA = {"account_id": pl.Int64, "book_id": pl.Int64, "book": pl.Utf8, "tariff_id": pl.Utf8,
                   "household_size": pl.Int16, "dwellings": pl.Int16, "area_cm2": pl.Int64, "meter_sizes": pl.Utf8,
                   "billed": pl.Boolean, "other_run": pl.Boolean, "replaces": pl.Int64}

_TREE = """
SELECT m.id AS meter_id, coalesce(m.parent_meter_id, -1) AS parent, coalesce(m.account_id, -1) AS account_id,
       coalesce(array_position(ARRAY['master_account','by_consumption','equal','by_area'], m.apportion_policy) - 1, -1)
           AS policy,
       m.quantity, m.register_modulus AS modulus, m.multiplier,
       coalesce((a.floor_area_m2 * 100)::bigint, 0) AS area
  FROM meter m LEFT JOIN account a ON a.id = m.account_id
 WHERE m.status = 'active'
   AND (m.parent_meter_id IS NOT NULL
        OR EXISTS (SELECT 1 FROM meter s WHERE s.parent_meter_id = m.id AND s.status = 'active'))"""

_TREE_SCHEMA = {"meter_id": pl.Int64, "parent": pl.Int64, "account_id": pl.Int64, "policy": pl.Int8,
                "quantity": pl.Int16, "modulus": pl.Int64, "multiplier": pl.Int64, "area": pl.Int64}

# heating stopped (and resumed) per account, overlapping the period (few rows: read once per run);
# every one of them is rated (lists of stops and resumes per account, in stop order)
_SUSPENSIONS = f"""
SELECT account_id, stop_on AS heating_stop, resume_on AS heating_resume
  FROM heating_suspension
 WHERE company_id = %(company)s AND {heating.OVERLAPS}
 ORDER BY account_id, stop_on"""

_SUSPENSION_SCHEMA = {"account_id": pl.Int64, "heating_stop": pl.Date, "heating_resume": pl.Date}


def _suspension_lists(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per account: ``heating_stops`` / ``heating_resumes``, its suspensions in stop order."""
    return rows.group_by("account_id", maintain_order=True).agg(
        pl.col("heating_stop").alias("heating_stops"), pl.col("heating_resume").alias("heating_resumes"))

_METERS = """
SELECT m.id AS meter_id, m.account_id, m.quantity, m.register_modulus AS modulus, m.multiplier
  FROM meter m JOIN account a ON a.id = m.account_id
 WHERE a.book_id = ANY(%(books)s) AND m.status = 'active'"""

_METER_SCHEMA = {"meter_id": pl.Int64, "account_id": pl.Int64, "quantity": pl.Int16, "modulus": pl.Int64,
                 "multiplier": pl.Int64}

# the volume the tiers priced on each earlier bill still standing (not reversed) of the tariff
# year: consumption less the apportioned litres (priced on their own lines; 0640), of a bill that
# crossed the year start only its part after it, split by days with the rating's cumulative floor
_YTD = """
SELECT b.account_id,
       sum((b.consumption - b.apportioned)
           - ((b.consumption - b.apportioned) * greatest(0, u.year_start - b.period_start))
             / (b.period_end - b.period_start + 1))::bigint AS ytd
  FROM unnest(%(accounts)s::bigint[], %(year_start)s::date[]) AS u(account_id, year_start)
  JOIN bill b ON b.account_id = u.account_id
 WHERE b.status = 'issued' AND b.period < %(period)s AND b.period_end >= u.year_start
 GROUP BY b.account_id"""


def _roots(meter_id: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """The top master of every meter of the trees."""
    index = {int(m): i for i, m in enumerate(meter_id.tolist())}
    up = np.array([index.get(int(p), -1) for p in parent.tolist()], dtype=np.int64)
    root = np.arange(len(meter_id))
    for _ in range(64):
        nxt = np.where(up[root] >= 0, up[root], root)
        if (nxt == root).all():
            break
        root = nxt
    return meter_id[root]


def _open_run(conn: psycopg.Connection, company_id: int, cycle: str, period: str, due: dt.date,
              books: Sequence[str] | None, created_by: str | None, dry_run: bool) -> int | None:
    if dry_run:
        row = conn.execute("SELECT id FROM billing_run WHERE company_id = %s AND cycle = %s AND period = %s",
                           [company_id, cycle, period]).fetchone()
        return row[0] if row else None
    conn.execute("""INSERT INTO billing_run (company_id, cycle, period, created_by, due_date, books)
                    VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (company_id, cycle, period) DO NOTHING""",
                 [company_id, cycle, period, created_by, due, list(books) if books else None])
    return conn.execute("SELECT id FROM billing_run WHERE company_id = %s AND cycle = %s AND period = %s FOR UPDATE",
                        [company_id, cycle, period]).fetchone()[0]


def bill_run(conn: psycopg.Connection, company_id: int, cycle: str, period: str, books: Sequence[str] | None = None,
             dry_run: bool = False, progress: Progress | None = None, *, tariffs: TariffBook | None = None,
             settings: BillingSettings | None = None, created_by: str | None = None,
             day: dt.date | None = None, db: "Database | None" = None, rebill: bool = False) -> BillRunResult:
    """Bill ``cycle`` for ``period`` in company ``company_id`` (see the module doc).

    ``conn`` must be in the company's scope (or a role that sees its rows); the run is one
    transaction (a savepoint inside the caller's). ``books``: only these meter book codes.
    ``progress(stage, done, total)`` is called as shards finish. ``day``: the ledger's booking
    day (default: the company's today). ``rebill``: also bill again the accounts whose bill of
    the period was reversed (补开; see the module doc), in one transaction or in parallel shards
    alike.

    **Parallel** (``db`` given, ``billing.workers`` > 1, the run has several shards, ``conn`` not
    inside a transaction, not a dry run): the run, its apportionment and alerts are committed
    first; then ``workers`` connections of ``db`` bill the shards at once, each shard (its
    bills, lines, period reads, skips and ledger postings) in its own transaction; the run is
    marked completed on ``conn`` at the end. Should a shard fail, the shards committed stay (the
    accounts are billed once, as a re-run sees) and running it again bills the rest.
    """
    t0 = time.perf_counter()
    parallel_ok = db is not None and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    settings = settings or BillingSettings()
    tariffs = tariffs or TariffBook.load()
    if not cycle or not cycle.strip():
        raise BillingError("a billing run needs a cycle")
    months = settings.cycle_months.get(cycle, 1)
    p_start, p_end = period_dates(period, months)
    due = p_end + dt.timedelta(days=settings.due_days)
    report = progress or (lambda stage, done, total: None)
    row = conn.execute("SELECT timezone, code FROM company WHERE id = %s", [company_id]).fetchone()
    if row is None:
        raise BillingError(f"company {company_id} does not exist (or is not in this session's scope)")
    tz, company_code = row
    start_b, end_b = local_midnight(p_start, tz), local_midnight(p_end + dt.timedelta(days=1), tz)
    result = BillRunResult(None, company_id, cycle, period, p_start, p_end, due, dry_run)
    lap = result.lap

    with conn.transaction(force_rollback=dry_run):
        # the period's reads are sorted and joined a million at a time: room to do it in memory
        conn.execute("SELECT set_config('work_mem', %s, true)", [settings.work_mem])
        if books:
            known = {r[0] for r in conn.execute(
                "SELECT code FROM meter_book WHERE company_id = %s AND code = ANY(%s)", [company_id, list(books)])}
            missing = [b for b in books if b not in known]
            if missing:
                raise BillingError(f"unknown meter book(s): {', '.join(missing)}")
        run_id = _open_run(conn, company_id, cycle, period, due, books, created_by, dry_run)
        result.run_id = run_id
        t = time.perf_counter()
        accounts = query_frame(conn, _ACCOUNTS, {"run": run_id, "period": period, "cycle": cycle, "end": p_end,
                                                 "books": list(books) if books else None}, _ACCOUNT_SCHEMA)
        result.already_billed = int(accounts["billed"].sum())
        if not dry_run:
            accounts = accounts.filter(~pl.col("billed"))
        result.accounts = accounts.height
        t = lap("accounts", t)
        report("apportioning", 0, accounts.height)

        # -- master–sub trees touching the run's accounts ------------------------------------
        shares, master_ids = _trees(conn, company_id, run_id, accounts, period, start_b, end_b, settings, result,
                                    dry_run)
        suspensions = _suspension_lists(query_frame(conn, _SUSPENSIONS, {"company": company_id, "start": p_start,
                                                                          "end": p_end}, _SUSPENSION_SCHEMA))
        t = lap("apportionment", t)

        # -- shards of whole books ------------------------------------------------------------
        workers = settings.workers if parallel_ok and not dry_run else 1
        limit = settings.shard_accounts
        if workers > 1:  # at least two shards a worker, so the workers finish together
            limit = min(limit, max(1, -(-accounts.height // (2 * workers))))
        shards = _shards(accounts, limit)
        if len(shards) < 2:
            workers = 1
        result.shards, result.workers = len(shards), workers
        bill_shard = functools.partial(
            _shard, company_id=company_id, company_code=company_code, run_id=run_id, period=period, p_start=p_start,
            p_end=p_end, due=due, start_b=start_b, end_b=end_b, shares=shares, master_ids=master_ids,
            suspensions=suspensions, tariffs=tariffs, settings=settings, rebill=rebill)
        if workers == 1:
            done = 0
            for shard in shards:
                part = accounts.filter(pl.col("book_id").is_in(shard))
                bill_shard(conn, accounts=part, book_ids=shard, result=result, dry_run=dry_run, lap=lap)
                done += part.height
                report("billing", done, accounts.height)
            if not dry_run:
                t = time.perf_counter()
                if result.bills:
                    result.posted = post_bills(conn, company_id, run_id, day=day, created_by=created_by)
                t = lap("ledger", t)
                _finish_run(conn, run_id, result)
                lap("finish", t)
    if workers > 1:
        # the run, its apportionment and alerts are committed: each shard commits on its own
        conn.commit()
        _parallel(db, workers, accounts, shards, bill_shard, settings.work_mem, result, report, day, created_by)
        t = time.perf_counter()
        with conn.transaction():
            _finish_run(conn, run_id, result)
        lap("finish", t)
    result.seconds = time.perf_counter() - t0
    return result


def _shards(accounts: pl.DataFrame, limit: int) -> list[list[int]]:
    """Whole meter books in shards of about ``limit`` accounts (a book is never split)."""
    sizes = accounts.group_by("book_id", maintain_order=True).len()
    shards: list[list[int]] = [[]]
    count = 0
    for book_id, n in sizes.iter_rows():
        if count and count + n > limit:
            shards.append([])
            count = 0
        shards[-1].append(book_id)
        count += n
    return [s for s in shards if s]


def _finish_run(conn: psycopg.Connection, run_id: int, result: BillRunResult) -> None:
    if result.bills or conn.execute("SELECT status <> 'completed' FROM billing_run WHERE id = %s",
                                    [run_id]).fetchone()[0]:
        conn.execute(
            """UPDATE billing_run r SET status = 'completed', finished_at = now(),
                      accounts = (SELECT count(*) FROM bill b WHERE b.run_id = r.id AND b.status = 'issued'),
                      amount = (SELECT coalesce(sum(total), 0) FROM bill b WHERE b.run_id = r.id
                                   AND b.status = 'issued'),
                      stats = r.stats || %s::jsonb
                WHERE id = %s""",
            [json.dumps({"skipped": result.skipped, "trees": result.trees, "estimated": result.estimated,
                         "last_bills": result.bills}), run_id])


def _parallel(db: Database, workers: int, accounts: pl.DataFrame, shards: list[list[int]],
              bill_shard: Callable[..., list[int]], work_mem: str, result: BillRunResult, report: Progress,
              day: dt.date | None, created_by: str | None) -> None:
    """Bill the shards on ``workers`` connections at once, each shard in its own transaction
    (bills, lines, period reads, skips and its ledger postings committed together)."""
    company_id, run_id = result.company_id, result.run_id
    lock = threading.Lock()
    done = [0]
    failed: list[BaseException] = []

    def one(shard: list[int]) -> None:
        part = accounts.filter(pl.col("book_id").is_in(shard))
        sub = BillRunResult(run_id, company_id, result.cycle, result.period, result.period_start, result.period_end,
                            result.due_date, False)
        with db.connect(company_id=company_id) as wc:
            with wc.transaction():
                wc.execute("SELECT set_config('work_mem', %s, true)", [work_mem])
                ids = bill_shard(wc, accounts=part, book_ids=shard, result=sub, dry_run=False, lap=sub.lap)
                t = time.perf_counter()
                if ids:
                    sub.posted = post_bills(wc, company_id, run_id, day=day, created_by=created_by, bill_ids=ids)
                sub.lap("ledger", t)
        with lock:
            result.merge(sub)
            done[0] += part.height
            report("billing", done[0], accounts.height)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bill-shard") as pool:
        futures = [pool.submit(one, shard) for shard in shards]
        for f in futures:
            try:
                f.result()
            except BaseException as exc:  # the other shards go on; the run is completed by running it again
                failed.append(exc)
                for other in futures:
                    other.cancel()
    if failed:
        raise failed[0]


def _trees(conn: psycopg.Connection, company_id: int, run_id: int | None, accounts: pl.DataFrame, period: str,
           start_b: dt.datetime, end_b: dt.datetime, settings: BillingSettings, result: BillRunResult,
           dry_run: bool) -> tuple[pl.DataFrame, set[int]]:
    """Apportion the trees with an account of the run; (shares per account, master meter ids)."""
    empty = pl.DataFrame(schema={"account_id": pl.Int64, "apportioned": pl.Int64, "shares": pl.Utf8})
    tree = query_frame(conn, _TREE, None, _TREE_SCHEMA)
    if tree.height == 0:
        return empty, set()
    ids = tree["meter_id"].to_numpy()
    tree = tree.with_columns(root=pl.Series(_roots(ids, tree["parent"].to_numpy())))
    master_ids = set(tree.filter(pl.col("parent") >= 0)["parent"].unique().to_list())
    roots = tree.filter(pl.col("account_id").is_in(accounts["account_id"].implode()))["root"].unique()
    tree = tree.filter(pl.col("root").is_in(roots.implode()))
    if tree.height == 0:
        return empty, master_ids
    reads = meter_reads(conn, tree.select("meter_id", "quantity", "modulus", "multiplier"), period, start_b, end_b,
                        settings)
    tree = tree.join(reads.drop("modulus", "multiplier"), on="meter_id", how="left")
    known = (tree["has_close"] & tree["has_open"] & (tree["kind"] >= 0) & (tree["kind"] != int(Kind.RESET))).to_numpy()
    res = ap.apportion(tree["meter_id"].to_numpy(), tree["parent"].to_numpy(), tree["consumption"].to_numpy(),
                       known, tree["account_id"].to_numpy(), tree["area"].to_numpy(), tree["policy"].to_numpy(),
                       default_policy=settings.default_apportion_policy)
    mid = tree["meter_id"].to_numpy()
    for code in res.status.tolist():
        name = ap.STATUSES[code]
        result.trees[name] = result.trees.get(name, 0) + 1
    masters = pl.DataFrame({
        "master_meter_id": mid[res.master], "root_meter_id": tree["root"].to_numpy()[res.master],
        "policy": [ap.POLICIES[p] for p in res.policy.tolist()], "master_consumption": res.master_consumption,
        "subs_consumption": res.subs_consumption, "residual": res.residual, "inherited": res.inherited,
        "distributed": res.distributed, "status": [ap.STATUSES[s] for s in res.status.tolist()]})
    share_rows = pl.DataFrame({"master_meter_id": mid[res.share_master], "via_meter_id": mid[res.share_via],
                               "account_id": res.share_account, "weight": res.share_weight, "share": res.share},
                              schema={"master_meter_id": pl.Int64, "via_meter_id": pl.Int64, "account_id": pl.Int64,
                                      "weight": pl.Int64, "share": pl.Int64})
    # masters whose apportionment of this period is stored already keep what was stored
    stored = query_frame(conn, "SELECT master_meter_id FROM apportionment WHERE period = %s AND master_meter_id = ANY(%s)",
                         [period, masters["master_meter_id"].to_list()], {"master_meter_id": pl.Int64})
    if stored.height:
        kept = query_frame(conn, """SELECT master_meter_id, via_meter_id, account_id, weight, share
                                      FROM apportionment_share WHERE period = %s AND master_meter_id = ANY(%s)""",
                           [period, stored["master_meter_id"].to_list()], dict(share_rows.schema))
        share_rows = pl.concat([share_rows.join(stored, on="master_meter_id", how="anti"), kept])
    negative = masters.filter(pl.col("status") == "negative")
    if not dry_run:
        new = masters.filter(pl.col("status") != "incomplete").join(stored, on="master_meter_id", how="anti")
        if new.height:
            conn.execute("CREATE TEMP TABLE ml_app (LIKE apportionment INCLUDING DEFAULTS) ON COMMIT DROP")
            copy_in(conn, "ml_app", new.with_columns(company_id=pl.lit(company_id, pl.Int32),
                                                     run_id=pl.lit(run_id, pl.Int64), period=pl.lit(period)))
            conn.execute("INSERT INTO apportionment SELECT * FROM ml_app ON CONFLICT DO NOTHING")
            conn.execute("DROP TABLE ml_app")
            new_shares = share_rows.join(new.select("master_meter_id"), on="master_meter_id", how="semi")
            if new_shares.height:
                conn.execute("CREATE TEMP TABLE ml_app_share (LIKE apportionment_share) ON COMMIT DROP")
                copy_in(conn, "ml_app_share", new_shares.with_columns(company_id=pl.lit(company_id, pl.Int32),
                                                                      period=pl.lit(period)))
                conn.execute("INSERT INTO apportionment_share SELECT * FROM ml_app_share ON CONFLICT DO NOTHING")
                conn.execute("DROP TABLE ml_app_share")
            # the reads of master meters billed to nobody (their next opening read)
            done = tree.filter((pl.col("account_id") < 0) & pl.col("meter_id").is_in(new["master_meter_id"].implode()))
            _write_period_reads(conn, company_id, run_id, period,
                                done.with_columns(bill_id=pl.lit(None, pl.Int64), account_id=pl.lit(None, pl.Int64)))
        if negative.height:
            events = [AlertEvent(IMBALANCE_RULE, "critical", int(m), end_b,
                                 f"sub-meters together used more than their master meter in {period}: "
                                 f"master {mc} L, direct subs {sc} L; the residual {r} L is not billed",
                                 {"master_consumption": int(mc), "subs_consumption": int(sc), "residual": int(r),
                                  "period": period, "source": "billing"}, 1, period=period)
                      for m, mc, sc, r in negative.select("master_meter_id", "master_consumption",
                                                          "subs_consumption", "residual").iter_rows()]
            raised = raise_alerts(conn, events)
            result.alerts_opened += raised.opened
            result.alerts_updated += raised.updated
    per_account = (share_rows.filter(pl.col("share") > 0)
                   .sort("master_meter_id")
                   .group_by("account_id")
                   .agg(pl.col("share").sum().alias("apportioned"),
                        pl.format("[{},{},{}]", "master_meter_id", "via_meter_id", "share").str.join(",").alias("shares")))
    return per_account, master_ids


def _write_period_reads(conn: psycopg.Connection, company_id: int, run_id: int, period: str, rows: pl.DataFrame) -> None:
    if rows.height == 0:
        return
    frame = rows.select(
        pl.col("meter_id"), pl.col("account_id"), pl.col("bill_id"), pl.col("open_basis").cast(pl.Int16),
        _ts("open_ts"), pl.col("open_value"), pl.col("open_est"), _ts("close_ts"), pl.col("close_value"),
        pl.col("close_est"), pl.col("consumption"), pl.col("kind").cast(pl.Int16), pl.col("revision").cast(pl.Int16))
    conn.execute("""CREATE TEMP TABLE IF NOT EXISTS ml_mpr (meter_id bigint, account_id bigint, bill_id bigint,
                        open_basis smallint, open_ts timestamptz, open_value bigint, open_est boolean, close_ts timestamptz,
                        close_value bigint, close_est boolean, consumption bigint, kind smallint, revision smallint)
                        ON COMMIT DROP""")
    conn.execute("TRUNCATE ml_mpr")
    copy_in(conn, "ml_mpr", frame)
    conn.execute(
        """INSERT INTO meter_period_read (meter_id, period, company_id, run_id, account_id, bill_id, opening_basis,
                                          opening_ts, opening_value, opening_estimated, closing_ts, closing_value,
                                          closing_estimated, consumption, kind, revision)
           SELECT meter_id, %s, %s, %s, account_id, bill_id, (%s::text[])[open_basis + 1],
                  open_ts, open_value, open_est, close_ts,
                  close_value, close_est, consumption, kind, revision
             FROM ml_mpr""", [period, company_id, run_id, list(OPENING_BASES)])


def _sizes(col: str) -> pl.Expr:
    """Comma-joined sizes of an account's active meters → a list (one fixed charge per meter; a
    meter without a size gets the tariff's default; no meter: an empty list)."""
    each = pl.col(col).str.split(",").list.eval(pl.when(pl.element() == "").then(None).otherwise(pl.element()))
    return pl.when(pl.col(col).is_null()).then(pl.lit([], dtype=pl.List(pl.Utf8))).otherwise(each).alias(col)


def _ts(col: str) -> pl.Expr:
    """Epoch microseconds as a UTC timestamp (staged as timestamptz by binary COPY)."""
    return pl.from_epoch(pl.col(col), time_unit="us").dt.replace_time_zone("UTC").alias(col)


def _iso(col: str) -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _shard(conn: psycopg.Connection, company_id: int, company_code: str, run_id: int | None, accounts: pl.DataFrame, book_ids: list[int],
           period: str, p_start: dt.date, p_end: dt.date, due: dt.date, start_b: dt.datetime, end_b: dt.datetime,
           shares: pl.DataFrame, master_ids: set[int], suspensions: pl.DataFrame, tariffs: TariffBook,
           settings: BillingSettings, rebill: bool,
           result: BillRunResult, dry_run: bool, lap: Callable[[str, float], float]) -> list[int]:
    t = time.perf_counter()
    meters = query_frame(conn, _METERS, {"books": book_ids}, _METER_SCHEMA).join(
        accounts.select("account_id"), on="account_id", how="semi")
    reads = meter_reads(conn, meters.select("meter_id", "quantity", "modulus", "multiplier"), period, start_b, end_b,
                        settings)
    m = meters.select("meter_id", "account_id").join(reads, on="meter_id", how="left").with_columns(
        is_master=pl.col("meter_id").is_in(list(master_ids)))
    t = lap("reads", t)

    # -- per account: volume, and why an account cannot be billed ---------------------------
    per = m.group_by("account_id").agg(
        volume=pl.when(~pl.col("is_master")).then(pl.col("consumption")).otherwise(0).sum(),
        no_close=(~pl.col("has_close")).any(),
        no_open=(~pl.col("has_open")).any(),
        bad_history=pl.col("bad_history").any(),
        reset=(pl.col("kind") == int(Kind.RESET)).any(),
        estimated=pl.col("close_est").fill_null(False).any(),
        meter_billed=pl.col("billed_now").any(),
        billed_later=pl.col("billed_later").any(),
        reads=pl.format("[{},\"{}\",\"{}\",{}]", "meter_id", _iso("open_ts"), _iso("close_ts"),
                        pl.col("close_est").cast(pl.Utf8).str.to_lowercase()).sort_by("meter_id").str.join(","),
    )
    acc = (accounts.join(per, on="account_id", how="left").join(shares, on="account_id", how="left")
           .join(suspensions, on="account_id", how="left")
           .with_columns(pl.col("apportioned").fill_null(0)))
    # (a dry run looks at the accounts billed in the run too: their own reads stand, of course)
    reason = (pl.when(pl.col("other_run")).then(pl.lit("billed_in_other_run"))
              .when(pl.col("replaces").is_not_null() & pl.lit(not rebill)).then(pl.lit("reversed"))
              .when(pl.col("meter_billed").fill_null(False) & ~pl.col("billed")).then(pl.lit("meter_billed"))
              .when(pl.col("volume").is_null()).then(pl.lit("no_meter"))
              .when(pl.col("bad_history")).then(pl.lit("installation_history"))
              .when(pl.col("no_close")).then(pl.lit("no_closing_read"))
              .when(pl.col("no_open")).then(pl.lit("no_opening_read"))
              .when(pl.col("billed_later").fill_null(False) & ~pl.col("billed")).then(pl.lit("billed_later"))
              .when(pl.col("reset")).then(pl.lit("register_reset"))
              .when(pl.col("volume") < 0).then(pl.lit("negative_consumption"))
              .otherwise(pl.lit(None, pl.Utf8)))
    # area-based tariffs without a volume component (heating by floor area) need no meter
    area_only = [tid for tid in accounts["tariff_id"].unique().to_list()
                 if tid is not None and _has_tariff(tariffs, tid, company_code)
                 and all(not v.components for v in tariffs.get(tid, company_code).versions)]
    if area_only:
        acc = acc.with_columns(volume=pl.when(pl.col("volume").is_null() & pl.col("tariff_id").is_in(area_only))
                               .then(0).otherwise(pl.col("volume")))
    acc = acc.with_columns(reason=reason)
    skipped = acc.filter(pl.col("reason").is_not_null()).select("account_id", "reason")
    good = acc.filter(pl.col("reason").is_null())

    # -- year to date for annual tiers -------------------------------------------------------
    ytd = pl.DataFrame(schema={"account_id": pl.Int64, "ytd": pl.Int64})
    if good.height:
        starts = {tid: tariffs.year_start(tid, p_start, company_code) for tid in good["tariff_id"].unique().to_list()
                  if _has_tariff(tariffs, tid, company_code)}
        if starts:
            sub = good.filter(pl.col("tariff_id").is_in(list(starts)))
            ytd = query_frame(conn, _YTD, {"accounts": sub["account_id"].to_list(),
                                           "year_start": [starts[x] for x in sub["tariff_id"].to_list()],
                                           "period": period}, {"account_id": pl.Int64, "ytd": pl.Int64})
    frame = good.join(ytd, on="account_id", how="left").select(
        pl.col("account_id").alias("row"), "tariff_id", pl.lit(p_start).alias("period_start"),
        pl.lit(p_end).alias("period_end"), pl.col("volume").cast(pl.Int64), pl.col("apportioned").cast(pl.Int64),
        pl.col("ytd").fill_null(0).cast(pl.Int64), "household_size", "dwellings", _sizes("meter_sizes"), "area_cm2",
        "heating_stops", "heating_resumes")
    t = lap("prepare", t)
    # a dry run compares bill totals only: the kernel's bills-only pass, no line table
    rated = rate(tariffs, frame, company=company_code, on_error="collect", lines=not dry_run)
    t = lap("rate", t)
    errors = getattr(rated, "errors", None)
    tariff_skips = pl.DataFrame(schema={"account_id": pl.Int64, "reason": pl.Utf8, "message": pl.Utf8})
    if errors is not None and errors.height:
        tariff_skips = errors.select(pl.col("row").alias("account_id"), pl.lit("tariff").alias("reason"),
                                     pl.col("reason").alias("message"))
    skip_all = pl.concat([
        skipped.with_columns(message=pl.col("reason").replace_strict(SKIP_REASONS, default="")),
        tariff_skips]).unique("account_id", keep="first")
    result.skips.extend(Skip(int(a), r, msg) for a, r, msg in skip_all.iter_rows())

    bills = (rated.bills.join(tariff_skips.select(pl.col("account_id").alias("row")), on="row", how="anti")
             .join(good.select(pl.col("account_id").alias("row"), pl.col("estimated").fill_null(False), "reads",
                               "shares", "apportioned", "replaces"), on="row"))
    result.bills += bills.height
    result.rebilled += int(bills["replaces"].is_not_null().sum())
    result.consumption += int(bills["consumption"].sum() or 0)
    result.amount += int(bills["amount"].sum() or 0)
    result.tax += int(bills["tax"].sum() or 0)
    result.total += int(bills["total"].sum() or 0)
    result.estimated += int(bills["estimated"].sum() or 0)
    result.apportioned += int(good.join(bills.select(pl.col("row").alias("account_id")), on="account_id",
                                        how="semi")["apportioned"].sum() or 0)

    if dry_run:
        _compare(conn, run_id, bills, result)
        lap("compare", t)
        return []
    # -- write: reserve bill ids, stage, insert ------------------------------------------------
    ids = query_frame(conn, "SELECT nextval(pg_get_serial_sequence('bill', 'id')) AS id FROM generate_series(1, %s)",
                      [bills.height], {"id": pl.Int64}) if bills.height else pl.DataFrame(schema={"id": pl.Int64})
    bills = bills.with_columns(bill_id=ids["id"])
    # a line's source is stored where it is common (0660): the rating's document — the same for every
    # line of a kind and tariff period, a handful per run — once in bill_line_source, each bill's
    # reads (and apportionment shares) once on the bill; a line names its document by source_id.
    # The reads go over as text and are parsed by PostgreSQL once per bill; the lines in binary COPY
    conn.execute("""CREATE TEMP TABLE IF NOT EXISTS ml_bill (id bigint, account_id bigint, consumption bigint,
                        apportioned bigint, amount bigint, tax bigint, total bigint, estimated boolean, reads jsonb,
                        shares jsonb, replaces bigint) ON COMMIT DROP""")
    conn.execute("""CREATE TEMP TABLE IF NOT EXISTS ml_line_key (id integer, component text, tariff_version text,
                        source jsonb, apportioned boolean, source_id bigint) ON COMMIT DROP""")
    conn.execute("""CREATE TEMP TABLE IF NOT EXISTS ml_line (bill_id bigint, line_no smallint, key integer,
                        tier smallint, quantity bigint, unit_price bigint, price_scale smallint, amount bigint,
                        tax bigint) ON COMMIT DROP""")
    conn.execute("TRUNCATE ml_bill, ml_line_key, ml_line")
    copy_in(conn, "ml_bill", bills.select(
        pl.col("bill_id").alias("id"), pl.col("row").alias("account_id"), "consumption",
        pl.col("apportioned").cast(pl.Int64), "amount", "tax", "total", "estimated",
        reads=pl.concat_str([pl.lit('{"reads": ['), pl.col("reads").fill_null(""), pl.lit("]}")]),
        shares=pl.when(pl.col("shares").is_not_null()).then(pl.concat_str([
            pl.lit('{"shares": ['), pl.col("shares"), pl.lit("]}")])),
        replaces=pl.col("replaces")))
    t = lap("stage_bills", t)
    lines = rated.lines.join(bills.select("row", "bill_id"), on="row", how="inner")
    keys = (lines.select("component", "tariff_version", "source").unique(maintain_order=True)
            .with_row_index("key", offset=1).with_columns(pl.col("key").cast(pl.Int32)))
    lines = lines.join(keys, on=["component", "tariff_version", "source"], how="left").select(
        "bill_id", "line_no", "key", pl.col("tier").fill_null(0), "quantity", "unit_price", "price_scale", "amount",
        "tax")
    t = lap("lines", t)
    copy_in(conn, "ml_line_key", keys.select(
        pl.col("key").alias("id"), "component", "tariff_version", "source",
        apportioned=pl.col("source").str.contains('"apportioned"', literal=True)))
    copy_in(conn, "ml_line", lines)
    conn.execute("ANALYZE ml_bill")
    conn.execute("ANALYZE ml_line_key")
    t = lap("stage_lines", t)
    conn.execute(
        """INSERT INTO bill (id, company_id, run_id, account_id, period, period_start, period_end, consumption,
                             apportioned, amount, tax, total, due_date, estimated, replaces, reads, shares)
           SELECT id, %s, %s, account_id, %s, %s, %s, consumption, apportioned, amount, tax, total, %s, estimated,
                  replaces, reads, shares
             FROM ml_bill""",
        [company_id, run_id, period, p_start, p_end, due])
    t = lap("insert_bills", t)
    conn.execute("UPDATE ml_line_key SET source_id = nextval(pg_get_serial_sequence('bill_line_source', 'id'))")
    conn.execute("""INSERT INTO bill_line_source (id, company_id, run_id, doc, apportioned)
                    SELECT source_id, %s, %s, source, apportioned FROM ml_line_key""", [company_id, run_id])
    conn.execute(
        """INSERT INTO bill_line (bill_id, line_no, company_id, component, tier, quantity, unit_price, price_scale,
                                  amount, tax, tariff_version, source_id)
           SELECT l.bill_id, l.line_no, %s, k.component, nullif(l.tier, 0), l.quantity, l.unit_price, l.price_scale,
                  l.amount, l.tax, k.tariff_version, k.source_id
             FROM ml_line l JOIN ml_line_key k ON k.id = l.key""", [company_id])
    t = lap("insert_lines", t)
    billed = m.join(bills.select(pl.col("row").alias("account_id"), "bill_id"), on="account_id", how="inner")
    _write_period_reads(conn, company_id, run_id, period, billed)
    t = lap("period_reads", t)
    _record_skips(conn, company_id, run_id, accounts, skip_all)
    lap("skips", t)
    return bills["bill_id"].to_list()


def _has_tariff(tariffs: TariffBook, tariff_id: str, company: str) -> bool:
    try:
        tariffs.get(tariff_id, company)
        return True
    except RatingError:  # the engine reports unknown tariffs per account
        return False


def _record_skips(conn: psycopg.Connection, company_id: int, run_id: int, accounts: pl.DataFrame,
                  skips: pl.DataFrame) -> None:
    """Skips of this shard's accounts: new or changed reasons written, billed ones removed."""
    ids = accounts["account_id"].to_list()
    conn.execute(
        """DELETE FROM billing_run_skip s WHERE s.run_id = %s AND s.account_id = ANY(%s)
             AND NOT (s.account_id = ANY(%s))""", [run_id, ids, skips["account_id"].to_list()])
    if skips.height:
        conn.execute(
            """INSERT INTO billing_run_skip (run_id, account_id, company_id, reason, message)
               SELECT %s, a, %s, r, m FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS u(a, r, m)
               ON CONFLICT (run_id, account_id) DO UPDATE SET reason = EXCLUDED.reason, message = EXCLUDED.message
               WHERE billing_run_skip.reason IS DISTINCT FROM EXCLUDED.reason
                  OR billing_run_skip.message IS DISTINCT FROM EXCLUDED.message""",
            [run_id, company_id, skips["account_id"].to_list(), skips["reason"].to_list(),
             skips["message"].to_list()])


def _compare(conn: psycopg.Connection, run_id: int | None, bills: pl.DataFrame, result: BillRunResult) -> None:
    """Dry run: the bills computed now against those of the run that stand; a re-bill against the
    reversed bill it replaces (a change, with no bill id: the bill would be new)."""
    schema = {"row": pl.Int64, "bill_id": pl.Int64, "was_consumption": pl.Int64, "was_total": pl.Int64}
    stored = pl.DataFrame(schema=schema)
    if run_id is not None and bills.height:
        stored = query_frame(conn, """SELECT account_id AS row, id AS bill_id, consumption AS was_consumption,
                                             total AS was_total FROM bill
                                       WHERE run_id = %s AND account_id = ANY(%s) AND status = 'issued'""",
                             [run_id, bills["row"].to_list()], schema)
    replaced = bills.filter(pl.col("replaces").is_not_null())
    if replaced.height:
        was = query_frame(conn, """SELECT account_id AS row, NULL::bigint AS bill_id, consumption AS was_consumption,
                                          total AS was_total FROM bill WHERE id = ANY(%s)""",
                          [replaced["replaces"].to_list()], schema)
        stored = pl.concat([stored.join(was.select("row"), on="row", how="anti"), was])
    both = bills.join(stored, on="row", how="left")
    same = both.filter(pl.col("bill_id").is_not_null() & (pl.col("was_total") == pl.col("total"))
                       & (pl.col("was_consumption") == pl.col("consumption")))
    result.unchanged += same.height
    diff = both.join(same.select("row"), on="row", how="anti").sort("row")
    result.changes.extend(BillChange(r, b, wc, c, wt, tt, rp) for r, b, wc, c, wt, tt, rp in diff.select(
        "row", "bill_id", "was_consumption", "consumption", "was_total", "total", "replaces").iter_rows())
