"""``meterline simulate``: the registry's meters push readings over the real protocols."""

from __future__ import annotations

import argparse

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meterline.cli._base import Command, Context
from meterline.errors import ConfigError
from meterline.ingest.simulator import (
    LORAWAN_CODECS, PROTOCOLS, Faults, MessageFactory, Plan, Simulator, load_meters,
)


def _address(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError([f"--{what}: expected HOST:PORT, got {text!r}"])
    return host, int(port)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meters", type=int, default=None, help="simulate at most this many meters (default: all)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS),
                   help=f"which registry meters to play, by protocol (default {','.join(PROTOCOLS)})")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--count", type=int, default=None, help="messages to send (default 1 per meter)")
    amount.add_argument("--duration", type=float, default=None, help="seconds to keep sending")
    p.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as acknowledged)")
    p.add_argument("--mqtt", default=None, metavar="HOST:PORT",
                   help="broker (default: the first mqtt source's, else 127.0.0.1:1883)")
    p.add_argument("--coap", default=None, metavar="HOST:PORT",
                   help="CoAP server (default: the first coap source's, else 127.0.0.1:5683)")
    p.add_argument("--mqtt-prefix", default="meterline/up", help="topic prefix of NB-IoT MQTT meters")
    p.add_argument("--lorawan-server", choices=("chirpstack", "tts"), default="chirpstack")
    p.add_argument("--lorawan-codec", choices=LORAWAN_CODECS, default="kamstrup",
                   help="how LoRaWAN payloads are encoded; the device profile is named after it (default kamstrup)")
    p.add_argument("--coap-format", choices=("cbor", "json"), default="cbor")
    p.add_argument("--batch", type=int, default=1, help="readings per MQTT message (concentrators), default 1")
    p.add_argument("--faults", default=None, metavar="SPEC",
                   help="probabilities per message, e.g. duplicates=0.01,reorder=0.01,malformed=0.005,skew=0.01")
    p.add_argument("--seed", type=int, default=1)


def _defaults(ctx: Context, kind: str, fallback: tuple[str, int]) -> tuple[str, int]:
    for table in ctx.settings.ingest.sources.values():
        if table.get("kind") == kind:
            host = str(table.get("host", fallback[0]))
            return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), int(table.get("port", fallback[1]))
    return fallback


def run(ctx: Context, args: argparse.Namespace) -> int:
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ConfigError([f"--protocols: unknown {', '.join(unknown)} (known: {', '.join(PROTOCOLS)})"])
    company = ctx.company
    with ctx.scoped() as conn:  # the company's meters (row-level security)
        meters = load_meters(conn, company.id, protocols, args.meters)
    plan = Plan(lorawan_server=args.lorawan_server, lorawan_codec=args.lorawan_codec, mqtt_prefix=args.mqtt_prefix,
                coap_format=args.coap_format, batch=args.batch)
    factory = MessageFactory(meters, plan, Faults.parse(args.faults), seed=args.seed)
    mqtt = _address(args.mqtt, "mqtt") if args.mqtt else _defaults(ctx, "mqtt", ("127.0.0.1", 1883))
    coap = _address(args.coap, "coap") if args.coap else _defaults(ctx, "coap", ("127.0.0.1", 5683))
    sim = Simulator(factory, mqtt=mqtt, coap=coap)
    count = args.count if args.count is not None or args.duration is not None else len(meters)
    by_protocol: dict[str, int] = {}
    for m in meters:
        by_protocol[m.protocol] = by_protocol.get(m.protocol, 0) + 1
    ctx.console.print(f"simulating {len(meters):,} meters of {company.code} "
                      f"({', '.join(f'{k} {v:,}' for k, v in sorted(by_protocol.items()))}); "
                      f"MQTT {mqtt[0]}:{mqtt[1]}, CoAP {coap[0]}:{coap[1]}")
    try:
        with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=ctx.console, transient=True) as progress:
            task = progress.add_task("send", total=count)
            stats = sim.run(count=count, duration=args.duration, rate=args.rate,
                            progress=lambda n: progress.update(task, completed=n))
    finally:
        sim.close()
    table = Table(title=f"simulation: {stats.messages:,} messages in {stats.seconds:,.1f}s "
                        f"({stats.messages / max(stats.seconds, 1e-9):,.0f}/s)")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("meters", f"{len(meters):,}")
    for transport, n in sorted(stats.by_transport.items()):
        table.add_row(f"messages over {transport}", f"{n:,}")
    table.add_row("readings carried", f"{stats.readings:,}")
    if stats.by_transport.get("mqtt"):
        table.add_row("MQTT messages acknowledged by the broker", f"{stats.mqtt_acked:,}")
    if stats.coap is not None:
        for code, n in sorted(stats.coap.codes.items()):
            table.add_row(f"CoAP answers {code}", f"{n:,}")
        table.add_row("CoAP retransmissions", f"{stats.coap.retransmitted:,}")
        table.add_row("CoAP requests unanswered", f"{stats.coap.failed:,}")
    for fault, n in sorted(stats.faults.items()):
        table.add_row(f"fault injected: {fault}", f"{n:,}")
    ctx.console.print(table)
    return 1 if stats.coap is not None and stats.coap.failed else 0


COMMANDS = [Command("simulate", "simulated meters push readings over MQTT, LoRaWAN uplinks and CoAP", run, configure,
                    description="The registry's meters (with a comm address and a pushing protocol) send readings "
                                "to a running ingest service over the real protocols, optionally with faults.",
                    permission="seed.run")]
