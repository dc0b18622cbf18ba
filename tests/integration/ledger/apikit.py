"""An API app on a fresh database with keys of every scope and wallet merchants (for tests)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from meterline.ledger.api.app import build_context, create_app
from meterline.ledger.api.config import AlipayConfig, ApiKey, ChannelsConfig, WechatConfig, hash_key
from meterline.ledger.bills import post_bills
from meterline.ledger.channels import wallet
from meterline.ledger.policy import load_policy
from meterline.store.db import Database
from tests.integration.ledger.ledgerkit import add_bill, make_accounts, make_run, new_company

MCHID = "1900000109"
APP_ID = "2021000111"


@dataclass
class ApiWorld:
    app: FastAPI
    company_id: int
    company_code: str
    accounts: list[int]
    codes: list[str]
    keys: dict[str, str]  # scope -> key
    wechat_key: rsa.RSAPrivateKey
    alipay_key: rsa.RSAPrivateKey
    apiv3: bytes

    def h(self, scope: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[scope]}

    def wechat_notice(self, out_trade_no: str, transaction_id: str, amount: int, *, state: str = "SUCCESS",
                      key: rsa.RSAPrivateKey | None = None) -> tuple[dict[str, str], bytes]:
        data = {"mchid": MCHID, "appid": "wx1", "out_trade_no": out_trade_no, "transaction_id": transaction_id,
                "trade_state": state, "success_time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "amount": {"total": amount, "payer_total": amount, "currency": "CNY"}}
        body = json.dumps({"id": secrets.token_hex(6), "event_type": "TRANSACTION.SUCCESS",
                           "resource": wallet.wechat_encrypt(self.apiv3, data)}).encode()
        stamp, nonce = str(int(dt.datetime.now(dt.timezone.utc).timestamp())), secrets.token_hex(8)
        sig = wallet.sign_rsa(key or self.wechat_key, wallet.wechat_message(stamp, nonce, body))
        return ({"Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": nonce, "Wechatpay-Signature": sig,
                 "Wechatpay-Serial": "PUB", "Content-Type": "application/json"}, body)

    def alipay_form(self, out_trade_no: str, trade_no: str, yuan: str, *, key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        params = {"app_id": APP_ID, "out_trade_no": out_trade_no, "trade_no": trade_no, "trade_status": "TRADE_SUCCESS",
                  "total_amount": yuan, "gmt_payment": dt.datetime.now(wallet.CHINA).strftime("%Y-%m-%d %H:%M:%S"),
                  "notify_id": secrets.token_hex(4), "sign_type": "RSA2"}
        params["sign"] = wallet.sign_rsa(key or self.alipay_key, wallet.alipay_sign_content(params))
        return params


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def build_world(conn: psycopg.Connection, db: Database, n_accounts: int = 3, bill_amounts: tuple[int, ...] = (5000, 1200, 0)) -> ApiWorld:
    c = new_company(conn)
    code = conn.execute("SELECT code FROM company WHERE id = %s", [c]).fetchone()[0]
    accounts = make_accounts(conn, c, n_accounts)
    run = make_run(conn, c)
    for a, amount in zip(accounts, bill_amounts):
        if amount:
            add_bill(conn, c, run, a, [("water", amount, 0)], dt.date(2026, 4, 20))
    with conn.transaction():
        post_bills(conn, c, run, day=dt.date(2026, 4, 1))
    codes = [conn.execute("SELECT code FROM account WHERE id = %s", [a]).fetchone()[0] for a in accounts]
    keys = {s: f"key-{s}-{secrets.token_hex(8)}" for s in ("query", "bank", "counter", "orders", "prepaid", "all")}
    cashier = {"bank": "icbc", "counter": "张伟", "prepaid": "vend01"}
    conn.execute("INSERT INTO receipt_range (company_id, cashier, prefix, first_no, last_no, next_no) VALUES (%s, '张伟', 'R', 1, 100000, 1)", [c])
    wechat_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    alipay_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    apiv3 = secrets.token_hex(16).encode()
    channels = ChannelsConfig(
        api_keys=[ApiKey(name=f"{s}-key", company=code, key_sha256=hash_key(k),
                         scopes=["query", "bank", "counter", "orders", "prepaid"] if s == "all" else [s],
                         cashier="张伟" if s == "all" else cashier.get(s, ""))
                  for s, k in keys.items()],
        wechat=[WechatConfig(mchid=MCHID, company=code, apiv3_key=apiv3.decode(), platform_public_key=_pem(wechat_key))],
        alipay=[AlipayConfig(app_id=APP_ID, company=code, public_key=_pem(alipay_key))])
    ctx = build_context(db, channels, load_policy())
    return ApiWorld(create_app(ctx), c, code, accounts, codes, keys, wechat_key, alipay_key, apiv3)


class AsgiClient:
    """A synchronous HTTP client calling an ASGI app in process (httpx over an anyio portal)."""

    def __init__(self, app: FastAPI) -> None:
        import anyio.from_thread
        import httpx

        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger.test")

    def request(self, method: str, url: str, **kw):  # -> httpx.Response
        return self.portal.call(lambda: self.client.request(method, url, **kw))

    def get(self, url: str, **kw):
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw):
        return self.request("POST", url, **kw)

    def close(self) -> None:
        self.portal.call(self.client.aclose)
        self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> "AsgiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
