"""Registry import/export: exact round trip of Chinese text, all-or-nothing imports."""

import io
from pathlib import Path

import psycopg
import pytest

from meterline.errors import ImportFileError
from meterline.store import registry

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "registry_sample.csv"


def _export(conn: psycopg.Connection, company_id: int) -> str:
    out = io.StringIO()
    registry.export_csv(conn, company_id, out, disclosure=registry.Disclosure.FULL)  # a reader allowed personal data
    return out.getvalue()


def test_import_then_export_round_trips_exactly(conn: psycopg.Connection, company) -> None:
    summary = registry.import_file(conn, company.id, SAMPLE)
    assert (summary.rows, summary.customers, summary.accounts, summary.meters, summary.books, summary.districts) == (5, 3, 4, 5, 2, 2)
    text = _export(conn, company.id)
    assert "李娜（租户）" in text and '"城东区阳光花园1栋1单元102室, 北侧"' in text
    src_rows = {r["meter_serial"]: r for r in registry.csv.DictReader(io.StringIO(SAMPLE.read_text(encoding="utf-8")))}
    out_rows = {r["meter_serial"]: r for r in registry.csv.DictReader(io.StringIO(text))}
    assert src_rows.keys() == out_rows.keys()
    for serial, src in src_rows.items():
        out = out_rows[serial]
        for col in registry.REGISTRY_COLUMNS:
            want = src[col]
            if col == "comm_address" and not want:
                want = serial  # defaults to the serial
            assert out[col] == want, (serial, col)
    # export → import → export is byte-identical, and a re-import changes nothing
    again = tmp_file(text)
    registry.import_file(conn, company.id, again)
    assert _export(conn, company.id) == text


def tmp_file(text: str) -> Path:
    import tempfile

    f = Path(tempfile.mkstemp(suffix=".csv")[1])
    f.write_text(text, encoding="utf-8")
    return f


def test_master_sub_tree_and_install_history(conn: psycopg.Connection, company) -> None:
    registry.import_file(conn, company.id, SAMPLE)
    subs = conn.execute(
        """SELECT m.serial FROM meter m JOIN meter p ON p.id = m.parent_meter_id
           WHERE p.serial = 'MS001' ORDER BY m.serial""").fetchall()
    assert [s for (s,) in subs] == ["WM001", "WM002"]
    inst = conn.execute(
        "SELECT initial_register, (installed_at AT TIME ZONE 'Asia/Shanghai')::date FROM meter_installation i JOIN meter m ON m.id = i.meter_id WHERE m.serial = 'WM001'"
    ).fetchone()
    assert inst[0] == 1234 and str(inst[1]) == "2019-03-02"


def test_bad_rows_are_reported_by_line_and_nothing_is_imported(conn: psycopg.Connection, company, tmp_path: Path) -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    bad = list(lines)
    bad[3] = bad[3].replace(",2,1,64.00,", ",two,1,64.00,")  # household_size not a number (line 4)
    bad[4] = bad[4].replace(",organisation,", ",company,")  # bad kind (line 5)
    bad.append("C009,赵敏,person,,,,,A009,,D01,城东区,residential,water-residential,3,1,,active,,B001,城东区第1册,张伟,,M,9,WM009,,,coap,water,DN15,1,5,m3,NOPE,,,0")
    f = tmp_path / "bad.csv"
    f.write_text("\n".join(bad) + "\n", encoding="utf-8")
    with pytest.raises(ImportFileError) as err:
        registry.import_file(conn, company.id, f)
    found = {(e.line, e.column) for e in err.value.errors}
    assert (4, "household_size") in found
    assert (5, "customer_kind") in found
    assert (7, "address") in found  # account without address
    assert conn.execute("SELECT count(*) FROM customer").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM meter").fetchone()[0] == 0


def test_unknown_master_meter_fails_in_the_database_check(conn: psycopg.Connection, company, tmp_path: Path) -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace(",MS001,,2019", ",MS999,,2019")
    f = tmp_path / "orphan.csv"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="line 3.*master meter MS999 does not exist"):
        registry.import_file(conn, company.id, f)
    assert conn.execute("SELECT count(*) FROM account").fetchone()[0] == 0


def test_a_parent_cycle_is_refused(conn: psycopg.Connection, company, tmp_path: Path) -> None:
    registry.import_file(conn, company.id, SAMPLE)
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace(",by_consumption,", ",by_consumption,").replace("m3,,by_consumption", "m3,WM001,by_consumption")
    f = tmp_path / "cycle.csv"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="its own master meter"):
        registry.import_file(conn, company.id, f)
    assert conn.execute("SELECT parent_meter_id FROM meter WHERE serial = 'MS001'").fetchone()[0] is None


def test_inconsistent_repeats_and_wrong_encoding(conn: psycopg.Connection, company, tmp_path: Path) -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].replace("王秀英", "王秀")  # same customer code, other name
    f = tmp_path / "inconsistent.csv"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="line 6.*customer C001 has customer_name='王秀' here but '王秀英' on line 3"):
        registry.import_file(conn, company.id, f)
    g = tmp_path / "gbk.csv"
    g.write_bytes(SAMPLE.read_text(encoding="utf-8").encode("gbk"))
    with pytest.raises(ImportFileError, match="not UTF-8"):
        registry.import_file(conn, company.id, g)


def test_address_taken_by_another_company_is_refused(conn: psycopg.Connection, company, tmp_path: Path) -> None:
    from meterline.store.company import ensure_company

    registry.import_file(conn, company.id, SAMPLE)
    other = ensure_company(conn, "other", "另一家水司")
    with pytest.raises(ImportFileError, match="already belongs to another meter"):
        registry.import_file(conn, other.id, SAMPLE)
    assert conn.execute("SELECT count(*) FROM meter WHERE company_id = %s", [other.id]).fetchone()[0] == 0
