"""Validation scenarios as readable text: a meter's readings in, flags and alerts out.

A scenario file is a list of statements, run in order against a fresh database (company
'acme', zone Asia/Shanghai; every time in the file is local). Values are m³ with up to three
decimals (stored in litres) unless they end in ``L``.

    period 2026-10
    meter A size=DN15 digits=5 protocol=coap use_type=residential account=active book=B1 parent=M
    install A 2026-10-15T10:00 final=12345.678 initial=0      # device replaced at A
    read A 2026-10-01T00:00 1.370 source=handheld status=leak,dry received=2026-10-01T00:05
    read A 2026-10-02T00:00 15430.611 => high_limit isolated_outlier [rejected]
    daily A 2026-09-15..2026-09-30 00:00 from 1.000 step 0.017
    hourly A 2026-10-01T00:00..2026-10-04T00:00 from 1.000 step 0.010 night 0.030
    run                        # validate: batch run of the period, or the ingest path (see modes)
    run batch                  # always the batch run
    write                      # store the reads so far, validate nothing
    expect read A 2026-10-02T00:00 => isolated_outlier [rejected]
    expect alerts A: isolated_outlier:warning, spike     # the exact set of open alerts of A
    expect no alerts A
    expect book alert B1 reading_rate
    expect estimate A method=interpolation value=1.234   # value optional
    expect no estimate A
    expect effective A 2026-11-01T00:00 estimated        # or: real VALUE
    modes batch ingest         # which ways ``run`` validates (the test runs the file once per mode)

``=>`` after a read (or in ``expect read``) lists the rules that must fire (exactly) and the
state in brackets (default ``flagged`` when rules are listed); a ``read`` without ``=>`` must
come out valid; generated reads (``daily``, ``hourly``) are checked only when they carry ``=>``.
A read's own annotation is checked at the first ``run`` after it (the batch run validates the
period's reads only, so reads outside the period are checked in ingest mode).
Received time defaults to five minutes after the reading time.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from meterline.ingest.model import MeterStatus, Reading, Source
from meterline.ingest.vee.batch import run_period
from meterline.ingest.vee.config import VeeConfig
from meterline.ingest.vee.hook import IngestValidator
from meterline.ingest.vee.localtime import period_bounds
from meterline.ingest.writer import write_readings

TZ = ZoneInfo("Asia/Shanghai")
UTC = dt.timezone.utc


class ScenarioError(AssertionError):
    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path.name}:{line}: {message}")


@dataclass
class Statement:
    line: int
    verb: str
    args: list[str]
    text: str


@dataclass
class ReadSpec:
    meter: str
    ts: dt.datetime
    value: int
    source: Source = Source.COAP
    status: int = 0
    received: dt.datetime | None = None
    expect: tuple[frozenset[str], str] | None = None
    line: int = 0
    checked: bool = False


def local(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=TZ).astimezone(UTC)


def litres(text: str) -> int:
    if text.endswith("L"):
        return int(text[:-1])
    return int((Decimal(text) * 1000).to_integral_value())


def parse(path: Path) -> list[Statement]:
    out = []
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        words = shlex.split(text)
        out.append(Statement(no, words[0], words[1:], text))
    return out


def modes_of(path: Path) -> list[str]:
    for st in parse(path):
        if st.verb == "modes":
            return st.args
    return ["batch"]


def _expectation(words: list[str]) -> tuple[frozenset[str], str]:
    state = None
    rules = []
    for w in words:
        if w.startswith("[") and w.endswith("]"):
            state = w[1:-1]
        else:
            rules.append(w)
    return frozenset(rules), state or ("flagged" if rules else "valid")


@dataclass
class Scenario:
    path: Path
    conn: psycopg.Connection
    dsn: str
    company_id: int
    config: VeeConfig
    mode: str
    period: str = "2026-10"
    meters: dict[str, int] = field(default_factory=dict)
    books: dict[str, int] = field(default_factory=dict)
    reads: list[ReadSpec] = field(default_factory=list)
    unwritten: list[ReadSpec] = field(default_factory=list)
    unvalidated: list[ReadSpec] = field(default_factory=list)
    validator: IngestValidator | None = None
    summaries: list[Any] = field(default_factory=list)

    def fail(self, st: Statement, message: str) -> None:
        raise ScenarioError(self.path, st.line, f"[{self.mode}] {message}\n    {st.text}")

    # -- registry ------------------------------------------------------------------------------
    def _book(self, code: str) -> int:
        if code not in self.books:
            self.books[code] = self.conn.execute(
                """INSERT INTO meter_book (company_id, code, name, reader, supervisor, cycle)
                   VALUES (%s, %s, %s, '张伟', '计量主管-钱敏', 'M') RETURNING id""",
                [self.company_id, code, f"第{code}册"]).fetchone()[0]
        return self.books[code]

    def meter(self, st: Statement) -> None:
        name, opts = st.args[0], dict(a.split("=", 1) for a in st.args[1:])
        c = self.conn
        use_type = opts.get("use_type", "residential")
        c.execute("INSERT INTO use_type (company_id, code, name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                  [self.company_id, use_type, use_type])
        account_id = None
        if opts.get("account", "active") != "none":
            book = self._book(opts.get("book", "B1"))
            cust = c.execute("INSERT INTO customer (company_id, code, name) VALUES (%s, %s, %s) RETURNING id",
                             [self.company_id, f"C-{name}", f"客户{name}"]).fetchone()[0]
            account_id = c.execute(
                """INSERT INTO account (company_id, code, customer_id, address, use_type, tariff_id, book_id, status)
                   VALUES (%s, %s, %s, %s, %s, 'water-residential', %s, %s) RETURNING id""",
                [self.company_id, f"A-{name}", cust, f"地址{name}", use_type, book,
                 opts.get("account", "active")]).fetchone()[0]
        parent = self.meters[opts["parent"]] if "parent" in opts else None
        self.meters[name] = c.execute(
            """INSERT INTO meter (company_id, serial, comm_address, account_id, protocol, size, register_digits,
                                  display_unit, multiplier, parent_meter_id, status)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            [self.company_id, f"S-{name}", f"dev-{name}", account_id, opts.get("protocol", "coap"),
             opts.get("size", "DN15"), int(opts.get("digits", 5)), opts.get("unit", "m3"),
             int(opts.get("multiplier", 1)), parent, opts.get("status", "active")]).fetchone()[0]

    def install(self, st: Statement) -> None:
        name, when = st.args[0], local(st.args[1])
        opts = dict(a.split("=", 1) for a in st.args[2:])
        mid = self.meters[name]
        c = self.conn
        first = c.execute("SELECT count(*) FROM meter_installation WHERE meter_id = %s", [mid]).fetchone()[0] == 0
        if first:
            c.execute("""INSERT INTO meter_installation (company_id, meter_id, device_serial, installed_at, reason)
                         VALUES (%s, %s, %s, %s, 'new')""",
                      [self.company_id, mid, f"D-{name}-0", dt.datetime(2020, 1, 1, tzinfo=UTC)])
        if "final" in opts:
            c.execute("""UPDATE meter_installation SET removed_at = %s, final_register = %s
                         WHERE meter_id = %s AND removed_at IS NULL""", [when, litres(opts["final"]), mid])
        c.execute("""INSERT INTO meter_installation (company_id, meter_id, device_serial, installed_at,
                                                     initial_register, reason)
                     VALUES (%s, %s, %s, %s, %s, 'replaced')""",
                  [self.company_id, mid, f"D-{name}-{when:%Y%m%d}", when, litres(opts.get("initial", "0"))])

    # -- readings ------------------------------------------------------------------------------
    def _add(self, spec: ReadSpec) -> None:
        self.reads.append(spec)
        self.unwritten.append(spec)
        self.unvalidated.append(spec)

    def read(self, st: Statement) -> None:
        words = st.args
        expect = (frozenset(), "valid")
        if "=>" in words:
            k = words.index("=>")
            words, expect = words[:k], _expectation(words[k + 1:])
        name, ts, value = words[0], local(words[1]), litres(words[2])
        opts = dict(a.split("=", 1) for a in words[3:])
        status = 0
        for bit in filter(None, opts.get("status", "").split(",")):
            status |= MeterStatus[bit.upper()]
        self._add(ReadSpec(name, ts, value, Source[opts.get("source", "coap").upper()], int(status),
                           local(opts["received"]) if "received" in opts else None, expect, st.line))

    def series(self, st: Statement, step_hours: int) -> None:
        args, expect = st.args, None
        if "=>" in args:
            k = args.index("=>")
            args, expect = args[:k], _expectation(args[k + 1:])
        name, span = args[0], args[1]
        a, b = span.split("..")
        opts = args[2:]
        if step_hours == 24:  # daily A 2026-09-15..2026-09-30 00:00 from X step Y
            clock = opts[0]
            opts = opts[1:]
            start, end = local(f"{a}T{clock}"), local(f"{b}T{clock}")
        else:
            start, end = local(a), local(b)
        kv = dict(zip(opts[::2], opts[1::2]))
        value = litres(kv["from"])
        step = litres(kv["step"])
        night = litres(kv["night"]) if "night" in kv else None
        source = Source[kv.get("source", "coap").upper()]
        t = start
        while t <= end:
            self._add(ReadSpec(name, t, value, source, expect=expect, line=st.line))
            t = t + dt.timedelta(hours=step_hours)
            hour = t.astimezone(TZ).hour
            value += night if night is not None and 1 < hour <= 5 else step

    # -- validating ----------------------------------------------------------------------------
    def _readings(self, specs: list[ReadSpec]) -> list[Reading]:
        return [Reading(ts=s.ts, value=s.value, meter_id=self.meters[s.meter], source=s.source, status=s.status,
                        received_at=s.received or s.ts + dt.timedelta(minutes=5)) for s in specs]

    def _write(self, specs: list[ReadSpec]) -> None:
        if specs:
            res = write_readings(self.conn, self._readings(specs), future_tolerance_s=10**9)
            assert res.dead == 0, res.reasons

    def run(self, st: Statement) -> None:
        mode = st.args[0] if st.args else self.mode
        if mode == "batch":
            self._write(self.unwritten)
            self.unwritten = []
            self.summaries.append(run_period(self.dsn, self.company_id, "acme", "Asia/Shanghai", self.period,
                                             self.config, chunk_meters=3))
        else:
            if self.validator is None:
                self.validator = IngestValidator(self.dsn, self.config)
            # one committed batch per reading time: what a meter sends as it sends it
            todo = sorted(self.unvalidated, key=lambda s: s.ts) if st.args[1:2] != ["file-order"] else self.unvalidated
            written = {id(s) for s in self.reads if s not in self.unwritten}
            i = 0
            while i < len(todo):
                j = i
                while j < len(todo) and todo[j].ts == todo[i].ts:
                    j += 1
                batch = todo[i:j]
                self._write([s for s in batch if id(s) not in written])
                self.validator.validate(self._readings(batch))
                i = j
            self.unwritten = []
        self.unvalidated = []
        start, end = period_bounds(self.period, "Asia/Shanghai")
        for spec in self.reads:
            if spec.checked:
                continue
            spec.checked = True
            if mode == "batch" and not start <= spec.ts < end:
                continue  # the batch run validates the period's reads only
            if spec.expect is not None:
                self._check_read(st, spec.meter, spec.ts, spec.expect, spec.line)

    def close(self) -> None:
        if self.validator is not None:
            self.validator.close()

    # -- expectations --------------------------------------------------------------------------
    def _check_read(self, st: Statement, name: str, ts: dt.datetime, expect: tuple[frozenset[str], str], line: int) -> None:
        row = self.conn.execute(
            "SELECT flags, coalesce(review, auto_state) FROM reading_validation WHERE meter_id = %s AND ts = %s",
            [self.meters[name], ts]).fetchone()
        got = (frozenset(row[0]), row[1]) if row else (frozenset(), "valid")
        if got[1] == "valid" and not got[0]:
            got = (frozenset(), "valid")
        if got != expect:
            self.fail(st, f"read of {name} at {ts.astimezone(TZ):%Y-%m-%d %H:%M} (line {line}): expected "
                          f"{sorted(expect[0])} [{expect[1]}], got {sorted(got[0])} [{got[1]}]")

    def expect(self, st: Statement) -> None:
        a = st.args
        if a[0] == "read":
            k = a.index("=>")
            self._check_read(st, a[1], local(a[2]), _expectation(a[k + 1:]), st.line)
        elif a[0] == "alerts" or (a[0] == "no" and a[1] == "alerts"):
            name = a[1].rstrip(":") if a[0] == "alerts" else a[2]
            want = {} if a[0] == "no" else {
                w.split(":")[0]: (w.split(":")[1] if ":" in w else None)
                for w in " ".join(a[2:]).replace(",", " ").split()}
            rows = self.conn.execute("SELECT rule, severity, assignee FROM alert WHERE meter_id = %s "
                                     "AND status <> 'resolved'", [self.meters[name]]).fetchall()
            got = {r: s for r, s, _ in rows}
            if set(got) != set(want):
                self.fail(st, f"open alerts of {name}: expected {sorted(want)}, got {sorted(got)}")
            for r, sev in want.items():
                if sev is not None and got[r] != sev:
                    self.fail(st, f"alert {r} of {name}: expected severity {sev}, got {got[r]}")
            for r, _s, assignee in rows:
                if assignee != "计量主管-钱敏" and self._has_account(name):
                    self.fail(st, f"alert {r} of {name} routed to {assignee!r}, not the book's supervisor")
        elif a[0] == "book":  # expect book alert B1 reading_rate
            rows = {r for (r,) in self.conn.execute(
                "SELECT rule FROM alert WHERE book_id = %s AND meter_id IS NULL AND status <> 'resolved'",
                [self.books[a[2]]]).fetchall()}
            if a[3] not in rows:
                self.fail(st, f"book {a[2]}: no open {a[3]} alert (open: {sorted(rows)})")
        elif a[0] == "no" and a[1] == "book":  # expect no book alert B1
            rows = self.conn.execute("SELECT rule FROM alert WHERE book_id = %s AND meter_id IS NULL "
                                     "AND status <> 'resolved'", [self.books[a[3]]]).fetchall()
            if rows:
                self.fail(st, f"book {a[3]}: unexpected alerts {rows}")
        elif a[0] == "estimate" or (a[0] == "no" and a[1] == "estimate"):
            name = a[1] if a[0] == "estimate" else a[2]
            row = self.conn.execute(
                "SELECT value, method, superseded_at FROM reading_estimate WHERE meter_id = %s AND period = %s",
                [self.meters[name], self.period]).fetchone()
            if a[0] == "no":
                if row is not None and row[2] is None:
                    self.fail(st, f"{name}: unexpected estimate {row}")
                return
            if row is None:
                self.fail(st, f"{name}: no estimate")
            opts = dict(w.split("=", 1) for w in a[2:])
            if "method" in opts and row[1] != opts["method"]:
                self.fail(st, f"{name}: estimate method {row[1]}, expected {opts['method']}")
            if "value" in opts and row[0] != litres(opts["value"]):
                self.fail(st, f"{name}: estimate {row[0]} L, expected {litres(opts['value'])} L")
            if opts.get("superseded") == "yes" and row[2] is None:
                self.fail(st, f"{name}: estimate not marked superseded")
        elif a[0] == "effective":  # expect effective A TS estimated|real [VALUE]|absent
            name, ts, what = a[1], local(a[2]), a[3]
            row = self.conn.execute("SELECT value, estimated FROM reading_effective WHERE meter_id = %s AND ts = %s",
                                    [self.meters[name], ts]).fetchone()
            if what == "absent":
                if row is not None:
                    self.fail(st, f"{name}: {row} is effective, expected nothing")
                return
            if row is None or row[1] != (what == "estimated"):
                self.fail(st, f"{name}: effective read at {a[2]} is {row}, expected {what}")
            if len(a) > 4 and row[0] != litres(a[4]):
                self.fail(st, f"{name}: effective value {row[0]}, expected {litres(a[4])}")
        else:
            self.fail(st, f"unknown expectation {a[0]!r}")

    def _has_account(self, name: str) -> bool:
        return self.conn.execute("SELECT account_id IS NOT NULL FROM meter WHERE id = %s",
                                 [self.meters[name]]).fetchone()[0]


def play(path: Path, conn: psycopg.Connection, dsn: str, company_id: int, config: VeeConfig, mode: str) -> Scenario:
    sc = Scenario(path, conn, dsn, company_id, config, mode)
    try:
        for st in parse(path):
            if st.verb == "period":
                sc.period = st.args[0]
            elif st.verb == "meter":
                sc.meter(st)
            elif st.verb == "install":
                sc.install(st)
            elif st.verb == "read":
                sc.read(st)
            elif st.verb == "daily":
                sc.series(st, 24)
            elif st.verb == "hourly":
                sc.series(st, 1)
            elif st.verb == "run":
                sc.run(st)
            elif st.verb == "write":
                sc._write(sc.unwritten)
                sc.unwritten = []
            elif st.verb == "expect":
                sc.expect(st)
            elif st.verb == "modes":
                pass
            else:
                raise ScenarioError(path, st.line, f"unknown statement {st.verb!r}")
    finally:
        sc.close()
    return sc


