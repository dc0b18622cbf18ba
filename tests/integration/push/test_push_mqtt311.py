"""A broker that speaks only MQTT 3.1.1 (amqtt, the suite's fallback broker): the source falls back."""

import socket
import time

from tests.fixtures.mqtt import EmbeddedBroker

from .pushkit import IMEIS, ServiceThread, add_meters, count, publish, reading_json, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_falls_back_to_mqtt_311_and_acknowledges_after_commit(db_dsn, conn, company) -> None:
    add_meters(conn, company.id)
    broker = EmbeddedBroker(_free_port())
    broker.start()
    try:
        svc = ServiceThread(db_dsn, {"nb": {"kind": "mqtt", "host": "127.0.0.1", "port": broker.port,
                                            "topics": ["m311/#"], "client_id": "m311", "batch_delay_ms": 5,
                                            "reconnect_min_s": 0.05, "connack_timeout_s": 1}})
        with svc:
            wait_for(svc.source("nb").ready.is_set, what="subscription")
            assert svc.source("nb").protocol == "3.1.1"
            t = int(time.time()) - 60
            publish("127.0.0.1", broker.port, [("m311/a", reading_json(IMEIS[0], t + i, 10 + i)) for i in range(20)])
            wait_for(lambda: count(conn, "SELECT count(*) FROM reading") == 20, what="readings")
            wait_for(lambda: svc.source("nb").stats["acked"] == 20, what="acknowledged")
    finally:
        broker.stop()
        broker.loop.close()  # the fixture's broker leaves its loop (and self-pipe) open
