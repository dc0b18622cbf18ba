"""Plausible consumption histories for a synthetic utility (``meterline seed``).

For every meter of a :class:`~meterline.store.seed.SyntheticUtility`, daily consumption is its
mean times a weekly pattern and noise; a master meter reads the sum of its sub-meters plus its
loss (non-revenue water), bottom-up through multi-level trees. Remote meters (NB-IoT, LoRaWAN,
M-Bus, Modbus) report the cumulative register daily around 02:00 local time; handheld meters are
read once a month on their book's read day. Registers wrap at the register's digits.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator, Mapping
from zoneinfo import ZoneInfo

import numpy as np

from meterline.ingest.model import Quantity, Reading, Source
from meterline.store.seed import SyntheticUtility

PROTOCOL_SOURCE = {
    "coap": Source.COAP, "mqtt": Source.MQTT, "lorawan": Source.LORAWAN, "mbus": Source.MBUS,
    "wmbus": Source.WMBUS, "modbus": Source.MODBUS, "handheld": Source.HANDHELD, "manual": Source.MANUAL,
}
WEEKLY = np.array([0.97, 0.96, 0.97, 0.98, 1.02, 1.07, 1.03])  # Monday .. Sunday


def daily_consumption(utility: SyntheticUtility, start: dt.date, days: int) -> dict[str, np.ndarray]:
    """Litres consumed per day (int64 arrays of length ``days``) for every meter."""
    rng = np.random.default_rng(utility.seed)
    weekday = np.array([(start + dt.timedelta(days=i)).weekday() for i in range(days)])
    pattern = WEEKLY[weekday]
    out: dict[str, np.ndarray] = {}
    serials = list(utility.profiles)
    for serial in serials:
        p = utility.profiles[serial]
        if p.children:
            continue
        if p.mean_l_per_day <= 0:
            out[serial] = np.zeros(days, dtype=np.int64)
            continue
        noise = rng.gamma(8.0, 1 / 8.0, size=days)
        out[serial] = np.rint(p.mean_l_per_day * pattern * noise).astype(np.int64)
    # masters after their children: registry order puts a master before its subs
    for serial in reversed(serials):
        p = utility.profiles[serial]
        if not p.children:
            continue
        subs = sum(out[c] for c in p.children)
        out[serial] = np.rint(subs * (1.0 + p.loss) * rng.uniform(0.98, 1.02, size=days)).astype(np.int64)
    return out


def history(
    utility: SyntheticUtility,
    meter_ids: Mapping[str, int],
    *,
    end: dt.date,
    days: int,
    tz: str | ZoneInfo = "Asia/Shanghai",
    chunk: int = 50_000,
) -> Iterator[list[Reading]]:
    """Yield the readings of ``days`` days ending at ``end`` (inclusive), in chunks."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    start = end - dt.timedelta(days=days - 1)
    use = daily_consumption(utility, start, days)
    rng = np.random.default_rng(utility.seed + 1)
    now = dt.datetime.now(dt.timezone.utc)
    buf: list[Reading] = []
    for serial, p in utility.profiles.items():
        mid = meter_ids[serial]
        registers = p.initial_register + np.concatenate(([0], np.cumsum(use[serial])))  # at the start of each day
        source = PROTOCOL_SOURCE.get(p.protocol, Source.MANUAL)
        if source is Source.HANDHELD:
            picks = [i for i in range(days) if (start + dt.timedelta(days=i)).day == p.read_day]
            times = [dt.time(9 + int(rng.integers(0, 8)), int(rng.integers(0, 60)))] * len(picks)
        else:
            picks = list(range(days))
            minute = int(rng.integers(0, 60))
            times = [dt.time(2, minute)] * days
        for i, t in zip(picks, times):
            day = start + dt.timedelta(days=i)
            local = dt.datetime.combine(day, t, tzinfo=zone)
            ts = local.astimezone(dt.timezone.utc)
            if ts > now:
                break
            # the register at that moment: start of day plus the part of the day already flowed
            frac = (t.hour * 60 + t.minute) / 1440.0
            value = int(registers[i] + int(use[serial][i] * frac)) % p.register_modulus
            buf.append(Reading(ts=ts, value=value, quantity=Quantity.VOLUME, meter_id=mid, source=source,
                               source_ref="seed"))
            if len(buf) >= chunk:
                yield buf
                buf = []
    if buf:
        yield buf
