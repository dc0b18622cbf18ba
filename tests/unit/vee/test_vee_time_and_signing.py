"""Local days across daylight saving, period bounds, webhook signatures."""

from __future__ import annotations

import datetime as dt

import numpy as np

from meterline.exporters.alert_sinks import sign, verify
from meterline.ingest.vee.localtime import local_day_minute, period_bounds, shift_period, to_us

UTC = dt.timezone.utc


def test_local_day_and_minute_follow_the_zone_including_dst() -> None:
    # Europe/Berlin leaves summer time on 2026-10-25 at 03:00 local (01:00 UTC)
    ts = [dt.datetime(2026, 10, 24, 22, 30, tzinfo=UTC), dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
          dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)]
    day, minute = local_day_minute(np.array([to_us(t) for t in ts]), "Europe/Berlin")
    assert (minute // 60).tolist() == [0, 2, 2]  # 00:30 CEST, 02:30 CEST, 02:30 CET
    assert len(set(day.tolist())) == 1
    d2, m2 = local_day_minute(np.array([to_us(ts[0])]), "Asia/Shanghai")
    assert m2.tolist() == [6 * 60 + 30]


def test_period_bounds_are_local_midnights() -> None:
    start, end = period_bounds("2026-10", "Asia/Shanghai")
    assert start == dt.datetime(2026, 9, 30, 16, tzinfo=UTC) and end == dt.datetime(2026, 10, 31, 16, tzinfo=UTC)
    assert period_bounds("2026-12", "UTC")[1] == dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert shift_period("2026-01", -1) == "2025-12" and shift_period("2026-10", -12) == "2025-10"


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"rule":"spike"}'
    sig = sign(b"k", "1790000000", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify(b"k", "1790000000", body, sig, now=1790000010)
    assert not verify(b"k", "1790000000", body + b" ", sig, now=1790000010)
    assert not verify(b"other", "1790000000", body, sig, now=1790000010)
    assert not verify(b"k", "1790000000", body, sig, now=1790009999)  # stale: replay refused
    assert not verify(b"k", "not-a-time", body, sig)
