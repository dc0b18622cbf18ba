"""The simulator plays the registry's meters against a running ingest service, faults and all."""

import psycopg

from meterline.ingest.simulator import Faults, MessageFactory, Plan, Simulator, load_meters
from meterline.store.registry import load_rows
from meterline.store.seed import build_utility

from .pushkit import ServiceThread, count, free_udp_port, wait_for


def _seed(conn: psycopg.Connection, company_id: int, n: int = 300) -> None:
    utility = build_utility(n, seed=7)
    load_rows(conn, company_id, utility.rows)


def test_registry_meters_over_every_protocol_with_faults(db_dsn, conn, company, mqtt_broker, mqtt_topic) -> None:
    _seed(conn, company.id)
    host, port = mqtt_broker
    coap_port = free_udp_port()
    base = {"host": host, "port": port, "batch_delay_ms": 5, "session_expiry_s": 60}
    svc = ServiceThread(db_dsn, {
        "nb": {"kind": "mqtt", **base, "topics": [f"{mqtt_topic}/nb/#"], "client_id": f"{mqtt_topic}-nb"},
        "lora": {"kind": "mqtt", **base, "format": "chirpstack", "client_id": f"{mqtt_topic}-lora",
                 "topics": ["application/meterline-sim/device/+/event/up"],
                 "profiles": {"kamstrup": {"codec": "kamstrup"}}},
        "coap": {"kind": "coap", "host": "127.0.0.1", "port": coap_port},
    })
    meters = load_meters(conn, company.id)
    by_protocol = {p: sum(m.protocol == p for m in meters) for p in ("mqtt", "lorawan", "coap")}
    assert all(by_protocol.values()), by_protocol
    with svc:
        wait_for(lambda: svc.source("nb").ready.is_set() and svc.source("lora").ready.is_set()
                 and svc.source("coap").ready.is_set(), what="sources ready")
        # clean run: one message per meter, every reading stored
        plan = Plan(mqtt_prefix=f"{mqtt_topic}/nb")
        sim = Simulator(MessageFactory(meters, plan, Faults(), seed=3), mqtt=mqtt_broker, coap=("127.0.0.1", coap_port))
        try:
            stats = sim.run(count=len(meters))
        finally:
            sim.close()
        assert stats.mqtt_acked == by_protocol["mqtt"] + by_protocol["lorawan"]
        assert stats.coap.codes == {"2.04": by_protocol["coap"]}
        wait_for(lambda: count(conn, "SELECT count(*) FROM reading") == len(meters), what="every reading")
        by_source = dict(conn.execute("SELECT source, count(*) FROM reading GROUP BY source").fetchall())
        assert by_source == {1: by_protocol["mqtt"], 2: by_protocol["lorawan"], 3: by_protocol["coap"]}

        # faulty run: duplicates and reordering change nothing; malformed and future-skewed
        # messages become dead letters; the service keeps going
        acked_before = wait_for(lambda: (n := sum(svc.source(s).stats["acked"] for s in ("nb", "lora")))
                                == stats.mqtt_acked and n, what="the clean run's acknowledgements counted")
        faults = Faults(duplicates=0.1, reorder=0.1, malformed=0.05, skew=0.05)
        factory = MessageFactory(meters, plan, faults, seed=4)
        sim = Simulator(factory, mqtt=mqtt_broker, coap=("127.0.0.1", coap_port))
        try:
            stats = sim.run(count=3 * len(meters))
        finally:
            sim.close()
        assert {"duplicates", "reorder", "malformed", "skew"} <= set(stats.faults)
        wait_for(lambda: svc.service.writer.queue_depth == 0 and sum(
            svc.source(n).stats["acked"] for n in ("nb", "lora")) == acked_before + stats.mqtt_acked,
            what="all committed")
    dead = dict(conn.execute("SELECT reason, count(*) FROM dead_letter GROUP BY reason").fetchall())
    assert dead.get("future_timestamp", 0) > 0
    assert sum(dead.values()) >= stats.faults["malformed"]
    dupes = conn.execute("SELECT count(*) - count(DISTINCT (meter_id, ts, quantity)) FROM reading").fetchone()[0]
    assert dupes == 0
    reg = svc.service.metrics.registry
    transport_dupes = sum(reg.get_sample_value("meterline_ingest_duplicates_total", {"source": s, "stage": "transport"})
                          for s in ("nb", "lora"))
    assert transport_dupes > 0


def test_simulate_command(db_dsn, conn, company, mqtt_broker, mqtt_topic, monkeypatch, capsys) -> None:
    from meterline.cli import main

    _seed(conn, company.id, 100)
    coap_port = free_udp_port()
    host, port = mqtt_broker
    svc = ServiceThread(db_dsn, {
        "nb": {"kind": "mqtt", "host": host, "port": port, "topics": [f"{mqtt_topic}/#"], "batch_delay_ms": 5,
               "client_id": f"{mqtt_topic}-cli", "session_expiry_s": 60},
        "coap": {"kind": "coap", "host": "127.0.0.1", "port": coap_port},
    })
    monkeypatch.setenv("METERLINE_DSN", db_dsn)
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    with svc:
        wait_for(lambda: svc.source("nb").ready.is_set() and svc.source("coap").ready.is_set(), what="ready")
        code = main(["--company", company.code, "simulate", "--protocols", "mqtt,coap", "--count", "60",
                     "--mqtt", f"{host}:{port}", "--coap", f"127.0.0.1:{coap_port}", "--mqtt-prefix", mqtt_topic,
                     "--rate", "500"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "simulation: 60 messages" in out and "CoAP answers 2.04" in out
        wait_for(lambda: count(conn, "SELECT count(*) FROM reading") == 60, what="readings")
    code = main(["--company", company.code, "simulate", "--faults", "colour=1"])
    assert code == 1 and "unknown fault" in capsys.readouterr().out
