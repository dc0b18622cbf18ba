"""Recently seen messages, so a repeat is recognised before it is decoded and written again.

Senders repeat themselves: an MQTT broker redelivers what was not acknowledged before a
reconnect, a LoRaWAN device retransmits a confirmed uplink with the same frame counter, a
network server republishes an event, a CoAP client resends a confirmable request. A
:class:`DedupeWindow` remembers each message's keys (its bytes, the network server's uplink id,
``(devEUI, fCnt, …)``) for ``window_s`` seconds and at most ``max_keys`` keys, each with the
:class:`Ticket` of the batch that carried it. A repeat of a committed message can be
acknowledged at once; a repeat of one still being written is acknowledged when that batch
commits, never before (so a crash in between loses nothing). Beyond the window, the reading
key ``(meter, ts, quantity)`` still makes a late repeat change nothing in the database.

Not thread-safe: each source uses its window from one thread (paho's loop, the event loop).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable, Iterable


class Ticket:
    """One batch of messages on its way to the database.

    ``on_commit`` callbacks run once it is committed (``ok``) or failed; callbacks added later
    run at once. Thread-safe: the writer resolves tickets from its own threads.
    """

    __slots__ = ("_lock", "state", "_callbacks")

    PENDING, COMMITTED, FAILED = 0, 1, 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = Ticket.PENDING
        self._callbacks: list[Callable[[bool], None]] = []

    def on_commit(self, callback: Callable[[bool], None]) -> None:
        with self._lock:
            if self.state == Ticket.PENDING:
                self._callbacks.append(callback)
                return
            ok = self.state == Ticket.COMMITTED
        callback(ok)

    def resolve(self, ok: bool) -> None:
        with self._lock:
            if self.state != Ticket.PENDING:
                return
            self.state = Ticket.COMMITTED if ok else Ticket.FAILED
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(ok)


class DedupeWindow:
    def __init__(self, window_s: float = 3600.0, max_keys: int = 200_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[Hashable, tuple[float, Ticket]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: Hashable) -> Ticket | None:
        """The ticket of an earlier message with this key inside the window, if any."""
        hit = self._seen.get(key)
        if hit is None:
            return None
        if hit[1].state == Ticket.FAILED or self._clock() - hit[0] > self.window_s:
            del self._seen[key]
            return None
        return hit[1]

    def first_seen(self, keys: Iterable[Hashable]) -> Ticket | None:
        for key in keys:
            t = self.seen(key)
            if t is not None:
                return t
        return None

    def add(self, keys: Iterable[Hashable], ticket: Ticket, now: float | None = None) -> None:
        """Remember ``keys``; call :meth:`evict` now and then (a source does once per batch)."""
        if now is None:
            now = self._clock()
        seen = self._seen
        for key in keys:
            seen[key] = (now, ticket)
            seen.move_to_end(key)

    def evict(self) -> None:
        """Forget keys older than the window, and the oldest beyond ``max_keys``."""
        self._evict(self._clock())

    def forget(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self._seen.pop(key, None)

    def _evict(self, now: float) -> None:
        seen = self._seen
        limit = now - self.window_s
        while seen:
            key, (t, _) = next(iter(seen.items()))
            if t >= limit and len(seen) <= self.max_keys:
                break
            del seen[key]
