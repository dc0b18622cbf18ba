"""Modbus profiles: every built-in profile's vectors, decoding rules, read planning."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.errors import ConfigError
from meterline.ingest.model import Quantity, Source
from meterline.protocols.modbus.profiles import (
    MAX_READ, ModbusDecodeError, RegisterSpec, builtin_profiles, decode_registers, decode_value, load_profile,
    parse_profile, plan_reads, to_readings,
)

TS = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
PROFILES = builtin_profiles()


def test_there_are_profiles() -> None:
    assert len(PROFILES) >= 4


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_vectors(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.vectors, "every profile carries vectors"
    for vector in profile.vectors:
        values = decode_registers(profile, vector.registers)
        for name, expected in vector.expect.items():
            assert values[name] == expected, (name, values[name], expected)
            assert str(values[name]) == str(expected), "exact digits, no float drift"
        readings = to_readings(profile, values, ts=TS, device="dev-1")
        got = {Quantity(r.quantity).name.lower(): r.value for r in readings}
        assert got == vector.readings
        assert all(r.source is Source.MODBUS and r.device == "dev-1" for r in readings)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_reads_are_batched(path: Path) -> None:
    profile = load_profile(path)
    blocks = plan_reads(profile.registers)
    assert sorted(s.name for b in blocks for s in b.specs) == sorted(s.name for s in profile.registers)
    for b in blocks:
        assert b.count <= MAX_READ and all(b.address <= s.address and s.end <= b.address + b.count for s in b.specs)


def test_plan_groups_contiguous_and_splits_functions_and_gaps() -> None:
    profile = load_profile("heat-meter-float32")
    blocks = plan_reads(profile.registers)
    assert [(b.function, b.address, b.count) for b in blocks] == [(4, 0, 10), (4, 20, 2)]
    assert [(b.address, b.count) for b in plan_reads(profile.registers, max_gap=10)] == [(0, 22)]
    assert [(b.address, b.count) for b in plan_reads(profile.registers, max_count=4)] == [(0, 4), (4, 4), (8, 2), (20, 2)]
    mixed = [RegisterSpec("a", 0, 3, "uint16"), RegisterSpec("b", 1, 4, "uint16"), RegisterSpec("c", 1, 3, "uint32")]
    assert [(b.function, b.address, b.count) for b in plan_reads(mixed)] == [(3, 0, 3), (4, 1, 1)]


@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["uint16", "uint32", "int64"]), st.sampled_from([3, 4])),
                min_size=1, max_size=40),
       st.integers(0, 5), st.integers(4, 125))
def test_plan_covers_every_register_within_limits(regs, gap, max_count) -> None:
    specs = [RegisterSpec(f"r{i}", a, fn, t) for i, (a, t, fn) in enumerate(regs)]
    blocks = plan_reads(specs, max_count=max_count, max_gap=gap)
    covered = [s for b in blocks for s in b.specs]
    assert sorted(s.name for s in covered) == sorted(s.name for s in specs)
    for b in blocks:
        assert b.count <= max_count
        assert all(s.function == b.function and b.address <= s.address and s.end <= b.address + b.count
                   for s in b.specs)


@pytest.mark.parametrize(("type_", "words", "order", "value"), [
    ("int16", [0xFFFE], "big", Decimal(-2)),
    ("uint16", [0xFFFE], "big", Decimal(65534)),
    ("int32", [0xFFFF, 0xFFFF], "big", Decimal(-1)),
    ("uint32", [0x5678, 0x1234], "little", Decimal(0x12345678)),
    ("uint64", [0, 0, 0, 1], "big", Decimal(1)),
    ("float64", [0x3FB9, 0x9999, 0x9999, 0x999A], "big", Decimal("0.1")),
    ("bcd16", [0x1234], "big", Decimal(1234)),
])
def test_types(type_, words, order, value) -> None:
    assert decode_value(RegisterSpec("x", 0, 3, type_, word_order=order), words) == value


def test_byte_order_little_swaps_bytes_in_each_register() -> None:
    spec = RegisterSpec("x", 0, 3, "uint32", byte_order="little", word_order="big")
    assert decode_value(spec, [0x3412, 0x7856]) == Decimal(0x12345678)


def test_bad_registers_raise_decode_errors() -> None:
    with pytest.raises(ModbusDecodeError, match="non-decimal digits 12A4"):
        decode_value(RegisterSpec("v", 0, 3, "bcd16"), [0x12A4])
    with pytest.raises(ModbusDecodeError, match="nan"):
        decode_value(RegisterSpec("v", 0, 3, "float32"), [0x7FC0, 0])
    with pytest.raises(ModbusDecodeError, match="needs 2 register"):
        decode_value(RegisterSpec("v", 0, 3, "uint32"), [1])
    with pytest.raises(ModbusDecodeError, match="were not read"):
        decode_registers(load_profile("gas-meter-bcd"), {(3, 0): [0, 0]})


def test_energy_in_gj_converts_exactly() -> None:
    profile = parse_profile({"profile": {"name": "gj"}, "register": [
        {"name": "e", "address": 0, "type": "uint32", "scale": "0.001", "unit": "GJ", "quantity": "energy"}]})
    (r,) = to_readings(profile, {"e": Decimal("1.000")}, ts=TS)
    assert r.value == 277777  # 1 GJ = 277 777.7… Wh, truncated


def test_invalid_profile_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile({"profile": {"colour": "red"}, "register": [
            {"name": "a", "address": -1, "type": "int128", "function": 5, "scale": "x"},
            {"name": "a", "address": 1, "type": "uint16", "unit": "kg", "quantity": "volume", "extra": 1},
        ], "vector": [{"expect": {"zzz": "1"}}]})
    text = "\n".join(info.value.problems)
    for words in ("profile.colour: unknown key", "profile.name: required", "register[0].address",
                  "register[0].type", "register[0].function", "register[0].scale", "register[1].name: 'a' is defined twice",
                  "register[1].unit: 'kg' cannot be converted", "register[1].extra: unknown key",
                  "vector[0].expect.zzz: no such register"):
        assert words in text


def test_unknown_profile_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="gas-meter-bcd"):
        load_profile("no-such-meter")
