"""Alert sinks against real receivers: an HTTP server in the test that checks the HMAC-SHA256
signature itself, the MQTT broker fixture, and the Prometheus gauge."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meterline.exporters.alert_sinks import AlertDispatcher, MqttSink, OpenAlertsCollector, WebhookSink
from meterline.ingest.vee import alerts as A
from meterline.ingest.vee.config import load_config
from meterline.store.company import Company

from .scenario import play

SECRET = b"s3cret-shared-with-the-ops-team"

SCENARIO = """
period 2026-10
meter A size=DN15 book=B7
daily A 2026-09-20..2026-10-01 08:00 from 1.200 step 0.017
read A 2026-10-02T08:00 15430.611 => high_limit spike isolated_outlier [rejected]
read A 2026-10-03T08:00 1.404
daily A 2026-10-04..2026-11-01 08:00 from 1.421 step 0.017
run
"""


@pytest.fixture
def alerted(tmp_path: Path, conn: psycopg.Connection, db_dsn: str, company: Company) -> int:
    path = tmp_path / "s.txt"
    path.write_text(SCENARIO, encoding="utf-8")
    play(path, conn, db_dsn, company.id, load_config(), "batch")
    return conn.execute("SELECT count(*) FROM alert_event").fetchone()[0]


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver that verifies the signature the way an integrator would."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.fail_first = fail_first
        self.calls = 0
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            srv: Receiver = self.server  # type: ignore[assignment]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            srv.calls += 1
            ts = self.headers["X-Meterline-Timestamp"]
            expected = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, self.headers["X-Meterline-Signature"]):
                srv.bad_signatures += 1
                self.send_response(401)
            elif srv.calls <= srv.fail_first:
                self.send_response(503)
            else:
                srv.received.append({"delivery": self.headers["X-Meterline-Delivery"], **json.loads(body)})
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    srv = Receiver(getattr(request, "param", 0))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: Receiver) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/hooks/meterline"


def test_webhook_events_arrive_signed_and_once(alerted: int, db_dsn: str, receiver: Receiver) -> None:
    assert alerted >= 1
    d = AlertDispatcher(db_dsn, [WebhookSink(_url(receiver), SECRET)], retries=2, backoff_s=0.01)
    try:
        report = d.run_once()
        again = d.run_once()
    finally:
        d.close()
    assert report.delivered == {"webhook": alerted} and not report.failed
    assert again.total() == 0, "a delivered event is not sent again"
    assert receiver.bad_signatures == 0
    rules = {(e["rule"], e["kind"]) for e in receiver.received}
    assert ("isolated_outlier", "opened") in rules
    first = receiver.received[0]
    assert first["assignee"] == "计量主管-钱敏" and first["book"] == "B7" and first["serial"] == "S-A"


def test_a_wrong_secret_is_refused_by_the_receiver(alerted: int, db_dsn: str, receiver: Receiver) -> None:
    d = AlertDispatcher(db_dsn, [WebhookSink(_url(receiver), b"not-the-secret")], retries=2, backoff_s=0.01)
    try:
        report = d.run_once()
    finally:
        d.close()
    assert receiver.bad_signatures == 2 * alerted and not receiver.received
    assert report.failed == {"webhook": alerted}


@pytest.mark.parametrize("receiver", [2], indirect=True)
def test_webhook_retries_with_backoff_then_delivers(alerted: int, db_dsn: str, receiver: Receiver,
                                                    conn: psycopg.Connection) -> None:
    d = AlertDispatcher(db_dsn, [WebhookSink(_url(receiver), SECRET)], retries=3, backoff_s=0.01)
    try:
        report = d.run_once()
    finally:
        d.close()
    assert report.delivered == {"webhook": alerted}
    attempts = conn.execute("SELECT attempts, status FROM alert_delivery ORDER BY event_id").fetchall()
    assert attempts[0] == (3, "delivered")


def test_unreachable_webhook_is_recorded_failed_and_retried_later(alerted: int, db_dsn: str,
                                                                 conn: psycopg.Connection, receiver: Receiver) -> None:
    dead = "http://127.0.0.1:9/nothing-listens-here"
    d = AlertDispatcher(db_dsn, [WebhookSink(dead, SECRET, timeout_s=0.5)], retries=2, backoff_s=0.01, backoff_max_s=0.01)
    try:
        report = d.run_once()
    finally:
        d.close()
    assert report.failed == {"webhook": alerted}
    row = conn.execute("SELECT status, attempts, last_error FROM alert_delivery LIMIT 1").fetchone()
    assert row[0] == "failed" and row[1] == 2 and "Connect" in row[2]
    # the receiver is back: the next round delivers (at least once)
    conn.execute("UPDATE alert_delivery SET updated_at = now() - interval '1 minute'")
    d2 = AlertDispatcher(db_dsn, [WebhookSink(_url(receiver), SECRET)], retries=1, backoff_max_s=0.01)
    try:
        assert d2.run_once().delivered == {"webhook": alerted}
    finally:
        d2.close()


def test_mqtt_sink_publishes_to_the_book_and_rule_topic(alerted: int, db_dsn: str,
                                                        mqtt_broker: tuple[str, int], mqtt_topic: str) -> None:
    host, port = mqtt_broker
    got: list[tuple[str, dict]] = []
    done = threading.Event()
    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{mqtt_topic[-8:]}")
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()

    def on_message(c, u, msg) -> None:
        got.append((msg.topic, json.loads(msg.payload)))
        if len(got) >= alerted:
            done.set()

    sub.on_message = on_message
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"{mqtt_topic}/#", qos=1)
    sub.connect(host, port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        d = AlertDispatcher(db_dsn, [MqttSink(host, port, topic=mqtt_topic)], retries=2, backoff_s=0.01)
        try:
            assert d.run_once().delivered == {"mqtt": alerted}
        finally:
            d.close()
        assert done.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    topics = {t for t, _ in got}
    assert f"{mqtt_topic}/acme/B7/isolated_outlier" in topics
    assert all(p["company"] == "acme" for _, p in got)


def test_prometheus_gauge_counts_open_alerts_by_rule_and_severity(alerted: int, db_dsn: str,
                                                                  conn: psycopg.Connection, company: Company) -> None:
    def gauge() -> dict[tuple[str, str], float]:
        registry = CollectorRegistry()
        registry.register(OpenAlertsCollector(db_dsn, min_interval_s=0))
        fams = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
        return {(s.labels["rule"], s.labels["severity"]): s.value for s in fams["meterline_alerts_open"].samples}

    assert gauge() == {("isolated_outlier", "warning"): 1.0}
    alert_id = conn.execute("SELECT id FROM alert WHERE rule = 'isolated_outlier'").fetchone()[0]
    A.resolve(conn, company.id, alert_id, "计量主管-钱敏")
    assert gauge() == {}
