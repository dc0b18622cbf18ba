"""ChirpStack v4 and The Things Stack v3 uplinks, from the corpora and with their quirks."""

import base64
import datetime as dt
import json

import pytest

from meterline.ingest.model import Source
from meterline.protocols.lorawan import UplinkError, chirpstack, to_readings, tts
from meterline.protocols.lorawan.codecs import Register
from tests.corpora import LORAWAN

CORPORA = LORAWAN
UTC = dt.timezone.utc


def test_chirpstack_docs_event_with_omitted_defaults() -> None:
    up = chirpstack.decode_up((CORPORA / "chirpstack-v4" / "event_up.json").read_bytes())
    assert up.dev_eui == "0101010101010101"
    assert up.f_cnt == 0 and up.adr is False and up.confirmed is False  # omitted in protobuf JSON
    assert up.f_port == 1 and up.payload == b"\xaa"
    assert up.dedup_id == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d"
    assert up.time == dt.datetime(2022, 7, 18, 9, 34, 15, 775023, tzinfo=UTC)
    assert up.profiles == ("Test device-profile", "14855bf7-d10d-4aee-b618-ebfcb64dc7ad")
    assert up.frequency == 867100000 and up.object is None


def test_chirpstack_object_and_devEui_from_topic() -> None:
    body = {"fCnt": 7, "fPort": 2, "data": base64.b64encode(b"\x01\x02").decode(), "object": {"value": 5},
            "time": "2026-01-01T00:00:00Z", "adr": True}
    up = chirpstack.decode_up(json.dumps(body), topic="application/x/device/70B3D50000000001/event/up")
    assert up.dev_eui == "70b3d50000000001" and up.f_cnt == 7 and up.object == {"value": 5} and up.adr


def test_tts_example_invalid_json_upstream_is_an_error() -> None:
    with pytest.raises(UplinkError) as info:
        tts.decode_up((CORPORA / "tts-v3" / "01_uplink_message.json").read_bytes())
    assert info.value.reason == "bad_json" and info.value.raw.startswith(b"{")


def test_tts_fixed_example_frequency_string_and_omitted_port() -> None:
    up = tts.decode_up((CORPORA / "tts-v3" / "01_uplink_message.FIXED.json").read_bytes())
    assert up.dev_eui == "0004a30b001c0530" and up.f_cnt == 1
    assert up.f_port == 0  # omitted upstream
    assert up.frequency == 868300000  # a string upstream
    assert up.payload == base64.b64decode("gkHe")
    assert up.dedup_id == "as:up:01E0WZGT6Y7657CPFPE5WEYDSQ"
    assert up.object == {"temperature": 1.0, "luminosity": 0.64}
    assert up.profiles[0] == "the-things-products/the-things-uno"


def test_tts_without_dev_eui_is_named_by_device_id() -> None:
    body = {"end_device_ids": {"device_id": "meter-7"}, "uplink_message": {"frm_payload": "AQ==", "f_port": 3}}
    assert tts.decode_up(json.dumps(body)).dev_eui == "meter-7"


@pytest.mark.parametrize(("module", "body", "reason"), [
    (chirpstack, b"{", "bad_json"),
    (chirpstack, b"[]", "bad_uplink"),
    (chirpstack, b"{}", "missing_field"),
    (chirpstack, b'{"deviceInfo": {"devEui": "xyz"}}', "bad_value"),
    (chirpstack, b'{"deviceInfo": {"devEui": "0101010101010101"}, "fCnt": -1}', "bad_value"),
    (chirpstack, b'{"deviceInfo": {"devEui": "0101010101010101"}, "fPort": "x"}', "wrong_type"),
    (chirpstack, b'{"deviceInfo": {"devEui": "0101010101010101"}, "data": "@@@"}', "bad_payload"),
    (chirpstack, b'{"deviceInfo": {"devEui": "0101010101010101"}, "time": "noon"}', "bad_timestamp"),
    (chirpstack, b'{"deviceInfo": {"devEui": "0101010101010101"}, "object": [1]}', "wrong_type"),
    (tts, b'{"uplink_message": {}}', "missing_field"),
    (tts, b'{"end_device_ids": {"dev_eui": "0004A30B001C0530"}}', "missing_field"),
    (tts, b'{"end_device_ids": {"dev_eui": "0004A30B001C0530"}, "uplink_message": {"f_cnt": "1.5"}}', "wrong_type"),
])
def test_bad_envelopes(module, body, reason) -> None:
    with pytest.raises(UplinkError) as info:
        module.decode_up(body)
    assert info.value.reason == reason and info.value.raw == body


def test_readings_are_stamped_with_the_uplink_time_and_referenced() -> None:
    up = chirpstack.decode_up((CORPORA / "chirpstack-v4" / "event_up.json").read_bytes())
    own = dt.datetime(2022, 7, 18, 0, 0, tzinfo=UTC)
    rs = to_readings(up, [Register(5), Register(6, ts=own)])
    assert [(r.device, r.value, r.ts, r.source, r.source_ref) for r in rs] == [
        ("0101010101010101", 5, up.time, Source.LORAWAN, up.dedup_id),
        ("0101010101010101", 6, own, Source.LORAWAN, up.dedup_id),
    ]
