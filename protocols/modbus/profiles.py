"""Modbus register maps as data: TOML profiles → register specs → exact values → Readings.

A profile (``protocols/modbus/profiles/<name>.toml``) describes one meter model or
concentrator map, and carries its own test vectors::

    [profile]
    name = "heat-meter-float32"
    description = "..."
    byte_order = "big"      # default for every register: bytes within a 16-bit register
    word_order = "big"      # default: "big" = most significant register first

    [[register]]
    name = "energy"
    address = 0             # protocol address (0-based)
    function = 4            # 3 = holding registers, 4 = input registers
    type = "float32"        # int16 uint16 int32 uint32 int64 uint64 float32 float64 bcd16 bcd32
    scale = "1"             # exact decimal multiplier, as a string
    unit = "kWh"            # of value × scale
    quantity = "energy"     # energy | volume | volume_reverse: a billing register; omit otherwise
    word_order = "little"   # optional per-register override (and byte_order)

    [[vector]]              # registers as read → the values the profile must give
    registers = { "4:0" = [0x4640, 0xE400] }     # "function:address" = [words...]
    expect = { energy = "12345" }                  # exact decimals as strings
    readings = { energy = 12345000 }               # optional: base units (L, Wh)

Values are exact: integers and BCD scaled by the decimal ``scale``; floats taken as the
shortest decimal that is the same float32/float64. ``to_readings`` converts billing registers
to base units (m³ → L, kWh → Wh, MWh, GJ and MJ too), truncating what is finer.

``plan_reads`` groups a profile's registers into batched reads of contiguous (or nearly
contiguous, ``max_gap``) registers of the same function, at most 125 registers each.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from meterline.errors import ConfigError, DecodeError
from meterline.ingest.model import Quantity, Reading, Source

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
MAX_READ = 125  #: registers per read (Modbus application protocol, FC 3/4)

#: registers per type
TYPES = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4,
         "float32": 2, "float64": 4, "bcd16": 1, "bcd32": 2}
FUNCTIONS = {3: "holding registers", 4: "input registers"}
QUANTITIES = {"volume": Quantity.VOLUME, "volume_reverse": Quantity.VOLUME_REVERSE, "energy": Quantity.ENERGY}
#: unit → (quantity family, exact factor to the base unit)
UNITS: dict[str, tuple[str, Fraction]] = {
    "L": ("volume", Fraction(1)), "m^3": ("volume", Fraction(1000)), "m3": ("volume", Fraction(1000)),
    "Wh": ("energy", Fraction(1)), "kWh": ("energy", Fraction(1000)), "MWh": ("energy", Fraction(10**6)),
    "MJ": ("energy", Fraction(10**6, 3600)), "GJ": ("energy", Fraction(10**9, 3600)),
}


class ModbusDecodeError(DecodeError):
    """Registers that cannot be turned into a value (wrong count, NaN, non-decimal BCD)."""

    def __init__(self, message: str, raw: bytes | None = None, register: str | None = None) -> None:
        self.register = register
        super().__init__(message, raw=raw, reason="bad_registers")


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    name: str
    address: int
    function: int
    type: str
    scale: Decimal = Decimal(1)
    unit: str = ""
    quantity: str | None = None
    word_order: str = "big"
    byte_order: str = "big"

    @property
    def count(self) -> int:
        return TYPES[self.type]

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class Vector:
    registers: dict[tuple[int, int], tuple[int, ...]]
    expect: dict[str, Decimal]  #: register name → exact value
    readings: dict[str, int] = field(default_factory=dict)  #: quantity → value in base units


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    registers: tuple[RegisterSpec, ...]
    description: str = ""
    vectors: tuple[Vector, ...] = ()
    path: Path | None = None

    def spec(self, name: str) -> RegisterSpec:
        for s in self.registers:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One batched read: ``count`` registers from ``address`` with function ``function``."""

    function: int
    address: int
    count: int
    specs: tuple[RegisterSpec, ...] = field(default=())


# --- loading ---------------------------------------------------------------------------------

_PROFILE_KEYS = {"name", "description", "byte_order", "word_order"}
_REGISTER_KEYS = {"name", "address", "function", "type", "scale", "unit", "quantity", "word_order", "byte_order"}


def _order(value: object, where: str, problems: list[str]) -> str:
    if value not in ("big", "little"):
        problems.append(f"{where}: must be 'big' or 'little', not {value!r}")
        return "big"
    return str(value)


def parse_profile(doc: Mapping, source: str = "<profile>") -> Profile:
    """A validated profile from a parsed TOML document; every problem is reported at once."""
    problems: list[str] = []
    for key in doc:
        if key not in ("profile", "register", "vector"):
            problems.append(f"{key}: unknown table")
    head = doc.get("profile", {})
    for key in head:
        if key not in _PROFILE_KEYS:
            problems.append(f"profile.{key}: unknown key")
    name = head.get("name")
    if not isinstance(name, str) or not name:
        problems.append("profile.name: required")
    default_bytes = _order(head.get("byte_order", "big"), "profile.byte_order", problems)
    default_words = _order(head.get("word_order", "big"), "profile.word_order", problems)
    specs: list[RegisterSpec] = []
    names: set[str] = set()
    for i, reg in enumerate(doc.get("register", [])):
        where = f"register[{i}]"
        for key in reg:
            if key not in _REGISTER_KEYS:
                problems.append(f"{where}.{key}: unknown key")
        rname = reg.get("name")
        if not isinstance(rname, str) or not rname:
            problems.append(f"{where}.name: required")
            rname = f"#{i}"
        elif rname in names:
            problems.append(f"{where}.name: {rname!r} is defined twice")
        names.add(rname)
        address = reg.get("address")
        if not isinstance(address, int) or not 0 <= address <= 0xFFFF:
            problems.append(f"{where}.address: an integer 0..65535 is required")
            address = 0
        function = reg.get("function", 3)
        if function not in FUNCTIONS:
            problems.append(f"{where}.function: {function!r} is not 3 (holding) or 4 (input)")
        rtype = reg.get("type")
        if rtype not in TYPES:
            problems.append(f"{where}.type: {rtype!r} is not one of {', '.join(TYPES)}")
            rtype = "uint16"
        try:
            scale = Decimal(str(reg.get("scale", "1")))
            if not scale.is_finite() or scale == 0:
                raise InvalidOperation
        except InvalidOperation:
            problems.append(f"{where}.scale: {reg.get('scale')!r} is not a non-zero decimal")
            scale = Decimal(1)
        unit = reg.get("unit", "")
        quantity = reg.get("quantity")
        if quantity is not None:
            if quantity not in QUANTITIES:
                problems.append(f"{where}.quantity: {quantity!r} is not one of {', '.join(QUANTITIES)}")
            elif unit not in UNITS or UNITS[unit][0] != quantity.removesuffix("_reverse"):
                problems.append(f"{where}.unit: {unit!r} cannot be converted to the base unit of {quantity}")
        if address + TYPES[rtype] > 0x10000:
            problems.append(f"{where}: runs past register 65535")
        specs.append(RegisterSpec(
            rname, address, function, rtype, scale, unit, quantity,
            _order(reg.get("word_order", default_words), f"{where}.word_order", problems),
            _order(reg.get("byte_order", default_bytes), f"{where}.byte_order", problems)))
    if not specs:
        problems.append("register: a profile needs at least one register")
    vectors = []
    for i, vec in enumerate(doc.get("vector", [])):
        where = f"vector[{i}]"
        regs: dict[tuple[int, int], tuple[int, ...]] = {}
        for key, words in vec.get("registers", {}).items():
            try:
                fn, addr = (int(x) for x in key.split(":"))
                if not all(isinstance(w, int) and 0 <= w <= 0xFFFF for w in words):
                    raise ValueError
                regs[(fn, addr)] = tuple(words)
            except ValueError:
                problems.append(f"{where}.registers.{key}: need \"function:address\" = [16-bit words]")
        expect: dict[str, Decimal] = {}
        for key, value in vec.get("expect", {}).items():
            if key not in names:
                problems.append(f"{where}.expect.{key}: no such register")
            try:
                expect[key] = Decimal(str(value))
            except InvalidOperation:
                problems.append(f"{where}.expect.{key}: {value!r} is not a decimal")
        readings: dict[str, int] = {}
        for key, value in vec.get("readings", {}).items():
            if key not in QUANTITIES or not isinstance(value, int):
                problems.append(f"{where}.readings.{key}: need a quantity ({', '.join(QUANTITIES)}) = integer")
            else:
                readings[key] = value
        for key in vec:
            if key not in ("registers", "expect", "readings"):
                problems.append(f"{where}.{key}: unknown key")
        vectors.append(Vector(regs, expect, readings))
    if problems:
        raise ConfigError(problems, source)
    return Profile(str(name), tuple(specs), head.get("description", ""), tuple(vectors))


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by name (a file in ``protocols/modbus/profiles``) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.toml"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
        raise ConfigError([f"no Modbus profile {str(name_or_path)!r} (known: {known})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(path)) from exc
    profile = parse_profile(doc, str(path))
    return Profile(profile.name, profile.registers, profile.description, profile.vectors, path)


def builtin_profiles() -> list[Path]:
    return sorted(PROFILE_DIR.glob("*.toml"))


# --- decoding --------------------------------------------------------------------------------

def _shortest(x: float, fmt: str) -> Decimal:
    packed = struct.pack(fmt, x)
    for digits in range(1, 18):
        text = f"{x:.{digits}g}"
        if struct.pack(fmt, float(text)) == packed:
            return Decimal(text)
    return Decimal(repr(x))  # pragma: no cover


def register_bytes(spec: RegisterSpec, words: Sequence[int]) -> bytes:
    """The value's bytes, most significant first, after applying word and byte order."""
    ordered = list(words) if spec.word_order == "big" else list(words)[::-1]
    out = bytearray()
    for w in ordered:
        b = w.to_bytes(2, "big")
        out += b if spec.byte_order == "big" else b[::-1]
    return bytes(out)


def decode_value(spec: RegisterSpec, words: Sequence[int]) -> Decimal:
    """The exact value (× scale) of one register spec from its words."""
    if len(words) != spec.count:
        raise ModbusDecodeError(f"{spec.name}: {spec.type} needs {spec.count} register(s), got {len(words)}",
                                register=spec.name)
    raw = register_bytes(spec, words)
    t = spec.type
    if t.startswith("bcd"):
        digits = raw.hex()
        if not digits.isdigit():
            raise ModbusDecodeError(f"{spec.name}: BCD register holds non-decimal digits {digits.upper()}", raw,
                                    spec.name)
        value = Decimal(int(digits))
    elif t.startswith("float"):
        fmt = ">f" if t == "float32" else ">d"
        (x,) = struct.unpack(fmt, raw)
        if math.isnan(x) or math.isinf(x):
            raise ModbusDecodeError(f"{spec.name}: {t} register holds {x}", raw, spec.name)
        value = _shortest(x, fmt)
    else:
        value = Decimal(int.from_bytes(raw, "big", signed=t.startswith("int")))
    return value * spec.scale if spec.scale != 1 else value


def words_for(spec: RegisterSpec, blocks: Mapping[tuple[int, int], Sequence[int]]) -> list[int]:
    """The words of ``spec`` out of read blocks keyed by (function, start address)."""
    for (fn, start), words in blocks.items():
        if fn == spec.function and start <= spec.address and spec.end <= start + len(words):
            return list(words[spec.address - start:spec.end - start])
    raise ModbusDecodeError(f"{spec.name}: registers {spec.function}:{spec.address}..{spec.end - 1} were not read",
                            register=spec.name)


def decode_registers(profile: Profile, blocks: Mapping[tuple[int, int], Sequence[int]]) -> dict[str, Decimal]:
    """Every register of ``profile`` from read blocks ({(function, address): words})."""
    return {spec.name: decode_value(spec, words_for(spec, blocks)) for spec in profile.registers}


def plan_reads(specs: Iterable[RegisterSpec], max_count: int = MAX_READ, max_gap: int = 0) -> list[ReadBlock]:
    """Group registers into as few reads as possible: same function, contiguous (gaps up to
    ``max_gap`` registers are read and ignored), at most ``max_count`` registers per read."""
    ordered = sorted(specs, key=lambda s: (s.function, s.address, s.count))
    blocks: list[ReadBlock] = []
    cur: list[RegisterSpec] = []
    fn = start = end = -1
    for s in ordered:
        if cur and s.function == fn and s.address <= end + max_gap and max(end, s.end) - start <= max_count:
            cur.append(s)
            end = max(end, s.end)
            continue
        if cur:
            blocks.append(ReadBlock(fn, start, end - start, tuple(cur)))
        cur, fn, start, end = [s], s.function, s.address, s.end
    if cur:
        blocks.append(ReadBlock(fn, start, end - start, tuple(cur)))
    return blocks


def base_units(spec: RegisterSpec, value: Decimal) -> int:
    """A billing register's value in its quantity's base unit (L or Wh), truncated."""
    _, factor = UNITS[spec.unit]
    return int(Fraction(value) * factor)


def to_readings(profile: Profile, values: Mapping[str, Decimal], *, ts: dt.datetime, device: str | None = None,
                meter_id: int | None = None, source_ref: str | None = None, status: int = 0) -> list[Reading]:
    """Readings of the profile's billing registers (those with a ``quantity``)."""
    out = []
    for spec in profile.registers:
        if spec.quantity is None or spec.name not in values:
            continue
        out.append(Reading(ts=ts, value=base_units(spec, values[spec.name]), quantity=QUANTITIES[spec.quantity],
                           meter_id=meter_id, device=device, source=Source.MODBUS, source_ref=source_ref,
                           status=status))
    return out
