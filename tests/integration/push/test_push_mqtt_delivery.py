"""MQTT delivery guarantees: shared subscriptions, broker restarts, killed workers."""

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .pushkit import IMEIS, Mosquitto, ServiceThread, add_meters, count, publish, reading_json, wait_for

T0 = int(time.time()) - 30 * 86400
ROOT = Path(__file__).resolve().parents[3]


def _messages(topic: str, n: int) -> list[tuple[str, bytes]]:
    """n distinct readings spread over the meters, one per message."""
    return [(f"{topic}/m", reading_json(IMEIS[i % len(IMEIS)], T0 + 60 * (i // len(IMEIS)), 1000 + i))
            for i in range(n)]


def _source(address, topic, client_id, **extra):
    host, port = address
    return {"kind": "mqtt", "host": host, "port": port, "topics": [f"{topic}/#"], "client_id": client_id,
            "batch_delay_ms": 5, "session_expiry_s": 300, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5, **extra}


def test_two_workers_share_one_subscription(db_dsn, conn, company, mqtt_broker, mqtt_topic) -> None:
    add_meters(conn, company.id)
    n = 3000
    group = f"g{uuid.uuid4().hex[:6]}"
    a = ServiceThread(db_dsn, {"w": _source(mqtt_broker, mqtt_topic, f"{group}-a", shared_group=group)})
    b = ServiceThread(db_dsn, {"w": _source(mqtt_broker, mqtt_topic, f"{group}-b", shared_group=group)})
    with a, b:
        wait_for(lambda: a.source("w").ready.is_set() and b.source("w").ready.is_set(), what="both subscribed")
        publish(*mqtt_broker, _messages(mqtt_topic, n))
        wait_for(lambda: count(conn, "SELECT count(*) FROM reading") == n, what="all readings", timeout=60)
        wait_for(lambda: a.source("w").stats["acked"] + b.source("w").stats["acked"] == n, what="all acknowledged")
    got_a, got_b = a.source("w").stats["received"], b.source("w").stats["received"]
    assert got_a > 0 and got_b > 0, (got_a, got_b)  # the broker split the stream
    assert got_a + got_b == n  # nothing delivered twice
    assert count(conn, "SELECT count(DISTINCT value) FROM reading") == n
    assert count(conn, "SELECT count(*) FROM dead_letter") == 0


def test_broker_restart_mid_stream_loses_nothing(db_dsn, conn, company, tmp_path) -> None:
    add_meters(conn, company.id)
    broker = Mosquitto(tmp_path / "mosquitto").start()
    n = 4000
    topic = "restart"
    svc = ServiceThread(db_dsn, {"w": _source(broker.address, topic, "restart-worker")})
    published = threading.Event()
    errors = []

    def publisher() -> None:
        # a meter-side client with its own persistent session: what the broker has not
        # acknowledged is sent again after the reconnect
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="restart-pub", protocol=paho.MQTTv5)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.05, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        # PUBACKs counted by mid: a message published while the broker is down is queued
        # (paho's rc says "not connected", so wait_for_publish would raise) and sent, with the
        # same mid, after the reconnect
        acked: set[int] = set()
        c.on_publish = lambda _c, _u, mid, _rc, _p: acked.add(mid)
        c.connect(*broker.address, clean_start=False, properties=props)
        c.loop_start()
        try:
            mids = set()
            for i, (t, p) in enumerate(_messages(topic, n)):
                mids.add(c.publish(t, p, qos=1).mid)
                if i % 200 == 0:
                    time.sleep(0.02)
            wait_for(lambda: mids <= acked, what="every publish acknowledged by the broker", timeout=60)
            published.set()
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            c.disconnect()
            c.loop_stop()

    try:
        with svc:
            wait_for(svc.source("w").ready.is_set, what="subscription")
            pub = threading.Thread(target=publisher)
            pub.start()
            wait_for(lambda: count(conn, "SELECT count(*) FROM reading") > 500, what="stream under way")
            broker.restart()  # mid-stream
            pub.join(120)
            assert not errors and published.is_set(), errors
            wait_for(lambda: count(conn, "SELECT count(*) FROM reading") == n, what="every reading", timeout=90)
        assert svc.source("w").stats["connects"] >= 2
    finally:
        broker.stop()
    assert count(conn, "SELECT count(DISTINCT value) FROM reading") == n


def _config(path: Path, dsn: str, broker: Mosquitto, metrics_port: int) -> Path:
    path.write_text(f"""
[database]
dsn = "{dsn}"

[writer]
max_delay_ms = 10

[ingest]
metrics_port = {metrics_port}
metrics_host = "127.0.0.1"

[ingest.sources.nb]
kind = "mqtt"
host = "127.0.0.1"
port = {broker.port}
client_id = "killed-worker"
topics = ["killed/#"]
session_expiry_s = 300
""")
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name + "{"))


def _start(config: Path) -> subprocess.Popen:
    """``meterline ingest run`` in a process of its own; its output goes to a file beside the config."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    with open(config.with_suffix(f".{time.monotonic_ns()}.log"), "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "meterline", "--config", str(config), "ingest", "run"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = Path(out.name)  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")  # type: ignore[attr-defined]


def test_killed_worker_restarted_gets_unacknowledged_messages_again(db_dsn, conn, company, tmp_path) -> None:
    add_meters(conn, company.id)
    broker = Mosquitto(tmp_path / "mosquitto").start()
    n = 20000
    procs: list[subprocess.Popen] = []
    try:
        port = _free_port()
        config = _config(tmp_path / "meterline.toml", db_dsn, broker, port)
        # first start creates the persistent session; stop it, then queue the stream in the session
        proc = _start(config)
        procs.append(proc)
        wait_for(lambda: proc.poll() is None and _up(port), what="first start", timeout=60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, _output(proc)
        publish(*broker.address, _messages("killed", n))
        proc = _start(config)
        procs.append(proc)
        wait_for(lambda: count(conn, "SELECT count(*) FROM reading") > n // 10, what="drain under way", timeout=60)
        proc.kill()  # SIGKILL: no drain, no acks for whatever was in flight
        proc.wait(30)
        before = count(conn, "SELECT count(*) FROM reading")
        assert before < n
        proc = _start(config)
        procs.append(proc)
        wait_for(lambda: count(conn, "SELECT count(*) FROM reading") == n, what="every reading", timeout=120)
        wait_for(lambda: _up(port) and _metric(port, "meterline_ingest_messages_received_total")
                 == _metric(port, "meterline_ingest_readings_written_total")
                 + _metric(port, "meterline_ingest_duplicates_total"), what="accounts settle", timeout=30)
        received = _metric(port, "meterline_ingest_messages_received_total")
        written = _metric(port, "meterline_ingest_readings_written_total")
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        out = _output(proc)
        assert proc.returncode == 0, out
        assert "failed" not in out and "Traceback" not in out
        print(f"killed after {before} of {n}; restarted: received {received:.0f}, written {written:.0f}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        broker.stop()
    # redelivered: everything not acknowledged before the kill came again, and only the
    # readings not yet committed were written again
    assert written == n - before
    assert received >= n - before
    assert count(conn, "SELECT count(DISTINCT value) FROM reading") == n
    assert count(conn, "SELECT count(*) FROM dead_letter") == 0


def _up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
        return True
    except OSError:
        return False
