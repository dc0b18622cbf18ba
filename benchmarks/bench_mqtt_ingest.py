"""Benchmark: readings committed per second through the ingest service (MQTT QoS 1, CoAP).

    python benchmarks/bench_mqtt_ingest.py [--messages 200000] [--batched 2000] [--coap 20000]
                                           [--naive 10000] [--meters 20000] [--repeat 3]

Runs its own Mosquitto (a private process on a free port: persistence off, no queue limit) and
a fresh database with ``--meters`` meters, then measures, in the same run, end to end from the
first PUBLISH to the last commit (every subscriber connected and subscribed beforehand; the
stream is published at QoS 1 as fast as the broker takes it):

* **bare paho drain**, 1 and 2 processes (shared subscription): paho (MQTT 5, manual ack)
  acknowledging every message as it arrives and doing nothing else: the ceiling;
* **meterline ingest**, 1 and 2 processes (``meterline ingest run``, shared subscription):
  decode, dedupe, batch COPY, commit, then PUBACK; single-reading messages;
* **naive subscriber**: paho, ``json.loads`` and one INSERT + COMMIT per message, then the ack
  (on ``--naive`` messages: it is slow);
* **batched**: ``--batched`` concentrator messages of 100 readings each through the ingest
  service, 1 and 2 processes;
* **CoAP**: ``--coap`` confirmable POSTs (CBOR, one reading each, from 2,000 meters the service
  has seen once before) from a fast client (one UDP socket, 64 requests outstanding) to the
  ingest service's CoAP source, against the same client and a bare aiocoap server that
  answers 2.04 without doing anything.

Each figure is the median of ``--repeat`` runs; ratios are printed at the end.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_server_args, fresh_database, server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T0 = int(time.time()) - 40 * 86400


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="meterline-bench-mosquitto-"))
        self.port = free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"max_queued_messages 0\nmax_inflight_messages 0\nuser {getpass.getuser()}\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("mosquitto did not start")
                time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- data -------------------------------------------------------------------------------

def make_meters(dsn: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        cid = c.execute("INSERT INTO company (code, name) VALUES ('bench', '基准水司') RETURNING id").fetchone()[0]
        c.execute("""INSERT INTO meter (company_id, serial, comm_address, register_digits, protocol)
                     SELECT %s, 'B' || g, '86' || lpad(g::text, 13, '0'), 8, 'mqtt'
                     FROM generate_series(1, %s) g""", [cid, n])


def address(i: int) -> str:
    return f"86{i:013d}"


class Stream:
    """Fresh readings for every run: each run moves on in time."""

    def __init__(self, meters: int) -> None:
        self.meters = meters
        self.step = 0

    def singles(self, n: int) -> list[bytes]:
        base = self.step
        self.step += (n + self.meters - 1) // self.meters
        return [json.dumps({"meter": address(i % self.meters + 1), "ts": T0 + 60 * (base + i // self.meters),
                            "value": 1000 + base + i // self.meters}, separators=(",", ":")).encode()
                for i in range(n)]

    def batches(self, n: int, size: int = 100) -> list[bytes]:
        total = n * size
        base = self.step
        self.step += (total + self.meters - 1) // self.meters
        out = []
        for k in range(n):
            readings = []
            for j in range(size):
                i = k * size + j
                readings.append({"meter": address(i % self.meters + 1), "value": 1000 + base + i // self.meters,
                                 "ts": T0 + 60 * (base + i // self.meters)})
            out.append(json.dumps({"id": f"b{base}-{k}", "readings": readings}, separators=(",", ":")).encode())
        return out


def publish(port: int, topic: str, payloads: list[bytes]) -> None:
    from meterline.ingest.simulator import MqttPublisher

    pub = MqttPublisher("127.0.0.1", port, window=5000)
    try:
        for p in payloads:
            pub.publish(topic, p)
        pub.flush()
    finally:
        pub.close()


# -- subscribers in their own processes ----------------------------------------------------

def role_drain(args: argparse.Namespace) -> None:
    """Bare paho subscriber (MQTT 5, manual ack): ack every message at once, print the running count.

    With ``--naive-role`` it is the naive subscriber instead: json.loads, INSERT, COMMIT, then ack."""
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    state = {"n": 0}
    conn = psycopg.connect(args.dsn) if args.naive_flag else None

    def on_bare(cl, _u, m) -> None:
        cl.ack(m.mid, m.qos)
        state["n"] += 1

    def on_naive(cl, _u, m) -> None:
        d = json.loads(m.payload)
        conn.execute(
            """INSERT INTO reading (meter_id, company_id, ts, value, quantity, source, received_at)
               SELECT id, company_id, to_timestamp(%s), %s, 1, 1, now() FROM meter WHERE comm_address = %s
               ON CONFLICT DO NOTHING""", [d["ts"], d["value"], d["meter"]])
        conn.commit()
        cl.ack(m.mid, m.qos)
        state["n"] += 1

    def on_connect(cl, _u, _f, _rc, _p) -> None:
        cl.subscribe(args.topic, qos=1)

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=paho.MQTTv5, manual_ack=True)
    c.on_message = on_naive if args.naive_flag else on_bare
    c.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    props.ReceiveMaximum = 65535
    c.connect("127.0.0.1", args.port, 60, clean_start=False, properties=props)
    for _ in range(20):
        c.loop(0.02)
    print("ready 0", flush=True)
    shown, last = 0, time.monotonic()
    while True:
        c.loop(0.01)
        if state["n"] != shown and time.monotonic() - last > 0.005:
            shown, last = state["n"], time.monotonic()
            print(f"count {shown}", flush=True)


class Drainer:
    """A subscriber process reporting how many messages it has taken (a thread reads its stdout)."""

    def __init__(self, port: int, topic: str, client_id: str, dsn: str = "", naive: bool = False) -> None:
        import threading

        cmd = [sys.executable, __file__, "--role", "drain", "--port", str(port), "--topic", topic,
               "--client-id", client_id, "--dsn", dsn] + (["--naive-role"] if naive else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().startswith("ready")
        self.count = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("count "):
                self.count = int(line.split()[1])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def wait_counts(subs: list[Drainer], target: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while sum(s.count for s in subs) < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {sum(s.count for s in subs)} of {target} drained")
        time.sleep(0.002)


class Ingest:
    """``meterline ingest run`` in its own process, with its metrics on a port of its own."""

    def __init__(self, dsn: str, port: int, topic: str, client_id: str, group: str, tmp: Path,
                 coap_port: int | None = None) -> None:
        self.metrics_port = free_port()
        conf = tmp / f"{client_id}.toml"
        sources = f"""
[ingest.sources.bench]
kind = "mqtt"
host = "127.0.0.1"
port = {port}
client_id = "{client_id}"
topics = ["{topic}"]
shared_group = "{group}"
session_expiry_s = 600
"""
        if coap_port:
            sources = f"""
[ingest.sources.bench]
kind = "coap"
host = "127.0.0.1"
port = {coap_port}
"""
        conf.write_text(f"""
[database]
dsn = "{dsn}"

[writer]
batch_size = 20000
max_delay_ms = 20
connections = 2
queue_max = 400000

[ingest]
metrics_port = {self.metrics_port}
metrics_host = "127.0.0.1"
{sources}""")
        self.log = open(tmp / f"{client_id}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "meterline", "--config", str(conf), "ingest", "run"],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, COLUMNS="200"))

    def metric(self, name: str) -> float:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        except OSError:
            return -1.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name + "{"))

    def written(self) -> float:
        return self.metric("meterline_ingest_readings_written_total")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_written(workers: list[Ingest], target: float, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while sum(max(0.0, w.written()) for w in workers) < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {sum(w.written() for w in workers):.0f} of {target:.0f} written")
        if any(w.proc.poll() is not None for w in workers):
            raise SystemExit("an ingest process exited; see its log")
        time.sleep(0.02)


def rate_line(label: str, rates: list[float], unit: str = "/s") -> float:
    med = statistics.median(rates)
    print(f"{label:<58} {med:>12,.0f} {unit}   (median of {len(rates)}: {', '.join(f'{r:,.0f}' for r in rates)})",
          flush=True)
    return med


# -- measurements --------------------------------------------------------------------------

def bench_drain(broker: Broker, stream: Stream, n: int, procs: int, repeat: int) -> float:
    topic = f"bench/drain{procs}"
    group = f"drain{procs}"
    subs = [Drainer(broker.port, f"$share/{group}/{topic}", f"drain{procs}-{k}") for k in range(procs)]
    try:
        rates = []
        for _ in range(repeat):
            payloads = stream.singles(n)
            before = sum(s.count for s in subs)
            t = time.perf_counter()
            publish(broker.port, topic, payloads)
            wait_counts(subs, before + n)
            rates.append(n / (time.perf_counter() - t))
        shared = " (shared subscription)" if procs > 1 else ""
        return rate_line(f"bare paho drain, {procs} process(es){shared}, QoS 1", rates)
    finally:
        for s in subs:
            s.close()


def bench_ingest(dsn: str, broker: Broker, stream: Stream, n: int, procs: int, repeat: int, tmp: Path,
                 batched: bool = False) -> float:
    topic = f"bench/ingest{procs}{'b' if batched else ''}"
    group = f"ml{procs}{'b' if batched else ''}"
    workers = [Ingest(dsn, broker.port, topic, f"{group}-{k}", group, tmp) for k in range(procs)]
    try:
        # warm up: every worker connected, subscribed and writing
        deadline = time.monotonic() + 60
        written = 0.0
        while written < 1:
            publish(broker.port, topic, stream.singles(procs * 4))
            time.sleep(0.3)
            written = min(w.written() for w in workers)
            if time.monotonic() > deadline:
                raise SystemExit("ingest workers did not start; see their logs in " + str(tmp))
        rates = []
        for _ in range(repeat):
            payloads = stream.batches(n) if batched else stream.singles(n)
            readings = n * (100 if batched else 1)
            before = sum(w.written() for w in workers)
            t = time.perf_counter()
            publish(broker.port, topic, payloads)
            wait_written(workers, before + readings)
            rates.append(readings / (time.perf_counter() - t))
        what = "batched (100 readings/message) readings" if batched else "single-reading messages"
        return rate_line(f"meterline ingest, {procs} process(es): {what}", rates)
    finally:
        for w in workers:
            w.close()


def bench_naive(dsn: str, broker: Broker, stream: Stream, n: int, repeat: int) -> float:
    topic = "bench/naive"
    sub = Drainer(broker.port, topic, "naive-0", dsn, naive=True)
    try:
        rates = []
        for _ in range(repeat):
            payloads = stream.singles(n)
            before = sub.count
            t = time.perf_counter()
            publish(broker.port, topic, payloads)
            wait_counts([sub], before + n)
            rates.append(n / (time.perf_counter() - t))
        return rate_line(f"naive subscriber (INSERT + COMMIT per message, {n:,})", rates)
    finally:
        sub.close()


def role_bare_coap(args: argparse.Namespace) -> None:
    """A bare aiocoap server answering 2.04 to every POST /r/{meter}: the CoAP ceiling."""
    import asyncio

    import aiocoap
    import aiocoap.resource as resource

    class Bare(resource.Resource, resource.PathCapable):
        async def render_post(self, request):
            return aiocoap.Message(code=aiocoap.CHANGED, payload=b"ok")

    async def main() -> None:
        site = resource.Site()
        site.add_resource(["r"], Bare())
        await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", args.port), transports=["udp6"])
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


COAP_METERS = 2000  # the CoAP meters: a fleet whose addresses the writer has looked up before (steady state)


def coap_run(port: int, stream: Stream, n: int) -> float:
    import cbor2

    from meterline.ingest.simulator import CoapClient

    client = CoapClient("127.0.0.1", port, window=64)
    try:
        meters = min(COAP_METERS, stream.meters)
        base = stream.step
        stream.step += n // meters + 1
        bodies = [(address(i % meters + 1), cbor2.dumps({"ts": T0 + 60 * (base + i // meters),
                                                          "value": 5000 + base + i // meters}))
                  for i in range(n)]
        t = time.perf_counter()
        for meter, body in bodies:
            client.post(meter, body, 60)
            if len(client.pending) > 32:
                client.poll(0)
        client.drain()
        elapsed = time.perf_counter() - t
        ok = client.stats.codes.get("2.04", 0)
        if ok != n:
            print(f"  (CoAP: {ok} of {n} answered 2.04: {client.stats.codes}, {client.stats.failed} unanswered)")
        return ok / elapsed
    finally:
        client.close()


def bench_coap(dsn: str, stream: Stream, n: int, repeat: int, tmp: Path) -> tuple[float, float]:
    port = free_port(socket.SOCK_DGRAM)
    bare = subprocess.Popen([sys.executable, __file__, "--role", "bare-coap", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert bare.stdout.readline().strip() == "ready"
        coap_run(port, stream, COAP_METERS)  # warm up
        base = rate_line("bare aiocoap server (answers 2.04, does nothing)", [coap_run(port, stream, n)
                                                                           for _ in range(repeat)])
    finally:
        bare.kill()
        bare.wait(10)
    port = free_port(socket.SOCK_DGRAM)
    worker = Ingest(dsn, 0, "", "coap-0", "", tmp, coap_port=port)
    try:
        deadline = time.monotonic() + 60
        while worker.metric("meterline_ingest_messages_received_total") < 0:
            if time.monotonic() > deadline:
                raise SystemExit("the CoAP ingest process did not start")
            time.sleep(0.1)
        coap_run(port, stream, COAP_METERS)  # warm up: every meter's address looked up once
        ours = rate_line("meterline ingest CoAP source: confirmable requests", [coap_run(port, stream, n)
                                                                              for _ in range(repeat)])
    finally:
        worker.close()
    return ours, base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000, help="single-reading messages per run")
    p.add_argument("--batched", type=int, default=2_000, help="concentrator messages (100 readings each) per run")
    p.add_argument("--naive", type=int, default=10_000, help="messages for the naive subscriber")
    p.add_argument("--coap", type=int, default=20_000, help="CoAP requests per run")
    p.add_argument("--meters", type=int, default=20_000)
    p.add_argument("--only", default="drain,ingest,naive,batched,coap", help="which figures (comma-separated)")
    p.add_argument("--role", default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--topic", default="", help=argparse.SUPPRESS)
    p.add_argument("--client-id", default="", help=argparse.SUPPRESS)
    p.add_argument("--naive-role", dest="naive_flag", action="store_true", help=argparse.SUPPRESS)
    add_server_args(p)
    args = p.parse_args()
    if args.role == "drain":
        role_drain(args)
        return
    if args.role == "bare-coap":
        role_bare_coap(args)
        return
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="meterline-bench-ingest-"))
    with server(args.dsn) as maint, fresh_database(maint, "ml_bench_ingest", args.keep) as dsn:
        make_meters(dsn, args.meters)
        broker = Broker()
        stream = Stream(args.meters)
        fig: dict[str, float] = {}
        print(f"{args.messages:,} single-reading messages, {args.batched:,} x 100-reading messages, "
              f"{args.coap:,} CoAP requests; {args.meters:,} meters; Mosquitto :{broker.port}; "
              f"{os.cpu_count()} CPUs; logs in {tmp}", flush=True)
        try:
            if "drain" in only:
                fig["drain1"] = bench_drain(broker, stream, args.messages, 1, args.repeat)
                fig["drain2"] = bench_drain(broker, stream, args.messages, 2, args.repeat)
            if "ingest" in only:
                fig["ingest1"] = bench_ingest(dsn, broker, stream, args.messages, 1, args.repeat, tmp)
                fig["ingest2"] = bench_ingest(dsn, broker, stream, args.messages, 2, args.repeat, tmp)
            if "naive" in only:
                fig["naive"] = bench_naive(dsn, broker, stream, args.naive, args.repeat)
            if "batched" in only:
                fig["batched1"] = bench_ingest(dsn, broker, stream, args.batched, 1, args.repeat, tmp, batched=True)
                fig["batched2"] = bench_ingest(dsn, broker, stream, args.batched, 2, args.repeat, tmp, batched=True)
            if "coap" in only:
                fig["coap"], fig["coap_bare"] = bench_coap(dsn, stream, args.coap, args.repeat, tmp)
        finally:
            broker.close()
        print()
        for a, b, label in (("ingest1", "drain1", "ingest / bare drain, 1 process"),
                            ("ingest2", "drain2", "ingest / bare drain, 2 processes"),
                            ("ingest1", "naive", "ingest (1 process) / naive subscriber"),
                            ("ingest2", "naive", "ingest (2 processes) / naive subscriber"),
                            ("coap", "coap_bare", "CoAP ingest / bare aiocoap server")):
            if a in fig and b in fig:
                print(f"ratio {label:<44} {fig[a] / fig[b]:.2f}x")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
