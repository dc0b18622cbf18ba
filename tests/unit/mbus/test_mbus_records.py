"""The record layer's public API: decode_records, to_readings, meter_status."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.errors import DecodeError
from meterline.ingest.model import MeterStatus, Quantity, Source
from meterline.protocols.mbus.errors import MBusError, NoRegisterError, TruncatedRecord, UnknownVIF
from meterline.protocols.mbus.frame import decode_response, long_frame, parse_hex
from meterline.protocols.mbus.records import Function, decode_records, meter_status, to_readings

UTC = dt.timezone.utc
TS = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def records(hex_text: str, **kw):
    return decode_records(parse_hex(hex_text), **kw)


def test_volume_bcd_litres_exact() -> None:
    # DIF 0C (8-digit BCD), VIF 13 (m³ × 1e-3): 00012345 → 12.345 m³
    (rec,) = records("0C 13 45 23 01 00")
    assert (rec.quantity, rec.unit, rec.value) == ("Volume", "m^3", Decimal("12.345"))
    (r,) = to_readings([rec], ts=TS, device="12345678")
    assert (r.value, r.quantity, r.source, r.device, r.ts) == (12345, Quantity.VOLUME, Source.MBUS, "12345678", TS)


def test_energy_kwh_mwh_gj() -> None:
    recs = records(
        "04 06 10 27 00 00"  # 10000 kWh
        " 84 10 FB 01 07 00 00 00"  # tariff 1: 7 MWh (FB 01: MWh)
        " 0C FB 09 99 99 00 00"  # 9999 GJ, BCD, via FB 09 (1 GJ)
    )
    assert [(r.unit, r.value, r.tariff) for r in recs] == [
        ("Wh", Decimal(10_000_000), 0), ("Wh", Decimal(7_000_000), 1), ("J", Decimal(9999 * 10**9), 0)]
    readings = to_readings(recs, ts=TS)
    # first energy register wins; tariff registers are not the total
    assert [(r.quantity, r.value) for r in readings] == [(Quantity.ENERGY, 10_000_000)]
    (gj,) = to_readings(recs[2:], ts=TS)
    assert gj.value == 9999 * 10**9 // 3600  # 2 777 500 000 Wh, truncated


def test_energy_in_megajoule_truncates_to_whole_wh() -> None:
    (rec,) = records("04 0E 01 00 00 00")  # VIF 0E: 1e6 J → 1 MJ = 277.77… Wh
    assert rec.value == Decimal(10**6)
    assert to_readings([rec], ts=TS)[0].value == 277


def test_real_value_is_the_shortest_decimal() -> None:
    (rec,) = records("05 16 A4 88 96 44")  # float32 nearest 1204.27 (1204.27001953125), VIF 16: m³
    assert rec.value == Decimal("1204.27")
    assert to_readings([rec], ts=TS)[0].value == 1_204_270


def test_negative_bcd_and_signed_int() -> None:
    recs = records("0A 2B 34 F2 02 2B FE FF")  # BCD -234 W, int16 -2 W
    assert [r.value for r in recs] == [Decimal(-234), Decimal(-2)]


def test_reverse_volume_register() -> None:
    recs = records("04 93 3C 10 00 00 00 04 13 20 00 00 00")
    assert recs[0].reverse and not recs[1].reverse
    got = {(r.quantity, r.value) for r in to_readings(recs, ts=TS)}
    assert got == {(Quantity.VOLUME_REVERSE, 16), (Quantity.VOLUME, 32)}


def test_history_uses_the_storage_date_end_of_day() -> None:
    recs = records(
        "04 13 E8 03 00 00"  # now: 1.000 m³
        " 44 13 F4 01 00 00"  # storage 1: 0.500 m³
        " 42 6C 1F 3C"  # storage 1: 2024-12-31 (type G)
    )
    assert recs[2].value == dt.date(2024, 12, 31)
    tz = dt.timezone(dt.timedelta(hours=8))
    got = to_readings(recs, ts=TS, history=True, tz=tz)
    assert [(r.ts, r.value) for r in got] == [(TS, 1000), (dt.datetime(2025, 1, 1, tzinfo=tz), 500)]
    assert [r.value for r in to_readings(recs, ts=TS)] == [1000]


def test_datetime_types() -> None:
    recs = records("04 6D 19 0F 8A 17 06 6D 05 04 03 0A 11 00 03 FD 30 00 00 00")
    assert recs[0].value == dt.datetime(2012, 7, 10, 15, 25)
    assert recs[1].value == dt.datetime(2008, 1, 10, 3, 4, 5)  # type I


def test_special_dif_and_fillers() -> None:
    recs = records("2F 2F 04 13 01 00 00 00 2F 1F AA BB")
    assert [r.function for r in recs] == [Function.INSTANTANEOUS, Function.MORE_RECORDS_FOLLOW]
    assert recs[1].value == b"\xaa\xbb"


def test_plain_text_vif_and_correction_factor() -> None:
    (rec,) = records("02 FC 03 48 52 25 74 22 15")
    assert (rec.quantity, rec.unit, rec.value) == ("%RH", "-", Decimal("54.10"))


def test_record_error_code_vife() -> None:
    (rec,) = records("04 93 15 00 00 00 00")  # VIFE 0x15: no data available
    assert rec.error == "no data available (undefined value)"


def test_unknown_vif_is_kept_or_refused_in_strict_mode() -> None:
    (rec,) = records("01 FD 7F 05")
    assert rec.quantity == "Reserved" and rec.value == Decimal(5)
    with pytest.raises(UnknownVIF, match="0xFF in the 0xFD extension table"):
        records("01 FD FF 00 05", strict=True)


def test_truncated_record_names_offset() -> None:
    with pytest.raises(TruncatedRecord) as info:
        records("04 13 01 00 00 00 04 13 01")
    assert info.value.record == 1 and info.value.offset == 6 and "4 data byte(s) expected, 1 left" in str(info.value)


def test_no_register() -> None:
    with pytest.raises(NoRegisterError):
        to_readings(records("02 5B 15 00"), ts=TS)


@pytest.mark.parametrize(("byte", "status"), [
    (0x00, MeterStatus.NONE), (0x04, MeterStatus.LOW_BATTERY), (0x08, MeterStatus.HARDWARE_ERROR),
    (0x10, MeterStatus.TEMPORARY_ERROR), (0x02, MeterStatus.HARDWARE_ERROR), (0x01, MeterStatus.NONE),
    (0x1C, MeterStatus.LOW_BATTERY | MeterStatus.HARDWARE_ERROR | MeterStatus.TEMPORARY_ERROR),
    (0xE0, MeterStatus.NONE),
])
def test_meter_status(byte: int, status: MeterStatus) -> None:
    assert meter_status(byte) == status


@given(st.integers(0, 99_999_999), st.integers(0, 7))
def test_bcd_volume_converts_exactly(n: int, e: int) -> None:
    data = bytes([0x0C, 0x10 + e]) + bytes.fromhex(f"{n:08d}")[::-1]
    (rec,) = decode_records(data)
    assert rec.value == Decimal(n).scaleb(e - 6)
    (r,) = to_readings([rec], ts=TS)
    assert r.value == n * 10 ** e // 1000  # litres, truncated


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_any_bytes_give_records_or_our_error(data: bytes) -> None:
    try:
        out = decode_records(data)
    except MBusError as exc:
        assert isinstance(exc, DecodeError) and str(exc)
    else:
        assert all(r.offset < len(data) for r in out)


@settings(max_examples=300)
@given(st.sampled_from([0x72, 0x7A, 0x78, 0x73, 0x70, 0x51]), st.binary(max_size=240))
def test_any_long_frame_gives_a_response_or_our_error(ci: int, data: bytes) -> None:
    frame = long_frame(0x08, 1, ci, data)
    try:
        decode_response(frame)
    except MBusError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_as_frame(data: bytes) -> None:
    try:
        decode_response(data)
    except MBusError:
        pass


def test_empty_variable_length_bcd_is_zero() -> None:
    (rec,) = records("0D 13 C0")  # LVAR C0: a positive BCD number of 0 digits
    assert rec.value == Decimal(0)


def test_history_ignores_dates_that_are_not_storage_time_points() -> None:
    recs = records(
        "44 13 F4 01 00 00"  # storage 1: 0.500 m³
        " 42 FD 70 1F 3C"  # storage 1: date of battery change, not the storage's time point
    )
    assert [r.value for r in to_readings(recs + records("04 13 01 00 00 00"), ts=TS, history=True)] == [1]
