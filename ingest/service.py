"""The ingest service: every configured source feeding one batching writer, with metrics.

``meterline ingest run`` builds an :class:`IngestService` from the settings and runs it until
SIGTERM or SIGINT. Start-up: the writer, the ``/metrics`` endpoint, then each
``[ingest.sources.<name>]`` (its class loaded by kind through
:func:`meterline.ingest.sources.load`, constructed as ``cls(name, table, sink)``; every source's
configuration problems are reported together before anything starts). Shutdown, in order:

1. ``stop`` is set: each source stops taking new work, submits what it has received, waits for
   the commit and acknowledges its senders (MQTT PUBACK, CoAP 2.04), then returns;
2. the writer drains its queue and commits;
3. the metrics endpoint closes.

Anything received and not yet committed when a deadline passes stays unacknowledged, so its
sender delivers it again: nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from meterline.config.settings import Settings
from meterline.errors import ConfigError
from meterline.ingest.metrics import IngestMetrics
from meterline.ingest.sources import Sink, load
from meterline.ingest.writer import BatchingWriter

log = logging.getLogger(__name__)


@dataclass
class SourceState:
    name: str
    kind: str
    source: Any
    task: asyncio.Task | None = None
    error: BaseException | None = None


@dataclass
class IngestService:
    settings: Settings
    dsn: str
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    writer: BatchingWriter | None = None
    sources: list[SourceState] = field(default_factory=list)
    metrics_port: int | None = None  #: the port /metrics listens on once started
    _http: Any = None

    def build_sources(self) -> None:
        """Construct every configured source (no I/O yet); report all configuration problems at once."""
        if self.writer is None:
            self.writer = BatchingWriter(self.dsn, self.settings.writer, observer=self.metrics.observe_batch,
                                         name="ingest-writer")
        problems: list[str] = []
        base = Sink(self.writer)
        for name, table in self.settings.ingest.sources.items():
            kind = table["kind"]
            try:
                cls = load(kind)
            except (KeyError, ImportError) as exc:
                problems.append(f"ingest.sources.{name}.kind: {exc}")
                continue
            try:
                source = cls(name, dict(table), self.metrics.sink(name, base))
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            self.sources.append(SourceState(name, kind, source))
        if not self.settings.ingest.sources:
            problems.append("ingest.sources: no source configured (add [ingest.sources.<name>] with a kind)")
        if problems:
            raise ConfigError(problems)

    def start_metrics(self) -> None:
        port = self.settings.ingest.metrics_port
        if not port:
            return
        from prometheus_client import start_http_server

        self._http = start_http_server(port, self.settings.ingest.metrics_host, registry=self.metrics.registry)
        server = self._http[0] if isinstance(self._http, tuple) else None
        self.metrics_port = server.server_port if server is not None else port
        log.info("metrics on http://%s:%d/metrics", self.settings.ingest.metrics_host, self.metrics_port)

    def stop_metrics(self) -> None:
        if isinstance(self._http, tuple):
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(5)
        self._http = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (or every source has ended), then shut down in order."""
        if not self.sources:
            self.build_sources()
        assert self.writer is not None
        self.writer.start()
        self.metrics.bind_writer(self.writer)
        self.start_metrics()
        try:
            for st in self.sources:
                st.task = asyncio.create_task(st.source.run(stop), name=f"source-{st.name}")
                log.info("source %s (%s) started", st.name, st.kind)
            tasks = {st.task for st in self.sources if st.task}
            stopper = asyncio.create_task(stop.wait())
            pending = set(tasks)
            while pending and not stop.is_set():
                done, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stopper)
                for st in self.sources:
                    if st.task in done and st.task is not None:
                        exc = st.task.exception()
                        if exc is not None:
                            st.error = exc
                            log.error("source %s stopped with an error: %s", st.name, exc, exc_info=exc)
            stop.set()
            timeout = self.settings.ingest.shutdown_timeout_s
            if pending:
                done, late = await asyncio.wait(pending, timeout=timeout)
                for t in late:
                    log.warning("source %s did not finish within %.0fs; what it holds stays unacknowledged",
                                t.get_name(), timeout)
                    t.cancel()
            stopper.cancel()
        finally:
            started = time.monotonic()
            await asyncio.to_thread(self.writer.close, self.settings.ingest.shutdown_timeout_s)
            log.info("writer drained and closed in %.2fs", time.monotonic() - started)
            self.stop_metrics()


def run_until_signal(service: IngestService) -> int:
    """Run the service on a new event loop until SIGTERM/SIGINT; the exit code is 1 if a source failed."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(main())
    return 1 if any(st.error for st in service.sources) else 0


class Background:
    """The service on its own event loop in a thread (the demo runs it beside a simulator)."""

    def __init__(self, service: IngestService) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._main, name="ingest-service", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self.stop_event = asyncio.Event()
            self._started.set()
            await self.service.run(self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # handed to stop()
            self.error = exc
        finally:
            self._started.set()
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def start(self) -> "Background":
        self.thread.start()
        self._started.wait(30)
        return self

    def stop(self, timeout: float = 120) -> None:
        """SIGTERM's path: drain, commit, stop; re-raise what the service died of, if anything."""
        if self.stop_event is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
