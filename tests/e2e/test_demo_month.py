"""The demo, small: a month of a 300-meter utility end to end, and its books reconcile.

``meterline demo --meters 300`` on the test PostgreSQL (its own database), then, from the
database it leaves behind: every figure from its own table — bills, late fees, payments,
adjustments, the journal's receivable accounts, the maintained balances, the open items — and
billed + late fees − collected − adjustments = receivables in each of them; readings that came
over the wire (the NB-IoT meters' period-end reads, over MQTT) are the closing reads of bills.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from meterline.cli import main
from meterline.cli._demo_ledger import ledger_figures
from meterline.ingest.model import Source
from meterline.store.dsn import with_dbname


@pytest.fixture
def demo_db(pg_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("METERLINE_DSN", pg_server.dsn)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)
    name = f"ml_e2e_{uuid.uuid4().hex[:8]}"
    try:
        assert main(["demo", "--meters", "300", "--database", name, "--out", str(tmp_path / "out")]) == 0
        yield with_dbname(pg_server.dsn, name), capsys.readouterr().out, tmp_path / "out"
    finally:
        with pg_server.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_small_demo_reconciles(demo_db) -> None:
    dsn, out, files = demo_db
    with psycopg.connect(dsn) as conn:
        cid = conn.execute("SELECT id FROM company WHERE code = 'demo'").fetchone()[0]
        f = ledger_figures(conn, cid)
        # every channel of the demo brought money; some bills are late, one late fee was waived
        assert f.bills > 200 and f.billed > 0 and f.collected > 0
        assert f.late_fees > 0 and f.adjustments > 0 and f.prepaid_credit > 0
        assert 0 < f.bills_settled < f.billed
        # billed − collected − adjustments = receivables: journal, maintained balances, open items
        receivables = f.billed + f.late_fees - (f.collected - f.prepaid_credit - f.suspense) - f.adjustments
        assert receivables == f.receivables == f.receivables_maintained
        open_items = conn.execute("SELECT sum(amount - settled) FROM receivable_item WHERE company_id = %s",
                                  [cid]).fetchone()[0]
        assert open_items == receivables
        # the journal says the same by kind of entry: bills and late fees in, payments and waivers out
        by_kind = dict(conn.execute(
            """SELECT e.kind, sum(p.amount) FROM posting p JOIN journal_entry e ON e.id = p.entry_id
                WHERE p.company_id = %s AND p.account_code LIKE 'AR:%%' GROUP BY e.kind""", [cid]).fetchall())
        assert by_kind["bill"] == f.billed and by_kind["late_fee"] == f.late_fees
        assert sum(by_kind.values()) == receivables
        channels = {c for (c,) in conn.execute("SELECT DISTINCT channel FROM payment WHERE company_id = %s", [cid])}
        assert {"counter", "wechat", "alipay", "bank", "withholding", "ic_card"} <= channels
        # readings that went over MQTT close bills
        over_mqtt = conn.execute(
            """SELECT count(*) FROM bill_line_sourced bl
                 CROSS JOIN LATERAL jsonb_array_elements(bl.source->'reads') r
                 JOIN reading rd ON rd.meter_id = (r->>0)::bigint AND rd.ts = (r->>2)::timestamptz
                WHERE bl.company_id = %s AND rd.source = %s AND rd.source_ref LIKE 'backlog-%%'""",
            [cid, int(Source.MQTT)]).fetchone()[0]
        assert over_mqtt > 0
        # the demo's faults reached validation
        rules = {r for (r,) in conn.execute("SELECT DISTINCT rule FROM alert WHERE company_id = %s", [cid])}
        assert {"spike", "reverse_flow"} <= rules
    assert re.search(r"books reconcile\s*│\s*yes", out)
    assert list((files / "exports" / "bills").glob("*.jsonl")) and list((files / "bank").glob("*_return.txt"))
    assert list((files / "reports").glob("*.png")) and list((files / "routes").glob("upload_*.csv"))
