"""The MQTT fixtures: a message published at QoS 1 reaches a subscriber, on both brokers."""

import queue

import paho.mqtt.client as mqtt

from tests.fixtures.mqtt import EmbeddedBroker, _free_port, _mqtt_answers


def _round_trip(host: str, port: int, topic: str) -> bytes:
    got: queue.Queue[bytes] = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{topic}")
    sub.on_message = lambda c, u, m: got.put(m.payload)
    sub.connect(host, port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{topic}")
    pub.connect(host, port)
    pub.loop_start()
    try:
        import time

        time.sleep(0.3)
        pub.publish(topic, b"\x01\x02hello", qos=1).wait_for_publish(5)
        return got.get(timeout=10)
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()


def test_broker_fixture_delivers(mqtt_broker: tuple[str, int], mqtt_topic: str) -> None:
    assert _round_trip(*mqtt_broker, f"{mqtt_topic}/x") == b"\x01\x02hello"


def test_embedded_broker_starts_where_none_answers(mqtt_topic: str) -> None:
    broker = EmbeddedBroker(_free_port())
    broker.start()
    try:
        assert _mqtt_answers("127.0.0.1", broker.port)
        assert _round_trip("127.0.0.1", broker.port, f"{mqtt_topic}/y") == b"\x01\x02hello"
    finally:
        broker.stop()
