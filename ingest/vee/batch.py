"""The batch run: validate every meter of a company over one period, vectorized.

``meterline vee run --period 2026-10`` calls :func:`run_period`. Meters are processed in chunks
of consecutive ids: while one chunk is evaluated, loader connections fetch the next ones
(server-packed, see :mod:`.store`). For each chunk:

1. the reading rules run in the compiled kernel over the period's readings of every meter,
   after ``history_days`` of history (the rolling median, reads still pending) and followed by
   the reads just after the period end (which decide a pending read on the last day);
2. verdicts are written (``reading_validation``: re-running a period replaces its verdicts and
   keeps people's reviews), alerts raised, reads pending from before the period revised;
3. meter checks run on per-meter summaries: missing reads, estimation of missing period-end
   reads (and superseding estimates real reads have replaced).

Then period-level checks: reading rate per book and master–sub imbalance per tree. A rule
that fails on some meters' data is narrowed down to those meters (by halving), recorded in
``vee_failure``, and the run goes on with the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from meterline.ingest.vee import alerts as A
from meterline.ingest.vee import estimate as E
from meterline.ingest.vee import kernel as K
from meterline.ingest.vee import rules as R
from meterline.ingest.vee import store as S
from meterline.ingest.vee.config import GROUPS, P_INDEX, VeeConfig
from meterline.ingest.vee.engine import AlertEvent, FlagNames, alert_events, apply_reviews, kernel_rows, verdicts
from meterline.ingest.vee.localtime import DAY_US, from_us, period_bounds, to_us
from meterline.ingest.vee.trees import tree_consumption
from meterline.store.consumption import consumption, replacement_terms

log = logging.getLogger(__name__)

DAY = dt.timedelta(days=1)
#: the server's JIT compiles each of these large one-off queries for longer than it runs them
NO_JIT = "-c jit=off"


@dataclass(slots=True)
class BookFigure:
    book_id: int
    meters: int = 0
    read: int = 0

    @property
    def rate(self) -> float:
        return self.read / self.meters if self.meters else 1.0


@dataclass(slots=True)
class RunSummary:
    """What a run did, for the supervisor's summary and ``vee_run.stats``."""

    run_id: int
    company: str
    period: str
    meters: int = 0
    readings: int = 0
    flagged: int = 0
    held: int = 0
    rejected: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    revised: int = 0
    estimated: int = 0
    estimated_by_method: dict[str, int] = field(default_factory=dict)
    estimation_failed: int = 0
    estimates_superseded: int = 0
    missing: int = 0
    alerts_opened: int = 0
    alerts_updated: int = 0
    alerts_resolved: int = 0
    failures: int = 0
    books_judged: int = 0
    books_below_target: int = 0
    trees_judged: int = 0
    trees_alerted: int = 0
    trees_incomplete: int = 0
    seconds: float = 0.0

    def stats(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("run_id", "company", "period")}


@dataclass(slots=True)
class ChunkData:
    lo: int
    hi: int
    meters: S.Meters
    readings: S.Readings
    events: dict[int, tuple[np.ndarray, ...]]
    reviews: list[tuple[Any, ...]]
    load_s: float = 0.0


@dataclass(slots=True)
class MeterContext:
    """Per-meter summary of a chunk that meter checks work on (arrays by meter, sorted by id)."""

    run: "BatchRun"
    conn: psycopg.Connection
    meter_id: np.ndarray
    quantity: np.ndarray
    modulus: np.ndarray
    multiplier: np.ndarray
    in_service: np.ndarray
    group: np.ndarray
    pset: np.ndarray  # parameter row of the meter's own source group
    book: np.ndarray
    last_ts: np.ndarray  # µs of the last reading before the period end, -1: none loaded
    has_end_read: np.ndarray  # an acceptable real read inside the period-end window
    end_read_ts: np.ndarray  # µs of it (nearest the boundary), -1: none

    def __len__(self) -> int:
        return len(self.meter_id)

    def subset(self, idx: np.ndarray) -> "MeterContext":
        arrays = {f: getattr(self, f)[idx] for f in ("meter_id", "quantity", "modulus", "multiplier", "in_service",
                                                       "group", "pset", "book", "last_ts", "has_end_read",
                                                       "end_read_ts")}
        return MeterContext(run=self.run, conn=self.conn, **arrays)

    def param(self, name: str) -> np.ndarray:
        return self.run.params[self.pset, P_INDEX[name]]


@dataclass(slots=True)
class CheckResult:
    events: list[AlertEvent] = field(default_factory=list)
    #: rule -> meters where it still holds: its open alerts on the context's other meters are resolved
    firing: dict[str, list[int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


MeterCheck = Callable[[MeterContext], CheckResult]
#: checks run on each chunk's per-meter summary, in order (registry: name -> check)
METER_CHECKS: dict[str, MeterCheck] = {}


def meter_check(name: str) -> Callable[[MeterCheck], MeterCheck]:
    def deco(fn: MeterCheck) -> MeterCheck:
        METER_CHECKS[name] = fn
        return fn
    return deco


@meter_check("missing_reads")
def _missing_reads(ctx: MeterContext) -> CheckResult:
    run = ctx.run
    res = CheckResult()
    if len(ctx) == 0:
        return res
    on = np.array([R.MISSING_READS.code in run.config.enabled(g) for g in GROUPS], dtype=bool)
    enabled = on[ctx.group]
    limit_us = (ctx.param("missing_days") * DAY_US).astype(np.int64)
    since = np.where(ctx.last_ts >= 0, run.end_us - ctx.last_ts, run.end_us - run.load_from_us)
    missing = ctx.in_service & enabled & (since >= limit_us) & (limit_us > 0)
    rule = run.config.rule(R.MISSING_READS.code)
    for i in np.flatnonzero(missing).tolist():
        days = since[i] / DAY_US
        last = "none in the period" if ctx.last_ts[i] < 0 else from_us(int(ctx.last_ts[i])).isoformat(timespec="minutes")
        detail = {"days_without_reading": round(days, 1), "last_reading": last}
        if rule.alert:
            res.events.append(AlertEvent(rule.code, rule.severity, int(ctx.meter_id[i]), run.end,
                                         f"{rule.description}: {days:.1f} days without a reading up to the end of "
                                         f"{run.period} (last: {last})", detail, 1, period=run.period))
    res.firing[rule.code] = ctx.meter_id[missing].tolist()
    res.counts["missing"] = int(missing.sum())
    return res


@meter_check("estimation")
def _estimation(ctx: MeterContext) -> CheckResult:
    run = ctx.run
    res = CheckResult()
    if len(ctx) == 0:
        return res
    need = ctx.in_service & ~ctx.has_end_read
    before = ctx.param("period_end_before_days")
    after = ctx.param("period_end_after_days")
    cands = [E.Candidate(int(ctx.meter_id[i]), int(ctx.quantity[i]), int(ctx.modulus[i]), int(ctx.multiplier[i]),
                         float(before[i]), float(after[i])) for i in np.flatnonzero(need).tolist()]
    out = E.estimate(ctx.conn, run.company_id, run.period, run.tz, cands, run.config, run.run_id)
    res.counts["estimated"] = len(out.estimated)
    for _m, _v, method in out.estimated:
        res.counts[f"method:{method}"] = res.counts.get(f"method:{method}", 0) + 1
    res.counts["estimation_failed"] = len(out.failed)
    res.counts["superseded"] = E.supersede(ctx.conn, run.company_id, run.end,
                                           meter_range=(int(ctx.meter_id[0]), int(ctx.meter_id[-1])),
                                           keep=ctx.meter_id[need].tolist())
    rule = run.config.rule(R.ESTIMATION_FAILED.code)
    for m, why in out.failed:
        if rule.alert:
            res.events.append(AlertEvent(rule.code, rule.severity, m, run.end,
                                         f"{rule.description} ({run.period}): {why}", {"reason": why}, 1,
                                         period=run.period))
    res.firing[rule.code] = [m for m, _ in out.failed]
    est_rule = run.config.rule(R.ESTIMATED.code)
    if est_rule.alert:
        for m, v, method in out.estimated:
            res.events.append(AlertEvent(est_rule.code, est_rule.severity, m, run.end,
                                         f"{est_rule.description} ({run.period}): {v} by {method}",
                                         {"value": v, "method": method}, 1, period=run.period))
    return res


class BatchRun:
    def __init__(self, dsn: str, company_id: int, company_code: str, tz: str, period: str, config: VeeConfig, *,
                 chunk_meters: int = 50_000, loaders: int = 2, actor: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.dsn = dsn
        self.company_id = company_id
        self.company_code = company_code
        self.tz = tz
        self.period = period
        self.config = config
        self.chunk_meters = chunk_meters
        self.loaders = loaders
        self.actor = actor
        self.progress = progress
        self.start, self.end = period_bounds(period, tz)
        self.start_us, self.end_us = to_us(self.start), to_us(self.end)
        groups_after = max(config.params(g, None, None).period_end_after_days for g in GROUPS)
        ov_after = max([o.period_end_after_days for o in config.overrides if o.period_end_after_days is not None],
                       default=0.0)
        self.load_from = self.start - dt.timedelta(days=config.history_days)
        self.load_to = self.end + dt.timedelta(days=max(groups_after, ov_after, 1.0))
        self.load_from_us = to_us(self.load_from)
        self.run_id = 0
        self.names = FlagNames()
        self.actions = config.actions()
        self._local = threading.local()
        self._conns: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------
    def _loader_conn(self) -> psycopg.Connection:
        c = getattr(self._local, "conn", None)
        if c is None or c.closed:
            c = psycopg.connect(self.dsn, autocommit=True, application_name="meterline-vee-loader", options=NO_JIT)
            self._local.conn = c
            with self._lock:
                self._conns.append(c)
        return c

    def _load(self, lo: int, hi: int) -> ChunkData:
        t = time.perf_counter()
        c = self._loader_conn()
        meters = S.load_meters(c, self.company_id, lo, hi, self.combos)
        blob = S.fetch_readings_blob(c, self.company_id, lo, hi, self.load_from, self.load_to)
        events = S.load_events(c, self.company_id, lo, hi)
        reviews = S.load_reviews(c, self.company_id, lo, hi, self.load_from, self.load_to)
        readings = S.parse_readings(blob)
        return ChunkData(lo, hi, meters, readings, events, reviews, time.perf_counter() - t)

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RunSummary:
        t0 = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True, application_name="meterline-vee", options=NO_JIT) as conn:
            self.run_id = conn.execute(
                """INSERT INTO vee_run (company_id, mode, period, starts_at, ends_at, created_by)
                   VALUES (%s, 'batch', %s, %s, %s, %s) RETURNING id""",
                [self.company_id, self.period, self.start, self.end, self.actor]).fetchone()[0]
            summary = RunSummary(self.run_id, self.company_code, self.period)
            self.summary = summary
            self.books: dict[int, BookFigure] = {}
            try:
                self._run(conn, summary)
                summary.seconds = time.perf_counter() - t0
                conn.execute("UPDATE vee_run SET status = 'completed', finished_at = now(), stats = %s WHERE id = %s",
                             [Jsonb(summary.stats()), self.run_id])
            except BaseException as exc:
                summary.seconds = time.perf_counter() - t0
                if not conn.closed and not conn.broken:
                    conn.execute("UPDATE vee_run SET status = 'failed', finished_at = now(), stats = %s WHERE id = %s",
                                 [Jsonb({**summary.stats(), "error": f"{type(exc).__name__}: {exc}"}), self.run_id])
                raise
            finally:
                for c in self._conns:
                    c.close()
        return summary

    def _run(self, conn: psycopg.Connection, summary: RunSummary) -> None:
        self.combos = S.combos(conn, self.company_id)
        self.params, self.enabled = self.config.param_table([(u or None, s or None) for u, s in self.combos])
        ids = S.meter_ids(conn, self.company_id)
        total = len(ids)
        bounds = [(int(ids[i]), int(ids[min(i + self.chunk_meters, total) - 1])) for i in range(0, total, self.chunk_meters)]
        done = 0
        if self.progress:
            self.progress(0, total)
        with ThreadPoolExecutor(max_workers=self.loaders, thread_name_prefix="vee-load") as pool:
            pending: list[Future[ChunkData]] = [pool.submit(self._load, lo, hi) for lo, hi in bounds[:self.loaders]]
            nxt = len(pending)
            while pending:
                data = pending.pop(0).result()
                if nxt < len(bounds):
                    pending.append(pool.submit(self._load, *bounds[nxt]))
                    nxt += 1
                self._chunk(conn, data, summary)
                done += len(data.meters)
                if self.progress:
                    self.progress(done, total)
        self._books(conn, summary)
        self._trees(conn, summary)

    # -- one chunk -------------------------------------------------------------------------------
    def _failure(self, conn: psycopg.Connection, meter_id: int | None, stage: str, exc: BaseException | str) -> None:
        log.warning("VEE run %s: %s failed for meter %s: %s", self.run_id, stage, meter_id, exc)
        S.record_failure(conn, self.run_id, self.company_id, meter_id, stage, exc)
        self.summary.failures += 1

    def _isolate(self, conn: psycopg.Connection, stage: str, fn: Callable[[np.ndarray], Any], slots: np.ndarray,
                 meter_ids: np.ndarray) -> list[Any]:
        """Run ``fn`` on the slots; when it raises, halve until the failing meters are found."""
        try:
            with conn.transaction():
                return [fn(slots)]
        except psycopg.OperationalError:
            raise
        except Exception as exc:  # a rule failing on some meters' data: narrow it down, record, go on
            if len(slots) <= 1:
                self._failure(conn, int(meter_ids[slots[0]]) if len(slots) else None, stage, exc)
                return []
            mid = len(slots) // 2
            return (self._isolate(conn, stage, fn, slots[:mid], meter_ids)
                    + self._isolate(conn, stage, fn, slots[mid:], meter_ids))

    def _failing(self, conn: psycopg.Connection, stage: str, fn: Callable[[np.ndarray], Any], slots: np.ndarray,
                 meter_ids: np.ndarray) -> list[int]:
        """The slots ``fn`` fails on (halving), each recorded as a failure."""
        try:
            fn(slots)
            return []
        except Exception as exc:
            if len(slots) == 1:
                self._failure(conn, int(meter_ids[slots[0]]), stage, exc)
                return [int(slots[0])]
            mid = len(slots) // 2
            return (self._failing(conn, stage, fn, slots[:mid], meter_ids)
                    + self._failing(conn, stage, fn, slots[mid:], meter_ids))

    def _chunk(self, conn: psycopg.Connection, data: ChunkData, summary: RunSummary) -> None:
        m, r = data.meters, data.readings
        n_m = len(m)
        summary.meters += n_m
        if n_m == 0:
            return
        slot_of_row = _slots(m.id, r.meter)
        known = (m.id[slot_of_row] == r.meter) & (r.quantity == m.quantity[slot_of_row])
        bad = np.zeros(n_m, dtype=bool)
        for mid, (_ts, fin, _ini) in data.events.items():
            if (fin < 0).any():
                j = int(np.searchsorted(m.id, mid))
                if j < n_m and m.id[j] == mid:
                    bad[j] = True
                    self._failure(conn, mid, R.METER_REPLACED.code,
                                  "install history has a newer device while the previous one has no removal / "
                                  "final register; its readings were not validated")
        results: dict[str, Any] = {}

        def evaluate(slots: np.ndarray) -> None:
            use = np.zeros(n_m, dtype=bool)
            use[slots] = True
            use &= ~bad
            keep = known & use[slot_of_row]
            if keep.all():
                rd, slot = r, slot_of_row
            else:
                idx = np.flatnonzero(keep)
                rd, slot = r.take(idx), slot_of_row[idx]
            state = K.KernelState(0, self.config.history_days)
            state.add(n_m)
            state.modulus[:n_m] = m.modulus
            state.multiplier[:n_m] = m.multiplier
            state.active[:n_m] = m.active
            with_events = [(int(np.searchsorted(m.id, mid)), ev) for mid, ev in data.events.items()]
            with_events = [(j, ev) for j, ev in with_events if j < n_m and use[j]]
            if with_events:
                state.set_events(np.array([j for j, _ in with_events], dtype=np.int64), [ev for _, ev in with_events])
            emit = (rd.ts >= self.start_us) & (rd.ts < self.end_us)
            review, override = apply_reviews(rd.meter, rd.ts, rd.quantity, data.reviews)
            rows = kernel_rows(rd, slot, m.combo, self.tz, emit, review, override)
            out, rev = K.run(state, rows, self.params, self.enabled, self.actions)
            results.update(rd=rd, slot=slot, out=out, rev=rev, emit=emit, use=use)

        everyone = np.arange(n_m)
        try:
            evaluate(everyone)
        except Exception:  # some meter's data breaks the kernel: find it (them), record, go on without
            failing = self._failing(conn, "kernel", evaluate, everyone, m.id)
            bad[failing] = True
            if bad.all():
                return
            evaluate(np.flatnonzero(~bad))
        rd, slot, out, rev, emit = results["rd"], results["slot"], results["out"], results["rev"], results["emit"]
        flags = out["flags"]
        fe = flags[emit]
        summary.readings += int(emit.sum())
        summary.flagged += int((fe != 0).sum())
        act = out["action"][emit]
        summary.held += int((act == 2).sum())
        summary.rejected += int((act == 3).sum())
        nz = fe[fe != 0]
        for rule in R.READING_RULES:
            c = int(((nz >> rule.bit) & 1).sum())
            if c:
                summary.by_rule[rule.code] = summary.by_rule.get(rule.code, 0) + c
        # revisions of reads held pending before the period
        early = rev["ts"] < self.start_us
        rev_rows = S.ValidationRows.empty()
        rev_events: list[AlertEvent] = []
        for k in np.flatnonzero(early).tolist():
            mid = int(m.id[rev["slot"][k]])
            rev_rows.meter.append(mid)
            rev_rows.ts.append(from_us(int(rev["ts"][k])))
            rev_rows.quantity.append(int(m.quantity[rev["slot"][k]]))
            rev_rows.flags.append(self.names(int(rev["flags"][k])))
            rev_rows.state.append(R.STATE_OF_ACTION[int(rev["action"][k])])
            rev_rows.consumption.append(None)
            rev_rows.detail.append({"revised_by_run": self.run_id})
        summary.revised += len(rev_rows)
        if len(rev_rows):
            rule = self.config.rule(R.ISOLATED_OUTLIER.code)
            if rule.alert:
                for mid, ts in zip(rev_rows.meter, rev_rows.ts):
                    rev_events.append(AlertEvent(rule.code, rule.severity, mid, ts,
                                                 _outlier_message(rule, ts, self.tz), {}, 1, period=self.period))
        vrows = verdicts(rd, out, emit, self.names)
        ev_mask = emit & (flags != 0)
        ev_idx = np.flatnonzero(ev_mask)
        events = alert_events(self.config, rd.meter[ev_idx], rd.ts[ev_idx], rd.value[ev_idx], flags[ev_idx],
                              out["consumption"][ev_idx], out["kind"][ev_idx], out["median"][ev_idx], out["x"][ev_idx],
                              period=self.period, tz=self.tz) + rev_events
        # per-meter summary for the meter checks
        acc = out["accepted"]
        pset_m = m.combo * len(GROUPS) + m.group
        before_us = (self.params[pset_m, P_INDEX["period_end_before_days"]] * DAY_US).astype(np.int64)
        after_us = (self.params[pset_m, P_INDEX["period_end_after_days"]] * DAY_US).astype(np.int64)
        in_win = acc & (rd.ts >= self.end_us - before_us[slot]) & (rd.ts <= self.end_us + after_us[slot])
        has_end = np.zeros(n_m, dtype=bool)
        end_read_ts = np.full(n_m, -1, dtype=np.int64)
        if in_win.any():
            wi = np.flatnonzero(in_win)
            has_end[slot[wi]] = True
            dist = np.abs(rd.ts[wi] - self.end_us)
            order = np.lexsort((dist, slot[wi]))
            ws = slot[wi][order]
            firsts = np.r_[True, ws[1:] != ws[:-1]]
            end_read_ts[ws[firsts]] = rd.ts[wi][order][firsts]
        last_ts = np.full(n_m, -1, dtype=np.int64)
        before_end = np.flatnonzero(rd.ts < self.end_us)
        if len(before_end):
            bs = slot[before_end]
            lasts = np.r_[bs[1:] != bs[:-1], True]
            last_ts[bs[lasts]] = rd.ts[before_end[lasts]]
        usable = ~bad & results["use"]
        ctx = MeterContext(self, conn, m.id, m.quantity, m.modulus, m.multiplier, m.in_service & usable, m.group,
                           pset_m, m.book, last_ts, has_end, end_read_ts)
        # book figures (reading rate): in-service meters of a book with a real period-end read
        for b, n_in, n_read in _book_counts(m.book, ctx.in_service, has_end):
            f = self.books.setdefault(b, BookFigure(b))
            f.meters += n_in
            f.read += n_read
        with conn.transaction():
            S.write_validation(conn, self.company_id, vrows, self.run_id,
                               clear=(data.lo, data.hi, self.start, self.end))
            if len(rev_rows):
                S.write_validation(conn, self.company_id, rev_rows, self.run_id)
                A.resolve_explained(conn, rev_rows.meter, rev_rows.ts,
                                    rules=[R.SPIKE.code, R.HIGH_LIMIT.code, R.REGISTER_RESET.code],
                                    note="the next read showed this read an isolated outlier")
            check_results: list[CheckResult] = []
            for name, check in METER_CHECKS.items():
                check_results += self._isolate(conn, name, lambda idx, check=check: check(ctx.subset(idx)),
                                               np.arange(n_m), m.id)
            for cr in check_results:
                events += cr.events
                summary.missing += cr.counts.get("missing", 0)
                summary.estimated += cr.counts.get("estimated", 0)
                summary.estimation_failed += cr.counts.get("estimation_failed", 0)
                summary.estimates_superseded += cr.counts.get("superseded", 0)
                for k, v in cr.counts.items():
                    if k.startswith("method:"):
                        summary.estimated_by_method[k[7:]] = summary.estimated_by_method.get(k[7:], 0) + v
            raised = A.raise_alerts(conn, events)
            summary.alerts_opened += raised.opened
            summary.alerts_updated += raised.updated
            for cr in check_results:
                for rule_code, firing in cr.firing.items():
                    summary.alerts_resolved += A.resolve_cleared(
                        conn, rule_code, meter_range=(data.lo, data.hi), keep=firing, company_id=self.company_id,
                        note=f"cleared by validation of {self.period}")

    # -- period-level checks -------------------------------------------------------------------
    def _books(self, conn: psycopg.Connection, summary: RunSummary) -> None:
        cfg = self.config.reading_rate
        rule = self.config.rule(R.READING_RATE.code)
        events, fine = [], []
        codes = dict(conn.execute("SELECT id, code FROM meter_book WHERE company_id = %s",
                                  [self.company_id]).fetchall())
        for b, f in self.books.items():
            if f.meters < cfg.min_meters:
                continue
            summary.books_judged += 1
            if f.rate * 100 < cfg.target_pct:
                summary.books_below_target += 1
                if rule.alert:
                    events.append(AlertEvent(
                        rule.code, rule.severity, None, self.end,
                        f"{rule.description}: book {codes.get(b, b)} {f.read}/{f.meters} meters read "
                        f"({f.rate * 100:.1f}% < {cfg.target_pct:g}%) in {self.period}",
                        {"meters": f.meters, "read": f.read, "rate_pct": round(f.rate * 100, 2),
                         "target_pct": cfg.target_pct}, 1, book_id=b, period=self.period))
            else:
                fine.append(b)
        with conn.transaction():
            raised = A.raise_alerts(conn, events)
            summary.alerts_opened += raised.opened
            summary.alerts_updated += raised.updated
            summary.alerts_resolved += A.resolve_cleared(conn, rule.code, book_ids=fine,
                                                         note=f"reading rate met in {self.period}")

    def _trees(self, conn: psycopg.Connection, summary: RunSummary) -> None:
        cfg = self.config.imbalance
        p = self.config.defaults
        try:
            trees = tree_consumption(conn, self.company_id, self.start, self.end,
                                     before_days=p.period_end_before_days, after_days=p.period_end_after_days,
                                     reverse_max=p.reverse_max, rollover_window=p.rollover_window)
        except ValueError as exc:
            self._failure(conn, None, "imbalance", exc)
            return
        if not trees.use:
            return
        none = np.iinfo(np.int64).min
        use = {k: none if v is None else v for k, v in trees.use.items()}
        children = trees.children
        imb_rule = self.config.rule(R.IMBALANCE.code)
        sub_rule = self.config.rule(R.SUBS_EXCEED_MASTER.code)
        events: list[AlertEvent] = []
        cleared_imb, cleared_sub = [], []
        for master, subs in sorted(children.items()):
            try:
                mc = use.get(master, none)
                sc = [use.get(s, none) for s in subs]
                if mc == none or any(c == none for c in sc):
                    summary.trees_incomplete += 1
                    continue
                if mc < cfg.min_master_consumption:
                    continue
                summary.trees_judged += 1
                total = sum(sc)
                nrw = (mc - total) / mc * 100
                detail = {"master_consumption": mc, "subs_consumption": total, "subs": len(subs),
                          "nrw_pct": round(nrw, 2), "period": self.period}
                if total > mc * (1 + cfg.subs_tolerance_pct / 100):
                    summary.trees_alerted += 1
                    events.append(AlertEvent(sub_rule.code, sub_rule.severity, master, self.end,
                                             f"{sub_rule.description}: {len(subs)} sub-meters {total} vs master {mc} "
                                             f"in {self.period} ({-nrw:.1f}% over)", detail, 1, period=self.period))
                    cleared_imb.append(master)
                elif nrw > cfg.nrw_threshold_pct:
                    summary.trees_alerted += 1
                    events.append(AlertEvent(imb_rule.code, imb_rule.severity, master, self.end,
                                             f"{imb_rule.description}: {nrw:.1f}% non-revenue water in {self.period} "
                                             f"(master {mc}, {len(subs)} sub-meters {total})", detail, 1,
                                             period=self.period))
                    cleared_sub.append(master)
                else:
                    cleared_imb.append(master)
                    cleared_sub.append(master)
            except Exception as exc:  # one tree's bad data must not stop the others
                self._failure(conn, master, "imbalance", exc)
        with conn.transaction():
            raised = A.raise_alerts(conn, [e for e in events if self.config.rule(e.rule).alert])
            summary.alerts_opened += raised.opened
            summary.alerts_updated += raised.updated
            summary.alerts_resolved += A.resolve_cleared(conn, imb_rule.code, meter_ids=cleared_imb,
                                                         note=f"balanced in {self.period}")
            summary.alerts_resolved += A.resolve_cleared(conn, sub_rule.code, meter_ids=cleared_sub,
                                                         note=f"balanced in {self.period}")


def _outlier_message(rule: R.Rule, ts: dt.datetime, tz: str = "UTC") -> str:
    local = ts.astimezone(ZoneInfo(tz))
    return f"{rule.description}; reading of {local.isoformat(timespec='minutes')} (decided by the next read)"


def _slots(ids: np.ndarray, meter: np.ndarray) -> np.ndarray:
    """Index into the sorted ``ids`` of each row's meter (rows sorted by meter: one search per run)."""
    if len(meter) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, meter[1:] != meter[:-1]])
    found = np.minimum(np.searchsorted(ids, meter[starts]), len(ids) - 1)
    return np.repeat(found, np.diff(np.r_[starts, len(meter)]))


def _book_counts(book: np.ndarray, in_service: np.ndarray, has_end: np.ndarray) -> list[tuple[int, int, int]]:
    sel = (book >= 0) & in_service
    if not sel.any():
        return []
    books, inv = np.unique(book[sel], return_inverse=True)
    n = np.bincount(inv)
    read = np.bincount(inv, weights=has_end[sel].astype(np.float64)).astype(np.int64)
    return list(zip(books.tolist(), n.tolist(), read.tolist()))


def run_period(dsn: str, company_id: int, company_code: str, tz: str, period: str, config: VeeConfig, *,
               chunk_meters: int = 50_000, loaders: int = 2, actor: str | None = None,
               progress: Callable[[int, int], None] | None = None) -> RunSummary:
    """Validate a company's readings of ``period`` (``YYYY-MM``, cut in ``tz``); see the module doc."""
    return BatchRun(dsn, company_id, company_code, tz, period, config, chunk_meters=chunk_meters, loaders=loaders,
                    actor=actor, progress=progress).run()


__all__ = ["run_period", "RunSummary", "METER_CHECKS", "meter_check", "MeterContext", "CheckResult"]
