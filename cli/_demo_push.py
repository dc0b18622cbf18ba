"""The demo's "pushing meters" step: the ingest service against simulated meters.

An in-process MQTT broker (amqtt), the ingest service with three sources (meterline JSON over
MQTT, ChirpStack uplinks with Kamstrup payloads, CoAP), and the simulator playing every pushing
meter of the demo company once, with a few faults (repeats, reordering, malformed payloads,
clock skew): the summary shows what was written, recognised as a repeat, and refused.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from typing import Any

from meterline.config.settings import IngestSettings
from meterline.ingest.embedded_broker import EmbeddedBroker
from meterline.ingest.service import Background, IngestService
from meterline.ingest.simulator import Faults, MessageFactory, MqttPublisher, Plan, Simulator, load_meters
from meterline.ingest.vee.config import config_for
from meterline.ingest.vee.hook import IngestValidator
from meterline.ingest.writer import BatchingWriter

FAULTS = Faults(duplicates=0.02, reorder=0.01, malformed=0.005, skew=0.005)


#: seconds without a new acknowledgement after which the push step stops waiting
STALL_S = 20.0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(service: IngestService, name: str, **labels: str) -> int:
    total = 0.0
    for family in service.metrics.registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return int(total)


def live_validator(state: Any) -> IngestValidator:
    """The demo's validation in the ingest path: one hook fed by every step's writer as batches
    commit. Its worker is started by ``step_validate``, after the deliveries: on a machine where
    the compiled kernels are not cached yet, compiling them beside the ingest service's event
    loop starves it and the pushing meters' MQTT deliveries stall."""
    v = state.data.get("validator")
    if v is None:
        s = state.ctx.settings.vee
        v = IngestValidator(state.db.dsn, config_for(state.ctx.settings), queue_max=s.hook_queue_max,
                            batch_max=s.hook_batch_max, name="demo-vee")
        state.data["validator"] = v
    return v


def ingest_service(state: Any, sources: dict[str, dict]) -> IngestService:
    """The ingest service over ``sources``, its writer feeding the live validator."""
    settings = dataclasses.replace(state.ctx.settings, ingest=IngestSettings(metrics_port=0, sources=sources))
    service = IngestService(settings, state.db.dsn)
    service.writer = BatchingWriter(state.db.dsn, settings.writer, observer=service.metrics.observe_batch,
                                    name="ingest-writer", on_commit=live_validator(state).on_commit)
    service.build_sources()
    return service


def _deliver_backlog(state: Any, broker: tuple[str, int]) -> tuple[int, MqttPublisher | None]:
    """The readings the NB-IoT meters could not deliver around the billing period's end
    (held back from the seeded history), published now over MQTT as meterline JSON batches,
    one message per meter; returns the number of messages and the publisher, to close once the
    ingest service acknowledged them (amqtt drops what a closed client published and it had not
    forwarded yet)."""
    held = state.data.get("backlog") or []
    if not held:
        return 0, None
    with state.db.connection(company_id=state.company_id) as conn:
        address = dict(conn.execute("SELECT id, comm_address FROM meter WHERE id = ANY(%s)",
                                    [sorted({r.meter_id for r in held})]).fetchall())
    by_meter: dict[int, list] = {}
    for r in held:
        by_meter.setdefault(r.meter_id, []).append(r)
    publisher = MqttPublisher(*broker, client_id="demo-backlog")
    for mid, reads in by_meter.items():
        payload = {"id": f"backlog-{mid}", "meter": address[mid],
                   "readings": [{"ts": r.ts.isoformat(), "value": r.value} for r in reads]}
        publisher.publish(f"{Plan().mqtt_prefix}/{address[mid]}", json.dumps(payload).encode())
    publisher.flush()
    state.data["backlog_delivered"] = (len(by_meter), len(held))
    return len(by_meter), publisher


def _await_acks(service: IngestService, stats: Any, backlog: int, started: float) -> tuple[int, int, float]:
    """Wait while the ingest service's acknowledgements keep coming (a loaded machine commits
    slower); stop when none has come for STALL_S (what is missing then is reported, not waited
    out). Returns (acknowledged, MQTT messages sent, seconds since the meters started)."""
    mqtt_sent = stats.by_transport.get("mqtt", 0) + backlog
    mqtt_sources = [st.source for st in service.sources if st.kind == "mqtt"]
    acked = last = sum(s.stats["acked"] for s in mqtt_sources)
    progress = time.monotonic()
    while acked < mqtt_sent and time.monotonic() - progress < STALL_S:
        time.sleep(0.05)
        acked = sum(s.stats["acked"] for s in mqtt_sources)
        if acked != last:
            last, progress = acked, time.monotonic()
    return acked, mqtt_sent, time.monotonic() - started


def step_push(state: Any) -> None:
    assert state.db is not None and state.company_id is not None
    with state.db.connection(company_id=state.company_id) as conn:
        meters = load_meters(conn, state.company_id)
    if not meters:
        state.add("pushing meters", "simulated", "no pushing meter in the registry")
        return
    with state.ctx.console.status(f"{len(meters):,} meters pushing over MQTT, LoRaWAN and CoAP"), \
            EmbeddedBroker() as broker:
        host, port = broker.address
        coap_port = _free_udp_port()
        mqtt = {"kind": "mqtt", "host": host, "port": port, "protocol": "3.1.1", "batch_delay_ms": 10,
                "session_expiry_s": 600}
        sources = {
            "nbiot": {**mqtt, "client_id": "demo-nbiot", "topics": ["meterline/up/#"]},
            "lorawan": {**mqtt, "client_id": "demo-lorawan", "format": "chirpstack",
                        "profiles": {"kamstrup": {"codec": "kamstrup"}}},
            "coap": {"kind": "coap", "host": "127.0.0.1", "port": coap_port},
        }
        service = ingest_service(state, sources)
        running = Background(service).start()
        try:
            deadline = time.monotonic() + 60
            while not all(st.source.ready.is_set() for st in service.sources):
                if time.monotonic() > deadline or not running.thread.is_alive():
                    raise RuntimeError("the ingest service did not start")
                time.sleep(0.05)
            started = time.monotonic()
            sim = Simulator(MessageFactory(meters, Plan(), FAULTS, seed=7), mqtt=broker.address,
                            coap=("127.0.0.1", coap_port))
            publisher = None
            try:
                stats = sim.run(count=len(meters))
                backlog, publisher = _deliver_backlog(state, broker.address)
                acked, mqtt_sent, seconds = _await_acks(service, stats, backlog, started)
            finally:
                # the simulated meters disconnect only once the ingest service acknowledged their
                # messages: amqtt drops what a closed client published and it had not forwarded yet
                sim.close()
                if publisher is not None:
                    publisher.close()
        finally:
            running.stop()
    failed = [f"{st.name}: {st.error}" for st in service.sources if getattr(st, "error", None) is not None]
    if failed:
        raise RuntimeError("ingest source(s) failed during the demo: " + "; ".join(failed))
    written = _metric(service, "meterline_ingest_readings_written_total")
    repeats = _metric(service, "meterline_ingest_duplicates_total")
    dead: dict[str, int] = {}
    for family in service.metrics.registry.collect():
        for s in family.samples:
            if s.name == "meterline_ingest_dead_letters_total" and s.value:
                dead[s.labels["reason"]] = dead.get(s.labels["reason"], 0) + int(s.value)
    by = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_transport.items()))
    state.add("pushing meters", "messages sent", f"{stats.messages:,} ({by}) in {seconds:.1f}s")
    if acked < mqtt_sent:
        state.add("pushing meters", "not forwarded by the broker",
                  f"{mqtt_sent - acked:,} MQTT message(s) the in-process broker acknowledged to the meters "
                  f"but never delivered (none for {STALL_S:.0f}s); a production broker (Mosquitto, EMQX) keeps them")
    if state.data.get("backlog_delivered"):
        meters, reads = state.data["backlog_delivered"]
        with state.db.connection(company_id=state.company_id) as conn:
            stored = conn.execute("SELECT count(*) FROM reading WHERE company_id = %s AND source_ref LIKE 'backlog-%%'",
                                  [state.company_id]).fetchone()[0]
        written -= stored  # the rest were the live messages, one reading each
        state.add("pushing meters", "backlog (period-end reads)", f"{reads:,} readings of {meters:,} NB-IoT meters "
                                                                   f"delivered late over MQTT, {stored:,} stored")
        if stored != reads:
            raise RuntimeError(f"of {reads} period-end readings delivered late over MQTT only {stored} were stored")
    state.add("pushing meters", "faults injected", ", ".join(f"{k} {v}" for k, v in sorted(stats.faults.items())))
    state.add("pushing meters", "readings written", f"{written:,} (live messages)")
    state.add("pushing meters", "repeats recognised", f"{repeats:,}")
    state.add("pushing meters", "dead letters", ", ".join(f"{k} {v}" for k, v in sorted(dead.items())) or "none")
