"""What every source shares: the ``Source`` shape and the ``Sink`` it hands readings to."""

from __future__ import annotations

import asyncio
from typing import Protocol, Sequence

from meterline.ingest.model import DeadLetter, Reading
from meterline.ingest.writer import BatchingWriter, WriteResult


class Source(Protocol):
    name: str

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then finish what was received and return."""


class Sink:
    """Async face of the batching writer for sources running on an event loop.

    ``await sink.submit(readings, dead_letters)`` returns once they are committed, so the
    caller may acknowledge its sender (MQTT PUBACK, CoAP 2.04, HTTP 200) right after.
    """

    def __init__(self, writer: BatchingWriter) -> None:
        self.writer = writer

    async def submit(self, readings: Sequence[Reading] = (), dead_letters: Sequence[DeadLetter] = ()) -> WriteResult:
        future = self.writer.submit(readings, dead_letters)
        return await asyncio.wrap_future(future)

    def submit_threadsafe(self, readings: Sequence[Reading] = (), dead_letters: Sequence[DeadLetter] = ()):
        """For sources on their own threads (paho's network loop): a concurrent Future."""
        return self.writer.submit(readings, dead_letters)

    def note(self, event: str, n: int = 1) -> None:
        """Tell the service's metrics what the writer cannot see: ``received`` (messages or frames
        in) and ``duplicate`` (messages recognised as repeats before decoding). No-op here."""
