"""WeChat Pay v3 and Alipay RSA2 notifications: verified, decrypted, or refused with a reason."""

from __future__ import annotations

import datetime as dt
import json
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from meterline.ledger.channels import wallet
from meterline.ledger.errors import SignatureError

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APIV3 = secrets.token_hex(16).encode()  # 32 bytes
NOW = dt.datetime(2026, 4, 25, 4, 0, tzinfo=dt.timezone.utc)
MERCHANT = wallet.WechatMerchant("1900000109", 1, APIV3, KEY.public_key())


def wechat_notice(data: dict, key=KEY, apiv3=APIV3, ts: dt.datetime = NOW) -> tuple[dict, bytes]:
    body = json.dumps({"id": "EV-1", "event_type": "TRANSACTION.SUCCESS", "resource_type": "encrypt-resource",
                       "resource": wallet.wechat_encrypt(apiv3, data)}).encode()
    stamp, nonce = str(int(ts.timestamp())), secrets.token_hex(8)
    return {"Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": nonce, "Wechatpay-Serial": "PUB_KEY_ID_1",
            "Wechatpay-Signature": wallet.sign_rsa(key, wallet.wechat_message(stamp, nonce, body))}, body


PAID = {"mchid": "1900000109", "appid": "wx1", "out_trade_no": "ML1", "transaction_id": "4200001", "trade_state": "SUCCESS",
        "success_time": "2026-04-25T12:00:00+08:00", "amount": {"total": 12345, "payer_total": 12345, "currency": "CNY"}}


def test_wechat_notification_verifies_and_decrypts() -> None:
    headers, body = wechat_notice(PAID)
    paid = wallet.verify_wechat(MERCHANT, headers, body, now=NOW)
    assert (paid.out_trade_no, paid.transaction_id, paid.amount, paid.state) == ("ML1", "4200001", 12345, "SUCCESS")


@pytest.mark.parametrize("case", ["other key", "tampered body", "wrong apiv3", "stale", "no headers", "other merchant"])
def test_wechat_refusals_say_why(case: str) -> None:
    headers, body = wechat_notice(PAID)
    now = NOW
    if case == "other key":
        headers, body = wechat_notice(PAID, key=OTHER)
    elif case == "tampered body":
        body = body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESs")
    elif case == "wrong apiv3":
        headers, body = wechat_notice(PAID, apiv3=secrets.token_hex(16).encode())
    elif case == "stale":
        now = NOW + dt.timedelta(minutes=10)
    elif case == "no headers":
        headers = {}
    elif case == "other merchant":
        headers, body = wechat_notice({**PAID, "mchid": "1900000999"})
    with pytest.raises(SignatureError) as info:
        wallet.verify_wechat(MERCHANT, headers, body, now=now)
    assert info.value.reason


def alipay_params(key=KEY, **over) -> dict[str, str]:
    params = {"app_id": "2021000111", "out_trade_no": "ML2", "trade_no": "2026042522001", "trade_status": "TRADE_SUCCESS",
              "total_amount": "88.00", "gmt_payment": "2026-04-25 12:00:01", "notify_id": "n1", "charset": "utf-8",
              "sign_type": "RSA2", "subject": "水费 2026-03", **over}
    params["sign"] = wallet.sign_rsa(key, wallet.alipay_sign_content(params))
    return params


def test_alipay_notification_verifies() -> None:
    app = wallet.AlipayApp("2021000111", 1, KEY.public_key())
    paid = wallet.verify_alipay(app, alipay_params())
    assert (paid.amount, paid.transaction_id, paid.paid_at.utcoffset()) == (8800, "2026042522001", dt.timedelta(hours=8))
    forged = alipay_params()
    forged["total_amount"] = "0.01"
    with pytest.raises(SignatureError, match="does not verify"):
        wallet.verify_alipay(app, forged)
    with pytest.raises(SignatureError, match="does not verify"):
        wallet.verify_alipay(app, alipay_params(key=OTHER))
    with pytest.raises(SignatureError, match="malformed"):
        wallet.verify_alipay(app, alipay_params(total_amount="88.001"))
    assert wallet.alipay_sign_content({"b": "2", "a": "1", "sign": "x", "sign_type": "RSA2", "c": ""}) == b"a=1&b=2"
