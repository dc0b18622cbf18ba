"""Company isolation through the HTTP API: a key of one company reaches none of the other's rows.

The API serves through the application role (row-level security), as `meterline api serve`
does: the Database is opened with role meterline_app.
"""

from __future__ import annotations

import psycopg

from meterline.store.db import Database
from tests.integration.ledger.apikit import AsgiClient, build_world
from tests.integration.ledger.ledgerkit import balance


def test_one_companys_key_sees_nothing_of_another(conn: psycopg.Connection, db_dsn: str) -> None:
    app_db = Database(db_dsn, min_size=1, max_size=4, role="meterline_app").open()
    try:
        north = build_world(conn, app_db)
        south = build_world(conn, app_db)
        # the same account code in both companies (A1), and one only south has
        conn.execute("UPDATE account SET code = 'S-ONLY' WHERE id = %s", [south.accounts[1]])
        same = north.codes[0]
        assert same == south.codes[0]
        before = balance(conn, south.company_id, f"AR:{south.accounts[0]}")
        with AsgiClient(north.app) as client:
            mine = client.get(f"/v1/accounts/{same}", headers=north.h("query"))
            assert mine.status_code == 200 and mine.json()["due"] == 5000
            assert client.get("/v1/accounts/S-ONLY", headers=north.h("query")).status_code == 404
            # paying south's account code with north's key can only land in north's books (suspense)
            paid = client.post("/v1/bank/payments", headers=north.h("bank"),
                               json={"transaction_id": "X-1", "account_code": "S-ONLY", "amount": 100})
            assert paid.status_code == 200 and paid.json()["account_code"] is None
        assert balance(conn, south.company_id, f"AR:{south.accounts[0]}") == before
        assert balance(conn, north.company_id, "SUSPENSE:bank") == -100
        with conn.transaction():
            rows = conn.execute("SELECT company_id FROM payment WHERE external_id = 'X-1'").fetchall()
        assert rows == [(north.company_id,)]
        # and the application role itself, scoped to north, reads no row of south
        with app_db.connection(company_id=north.company_id) as c:
            assert c.execute("SELECT count(*) FROM account WHERE company_id = %s", [south.company_id]).fetchone()[0] == 0
            assert c.execute("SELECT count(*) FROM posting WHERE company_id = %s", [south.company_id]).fetchone()[0] == 0
    finally:
        app_db.close()
