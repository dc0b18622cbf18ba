"""Alert lifecycle and routing, the review of what blocks billing, the action record, figures."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from meterline.errors import NotFound
from meterline.ingest.vee import alerts as A
from meterline.ingest.vee import figures as F
from meterline.ingest.vee import review as RV
from meterline.ingest.vee.batch import run_period
from meterline.ingest.vee.config import load_config
from meterline.store.company import Company

from .scenario import local, play

BOOK = """
period 2026-10
meter OK book=B3
daily OK 2026-09-20..2026-11-02 00:00 from 10.000 step 0.300
meter RESET book=B3
daily RESET 2026-09-20..2026-10-09 00:00 from 494.000 step 0.300
read RESET 2026-10-10T00:00 12.000 => register_reset [held]
daily RESET 2026-10-11..2026-11-02 00:00 from 12.300 step 0.300
meter SILENT book=B3
daily SILENT 2026-07-25..2026-10-20 00:00 from 100.000 step 0.400
meter NEVER book=B3
run
"""


@pytest.fixture
def book(tmp_path: Path, conn: psycopg.Connection, db_dsn: str, company: Company) -> dict:
    path = tmp_path / "book.txt"
    path.write_text(BOOK, encoding="utf-8")
    sc = play(path, conn, db_dsn, company.id, load_config(), "batch")
    return sc.meters


def test_one_open_alert_per_meter_and_rule_updated_not_repeated(book: dict, conn: psycopg.Connection,
                                                                company: Company, db_dsn: str) -> None:
    rows = conn.execute("SELECT id, occurrences FROM alert WHERE meter_id = %s AND rule = 'register_reset'",
                        [book["RESET"]]).fetchall()
    assert len(rows) == 1 and rows[0][1] == 1
    events_before = conn.execute("SELECT count(*) FROM alert_event").fetchone()[0]
    run_period(db_dsn, company.id, "acme", "Asia/Shanghai", "2026-10", load_config())
    assert conn.execute("SELECT count(*), max(occurrences) FROM alert WHERE meter_id = %s AND rule = 'register_reset'",
                        [book["RESET"]]).fetchone() == (1, 1)
    assert conn.execute("SELECT count(*) FROM alert_event").fetchone()[0] == events_before
    # a new occurrence (a later read of the same kind) updates the same alert
    alert_id = rows[0][0]
    A.raise_alerts(conn, [A.AlertEvent("register_reset", "critical", book["RESET"],
                                       local("2026-10-20T00:00"), "again", {"x": 1})])
    assert conn.execute("SELECT count(*), max(occurrences) FROM alert WHERE meter_id = %s AND rule = 'register_reset'",
                        [book["RESET"]]).fetchone() == (1, 2)
    assert conn.execute("SELECT kind FROM alert_event WHERE alert_id = %s ORDER BY id DESC LIMIT 1",
                        [alert_id]).fetchone()[0] == "updated"


def test_lifecycle_records_who_and_when_and_routes_to_the_supervisor(book: dict, conn: psycopg.Connection,
                                                                     company: Company) -> None:
    alert_id, assignee = conn.execute("SELECT id, assignee FROM alert WHERE meter_id = %s AND rule = 'register_reset'",
                                      [book["RESET"]]).fetchone()
    assert assignee == "计量主管-钱敏"
    mine = A.list_alerts(conn, company.id, assignee="计量主管-钱敏", book="B3")
    assert {r["rule"] for r in mine} >= {"register_reset", "missing_reads", "estimation_failed"}
    row = A.acknowledge(conn, company.id, alert_id, "计量主管-钱敏", note="checking with the installer")
    assert row["status"] == "acknowledged" and row["acknowledged_by"] == "计量主管-钱敏"
    assert row["acknowledged_at"] is not None
    with pytest.raises(A.AlertStateError):
        A.acknowledge(conn, company.id, alert_id, "someone")
    row = A.resolve(conn, company.id, alert_id, "计量主管-钱敏")
    assert row["status"] == "resolved" and row["resolved_at"] >= row["acknowledged_at"]
    with pytest.raises(A.AlertStateError):
        A.resolve(conn, company.id, alert_id, "x")
    with pytest.raises(NotFound):
        A.acknowledge(conn, company.id, 999_999, "x")
    kinds = [k for (k,) in conn.execute("SELECT kind FROM alert_event WHERE alert_id = %s ORDER BY id", [alert_id])]
    assert kinds == ["opened", "acknowledged", "resolved"]
    # resolved: the next occurrence opens a new alert
    A.raise_alerts(conn, [A.AlertEvent("register_reset", "critical", book["RESET"], local("2026-10-25T00:00"), "m")])
    assert conn.execute("SELECT count(*) FROM alert WHERE meter_id = %s AND rule = 'register_reset'",
                        [book["RESET"]]).fetchone()[0] == 2


def test_review_lists_what_blocks_billing_and_actions_are_recorded(book: dict, conn: psycopg.Connection,
                                                                   company: Company, db_dsn: str) -> None:
    cfg = load_config()
    review = RV.blockers(conn, company.id, "B3", "2026-10", "Asia/Shanghai", cfg)
    kinds = {(b.serial, b.kind) for b in review.blockers}
    assert ("S-RESET", "held") in kinds
    assert ("S-RESET", "critical_alert") in kinds
    assert ("S-NEVER", "no_period_end_read") in kinds
    assert ("S-NEVER", "critical_alert") in kinds  # estimation_failed
    assert [e["serial"] for e in review.estimated] == ["S-SILENT"]
    assert not any(b.serial == "S-OK" for b in review.blockers)
    held_ts = local("2026-10-10T00:00")
    # approve the held reset: it counts for billing, the record says who, before and after
    RV.approve(conn, company.id, "S-RESET", held_ts, "计量主管-钱敏", note="meter swapped, paperwork late")
    assert conn.execute("SELECT value FROM reading_effective WHERE meter_id = %s AND ts = %s",
                        [book["RESET"], held_ts]).fetchone() == (12000,)
    with pytest.raises(RV.ReviewError):
        RV.approve(conn, company.id, "S-OK", local("2026-10-05T00:00"), "x")  # nothing to approve
    # override the estimate of SILENT, then a reading of OK
    RV.override(conn, company.id, "S-SILENT", local("2026-11-01T00:00"), "140.000", "计量主管-钱敏")
    row = conn.execute("SELECT value, method, estimated FROM reading_effective WHERE meter_id = %s AND ts = %s",
                       [book["SILENT"], local("2026-11-01T00:00")]).fetchone()
    assert row == (140000, "override", True)
    RV.override(conn, company.id, "S-OK", local("2026-10-05T00:00"), "14.600", "计量主管-钱敏")
    assert conn.execute("SELECT value, method FROM reading_effective WHERE meter_id = %s AND ts = %s",
                        [book["OK"], local("2026-10-05T00:00")]).fetchone() == (14600, "override")
    assert conn.execute("SELECT value FROM reading WHERE meter_id = %s AND ts = %s",
                        [book["OK"], local("2026-10-05T00:00")]).fetchone() == (14500,), "raw never changes"
    # a re-read request keeps a reading out and tells the supervisor
    RV.request_reread(conn, company.id, "S-OK", local("2026-10-06T00:00"), "计量主管-钱敏", note="photo unclear")
    assert conn.execute("SELECT count(*) FROM reading_effective WHERE meter_id = %s AND ts = %s",
                        [book["OK"], local("2026-10-06T00:00")]).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM alert WHERE meter_id = %s AND rule = 'reread_requested'",
                        [book["OK"]]).fetchone() == (1,)
    acts = RV.history(conn, company.id)
    assert [a["action"] for a in acts] == ["request_reread", "override", "override", "approve"]
    approve = acts[-1]
    assert approve["actor"] == "计量主管-钱敏" and approve["before"]["auto_state"] == "held"
    assert approve["after"]["review"] == "approved"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE reading_review_action SET actor = 'someone else'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM reading_review_action")
    # the decisions survive a re-run of validation
    run_period(db_dsn, company.id, "acme", "Asia/Shanghai", "2026-10", cfg)
    assert conn.execute("SELECT review FROM reading_validation WHERE meter_id = %s AND ts = %s",
                        [book["RESET"], held_ts]).fetchone() == ("approved",)
    after = RV.blockers(conn, company.id, "B3", "2026-10", "Asia/Shanghai", cfg)
    assert not any(b.kind == "held" for b in after.blockers)
    assert any(b.kind == "reread" and b.serial == "S-OK" for b in after.blockers)


def test_figures_per_book_and_reader(book: dict, conn: psycopg.Connection, company: Company) -> None:
    conn.execute("UPDATE reading SET committed_at = ts + interval '36 hours'")
    conn.execute("UPDATE reading SET committed_at = ts + interval '2 hours' WHERE meter_id = %s", [book["OK"]])
    figs = F.book_figures(conn, company.id, "2026-10", "Asia/Shanghai", load_config(), "B3")
    (f,) = figs
    assert f.book == "B3" and f.reader == "张伟" and f.meters == 4
    assert f.read == 2  # OK and RESET have a real read at the period end
    assert f.reading_rate == 0.5 and f.estimated_share == 0.25
    assert f.readings == 31 + 31 + 20  # OK, RESET, SILENT in October
    assert f.held == 1 and f.corrected == 0
    assert f.lead_p90_h == pytest.approx(36.0, abs=0.1)
    assert f.lead_median_h == pytest.approx(36.0, abs=0.1)  # 51 of 82 readings took 36 h
    (r,) = F.by_reader(figs)
    assert r["reader"] == "张伟" and r["meters"] == 4


