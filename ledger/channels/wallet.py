"""Online wallets: WeChat Pay (API v3 style) and Alipay (RSA2 style) payment notifications.

A customer pays an **order** we created (``create_order``: account and amount, our
``out_trade_no``); the wallet then notifies us over HTTP. A notification is accepted only if

1. its signature verifies with the wallet's public key —
   * WeChat Pay v3: RSA-SHA256 (PKCS#1 v1.5) over ``timestamp\\nnonce\\nbody\\n`` from the
     ``Wechatpay-Timestamp``/``-Nonce``/``-Signature`` headers, the timestamp within the allowed
     skew; the payload (``resource``) is then decrypted with AES-256-GCM and the merchant's
     API v3 key (associated data and nonce from the resource);
   * Alipay: RSA-SHA256 over the form parameters except ``sign`` and ``sign_type``, sorted by
     name and joined as ``k=v&k=v`` (values as sent, empty ones left out), base64 signature;
2. it names an order of ours for that merchant, and
3. the amount paid equals the order's amount (WeChat ``amount.total`` in fen; Alipay
   ``total_amount`` in yuan with two decimals).

Every notification is recorded (``channel_notice``) with its verdict — ``paid``, ``replay``
(the wallet's transaction was recorded before: nothing changes), ``ignored`` (not a success
state) or ``rejected`` with the reason — including the refused ones, whose raw body is kept.
The verification functions here are pure; :func:`handle_wechat` / :func:`handle_alipay` do the
database work inside the caller's transaction.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping
from urllib.parse import parse_qsl

import psycopg
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg.types.json import Jsonb

from meterline.ledger import chart
from meterline.ledger.errors import LedgerError, PaymentConflict, SignatureError
from meterline.ledger.payments import PaymentIn, record_payment
from meterline.ledger.policy import AllocationPolicy

CHINA = dt.timezone(dt.timedelta(hours=8))


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        # an X.509 certificate (WeChat's platform certificate) carries the key
        from cryptography import x509

        key = x509.load_pem_x509_certificate(data).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise LedgerError("wallet public keys are RSA keys")
    return key


def _verify(key: rsa.RSAPublicKey, message: bytes, signature_b64: str, channel: str) -> None:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError) as exc:
        raise SignatureError(channel, "signature is not base64") from exc
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise SignatureError(channel, "signature does not verify") from exc


def sign_rsa(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Base64 RSA-SHA256 signature (what the wallets do; used by tests and the load generator)."""
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


# -- WeChat Pay v3 -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WechatMerchant:
    mchid: str
    company_id: int
    apiv3_key: bytes  # 32 bytes
    platform_key: rsa.RSAPublicKey
    max_skew_s: int = 300


@dataclass(frozen=True, slots=True)
class WalletPaid:
    merchant: str
    out_trade_no: str
    transaction_id: str
    state: str  # SUCCESS / TRADE_SUCCESS ...
    amount: int  # fen
    paid_at: dt.datetime
    raw: dict[str, Any]


def wechat_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"


def verify_wechat(merchant: WechatMerchant, headers: Mapping[str, str], body: bytes,
                  now: dt.datetime | None = None) -> WalletPaid:
    """Verify and decrypt a WeChat Pay v3 notification (raises :class:`SignatureError`)."""
    h = {k.lower(): v for k, v in headers.items()}
    timestamp, nonce, signature = h.get("wechatpay-timestamp"), h.get("wechatpay-nonce"), h.get("wechatpay-signature")
    if not (timestamp and nonce and signature):
        raise SignatureError("wechat", "Wechatpay-Timestamp, -Nonce and -Signature headers are required")
    if not timestamp.isdigit():
        raise SignatureError("wechat", "Wechatpay-Timestamp is not a number")
    _verify(merchant.platform_key, wechat_message(timestamp, nonce, body), signature, "wechat")
    now = now or dt.datetime.now(dt.timezone.utc)
    if abs(now.timestamp() - int(timestamp)) > merchant.max_skew_s:
        raise SignatureError("wechat", f"timestamp {timestamp} is more than {merchant.max_skew_s} s from now")
    try:
        envelope = json.loads(body)
        resource = envelope["resource"]
        if resource.get("algorithm") != "AEAD_AES_256_GCM":
            raise SignatureError("wechat", f"resource algorithm {resource.get('algorithm')!r} is not AEAD_AES_256_GCM")
        plain = AESGCM(merchant.apiv3_key).decrypt(
            resource["nonce"].encode(), base64.b64decode(resource["ciphertext"]),
            (resource.get("associated_data") or "").encode())
        data = json.loads(plain)
        paid = WalletPaid(
            merchant=str(data["mchid"]), out_trade_no=str(data["out_trade_no"]),
            transaction_id=str(data["transaction_id"]), state=str(data["trade_state"]),
            amount=int(data["amount"]["total"]),
            paid_at=dt.datetime.fromisoformat(data["success_time"]) if data.get("success_time") else now,
            raw=data)
    except SignatureError:
        raise
    except InvalidTag as exc:
        raise SignatureError("wechat", "resource does not decrypt with the merchant's API v3 key") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureError("wechat", f"malformed notification: {exc!r}") from exc
    if paid.merchant != merchant.mchid:
        raise SignatureError("wechat", f"notification is for merchant {paid.merchant}, not {merchant.mchid}")
    if paid.paid_at.tzinfo is None:
        raise SignatureError("wechat", "success_time has no offset")
    return paid


def wechat_encrypt(apiv3_key: bytes, data: dict[str, Any], associated_data: str = "transaction") -> dict[str, str]:
    """The ``resource`` of a notification (for tests and the load generator)."""
    nonce = secrets.token_hex(6)
    ct = AESGCM(apiv3_key).encrypt(nonce.encode(), json.dumps(data).encode(), associated_data.encode())
    return {"algorithm": "AEAD_AES_256_GCM", "ciphertext": base64.b64encode(ct).decode(), "nonce": nonce,
            "associated_data": associated_data, "original_type": "transaction"}


# -- Alipay --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AlipayApp:
    app_id: str
    company_id: int
    alipay_key: rsa.RSAPublicKey


def alipay_sign_content(params: Mapping[str, str]) -> bytes:
    items = sorted((k, v) for k, v in params.items() if k not in ("sign", "sign_type") and v != "")
    return "&".join(f"{k}={v}" for k, v in items).encode()


def parse_alipay_form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError as exc:
        raise SignatureError("alipay", "form body is not UTF-8") from exc


def verify_alipay(app: AlipayApp, params: Mapping[str, str]) -> WalletPaid:
    if params.get("sign_type", "RSA2") != "RSA2":
        raise SignatureError("alipay", f"sign_type {params.get('sign_type')!r} is not RSA2")
    if not params.get("sign"):
        raise SignatureError("alipay", "sign is missing")
    _verify(app.alipay_key, alipay_sign_content(params), params["sign"], "alipay")
    if params.get("app_id") != app.app_id:
        raise SignatureError("alipay", f"notification is for app {params.get('app_id')}, not {app.app_id}")
    try:
        yuan = Decimal(params["total_amount"])
        fen = yuan * 100
        if fen != fen.to_integral_value() or fen <= 0:
            raise ValueError(f"total_amount {params['total_amount']!r}")
        paid_at = (dt.datetime.strptime(params["gmt_payment"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
                   if params.get("gmt_payment") else dt.datetime.now(dt.timezone.utc))
        return WalletPaid(app.app_id, params["out_trade_no"], params["trade_no"], params.get("trade_status", ""),
                          int(fen), paid_at, dict(params))
    except (KeyError, ValueError, InvalidOperation) as exc:
        raise SignatureError("alipay", f"malformed notification: {exc!r}") from exc


# -- orders and handling -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Order:
    id: int
    channel: str
    merchant: str
    out_trade_no: str
    account_id: int
    amount: int


def create_order(conn: psycopg.Connection, company_id: int, *, channel: str, merchant: str, account_id: int,
                 amount: int, out_trade_no: str | None = None, created_by: str | None = None) -> Order:
    if channel not in ("wechat", "alipay"):
        raise LedgerError(f"orders are for wechat or alipay, not {channel!r}")
    if amount <= 0:
        raise LedgerError("an order's amount must be positive")
    out_trade_no = out_trade_no or f"ML{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}{secrets.token_hex(5)}"
    row = conn.execute(
        """INSERT INTO payment_order (company_id, channel, merchant, out_trade_no, account_id, amount, created_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (channel, merchant, out_trade_no) DO NOTHING RETURNING id""",
        [company_id, channel, merchant, out_trade_no, account_id, amount, created_by]).fetchone()
    if row is None:
        raise LedgerError(f"order {out_trade_no} exists already")
    return Order(row[0], channel, merchant, out_trade_no, account_id, amount)


def find_order(conn: psycopg.Connection, channel: str, merchant: str, out_trade_no: str) -> tuple[int, Order] | None:
    row = conn.execute(
        """SELECT company_id, id, channel, merchant, out_trade_no, account_id, amount FROM payment_order
            WHERE channel = %s AND merchant = %s AND out_trade_no = %s""", [channel, merchant, out_trade_no]).fetchone()
    return (row[0], Order(*row[1:])) if row else None


@dataclass(frozen=True, slots=True)
class NoticeOutcome:
    verdict: str  # paid, replay, ignored, rejected
    reason: str | None
    payment_id: int | None
    notice_id: int


SUCCESS_STATES = {"wechat": {"SUCCESS"}, "alipay": {"TRADE_SUCCESS", "TRADE_FINISHED"}}


def record_notice(conn: psycopg.Connection, *, company_id: int | None, channel: str, merchant: str | None,
                  verdict: str, reason: str | None, external_id: str | None, payment_id: int | None,
                  headers: Mapping[str, str], body: bytes) -> int:
    keep = {k: v for k, v in headers.items() if k.lower().startswith(("wechatpay-", "content-type", "user-agent"))}
    return conn.execute(
        """INSERT INTO channel_notice (company_id, channel, merchant, verdict, reason, external_id, payment_id, headers, body)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        [company_id, channel, merchant, verdict, reason, external_id, payment_id, Jsonb(keep), body]).fetchone()[0]


def settle_notice(conn: psycopg.Connection, company_id: int, channel: str, paid: WalletPaid, *,
                  headers: Mapping[str, str], body: bytes, policy: AllocationPolicy | None = None) -> NoticeOutcome:
    """Check a verified notification against its order and record the payment (idempotently)."""
    def done(verdict: str, reason: str | None, payment_id: int | None = None) -> NoticeOutcome:
        nid = record_notice(conn, company_id=company_id, channel=channel, merchant=paid.merchant, verdict=verdict,
                            reason=reason, external_id=paid.transaction_id, payment_id=payment_id, headers=headers,
                            body=body)
        return NoticeOutcome(verdict, reason, payment_id, nid)

    if paid.state not in SUCCESS_STATES[channel]:
        return done("ignored", f"trade state {paid.state}")
    found = find_order(conn, channel, paid.merchant, paid.out_trade_no)
    if found is None or found[0] != company_id:
        return done("rejected", f"no order {paid.out_trade_no} for merchant {paid.merchant}")
    order = found[1]
    if paid.amount != order.amount:
        return done("rejected", f"paid {paid.amount} but order {order.out_trade_no} is for {order.amount}")
    evidence = {"out_trade_no": paid.out_trade_no, "transaction_id": paid.transaction_id, "merchant": paid.merchant,
                "state": paid.state, "paid_at": paid.paid_at.isoformat()}
    try:
        record = record_payment(conn, company_id, channel,
                                PaymentIn(paid.transaction_id, order.account_id, paid.amount, paid.paid_at,
                                          cash_account=chart.cash(channel, paid.merchant), cashier=paid.merchant,
                                          tender="wallet", evidence=evidence), policy=policy)
    except PaymentConflict as exc:
        return done("rejected", str(exc))
    return done("replay" if record.replay else "paid", None, record.id)
