"""Through the console script: scope, permissions, audit trail and personal data of two companies."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from pathlib import Path

import psycopg
import pytest

from meterline.cli import main

from .conftest import KEY, KEY_ID, TwoCompanies

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "registry_sample.csv"
SAMPLE_PHONES = ["13800000001", "13800000002", "13900000003"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, two: TwoCompanies, tmp_path: Path) -> TwoCompanies:
    monkeypatch.setenv("METERLINE_DSN", two.dsn)
    monkeypatch.setenv("METERLINE_COMPANY", "north")
    monkeypatch.setenv(f"METERLINE__SECURITY__DATA_KEYS__{KEY_ID.upper()}", KEY)
    monkeypatch.setenv("METERLINE__SECURITY__CURRENT_KEY", KEY_ID)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.delenv("METERLINE_USER", raising=False)
    monkeypatch.chdir(tmp_path)
    return two


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def plain_phones(two: TwoCompanies) -> list[str]:
    return [p for ps in two.phones.values() for p in ps] + SAMPLE_PHONES


def assert_no_personal_data(text: str, two: TwoCompanies) -> None:
    leaked = [p for p in plain_phones(two) if p in text]
    assert leaked == [], f"personal data in output: {leaked[:3]}"


def add_staff(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, "user", "add", "boss", "管理员")  # the first user: administrator of the group
    assert code == 0 and "administrator of the group" in out
    assert cli(capsys, "user", "list")[0] == 3  # the implicit administrator is gone
    for login, name, role, where in (
        ("li", "李收费", "cashier", ["--in", "north"]),
        ("wang", "王计量", "metering_supervisor", ["--in", "north"]),
        ("zhao", "赵集团", "group_viewer", ["--group"]),
        ("qian", "钱审计", "auditor", ["--in", "north"]),
        ("sun", "孙营收", "billing_administrator", ["--in", "north"]),
    ):
        assert cli(capsys, "--user", "boss", "user", "add", login, name)[0] == 0
        assert cli(capsys, "--user", "boss", "user", "grant", login, role, *where)[0] == 0


def test_every_command_as_one_company_sees_only_its_rows(env: TwoCompanies, capsys, tmp_path: Path) -> None:
    out_file = tmp_path / "north.csv"
    code, out = cli(capsys, "registry", "export", str(out_file))
    assert code == 0 and "(personal data: full)" in out  # the local administrator: no staff configured yet
    rows = list(csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"))))
    assert len(rows) == 80 and all(r["meter_serial"].startswith("N") for r in rows)
    south_account = "SA00000001"
    code, out = cli(capsys, "audit", "--account", south_account)
    assert code == 1 and "does not exist" in out
    code, out = cli(capsys, "--company", "south", "audit", "--account", south_account)
    assert code == 0 and "account opened" in out
    code, out = cli(capsys, "group", "figures")
    assert code == 0 and "north" in out and "south" not in out
    code, out = cli(capsys, "group", "figures", "--consolidated")
    assert code == 0 and "north" in out and "south" in out and "(group)" in out


def test_refused_actions_name_the_missing_permission(env: TwoCompanies, capsys) -> None:
    add_staff(capsys)
    code, out = cli(capsys, "--user", "li", "registry", "import", str(SAMPLE))
    assert code == 3 and "lacks permission 'registry.write'" in out and "roles there: cashier" in out
    assert "billing_administrator" in out  # who has it
    code, out = cli(capsys, "--user", "li", "--company", "south", "audit", "--account", "SA00000001")
    assert code == 3 and "'audit.read'" in out and "roles there: none" in out
    code, out = cli(capsys, "--user", "wang", "group", "figures", "--consolidated")
    assert code == 3 and "'group.read'" in out and "group-wide" in out
    code, out = cli(capsys, "--user", "zhao", "group", "figures", "--consolidated")
    assert code == 0 and "south" in out
    code, out = cli(capsys, "--user", "zhao", "company", "add", "west", "西部水务")
    assert code == 3 and "'company.manage'" in out
    code, out = cli(capsys, "--user", "nobody", "group", "figures")
    assert code == 3 and "'nobody' is not a meterline user" in out
    code, out = cli(capsys, "--user", "li", "db", "status")
    assert code == 3 and "'db.manage'" in out
    code, out = cli(capsys, "--user", "sun", "registry", "import", str(SAMPLE))
    assert code == 0


def test_read_only_roles_cannot_write_even_past_the_permission_check(env: TwoCompanies, capsys) -> None:
    from meterline.cli._base import Context

    add_staff(capsys)
    ctx = Context(user_login="qian", company_code="north")
    try:
        ctx.require("audit.read")
        with ctx.scoped() as conn:
            assert conn.execute("SELECT count(*) FROM account").fetchone()[0] == 80
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("UPDATE account SET household_size = 4")
    finally:
        ctx.close()


def test_audited_actions_leave_exactly_one_row_each(env: TwoCompanies, capsys, tmp_path: Path) -> None:
    add_staff(capsys)
    with psycopg.connect(env.dsn) as conn:
        before = conn.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    assert cli(capsys, "--user", "sun", "registry", "import", str(SAMPLE))[0] == 0
    with psycopg.connect(env.dsn) as conn:
        rows = conn.execute("SELECT entity_type, action, count(*), min(actor), max(actor), min(origin) FROM audit_log "
                            "WHERE id > %s GROUP BY 1, 2 ORDER BY 1, 2", [before]).fetchall()
    counts = {(t, a): n for t, a, n, *_ in rows}
    # the seeded company already has district D01 and the use types; two sub-meters get their
    # master meter set once every meter exists (a second statement, a second row)
    assert counts == {("customer", "insert"): 3, ("account", "insert"): 4, ("meter", "insert"): 5,
                      ("meter", "update"): 2, ("meter_book", "insert"): 2, ("district", "insert"): 1,
                      ("meter_installation", "insert"): 5}
    assert all(r[3] == r[4] == "sun" and r[5].startswith("cli:") for r in rows)
    # the same file again: nothing changed, nothing recorded
    with psycopg.connect(env.dsn) as conn:
        mark = conn.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    assert cli(capsys, "--user", "sun", "registry", "import", str(SAMPLE))[0] == 0
    # one account moves and a phone changes: one row each, with the right before and after
    text = SAMPLE.read_text(encoding="utf-8").replace("城东区阳光花园1栋1单元101室", "城东区阳光花园9栋9单元909室")
    text = text.replace("13800000001", "13811112222")
    changed = tmp_path / "changed.csv"
    changed.write_text(text, encoding="utf-8")
    assert cli(capsys, "--user", "sun", "registry", "import", str(changed))[0] == 0
    with psycopg.connect(env.dsn) as conn:
        new = conn.execute("SELECT entity_type, action, before, after, actor, account_id FROM audit_log WHERE id > %s "
                           "AND action IN ('insert', 'update', 'delete') ORDER BY id", [mark]).fetchall()
        a001 = conn.execute("SELECT id FROM account WHERE code = 'A001'").fetchone()[0]
    assert [(t, a) for t, a, *_ in new] == [("customer", "update"), ("account", "update")]
    (_, _, cb, ca, _, _), (_, _, ab, aa, actor, acc) = new
    assert ab["address"] == "城东区阳光花园1栋1单元101室" and aa["address"] == "城东区阳光花园9栋9单元909室"
    assert {k for k in aa if aa[k] != ab[k]} == {"address"} and actor == "sun" and acc == a001
    assert cb["phone"] != ca["phone"] and cb["phone"].startswith("ml1:") and ca["phone"].startswith("ml1:")
    assert "13811112222" not in str(ca) and "13800000001" not in str(cb)  # ciphertext only
    # a payment taken by the cashier: one row; her day and the account's history show it
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        mark = conn.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    today = dt.datetime.now(dt.timezone.utc).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).date()
    from meterline.cli._base import Context
    from meterline.store import audit as auditlib

    ctx = Context(user_login="li", company_code="north")
    try:
        ctx.require("payments.post")
        with ctx.scoped() as conn:
            from meterline.ledger.payments import PaymentIn, record_payment

            record_payment(conn, env.north, "counter",
                           PaymentIn("T-0001", a001, 12345, dt.datetime.now(dt.timezone.utc), cashier="li", tender="cash"),
                           created_by="li")
            auditlib.record(conn, None, "payment.receipt_printed", "payment", "T-0001", account_id=a001)
            conn.commit()
    finally:
        ctx.close()
    with psycopg.connect(env.dsn) as conn:
        new = conn.execute("SELECT entity_type, action, actor, company_id, after->>'amount' FROM audit_log WHERE id > %s ORDER BY id",
                           [mark]).fetchall()
    assert new == [("payment", "insert", "li", env.north, "12345"), ("payment", "payment.receipt_printed", "li", env.north, None)]
    code, out = cli(capsys, "--user", "qian", "audit", "--cashier", "li", "--date", today.isoformat())
    assert code == 0 and "T-0001" in out and "123.45" in out and "1 payments, total 123.45; 2 audited actions" in out
    code, out = cli(capsys, "--user", "qian", "audit", "--account", "A001")
    assert code == 0
    for expected in ("account opened", "insert account", "update account", "update customer", "payment counter", "123.45"):
        assert expected in out, expected
    assert "城东区阳光花园9栋9单元909室" in out and "phone: (protected) → (protected)" in out
    assert_no_personal_data(out, env)


def test_audit_rows_cannot_be_changed(env: TwoCompanies) -> None:
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        for stmt in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)


def test_personal_data_is_encrypted_and_masked_everywhere(env: TwoCompanies, capsys, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    add_staff(capsys)
    with psycopg.connect(env.dsn) as conn:
        stored = [r[0] for r in conn.execute("SELECT phone FROM customer WHERE phone IS NOT NULL").fetchall()]
        dump = "\n".join(str(r) for r in conn.execute("SELECT * FROM customer").fetchall())
        audit_dump = "\n".join(str(r) for r in conn.execute("SELECT before, after FROM audit_log").fetchall())
    assert stored and all(s.startswith(f"ml1:{KEY_ID}:") for s in stored)
    assert_no_personal_data(dump + audit_dump, env)
    with psycopg.connect(env.dsn) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE customer SET phone = '13900000000' WHERE id = (SELECT min(id) FROM customer)")
    outputs = []
    # who may see it sees it; outside parties get none; nobody's output or log carries it otherwise
    full = tmp_path / "full.csv"
    code, out = cli(capsys, "--user", "li", "registry", "export", str(full))  # cashier: personal.read
    assert code == 3 and "registry.export" in out
    code, out = cli(capsys, "--user", "sun", "registry", "export", str(full))
    assert code == 0 and "(personal data: full)" in out
    assert set(env.phones[env.north]) <= {r["phone"] for r in csv.DictReader(io.StringIO(full.read_text(encoding="utf-8")))}
    outside = tmp_path / "outside.csv"
    code, out = cli(capsys, "--user", "sun", "registry", "export", "--outside", str(outside))
    outputs.append(out + outside.read_text(encoding="utf-8"))
    rows = list(csv.DictReader(io.StringIO(outside.read_text(encoding="utf-8"))))
    assert code == 0 and rows and all(r["phone"] == "" and r["id_number"] == "" for r in rows)
    code, out = cli(capsys, "--user", "sun", "registry", "export")  # stdout
    assert code == 0
    stdout_rows = [r for r in csv.DictReader(io.StringIO(out[out.index("customer_code"):]))]
    assert {r["phone"] for r in stdout_rows if r["phone"]} == set(env.phones[env.north])
    # masked for a role without personal.read: a read-only export role made for the purpose
    roles = tmp_path / "roles.toml"
    roles.write_text('[roles.exporter]\npermissions = ["registry.read", "registry.export"]\n', encoding="utf-8")
    (tmp_path / "meterline.toml").write_text(f'[security]\nroles_file = "{roles}"\n', encoding="utf-8")
    assert cli(capsys, "--user", "boss", "user", "add", "ma", "马导出")[0] == 0
    assert cli(capsys, "--user", "boss", "user", "grant", "ma", "exporter", "--in", "north")[0] == 0
    masked = tmp_path / "masked.csv"
    code, out = cli(capsys, "--user", "ma", "registry", "export", str(masked))
    outputs.append(out + masked.read_text(encoding="utf-8"))
    phones = [r["phone"] for r in csv.DictReader(io.StringIO(masked.read_text(encoding="utf-8"))) if r["phone"]]
    assert code == 0 and "(personal data: masked)" in out and phones and all("****" in p for p in phones)
    # a masked file cannot overwrite the real values
    code, out = cli(capsys, "--user", "sun", "registry", "import", str(masked))
    outputs.append(out)
    assert code == 2 and "is masked" in out and "nothing imported" in out
    # an import error quoting two different phones of one customer, with debug logging on
    bad = tmp_path / "bad.csv"
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    lines.append(lines[2].replace("13800000001", "13899998888").replace("WM001,863000000000001", "WM099,863000000000099"))
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out = cli(capsys, "-vv", "--user", "sun", "registry", "import", str(bad))
    outputs.append(out)
    assert code == 2 and "customer C001 has phone=" in out and "138****8888" in out
    logging.getLogger("meterline.test").warning("customer phone is %s", "13800000001")
    logged = capsys.readouterr()
    outputs.append(logged.out + logged.err)
    assert "138****0001" in outputs[-1]
    for text in outputs:
        assert_no_personal_data(text, env)
        assert "13899998888" not in text


def test_key_rotation_reencrypts_everything(env: TwoCompanies, capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from meterline.store.personal import generate_key

    monkeypatch.setenv("METERLINE__SECURITY__DATA_KEYS__T2", generate_key())
    monkeypatch.setenv("METERLINE__SECURITY__CURRENT_KEY", "t2")
    with psycopg.connect(env.dsn, autocommit=True) as conn:  # a value from before encryption existed
        conn.execute("ALTER TABLE customer DROP CONSTRAINT customer_phone_encrypted")
        conn.execute("UPDATE customer SET phone = '13700000007' WHERE company_id = %s AND code = 'NC00000001'", [env.north])
        conn.execute("ALTER TABLE customer ADD CONSTRAINT customer_phone_encrypted CHECK "
                     "(phone IS NULL OR phone ~ '^ml1:[A-Za-z0-9_-]{1,32}:[A-Za-z0-9_-]+={0,2}$') NOT VALID")
    code, out = cli(capsys, "personal", "reencrypt")
    assert code == 0 and "rewritten under key t2 (1 values were plain text)" in out
    with psycopg.connect(env.dsn) as conn:
        keys = {r[0] for r in conn.execute("SELECT split_part(phone, ':', 2) FROM customer WHERE company_id = %s "
                                           "AND phone IS NOT NULL", [env.north]).fetchall()}
        south = {r[0] for r in conn.execute("SELECT split_part(phone, ':', 2) FROM customer WHERE company_id = %s "
                                            "AND phone IS NOT NULL", [env.south]).fetchall()}
        validated = conn.execute("SELECT bool_and(convalidated) FROM pg_constraint WHERE conname LIKE 'customer_%%_encrypted'").fetchone()[0]
    assert keys == {"t2"} and south == {"t1"} and validated
    out_file = tmp_path / "after.csv"
    assert cli(capsys, "registry", "export", str(out_file))[0] == 0
    phones = {r["phone"] for r in csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"))) if r["phone"]}
    assert "13700000007" in phones and len(phones & set(env.phones[env.north])) == len(phones) - 1
