"""Validation in the ingest path: the same rules, run on each committed batch of readings.

The ingest service hands every batch the writer committed to an :class:`IngestValidator`,
preferably as the writer's own columns (meter ids already resolved, nothing converted twice)::

    validator = IngestValidator(dsn, config).start()
    writer = BatchingWriter(dsn, settings, on_commit=validator.on_commit)
    ...
    writer.close(); validator.close()            # close drains what is queued

or, for a writer it does not construct, per submission (the readings are converted again)::

    validator.after_commit(writer.submit(readings), readings)   # validated once committed

Nothing here blocks the writer: ``submit`` only queues (a batch beyond ``hook_queue_max``
waiting readings is left to the batch run, counted and logged), and one background thread
validates, on its own connection, merging queued batches.

Each meter's kernel state (accepted read, pending read, rolling median, stuck and night-flow
counters) stays in memory between batches, so a batch costs the kernel plus a few small
writes. A meter seen for the first time, or one whose new reads are not after the reads
already validated (a late handheld file, a replay), is **replayed**: its reads from
``history_days`` before the earliest new one (and the few reads before those, so a meter read
monthly is judged against its previous reads) are loaded from the database and evaluated again,
so out-of-order delivery reaches the same verdicts as the batch run.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import psycopg

from meterline.ingest import columns
from meterline.ingest.directory import MeterDirectory
from meterline.ingest.model import Reading
from meterline.ingest.vee import alerts as A
from meterline.ingest.vee import estimate as E
from meterline.ingest.vee import kernel as K
from meterline.ingest.vee import rules as R
from meterline.ingest.vee import store as S
from meterline.ingest.vee.config import GROUPS, VeeConfig
from meterline.ingest.vee.engine import AlertEvent, FlagNames, alert_events, apply_reviews, kernel_rows, verdicts
from meterline.ingest.vee.localtime import DAY_US, from_us

log = logging.getLogger(__name__)

UTC = dt.timezone.utc


@dataclass(slots=True)
class HookStats:
    batches: int = 0
    readings: int = 0
    validated: int = 0
    flagged: int = 0
    replayed_meters: int = 0
    skipped_batches: int = 0
    skipped_readings: int = 0
    failures: int = 0
    alerts_opened: int = 0
    alerts_updated: int = 0
    seconds: float = 0.0


#: alerts a read raised while pending that its isolated-outlier verdict explains
EXPLAINED_RULES = [R.SPIKE.code, R.HIGH_LIMIT.code, R.REGISTER_RESET.code]

_FACTS_SQL = """
SELECT m.id, m.company_id, m.quantity, m.register_modulus, m.multiplier,
       (m.status = 'active' AND coalesce(a.status, '') = 'active') AS occupied,
       coalesce(a.use_type, ''), coalesce(m.size, ''), c.timezone
FROM meter m LEFT JOIN account a ON a.id = m.account_id JOIN company c ON c.id = m.company_id
WHERE m.id = ANY(%s)"""



class IngestValidator:
    """Validates committed batches in a background thread (see the module doc)."""

    def __init__(self, dsn: str, config: VeeConfig, *, directory: MeterDirectory | None = None,
                 queue_max: int = 1_000_000, batch_max: int = 100_000, name: str = "vee-ingest") -> None:
        self.dsn = dsn
        self.config = config
        self.directory = directory or MeterDirectory()
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.name = name
        self.stats = HookStats()
        self.state = K.KernelState(1024, config.history_days)
        self.slot_of: dict[int, int] = {}
        self.meter_of_slot: list[int] = []
        self.company_of_slot: list[int] = []
        self.tz_of_company: dict[int, str] = {}
        self.quantity_of_slot = np.zeros(0, dtype=np.int64)
        self.combos: dict[tuple[str, str], int] = {}
        self.params = np.zeros((0, 0))
        self.enabled = np.zeros(0, dtype=np.int64)
        self.actions = config.actions()
        self.names = FlagNames()
        self.run_ids: dict[int, int] = {}
        self.bad_slots: set[int] = set()
        #: how long the list of meters with a standing estimate is trusted (estimates come from batch runs)
        self.estimates_ttl_s = 60.0
        self._estimates = np.zeros(0, dtype=np.int64)
        self._estimates_at: float | None = None
        self._index_size = -1
        self._index_ids = np.zeros(0, dtype=np.int64)
        self._index_slots = np.zeros(0, dtype=np.int64)
        self._queue: queue.Queue[Sequence[Reading] | _Cols | None] = queue.Queue()
        self._waiting = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "IngestValidator":
        K.warm_up()  # load the compiled kernel now, not on the first committed batch
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Validate what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        if self._conn is not None and not self._conn.closed:
            self._conn.close()

    def __enter__(self) -> "IngestValidator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything queued so far is validated; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    # -- feeding ---------------------------------------------------------------------------
    def submit(self, readings: Sequence[Reading]) -> bool:
        """Queue committed readings for validation; never blocks. False when the batch was left
        to the batch run because too much is waiting already."""
        n = len(readings)
        if n == 0:
            return True
        with self._cond:
            if self._waiting + n > self.queue_max:
                self.stats.skipped_batches += 1
                self.stats.skipped_readings += n
                log.warning("VEE hook: %d readings waiting; batch of %d left to the batch run", self._waiting, n)
                return False
            self._waiting += n
        self._queue.put(readings)
        return True

    def on_commit(self, prepared: Any) -> None:
        """The writer's ``on_commit`` callback: take a committed batch's columns (meter ids already
        resolved by the writer, so nothing is converted twice) — the cheapest way to feed the hook::

            writer = BatchingWriter(dsn, settings, on_commit=validator.on_commit)
        """
        meter, ts, value, received, _company, status, quantity, source = prepared.columns[:8]
        n = len(meter)
        if n == 0:
            return
        cols = _Cols(meter_id=meter, device=[None] * n, ts=ts, value=value, status=status.astype(np.int64),
                     source=source.astype(np.int64), quantity=quantity.astype(np.int64), received=received)
        with self._cond:
            if self._waiting + n > self.queue_max:
                self.stats.skipped_batches += 1
                self.stats.skipped_readings += n
                log.warning("VEE hook: %d readings waiting; batch of %d left to the batch run", self._waiting, n)
                return
            self._waiting += n
        self._queue.put(cols)

    def after_commit(self, future: "Future[Any]", readings: Sequence[Reading]) -> None:
        """Validate ``readings`` once the writer's ``future`` resolves without error."""
        def done(f: "Future[Any]") -> None:
            if not f.cancelled() and f.exception() is None:
                self.submit(readings)
        future.add_done_callback(done)

    # -- worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            n = len(item)
            while n < self.batch_max:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
                n += len(more)
            try:
                self._validate_retrying(_merge(batch))
            except Exception:  # never let the thread die with readings counted as waiting
                log.exception("VEE hook: batch of %d readings could not be validated", n)
                self.stats.failures += 1
            finally:
                with self._cond:
                    self._waiting -= n
                    self._cond.notify_all()

    def _validate_retrying(self, batch: Sequence[Reading] | _Cols) -> None:
        delay = 0.2
        while True:
            try:
                self.validate(batch)
                return
            except psycopg.OperationalError as exc:
                log.warning("VEE hook: database unreachable (%s); retrying in %.1fs", exc, delay)
                if self._conn is not None:
                    self._conn.close()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:  # some meter's data breaks a rule: narrow down, record, go on
                self._isolate(batch, exc)
                return

    def _isolate(self, batch: Sequence[Reading] | _Cols, exc: BaseException) -> None:
        """Validate the batch meter group by meter group (halving) to find the failing meters."""
        if isinstance(batch, _Cols):
            keys = [(int(m), "") for m in np.unique(batch.meter_id).tolist()]

            def part(sel: set) -> Sequence[Reading] | _Cols:
                return _take(batch, np.isin(batch.meter_id, [k[0] for k in sel]))
        else:
            def key(r: Reading) -> tuple[int, str]:
                return (r.meter_id if r.meter_id is not None else -1, r.device or "")

            keys = sorted({key(r) for r in batch})

            def part(sel: set) -> Sequence[Reading] | _Cols:
                return [r for r in batch if key(r) in sel]
        known = [k[0] for k in keys if k[0] >= 0]
        self.forget(known)  # their in-memory state may be half-updated: replay from the database
        if len(keys) <= 1:
            meter_id = keys[0][0] if keys and keys[0][0] >= 0 else None
            log.warning("VEE hook: validation failed for meter %s: %s", meter_id or keys, exc)
            self.stats.failures += 1
            try:
                conn = self._connection()
                company = conn.execute("SELECT company_id FROM meter WHERE id = %s", [meter_id]).fetchone() \
                    if meter_id is not None else None
                S.record_failure(conn, self._run_id(conn, company[0]) if company else None,
                                 company[0] if company else None, meter_id, "ingest", exc,
                                 {"device": keys[0][1] if keys else None})
            except psycopg.Error:
                log.exception("VEE hook: could not record the failure")
            return
        half = set(keys[: len(keys) // 2])
        for sub in (part(half), part(set(keys) - half)):
            try:
                self.validate(sub)
            except psycopg.OperationalError:
                raise
            except Exception as sub_exc:
                self._isolate(sub, sub_exc)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, application_name="meterline-vee-hook")
        return self._conn

    # -- validating ----------------------------------------------------------------------------
    def validate(self, readings: Sequence[Reading] | _Cols) -> None:
        """Validate committed readings now, on this validator's connection (the worker calls this)."""
        t0 = time.perf_counter()
        conn = self._connection()
        self.stats.batches += 1
        now_us = columns.to_us(dt.datetime.now(UTC))
        cols = readings if isinstance(readings, _Cols) else _columns(readings, now_us)
        self.stats.readings += len(cols.meter_id)
        meter = cols.meter_id.copy()
        need_addr = {d for d, mid in zip(cols.device, meter.tolist()) if mid < 0 and d}
        if need_addr:
            _ids, by_addr = self.directory.lookup(conn, (), need_addr)
            for i in np.flatnonzero(meter < 0).tolist():
                info = by_addr.get(cols.device[i]) if cols.device[i] else None
                if info is not None:
                    meter[i] = info.meter_id
        ok = (meter >= 0) & (cols.ts != columns.BAD) & (cols.value != columns.BAD) & (cols.value >= 0)
        self._ensure_meters(conn, np.unique(meter[ok]))
        slot = self._slots_of(meter)
        ok &= slot >= 0
        if self.bad_slots:
            ok &= ~np.isin(slot, list(self.bad_slots))
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return
        slot, ts = slot[idx], cols.ts[idx]
        keep = cols.quantity[idx] == self.quantity_of_slot[slot]
        idx, slot, ts = idx[keep], slot[keep], ts[keep]
        order = np.lexsort((ts, slot))
        idx, slot, ts = idx[order], slot[order], ts[order]
        if len(idx) > 1:  # a reading delivered twice in the batch
            first = np.r_[True, (slot[1:] != slot[:-1]) | (ts[1:] != ts[:-1])]
            idx, slot, ts = idx[first], slot[first], ts[first]
        st = self.state.S
        seen = st[slot, K.S_HAS_LAST] == 1
        last = st[slot, K.S_LAST_TS]
        # the latest read again (a redelivery): already validated
        again = seen & (ts == last)
        idx, slot, ts, seen, last = idx[~again], slot[~again], ts[~again], seen[~again], last[~again]
        if len(idx) == 0:
            return
        starts = np.r_[True, slot[1:] != slot[:-1]]
        ends = np.r_[slot[1:] != slot[:-1], True]
        uniq_slots = slot[starts]
        first_ts = ts[starts]
        # replay up to the batch's last read of the meter, or what was validated already if later
        # (not further: reads committed since are on their way here and come incrementally)
        upto = np.where(seen[starts], np.maximum(ts[ends], last[starts]), ts[ends])
        cold = (st[uniq_slots, K.S_HAS_LAST] == 0) | (first_ts <= last[starts])
        cold_slots = uniq_slots[cold]
        self.stats.replayed_meters += len(cold_slots)
        inc = ~np.isin(slot, cold_slots)
        rd_inc = S.Readings(
            meter=meter[idx[inc]], ts=ts[inc], value=cols.value[idx[inc]], status=cols.status[idx[inc]].astype(np.int64),
            source=cols.source[idx[inc]].astype(np.int64), quantity=cols.quantity[idx[inc]].astype(np.int64),
            received=cols.received[idx[inc]])
        slot_inc = slot[inc]
        emit_inc = np.ones(len(slot_inc), dtype=bool)
        parts = [(rd_inc, slot_inc, emit_inc)]
        replay_keys: tuple[list[int], list[int], list[int]] = ([], [], [])
        if len(cold_slots):
            was_seen = st[cold_slots, K.S_HAS_LAST] == 1  # before the replay resets them
            rd_rep, slot_rep, emit_rep = self._replay(conn, cold_slots, first_ts[cold], upto[cold])
            parts.append((rd_rep, slot_rep, emit_rep))
            # verdicts given before exist only on reads of meters seen before (out of order)
            if was_seen.any():
                seen_slots = cold_slots[was_seen]
                e = np.flatnonzero(emit_rep & np.isin(slot_rep, seen_slots))
                replay_keys = (rd_rep.meter[e].tolist(), rd_rep.ts[e].tolist(), rd_rep.quantity[e].tolist())
        rd = S.Readings(*(np.concatenate([getattr(p[0], f) for p in parts]) for f in S.Readings.__slots__))  # type: ignore[attr-defined]
        slots = np.concatenate([p[1] for p in parts])
        emit = np.concatenate([p[2] for p in parts])
        order = np.lexsort((rd.ts, slots))
        rd, slots, emit = rd.take(order), slots[order], emit[order]
        self._evaluate(conn, rd, slots, emit, replay_keys)
        self.stats.validated += int(emit.sum())
        self.stats.seconds += time.perf_counter() - t0

    def _evaluate(self, conn: psycopg.Connection, rd: S.Readings, slots: np.ndarray, emit: np.ndarray,
                  replay_keys: tuple[list[int], list[dt.datetime], list[int]]) -> None:
        by_company: dict[int, np.ndarray] = {}
        comp = np.array(self.company_of_slot, dtype=np.int64)[slots]
        for c in np.unique(comp).tolist():
            by_company[c] = np.flatnonzero(comp == c)
        for company_id, rows_idx in by_company.items():
            part = rd.take(rows_idx)
            s_part, e_part = slots[rows_idx], emit[rows_idx]
            review, override = apply_reviews(part.meter, part.ts, part.quantity, self._reviews(conn, part, e_part))
            rows = kernel_rows(part, s_part, self.state.combo, self.tz_of_company[company_id], e_part, review, override)
            out, rev = K.run(self.state, rows, self.params, self.enabled, self.actions)
            self._write(conn, company_id, part, out, rev, e_part, replay_keys)

    def _reviews(self, conn: psycopg.Connection, rd: S.Readings, emit: np.ndarray) -> list[tuple[Any, ...]]:
        # reviews only exist on readings validated before: those of replayed meters
        if emit.all():
            return []
        rep = np.unique(rd.meter[~emit])
        return conn.execute(
            """SELECT meter_id, ts, quantity, review, corrected_value FROM reading_validation
               WHERE meter_id = ANY(%s) AND ts >= %s AND review IS NOT NULL""",
            [rep.tolist(), from_us(int(rd.ts.min()))]).fetchall()

    def _write(self, conn: psycopg.Connection, company_id: int, rd: S.Readings, out: dict[str, np.ndarray],
               rev: dict[str, np.ndarray], emit: np.ndarray, replay_keys) -> None:  # noqa: C901
        flags = out["flags"]
        vrows = verdicts(rd, out, emit, self.names)
        self.stats.flagged += len(vrows)
        ev_idx = np.flatnonzero(emit & (flags != 0))
        events = alert_events(self.config, rd.meter[ev_idx], rd.ts[ev_idx], rd.value[ev_idx], flags[ev_idx],
                              out["consumption"][ev_idx], out["kind"][ev_idx], out["median"][ev_idx], out["x"][ev_idx],
                              tz=self.tz_of_company[company_id])
        rule = self.config.rule(R.ISOLATED_OUTLIER.code)
        explained: tuple[list[int], list[dt.datetime]] = ([], [])
        for k in range(len(rev["slot"])):
            mid = self.meter_of_slot[int(rev["slot"][k])]
            ts = from_us(int(rev["ts"][k]))
            vrows.meter.append(mid)
            vrows.ts.append(ts)
            vrows.quantity.append(int(self.quantity_of_slot[int(rev["slot"][k])]))
            vrows.flags.append(self.names(int(rev["flags"][k])))
            vrows.state.append(R.STATE_OF_ACTION[int(rev["action"][k])])
            vrows.consumption.append(None)
            vrows.detail.append({"decided_by_next_read": True})
            if rev["flags"][k] >> rule.bit & 1:
                explained[0].append(mid)
                explained[1].append(ts)
            if rule.alert and rev["flags"][k] >> rule.bit & 1:
                events.append(AlertEvent(rule.code, rule.severity, mid, ts,
                                         f"{rule.description}; reading of {ts.isoformat(timespec='minutes')} "
                                         "(decided by the next read)", {}, 1))
        acc = np.flatnonzero(emit & out["accepted"] & (rd.source != 11))
        if len(acc):  # only meters with an estimate still standing can have one replaced
            acc = acc[np.isin(rd.meter[acc], self._open_estimates(conn))]
        run_id = self._run_id(conn, company_id)
        keys = replay_keys if replay_keys[0] else None
        with conn.transaction():
            if len(vrows) or keys:
                S.write_validation(conn, company_id, vrows, run_id, clear_keys=keys)
            if explained[0]:
                A.resolve_explained(conn, *explained, rules=EXPLAINED_RULES,
                                    note="the next read showed this read an isolated outlier")
            if events:
                raised = A.raise_alerts(conn, events)
                self.stats.alerts_opened += raised.opened
                self.stats.alerts_updated += raised.updated
            if len(acc):
                E.supersede_for_reads(conn, rd.meter[acc].tolist(), [from_us(int(t)) for t in rd.ts[acc]])

    def _slots_of(self, meter: np.ndarray) -> np.ndarray:
        """Slot of each meter id (-1: unknown), vectorized over a sorted index of known meters."""
        if self._index_size != len(self.slot_of):
            ids = np.fromiter(self.slot_of.keys(), np.int64, len(self.slot_of))
            slots = np.fromiter(self.slot_of.values(), np.int64, len(self.slot_of))
            order = np.argsort(ids)
            self._index_ids, self._index_slots = ids[order], slots[order]
            self._index_size = len(self.slot_of)
        if len(self._index_ids) == 0:
            return np.full(len(meter), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._index_ids, meter), len(self._index_ids) - 1)
        return np.where(self._index_ids[pos] == meter, self._index_slots[pos], -1)

    def _open_estimates(self, conn: psycopg.Connection) -> np.ndarray:
        """Meters with an estimate not yet replaced (refreshed every ``estimates_ttl_s``)."""
        now = time.monotonic()
        if self._estimates_at is None or now - self._estimates_at > self.estimates_ttl_s:
            ids = [m for (m,) in conn.execute(
                "SELECT DISTINCT meter_id FROM reading_estimate WHERE superseded_at IS NULL").fetchall()]
            self._estimates = np.array(sorted(ids), dtype=np.int64)
            self._estimates_at = now
        return self._estimates

    def _run_id(self, conn: psycopg.Connection, company_id: int) -> int:
        rid = self.run_ids.get(company_id)
        if rid is None:
            rid = conn.execute("INSERT INTO vee_run (company_id, mode, created_by) VALUES (%s, 'ingest', %s) RETURNING id",
                               [company_id, self.name]).fetchone()[0]
            self.run_ids[company_id] = rid
        return rid

    # -- meters --------------------------------------------------------------------------------
    def _ensure_meters(self, conn: psycopg.Connection, meter_ids: np.ndarray) -> None:
        new = [m for m in meter_ids.tolist() if m not in self.slot_of]
        if not new:
            return
        rows = conn.execute(_FACTS_SQL, [new]).fetchall()
        if not rows:
            return
        slots = self.state.add(len(rows))
        grew = False
        qty = np.zeros(len(rows), dtype=np.int64)
        for k, (mid, cid, q, modulus, mult, occupied, use_type, size, tz) in enumerate(rows):
            s = int(slots[k])
            self.slot_of[mid] = s
            self.meter_of_slot.append(mid)
            self.company_of_slot.append(cid)
            self.tz_of_company[cid] = tz
            self.state.modulus[s] = modulus
            self.state.multiplier[s] = mult
            self.state.active[s] = occupied
            key = (use_type, size)
            if key not in self.combos:
                self.combos[key] = len(self.combos)
                grew = True
            self.state.combo[s] = self.combos[key]
            qty[k] = q
        self.quantity_of_slot = np.concatenate([self.quantity_of_slot, qty])
        if grew or not len(self.params):
            ordered = sorted(self.combos.items(), key=lambda kv: kv[1])
            self.params, self.enabled = self.config.param_table([(u or None, s or None) for (u, s), _ in ordered])
        events = {}
        for cid in {r[1] for r in rows}:
            lo, hi = min(r[0] for r in rows if r[1] == cid), max(r[0] for r in rows if r[1] == cid)
            for mid, ev in S.load_events(conn, cid, lo, hi).items():
                if mid not in self.slot_of or self.slot_of[mid] < slots[0]:
                    continue
                if (ev[1] < 0).any():  # the install history cannot say what the register did
                    self.bad_slots.add(self.slot_of[mid])
                    self.stats.failures += 1
                    S.record_failure(conn, self._run_id(conn, cid), cid, mid, R.METER_REPLACED.code,
                                     "install history has a newer device while the previous one has no removal / "
                                     "final register; its readings are not validated")
                    continue
                events[mid] = ev
        if events:
            self.state.set_events(np.array([self.slot_of[m] for m in events], dtype=np.int64), list(events.values()))

    def _replay(self, conn: psycopg.Connection, slots: np.ndarray, first_ts: np.ndarray,
                upto: np.ndarray) -> tuple[S.Readings, np.ndarray, np.ndarray]:
        """Reload the reads of these meters from ``history_days`` before their earliest new read
        up to ``upto``."""
        self.state.reset(slots)
        since = first_ts - self.config.history_days * DAY_US
        meters = [self.meter_of_slot[int(s)] for s in slots]
        rd = S.fetch_meter_windows(conn, meters, self.quantity_of_slot[slots].tolist(), since.tolist(), upto.tolist())
        if len(rd) == 0:
            return rd, np.zeros(0, np.int64), np.zeros(0, bool)
        starts = np.r_[True, rd.meter[1:] != rd.meter[:-1]]
        run_meters = rd.meter[starts]
        run_slots = np.array([self.slot_of[m] for m in run_meters.tolist()], dtype=np.int64)
        lengths = np.diff(np.r_[np.flatnonzero(starts), len(rd)])
        slot = np.repeat(run_slots, lengths)
        first_of_slot = np.zeros(self.state.size, dtype=np.int64)
        first_of_slot[slots] = first_ts
        emit = rd.ts >= first_of_slot[slot]
        return rd, slot, emit

    def forget(self, meter_ids: Sequence[int] | None = None) -> None:
        """Make meters cold (their next batch replays from the database), e.g. after a registry
        change or a review; ``None``: all meters."""
        if meter_ids is None:
            self.state.reset(np.arange(self.state.size))
            return
        idx = [self.slot_of[m] for m in meter_ids if m in self.slot_of]
        if idx:
            self.state.reset(np.array(idx, dtype=np.int64))


@dataclass(slots=True)
class _Cols:
    meter_id: np.ndarray
    device: list[str | None]
    ts: np.ndarray
    value: np.ndarray
    status: np.ndarray
    source: np.ndarray
    quantity: np.ndarray
    received: np.ndarray

    def __len__(self) -> int:
        return len(self.meter_id)


def _columns(readings: Sequence[Reading], now_us: int) -> _Cols:
    """The columns validation needs, from well-formed readings in one pass per field; anything
    odd (naive times, non-integer values: the writer refused those) goes the writer's careful way."""
    rs = readings if isinstance(readings, list) else list(readings)
    n = len(rs)
    try:
        if any(type(r.value) is not int or r.ts.tzinfo is None or (r.received_at is not None
                                                                   and r.received_at.tzinfo is None) for r in rs):
            raise TypeError("odd reading")
        ts = np.rint(np.fromiter((r.ts.timestamp() for r in rs), np.float64, n) * 1e6).astype(np.int64)
        rec = np.fromiter((np.nan if r.received_at is None else r.received_at.timestamp() for r in rs), np.float64, n)
        received = np.where(np.isnan(rec), now_us, np.rint(rec * 1e6)).astype(np.int64)
        meter = np.fromiter((-1 if r.meter_id is None else r.meter_id for r in rs), np.int64, n)
        return _Cols(meter_id=meter,
                     device=[r.device if r.meter_id is None else None for r in rs] if (meter < 0).any() else [None] * n,
                     ts=ts, value=np.fromiter((r.value for r in rs), np.int64, n),
                     status=np.fromiter((r.status for r in rs), np.int64, n),
                     source=np.fromiter((r.source for r in rs), np.int64, n),
                     quantity=np.fromiter((r.quantity for r in rs), np.int64, n), received=received)
    except (TypeError, ValueError, AttributeError, OverflowError):
        c = columns.from_readings([rs], now_us)
        return _Cols(c.meter_id, c.device, c.ts, c.value, c.status.astype(np.int64), c.source.astype(np.int64),
                     c.quantity.astype(np.int64), c.received)


def _take(c: _Cols, mask: np.ndarray) -> _Cols:
    idx = np.flatnonzero(mask)
    return _Cols(c.meter_id[idx], [c.device[i] for i in idx.tolist()], c.ts[idx], c.value[idx], c.status[idx],
                 c.source[idx], c.quantity[idx], c.received[idx])


def _merge(items: list[Any]) -> Sequence[Reading] | _Cols:
    """One batch from queued items: reading lists and committed columns."""
    if all(not isinstance(i, _Cols) for i in items):
        return [r for b in items for r in b]
    now_us = columns.to_us(dt.datetime.now(UTC))
    parts = [i if isinstance(i, _Cols) else _columns(i, now_us) for i in items]
    if len(parts) == 1:
        return parts[0]
    return _Cols(*(np.concatenate([getattr(p, f) for p in parts]) if f != "device"
                   else [d for p in parts for d in p.device] for f in _Cols.__slots__))  # type: ignore[attr-defined]


def validate_committed(dsn: str, config: VeeConfig, readings: Sequence[Reading]) -> HookStats:
    """Validate committed readings synchronously with a throw-away validator (tests, small tools)."""
    v = IngestValidator(dsn, config)
    try:
        v.validate(readings)
    finally:
        v.close()
    return v.stats


__all__ = ["IngestValidator", "HookStats", "validate_committed", "GROUPS"]
