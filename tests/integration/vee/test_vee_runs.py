"""The two run modes wired in: the ingest hook behind the batching writer, rules failing on one
meter's data, and the command line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from meterline.cli import main
from meterline.config.settings import WriterSettings
from meterline.ingest.model import Reading, Source
from meterline.ingest.vee import batch as B
from meterline.ingest.vee.config import load_config
from meterline.ingest.vee.hook import IngestValidator
from meterline.ingest.writer import BatchingWriter, write_readings
from meterline.store.company import Company

from .scenario import local, play

THREE = """
period 2026-10
meter A size=DN15
meter B size=DN15
meter C size=DN15
daily A 2026-09-20..2026-11-02 00:00 from 10.000 step 0.300
daily B 2026-09-20..2026-11-02 00:00 from 10.000 step 0.300
daily C 2026-09-20..2026-10-20 00:00 from 10.000 step 0.300
read A 2026-10-05T12:00 15430.611
write
"""


def _registry(tmp_path: Path, conn: psycopg.Connection, dsn: str, company: Company, text: str = THREE) -> dict:
    path = tmp_path / "s.txt"
    path.write_text(text, encoding="utf-8")
    return play(path, conn, dsn, company.id, load_config(), "batch").meters


@pytest.mark.parametrize("feed", ["on_commit", "after_commit"])
def test_ingest_hook_behind_the_batching_writer(feed: str, tmp_path: Path, conn: psycopg.Connection, db_dsn: str,
                                                company: Company) -> None:
    meters = _registry(tmp_path, conn, db_dsn, company, "meter A size=DN15\nmeter B size=DN15\n")
    t0 = local("2026-10-01T00:00")
    batches = []
    for day in range(10):
        ts = t0 + dt.timedelta(days=day)
        value = 5000 + 300 * day if day != 6 else 15_430_611  # one corrupt telegram on day 6
        batches.append([Reading(ts=ts, value=value, meter_id=meters["A"], source=Source.LORAWAN,
                                received_at=ts + dt.timedelta(minutes=1)),
                        Reading(ts=ts, value=9000 + 200 * day, device="dev-B", source=Source.MQTT,
                                received_at=ts + dt.timedelta(minutes=1))])
    validator = IngestValidator(db_dsn, load_config()).start()
    try:
        settings = WriterSettings(batch_size=100, max_delay_ms=5, connections=1, future_tolerance_s=10**9)
        hook = validator.on_commit if feed == "on_commit" else None
        with BatchingWriter(db_dsn, settings, on_commit=hook) as writer:
            validator.directory = writer.directory
            for b in batches:
                fut = writer.submit(b)
                if feed == "after_commit":
                    validator.after_commit(fut, b)
                fut.result(10)
        assert validator.flush(30)
    finally:
        validator.close()
    assert validator.stats.validated == 20 and validator.stats.failures == 0
    row = conn.execute("SELECT flags, auto_state FROM reading_validation WHERE meter_id = %s",
                       [meters["A"]]).fetchall()
    assert row == [(["high_limit", "isolated_outlier"], "rejected")]
    # however the batches fell, one open alert: the outlier (a spike alert raised while it was
    # pending is resolved as explained)
    assert conn.execute("SELECT rule FROM alert WHERE status <> 'resolved'").fetchall() == [("isolated_outlier",)]
    assert conn.execute("SELECT count(*) FROM reading_validation WHERE meter_id = %s",
                        [meters["B"]]).fetchone() == (0,)


def test_a_full_queue_leaves_batches_to_the_batch_run(db_dsn: str) -> None:
    v = IngestValidator(db_dsn, load_config(), queue_max=3)  # not started: nothing drains
    r = Reading(ts=dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc), value=1, meter_id=1)
    assert v.submit([r, r]) is True
    assert v.submit([r, r]) is False
    assert v.stats.skipped_batches == 1 and v.stats.skipped_readings == 2


@pytest.fixture
def failing_check():
    """A meter check that breaks on one meter's data (as a buggy rule would)."""
    victim: dict[str, int] = {}

    def check(ctx: B.MeterContext) -> B.CheckResult:
        if victim.get("id") in ctx.meter_id.tolist():
            raise ZeroDivisionError("division by zero in a rule")
        return B.CheckResult(counts={"checked": len(ctx)})

    B.METER_CHECKS["test_broken"] = check
    yield victim
    del B.METER_CHECKS["test_broken"]


def test_a_rule_failing_on_one_meter_is_recorded_and_the_run_goes_on(
        tmp_path: Path, conn: psycopg.Connection, db_dsn: str, company: Company, failing_check: dict) -> None:
    meters = _registry(tmp_path, conn, db_dsn, company)
    failing_check["id"] = meters["B"]
    s = B.run_period(db_dsn, company.id, "acme", "Asia/Shanghai", "2026-10", load_config(), chunk_meters=3)
    assert s.failures == 1
    assert conn.execute("SELECT meter_id, stage, error FROM vee_failure").fetchall() == [
        (meters["B"], "test_broken", "ZeroDivisionError: division by zero in a rule")]
    assert conn.execute("SELECT status FROM vee_run WHERE id = %s", [s.run_id]).fetchone() == ("completed",)
    # the other rules and meters went on: C is missing reads, A's corrupt telegram is rejected
    assert {r for (r,) in conn.execute("SELECT rule FROM alert WHERE meter_id = %s", [meters["C"]])} == {"missing_reads",
                                                                                                "estimation_failed"}
    assert conn.execute("SELECT auto_state FROM reading_validation WHERE meter_id = %s",
                        [meters["A"]]).fetchall() == [("rejected",)]


def test_inconsistent_install_history_fails_that_meter_only(tmp_path: Path, conn: psycopg.Connection, db_dsn: str,
                                                            company: Company) -> None:
    meters = _registry(tmp_path, conn, db_dsn, company)
    # a second device entered for B while the first was never removed: no final register to count from
    for serial, when in (("D1", "2020-01-01"), ("D2", "2026-10-10")):
        conn.execute("""INSERT INTO meter_installation (company_id, meter_id, device_serial, installed_at)
                        VALUES (%s, %s, %s, %s)""", [company.id, meters["B"], serial, when])
    s = B.run_period(db_dsn, company.id, "acme", "Asia/Shanghai", "2026-10", load_config(), chunk_meters=3)
    assert s.failures == 1
    assert conn.execute("SELECT meter_id, stage FROM vee_failure").fetchall() == [(meters["B"], "meter_replaced")]
    assert conn.execute("SELECT count(*) FROM reading_validation WHERE meter_id = %s",
                        [meters["A"]]).fetchone() == (1,)
    # the ingest path refuses the same meter the same way and validates the others
    late = [Reading(ts=local("2026-11-02T12:00"), value=10_000 + 43 * 300 + 150, meter_id=m, source=Source.COAP,
                    received_at=local("2026-11-02T12:05")) for m in (meters["A"], meters["B"])]
    write_readings(conn, late, future_tolerance_s=10**9)
    v = IngestValidator(db_dsn, load_config())
    try:
        v.validate(late)
    finally:
        v.close()
    assert v.stats.failures == 1 and v.stats.validated == 1  # A validated (from its history), B refused
    assert conn.execute("SELECT count(*) FROM vee_failure WHERE meter_id = %s", [meters["B"]]).fetchone() == (2,)


class BrokenValidator(IngestValidator):
    """Breaks while evaluating one meter's readings, as a rule with a bug would."""

    victim = -1

    def _evaluate(self, conn, rd, slots, emit, replay_keys) -> None:  # type: ignore[override]
        if self.victim in rd.meter.tolist():
            raise ValueError("rule blew up on this meter's data")
        super()._evaluate(conn, rd, slots, emit, replay_keys)


def test_hook_isolates_the_meter_a_rule_fails_on(tmp_path: Path, conn: psycopg.Connection, db_dsn: str,
                                                 company: Company) -> None:
    meters = _registry(tmp_path, conn, db_dsn, company, "meter A size=DN15\nmeter B size=DN15\nmeter C size=DN15\n")
    v = BrokenValidator(db_dsn, load_config()).start()
    v.victim = meters["B"]
    t = local("2026-10-01T00:00")
    readings = [Reading(ts=t + dt.timedelta(days=d), value=v0 if d != 3 else 99_000_000, meter_id=m,
                        source=Source.COAP, received_at=t + dt.timedelta(days=d))
                for m, v0 in ((meters["A"], 1000), (meters["B"], 1000), (meters["C"], 1000)) for d in range(5)]
    write_readings(conn, readings, future_tolerance_s=10**9)
    try:
        v.submit(readings)
        assert v.flush(30)
    finally:
        v.close()
    assert v.stats.failures == 1
    assert conn.execute("SELECT meter_id, stage FROM vee_failure").fetchall() == [(meters["B"], "ingest")]
    flagged = {m for (m,) in conn.execute("SELECT DISTINCT meter_id FROM reading_validation")}
    assert flagged == {meters["A"], meters["C"]}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_dsn: str, tmp_path: Path) -> str:
    monkeypatch.setenv("METERLINE_DSN", db_dsn)
    monkeypatch.setenv("METERLINE_COMPANY", "acme")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("METERLINE_USER", "qian")  # who acts: recorded on alerts and review actions
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return db_dsn


def test_command_line(env: str, tmp_path: Path, conn: psycopg.Connection, company: Company,
                      capsys: pytest.CaptureFixture[str]) -> None:
    meters = _registry(tmp_path, conn, env, company, THREE.replace("meter C size=DN15", "meter C size=DN15 book=B9"))
    conn.execute("TRUNCATE reading_validation, alert_event, alert, reading_estimate, vee_failure, vee_run CASCADE")
    assert main(["vee", "run", "--period", "2026-10"]) == 0
    out = capsys.readouterr().out
    assert "3 meters" in out and "rejected 1" in out and "alerts opened" in out
    assert main(["alerts", "list"]) == 0
    out = capsys.readouterr().out
    assert "isolated_outlier" in out and "missing_reads" in out and "计量主管-钱敏" in out
    ids = [r for (r,) in conn.execute("SELECT id FROM alert ORDER BY id")]
    assert main(["alerts", "ack", str(ids[0])]) == 0
    assert main(["alerts", "resolve", str(ids[0]), "--note", "telegram noise"]) == 0
    assert main(["alerts", "ack", str(ids[0])]) == 1
    assert "is resolved: cannot acknowledge" in capsys.readouterr().out
    assert main(["alerts", "metrics"]) == 0
    assert "meterline_alerts_open{" in capsys.readouterr().out
    assert main(["readings", "review", "--book", "B9", "--period", "2026-10"]) == 1  # C: no period-end read, nothing to estimate from
    out = capsys.readouterr().out
    assert "S-C" in out
    assert main(["readings", "review", "--book", "B1", "--period", "2026-10",
                 "--approve", "S-A@2026-10-05T12:00"]) == 0
    out = capsys.readouterr().out
    assert "approve S-A 2026-10-05 12:00 (reading) by qian: recorded" in out
    assert conn.execute("SELECT review, reviewed_by FROM reading_validation WHERE meter_id = %s",
                        [meters["A"]]).fetchone() == ("approved", "qian")
    assert main(["readings", "figures", "--period", "2026-10"]) == 0
    assert "B1" in capsys.readouterr().out
    assert main(["readings", "actions"]) == 0
    assert "approve" in capsys.readouterr().out
    assert main(["vee", "runs"]) == 0 and main(["vee", "rules"]) == 0
    assert main(["vee", "run", "--period", "2026-13"]) == 1




def test_ingest_hook_judges_a_monthly_read_against_the_previous_months(tmp_path: Path, conn: psycopg.Connection,
                                                                       db_dsn: str, company: Company) -> None:
    """A walk-by meter read once a month: the ingest hook replays a meter it has not seen from
    ``history_days`` before the new read, where a monthly meter has no read; the reads before
    the window come along, so a read 150 L below last month's is reverse flow."""
    meters = _registry(tmp_path, conn, db_dsn, company, "meter H size=DN15\n")
    months = [local("2026-08-27T10:00"), local("2026-09-27T10:00"), local("2026-10-27T10:00")]
    with psycopg.connect(db_dsn, autocommit=True) as c:
        write_readings(c, [Reading(ts=ts, value=100_000 + 11_000 * i, meter_id=meters["H"], source=Source.HANDHELD,
                                   received_at=ts) for i, ts in enumerate(months)])
    back = Reading(ts=local("2026-11-26T10:00"), value=100_000 + 22_000 - 150, meter_id=meters["H"],
                   source=Source.HANDHELD, received_at=local("2026-11-26T18:00"))
    with psycopg.connect(db_dsn, autocommit=True) as c:
        write_readings(c, [back])
    validator = IngestValidator(db_dsn, load_config())
    try:
        validator.validate([back])
    finally:
        validator.close()
    assert validator.stats.flagged == 1
    flags = conn.execute("SELECT flags FROM reading_validation WHERE meter_id = %s AND ts = %s",
                         [meters["H"], back.ts]).fetchone()
    assert flags is not None and "reverse_flow" in flags[0]
