"""Payload codecs: every layout's own vectors, and every vector of the shared corpus."""

import datetime as dt
import json
import math

import pytest

from meterline.errors import ConfigError
from meterline.protocols.lorawan import codecs
from meterline.protocols.lorawan.codecs import CodecError, layout
from tests.corpora import LORAWAN

CORPUS = LORAWAN / "device-codecs" / "vectors.json"
UTC = dt.timezone.utc
LAYOUT_FILES = sorted(codecs.LAYOUTS.glob("*.toml"))


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _layout_vectors():
    for path in LAYOUT_FILES:
        lay = layout.load(path)
        for i, v in enumerate(lay.vectors):
            yield pytest.param(lay.name, v, id=f"{path.stem}[{i}]")


def test_layout_files_are_named_after_their_codec() -> None:
    assert LAYOUT_FILES
    for path in LAYOUT_FILES:
        lay = layout.load(path)
        assert lay.name == path.stem.replace("_", "-")
        assert lay.vectors, f"{path.name} has no vectors"


@pytest.mark.parametrize(("name", "vector"), list(_layout_vectors()))
def test_layout_vectors(name, vector) -> None:
    codec = codecs.create(name, vector.get("params", {}))
    payload = bytes.fromhex(vector["bytes"])
    if "error" in vector:
        with pytest.raises(CodecError) as info:
            codec.decode(payload, vector.get("f_port"))
        assert info.value.reason == vector["error"] and info.value.raw == payload
        return
    out = codec.decode(payload, vector.get("f_port"))
    for key, want in vector["fields"].items():
        assert _same(out.fields[key], want), key
    got = [(r.value, None if r.ts is None else int(r.ts.timestamp())) for r in out.registers]
    assert got == [(r["value"], r.get("ts")) for r in vector["registers"]]


def _corpus():
    for v in json.loads(CORPUS.read_text()):
        yield pytest.param(v, id=f"{v['source_path'].split('/')[1]}:{v['description'][:40]}")


def _check_milesight(v, expected) -> None:
    out = codecs.create("milesight-em300-di").decode(bytes.fromhex(v["bytes_hex"]), v["fPort"])
    assert _same(dict(out.fields), expected["data"])
    assert [r.value for r in out.registers] == [expected["data"]["pulse"]]


def _check_axioma(v, expected) -> None:
    out = codecs.create("axioma-qalcosonic-w1").decode(bytes.fromhex(v["bytes_hex"]), v["fPort"])
    data, f = expected["data"], out.fields
    for key in ("payload_format", "frame_version", "timestamp_unix", "status", "low_battery", "permanent_error",
                "temporary_error", "pipe_empty", "backflow", "burst", "leakage", "low_temperature",
                "history_multiplier"):
        assert f[key] == data[key], key
    assert len(v["bytes_hex"]) // 2 == data["payload_bytes"]
    assert f["log_volume_l"] == round(data["log_volume_m3"] * 1000)
    assert len(f["delta_l"]) == data["history_count"]
    assert f["delta_l"] == [round(data[f"delta_{i}_m3"] * 1000) for i in range(1, 24)]
    assert sum(f["delta_l"]) == round(data["history_total_m3"] * 1000)
    (reg,) = out.registers
    assert reg.value == round(data["current_volume_m3"] * 1000)
    assert reg.ts == dt.datetime.fromisoformat(data["timestamp_utc"])


def _check_kamstrup(v, expected) -> None:
    """The vendor's whole expected output: every value, unit and time, and the warnings."""
    codec = codecs.create("kamstrup")
    payload = bytes.fromhex(v["bytes_hex"])
    if expected["errors"]:
        with pytest.raises(CodecError) as info:
            codec.decode(payload, v["fPort"])
        assert info.value.reason == "no_base_value" and "base value" in str(info.value)
        return
    out = codec.decode(payload, v["fPort"])
    assert out.fields["values"] == expected["data"]["values"]
    assert out.fields.get("latestVolume") == expected["data"].get("latestVolume")
    assert list(out.warnings) == expected["warnings"]
    volumes = [x for x in expected["data"]["values"] if x["Type"] == "Volume"]
    assert [(r.value, r.ts.replace(tzinfo=None)) for r in out.registers] == [
        (round(x["Value"] * 1000), dt.datetime.fromisoformat(x["Timestamp"])) for x in volumes]


def _check_sensus(v, expected) -> None:
    expected = expected["data"]
    out = codecs.create("sensus-iperl").decode(bytes.fromhex(v["bytes_hex"]), v["fPort"])
    f = out.fields
    assert (f["access"], f["status"], f["config"], f["alarms"]) == (
        expected["accessNo"], expected["status"], expected["config"], expected["alarms"])
    want = []
    for rec in expected["records"]:
        if rec["vifType"] != "VOLUME":
            continue
        if rec.get("isCompactProfile"):
            want += [(x["value"], x["timestamp"]) for x in rec["values"]]
        else:
            when = next(r["value"] for r in expected["records"] if r["vifType"] == "TIME_POINT"
                        and r["storage"] == rec["storage"])
            want.append((rec["value"], when))
    got = [(r.value, int(r.ts.timestamp())) for r in out.registers]  # litres = m3 x 10^-3 units
    assert sorted(got) == sorted(set(want))  # upstream lists the base value in the profile as well


CHECKS = {"milesight-iot": _check_milesight, "axioma": _check_axioma, "kamstrup": _check_kamstrup,
          "sensus": _check_sensus}


@pytest.mark.parametrize("vector", list(_corpus()))
def test_corpus_vectors(vector) -> None:
    vendor = vector["source_path"].split("/")[1]
    assert vendor in CHECKS, f"no check for {vendor}'s vectors"
    CHECKS[vendor](vector, vector["expected_output"])


def _code_vectors():
    import tomllib

    for path in (codecs.LAYOUTS.parent / "kamstrup.toml", codecs.LAYOUTS.parent / "oms.toml"):
        data = tomllib.loads(path.read_text())
        for i, v in enumerate(data["vector"]):
            yield pytest.param(v.get("codec", data.get("name")), v, id=f"{path.stem}[{i}]")


@pytest.mark.parametrize(("name", "vector"), list(_code_vectors()))
def test_records_codec_vectors(name, vector) -> None:
    from meterline.ingest.model import MeterStatus, Quantity

    codec = codecs.create(name, vector.get("params", {}))
    payload = bytes.fromhex(vector["bytes"])
    if "error" in vector:
        with pytest.raises(CodecError) as info:
            codec.decode(payload, vector.get("f_port"))
        assert info.value.reason == vector["error"] and info.value.raw == payload
        return
    out = codec.decode(payload, vector.get("f_port"))
    for key, want in vector.get("fields", {}).items():
        assert out.fields[key] == want, key
    want = [(r["value"], r.get("ts"), Quantity[r.get("quantity", "volume").upper()],
             sum(int(MeterStatus[s.upper()]) for s in r.get("status", []))) for r in vector["registers"]]
    got = [(r.value, r.ts.isoformat() if r.ts else None, r.quantity, r.status) for r in out.registers]
    assert got == want
    assert len(out.warnings) == vector.get("warnings", 0)


def test_unknown_codec_and_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no payload codec named 'nope'"):
        codecs.create("nope")
    with pytest.raises(ConfigError, match="unknown parameter 'litres'"):
        codecs.create("milesight-em300-di", {"litres": 10})
    with pytest.raises(ConfigError, match="must be an integer"):
        codecs.create("milesight-em300-di", {"litres_per_pulse": "ten"})


def test_object_codec_exact_units_and_time() -> None:
    c = codecs.create("object", {"field": "meter.latestVolume", "unit": "m3", "ts_field": "at"})
    out = c.decode(b"", 1, {"meter": {"latestVolume": 7842.497}, "at": "2026-01-01T00:00:00Z"})
    assert out.registers[0].value == 7842497 and out.registers[0].ts == dt.datetime(2026, 1, 1, tzinfo=UTC)
    for obj, reason in [(None, "no_object"), ({}, "missing_field"), ({"meter": {"latestVolume": -1}}, "negative_register"),
                        ({"meter": {"latestVolume": "x"}}, "wrong_type"), ({"meter": {"latestVolume": True}}, "wrong_type")]:
        with pytest.raises(CodecError) as info:
            c.decode(b"", 1, obj)
        assert info.value.reason == reason


def test_layout_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        layout.parse({"name": "x", "kind": "odd", "colour": 1, "register": [{"field": "a", "quantity": "heat"}]})
    text = str(info.value)
    assert "kind" in text and "colour" in text and "quantity" in text
