"""From one pushed message to what is written: readings, dead letters, and the message's keys.

A *message format* reads one message (topic + bytes) with the pure decoders of ``protocols/``:

``meterline``   meterline's JSON schema (:mod:`meterline.protocols.meterjson`), single or batch;
``chirpstack``  ChirpStack v4 uplink events, payload decoded by the device profile's codec;
``tts``         The Things Stack v3 uplinks, likewise.

Every failure becomes a :class:`~meterline.ingest.model.DeadLetter` carrying the message's raw
bytes and the reason code (``bad_json``, ``unknown_channel``, ``negative_register``, ...), so a bad
message is stored, counted and acknowledged like any other, and never stops the stream.
Readings stamped beyond the future tolerance are dead letters here too (with the raw bytes),
rather than later in the writer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping

from meterline.errors import ConfigError, DecodeError
from meterline.ingest.model import DeadLetter, Reading, Source
from meterline.protocols import meterjson
from meterline.protocols.lorawan import Uplink, chirpstack, codecs, to_readings, tts

log = logging.getLogger(__name__)
UTC = dt.timezone.utc


@dataclass(slots=True)
class Outcome:
    """What one message became."""

    readings: list[Reading] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    keys: tuple[Hashable, ...] = ()  #: identities of the message beyond its bytes (uplink id, devEUI+fCnt)


class Format:
    """Decodes messages of one format for one source; ``decode`` never raises."""

    name = ""
    source = Source.MQTT

    def __init__(self, source_name: str, future_tolerance_s: int = 300, recent: int = 8) -> None:
        self.source_name = source_name
        self.future_tolerance_s = future_tolerance_s
        self.recent: deque[tuple[str, bytes]] = deque(maxlen=recent)  # last frames, dumped on a failure
        self._now: dt.datetime | None = None
        self._latest = dt.datetime.max.replace(tzinfo=UTC)

    def decode(self, topic: str, payload: bytes, now: dt.datetime) -> Outcome:
        try:
            out = self._decode(topic, payload)
        except DecodeError as exc:
            self._dump(exc, topic, payload)
            return Outcome(dead=[self.dead_letter(payload, exc.reason, str(exc), getattr(exc, "device", None), topic)])
        self.recent.append((topic, payload))
        if out.readings:
            self._screen(out, payload, topic, now)
        return out

    def _decode(self, topic: str, payload: bytes) -> Outcome:
        raise NotImplementedError

    def dead_letter(self, payload: bytes, reason: str, message: str, device: str | None = None,
                    topic: str | None = None, **detail: Any) -> DeadLetter:
        if topic is not None:
            detail["topic"] = topic
        return DeadLetter(source=self.source_name, reason=reason, message=message, raw=payload, device=device,
                          detail=detail)

    def _screen(self, out: Outcome, payload: bytes, topic: str, now: dt.datetime) -> None:
        """Readings beyond the future tolerance → dead letters with the message's bytes."""
        if now is not self._now:
            self._now, self._latest = now, now + dt.timedelta(seconds=self.future_tolerance_s)
        latest = self._latest
        for r in out.readings:
            if r.ts > latest:
                break
        else:
            return
        keep = []
        for i, r in enumerate(out.readings):
            if r.ts <= latest:
                keep.append(r)
            else:
                out.dead.append(self.dead_letter(
                    payload, "future_timestamp",
                    f"timestamp {r.ts.isoformat()} is more than {self.future_tolerance_s}s in the future",
                    r.device, topic, reading=i, ts=r.ts.isoformat()))
        out.readings = keep

    def _dump(self, exc: DecodeError, topic: str, payload: bytes) -> None:
        if log.isEnabledFor(logging.DEBUG):
            frames = " | ".join(f"{t}: {p[:120]!r}" for t, p in self.recent)
            log.debug("%s: %s on %s: %r; last good frames: %s", self.source_name, exc.reason, topic, payload[:200],
                      frames, extra={"source": self.source_name, "reason": exc.reason})


class MeterlineJson(Format):
    name = "meterline"

    def _decode(self, topic: str, payload: bytes) -> Outcome:
        d = meterjson.decode(payload, source=self.source)
        out = Outcome(list(d.readings))
        for rej in d.rejected:
            out.dead.append(self.dead_letter(payload, rej.reason, rej.message, None, topic, reading=rej.index))
        return out


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    codec: codecs.Codec


class Profiles:
    """Which payload codec decodes a device's uplinks: by device profile, else the default.

    ``profiles`` maps a profile name (ChirpStack device profile name or id; The Things Stack
    ``brand/model`` or model id) to a table with ``codec`` and that codec's parameters.
    """

    def __init__(self, default: str, default_params: Mapping[str, Any],
                 profiles: Mapping[str, Mapping[str, Any]], where: str = "") -> None:
        problems: list[str] = []
        self.default = self._make("default", default, default_params, problems, where)
        self.by_name: dict[str, Profile] = {}
        for name, table in profiles.items():
            params = dict(table)
            codec = params.pop("codec", None)
            if not isinstance(codec, str):
                problems.append(f"{where}profiles.{name}.codec: required, the payload codec's name")
                continue
            made = self._make(name, codec, params, problems, f"{where}profiles.{name}: ")
            if made is not None:
                self.by_name[name] = made
        if problems:
            raise ConfigError(problems)

    @staticmethod
    def _make(name: str, codec: str, params: Mapping[str, Any], problems: list[str], where: str) -> Profile | None:
        try:
            return Profile(name, codecs.create(codec, params))
        except ConfigError as exc:
            problems.extend(f"{where}{p}" for p in exc.problems)
            return None

    def for_uplink(self, up: Uplink) -> Profile:
        for name in up.profiles:
            p = self.by_name.get(name)
            if p is not None:
                return p
        assert self.default is not None
        return self.default


class LoRaWAN(Format):
    source = Source.LORAWAN
    parse: Callable[[bytes, str | None], Uplink]

    def __init__(self, source_name: str, profiles: Profiles, future_tolerance_s: int = 300) -> None:
        super().__init__(source_name, future_tolerance_s)
        self.profiles = profiles

    def _decode(self, topic: str, payload: bytes) -> Outcome:
        up = type(self).parse(payload, topic)
        keys: tuple[Hashable, ...] = (("fcnt",) + up.fcnt_key,)
        if up.dedup_id:
            keys = (("uplink", up.server, up.dedup_id),) + keys
        profile = self.profiles.for_uplink(up)
        try:
            decoded = profile.codec.decode(up.payload, up.f_port, up.object)
        except DecodeError as exc:
            return Outcome(dead=[self.dead_letter(
                payload, exc.reason, f"device {up.dev_eui} fCnt {up.f_cnt} ({profile.name}): {exc}", up.dev_eui,
                topic, f_port=up.f_port, f_cnt=up.f_cnt, payload_hex=up.payload.hex())], keys=keys)
        return Outcome(to_readings(up, decoded.registers, source=self.source), keys=keys)


class ChirpStack(LoRaWAN):
    name = "chirpstack"
    parse = staticmethod(chirpstack.decode_up)


class TheThingsStack(LoRaWAN):
    name = "tts"
    parse = staticmethod(tts.decode_up)


FORMATS: dict[str, type[Format]] = {"meterline": MeterlineJson, "chirpstack": ChirpStack, "tts": TheThingsStack}
DEFAULT_TOPICS = {"meterline": "meterline/up/#", "chirpstack": chirpstack.TOPIC, "tts": tts.TOPIC}


def make_format(fmt: str, source_name: str, *, future_tolerance_s: int = 300, codec: str = "object",
                codec_params: Mapping[str, Any] | None = None,
                profiles: Mapping[str, Mapping[str, Any]] | None = None, where: str = "") -> Format:
    if fmt not in FORMATS:
        raise ConfigError([f"{where}format: {fmt!r} is not one of {', '.join(FORMATS)}"])
    cls = FORMATS[fmt]
    if issubclass(cls, LoRaWAN):
        return cls(source_name, Profiles(codec, codec_params or {}, profiles or {}, where), future_tolerance_s)
    return cls(source_name, future_tolerance_s)


def configure(settings_cls: type, name: str, table: Mapping[str, Any], future_tolerance_s: int) -> tuple[Any, Format]:
    """A push source's settings and message format, every problem of both reported at once.

    ``settings_cls`` is a settings dataclass with ``format``, ``codec``, ``codec_params`` and
    ``profiles`` fields (defaults used where ``table`` is itself broken)."""
    from meterline.config.loader import build

    where = f"ingest.sources.{name}"
    problems: list[str] = []
    settings = fmt = None
    try:
        settings = build(settings_cls, table, source=where, path=where)
    except ConfigError as exc:
        problems.extend(exc.problems)
    probe = settings or settings_cls()
    pick = (lambda key: table.get(key, getattr(probe, key))) if settings is None else (lambda key: getattr(settings, key))
    try:
        fmt = make_format(pick("format"), name, future_tolerance_s=future_tolerance_s, codec=pick("codec"),
                          codec_params=pick("codec_params"), profiles=pick("profiles"), where=f"{where}.")
    except ConfigError as exc:
        problems.extend(exc.problems)
    except (TypeError, AttributeError, ValueError):
        pass  # a table of the wrong shape: already reported by build()
    if problems:
        raise ConfigError(problems, where)
    return settings, fmt
