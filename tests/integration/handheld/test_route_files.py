"""Handheld routes against a real PostgreSQL: export a book, import what comes back."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from meterline.cli import main
from meterline.ingest import handheld
from meterline.ingest.model import Quantity, Reading, Source
from meterline.ingest.writer import write_readings
from meterline.protocols.handheld.upload import UploadError
from meterline.store import registry

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "registry_sample.csv"
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def utility(conn: psycopg.Connection, company):
    registry.import_file(conn, company.id, str(SAMPLE))
    # history of WM001: 1234.000 m³ on 1 Jan, 1264.000 m³ on 31 Jan (1 m³ a day)
    t1 = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone.utc)
    write_readings(conn, [Reading(ts=t1, value=1_234_000, device="863000000000001", source=Source.COAP),
                          Reading(ts=t1 + dt.timedelta(days=30), value=1_264_000, device="863000000000001",
                                  source=Source.COAP)])
    return company


def _count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_export_lists_the_book_in_walking_order_with_expected_ranges(conn, utility) -> None:
    entries = handheld.export_route(conn, utility, "B001", on=dt.date(2026, 3, 2))
    assert [(e.seq, e.account, e.meter) for e in entries] == [(1, "A001", "WM001"), (2, "A002", "WM002")]
    wm1 = entries[0]
    assert wm1.last_value == Decimal("1264") and wm1.unit == "m3" and wm1.reader == "张伟"
    # 30 days 10 hours since the last read (31 Jan 02:00 → 2 Mar 12:00 UTC) at 1 m³/day:
    # 30.42 m³ expected; low 1264 + 15.21 → 1279 (down), high 1264 + 45.63 + 1 → 1311 (up)
    assert (wm1.expected_low, wm1.expected_high) == (Decimal(1279), Decimal(1311))
    assert entries[1].last_value is None and entries[1].expected_high is None
    out = io.StringIO()
    handheld.write_route(entries, "csv", out, tz=SHANGHAI, book="B001")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["meter"] == "WM001" and rows[0]["last_read_at"] == "2026-01-31 10:00"
    assert rows[0]["register"] == "" and rows[0]["reader"] == "张伟"
    doc = io.StringIO()
    handheld.write_route(entries, "json", doc, tz=SHANGHAI, book="B001")
    assert json.loads(doc.getvalue())["meters"][1]["meter"] == "WM002"


def test_unknown_book_is_an_error(conn, utility) -> None:
    with pytest.raises(Exception, match="meter book 'B999' does not exist"):
        handheld.export_route(conn, utility, "B999")


UPLOAD = """meter,reader,read_at,register,skip_code,photo,note
WM001,R07,2026-03-02 09:12,1295.456,,IMG_0042.jpg,
WM002,R07,2026-03-02T09:15:00+08:00,,no_access,,gate locked
WM003,R07,2026-03-02 09:30,5123.4,,,
"""


def test_import_commits_reads_and_skips_and_reimport_changes_nothing(conn, utility) -> None:
    data = UPLOAD.encode()
    report = handheld.import_upload(conn, utility, data, name="r07.csv", now=NOW)
    assert (report.rows_total, report.rows_read, report.rows_skipped, report.rows_bad, report.readings_new) == (3, 2, 1, 0, 2)
    rows = conn.execute(
        """SELECT m.serial, r.ts, r.value, r.quantity, r.source, r.source_ref FROM reading r JOIN meter m ON m.id = r.meter_id
           WHERE r.source = %s ORDER BY m.serial""", [int(Source.HANDHELD)]).fetchall()
    assert [(s, v, q) for s, _, v, q, _, _ in rows] == [("WM001", 1_295_456, int(Quantity.VOLUME)),
                                                        ("WM003", 5_123_400, int(Quantity.VOLUME))]
    assert rows[0][1] == dt.datetime(2026, 3, 2, 9, 12, tzinfo=SHANGHAI)
    assert rows[0][5] == f"handheld:{report.import_id}:0000002"
    details = conn.execute("SELECT m.serial, h.reader, h.value, h.skip_code, h.photo_ref, h.note, h.line "
                           "FROM handheld_read h JOIN meter m ON m.id = h.meter_id ORDER BY h.line").fetchall()
    assert details == [("WM001", "R07", 1_295_456, None, "IMG_0042.jpg", None, 2),
                       ("WM002", "R07", None, "no_access", None, "gate locked", 3),
                       ("WM003", "R07", 5_123_400, None, None, None, 4)]
    before = {t: _count(conn, t) for t in ("reading", "handheld_read", "handheld_import", "handheld_bad_row", "dead_letter")}
    again = handheld.import_upload(conn, utility, data, name="r07-copy.csv", now=NOW + dt.timedelta(hours=1))
    assert again.already_imported_at is not None and again.import_id == report.import_id
    assert again.readings_new == 0 and again.readings_known == 2
    assert {t: _count(conn, t) for t in before} == before


def test_same_reads_in_another_file_are_not_stored_twice(conn, utility) -> None:
    handheld.import_upload(conn, utility, UPLOAD.encode(), name="a.csv", now=NOW)
    other = UPLOAD.replace("gate locked", "gate locked again").encode()  # different bytes, same reads
    report = handheld.import_upload(conn, utility, other, name="b.csv", now=NOW)
    assert report.already_imported_at is None and report.readings_new == 0 and report.readings_known == 2
    assert _count(conn, "handheld_read") == 3 and _count(conn, "handheld_import") == 2
    overlap = UPLOAD + "WM001,R08,2026-03-03 10:00,1296,,,\n"  # one read more than before
    report = handheld.import_upload(conn, utility, overlap.encode(), name="c.csv", now=NOW)
    assert (report.readings_new, report.readings_known) == (1, 2)
    ref, reader = conn.execute("SELECT r.source_ref, h.reader FROM reading r JOIN handheld_read h "
                               "ON h.meter_id = r.meter_id AND h.read_at = r.ts WHERE r.value = 1296000").fetchone()
    assert (ref, reader) == (f"handheld:{report.import_id}:0000005", "R08")


BAD = """meter,reader,read_at,register,skip_code
WM001,R07,2026-03-02 09:12,1295,
NOPE,R07,2026-03-02 09:13,1,
WM002,R07,2026-02-30 09:14,1,
WM002,R07,2026-03-02 09:15,1000000,
WM003,R07,2026-03-02 09:16,7,meter_damaged
WM003,,2026-03-02 09:17,7,
WM004,R07,2026-03-02 09:18,12.5,
WM004,R07,2026-03-02 09:18,12.6,
WM002,R07,2026-03-02 09:20,3.25,
WM002,R07,2026-03-02 09:20,3.25,
"""


def test_bad_rows_are_reported_by_line_and_kept(conn, utility) -> None:
    report = handheld.import_upload(conn, utility, BAD.encode(), name="bad.csv", now=NOW)
    by_line = {}
    for e in report.errors:
        by_line.setdefault(e.line, []).append(e.message)
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9]
    assert by_line[3] == ["unknown meter serial 'NOPE'"]
    assert "'2026-02-30 09:14' is not a date and time" in by_line[4][0]
    assert "does not fit the meter's register" in by_line[5][0]
    assert "given together with skip code 'meter_damaged'" in by_line[6][0]
    assert by_line[7] == ["reader is empty"]
    assert "different read at the same time on line 9" in by_line[8][0]
    assert "different read at the same time on line 8" in by_line[9][0]
    assert (report.rows_total, report.rows_read, report.rows_bad, report.rows_duplicate, report.readings_new) == (10, 2, 7, 1, 2)
    stored = conn.execute("SELECT line, field, message FROM handheld_bad_row WHERE import_id = %s ORDER BY line",
                          [report.import_id]).fetchall()
    assert sorted({line for line, _, _ in stored}) == [3, 4, 5, 6, 7, 8, 9]
    assert conn.execute("SELECT rows_bad, rows_read FROM handheld_import WHERE id = %s",
                        [report.import_id]).fetchone() == (7, 2)


def test_json_array_and_json_lines_report_lines(conn, utility) -> None:
    array = json.dumps([
        {"meter": "WM001", "reader": "R07", "read_at": "2026-03-02 09:12", "register": 1295},
        {"meter": "WM002", "reader": "R07", "read_at": "yesterday", "register": "3"},
    ], indent=1).encode()
    report = handheld.import_upload(conn, utility, array, name="r.json", now=NOW)
    assert report.format == "json" and report.readings_new == 1
    assert [e.line for e in report.errors] == [8]  # "[", 6 lines of the first object, then the second
    lines = b'{"meter": "WM003", "reader": "R07", "read_at": "2026-03-02 10:00", "register": "5200"}\n\n' \
            b'{"meter": "WM003", "reader": "R07", "read_at": "2026-03-02 11:00", "register": "5200.5"\n'
    report = handheld.import_upload(conn, utility, lines, name="r.jsonl", now=NOW)
    assert report.readings_new == 1 and [(e.line, e.message[:14]) for e in report.errors] == [(3, "not valid JSON")]


def test_wrong_encoding_is_a_clear_error_and_a_dead_letter(conn, utility) -> None:
    gbk = UPLOAD.replace("R07", "张伟").encode("gb18030")
    with pytest.raises(UploadError, match="not utf-8 text: byte 0x.. at offset .* re-import with --encoding gb18030"):
        handheld.import_upload(conn, utility, gbk, name="gbk.csv", now=NOW)
    (reason, message, device), = conn.execute("SELECT reason, message, device FROM dead_letter").fetchall()
    assert reason == "bad_upload" and "gbk.csv" in message
    report = handheld.import_upload(conn, utility, gbk, name="gbk.csv", encoding="gb18030", now=NOW)
    assert report.readings_new == 2
    assert conn.execute("SELECT DISTINCT reader FROM handheld_read").fetchall() == [("张伟",)]


def test_missing_columns_are_named(conn, utility) -> None:
    with pytest.raises(UploadError, match=r"missing required column\(s\): reader, read_at \(found: meter, register\)"):
        handheld.import_upload(conn, utility, b"meter,register\nWM001,5\n", name="x.csv", now=NOW)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, db_dsn: str, tmp_path: Path) -> Path:
    monkeypatch.setenv("METERLINE_DSN", db_dsn)
    monkeypatch.setenv("METERLINE_COMPANY", "acme")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_export_fill_import(cli_env: Path, conn, utility, capsys: pytest.CaptureFixture[str]) -> None:
    route = cli_env / "b001.csv"
    assert main(["route", "export", "--book", "B001", "--out", str(route)]) == 0
    assert "2 meters written" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(route.read_text(encoding="utf-8-sig"))))
    rows[0].update(read_at="2026-03-02 09:12", register="1290")
    rows[1].update(read_at="2026-03-02 09:20", skip_code="customer_refused")
    filled = cli_env / "b001-done.csv"
    with open(filled, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main(["route", "import", str(filled)]) == 0
    out = capsys.readouterr().out
    assert "new readings stored" in out and "recorded as import #" in out
    assert "columns ignored" not in out  # the route file's own columns are known
    assert main(["route", "import", str(filled)]) == 0
    assert "imported before" in capsys.readouterr().out
    bad = cli_env / "bad.csv"
    bad.write_text(BAD, encoding="utf-8")
    assert main(["route", "import", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "line 3 [meter]: unknown meter serial 'NOPE'" in out and "7 row(s) refused" in out
    assert (cli_env / "bad.csv.errors.csv").read_text(encoding="utf-8-sig").count("\n") == 1 + 7
    gbk = cli_env / "gbk.csv"
    gbk.write_bytes("meter,reader,read_at,register\nWM001,张伟,2026-03-03 09:00,1291\n".encode("gb18030"))
    assert main(["route", "import", str(gbk)]) == 2
    assert "--encoding gb18030" in capsys.readouterr().out
