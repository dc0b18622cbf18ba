"""Ingest sources: servers, subscribers and pollers that turn wire traffic into readings.

A source is registered by kind and imported only when configured (a missing optional
protocol stack never breaks start-up)::

    @register("mqtt")
    class MqttSource:
        def __init__(self, name: str, settings: dict, sink: Sink) -> None: ...
        async def run(self, stop: asyncio.Event) -> None: ...

``run`` serves until ``stop`` is set, then drains: every message received is either committed
(readings and dead letters, through the :class:`Sink`) or left unacknowledged for its sender
to redeliver. ``load(kind)`` imports ``meterline.ingest.sources.<kind>`` and returns the class.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from meterline.ingest.sources.base import Sink, Source

__all__ = ["Sink", "Source", "register", "load", "REGISTRY"]

REGISTRY: dict[str, type] = {}


def register(kind: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        REGISTRY[kind] = cls
        return cls

    return deco


def load(kind: str) -> Any:
    """The source class registered as ``kind``, importing its module on first use."""
    if kind not in REGISTRY:
        importlib.import_module(f"{__name__}.{kind}")
    try:
        return REGISTRY[kind]
    except KeyError as exc:
        raise KeyError(f"no ingest source of kind {kind!r}") from exc
