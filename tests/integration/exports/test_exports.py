"""Exports of a period: their content, and the same bytes on every re-run (also after later data arrives)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import polars as pl
import psycopg
import pytest

from meterline.exporters import export_all
from meterline.exporters._files import ExportError
from meterline.exporters.bills import export_bills
from meterline.exporters.data import export_data
from meterline.exporters.finance import export_finance
from meterline.exporters.notice import export_notices, notice_data
from meterline.store.db import Database
from meterline.store.personal import Disclosure
from tests.integration.exports import exportkit
from tests.integration.exports.exportkit import KEYRING, ORG_TAX_ID, PERSON_TAX_ID, PHONES


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bills_jsonl_and_csv(scoped: psycopg.Connection, utility: exportkit.Utility, tmp_path: Path) -> None:
    out = export_bills(scoped, utility.company_id, "2026-10", tmp_path)
    assert out.bills == 4 and out.total == 5124 + 3416 + 4270 + 2562
    records = [json.loads(line) for line in out.jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["account"]["code"] for r in records] == ["A1", "A2", "A3", "A4"]
    a1 = records[0]
    assert (a1["amount"], a1["tax"], a1["total"], a1["due_date"]) == (4800, 324, 5124, "2026-11-20")
    assert [(ln["component"], ln["tier"], ln["quantity"], ln["amount"], ln["tax"]) for ln in a1["lines"]] == [
        ("water", 1, 12000, 3600, 324), ("sewage", None, 12000, 1200, 0)]
    assert a1["taxes"] == [{"component": "sewage", "amount": 1200, "tax": 0},
                           {"component": "water", "amount": 3600, "tax": 324}]
    for r in records:  # the lines and their taxes add up to the bill
        assert sum(ln["amount"] for ln in r["lines"]) == r["amount"]
        assert sum(t["tax"] for t in r["taxes"]) == r["tax"] and r["total"] == r["amount"] + r["tax"]
    org = records[1]["customer"]
    assert (org["invoice_title"], org["tax_id"]) == ("某某科技有限公司", ORG_TAX_ID)
    assert records[3]["estimated"] is True
    rows = list(csv.DictReader(io.StringIO(out.csv.read_text(encoding="utf-8"))))
    assert len(rows) == 8  # one row per bill line
    assert rows[0]["account"] == "A1" and rows[0]["bill_total"] == "51.24" and rows[0]["unit_price"] == "3.00"
    assert rows[0]["line_amount"] == "36.00" and rows[0]["line_tax"] == "3.24"
    assert {r["invoice_title"] for r in rows if r["account"] == "A2"} == {"某某科技有限公司"}
    # one run only
    only = export_bills(scoped, utility.company_id, "2026-10", tmp_path, run_id=utility.runs["R9"])
    assert only.bills == 0 and only.jsonl.name == "acme_2026-10_run%d_bills.jsonl" % utility.runs["R9"]


@pytest.mark.parametrize("disclosure", list(Disclosure))
def test_personal_data_in_outside_exports(scoped: psycopg.Connection, utility: exportkit.Utility, tmp_path: Path,
                                          disclosure: Disclosure) -> None:
    export_all(scoped, utility.company_id, "2026-10", tmp_path, disclosure=disclosure, keyring=KEYRING)
    text = "\n".join(b.decode("utf-8", "replace") for b in _snapshot(tmp_path).values())
    records = {json.loads(x)["account"]["code"]: json.loads(x)["customer"]
               for x in (tmp_path / "bills" / "acme_2026-10_bills.jsonl").read_text(encoding="utf-8").splitlines()}
    notice = (tmp_path / "notices" / "acme_2026-10" / "A1.html").read_text(encoding="utf-8")
    assert records["A2"]["tax_id"] == ORG_TAX_ID  # an organisation's tax id is business data
    if disclosure is Disclosure.NONE:
        assert records["A1"]["phone"] is None and records["A3"]["tax_id"] is None
        assert "138****0001" not in notice and "电话" not in notice
    elif disclosure is Disclosure.MASKED:
        assert records["A1"]["phone"] == "138****0001" and records["A3"]["tax_id"] == "110***********1234"
        assert "138****0001" in notice
    else:
        assert records["A1"]["phone"] == PHONES["CU1"] and records["A3"]["tax_id"] == PERSON_TAX_ID
        assert PHONES["CU1"] in notice
    if disclosure is not Disclosure.FULL:
        for secret in (*PHONES.values(), PERSON_TAX_ID):
            assert secret not in text
    assert "ml1:" not in text  # never the stored ciphertext


def test_notice_readings_tiers_amount_due_and_arrears(scoped: psycopg.Connection, utility: exportkit.Utility,
                                                      tmp_path: Path) -> None:
    notices = {n["account"]: n for n in notice_data(scoped, utility.company_id, "2026-10")}
    a3 = notices["A3"]
    assert a3["as_of"] == dt.date(2026, 11, 2) and a3["due_date"] == dt.date(2026, 11, 20)
    assert [(r.serial, r.open_value, r.close_value, r.close_est) for r in a3["reads"]] == [("M3", 10000, 20000, False)]
    assert (a3["total"], a3["covered"], a3["arrears_total"], a3["total_due"]) == (4270, 0, 3000, 7270)
    assert [(a["kind"], a["period"], a["open"]) for a in a3["arrears"]] == [("bill", "2026-09", 3000)]
    assert notices["A1"]["arrears"] == [] and notices["A1"]["total_due"] == 5124  # September paid on 10-10
    a4 = notices["A4"]
    assert a4["estimated"] and [(r.open_value, r.close_value, r.close_est) for r in a4["reads"]] == [(5000, 11000, True)]
    out = export_notices(scoped, utility.company_id, "2026-10", tmp_path)
    assert [f.name for f in out.files] == ["A1.html", "A2.html", "A3.html", "A4.html"]
    page = (out.directory / "A3.html").read_text(encoding="utf-8")
    assert "<script" not in page and "http" not in page and "@page" in page
    for text in ("10.000", "20.000", "42.70", "30.00", "72.70", "2026-11-20", "2026-09", "人民路3号", "王芳"):
        assert text in page, text
    assert "（估）" in (out.directory / "A4.html").read_text(encoding="utf-8")
    assert out.total_due == 5124 + 3416 + 7270 + 2562


def test_notice_takes_readings_from_the_bill_line_source_and_tolerates_none(
        owner: psycopg.Connection, scoped: psycopg.Connection, utility: exportkit.Utility) -> None:
    bill = utility.bills[("A1", "2026-10")]
    owner.execute("""UPDATE bill_line SET source = '{"closing": {"value": 112500, "ts": "2026-10-31T23:00:00+08:00"},
                                                     "opening": 100100, "serial": "M1"}' WHERE bill_id = %s AND line_no = 1""",
                  [bill])
    owner.execute("DELETE FROM reading WHERE meter_id = %s", [utility.meters["M2"]])
    notices = {n["account"]: n for n in notice_data(scoped, utility.company_id, "2026-10")}
    (r1,) = notices["A1"]["reads"]
    assert (r1.serial, r1.open_value, r1.close_value) == ("M1", 100100, 112500)
    (r2,) = notices["A2"]["reads"]
    assert (r2.open_value, r2.close_value) == (None, None)


def test_finance_journal_totals(scoped: psycopg.Connection, utility: exportkit.Utility, tmp_path: Path) -> None:
    out = export_finance(scoped, utility.company_id, "2026-11", tmp_path)
    frame = pl.read_parquet(out.parquet)
    rows = {(r["day"].isoformat(), r["account_code"]): (r["debit"], r["credit"], r["net"], r["entries"])
            for r in frame.iter_rows(named=True)}
    oct_bills = 5124 + 3416 + 4270 + 2562
    assert rows[("2026-11-02", "AR:*")] == (oct_bills, 0, oct_bills, 4)
    assert rows[("2026-11-02", "REV:water")] == (0, 10800, -10800, 4)
    assert rows[("2026-11-02", "REV:sewage")] == (0, 3600, -3600, 4)
    assert rows[("2026-11-02", "TAX:vat")] == (0, 972, -972, 4)
    assert out.debit == out.credit == oct_bills
    assert sum(frame["net"]) == 0
    text = out.csv.read_text(encoding="utf-8").splitlines()
    assert text[0] == "day,account_code,account_type,account_name,debit,credit,net,entries,currency"
    assert "2026-11-02,AR:*,asset,应收账款,153.72,0.00,153.72,4,CNY" in text
    detail = export_finance(scoped, utility.company_id, "2026-11", tmp_path, detail=True)
    codes = set(pl.read_parquet(detail.parquet)["account_code"])
    assert f"AR:{utility.accounts['A1']}" in codes and "AR:*" not in codes


def test_data_parquet_partitions(scoped: psycopg.Connection, utility: exportkit.Utility, tmp_path: Path) -> None:
    out = export_data(scoped, utility.company_id, "2026-10", tmp_path)
    assert out.rows == {"readings": 6, "bills": 4, "bill_lines": 8, "payments": 1}
    assert out.files["readings"] == tmp_path / "data/readings/company=acme/period=2026-10/part-0.parquet"
    readings = pl.scan_parquet(tmp_path / "data" / "readings", hive_partitioning=True).collect()
    assert set(readings["period"]) == {"2026-10"} and set(readings["company"]) == {"acme"}
    # the period's real reads and the estimate that closes it; the real 2026-11-01 reads belong to November
    est = readings.filter(pl.col("estimated"))
    assert est["serial"].to_list() == ["M4"] and est["value"].to_list() == [11000]
    assert est["ts"].to_list() == [dt.datetime(2026, 10, 31, 16, tzinfo=dt.timezone.utc)]
    assert sorted(readings.filter(~pl.col("estimated"))["serial"]) == ["M1", "M2", "M3", "M4", "MM"]
    payments = pl.read_parquet(out.files["payments"])
    assert payments.select("channel", "account", "amount").rows() == [("counter", "A1", 4000)]
    bills = pl.read_parquet(out.files["bills"])
    assert bills["total"].sum() == 15372 and bills.schema["period_end"] == pl.Date
    assert "customer_name" not in bills.columns and "phone" not in bills.columns


def test_every_export_gives_the_same_bytes_again_and_after_later_data(
        owner: psycopg.Connection, app_db: Database, scoped: psycopg.Connection, utility: exportkit.Utility,
        tmp_path: Path) -> None:
    first, again, after = tmp_path / "first", tmp_path / "again", tmp_path / "after"
    files = export_all(scoped, utility.company_id, "2026-10", first)
    assert len(files) == 2 + 4 + 2 + 4
    export_all(scoped, utility.company_id, "2026-10", again)
    snap = _snapshot(first)
    assert _snapshot(again) == snap
    exportkit.later(owner, app_db, utility)  # November payments, readings, bills, late fees
    scoped.commit()
    export_all(scoped, utility.company_id, "2026-10", after)
    assert _snapshot(after) == snap
    export_all(scoped, utility.company_id, "2026-10", first)  # over the old files: the same bytes
    assert _snapshot(first) == snap
    # and November's exports do see the new data
    nov = export_all(scoped, utility.company_id, "2026-11", after)
    assert any(p.name == "A1.html" and "2026-11" in str(p) for p in nov)


def test_a_bad_period_is_refused_clearly(scoped: psycopg.Connection, utility: exportkit.Utility, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not YYYY-MM"):
        export_bills(scoped, utility.company_id, "2026-13", tmp_path)
    with pytest.raises(ExportError, match="not YYYY-MM"):
        export_data(scoped, utility.company_id, "October", tmp_path)
