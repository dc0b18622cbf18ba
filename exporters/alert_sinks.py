"""Alert sinks: deliver alert events (the ``alert_event`` outbox) to MQTT and an HTTP webhook, and
expose open alerts as a Prometheus gauge.

Validation writes an ``alert_event`` row in the same transaction that opens, updates,
acknowledges or resolves an alert. The :class:`AlertDispatcher` delivers those rows to every
configured sink afterwards, in its own thread or process, so a slow or unreachable receiver
never holds up ingest or validation. Delivery is at least once: a row ``alert_delivery``
(event, sink) records success; failures are retried with exponential backoff (``retries``
attempts per round, the next round after ``backoff_max_s``). Receivers deduplicate by
``X-Meterline-Delivery`` (the event id).

Webhook requests are signed: ``X-Meterline-Signature: sha256=<hex>``, the HMAC-SHA256 under the
shared secret of ``<X-Meterline-Timestamp>.<body>`` (:func:`sign`; receivers check it with
:func:`verify`, which also refuses stale timestamps).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import httpx
import psycopg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from meterline.config.settings import AlertSinkSettings
from meterline.errors import MeterlineError
from meterline.ingest.vee.alerts import open_counts

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Meterline-Signature"
TIMESTAMP_HEADER = "X-Meterline-Timestamp"
DELIVERY_HEADER = "X-Meterline-Delivery"
EVENT_HEADER = "X-Meterline-Event"


class DeliveryError(MeterlineError):
    """A sink could not deliver an event."""

    def __init__(self, sink: str, event_id: int, reason: str) -> None:
        self.sink = sink
        self.event_id = event_id
        self.reason = reason
        super().__init__(f"{sink}: event {event_id} not delivered: {reason}")


@dataclass(frozen=True, slots=True)
class AlertEventRow:
    id: int
    company: str
    alert_id: int
    kind: str
    payload: dict[str, Any]
    created_at: dt.datetime

    def body(self) -> bytes:
        doc = {"event_id": self.id, "kind": self.kind, "created_at": self.created_at.isoformat(), **self.payload}
        return json.dumps(doc, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` HMAC-SHA256 of ``timestamp.body`` under ``secret``."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """True when ``signature`` is ours for this body and the timestamp is recent."""
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


class Sink(Protocol):
    name: str

    def deliver(self, event: AlertEventRow) -> None:
        """Deliver one event or raise :class:`DeliveryError`."""

    def close(self) -> None:
        ...


class WebhookSink:
    """POST each event as JSON to ``url``, signed with HMAC-SHA256."""

    def __init__(self, url: str, secret: bytes, *, timeout_s: float = 5.0, name: str = "webhook") -> None:
        if not secret:
            raise MeterlineError("the alert webhook needs a shared secret (see alerts.webhook_secret_env)")
        self.url = url
        self.secret = secret
        self.name = name
        self.client = httpx.Client(timeout=timeout_s)

    def deliver(self, event: AlertEventRow) -> None:
        body = event.body()
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts,
                   SIGNATURE_HEADER: sign(self.secret, ts, body), DELIVERY_HEADER: str(event.id),
                   EVENT_HEADER: event.kind}
        try:
            resp = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(self.name, event.id, f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(self.name, event.id, f"HTTP {resp.status_code}")

    def close(self) -> None:
        self.client.close()


class MqttSink:
    """Publish each event to ``<topic>/<company>/<book or ->/<rule>`` (QoS 1 by default, waits for PUBACK)."""

    def __init__(self, host: str, port: int = 1883, *, topic: str = "meterline/alerts", qos: int = 1,
                 timeout_s: float = 5.0, name: str = "mqtt", client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.name = name
        self.topic = topic.rstrip("/")
        self.qos = qos
        self.timeout_s = timeout_s
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"meterline-alerts-{os.getpid()}-{id(self):x}")
        self._connected = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p=None: self._connected.set() if not rc.is_failure else None
        self._client.on_disconnect = lambda c, u, f, rc, p=None: self._connected.clear()
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise DeliveryError(name, 0, f"cannot connect to MQTT broker {host}:{port}: {exc}") from exc
        self._client.loop_start()

    def topic_for(self, event: AlertEventRow) -> str:
        book = event.payload.get("book") or "-"
        return f"{self.topic}/{event.company}/{book}/{event.payload.get('rule', 'unknown')}"

    def deliver(self, event: AlertEventRow) -> None:
        if not self._connected.wait(self.timeout_s):
            raise DeliveryError(self.name, event.id, "not connected to the broker")
        info = self._client.publish(self.topic_for(event), event.body(), qos=self.qos)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise DeliveryError(self.name, event.id, str(exc)) from exc
        if not info.is_published():
            raise DeliveryError(self.name, event.id, "broker did not acknowledge in time")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def sinks_from_settings(s: AlertSinkSettings, env: dict[str, str] | None = None) -> list[Sink]:
    env = dict(os.environ) if env is None else env
    out: list[Sink] = []
    if s.mqtt_host:
        out.append(MqttSink(s.mqtt_host, s.mqtt_port, topic=s.mqtt_topic, qos=s.mqtt_qos, timeout_s=s.timeout_s))
    if s.webhook_url:
        secret = env.get(s.webhook_secret_env, "")
        out.append(WebhookSink(s.webhook_url, secret.encode("utf-8"), timeout_s=s.timeout_s))
    return out


@dataclass(slots=True)
class DispatchReport:
    delivered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)

    def total(self) -> int:
        return sum(self.delivered.values())


_PENDING = """
SELECT e.id, c.code, e.alert_id, e.kind, e.payload, e.created_at
FROM alert_event e JOIN company c ON c.id = e.company_id
LEFT JOIN alert_delivery d ON d.event_id = e.id AND d.sink = %(sink)s
WHERE d.event_id IS NULL
   OR (d.status = 'failed' AND d.updated_at < now() - %(wait)s * interval '1 second')
ORDER BY e.id LIMIT %(limit)s"""


class AlertDispatcher:
    """Deliver undelivered alert events to the sinks (see the module doc)."""

    def __init__(self, dsn: str, sinks: Iterable[Sink], *, retries: int = 5, backoff_s: float = 0.5,
                 backoff_max_s: float = 30.0, poll_s: float = 2.0) -> None:
        self.dsn = dsn
        self.sinks = list(sinks)
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._nudge = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, dsn: str, s: AlertSinkSettings) -> "AlertDispatcher":
        return cls(dsn, sinks_from_settings(s), retries=s.retries, backoff_s=s.backoff_s,
                   backoff_max_s=s.backoff_max_s, poll_s=s.poll_s)

    def _deliver(self, sink: Sink, event: AlertEventRow) -> tuple[bool, int, str | None]:
        delay = self.backoff_s
        last: str | None = None
        for attempt in range(1, self.retries + 1):
            try:
                sink.deliver(event)
                return True, attempt, None
            except DeliveryError as exc:
                last = exc.reason
                log.warning("alert event %d to %s failed (attempt %d/%d): %s", event.id, sink.name, attempt,
                            self.retries, exc.reason)
            if attempt < self.retries and not self._stop.is_set():
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
        return False, self.retries, last

    def run_once(self, limit: int = 500) -> DispatchReport:
        """Deliver what is pending now; return what was delivered and what failed, per sink."""
        report = DispatchReport()
        with psycopg.connect(self.dsn, autocommit=True, application_name="meterline-alert-dispatch") as conn:
            for sink in self.sinks:
                rows = conn.execute(_PENDING, {"sink": sink.name, "wait": self.backoff_max_s, "limit": limit}).fetchall()
                for row in rows:
                    if self._stop.is_set():
                        return report
                    event = AlertEventRow(*row)
                    ok, attempts, error = self._deliver(sink, event)
                    conn.execute(
                        """INSERT INTO alert_delivery (event_id, sink, status, attempts, last_error, updated_at)
                           VALUES (%s, %s, %s, %s, %s, now())
                           ON CONFLICT (event_id, sink) DO UPDATE SET status = EXCLUDED.status,
                               attempts = alert_delivery.attempts + EXCLUDED.attempts,
                               last_error = EXCLUDED.last_error, updated_at = now()""",
                        [event.id, sink.name, "delivered" if ok else "failed", attempts, error])
                    bucket = report.delivered if ok else report.failed
                    bucket[sink.name] = bucket.get(sink.name, 0) + 1
        return report

    # -- background ----------------------------------------------------------------------------
    def start(self) -> "AlertDispatcher":
        self._thread = threading.Thread(target=self._loop, name="alert-dispatch", daemon=True)
        self._thread.start()
        return self

    def nudge(self) -> None:
        """Look for new events now rather than at the next poll."""
        self._nudge.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except psycopg.OperationalError as exc:
                log.warning("alert dispatcher: database unreachable (%s)", exc)
            self._nudge.wait(self.poll_s)
            self._nudge.clear()

    def close(self) -> None:
        self._stop.set()
        self._nudge.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for sink in self.sinks:
            sink.close()


class OpenAlertsCollector(Collector):
    """Prometheus collector: ``meterline_alerts_open{company, rule, severity}`` (not resolved),
    read from the database at scrape time (at most every ``min_interval_s``)."""

    def __init__(self, dsn: str, min_interval_s: float = 5.0) -> None:
        self.dsn = dsn
        self.min_interval_s = min_interval_s
        self._cache: list[tuple[str, str, str, int]] = []
        self._at = 0.0
        self._lock = threading.Lock()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._at >= self.min_interval_s or not self._at:
                with psycopg.connect(self.dsn, autocommit=True, application_name="meterline-metrics") as conn:
                    self._cache = open_counts(conn)
                self._at = time.monotonic()
            rows = list(self._cache)
        g = GaugeMetricFamily("meterline_alerts_open", "Alerts not yet resolved, by rule and severity",
                              labels=["company", "rule", "severity"])
        for company, rule, severity, n in rows:
            g.add_metric([company, rule, severity], n)
        yield g
