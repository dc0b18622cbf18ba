"""Prometheus metrics of the ingest service: they wrap the sink and observe the writer.

Nothing in a source or the writer knows about Prometheus: the service hands each source an
:class:`InstrumentedSink` (a :class:`~meterline.ingest.sources.Sink` that counts what passes
through it, labelled with the source's name) and registers :meth:`IngestMetrics.observe_batch`
as the writer's ``observer``. Exposed on ``/metrics`` (``ingest.metrics_port``):

=============================================  ======================================================
``meterline_ingest_messages_received_total``   messages/frames in, by source
``meterline_ingest_readings_decoded_total``    readings decoded and handed to the writer, by source
``meterline_ingest_readings_written_total``    new readings committed, by source
``meterline_ingest_duplicates_total``          repeats, by source and ``stage``: ``transport`` (a
                                               message seen before: retransmission, redelivery) or
                                               ``store`` (a reading already stored)
``meterline_ingest_dead_letters_total``        dead letters committed, by source and reason
``meterline_ingest_pending_readings``          readings submitted and not yet committed, by source
``meterline_ingest_commit_latency_seconds``    submission → commit, by source (histogram)
``meterline_writer_queue_depth``               readings waiting in the writer
``meterline_writer_batch_seconds``             one batch: check, COPY, commit (histogram)
``meterline_writer_batch_readings``            readings per batch (histogram)
=============================================  ======================================================
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from typing import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from meterline.ingest.model import DeadLetter, Reading
from meterline.ingest.sources.base import Sink
from meterline.ingest.writer import BatchingWriter, BatchStats, WriteResult

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("meterline_ingest_messages_received", "Messages or frames received", ["source"],
                                registry=r)
        self.decoded = Counter("meterline_ingest_readings_decoded", "Readings decoded and submitted", ["source"],
                               registry=r)
        self.written = Counter("meterline_ingest_readings_written", "New readings committed", ["source"], registry=r)
        self.duplicates = Counter("meterline_ingest_duplicates", "Repeated messages (transport) or readings (store)",
                                  ["source", "stage"], registry=r)
        self.dead = Counter("meterline_ingest_dead_letters", "Dead letters committed", ["source", "reason"], registry=r)
        self.pending = Gauge("meterline_ingest_pending_readings", "Readings submitted, not yet committed", ["source"],
                             registry=r)
        self.latency = Histogram("meterline_ingest_commit_latency_seconds", "Submission to commit", ["source"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("meterline_writer_queue_depth", "Readings waiting in the writer", registry=r)
        self.batch_seconds = Histogram("meterline_writer_batch_seconds", "One writer batch: check, COPY, commit",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_readings = Histogram("meterline_writer_batch_readings", "Readings per writer batch",
                                        buckets=BATCH_BUCKETS, registry=r)

    def bind_writer(self, writer: BatchingWriter) -> None:
        self.queue_depth.set_function(lambda: writer.queue_depth)

    def observe_batch(self, stats: BatchStats) -> None:
        """The writer's ``observer``: called after each committed batch."""
        self.batch_seconds.observe(stats.seconds)
        self.batch_readings.observe(stats.readings)

    def sink(self, source: str, sink: Sink) -> "InstrumentedSink":
        return InstrumentedSink(sink, self, source)


class InstrumentedSink(Sink):
    """A sink that counts, per source, what its source submits and what became of it."""

    def __init__(self, inner: Sink, metrics: IngestMetrics, source: str) -> None:
        super().__init__(inner.writer)
        self.inner = inner
        self.source = source
        m = metrics
        self._received = m.received.labels(source)
        self._decoded = m.decoded.labels(source)
        self._written = m.written.labels(source)
        self._dup_transport = m.duplicates.labels(source, "transport")
        self._dup_store = m.duplicates.labels(source, "store")
        self._pending = m.pending.labels(source)
        self._latency = m.latency.labels(source)
        self._dead = m.dead
        # make the series visible from the start
        for c in (self._received, self._decoded, self._written, self._dup_transport, self._dup_store):
            c.inc(0)

    def note(self, event: str, n: int = 1) -> None:
        if event == "received":
            self._received.inc(n)
        elif event == "duplicate":
            self._dup_transport.inc(n)

    def _before(self, readings: Sequence[Reading]) -> float:
        n = len(readings)
        if n:
            self._decoded.inc(n)
            self._pending.inc(n)
        return time.perf_counter()

    def _after(self, n: int, dead_letters: Sequence[DeadLetter], started: float, result: WriteResult | None) -> None:
        if n:
            self._pending.dec(n)
        if result is None:
            return
        self._latency.observe(time.perf_counter() - started)
        if result.written:
            self._written.inc(result.written)
        if result.duplicates:
            self._dup_store.inc(result.duplicates)
        for reason, k in result.reasons.items():
            self._dead.labels(self.source, reason).inc(k)
        for d in dead_letters:
            self._dead.labels(self.source, d.reason).inc()

    async def submit(self, readings: Sequence[Reading] = (), dead_letters: Sequence[DeadLetter] = ()) -> WriteResult:
        started = self._before(readings)
        result = None
        try:
            result = await asyncio.wrap_future(self.inner.submit_threadsafe(readings, dead_letters))
            return result
        finally:
            self._after(len(readings), dead_letters, started, result)

    def submit_threadsafe(self, readings: Sequence[Reading] = (), dead_letters: Sequence[DeadLetter] = ()) -> Future:
        started = self._before(readings)
        future = self.inner.submit_threadsafe(readings, dead_letters)

        def done(f: Future) -> None:
            self._after(len(readings), dead_letters, started, None if f.cancelled() or f.exception() else f.result())

        future.add_done_callback(done)
        return future
