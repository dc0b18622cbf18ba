"""Payload layouts as data: a TOML file describes a device's frame, this module reads it.

Two kinds of frame cover most metering payloads that are not M-Bus records:

``kind = "channels"``
    a sequence of ``channel id, channel type, value`` items (Milesight and many others); each
    ``[[channel]]`` names its ``id``, ``type``, ``name`` and ``format`` (or ``size`` and
    ``parts`` for a record, with ``repeat = true`` when it may occur several times). An unknown
    channel stops decoding with an error: its length is unknown, so nothing after it can be read.

``kind = "fixed"``
    fields at fixed offsets of a frame of known ``length``: ``[[field]]`` (byte-aligned
    integers), ``[[bits]]`` (little-endian bit-packed arrays: ``offset`` byte, ``bit``,
    ``width``, ``count``), ``[[check]]`` (a field that must equal a value, e.g. a frame version).

Both may have ``[[flag]]`` rules (``of`` field, ``mask``, ``equals``, ``unless`` other flags,
``status`` = the :class:`~meterline.ingest.model.MeterStatus` it sets), ``[[register]]`` specs
(``field`` × ``multiply`` + ``add`` + the sum of array ``plus_sum``; ``each`` for repeated
records; ``ts`` a field holding Unix seconds; ``quantity``) and ``[params]`` (per-device-profile
parameters with their defaults, referred to by name from ``multiply`` / ``add``).
``[[vector]]`` entries (``bytes``, ``f_port``, ``fields``, ``registers`` or ``error``) are the
layout's own test vectors. Integer formats: ``u8 u16le u16be u24le u32le u32be i8 i16le i16be
i32le i32be``; ``divide`` scales a field for display (registers always use the raw integer).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from meterline.errors import ConfigError
from meterline.ingest.model import MeterStatus, Quantity
from meterline.protocols.lorawan.codecs import REGISTRY, CodecError, Payload, Register, check_params

UTC = dt.timezone.utc

FORMATS: dict[str, tuple[int, str, bool]] = {
    "u8": (1, "little", False), "i8": (1, "little", True),
    "u16le": (2, "little", False), "u16be": (2, "big", False),
    "i16le": (2, "little", True), "i16be": (2, "big", True),
    "u24le": (3, "little", False),
    "u32le": (4, "little", False), "u32be": (4, "big", False),
    "i32le": (4, "little", True), "i32be": (4, "big", True),
}
QUANTITIES = {"volume": Quantity.VOLUME, "energy": Quantity.ENERGY, "volume_reverse": Quantity.VOLUME_REVERSE}
STATUS = {m.name.lower(): int(m) for m in MeterStatus if m.name and m is not MeterStatus.NONE}


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    offset: int
    format: str
    divide: int | None = None
    when: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    type: int
    name: str
    format: str | None = None  # a single value, or
    size: int = 0  # a record of parts
    parts: tuple[Part, ...] = ()
    divide: int | None = None
    repeat: bool = False

    @property
    def length(self) -> int:
        return FORMATS[self.format][0] if self.format else self.size


@dataclass(frozen=True, slots=True)
class Bits:
    name: str
    offset: int
    bit: int
    width: int
    count: int


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    of: str
    mask: int
    equals: int
    unless: tuple[str, ...] = ()
    status: int = 0


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    field: str
    quantity: Quantity = Quantity.VOLUME
    multiply: int | str = 1
    add: int | str = 0
    plus_sum: str | None = None
    each: str | None = None
    ts: str | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    kind: str
    description: str
    f_ports: tuple[int, ...]
    length: int | None
    channels: tuple[Channel, ...]
    fields: tuple[Part, ...]
    bits: tuple[Bits, ...]
    checks: tuple[tuple[Part, int, str], ...]
    flags: tuple[Flag, ...]
    registers: tuple[RegisterSpec, ...]
    params: Mapping[str, Any]
    constants: Mapping[str, Any]
    vectors: tuple[Mapping[str, Any], ...]
    path: Path | None = None


def load(path: Path) -> Layout:
    """Read and check a layout file; every problem is reported at once (ConfigError)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    return parse(data, path)


_TOP = {"name", "kind", "description", "f_ports", "length", "channel", "field", "bits", "check", "flag",
        "register", "params", "constant", "vector"}


def parse(data: Mapping[str, Any], path: Path | None = None) -> Layout:
    problems: list[str] = []
    where = str(path) if path else "<layout>"

    def need(d: Mapping[str, Any], key: str, tp: type, ctx: str) -> Any:
        v = d.get(key)
        if not isinstance(v, tp) or isinstance(v, bool) and tp is not bool:
            problems.append(f"{ctx}.{key}: expected {tp.__name__}, got {v!r}")
            return tp()
        return v

    def known(d: Mapping[str, Any], keys: set[str], ctx: str) -> None:
        for k in d:
            if k not in keys:
                problems.append(f"{ctx}: unknown key {k!r} (known: {', '.join(sorted(keys))})")

    def fmt(d: Mapping[str, Any], ctx: str, required: bool = True) -> str | None:
        f = d.get("format")
        if f is None and not required:
            return None
        if f not in FORMATS:
            problems.append(f"{ctx}.format: {f!r} is not one of {', '.join(FORMATS)}")
            return "u8"
        return f

    def part(d: Mapping[str, Any], ctx: str) -> Part:
        known(d, {"name", "offset", "format", "divide", "when"}, ctx)
        when = d.get("when", {})
        if not isinstance(when, dict) or not all(isinstance(v, int) for v in when.values()):
            problems.append(f"{ctx}.when: expected a table of field = integer")
            when = {}
        return Part(need(d, "name", str, ctx), need(d, "offset", int, ctx), fmt(d, ctx) or "u8",
                    d.get("divide"), tuple(when.items()))

    known(data, _TOP, where)
    kind = data.get("kind")
    if kind not in ("channels", "fixed"):
        problems.append(f"{where}.kind: {kind!r} is not 'channels' or 'fixed'")
    channels = []
    for i, c in enumerate(data.get("channel", [])):
        ctx = f"{where}.channel[{i}]"
        known(c, {"id", "type", "name", "format", "size", "parts", "divide", "repeat"}, ctx)
        parts = tuple(part(p, f"{ctx}.parts[{j}]") for j, p in enumerate(c.get("parts", [])))
        ch = Channel(need(c, "id", int, ctx), need(c, "type", int, ctx), need(c, "name", str, ctx),
                     fmt(c, ctx, required=False), c.get("size", 0), parts, c.get("divide"), bool(c.get("repeat")))
        if ch.format is None and not (ch.size and ch.parts):
            problems.append(f"{ctx}: needs a format, or a size with parts")
        for p in parts:
            if p.offset + FORMATS[p.format][0] > ch.size:
                problems.append(f"{ctx}: part {p.name} runs past the record's size {ch.size}")
        channels.append(ch)
    fields = tuple(part(f, f"{where}.field[{i}]") for i, f in enumerate(data.get("field", [])))
    bits = []
    for i, b in enumerate(data.get("bits", [])):
        ctx = f"{where}.bits[{i}]"
        known(b, {"name", "offset", "bit", "width", "count"}, ctx)
        bits.append(Bits(need(b, "name", str, ctx), need(b, "offset", int, ctx), b.get("bit", 0),
                         need(b, "width", int, ctx), b.get("count", 1)))
    checks = []
    for i, c in enumerate(data.get("check", [])):
        ctx = f"{where}.check[{i}]"
        known(c, {"offset", "format", "equals", "message"}, ctx)
        checks.append((Part("check", need(c, "offset", int, ctx), fmt(c, ctx) or "u8"), need(c, "equals", int, ctx),
                       c.get("message", "unsupported frame")))
    flags = []
    for i, f in enumerate(data.get("flag", [])):
        ctx = f"{where}.flag[{i}]"
        known(f, {"name", "of", "mask", "equals", "unless", "status"}, ctx)
        status = f.get("status")
        if status is not None and status not in STATUS:
            problems.append(f"{ctx}.status: {status!r} is not one of {', '.join(STATUS)}")
        flags.append(Flag(need(f, "name", str, ctx), need(f, "of", str, ctx), need(f, "mask", int, ctx),
                          f.get("equals", f.get("mask", 0)), tuple(f.get("unless", ())), STATUS.get(status, 0)))
    params = data.get("params", {})
    registers = []
    for i, r in enumerate(data.get("register", [])):
        ctx = f"{where}.register[{i}]"
        known(r, {"field", "quantity", "multiply", "add", "plus_sum", "each", "ts"}, ctx)
        q = r.get("quantity", "volume")
        if q not in QUANTITIES:
            problems.append(f"{ctx}.quantity: {q!r} is not one of {', '.join(QUANTITIES)}")
        for k in ("multiply", "add"):
            v = r.get(k)
            if isinstance(v, str) and v not in params:
                problems.append(f"{ctx}.{k}: no parameter named {v!r} in [params]")
        registers.append(RegisterSpec(need(r, "field", str, ctx), QUANTITIES.get(q, Quantity.VOLUME),
                                      r.get("multiply", 1), r.get("add", 0), r.get("plus_sum"), r.get("each"),
                                      r.get("ts")))
    if kind == "fixed" and not isinstance(data.get("length"), int):
        problems.append(f"{where}.length: a fixed frame needs its length")
    if problems:
        raise ConfigError(problems, where)
    return Layout(
        name=need(data, "name", str, where), kind=kind, description=data.get("description", ""),
        f_ports=tuple(data.get("f_ports", ())), length=data.get("length"), channels=tuple(channels),
        fields=fields, bits=tuple(bits), checks=tuple(checks), flags=tuple(flags), registers=tuple(registers),
        params=params, constants=data.get("constant", {}), vectors=tuple(data.get("vector", ())), path=path,
    )


def _int(buf: bytes, offset: int, fmt: str) -> int:
    size, order, signed = FORMATS[fmt]
    return int.from_bytes(buf[offset:offset + size], order, signed=signed)


def _scaled(v: int, divide: int | None) -> int | float:
    return v if not divide else v / divide


class LayoutCodec:
    """A codec that decodes by a :class:`Layout`."""

    def __init__(self, layout: Layout, params: Mapping[str, Any]) -> None:
        self.layout = layout
        self.name = layout.name
        self.params = check_params(layout.name, params, layout.params)

    def fail(self, message: str, payload: bytes, f_port: int | None, reason: str = "bad_payload") -> CodecError:
        return CodecError(message, payload, reason, self.name, f_port)

    def decode(self, payload: bytes, f_port: int | None = None, obj: Mapping[str, Any] | None = None) -> Payload:
        lay = self.layout
        if lay.f_ports and f_port is not None and f_port not in lay.f_ports:
            raise self.fail(f"unsupported fPort {f_port} (expected {', '.join(map(str, lay.f_ports))})",
                            payload, f_port, "unsupported_port")
        raw: dict[str, Any] = {}  # integers as read
        shown: dict[str, Any] = dict(lay.constants)  # what is output, scaled for display
        if lay.kind == "channels":
            self._channels(payload, f_port, raw, shown)
        else:
            self._fixed(payload, f_port, raw, shown)
        status = 0
        for flag in lay.flags:
            v = raw.get(flag.of)
            if v is None:
                continue
            on = (v & flag.mask) == flag.equals and not any(shown.get(u) for u in flag.unless)
            shown[flag.name] = on
            if on:
                status |= flag.status
        registers = []
        for spec in lay.registers:
            for rec in (raw.get(spec.each) or ()) if spec.each else (raw,):
                if spec.field not in rec:
                    continue
                value = rec[spec.field] * self._param(spec.multiply) + self._param(spec.add)
                if spec.plus_sum:
                    value += sum(raw.get(spec.plus_sum, ()))
                ts = None
                if spec.ts:
                    try:
                        ts = dt.datetime.fromtimestamp(rec[spec.ts], UTC)
                    except (KeyError, OverflowError, ValueError, OSError) as exc:
                        raise self.fail(f"bad timestamp {rec.get(spec.ts)!r}", payload, f_port, "bad_timestamp") from exc
                if value < 0:
                    raise self.fail(f"register {spec.field} is negative ({value})", payload, f_port, "negative_register")
                registers.append(Register(value, spec.quantity, ts, status))
        return Payload(tuple(registers), shown, status)

    def _param(self, v: int | str) -> int:
        return self.params[v] if isinstance(v, str) else v

    def _channels(self, payload: bytes, f_port: int | None, raw: dict[str, Any], shown: dict[str, Any]) -> None:
        by_key = {(c.id, c.type): c for c in self.layout.channels}
        i, n = 0, len(payload)
        if n == 0:
            raise self.fail("empty payload", payload, f_port, "empty_payload")
        while i < n:
            if i + 2 > n:
                raise self.fail(f"truncated channel header at byte {i}", payload, f_port, "truncated")
            ch = by_key.get((payload[i], payload[i + 1]))
            if ch is None:
                raise self.fail(f"unknown channel {payload[i]:02x} type {payload[i + 1]:02x} at byte {i}",
                                payload, f_port, "unknown_channel")
            i += 2
            if i + ch.length > n:
                raise self.fail(f"channel {ch.name} truncated at byte {i}", payload, f_port, "truncated")
            if ch.format:
                v = _int(payload, i, ch.format)
                raw[ch.name] = v
                shown[ch.name] = _scaled(v, ch.divide)
            else:
                rec_raw: dict[str, int] = {}
                rec_shown: dict[str, Any] = {}
                for p in ch.parts:
                    if all(rec_raw.get(k) == v for k, v in p.when):
                        v = _int(payload, i + p.offset, p.format)
                        rec_raw[p.name] = v
                        rec_shown[p.name] = _scaled(v, p.divide)
                if ch.repeat:
                    raw.setdefault(ch.name, []).append(rec_raw)
                    shown.setdefault(ch.name, []).append(rec_shown)
                else:
                    raw[ch.name], shown[ch.name] = rec_raw, rec_shown
            i += ch.length

    def _fixed(self, payload: bytes, f_port: int | None, raw: dict[str, Any], shown: dict[str, Any]) -> None:
        lay = self.layout
        if len(payload) != lay.length:
            raise self.fail(f"unsupported payload length {len(payload)} (expected {lay.length})", payload, f_port,
                            "bad_length")
        for part, equals, message in lay.checks:
            v = _int(payload, part.offset, part.format)
            if v != equals:
                raise self.fail(f"{message}: 0x{v:x}", payload, f_port, "unsupported_frame")
        for p in lay.fields:
            v = _int(payload, p.offset, p.format)
            raw[p.name] = v
            shown[p.name] = _scaled(v, p.divide)
        for b in lay.bits:
            word = int.from_bytes(payload[b.offset:], "little") >> b.bit
            mask = (1 << b.width) - 1
            values = [(word >> (k * b.width)) & mask for k in range(b.count)]
            raw[b.name] = values if b.count > 1 else values[0]
            shown[b.name] = raw[b.name]


def register_file(path: Path) -> Layout:
    """Load a layout file and register it as a codec under its name."""
    layout = load(path)

    def factory(params: Mapping[str, Any]) -> LayoutCodec:
        return LayoutCodec(layout, params)

    REGISTRY[layout.name] = factory
    return layout
