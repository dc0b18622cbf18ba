"""Wireless M-Bus conformance against wmbusmeters' driver test telegrams (test data only).

The corpus (``tests/corpora/wmbus/wmbusmeters_water_heat_gas.json``) has 34 water, heat
and gas cases. We support the ones whose billing registers are standard EN 13757-3 records:
the expected ``total_m3`` / ``total_volume_m3`` / ``volume_m3`` (→ litres) and
``total_energy_consumption_kwh`` / ``total_kwh`` / ``heat_kwh`` (→ Wh) must equal our
readings, truncated to whole base units like every reading. 26 cases are supported, 8 need a
manufacturer-specific driver or are malformed, and are rejected with an error naming why.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.ingest.model import Quantity, Source
from meterline.protocols.mbus.errors import ChecksumError, FrameError, MBusError, NoRegisterError
from meterline.protocols.mbus.frame import decode_response
from meterline.protocols.mbus.records import to_readings
from meterline.protocols.wmbus.telegram import (
    DecryptionFailed, KeyRequired, UnsupportedTelegram, add_crcs, decode_telegram, strip_crcs, telegram_readings,
)
from tests.unit.mbus._corpus import WMBUS

CASES = {c["case_id"]: c for c in json.loads((WMBUS / "wmbusmeters_water_heat_gas.json").read_text())}
TS = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
#: Diehl's published OMS default key (wmbusmeters' manufacturer_specificities), the key a
#: utility would configure for these meters
DIEHL_DEFAULT_KEY = bytes.fromhex("51728910E66D83F8" * 2)

VOLUME_KEYS = ("total_m3", "total_volume_m3", "volume_m3")
ENERGY_KEYS = ("total_energy_consumption_kwh", "total_kwh", "heat_kwh")

SUPPORTED = [
    "wmbus-006-hydrus", "wmbus-007-hydrus", "wmbus-009-supercom587", "wmbus-010-supercom587",
    "wmbus-012-qwater", "wmbus-016-kadenwater", "wmbus-018-picoflux", "wmbus-019-waterstarm",
    "wmbus-022-aventieswm", "wmbus-024-itron", "wmbus-026-q400", "wmbus-028-gwfwater",
    "wmbus-029-hydrodigit", "wmbus-030-ultrimisv2", "wmbus-031-kamheat", "wmbus-032-kamheat",
    "wmbus-034-sharky774", "wmbus-036-ultraheat", "wmbus-037-qheat", "wmbus-038-qheatv2",
    "wmbus-040-c5isf", "wmbus-043-supercal", "wmbus-047-istaheat", "wmbus-048-pollucomf",
    "wmbus-049-aerius", "wmbus-052-unismart",
]
#: case → (error class, words the message must contain)
NEEDS_DRIVER = {
    "wmbus-004-kamwater": (UnsupportedTelegram, "compact frame (CI 0x79)"),
    "wmbus-008-hydrus": (UnsupportedTelegram, "security mode 29"),
    "wmbus-013-apator162": (NoRegisterError, "no volume or energy register"),  # registers in manufacturer data
    "wmbus-014-izarv2": (UnsupportedTelegram, "manufacturer-specific application layer (CI 0xA2)"),
    "wmbus-015-izarv2": (UnsupportedTelegram, "manufacturer-specific application layer (CI 0xA2)"),
    "wmbus-023-mkradio3": (UnsupportedTelegram, "manufacturer-specific application layer (CI 0xA2)"),
    "wmbus-041-compact5": (UnsupportedTelegram, "manufacturer-specific application layer (CI 0xA1)"),
    # the L field says 55 bytes, the capture has 59: a malformed frame (wmbusmeters ignores L)
    "wmbus-011-qwater": (FrameError, "L field says 55 bytes follow"),
}


def test_every_case_is_classified() -> None:
    assert len(CASES) == 34
    assert len(SUPPORTED) == 26 and len(NEEDS_DRIVER) == 8
    assert set(SUPPORTED) | set(NEEDS_DRIVER) == set(CASES)


def _keys(case: dict) -> dict[str, bytes] | None:
    if case["aes_key"]:
        return {case["meter_id"]: bytes.fromhex(case["aes_key"])}
    if "Diehl OMS default key" in case["encryption"]:
        return {case["meter_id"]: DIEHL_DEFAULT_KEY}
    return None


def _readings(case: dict):
    raw = bytes.fromhex(case["telegram_hex"])
    if raw[0] == 0x68:  # a wired M-Bus long frame used in a wireless driver test
        return to_readings(decode_response(raw).records, ts=TS, device=case["meter_id"])
    telegram = decode_telegram(raw, keys=_keys(case))
    assert telegram.id == case["meter_id"]
    return telegram_readings(telegram, ts=TS)


def _base_units(value) -> int:
    return int(Decimal(str(value)) * 1000)  # m³ → L, kWh → Wh, truncated


@pytest.mark.parametrize("case_id", SUPPORTED)
def test_supported_case_gives_the_expected_registers(case_id: str) -> None:
    case = CASES[case_id]
    expected = case["expected_json"]
    got = {r.quantity: r.value for r in _readings(case)}
    checked = 0
    for keys, quantity in ((VOLUME_KEYS, Quantity.VOLUME), (ENERGY_KEYS, Quantity.ENERGY)):
        key = next((k for k in keys if k in expected), None)
        if key is not None:
            assert got[quantity] == _base_units(expected[key]), (key, expected[key], got)
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("case_id", sorted(NEEDS_DRIVER))
def test_case_needing_a_driver_is_rejected_with_the_reason(case_id: str) -> None:
    error, words = NEEDS_DRIVER[case_id]
    with pytest.raises(error) as info:
        _readings(CASES[case_id])
    assert words in str(info.value)
    assert isinstance(info.value, MBusError)


def test_readings_carry_source_device_and_status() -> None:
    (r,) = _readings(CASES["wmbus-022-aventieswm"])
    assert (r.source, r.device, r.value) == (Source.WMBUS, "61070071", 466472)
    assert r.source_ref.startswith("wmbus:AAA:61070071:")


def test_encrypted_payload_without_key_needs_one() -> None:
    case = CASES["wmbus-016-kadenwater"]
    with pytest.raises(KeyRequired, match="no key is configured") as info:
        decode_telegram(bytes.fromhex(case["telegram_hex"]))
    assert info.value.meter == case["meter_id"] and info.value.reason == "no_key"


def test_wrong_key_fails_verification() -> None:
    case = CASES["wmbus-016-kadenwater"]
    with pytest.raises(DecryptionFailed, match="wrong key"):
        decode_telegram(bytes.fromhex(case["telegram_hex"]), keys={case["meter_id"]: bytes(16)})


def test_header_says_encrypted_but_payload_is_plain() -> None:
    case = CASES["wmbus-026-q400"]  # configuration word says mode 5; payload starts 2F 2F
    raw = bytes.fromhex(case["telegram_hex"])
    telegram = decode_telegram(raw)
    assert telegram.security_mode == 5 and not telegram.decrypted
    assert telegram.records
    with pytest.raises(DecryptionFailed, match="looks unencrypted"):
        decode_telegram(raw, keys={case["meter_id"]: bytes(16)})


def test_key_lookup_may_be_a_callable() -> None:
    case = CASES["wmbus-018-picoflux"]
    key = bytes.fromhex(case["aes_key"])
    telegram = decode_telegram(bytes.fromhex(case["telegram_hex"]), keys=lambda meter: key)
    assert telegram.decrypted


@pytest.mark.parametrize("case_id", sorted(c for c in CASES if not CASES[c]["telegram_hex"].startswith("68")
                                            and c != "wmbus-011-qwater"))  # its L field is wrong
def test_link_layer_crcs_round_trip(case_id: str) -> None:
    raw = bytes.fromhex(CASES[case_id]["telegram_hex"])
    framed = add_crcs(raw)
    assert strip_crcs(framed) == raw
    broken = bytearray(framed)
    broken[len(broken) // 2] ^= 0x01
    with pytest.raises((ChecksumError, FrameError)):
        strip_crcs(bytes(broken))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_telegram_or_our_error(data: bytes) -> None:
    try:
        decode_telegram(data)
    except MBusError:
        pass


@settings(max_examples=300)
@given(st.sampled_from([0x7A, 0x72, 0x78, 0x8C, 0x8D, 0x90, 0x79, 0xA2]), st.binary(max_size=120))
def test_well_framed_random_payloads(ci: int, payload: bytes) -> None:
    body = bytes.fromhex("449344785634120107") + bytes([ci]) + payload  # C, M (QDS), A (12345678 v1 water)
    raw = bytes([len(body)]) + body
    try:
        decode_telegram(raw, keys={"12345678": bytes(16)})
    except MBusError:
        pass
