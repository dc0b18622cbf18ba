"""The ledger HTTP API: authentication per channel, payments, replays, wallet notifications."""

from __future__ import annotations

from typing import Iterator

import psycopg
import pytest

from meterline.store.db import Database
from tests.integration.ledger.apikit import APP_ID, MCHID, ApiWorld, AsgiClient, build_world
from tests.integration.ledger.ledgerkit import balance


@pytest.fixture
def world(conn: psycopg.Connection, db: Database) -> ApiWorld:
    return build_world(conn, db)


@pytest.fixture
def client(world: ApiWorld) -> Iterator[AsgiClient]:
    with AsgiClient(world.app) as c:
        yield c


def test_every_endpoint_needs_a_key_with_its_scope(client: AsgiClient, world: ApiWorld) -> None:
    code = world.codes[0]
    calls = [("get", f"/v1/accounts/{code}", None), ("get", f"/v1/accounts/{code}/bills", None),
             ("get", f"/v1/accounts/{code}/payments", None), ("get", "/v1/payments/bank/X1", None),
             ("post", "/v1/bank/query", {"account_code": code}),
             ("post", "/v1/bank/payments", {"transaction_id": "B1", "account_code": code, "amount": 1}),
             ("post", "/v1/counter/payments", {"transaction_id": "C1", "account_code": code, "amount": 1, "tender": "cash", "shift": "A"}),
             ("post", "/v1/counter/receipts/R1/void", {"reason": "x"}),
             ("post", "/v1/orders", {"channel": "wechat", "merchant": MCHID, "account_code": code}),
             ("post", "/v1/prepaid/topups", {"transaction_id": "P1", "channel": "token", "account_code": code, "amount": 1, "token": "1234"}),
             ("get", "/openapi.json", None)]
    for method, path, body in calls:
        for headers in ({}, {"X-API-Key": "wrong"}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (path, r.text)
    r = client.post("/v1/bank/payments", json={"transaction_id": "B1", "account_code": code, "amount": 1},
                    headers=world.h("query"))
    assert r.status_code == 403 and "bank" in r.json()["detail"]
    r = client.post("/v1/counter/payments", json={"transaction_id": "C1", "account_code": code, "amount": 1,
                                                   "tender": "cash", "shift": "A"}, headers=world.h("bank"))
    assert r.status_code == 403
    assert client.get("/openapi.json", headers=world.h("query")).json()["info"]["title"] == "meterline ledger API"
    # wallet notifications without a valid signature are refused (and recorded)
    assert client.post(f"/v1/notify/wechat/{MCHID}", content=b"{}").status_code == 401
    assert client.post("/v1/notify/alipay", content=b"a=1").status_code == 401


def test_bank_query_and_idempotent_payment(client: AsgiClient, world: ApiWorld, conn: psycopg.Connection) -> None:
    code, acct = world.codes[0], world.accounts[0]
    q = client.post("/v1/bank/query", json={"account_code": code}, headers=world.h("bank")).json()
    assert q["amount_due"] == 5000 and q["customer"].endswith("*") and "客户" not in q["customer"][1:]
    body = {"transaction_id": "ICBC-20260425-0001", "account_code": code, "amount": 3000}
    first = client.post("/v1/bank/payments", json=body, headers=world.h("bank"))
    assert first.status_code == 200, first.text
    p = first.json()
    assert (p["allocated"], p["replay"], p["channel"]) == (3000, False, "bank")
    again = client.post("/v1/bank/payments", json=body, headers=world.h("bank")).json()
    assert again["replay"] and again["id"] == p["id"]
    conflict = client.post("/v1/bank/payments", json={**body, "amount": 3001}, headers=world.h("bank"))
    assert conflict.status_code == 409
    assert balance(conn, world.company_id, f"AR:{acct}") == 2000
    assert balance(conn, world.company_id, "CASH:bank:icbc") == 3000
    unknown = client.post("/v1/bank/payments", json={"transaction_id": "ICBC-X", "account_code": "NOPE", "amount": 77},
                          headers=world.h("bank")).json()
    assert unknown["account_code"] is None and balance(conn, world.company_id, "SUSPENSE:bank") == -77
    got = client.get("/v1/payments/bank/ICBC-20260425-0001", headers=world.h("query")).json()
    assert got["id"] == p["id"] and not got["replay"]
    acc = client.get(f"/v1/accounts/{code}", headers=world.h("query")).json()
    assert acc["due"] == 2000 and len(acc["open_items"]) == 1
    assert client.get("/v1/accounts/NOPE", headers=world.h("query")).status_code == 404
    assert [b["open"] for b in client.get(f"/v1/accounts/{code}/bills", headers=world.h("query")).json()] == [2000]
    assert len(client.get(f"/v1/accounts/{code}/payments", headers=world.h("query")).json()) == 1


def test_counter_payment_issues_receipts_and_void_reverses(client: AsgiClient, world: ApiWorld, conn: psycopg.Connection) -> None:
    code, acct = world.codes[1], world.accounts[1]
    body = {"transaction_id": "T-1", "account_code": code, "amount": 1200, "tender": "cash", "shift": "A"}
    r = client.post("/v1/counter/payments", json=body, headers=world.h("counter")).json()
    assert r["receipt"] == "R1" and r["payment"]["allocated"] == 1200
    again = client.post("/v1/counter/payments", json=body, headers=world.h("counter")).json()
    assert again["receipt"] == "R1" and again["payment"]["replay"]
    r2 = client.post("/v1/counter/payments", json={**body, "transaction_id": "T-2", "amount": 10}, headers=world.h("counter")).json()
    assert r2["receipt"] == "R2"
    v = client.post("/v1/counter/receipts/R1/void", json={"reason": "收错户"}, headers=world.h("counter"))
    assert v.status_code == 200 and v.json()["reversal_entry_id"]
    assert client.post("/v1/counter/receipts/R1/void", json={"reason": "again"}, headers=world.h("counter")).status_code == 409
    assert balance(conn, world.company_id, f"AR:{acct}") == 1200
    assert balance(conn, world.company_id, f"PREPAID:{acct}") == -10
    assert balance(conn, world.company_id, "CASH:counter:张伟") == 10


def test_wechat_order_notification_replay_and_mismatch(client: AsgiClient, world: ApiWorld, conn: psycopg.Connection) -> None:
    code, acct = world.codes[0], world.accounts[0]
    order = client.post("/v1/orders", json={"channel": "wechat", "merchant": MCHID, "account_code": code},
                        headers=world.h("orders")).json()
    assert order["amount"] == 5000
    headers, body = world.wechat_notice(order["out_trade_no"], "4200000001", 5000)
    r = client.post(f"/v1/notify/wechat/{MCHID}", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["code"] == "SUCCESS"
    assert client.post(f"/v1/notify/wechat/{MCHID}", content=body, headers=headers).status_code == 200  # replay
    assert balance(conn, world.company_id, f"AR:{acct}") == 0
    assert balance(conn, world.company_id, f"CASH:wechat:{MCHID}") == 5000
    # a notification for another amount than the order is refused, with a record
    order2 = client.post("/v1/orders", json={"channel": "wechat", "merchant": MCHID, "account_code": world.codes[1],
                                             "amount": 1200}, headers=world.h("orders")).json()
    headers, body = world.wechat_notice(order2["out_trade_no"], "4200000002", 1)
    r = client.post(f"/v1/notify/wechat/{MCHID}", content=body, headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "FAIL"
    # a forged signature too
    headers, body = world.wechat_notice(order2["out_trade_no"], "4200000003", 1200)
    headers["Wechatpay-Signature"] = headers["Wechatpay-Signature"][:-8] + "AAAAAAA="
    assert client.post(f"/v1/notify/wechat/{MCHID}", content=body, headers=headers).status_code == 401
    verdicts = conn.execute("SELECT verdict, reason FROM channel_notice WHERE channel = 'wechat' ORDER BY id").fetchall()
    assert [v for v, _ in verdicts] == ["paid", "replay", "rejected", "rejected"]
    assert "order" in verdicts[2][1] and "signature" in verdicts[3][1]
    assert conn.execute("SELECT count(*) FROM payment WHERE channel = 'wechat'").fetchone()[0] == 1


def test_alipay_notification(client: AsgiClient, world: ApiWorld, conn: psycopg.Connection) -> None:
    order = client.post("/v1/orders", json={"channel": "alipay", "merchant": APP_ID, "account_code": world.codes[1],
                                            "amount": 1200}, headers=world.h("orders")).json()
    form = world.alipay_form(order["out_trade_no"], "2026042522001", "12.00")
    r = client.post("/v1/notify/alipay", data=form)
    assert (r.status_code, r.text) == (200, "success")
    assert balance(conn, world.company_id, f"AR:{world.accounts[1]}") == 0
    bad = world.alipay_form(order["out_trade_no"], "2026042522002", "12.01")
    assert client.post("/v1/notify/alipay", data=bad).text == "failure"


def test_prepaid_top_up(client: AsgiClient, world: ApiWorld, conn: psycopg.Connection) -> None:
    code, acct = world.codes[2], world.accounts[2]
    body = {"transaction_id": "V-1", "channel": "ic_card", "account_code": code, "amount": 10000, "card_no": "IC0001",
            "meter_serial": "G12345", "purchase_no": 7}
    r = client.post("/v1/prepaid/topups", json=body, headers=world.h("prepaid"))
    assert r.status_code == 200, r.text
    assert balance(conn, world.company_id, f"PREPAID:{acct}") == -10000
    bad = client.post("/v1/prepaid/topups", json={**body, "transaction_id": "V-2", "card_no": None},
                      headers=world.h("prepaid"))
    assert bad.status_code == 400 and "card number" in bad.json()["detail"]
    evidence = conn.execute("SELECT evidence FROM payment WHERE external_id = 'V-1'").fetchone()[0]
    assert evidence == {"card_no": "IC0001", "meter_serial": "G12345", "purchase_no": 7, "vendor": "vend01"}
