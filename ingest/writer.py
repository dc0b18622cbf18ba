"""The reading writer: every source's readings go into PostgreSQL through here.

One batch is one transaction:

1. readings are checked for shape (naive timestamp, negative register, timestamp beyond the
   future tolerance or before 2000, no meter named) and duplicates inside the batch dropped;
2. each reading is placed on its meter, by id or by address (``meter.comm_address``), through
   a :class:`~meterline.ingest.directory.MeterDirectory` cache of the registry; unknown meters
   and values beyond the register's digits are refused;
3. the rest are COPYed (binary) into a per-connection temporary staging table and inserted into
   ``reading`` with ``ON CONFLICT DO NOTHING`` on the reading key ``(meter_id, ts, quantity)``;
   refused readings go to ``dead_letter`` with their reason, in the same transaction;
4. commit. Only then are the submitters told (their ``Future`` resolves), so a source can
   acknowledge its sender knowing the reading is durable.

``write_readings(conn, readings)`` does this synchronously on one connection.
``BatchingWriter`` runs it on a few connections in background threads, merging submissions
from many senders into large batches; ``submit()`` returns a future per submission.
A batch that the database refuses is retried submission by submission and then reading by
reading, so one bad row is a dead letter and never takes its neighbours down with it; lost
connections are retried with backoff and nothing submitted is dropped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from meterline.config.settings import WriterSettings
from meterline.ingest import columns
from meterline.ingest.directory import MeterDirectory
from meterline.ingest.model import DeadLetter, Reading
from meterline.store import partitions

log = logging.getLogger(__name__)

UTC = dt.timezone.utc

STAGE_DDL = """CREATE TEMP TABLE IF NOT EXISTS reading_stage (
    meter_id    bigint      NOT NULL,
    ts          timestamptz NOT NULL,
    value       bigint      NOT NULL,
    received_at timestamptz NOT NULL,
    company_id  integer     NOT NULL,
    status      integer     NOT NULL,
    quantity    smallint    NOT NULL,
    source      smallint    NOT NULL,
    sub         integer     NOT NULL,
    source_ref  text
) ON COMMIT DELETE ROWS"""

DIRECT_COPY = (
    "COPY reading (meter_id, ts, value, received_at, company_id, status, quantity, source, source_ref) "
    "FROM STDIN (FORMAT BINARY)"
)
STAGE_COPY = (
    "COPY reading_stage (meter_id, ts, value, received_at, company_id, status, quantity, source, sub, source_ref) "
    "FROM STDIN (FORMAT BINARY)"
)

_INSERT = (
    "INSERT INTO reading (meter_id, ts, value, received_at, company_id, status, quantity, source, source_ref) "
    "SELECT meter_id, ts, value, received_at, company_id, status, quantity, source, source_ref FROM reading_stage "
    "ON CONFLICT DO NOTHING"
)
# several submissions in one batch: join the inserted keys back to the staged rows to tell
# which submission's readings were new (keys are unique within a batch)
INSERT_COUNTED = (
    "WITH ins AS (" + _INSERT + " RETURNING meter_id, ts, quantity) "
    "SELECT st.sub, count(*) FROM ins JOIN reading_stage st USING (meter_id, ts, quantity) GROUP BY st.sub"
)

DEAD_INSERT = (
    "INSERT INTO dead_letter (company_id, received_at, source, reason, message, device, raw, detail) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


@dataclass(slots=True)
class WriteResult:
    """What became of one submission (or one synchronous write)."""

    submitted: int = 0
    written: int = 0  #: new readings committed
    duplicates: int = 0  #: already stored (or repeated within the batch): committed before, nothing new
    dead: int = 0  #: readings refused and stored as dead letters
    dead_letters: int = 0  #: dead letters the submitter handed in itself (bad frames, ...)
    reasons: dict[str, int] = field(default_factory=dict)  #: dead readings by reason code

    def add(self, other: "WriteResult") -> "WriteResult":
        self.submitted += other.submitted
        self.written += other.written
        self.duplicates += other.duplicates
        self.dead += other.dead
        self.dead_letters += other.dead_letters
        for k, v in other.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v
        return self


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Handed to the writer's observer after each committed batch (for metrics)."""

    submissions: int
    readings: int
    written: int
    duplicates: int
    dead: int
    dead_letters: int
    reasons: dict[str, int]
    seconds: float
    queue_depth: int


def _problem(r: Reading, latest: dt.datetime, tolerance_s: int) -> tuple[str, str]:
    """Why a reading that failed the fast checks is refused (slow path, bad readings only)."""
    ts, v = r.ts, r.value
    if not isinstance(ts, dt.datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        return "naive_timestamp", f"timestamp {ts!r} has no time zone"
    if type(v) is not int:
        return "bad_value", f"register value {v!r} is not an integer in base units"
    if v < 0:
        return "negative_register", f"register value {v} is negative"
    if ts > latest:
        return "future_timestamp", f"timestamp {ts.isoformat()} is more than {tolerance_s}s in the future"
    if ts < partitions.EARLIEST:
        return "past_timestamp", f"timestamp {ts.isoformat()} is before {partitions.EARLIEST.date()}"
    return "no_meter", "reading names no meter (neither meter_id nor device)"


@dataclass(slots=True)
class Prepared:
    """A batch ready to COPY: the checked rows plus what became of every submitted reading."""

    columns: tuple  # (meter, ts, value, received, company, status, quantity, source, sub, refs)
    rows: int
    subs: np.ndarray  # submission of each row
    months: set[partitions.Month]
    dead: list[DeadLetter]
    results: list[WriteResult]

    def copy_data(self, staging: bool) -> bytes:
        """Binary COPY data for the staging table (``staging``) or for ``reading`` directly."""
        meter, ts, value, received, company, status, quantity, source, sub, refs = self.columns
        return columns.encode_copy(meter, ts, value, received, company, status, quantity, source,
                                   sub if staging else None, refs)


def prepare(
    conn: psycopg.Connection,
    directory: MeterDirectory,
    batches: Sequence[Sequence[Reading]],
    now: dt.datetime,
    future_tolerance_s: int,
) -> Prepared:
    """Check, place and deduplicate readings (vectorized) and encode the good ones for COPY.

    A reading is refused when its timestamp is naive, beyond the future tolerance or before
    2000, its value is not a non-negative integer, it names no meter or an unknown one, or its
    value is beyond the meter's register. Repeats within the batch count as duplicates.
    """
    now_us = columns.to_us(now)
    cols = columns.from_readings(batches, now_us)
    n = len(cols)
    results = [WriteResult(submitted=len(b)) for b in batches]
    # place readings on meters: by id, or by address for those that name a device
    by_id_rows = cols.meter_id >= 0
    uniq_ids, inverse = np.unique(cols.meter_id[by_id_rows], return_inverse=True)
    addresses = {d for d, has_id in zip(cols.device, by_id_rows) if not has_id and d}
    known_ids, known_addr = directory.lookup(conn, uniq_ids.tolist(), addresses)
    meter = np.full(n, -1, dtype=np.int64)
    company = np.zeros(n, dtype=np.int32)
    modulus = np.zeros(n, dtype=np.int64)
    if len(uniq_ids):
        infos = [known_ids.get(i) for i in uniq_ids.tolist()]
        u_meter = np.array([-1 if x is None else x.meter_id for x in infos], dtype=np.int64)
        u_company = np.array([0 if x is None else x.company_id for x in infos], dtype=np.int32)
        u_modulus = np.array([0 if x is None else x.register_modulus for x in infos], dtype=np.int64)
        meter[by_id_rows] = u_meter[inverse]
        company[by_id_rows] = u_company[inverse]
        modulus[by_id_rows] = u_modulus[inverse]
    if addresses:
        for i in np.flatnonzero(~by_id_rows).tolist():
            info = known_addr.get(cols.device[i]) if cols.device[i] else None
            if info is not None:
                meter[i], company[i], modulus[i] = info.meter_id, info.company_id, info.register_modulus
    earliest = columns.to_us(partitions.EARLIEST)
    latest = now_us + future_tolerance_s * 1_000_000
    good = ((cols.ts >= earliest) & (cols.ts <= latest) & (cols.value >= 0)
            & (meter >= 0) & (cols.value < modulus))
    dead: list[DeadLetter] = []
    if not good.all():
        latest_dt = now + dt.timedelta(seconds=future_tolerance_s)
        for i in np.flatnonzero(~good).tolist():
            r = cols.readings[i]
            company_id = None
            if cols.ts[i] != columns.BAD and cols.value[i] != columns.BAD and earliest <= cols.ts[i] <= latest \
                    and cols.value[i] >= 0 and meter[i] >= 0:
                reason = "register_overflow"
                message = (f"register value {r.value} is beyond the register of meter {meter[i]} "
                           f"(it wraps at {modulus[i]})")
                company_id = int(company[i])
            else:
                reason, message = _problem(r, latest_dt, future_tolerance_s)
                if reason == "no_meter" and (r.meter_id is not None or r.device):
                    what = f"id {r.meter_id}" if r.meter_id is not None else f"address {r.device!r}"
                    reason, message = "unknown_meter", f"no meter with {what}"
            dl = DeadLetter.for_reading(r, reason, message)
            if company_id is not None:
                dl = dataclasses.replace(dl, company_id=company_id)
            dead.append(dl)
            res = results[cols.sub[i]]
            res.dead += 1
            res.reasons[reason] = res.reasons.get(reason, 0) + 1
    idx = np.flatnonzero(good)
    first = columns.first_occurrences(meter[idx], cols.ts[idx], cols.quantity[idx])
    if not first.all():
        for s, k in zip(*np.unique(cols.sub[idx[~first]], return_counts=True)):
            results[int(s)].duplicates += int(k)
        idx = idx[first]
    days = np.unique(cols.ts[idx] // 86_400_000_000)
    months = {(d.year, d.month) for d in (columns.EPOCH + dt.timedelta(days=int(x)) for x in days.tolist())}
    refs = [cols.source_ref[i] for i in idx.tolist()]
    cols_out = (meter[idx], cols.ts[idx], cols.value[idx], cols.received[idx], company[idx],
                cols.status[idx], cols.quantity[idx], cols.source[idx], cols.sub[idx], refs)
    return Prepared(cols_out, len(idx), cols.sub[idx], months, dead, results)


class _Connection:
    """One writer connection with its staging table and its view of existing partitions."""

    def __init__(self, dsn: str | None = None, conn: psycopg.Connection | None = None,
                 directory: MeterDirectory | None = None) -> None:
        self.dsn = dsn
        self.conn = conn
        self.owned = conn is None
        self.directory = directory or MeterDirectory()
        #: called with each committed batch's Prepared columns (see BatchingWriter's on_commit)
        self.on_commit: Callable[[Prepared], None] | None = None
        self.months: set[partitions.Month] = set()
        self.partitioned: bool | None = None
        self.staged = False
        self._careful = 0  # batches left to send the staging way after one met duplicates

    # Duplicates come in runs (a retransmitting gateway, a redelivered MQTT session): after a
    # batch met one, the next few go straight to staging + ON CONFLICT instead of trying COPY.
    CAREFUL_BATCHES = 8

    @property
    def optimistic(self) -> bool:
        return self._careful == 0

    def saw_duplicates(self, found: bool) -> None:
        self._careful = self.CAREFUL_BATCHES if found else max(0, self._careful - 1)

    def get(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.dsn, autocommit=True, application_name="meterline-writer")
            self.staged = False
            self.partitioned = None
        if not self.staged:
            self.conn.execute(STAGE_DDL)
            self.staged = True
        return self.conn

    def ensure_partitions(self, months: set[partitions.Month]) -> None:
        conn = self.get()
        if self.partitioned is None:
            self.partitioned = partitions.is_partitioned(conn)
            if self.partitioned:
                self.months = partitions.existing_months(conn)
        if self.partitioned and not months <= self.months:
            partitions.ensure_months(conn, months - self.months)
            self.months = partitions.existing_months(conn)

    def close(self) -> None:
        if self.owned and self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = None


def _insert_dead(cur: psycopg.Cursor, dead: Sequence[DeadLetter], now: dt.datetime) -> None:
    if dead:
        cur.executemany(
            DEAD_INSERT,
            [
                (d.company_id, d.received_at or now, d.source, d.reason, d.message, d.device, d.raw, Jsonb(d.detail))
                for d in dead
            ],
        )


def _write_once(
    wc: _Connection,
    batches: Sequence[Sequence[Reading]],
    extra_dead: Sequence[Sequence[DeadLetter]],
    future_tolerance_s: int,
) -> list[WriteResult]:
    """Write one batch in one transaction; return one result per submission."""
    now = dt.datetime.now(UTC)
    conn = wc.get()
    p = prepare(conn, wc.directory, batches, now, future_tolerance_s)
    results = p.results
    if p.months:
        wc.ensure_partitions(p.months)
    with conn.transaction():
        cur = conn.cursor()
        _insert_dead(cur, p.dead, now)
        _insert_dead(cur, [d for group in extra_dead for d in group], now)
        if p.rows:
            staged = np.bincount(p.subs, minlength=len(results))
            if wc.optimistic and _copy_direct(conn, p):
                for sub in np.flatnonzero(staged).tolist():
                    results[sub].written += int(staged[sub])
            else:
                with cur.copy(STAGE_COPY) as copy:
                    copy.write(p.copy_data(staging=True))
                subs = np.flatnonzero(staged)
                if len(subs) == 1:
                    cur.execute(_INSERT)
                    inserted = cur.rowcount
                    results[int(subs[0])].written += inserted
                else:
                    cur.execute(INSERT_COUNTED)
                    inserted = 0
                    for sub, n in cur.fetchall():
                        results[sub].written += n
                        inserted += n
                wc.saw_duplicates(inserted < p.rows)
            for sub in np.flatnonzero(staged).tolist():
                # staged and not inserted: already stored by an earlier delivery
                results[sub].duplicates += int(staged[sub]) - results[sub].written
    if wc.on_commit is not None and p.rows:
        try:
            wc.on_commit(p)
        except Exception:  # a consumer of committed batches must never break the writer
            log.exception("writer on_commit hook failed")
    for res, group in zip(results, extra_dead):
        res.dead_letters += len(group)
    return results


def _copy_direct(conn: psycopg.Connection, p: Prepared) -> bool:
    """COPY straight into ``reading`` (in a savepoint); False if some reading was already stored.

    Most batches hold only new readings, and a plain COPY into the table is much cheaper than
    staging + ``INSERT ... ON CONFLICT``. The primary key still refuses any duplicate: then the
    savepoint is rolled back and the batch goes the staging way.
    """
    try:
        with conn.transaction():
            with conn.cursor().copy(DIRECT_COPY) as copy:
                copy.write(p.copy_data(staging=False))
        return True
    except psycopg.errors.UniqueViolation:
        return False


def _write_robust(
    wc: _Connection,
    batches: Sequence[Sequence[Reading]],
    extra_dead: Sequence[Sequence[DeadLetter]],
    future_tolerance_s: int,
) -> list[WriteResult]:
    """Write; if the database refuses the batch, narrow down to the refused readings.

    Connection failures (``psycopg.OperationalError``) propagate: the caller retries them.
    """
    try:
        return _write_once(wc, batches, extra_dead, future_tolerance_s)
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        if wc.conn is not None and wc.conn.closed:
            raise psycopg.OperationalError(str(exc)) from exc
        log.warning("batch of %d submission(s) refused (%s); retrying in parts", len(batches), exc.__class__.__name__)
        if len(batches) > 1:
            return [
                _write_robust(wc, [b], [d], future_tolerance_s)[0] for b, d in zip(batches, extra_dead)
            ]
        readings = list(batches[0])
        if len(readings) > 1:
            mid = len(readings) // 2
            left = _write_robust(wc, [readings[:mid]], [extra_dead[0]], future_tolerance_s)[0]
            right = _write_robust(wc, [readings[mid:]], [[]], future_tolerance_s)[0]
            return [left.add(right)]
        # one reading (or none) the database will not take: dead-letter it with the database's words
        reason = f"db_{exc.sqlstate or 'error'}"
        message = f"database refused the reading: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}"
        dl = [DeadLetter.for_reading(r, reason, message) for r in readings]
        res = _write_once(wc, [[]], [list(extra_dead[0]) + dl], future_tolerance_s)[0]
        res.submitted = len(readings)
        res.dead = len(dl)
        res.dead_letters -= len(dl)
        if dl:
            res.reasons[reason] = len(dl)
        return [res]


def write_readings(
    conn: psycopg.Connection,
    readings: Iterable[Reading],
    dead_letters: Sequence[DeadLetter] = (),
    *,
    future_tolerance_s: int = 300,
    directory: MeterDirectory | None = None,
) -> WriteResult:
    """Write readings synchronously in one transaction on ``conn`` (autocommit mode)."""
    if not conn.autocommit:
        raise ValueError("write_readings needs an autocommit connection (it manages its transaction)")
    wc = _Connection(conn=conn, directory=directory)
    return _write_robust(wc, [list(readings)], [list(dead_letters)], future_tolerance_s)[0]


@dataclass(slots=True)
class _Submission:
    readings: Sequence[Reading]
    dead: Sequence[DeadLetter]
    future: Future


class WriterClosed(RuntimeError):
    pass


class BatchingWriter:
    """Batch readings from many submitters into COPY transactions on a few connections.

    >>> with BatchingWriter(dsn) as writer:
    ...     result = writer.write(readings)          # returns after commit
    ...     future = writer.submit(more)             # resolves after commit
    """

    def __init__(
        self,
        dsn: str,
        settings: WriterSettings | None = None,
        *,
        observer: Callable[[BatchStats], None] | None = None,
        name: str = "writer",
        on_commit: Callable[[Prepared], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.settings = settings or WriterSettings()
        self.observer = observer
        #: called in the writer thread right after each commit with the batch's columns
        #: (``Prepared.columns``: meter ids resolved); must only hand them on (e.g. the VEE hook)
        self.on_commit = on_commit
        self.name = name
        self._queue: queue.Queue[_Submission] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._closing = False
        self._abandon = False
        self._threads: list[threading.Thread] = []
        self.directory = MeterDirectory()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "BatchingWriter":
        for i in range(self.settings.connections):
            t = threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, drain the queue, commit, and stop the connections.

        If ``timeout`` passes first (a database that stays down), what is still queued fails
        with :class:`WriterClosed` rather than being dropped silently.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self._abandon = True
            for t in self._threads:
                t.join(5)
        while True:
            try:
                sub = self._queue.get_nowait()
            except queue.Empty:
                break
            if not sub.future.done():
                sub.future.set_exception(WriterClosed("writer closed before this submission was written"))
        self._threads.clear()

    def __enter__(self) -> "BatchingWriter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def queue_depth(self) -> int:
        """Readings submitted and not yet committed."""
        return self._pending

    # -- submitting --------------------------------------------------------------------
    def submit(self, readings: Sequence[Reading] = (), dead_letters: Sequence[DeadLetter] = ()) -> "Future[WriteResult]":
        """Queue readings (and dead letters); the future resolves once they are committed.

        Blocks while more than ``queue_max`` readings wait (back-pressure).
        """
        future: Future[WriteResult] = Future()
        n = len(readings)
        with self._cond:
            if self._closing:
                raise WriterClosed("writer is closed")
            while self._pending + n > self.settings.queue_max and self._pending > 0 and not self._closing:
                self._cond.wait(0.1)
            self._pending += n
        self._queue.put(_Submission(readings, dead_letters, future))
        return future

    def write(self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter] = (), timeout: float | None = None) -> WriteResult:
        """Submit and wait for the commit."""
        return self.submit(readings, dead_letters).result(timeout)

    # -- worker ------------------------------------------------------------------------
    def _collect(self) -> list[_Submission] | None:
        while True:
            try:
                first = self._queue.get(timeout=0.05)
                break
            except queue.Empty:
                if self._closing:
                    return None
        batch = [first]
        rows = len(first.readings)
        deadline = time.monotonic() + self.settings.max_delay_ms / 1000
        while rows < self.settings.batch_size:
            remaining = deadline - time.monotonic()
            try:
                sub = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(sub)
            rows += len(sub.readings)
        return batch

    def _run(self) -> None:
        wc = _Connection(dsn=self.dsn, directory=self.directory)
        wc.on_commit = self.on_commit
        try:
            while True:
                batch = self._collect()
                if batch is None:
                    return
                self._write_batch(wc, batch)
        finally:
            wc.close()

    def _write_batch(self, wc: _Connection, batch: list[_Submission]) -> None:
        delay = 0.1
        started = time.perf_counter()
        while True:
            try:
                results = _write_robust(
                    wc, [s.readings for s in batch], [s.dead for s in batch], self.settings.future_tolerance_s
                )
                break
            except psycopg.OperationalError as exc:
                wc.close()
                if self._abandon:
                    for s in batch:
                        if not s.future.done():
                            s.future.set_exception(WriterClosed(f"database unreachable: {exc}"))
                    self._release(batch)
                    return
                log.warning("writer %s: database unreachable (%s); retrying in %.1fs", self.name, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:  # a bug: fail the submitters loudly rather than hang them
                log.exception("writer %s: batch failed", self.name)
                for s in batch:
                    if not s.future.done():
                        s.future.set_exception(exc)
                self._release(batch)
                return
        self._release(batch)
        total = WriteResult()
        for s, res in zip(batch, results):
            total.add(res)
            if not s.future.done():
                s.future.set_result(res)
        if self.observer is not None:
            try:
                self.observer(BatchStats(
                    submissions=len(batch), readings=total.submitted, written=total.written,
                    duplicates=total.duplicates, dead=total.dead, dead_letters=total.dead_letters,
                    reasons=dict(total.reasons), seconds=time.perf_counter() - started,
                    queue_depth=self._pending,
                ))
            except Exception:  # observers must never break the writer
                log.exception("writer observer failed")

    def _release(self, batch: list[_Submission]) -> None:
        with self._cond:
            self._pending -= sum(len(s.readings) for s in batch)
            self._cond.notify_all()
