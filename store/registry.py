"""Registry import and export: customers, accounts, meters and meter books as one CSV.

The file is UTF-8 (a BOM is accepted), one row per metering point with its account, customer
and book repeated, the shape registry spreadsheets of utility systems already have. Columns
(``REGISTRY_COLUMNS``; a file may leave columns out, blank cells take the defaults):

===================  ==========================================================================
customer_code        customer (客户) key within the company (required with an account)
customer_name        person or organisation name (required with a customer)
customer_kind        ``person`` (default) or ``organisation``
id_number, phone     personal data (protected)
invoice_title,       for e-invoicing
tax_id
account_code         billed service account (用户) key; blank for a meter billed to nobody
address              service address (required with an account)
district_code/_name  district
use_type, tariff_id  use type code (用水性质) and tariff id (required with an account)
household_size       persons (default 3); ``dwellings`` served by a shared meter (default 1)
floor_area_m2        heating / apportionment area
account_status       active | suspended | closed; ``opened_on`` YYYY-MM-DD
book_code ...        meter book: ``book_name``, ``reader``, ``supervisor``, ``cycle``
route_order          position of the account in its book's route
meter_serial         metering point serial; blank for an account without a meter
comm_address         address senders use (devEUI, IMEI, M-Bus address); defaults to the serial
model, protocol,     meter model, protocol (mqtt, lorawan, coap, mbus, wmbus, modbus, handheld,
medium, size         manual), medium (water, hot_water, heat, gas, cooling), size (DN15, ...)
multiplier,          register multiplier, digits before the decimal point, display unit
register_digits,     (m3, L, kWh, MWh)
display_unit
parent_serial        master meter of this sub-meter (总分表); ``apportion_policy`` on a master
installed_on,        installation date and the register at installation (base units:
initial_register     litres or Wh)
===================  ==========================================================================

Import is all or nothing: every row is checked, every problem is reported with its line
number, and if there is any, nothing is written. Rows update existing records with the same
codes (re-importing a file changes nothing). Export writes the same columns, sorted by book,
route order, account and meter, so export → import → export gives the same bytes.

Personal data (``id_number``, ``phone``) is encrypted on import (:mod:`meterline.store.personal`;
the key ring defaults to the configured one) and exported as the reader may see it:
``disclosure=Disclosure.FULL`` for holders of ``personal.read`` (the round trip above),
``MASKED`` (the default) otherwise, ``NONE`` for outside parties. A masked value cannot be
imported back (it would overwrite the real one).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator, Sequence

import psycopg

from meterline.errors import ImportFileError, ImportRowError
from meterline.store.personal import PERSONAL_FIELDS, Disclosure, KeyRing, default_keyring, is_masked, mask

REGISTRY_COLUMNS = (
    "customer_code", "customer_name", "customer_kind", "id_number", "phone", "invoice_title", "tax_id",
    "account_code", "address", "district_code", "district_name", "use_type", "tariff_id",
    "household_size", "dwellings", "floor_area_m2", "account_status", "opened_on",
    "book_code", "book_name", "reader", "supervisor", "cycle", "route_order",
    "meter_serial", "comm_address", "model", "protocol", "medium", "size", "multiplier",
    "register_digits", "display_unit", "parent_serial", "apportion_policy", "installed_on", "initial_register",
)
REQUIRED: tuple[str, ...] = ()

KINDS = ("person", "organisation")
STATUSES = ("active", "suspended", "closed")
PROTOCOLS = ("mqtt", "lorawan", "coap", "mbus", "wmbus", "modbus", "handheld", "manual")
MEDIA = ("water", "hot_water", "heat", "gas", "cooling")
UNITS = ("m3", "L", "kWh", "MWh")
POLICIES = ("master_account", "by_consumption", "equal", "by_area")
_CODE = re.compile(r"^[^\s,;]{1,64}$")


@dataclass(frozen=True, slots=True)
class RegistryRow:
    customer_code: str | None = None
    customer_name: str | None = None
    customer_kind: str = "person"
    id_number: str | None = None
    phone: str | None = None
    invoice_title: str | None = None
    tax_id: str | None = None
    account_code: str | None = None
    address: str | None = None
    district_code: str | None = None
    district_name: str | None = None
    use_type: str | None = None
    tariff_id: str | None = None
    household_size: int = 3
    dwellings: int = 1
    floor_area_m2: Decimal | None = None
    account_status: str = "active"
    opened_on: dt.date | None = None
    book_code: str | None = None
    book_name: str | None = None
    reader: str | None = None
    supervisor: str | None = None
    cycle: str | None = None
    route_order: int | None = None
    meter_serial: str | None = None
    comm_address: str | None = None
    model: str | None = None
    protocol: str = "manual"
    medium: str = "water"
    size: str | None = None
    multiplier: int = 1
    register_digits: int = 5
    display_unit: str = "m3"
    parent_serial: str | None = None
    apportion_policy: str | None = None
    installed_on: dt.date | None = None
    initial_register: int = 0
    line: int = 0  # line number in the source file (not a column)


_INT_FIELDS = {"household_size": (1, 99), "dwellings": (1, 9999), "route_order": (0, 10**9),
               "multiplier": (1, 10**6), "register_digits": (1, 12), "initial_register": (0, 10**15)}
_DATE_FIELDS = ("opened_on", "installed_on")
_ENUMS = {"customer_kind": KINDS, "account_status": STATUSES, "protocol": PROTOCOLS, "medium": MEDIA,
          "display_unit": UNITS, "apportion_policy": POLICIES}
_DEFAULTS = {f.name: f.default for f in fields(RegistryRow)}


def parse_row(raw: dict[str, str], line: int) -> tuple[RegistryRow | None, list[ImportRowError]]:
    """Convert one CSV record to a RegistryRow; return every problem of the row."""
    errors: list[ImportRowError] = []
    values: dict[str, Any] = {"line": line}
    for name in REGISTRY_COLUMNS:
        text = (raw.get(name) or "").strip()
        if not text:
            if name in REQUIRED:
                errors.append(ImportRowError(line, "is required", name))
            continue
        if name in _INT_FIELDS:
            lo, hi = _INT_FIELDS[name]
            try:
                v = int(text)
            except ValueError:
                errors.append(ImportRowError(line, f"{text!r} is not a whole number", name))
                continue
            if not lo <= v <= hi:
                errors.append(ImportRowError(line, f"{v} is outside {lo}..{hi}", name))
                continue
            values[name] = v
        elif name in _DATE_FIELDS:
            try:
                values[name] = dt.date.fromisoformat(text)
            except ValueError:
                errors.append(ImportRowError(line, f"{text!r} is not a date (YYYY-MM-DD)", name))
        elif name == "floor_area_m2":
            try:
                area = Decimal(text)
            except InvalidOperation:
                errors.append(ImportRowError(line, f"{text!r} is not a number", name))
                continue
            if area < 0 or area != area.quantize(Decimal("0.01")) or area >= Decimal("1e10"):
                errors.append(ImportRowError(line, f"{text} must be >= 0 with at most 2 decimals", name))
                continue
            values[name] = area
        elif name in _ENUMS:
            if text not in _ENUMS[name]:
                errors.append(ImportRowError(line, f"{text!r} is not one of {', '.join(_ENUMS[name])}", name))
                continue
            values[name] = text
        elif name in PERSONAL_FIELDS and is_masked(text):
            errors.append(ImportRowError(line, f"{mask(text)} is masked; import a file exported with personal "
                                               "data (permission personal.read) or leave the cell blank", name))
        else:
            if name.endswith("_code") or name in ("meter_serial", "parent_serial", "comm_address"):
                if not _CODE.match(text):
                    errors.append(ImportRowError(line, f"{text!r} must be 1-64 characters without spaces, commas or semicolons", name))
                    continue
            values[name] = text
    if values.get("customer_code") and not values.get("customer_name"):
        errors.append(ImportRowError(line, "is required for a row with a customer", "customer_name"))
    if values.get("account_code"):
        for need in ("customer_code", "address", "use_type", "tariff_id"):
            if not values.get(need):
                errors.append(ImportRowError(line, "is required for a row with an account", need))
    elif any(values.get(k) for k in ("address", "use_type", "tariff_id", "book_code")):
        errors.append(ImportRowError(line, "account fields are given but account_code is blank", "account_code"))
    if values.get("book_code") and not values.get("cycle"):
        errors.append(ImportRowError(line, "is required for a row with a book", "cycle"))
    if values.get("district_code") and not values.get("district_name"):
        errors.append(ImportRowError(line, "is required for a row with a district", "district_name"))
    if not values.get("meter_serial"):
        for k in ("comm_address", "parent_serial", "model", "apportion_policy"):
            if values.get(k):
                errors.append(ImportRowError(line, "meter fields are given but meter_serial is blank", "meter_serial"))
                break
    if values.get("parent_serial") and values.get("parent_serial") == values.get("meter_serial"):
        errors.append(ImportRowError(line, "a meter cannot be its own master meter", "parent_serial"))
    if not values.get("account_code") and not values.get("meter_serial"):
        errors.append(ImportRowError(line, "row has neither an account nor a meter", "account_code"))
    if errors:
        return None, errors
    return RegistryRow(**values), []


def read_csv(path: str | Path) -> tuple[list[RegistryRow], list[ImportRowError]]:
    """Parse a registry CSV; return the rows and every problem found (with line numbers)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [], [ImportRowError(line, f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                         "save the file as UTF-8 (GBK files: convert with iconv -f GBK -t UTF-8)")]
    return parse_csv_text(text)


def parse_csv_text(text: str) -> tuple[list[RegistryRow], list[ImportRowError]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], [ImportRowError(1, "file is empty")]
    header = [h.strip() for h in header]
    errors: list[ImportRowError] = []
    unknown = [h for h in header if h not in REGISTRY_COLUMNS]
    if unknown:
        errors.append(ImportRowError(1, f"unknown column(s): {', '.join(unknown)}"))
    if "account_code" not in header and "meter_serial" not in header:
        errors.append(ImportRowError(1, "missing column(s): account_code or meter_serial"))
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        errors.append(ImportRowError(1, f"repeated column(s): {', '.join(dupes)}"))
    if errors:
        return [], errors
    rows: list[RegistryRow] = []
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            errors.append(ImportRowError(line, f"has {len(record)} fields, the header has {len(header)}"))
            continue
        row, row_errors = parse_row(dict(zip(header, record)), line)
        if row_errors:
            errors.extend(row_errors)
        else:
            rows.append(row)
    errors.extend(check_consistency(rows))
    return rows, errors


_CUSTOMER_FIELDS = ("customer_name", "customer_kind", "id_number", "phone", "invoice_title", "tax_id")
_ACCOUNT_FIELDS = ("customer_code", "address", "district_code", "use_type", "tariff_id", "household_size",
                   "dwellings", "floor_area_m2", "account_status", "opened_on", "book_code", "route_order")
_BOOK_FIELDS = ("book_name", "reader", "supervisor", "cycle")


def check_consistency(rows: Sequence[RegistryRow]) -> list[ImportRowError]:
    """The same customer / account / book / district / meter must read the same on every row."""
    errors: list[ImportRowError] = []
    for key, attrs, label in (
        ("customer_code", _CUSTOMER_FIELDS, "customer"),
        ("account_code", _ACCOUNT_FIELDS, "account"),
        ("book_code", _BOOK_FIELDS, "book"),
        ("district_code", ("district_name",), "district"),
    ):
        first: dict[str, RegistryRow] = {}
        for row in rows:
            code = getattr(row, key)
            if not code:
                continue
            prev = first.setdefault(code, row)
            if prev is row:
                continue
            for attr in attrs:
                if getattr(prev, attr) != getattr(row, attr):
                    here, there = getattr(row, attr), getattr(prev, attr)
                    if attr in PERSONAL_FIELDS:
                        here, there = mask(here), mask(there)
                    errors.append(ImportRowError(
                        row.line, f"{label} {code} has {attr}={here!r} here but "
                                  f"{there!r} on line {prev.line}", attr))
    seen: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for row in rows:
        if row.meter_serial:
            if row.meter_serial in seen:
                errors.append(ImportRowError(row.line, f"meter {row.meter_serial} already appears on line {seen[row.meter_serial]}", "meter_serial"))
            seen.setdefault(row.meter_serial, row.line)
            addr = row.comm_address or row.meter_serial
            if addr in addresses and addresses[addr] != row.line:
                errors.append(ImportRowError(row.line, f"address {addr} already used on line {addresses[addr]}", "comm_address"))
            addresses.setdefault(addr, row.line)
    return errors


_STAGE_DDL = """CREATE TEMP TABLE registry_stage (
    line integer, customer_code text, customer_name text, customer_kind text, id_number text, phone text,
    invoice_title text, tax_id text, account_code text, address text, district_code text, district_name text,
    use_type text, tariff_id text, household_size smallint, dwellings smallint, floor_area_m2 numeric(12,2),
    account_status text, opened_on date, book_code text, book_name text, reader text, supervisor text, cycle text,
    route_order integer, meter_serial text, comm_address text, model text, protocol text, medium text, size text,
    multiplier integer, register_digits smallint, display_unit text, parent_serial text, apportion_policy text,
    installed_on date, initial_register bigint
) ON COMMIT DROP"""


@dataclass(frozen=True, slots=True)
class ImportSummary:
    rows: int
    customers: int
    accounts: int
    meters: int
    books: int
    districts: int


def load_rows(conn: psycopg.Connection, company_id: int, rows: Sequence[RegistryRow], *, source: str = "<rows>",
              keyring: KeyRing | None = None) -> ImportSummary:
    """Upsert the rows into the company's registry in one transaction (all or nothing)."""
    problems = check_consistency(rows)
    if problems:
        raise ImportFileError(source, problems)
    if any(getattr(r, f) for r in rows for f in PERSONAL_FIELDS):
        keyring = keyring or default_keyring()
    cols = ("line",) + REGISTRY_COLUMNS
    personal = {cols.index(f): f for f in PERSONAL_FIELDS}
    try:
        with conn.transaction():
            _load_rows(conn, company_id, rows, source, cols, personal, keyring)
            counts = conn.execute(
                """SELECT count(DISTINCT customer_code), count(DISTINCT account_code), count(DISTINCT meter_serial),
                          count(DISTINCT book_code), count(DISTINCT district_code) FROM registry_stage""").fetchone()
    except psycopg.errors.UniqueViolation as exc:
        # the meter address index spans the companies, whose meters this session cannot see
        if exc.diag.constraint_name == "meter_comm_address_key":
            raise ImportFileError(source, [ImportRowError(0, "a meter address in this file already belongs to a "
                                                             "meter of another company", "comm_address")]) from exc
        raise
    return ImportSummary(len(rows), *counts)


def _load_rows(conn: psycopg.Connection, company_id: int, rows: Sequence[RegistryRow], source: str,
               cols: tuple[str, ...], personal: dict[int, str], keyring: KeyRing | None) -> None:
    conn.execute(_STAGE_DDL)
    with conn.cursor().copy(f"COPY registry_stage ({', '.join(cols)}) FROM STDIN") as copy:
        for r in rows:
            values = [getattr(r, c) for c in cols]
            if keyring is not None:
                for i, field in personal.items():
                    values[i] = keyring.protect(values[i], company_id=company_id, field=field)
            copy.write_row(values)
    conn.execute("ANALYZE registry_stage")
    _check_against_database(conn, company_id, source)
    p = {"c": company_id}
    conn.execute(
        """INSERT INTO district (company_id, code, name)
           SELECT DISTINCT ON (district_code) %(c)s, district_code, district_name
           FROM registry_stage WHERE district_code IS NOT NULL ORDER BY district_code, line
           ON CONFLICT (company_id, code) DO UPDATE SET name = EXCLUDED.name
           WHERE district.name IS DISTINCT FROM EXCLUDED.name""", p)
    conn.execute(
        """INSERT INTO use_type (company_id, code, name)
           SELECT DISTINCT %(c)s, use_type, use_type FROM registry_stage WHERE use_type IS NOT NULL
           ON CONFLICT DO NOTHING""", p)
    conn.execute(
        """INSERT INTO meter_book (company_id, code, name, district_id, reader, supervisor, cycle)
           SELECT DISTINCT ON (s.book_code) %(c)s, s.book_code, coalesce(s.book_name, s.book_code), d.id,
                  s.reader, s.supervisor, s.cycle
           FROM registry_stage s LEFT JOIN district d ON d.company_id = %(c)s AND d.code = s.district_code
           WHERE s.book_code IS NOT NULL ORDER BY s.book_code, s.line
           ON CONFLICT (company_id, code) DO UPDATE SET name = EXCLUDED.name, reader = EXCLUDED.reader,
               supervisor = EXCLUDED.supervisor, cycle = EXCLUDED.cycle,
               district_id = coalesce(EXCLUDED.district_id, meter_book.district_id)
           WHERE (meter_book.name, meter_book.reader, meter_book.supervisor, meter_book.cycle)
                 IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.reader, EXCLUDED.supervisor, EXCLUDED.cycle)""", p)
    conn.execute(
        """INSERT INTO customer (company_id, code, name, kind, id_number, phone, invoice_title, tax_id)
           SELECT DISTINCT ON (customer_code) %(c)s, customer_code, customer_name, customer_kind,
                  id_number, phone, invoice_title, tax_id
           FROM registry_stage WHERE customer_code IS NOT NULL ORDER BY customer_code, line
           ON CONFLICT (company_id, code) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
               id_number = EXCLUDED.id_number, phone = EXCLUDED.phone,
               invoice_title = EXCLUDED.invoice_title, tax_id = EXCLUDED.tax_id
           WHERE (customer.name, customer.kind, customer.id_number, customer.phone, customer.invoice_title, customer.tax_id)
                 IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.kind, EXCLUDED.id_number, EXCLUDED.phone,
                                   EXCLUDED.invoice_title, EXCLUDED.tax_id)""", p)
    conn.execute(
        """INSERT INTO account (company_id, code, customer_id, address, district_id, use_type, tariff_id,
                                household_size, dwellings, floor_area_m2, book_id, route_order, status, opened_on)
           SELECT DISTINCT ON (s.account_code) %(c)s, s.account_code, cu.id, s.address, d.id, s.use_type, s.tariff_id,
                  s.household_size, s.dwellings, s.floor_area_m2, b.id, s.route_order, s.account_status,
                  coalesce(s.opened_on, CURRENT_DATE)
           FROM registry_stage s
           JOIN customer cu ON cu.company_id = %(c)s AND cu.code = s.customer_code
           LEFT JOIN district d ON d.company_id = %(c)s AND d.code = s.district_code
           LEFT JOIN meter_book b ON b.company_id = %(c)s AND b.code = s.book_code
           WHERE s.account_code IS NOT NULL ORDER BY s.account_code, s.line
           ON CONFLICT (company_id, code) DO UPDATE SET customer_id = EXCLUDED.customer_id,
               address = EXCLUDED.address, district_id = EXCLUDED.district_id, use_type = EXCLUDED.use_type,
               tariff_id = EXCLUDED.tariff_id, household_size = EXCLUDED.household_size,
               dwellings = EXCLUDED.dwellings, floor_area_m2 = EXCLUDED.floor_area_m2,
               book_id = EXCLUDED.book_id, route_order = EXCLUDED.route_order, status = EXCLUDED.status,
               opened_on = EXCLUDED.opened_on
           WHERE (account.customer_id, account.address, account.district_id, account.use_type, account.tariff_id,
                  account.household_size, account.dwellings, account.floor_area_m2, account.book_id,
                  account.route_order, account.status, account.opened_on)
                 IS DISTINCT FROM (EXCLUDED.customer_id, EXCLUDED.address, EXCLUDED.district_id, EXCLUDED.use_type,
                  EXCLUDED.tariff_id, EXCLUDED.household_size, EXCLUDED.dwellings, EXCLUDED.floor_area_m2,
                  EXCLUDED.book_id, EXCLUDED.route_order, EXCLUDED.status, EXCLUDED.opened_on)""", p)
    conn.execute(
        """INSERT INTO meter (company_id, serial, comm_address, account_id, model, protocol, medium, size,
                              multiplier, register_digits, display_unit, apportion_policy, installed_on)
           SELECT %(c)s, s.meter_serial, coalesce(s.comm_address, s.meter_serial), a.id, s.model, s.protocol,
                  s.medium, s.size, s.multiplier, s.register_digits, s.display_unit, s.apportion_policy, s.installed_on
           FROM registry_stage s
           LEFT JOIN account a ON a.company_id = %(c)s AND a.code = s.account_code
           WHERE s.meter_serial IS NOT NULL
           ON CONFLICT (company_id, serial) DO UPDATE SET comm_address = EXCLUDED.comm_address,
               account_id = EXCLUDED.account_id, model = EXCLUDED.model, protocol = EXCLUDED.protocol,
               medium = EXCLUDED.medium, size = EXCLUDED.size, multiplier = EXCLUDED.multiplier,
               register_digits = EXCLUDED.register_digits, display_unit = EXCLUDED.display_unit,
               apportion_policy = EXCLUDED.apportion_policy, installed_on = EXCLUDED.installed_on
           WHERE (meter.comm_address, meter.account_id, meter.model, meter.protocol, meter.medium, meter.size,
                  meter.multiplier, meter.register_digits, meter.display_unit, meter.apportion_policy,
                  meter.installed_on)
                 IS DISTINCT FROM (EXCLUDED.comm_address, EXCLUDED.account_id, EXCLUDED.model, EXCLUDED.protocol,
                  EXCLUDED.medium, EXCLUDED.size, EXCLUDED.multiplier, EXCLUDED.register_digits,
                  EXCLUDED.display_unit, EXCLUDED.apportion_policy, EXCLUDED.installed_on)""", p)
    conn.execute(
        """UPDATE meter m SET parent_meter_id = p.id
           FROM registry_stage s LEFT JOIN meter p ON p.company_id = %(c)s AND p.serial = s.parent_serial
           WHERE m.company_id = %(c)s AND m.serial = s.meter_serial
             AND m.parent_meter_id IS DISTINCT FROM p.id""", p)
    conn.execute(
        """INSERT INTO meter_installation (company_id, meter_id, device_serial, model, installed_at, initial_register, reason)
           SELECT %(c)s, m.id, m.serial, m.model,
                  coalesce(s.installed_on, CURRENT_DATE)::timestamp AT TIME ZONE co.timezone,
                  s.initial_register, 'new'
           FROM registry_stage s
           JOIN meter m ON m.company_id = %(c)s AND m.serial = s.meter_serial
           JOIN company co ON co.id = %(c)s
           WHERE NOT EXISTS (SELECT 1 FROM meter_installation i WHERE i.meter_id = m.id)""", p)
    _check_trees(conn, company_id, source)


def _check_against_database(conn: psycopg.Connection, company_id: int, source: str) -> None:
    errors: list[ImportRowError] = []
    for line, addr in conn.execute(
        """SELECT s.line, coalesce(s.comm_address, s.meter_serial) FROM registry_stage s
           JOIN meter m ON m.comm_address = coalesce(s.comm_address, s.meter_serial)
           WHERE s.meter_serial IS NOT NULL AND NOT (m.company_id = %s AND m.serial = s.meter_serial)""",
        [company_id],
    ).fetchall():
        errors.append(ImportRowError(line, f"address {addr} already belongs to another meter", "comm_address"))
    for line, parent in conn.execute(
        """SELECT s.line, s.parent_serial FROM registry_stage s
           WHERE s.parent_serial IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM registry_stage x WHERE x.meter_serial = s.parent_serial)
             AND NOT EXISTS (SELECT 1 FROM meter m WHERE m.company_id = %s AND m.serial = s.parent_serial)""",
        [company_id],
    ).fetchall():
        errors.append(ImportRowError(line, f"master meter {parent} does not exist", "parent_serial"))
    for line, ut in conn.execute(
        "SELECT min(line), use_type FROM registry_stage WHERE use_type IS NOT NULL AND use_type !~ '^[a-z0-9_]{1,32}$' GROUP BY use_type"
    ).fetchall():
        errors.append(ImportRowError(line, f"use type {ut!r} must be lower-case letters, digits and _", "use_type"))
    if errors:
        errors.sort(key=lambda e: e.line)
        raise ImportFileError(source, errors)


def _check_trees(conn: psycopg.Connection, company_id: int, source: str) -> None:
    cyclic = conn.execute(
        """WITH RECURSIVE walk(start, cur, depth) AS (
               SELECT id, parent_meter_id, 1 FROM meter WHERE company_id = %s AND parent_meter_id IS NOT NULL
               UNION ALL
               SELECT w.start, m.parent_meter_id, w.depth + 1 FROM walk w JOIN meter m ON m.id = w.cur
               WHERE m.parent_meter_id IS NOT NULL AND w.depth < 64 AND w.cur <> w.start
           )
           SELECT DISTINCT s.line, m.serial FROM walk w JOIN meter m ON m.id = w.start
           JOIN registry_stage s ON s.meter_serial = m.serial
           WHERE w.cur = w.start OR w.depth >= 64""",
        [company_id],
    ).fetchall()
    if cyclic:
        raise ImportFileError(source, [ImportRowError(line, f"meter {serial} is its own master meter through its parents", "parent_serial")
                                       for line, serial in sorted(cyclic)])


def import_file(conn: psycopg.Connection, company_id: int, path: str | Path, *, keyring: KeyRing | None = None) -> ImportSummary:
    rows, errors = read_csv(path)
    if errors:
        raise ImportFileError(str(path), errors)
    return load_rows(conn, company_id, rows, source=str(path), keyring=keyring)


_EXPORT_SQL = """
SELECT cu.code, cu.name, cu.kind, cu.id_number, cu.phone, cu.invoice_title, cu.tax_id,
       a.code, a.address, d.code, d.name, a.use_type, a.tariff_id,
       a.household_size, a.dwellings, a.floor_area_m2, a.status, a.opened_on,
       b.code, b.name, b.reader, b.supervisor, b.cycle, a.route_order,
       m.serial, m.comm_address, m.model, m.protocol, m.medium, m.size, m.multiplier,
       m.register_digits, m.display_unit, p.serial, m.apportion_policy, m.installed_on, i.initial_register
FROM meter m
FULL JOIN account a ON a.id = m.account_id
LEFT JOIN customer cu ON cu.id = a.customer_id
LEFT JOIN district d ON d.id = a.district_id
LEFT JOIN meter_book b ON b.id = a.book_id
LEFT JOIN meter p ON p.id = m.parent_meter_id
LEFT JOIN LATERAL (SELECT initial_register FROM meter_installation x WHERE x.meter_id = m.id
                   ORDER BY installed_at LIMIT 1) i ON true
WHERE coalesce(m.company_id, a.company_id) = %s
ORDER BY b.code NULLS LAST, a.route_order NULLS LAST, a.code NULLS LAST, m.serial NULLS LAST
"""


def export_rows(conn: psycopg.Connection, company_id: int, *, disclosure: Disclosure = Disclosure.MASKED,
                keyring: KeyRing | None = None) -> Iterator[list[str]]:
    """Registry rows as CSV cells (strings), in the canonical order (streamed).

    Personal data as ``disclosure`` allows: FULL (decrypted), MASKED (default) or NONE (blank).
    """
    personal = {REGISTRY_COLUMNS.index(f): f for f in PERSONAL_FIELDS}
    if disclosure is not Disclosure.NONE:
        keyring = keyring or default_keyring()
    named = not conn.autocommit  # a server-side cursor needs a transaction
    with (conn.cursor(name="registry_export") if named else conn.cursor()) as cur:
        cur.execute(_EXPORT_SQL, [company_id])
        for rec in cur:
            rec = list(rec)
            for i, field in personal.items():
                rec[i] = None if disclosure is Disclosure.NONE else keyring.reveal(  # type: ignore[union-attr]
                    rec[i], disclosure, company_id=company_id, field=field)
            yield ["" if v is None else (v.isoformat() if isinstance(v, dt.date) else str(v)) for v in rec]


def export_csv(conn: psycopg.Connection, company_id: int, out: io.TextIOBase, *,
               disclosure: Disclosure = Disclosure.MASKED, keyring: KeyRing | None = None) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REGISTRY_COLUMNS)
    n = 0
    for cells in export_rows(conn, company_id, disclosure=disclosure, keyring=keyring):
        writer.writerow(cells)
        n += 1
    return n
