"""The demo's field steps: concentrators polled, handheld routes out and back.

* **Concentrators**: the demo utility's wired M-Bus meters answer on simulated M-Bus segments
  (:mod:`meterline.ingest.fieldsim.mbus`; one segment of up to 240 slaves per concentrator, on a
  pseudo-terminal like a level converter on a serial port or on TCP like a transparent gateway),
  its Modbus meters on a simulated Modbus TCP gateway (:mod:`meterline.ingest.fieldsim.modbus`).
  The ingest service's real ``mbus`` and ``modbus`` sources poll every device once. Each meter
  answers its register now: the last stored reading advanced at the meter's recent daily use.
  Faults: a slave answering garbage (malformed frame), one with a bad checksum, one silent, one
  whose identification is in no registry (unknown meter), a Modbus device without the
  profile's registers (exception response), one meter's register jumping far ahead (a spike)
  and one going back a little (reverse flow), for validation to find.
* **Handheld routes**: the route files of the meter books due next are exported
  (``ingest.handheld.export_route``, as ``meterline route export``), the reader's handheld fills
  in its walk-by meters, and the upload is imported (``import_upload``, as ``meterline route
  import``) with faults: a register mistyped, a meter not in the registry, a meter not reached
  (skip code), a spike and a reverse read. The same upload is imported again: nothing changes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from meterline.cli._demo_push import ingest_service, live_validator
from meterline.ingest import handheld
from meterline.ingest.fieldsim.mbus import SimBus, SimSlave, water_telegram
from meterline.ingest.fieldsim.modbus import ModbusTcpSim, sim_device, water_meter
from meterline.ingest.model import Quantity, Reading, Source
from meterline.ingest.service import Background, IngestService

UTC = dt.timezone.utc
SEGMENT = 240  #: M-Bus slaves per simulated segment (primary addresses 1..240; 241.. for the faulty ones)
MODBUS_UNITS = 240  #: Modbus devices per simulated gateway (unit ids 1..240)
UNKNOWN_IDENT = "99999999"  #: an M-Bus identification in nobody's registry
SPIKE_L = 20_000  #: litres a spiking register jumps ahead
REVERSE_L = 150  #: litres a register goes back (reverse flow, not a reset)
HANDHELD_SPIKE_L = 150_000  #: a walk-by read a month after the last one: a digit mis-keyed (+150 m³)

_NOW_SQL = """
SELECT m.id, m.serial, m.comm_address, m.protocol, m.register_modulus, l.ts, l.value, p.ts, p.value,
       m.account_id IS NOT NULL AND m.size = 'DN15'
         AND NOT EXISTS (SELECT 1 FROM meter k WHERE k.parent_meter_id = m.id) AS household
  FROM meter m
  LEFT JOIN LATERAL (SELECT r.ts, r.value FROM reading r WHERE r.meter_id = m.id AND r.quantity = m.quantity
                      ORDER BY r.ts DESC LIMIT 1) l ON true
  LEFT JOIN LATERAL (SELECT r.ts, r.value FROM reading r WHERE r.meter_id = m.id AND r.quantity = m.quantity
                        AND r.ts < l.ts - interval '12 hours' ORDER BY r.ts DESC LIMIT 1) p ON true
 WHERE m.company_id = %s AND m.protocol = ANY(%s) AND m.status = 'active'
 ORDER BY m.id
"""


@dataclass(frozen=True, slots=True)
class FieldMeter:
    meter_id: int
    serial: str
    address: str
    protocol: str
    modulus: int
    last_ts: dt.datetime | None
    last_value: int | None
    now_value: int  #: the register now, in base units (litres)
    household: bool = False  #: a household's own DN15 meter (no sub-meters)


def field_meters(conn: Any, company_id: int, protocols: list[str], now: dt.datetime) -> list[FieldMeter]:
    """Meters of ``protocols`` with their register now: last reading + recent daily use × time since."""
    out = []
    for mid, serial, addr, proto, modulus, lts, lv, pts, pv, household in conn.execute(_NOW_SQL,
                                                                                       [company_id, protocols]):
        if lv is None:
            out.append(FieldMeter(mid, serial, addr or serial, proto, modulus, None, None, 0, household))
            continue
        rate = 0.0
        if pv is not None and pts is not None and lts > pts:
            rate = ((lv - pv) % modulus) / (lts - pts).total_seconds()
        advance = int(rate * max(0.0, (now - lts).total_seconds()))
        out.append(FieldMeter(mid, serial, addr or serial, proto, modulus, lts, lv, (lv + advance) % modulus,
                              household))
    return out


def _metric_by(service: IngestService, name: str, label: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for family in service.metrics.registry.collect():
        for s in family.samples:
            if s.name == name and s.value:
                out[s.labels.get(label, "")] = out.get(s.labels.get(label, ""), 0) + int(s.value)
    return out


def step_concentrators(state: Any) -> None:
    assert state.db is not None and state.company_id is not None
    now = dt.datetime.now(UTC)
    with state.db.connection(company_id=state.company_id) as conn:
        meters = field_meters(conn, state.company_id, ["mbus", "modbus"], now)
    mbus = [m for m in meters if m.protocol == "mbus" and m.address.isdigit() and len(m.address) == 8]
    modbus = [m for m in meters if m.protocol == "modbus"]
    if not mbus:
        raise RuntimeError("the demo utility has no M-Bus meter (use more --meters)")
    values = {m.meter_id: m.now_value for m in meters}
    # the faults validation should find: one register far ahead, one a little back
    # ... on households' meters (a building's master meter passes far more water every day)
    homes = [m for m in mbus if m.household and m.last_value] or mbus
    spiking, reversing = homes[len(homes) // 3], homes[(2 * len(homes)) // 3 if len(homes) > 2 else -1]
    values[spiking.meter_id] = (spiking.now_value + SPIKE_L) % spiking.modulus
    values[reversing.meter_id] = max(0, (reversing.last_value or 0) - REVERSE_L)
    state.data["field_faults"] = {"M-Bus spike": spiking.serial, "M-Bus reverse": reversing.serial}

    stop = threading.Event()
    sources: dict[str, dict] = {}
    common = {"interval_s": 86400.0, "align": False, "timeout_s": 0.2, "retries": 1,
              "timezone": state.ctx.settings.utility.timezone}
    segments = [mbus[i:i + SEGMENT] for i in range(0, len(mbus), SEGMENT)]
    for n, seg in enumerate(segments):
        slaves = [SimSlave(a, [water_telegram(m.address, values[m.meter_id], address=a, access=n)])
                  for a, m in enumerate(seg, start=1)]
        if n == 0:
            good = slaves[0].telegrams
            slaves += [SimSlave(241, good, behaviour="garbage"), SimSlave(242, good, behaviour="bad_checksum"),
                       SimSlave(243, good, behaviour="silent"),
                       SimSlave(244, [water_telegram(UNKNOWN_IDENT, 123_456, address=244)])]
        bus = SimBus(slaves)
        devices = [{"address": s.primary} for s in slaves]
        if n % 2 == 0:
            path, _ = bus.serve_pty(stop)
            sources[f"mbus-{n + 1:02d}"] = {"kind": "mbus", "transport": "serial", "port": path, **common,
                                            "devices": devices}
        else:
            port, _ = bus.serve_tcp(stop)
            sources[f"mbus-{n + 1:02d}"] = {"kind": "mbus", "transport": "tcp", "host": "127.0.0.1",
                                            "tcp_port": port, **common, "devices": devices}
    gateways = [modbus[i:i + MODBUS_UNITS] for i in range(0, len(modbus), MODBUS_UNITS)] or [[]]
    sims: list[ModbusTcpSim] = []
    try:
        for n, gw in enumerate(gateways):
            devices = [water_meter(u, values[m.meter_id]) for u, m in enumerate(gw, start=1)]
            settings = [{"unit": u, "profile": "water-meter-uint32-litres", "device": m.address}
                        for u, m in enumerate(gw, start=1)]
            if n == 0:
                devices.append(sim_device(241, {(3, 0): (1, 2)}))  # too few registers: exception 2
                settings.append({"unit": 241, "profile": "water-meter-uint32-litres", "device": "PUMP-ROOM-241"})
            sim = ModbusTcpSim(devices).start()
            sims.append(sim)
            sources[f"modbus-{n + 1:02d}"] = {"kind": "modbus", "transport": "tcp", "host": "127.0.0.1",
                                              "port": sim.port, "interval_s": 86400.0, "align": False,
                                              "timeout_s": 1.0, "retries": 1, "devices": settings}
        service = ingest_service(state, sources)
        started = time.monotonic()
        running = Background(service).start()
        try:
            with Progress(TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=state.ctx.console, transient=False) as progress:
                task = progress.add_task(f"polling {len(sources)} concentrators", total=len(sources))
                deadline = time.monotonic() + 300
                while True:
                    done = sum(1 for st in service.sources if st.source.cycles >= 1)
                    progress.update(task, completed=done)
                    if done == len(sources):
                        break
                    if time.monotonic() > deadline or not running.thread.is_alive():
                        raise RuntimeError("the concentrators were not all polled within 300 s")
                    time.sleep(0.05)
        finally:
            running.stop()
        seconds = time.monotonic() - started
    finally:
        stop.set()
        for sim in sims:
            sim.stop()
    failed = [f"{st.name}: {st.error}" for st in service.sources if getattr(st, "error", None) is not None]
    if failed:
        raise RuntimeError("concentrator source(s) failed during the demo: " + "; ".join(failed))
    written = sum(_metric_by(service, "meterline_ingest_readings_written_total", "source").values())
    dead = _metric_by(service, "meterline_ingest_dead_letters_total", "reason")
    devices = sum(st.source.last_report.devices for st in service.sources)
    state.data["concentrators"] = {"written": written, "dead": dead}
    state.add("concentrators", "polled", f"{len(segments)} M-Bus segments ({len(mbus):,} meters), "
                                         f"{len(gateways)} Modbus gateways ({len(modbus):,} meters): "
                                         f"{devices:,} devices in {seconds:.1f}s")
    if not modbus:
        state.add("concentrators", "Modbus", "no Modbus meter in a utility this small: one faulty device only")
    state.add("concentrators", "readings written", f"{written:,}")
    state.add("concentrators", "dead letters", ", ".join(f"{k} {v}" for k, v in sorted(dead.items())) or "none")
    state.add("concentrators", "faults for validation", f"spike on {spiking.serial}, reverse on {reversing.serial}")


# --- handheld routes --------------------------------------------------------------------------

_BOOKS_SQL = """
SELECT b.code, count(*) AS meters, max(r.last) AS last_read
  FROM meter_book b
  JOIN account a ON a.book_id = b.id AND a.company_id = b.company_id
  JOIN meter m ON m.account_id = a.id AND m.protocol = 'handheld' AND m.status = 'active'
  LEFT JOIN LATERAL (SELECT max(ts) AS last FROM reading r WHERE r.meter_id = m.id) r ON true
 WHERE b.company_id = %s
 GROUP BY b.code
 ORDER BY max(r.last) NULLS FIRST, b.code
 LIMIT %s
"""


def _litres_text(litres: int, unit: str) -> str:
    digits = handheld.UNIT_DIGITS[unit]
    return format(Decimal(litres).scaleb(-digits), "f")


def step_handheld(state: Any, books: int = 2) -> None:
    assert state.db is not None and state.company_id is not None
    company = state.data["seed"].company
    tz = ZoneInfo(company.timezone)
    out_dir: Path = state.out_dir / "routes"
    out_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(UTC)
    with state.db.connection(company_id=state.company_id) as conn:
        chosen = conn.execute(_BOOKS_SQL, [state.company_id, books]).fetchall()
        if not chosen:
            raise RuntimeError("the demo utility has no handheld meters in any book (use more --meters)")
        registers = {m.serial: m for m in field_meters(conn, state.company_id, ["handheld"], now)}
        routes = []
        for code, _n, _last in chosen:
            entries = handheld.export_route(conn, company, code, on=now.astimezone(tz).date())
            path = out_dir / f"route_{code}.csv"
            with open(path, "w", encoding="utf-8-sig", newline="") as fh:
                handheld.write_route(entries, "csv", fh, tz=tz, book=code)
            routes.append((code, path, len(entries)))
    # the reader walks the route: the walk-by meters are read, the remote ones are not on the handheld
    uploads = []
    faults: dict[str, str] = {}
    for k, (code, path, _n) in enumerate(routes):
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["meter"] in registers]
        walked = len(rows)
        start = now - dt.timedelta(seconds=30 * (walked + 5))
        homes = [i for i, r in enumerate(rows) if registers[r["meter"]].household and registers[r["meter"]].last_value]
        fault_at = dict(zip(homes[:4], ("mistyped", "no access", "spike", "reverse"))) if k == 0 else {}
        for i, row in enumerate(rows):
            m = registers[row["meter"]]
            row["read_at"] = (start + dt.timedelta(seconds=30 * i)).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
            row["reader"] = row["reader"] or "R01"
            value = m.now_value
            fault = fault_at.get(i)
            if fault == "mistyped":
                row["register"], faults["mistyped register"] = "12O4.5", row["meter"]
                continue
            if fault == "no access":
                row["skip_code"], row["note"], faults["no access"] = "no_access", "门锁着", row["meter"]
                continue
            if fault == "spike":
                value, faults["handheld spike"] = (value + HANDHELD_SPIKE_L) % m.modulus, row["meter"]
            if fault == "reverse":
                value, faults["handheld reverse"] = max(0, (m.last_value or 0) - REVERSE_L), row["meter"]
            row["register"] = _litres_text(value, row["unit"] or "m3")
        if k == 0 and rows:
            ghost = dict(rows[0], meter="WM99999999", register="100", skip_code="", note="new meter, not on the list")
            rows.append(ghost)
            faults["unknown meter"] = "WM99999999"
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(handheld.ROUTE_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        upload = out_dir / f"upload_{code}.csv"
        upload.write_text(buf.getvalue(), encoding="utf-8-sig")
        uploads.append((code, upload, walked))
    totals = {"rows": 0, "read": 0, "skipped": 0, "bad": 0, "new": 0}
    errors: list[str] = []
    again_new = 0
    imported: list[int | None] = []
    with state.db.connect(autocommit=True, company_id=state.company_id, owner=True) as conn:
        for code, upload, _walked in uploads:
            report = handheld.import_upload(conn, company, upload.read_bytes(), name=upload.name)
            totals["rows"] += report.rows_total
            totals["read"] += report.rows_read
            totals["skipped"] += report.rows_skipped
            totals["bad"] += report.rows_bad
            totals["new"] += report.readings_new
            errors += [f"{upload.name} line {e.line}: {e.message}" for e in report.errors]
            imported.append(report.import_id)
            state.ctx.console.print(f"  book {code}: {report.rows_total} rows, {report.rows_read} read, "
                                    f"{report.rows_skipped} skipped, {report.rows_bad} refused, "
                                    f"{report.readings_new} new readings (import #{report.import_id})")
        # the reader's handheld uploads the first file again: nothing changes
        again = handheld.import_upload(conn, company, uploads[0][1].read_bytes(), name=uploads[0][1].name)
        again_new = again.readings_new
        # the imported reads go to validation like every committed batch
        refs = [f"handheld:{i}:%" for i in imported if i is not None]
        rows = conn.execute("""SELECT meter_id, ts, value, quantity FROM reading
                                WHERE source_ref LIKE ANY(%s) AND source = %s""",
                            [refs, int(Source.HANDHELD)]).fetchall()
    live_validator(state).submit([Reading(ts=ts, value=v, quantity=Quantity(q), meter_id=m, source=Source.HANDHELD,
                                          received_at=now) for m, ts, v, q in rows])
    for e in errors:
        state.ctx.console.print(f"  refused: {e}")
    state.data["handheld"] = {**totals, "errors": errors, "faults": faults}
    state.add("handheld routes", "route files", f"{len(routes)} books → {out_dir}")
    state.add("handheld routes", "upload rows", f"{totals['rows']:,}: {totals['read']:,} read, "
                                                f"{totals['skipped']} not reached, {totals['bad']} refused")
    state.add("handheld routes", "readings stored", f"{totals['new']:,}")
    state.add("handheld routes", "same file again", "nothing changed" if again.already_imported_at and again_new == 0
              else f"{again_new} new readings (unexpected)")
    if again_new:
        raise RuntimeError("re-importing the same handheld upload stored readings again")
