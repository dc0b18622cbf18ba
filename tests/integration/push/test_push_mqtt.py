"""MQTT source end to end: real broker, real PostgreSQL, acknowledgement after commit."""

import base64
import json
import time

import pytest

from meterline.ingest.sources import load
from meterline.errors import ConfigError

from .pushkit import EUIS, IMEIS, ServiceThread, add_meters, count, publish, reading_json, wait_for

T0 = int(time.time()) - 86400


def _source(mqtt_broker, topic, **extra):
    host, port = mqtt_broker
    return {"kind": "mqtt", "host": host, "port": port, "topics": [f"{topic}/#"], "batch_delay_ms": 5,
            "client_id": f"ml-{topic.replace('/', '-')}", "session_expiry_s": 60, **extra}


def test_meterline_json_single_batch_and_bad_messages(db_dsn, conn, company, mqtt_broker, mqtt_topic) -> None:
    ids = add_meters(conn, company.id)
    svc = ServiceThread(db_dsn, {"nb": _source(mqtt_broker, mqtt_topic)})
    with svc:
        wait_for(svc.source("nb").ready.is_set, what="subscription")
        batch = {"id": "c1-1", "concentrator": "C1", "ts": T0 + 60, "readings": [
            {"meter": IMEIS[1], "value": 2000}, {"meter": IMEIS[2], "value": "3.5", "unit": "m3"},
            {"meter": IMEIS[3], "value": -1}]}
        publish(*mqtt_broker, [
            (f"{mqtt_topic}/a", reading_json(IMEIS[0], T0, 1000)),
            (f"{mqtt_topic}/c1", json.dumps(batch).encode()),
            (f"{mqtt_topic}/a", b"{not json"),
            (f"{mqtt_topic}/a", reading_json("no-such-meter", T0, 5)),
            (f"{mqtt_topic}/a", reading_json(IMEIS[4], T0 + 10 * 86400, 5)),  # far future
        ])
        wait_for(lambda: count(conn, "SELECT count(*) FROM reading") == 3
                 and count(conn, "SELECT count(*) FROM dead_letter") == 4, what="readings and dead letters")
    rows = conn.execute("SELECT meter_id, value, source FROM reading ORDER BY value").fetchall()
    assert rows == [(ids[IMEIS[0]], 1000, 1), (ids[IMEIS[1]], 2000, 1), (ids[IMEIS[2]], 3500, 1)]
    dead = dict(conn.execute("SELECT reason, raw FROM dead_letter").fetchall())
    assert set(dead) == {"negative_register", "bad_json", "unknown_meter", "future_timestamp"}
    assert bytes(dead["bad_json"]) == b"{not json"
    assert json.loads(bytes(dead["negative_register"]))["id"] == "c1-1"  # the whole message's bytes
    m = svc.service.metrics.registry
    assert m.get_sample_value("meterline_ingest_messages_received_total", {"source": "nb"}) == 5
    assert m.get_sample_value("meterline_ingest_readings_written_total", {"source": "nb"}) == 3
    assert m.get_sample_value("meterline_ingest_dead_letters_total", {"source": "nb", "reason": "bad_json"}) == 1
    assert m.get_sample_value("meterline_ingest_dead_letters_total", {"source": "nb", "reason": "unknown_meter"}) == 1


def _chirpstack(eui, fcnt, obj, dedup):
    return json.dumps({"deduplicationId": dedup, "time": "2026-11-01T00:00:00Z",
                       "deviceInfo": {"devEui": eui.upper(), "deviceProfileName": "flowIQ"},
                       "fCnt": fcnt, "fPort": 85, "data": base64.b64encode(bytes.fromhex(obj)).decode()}).encode()


def test_chirpstack_uplinks_codec_by_profile_and_retransmissions(db_dsn, conn, company, mqtt_broker, mqtt_topic) -> None:
    ids = add_meters(conn, company.id)
    src = _source(mqtt_broker, mqtt_topic, format="chirpstack",
                  profiles={"flowIQ": {"codec": "milesight-em300-di", "litres_per_pulse": 10}})
    svc = ServiceThread(db_dsn, {"lora": src})
    with svc:
        wait_for(svc.source("lora").ready.is_set, what="subscription")
        t = f"{mqtt_topic}/application/1/device/{EUIS[0]}/event/up"
        publish(*mqtt_broker, [
            (t, _chirpstack(EUIS[0], 1, "05c864000000", "d-1")),
            (t, _chirpstack(EUIS[0], 1, "05c864000000", "d-1")),  # republished event
            (t, _chirpstack(EUIS[0], 1, "05c864000000", "d-2")),  # retransmitted uplink, same fCnt
            (t, _chirpstack(EUIS[1], 0, "05c8c8000000", "d-3")),  # fCnt 0
            (t, _chirpstack(EUIS[1], 1, "09ff00", "d-4")),  # undecodable payload
        ])
        wait_for(lambda: count(conn, "SELECT count(*) FROM reading") == 2
                 and count(conn, "SELECT count(*) FROM dead_letter") == 1, what="readings")
        wait_for(lambda: svc.source("lora").stats["acked"] == 5, what="all acknowledged")
    rows = conn.execute("SELECT meter_id, value, source, source_ref FROM reading ORDER BY value").fetchall()
    assert rows == [(ids[EUIS[0]], 1000, 2, "d-1"), (ids[EUIS[1]], 2000, 2, "d-3")]
    (reason, device), = conn.execute("SELECT reason, device FROM dead_letter").fetchall()
    assert (reason, device) == ("unknown_channel", EUIS[1])
    assert svc.source("lora").stats["duplicates"] == 2


def test_bad_source_settings_are_all_reported(db_dsn) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceThread(db_dsn, {"x": {"kind": "mqtt", "colour": "red", "qos": 2, "format": "chirpstack",
                                     "profiles": {"p": {"codec": "nope"}}}})
    text = str(info.value)
    assert "colour" in text and "qos" in text and "nope" in text
    assert load("mqtt").__name__ == "MqttSource"
