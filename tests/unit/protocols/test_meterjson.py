"""meterline's JSON schema: single readings, batches, exact units, every problem named."""

import datetime as dt

import pytest

from meterline.ingest.model import MeterStatus, Quantity, Source
from meterline.protocols import meterjson
from meterline.protocols.meterjson import SchemaError

UTC = dt.timezone.utc


def test_single_reading_iso_time_integer_litres() -> None:
    d = meterjson.decode(b'{"meter": "860000000000017", "ts": "2026-11-26T02:00:00+08:00", "value": 123456, "id": "m1"}')
    (r,) = d.readings
    assert r.device == "860000000000017" and r.meter_id is None
    assert r.ts == dt.datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    assert r.value == 123456 and r.quantity is Quantity.VOLUME
    assert r.source is Source.MQTT and r.source_ref == "m1" and d.message_id == "m1"


def test_unix_seconds_meter_id_and_default_meter() -> None:
    (r,) = meterjson.decode('{"meter_id": 42, "ts": 1795716000, "value": 7}').readings
    assert r.meter_id == 42 and r.device is None and r.ts == dt.datetime.fromtimestamp(1795716000, UTC)
    (r,) = meterjson.decode(b'{"ts": 1795716000, "value": 7}', meter="86x", source=Source.COAP).readings
    assert r.device == "86x" and r.source is Source.COAP


@pytest.mark.parametrize(("value", "unit", "expected"), [
    (12.345, "m3", 12345), ("12.3456", "m3", 12345), (0.1, "m3", 100), ("7", "L", 7), (1.9999, "L", 1),
    (3, "kWh", 3000), ("1.5", "MWh", 1_500_000), (2, "Wh", 2),
])
def test_units_convert_exactly_and_truncate(value, unit, expected) -> None:
    quantity = "energy" if "Wh" in unit else "volume"
    (r,) = meterjson.decode_object({"meter": "a", "ts": 0, "value": value, "unit": unit, "quantity": quantity}).readings
    assert r.value == expected and type(r.value) is int


def test_status_names_and_bits() -> None:
    (r,) = meterjson.decode_object({"meter": "a", "ts": 0, "value": 1, "status": ["leak", "low_battery"]}).readings
    assert r.status == MeterStatus.LEAK | MeterStatus.LOW_BATTERY
    (r,) = meterjson.decode_object({"meter": "a", "ts": 0, "value": 1, "status": 8}).readings
    assert r.status == MeterStatus.TAMPER


def test_batch_defaults_and_partial_rejection() -> None:
    d = meterjson.decode_object({
        "id": "c7-1", "concentrator": "C07", "ts": "2026-11-26T00:00:00Z", "unit": "m3",
        "readings": [
            {"meter": "a", "value": "1.5"},
            {"meter": "b", "value": -1},
            {"meter": "c", "value": 2, "ts": "2026-11-25T23:00:00"},
            "junk",
            {"meter": "d", "value": 3, "colour": "red"},
            {"meter": "e", "value": 4, "ts": "2026-11-25T12:00:00Z", "unit": "L"},
        ],
    })
    assert [(r.device, r.value) for r in d.readings] == [("a", 1500), ("e", 4)]
    assert all(r.source_ref == "c7-1" for r in d.readings)
    assert d.readings[1].ts == dt.datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert [(x.index, x.reason) for x in d.rejected] == [
        (1, "negative_register"), (2, "naive_timestamp"), (3, "bad_schema"), (4, "bad_schema")]
    assert d.concentrator == "C07"


def test_batch_meter_default_for_a_profile() -> None:
    d = meterjson.decode_object({"meter": "a", "readings": [{"ts": 0, "value": 1}, {"ts": 3600, "value": 2}]})
    assert [(r.device, r.value) for r in d.readings] == [("a", 1), ("a", 2)]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "bad_json"),
    (b"\xff\xfe", "bad_json"),
    (b"[1, 2]", "bad_schema"),
    (b'{"meter": "a", "ts": 0}', "missing_field"),
    (b'{"ts": 0, "value": 1}', "missing_field"),
    (b'{"meter": "a", "value": 1}', "missing_field"),
    (b'{"meter": 5, "ts": 0, "value": 1}', "wrong_type"),
    (b'{"meter": "a", "ts": true, "value": 1}', "wrong_type"),
    (b'{"meter": "a", "ts": "yesterday", "value": 1}', "bad_timestamp"),
    (b'{"meter": "a", "ts": "2026-01-01T00:00:00", "value": 1}', "naive_timestamp"),
    (b'{"meter": "a", "ts": 1e300, "value": 1}', "bad_timestamp"),
    (b'{"meter": "a", "ts": 0, "value": -5}', "negative_register"),
    (b'{"meter": "a", "ts": 0, "value": "-0.5", "unit": "m3"}', "negative_register"),
    (b'{"meter": "a", "ts": 0, "value": true}', "wrong_type"),
    (b'{"meter": "a", "ts": 0, "value": "12,5"}', "bad_value"),
    (b'{"meter": "a", "ts": 0, "value": 1e40}', "bad_value"),
    (b'{"meter": "a", "ts": 0, "value": 99999999999999999999}', "bad_value"),
    (b'{"meter": "a", "ts": 0, "value": 1, "unit": "gallon"}', "bad_unit"),
    (b'{"meter": "a", "ts": 0, "value": 1, "unit": "kWh"}', "bad_unit"),
    (b'{"meter": "a", "ts": 0, "value": 1, "status": ["on fire"]}', "bad_status"),
    (b'{"meter": "a", "ts": 0, "value": 1, "extra": 1}', "bad_schema"),
    (b'{"readings": {}}', "wrong_type"),
])
def test_bad_messages_are_named(raw, reason) -> None:
    with pytest.raises(SchemaError) as info:
        meterjson.decode(raw)
    assert info.value.reason == reason
    assert info.value.raw == raw


def test_encode_round_trip() -> None:
    ts = dt.datetime(2026, 1, 1, tzinfo=UTC)
    (r,) = meterjson.decode(meterjson.encode(meter="a", ts=ts, value=5)).readings
    assert (r.device, r.ts, r.value) == ("a", ts, 5)
