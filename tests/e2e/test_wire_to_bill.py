"""One reading over the wire to a bill: MQTT message → ingest service → validation → billing run.

A household (3 persons, residential tariff) whose October opening read was taken by a reader
(100.000 m³ on 30 September); its NB-IoT meter publishes the closing read
(125.000 m³ on 31 October, 23:30) as one meterline JSON message to the real broker. The ingest
service stores it, the batch validation run of October accepts it, the billing run bills
25 m³ under the shipped ``config/tariffs/water-residential.toml``: water 22 × 1.75 + 3 × 3.13 = 47.89, resource fee 25 × 0.40 = 10.00, sewage 25 × 1.30 =
32.50 yuan: 90.39 yuan, and the bill line names the reading that came over MQTT.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid

import psycopg

from meterline.config.settings import IngestSettings, Settings
from meterline.ingest.model import Source
from meterline.ingest.service import Background, IngestService
from meterline.ingest.simulator import MqttPublisher
from meterline.ingest.vee.batch import run_period
from meterline.ingest.vee.config import load_config
from meterline.rating.run import bill_run
from meterline.rating.tariff import TariffBook
from tests.integration.rating.billkit import Utility, local, scoped_db

IMEI = "869999000000017"


def test_one_mqtt_message_becomes_a_bill(conn: psycopg.Connection, db_dsn: str, mqtt_broker, mqtt_topic: str) -> None:
    u = Utility.create(conn)
    u.book("B1")
    u.account("A1", "B1", household=3)
    meter = u.meter("M1", "A1")
    conn.execute("UPDATE meter SET comm_address = %s, protocol = 'mqtt' WHERE id = %s", [IMEI, meter])
    u.read("M1", local(2026, 9, 30, 23, 30), 100_000, source=int(Source.HANDHELD))
    u.read("M1", local(2026, 10, 15, 10, 0), 112_000, source=int(Source.HANDHELD))

    host, port = mqtt_broker
    sources = {"nbiot": {"kind": "mqtt", "host": host, "port": port, "protocol": "3.1.1", "batch_delay_ms": 10,
                         "client_id": f"e2e-{uuid.uuid4().hex[:8]}", "topics": [f"{mqtt_topic}/#"]}}
    settings = dataclasses.replace(Settings(), ingest=IngestSettings(metrics_port=0, sources=sources))
    service = IngestService(settings, db_dsn)
    service.build_sources()
    running = Background(service).start()
    closing = local(2026, 10, 31, 23, 30)
    try:
        source = service.sources[0].source
        deadline = time.monotonic() + 30
        while not source.ready.is_set():
            assert time.monotonic() < deadline, "the MQTT source did not connect"
            time.sleep(0.05)
        publisher = MqttPublisher(host, port)
        publisher.publish(f"{mqtt_topic}/{IMEI}", json.dumps(
            {"meter": IMEI, "ts": closing.isoformat(), "value": "125.000", "unit": "m3"}).encode())
        publisher.flush()
        while source.stats["acked"] < 1:
            assert time.monotonic() < deadline, "the message was not stored and acknowledged"
            time.sleep(0.05)
        publisher.close()
    finally:
        running.stop()
    stored = conn.execute("SELECT value, source FROM reading WHERE meter_id = %s AND ts = %s", [meter, closing]).fetchone()
    assert stored == (125_000, int(Source.MQTT))

    summary = run_period(db_dsn, u.company_id, u.code, "Asia/Shanghai", "2026-10", load_config())
    assert summary.rejected == 0 and summary.held == 0

    app = scoped_db(db_dsn)
    try:
        with app.connection(company_id=u.company_id) as c:
            res = bill_run(c, u.company_id, "M", "2026-10", tariffs=TariffBook.load(), created_by="e2e",
                           day=dt.date(2026, 11, 2))
            c.commit()
    finally:
        app.close()
    assert (res.bills, res.skips) == (1, [])
    bill_id, consumption, amount, total = conn.execute(
        "SELECT id, consumption, amount, total FROM bill WHERE account_id = %s", [u.accounts["A1"]]).fetchone()
    assert consumption == 25_000
    assert (amount, total) == (9039, 9039)
    lines = {comp: amt for comp, amt in conn.execute(
        "SELECT component, sum(amount) FROM bill_line WHERE bill_id = %s GROUP BY component", [bill_id])}
    assert lines == {"water": 4789, "resource_fee": 1000, "sewage": 3250}
    reads = conn.execute("SELECT source->'reads' FROM bill_line_sourced WHERE bill_id = %s LIMIT 1", [bill_id]).fetchone()[0]
    (read_meter, _opening, closing_ts, estimated), = reads
    assert read_meter == meter and not estimated
    assert dt.datetime.fromisoformat(closing_ts.replace("Z", "+00:00")) == closing  # the reading that came over MQTT
