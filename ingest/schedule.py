"""Poll schedules: when the next cycle of a concentrator starts."""

from __future__ import annotations


def next_tick(now: float, interval_s: float, align: bool = True) -> float:
    """Seconds from ``now`` (epoch seconds) to the next cycle.

    Aligned schedules start on multiples of the interval since the epoch (every 15 minutes on
    the quarter hour, daily at 00:00 UTC), so concentrators polled by several workers or after
    a restart keep the same instants; unaligned ones wait one interval.
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    if not align:
        return interval_s
    delay = interval_s - (now % interval_s)
    return delay if delay > 1e-6 else interval_s
