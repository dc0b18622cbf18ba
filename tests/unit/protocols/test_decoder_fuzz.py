"""Fuzzing: whatever the input, a decoder returns or raises its own DecodeError subclass."""

import base64
import json

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.protocols import coap, meterjson
from meterline.protocols.lorawan import UplinkError, chirpstack, codecs, to_readings, tts
from meterline.protocols.lorawan.codecs import CodecError
from meterline.protocols.meterjson import SchemaError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "m3", "L", "kWh", "leak",
                                     "volume", "energy", "1.5", "-1", "0101010101010101", "qg==", "@@"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=20)
reading_keys = st.sampled_from(["meter", "meter_id", "ts", "value", "unit", "quantity", "status", "id"])
readings = st.dictionaries(reading_keys, json_values, max_size=7)
messages = st.one_of(readings, st.fixed_dictionaries(
    {"readings": st.one_of(st.lists(st.one_of(readings, json_values), max_size=5), json_values)},
    optional={"id": json_values, "concentrator": json_values, "ts": json_values, "meter": json_values,
              "unit": json_values, "quantity": json_values}))


def _dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


@SETTINGS
@given(st.binary(max_size=200))
def test_meterjson_any_bytes(raw) -> None:
    try:
        meterjson.decode(raw)
    except SchemaError:
        pass


@SETTINGS
@given(messages)
def test_meterjson_any_message(msg) -> None:
    try:
        d = meterjson.decode(_dumps(msg))
    except SchemaError as exc:
        assert exc.reason and exc.raw is not None
        return
    for r in d.readings:
        assert type(r.value) is int and 0 <= r.value < 2**63
        assert r.ts.tzinfo is not None and r.ts.utcoffset() is not None


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([None, 50, 60, 0, 42]))
def test_coap_any_body(raw, fmt) -> None:
    try:
        coap.decode_body(raw, fmt, meter="m")
    except SchemaError:
        pass


@SETTINGS
@given(messages)
def test_coap_any_cbor_message(msg) -> None:
    try:
        coap.decode_body(cbor2.dumps(msg), 60)
    except SchemaError:
        pass


envelope_values = st.one_of(json_values, st.integers(0, 2**33).map(str))
chirpstack_events = st.fixed_dictionaries({}, optional={
    "deviceInfo": st.one_of(json_values, st.fixed_dictionaries({"devEui": st.one_of(
        st.sampled_from(["0101010101010101", "70B3D50000000001", "zz"]), json_values)}, optional={
        "deviceProfileName": json_values, "deviceProfileId": json_values})),
    "fCnt": envelope_values, "fPort": envelope_values, "data": st.one_of(
        st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()), json_values),
    "time": json_values, "deduplicationId": json_values, "object": json_values, "adr": json_values,
    "confirmed": json_values, "txInfo": st.one_of(json_values, st.fixed_dictionaries({"frequency": envelope_values})),
})
tts_messages = st.fixed_dictionaries({}, optional={
    "end_device_ids": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "dev_eui": st.one_of(st.just("0004A30B001C0530"), json_values), "device_id": json_values,
        "application_ids": json_values})),
    "correlation_ids": json_values, "received_at": json_values,
    "uplink_message": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "f_cnt": envelope_values, "f_port": envelope_values, "frm_payload": json_values,
        "decoded_payload": json_values, "settings": json_values, "version_ids": json_values})),
})


@SETTINGS
@given(st.one_of(st.binary(max_size=200), chirpstack_events.map(_dumps)))
def test_chirpstack_any_event(raw) -> None:
    try:
        up = chirpstack.decode_up(raw, topic="application/a/device/0101010101010101/event/up")
    except UplinkError:
        return
    assert up.dev_eui and 0 <= up.f_cnt < 2**32 and 0 <= up.f_port <= 255


@SETTINGS
@given(st.one_of(st.binary(max_size=200), tts_messages.map(_dumps)))
def test_tts_any_message(raw) -> None:
    try:
        tts.decode_up(raw)
    except UplinkError:
        pass


@SETTINGS
@given(st.sampled_from(codecs.names()), st.binary(max_size=80), st.one_of(st.none(), st.integers(0, 255)),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values, max_size=4)))
def test_codecs_any_payload(name, payload, f_port, obj) -> None:
    codec = codecs.create(name)
    try:
        out = codec.decode(payload, f_port, obj)
    except CodecError:
        return
    for r in out.registers:
        assert type(r.value) is int and r.value >= 0


def _valid_frames():
    import tomllib

    from meterline.protocols.lorawan.codecs import layout

    out = []
    for path in codecs.LAYOUTS.glob("*.toml"):
        lay = layout.load(path)
        out += [(lay.name, v) for v in lay.vectors if "error" not in v]
    for path in (codecs.LAYOUTS.parent / "kamstrup.toml", codecs.LAYOUTS.parent / "oms.toml"):
        data = tomllib.loads(path.read_text())
        out += [(v.get("codec", data.get("name")), v) for v in data["vector"] if "error" not in v]
    return out


VALID_FRAMES = _valid_frames()


@SETTINGS
@given(st.sampled_from(VALID_FRAMES), st.data())
def test_codecs_near_valid_frames(case, data) -> None:
    """Mutations of each codec's own vectors reach deeper than random bytes."""
    name, vector = case
    frame = bytearray.fromhex(vector["bytes"])
    for _ in range(data.draw(st.integers(0, 4))):
        if frame:
            i = data.draw(st.integers(0, len(frame) - 1))
            frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        out = codecs.create(name).decode(bytes(frame[:cut] if data.draw(st.booleans()) else frame),
                                         vector.get("f_port"))
        up = chirpstack.decode_up(json.dumps({"deviceInfo": {"devEui": "0101010101010101"}, "time": "2026-01-01T00:00:00Z"}))
        to_readings(up, out.registers)
    except (CodecError, UplinkError):
        pass
