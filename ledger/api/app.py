"""The ledger's HTTP API (FastAPI): payment channels and balance / bill / payment queries.

Every endpoint is authenticated: an API key (header ``X-API-Key``) with the scope the endpoint
needs, whose company scopes everything the call sees and writes; the wallet notification
endpoints instead verify the wallet's signature (:mod:`meterline.ledger.channels.wallet`). The
OpenAPI document is served at ``/openapi.json`` to any valid key (``meterline api openapi``
prints it without a server).

Money is integer minor units (fen) everywhere. Payments are idempotent by (channel,
``transaction_id``): a replay answers 200 with the stored payment and ``replay: true``; the
same id with another amount or account answers 409. Each request runs in one transaction on a
pooled connection (handlers are plain functions run in the server's thread pool), except bank
payments: those arriving together are recorded together, one transaction per batch
(:mod:`meterline.ledger.api.batcher`), each answered after its batch commits.
"""

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, TypeVar

import psycopg
from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from meterline.errors import ConfigError, MeterlineError, NotFound
from meterline.ledger.api.batcher import BatchKey, PaymentBatcher, PendingPayment, record_one
from meterline.ledger.api.config import ApiKey, ChannelsConfig
from meterline.ledger.balances import customer_position, resolve_account
from meterline.ledger.channels import counter, wallet
from meterline.ledger.errors import (ApprovalError, DayClosed, InvalidPayment, LedgerError, NothingToDo,
                                     PaymentConflict, ReceiptRangeError, SignatureError)
from meterline.ledger.journal import CompanyInfo
from meterline.ledger.payments import PaymentIn, PaymentRecord, get_payment
from meterline.ledger.policy import PolicyBook, load_policy
from meterline.ledger.prepaid import top_up
from meterline.store.db import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
TxnId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]
Money = Annotated[int, Field(ge=1, le=10**12, description="minor units (fen)")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
AccountPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Channel = Literal["counter", "bank", "withholding", "wechat", "alipay", "ic_card", "token"]

EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def _when_ok(value: dt.datetime) -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc)
    if not EARLIEST <= value <= now + dt.timedelta(days=1):
        raise ValueError("must be between 2000-01-01 and tomorrow")
    return value


When = Annotated[AwareDatetime, AfterValidator(_when_ok)]


# -- models ------------------------------------------------------------------------------------

class ItemOut(BaseModel):
    id: int
    kind: str = Field(description="bill, late_fee, charge or reinstated")
    period: str | None
    due_date: dt.date
    amount: int
    settled: int
    open: int


class AccountOut(BaseModel):
    account_code: str
    customer: str = Field(description="customer name, masked")
    due: int = Field(description="receivable (minor units)")
    prepaid_credit: int
    net_due: int = Field(description="due minus prepaid credit")
    overdue: int
    open_items: list[ItemOut]


class BillOut(BaseModel):
    id: int
    period: str
    due_date: dt.date
    amount: int
    tax: int
    total: int
    status: str
    open: int


class PaymentOut(BaseModel):
    id: int
    channel: str
    transaction_id: str
    account_code: str | None
    amount: int
    received_at: dt.datetime
    booked_on: dt.date
    allocated: int = Field(description="settled open items; the rest went to prepaid credit (or suspense)")
    reversed: bool
    replay: bool = Field(description="true: this transaction id had been recorded before; nothing changed")


class BankQueryIn(BaseModel):
    account_code: Code


class BankQueryOut(BaseModel):
    account_code: str
    customer: str
    due: int
    prepaid_credit: int
    amount_due: int = Field(description="what to collect now: due minus prepaid credit, at least 0")


class BankPayIn(BaseModel):
    transaction_id: TxnId
    account_code: Code | None = Field(None, description="missing or unknown: the money is held in suspense")
    amount: Money
    paid_at: When | None = None


class CounterPayIn(BaseModel):
    transaction_id: TxnId = Field(description="the terminal's id for this payment (a retry reuses it)")
    account_code: Code
    amount: Money
    tender: Literal["cash", "card", "cheque", "transfer"]
    shift: Code
    paid_at: When | None = None


class CounterOut(BaseModel):
    payment: PaymentOut
    receipt: str


class VoidIn(BaseModel):
    reason: Text


class VoidOut(BaseModel):
    receipt: str
    reversal_entry_id: int | None


class OrderIn(BaseModel):
    channel: Literal["wechat", "alipay"]
    merchant: Code
    account_code: Code
    amount: Money | None = Field(None, description="default: what the account owes now")


class OrderOut(BaseModel):
    out_trade_no: str
    channel: str
    merchant: str
    account_code: str
    amount: int


class TopUpIn(BaseModel):
    transaction_id: TxnId
    channel: Literal["ic_card", "token"]
    account_code: Code
    amount: Money
    card_no: Code | None = None
    token: Annotated[str, StringConstraints(pattern=r"^[0-9 \-]{1,40}$")] | None = None
    meter_serial: Code | None = None
    purchase_no: Annotated[int, Field(ge=0, le=10**9)] | None = None
    paid_at: When | None = None


class ErrorOut(BaseModel):
    error: str
    detail: str


def mask_name(name: str) -> str:
    return name[:1] + "*" * max(1, len(name) - 1) if name else ""


# -- runtime -------------------------------------------------------------------------------------

@dataclass
class Caller:
    key: ApiKey
    company: CompanyInfo


@dataclass
class ApiContext:
    db: Database
    channels: ChannelsConfig
    policies: PolicyBook
    companies: dict[str, CompanyInfo]
    wechat: dict[str, wallet.WechatMerchant]
    alipay: dict[str, wallet.AlipayApp]

    def run(self, company_id: int, fn: Callable[[psycopg.Connection], T], attempts: int = 3) -> T:
        """``fn`` in one transaction; a lost race (a concurrent replay, a deadlock) is retried."""
        for attempt in range(attempts):
            with self.db.connection(company_id=company_id) as conn:
                try:
                    # short statements: never JIT-compile them (a stale estimate on a big table
                    # would make a request pay 30-50 ms of compilation)
                    conn.execute("SELECT set_config('jit', 'off', true)")
                    result = fn(conn)
                    conn.commit()
                    return result
                except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected,
                        psycopg.errors.SerializationFailure):
                    conn.rollback()
                    if attempt == attempts - 1:
                        raise
                except BaseException:
                    conn.rollback()
                    raise
        raise AssertionError("unreachable")


def build_context(db: Database, channels: ChannelsConfig, policies: PolicyBook | None = None) -> ApiContext:
    """Resolve the channels' companies and keys against the database (fails on any unknown)."""
    policies = policies or load_policy()
    wanted = {k.company for k in channels.api_keys} | {w.company for w in channels.wechat} | {a.company for a in channels.alipay}
    with db.connection() as conn:
        rows = conn.execute("SELECT id, code, timezone FROM company WHERE code = ANY(%s)", [sorted(wanted)]).fetchall()
        conn.rollback()
    companies = {r[1]: CompanyInfo(*r) for r in rows}
    problems = [f"company {c} (named in the channels file) does not exist" for c in sorted(wanted - set(companies))]
    wechat_m: dict[str, wallet.WechatMerchant] = {}
    alipay_a: dict[str, wallet.AlipayApp] = {}
    for w in channels.wechat:
        secret = w.secret()
        if len(secret) != 32:
            problems.append(f"wechat {w.mchid}: the API v3 key must be 32 bytes (from {w.apiv3_key_env or 'apiv3_key'})")
            continue
        if w.company in companies:
            key = wallet.load_public_key(channels.read(w.platform_public_key_file, w.platform_public_key))
            wechat_m[w.mchid] = wallet.WechatMerchant(w.mchid, companies[w.company].id, secret, key, w.max_skew_s)
    for a in channels.alipay:
        if a.company in companies:
            key = wallet.load_public_key(channels.read(a.public_key_file, a.public_key))
            alipay_a[a.app_id] = wallet.AlipayApp(a.app_id, companies[a.company].id, key)
    if problems:
        raise ConfigError(problems, "channels")
    return ApiContext(db, channels, policies, companies, wechat_m, alipay_a)


_STATUS = [
    (NotFound, 404), (PaymentConflict, 409), (InvalidPayment, 400), (SignatureError, 401), (DayClosed, 409),
    (NothingToDo, 409), (ReceiptRangeError, 409), (ApprovalError, 403), (LedgerError, 409), (MeterlineError, 400),
]


def _payment_out(p: PaymentRecord, code: str | None) -> PaymentOut:
    return PaymentOut(id=p.id, channel=p.channel, transaction_id=p.external_id, account_code=code, amount=p.amount,
                      received_at=p.received_at, booked_on=p.booked_on, allocated=int(p.allocated),
                      reversed=p.reversed, replay=p.replay)


def create_app(ctx: ApiContext, *, batch_payments: bool = True) -> FastAPI:
    """The app; ``batch_payments=False`` records every bank payment in its own transaction."""
    app = FastAPI(
        title="meterline ledger API",
        version="1",
        description=__doc__,
        openapi_url=None, docs_url=None, redoc_url=None,
        responses={401: {"model": ErrorOut, "description": "no valid API key / signature"},
                   403: {"model": ErrorOut, "description": "the key lacks the scope"}},
    )
    app.state.ctx = ctx
    batcher = app.state.payment_batcher = PaymentBatcher(ctx.run)
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key of a channel (see channels file)")

    for exc_type, status in _STATUS:
        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)
        app.add_exception_handler(exc_type, handler)

    def refuse(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"error": "unauthorized" if status == 401 else "forbidden", "detail": detail},
                            status_code=status)

    class AuthError(Exception):
        def __init__(self, status: int, detail: str) -> None:
            self.status = status
            self.detail = detail

    app.add_exception_handler(AuthError, lambda request, exc: refuse(exc.status, exc.detail))

    def need(*scopes: str) -> Callable[..., Any]:
        # async: a key check is a hash, not worth a hop to a handler thread
        async def dependency(key: Annotated[str | None, Depends(api_key)] = None) -> Caller:
            found = ctx.channels.find_key(key) if key else None
            if found is None:
                raise AuthError(401, "a valid X-API-Key header is required")
            if scopes and not set(scopes) & set(found.scopes):
                raise AuthError(403, f"key {found.name} lacks scope {' or '.join(scopes)}")
            return Caller(found, ctx.companies[found.company])
        return dependency

    def payment_out(conn: psycopg.Connection, p: PaymentRecord, code: str | None = None) -> PaymentOut:
        if code is None and p.account_id is not None:
            code = conn.execute("SELECT code FROM account WHERE id = %s", [p.account_id]).fetchone()[0]
        return _payment_out(p, code)

    def policy(c: Caller):
        return ctx.policies.for_company(c.company.code).allocation

    # -- queries ---------------------------------------------------------------------------
    @app.get("/openapi.json", include_in_schema=False)
    def openapi(caller: Annotated[Caller, Depends(need())]) -> dict[str, Any]:
        return app.openapi()

    @app.get("/v1/accounts/{account_code}", response_model=AccountOut, tags=["queries"],
             responses={404: {"model": ErrorOut}})
    def account(account_code: AccountPath, caller: Annotated[Caller, Depends(need("query", "bank", "counter"))]) -> AccountOut:
        def work(conn: psycopg.Connection) -> AccountOut:
            account_id, name = resolve_account(conn, caller.company.id, account_code)
            pos = customer_position(conn, caller.company.id, account_id, caller.company.today())
            return AccountOut(account_code=pos.account_code, customer=mask_name(name), due=pos.due,
                              prepaid_credit=pos.prepaid_credit, net_due=pos.net_due, overdue=pos.overdue,
                              open_items=[ItemOut(id=i.id, kind=i.kind, period=i.period, due_date=i.due_date,
                                                  amount=i.amount, settled=i.settled, open=i.open) for i in pos.open_items])
        return ctx.run(caller.company.id, work)

    @app.get("/v1/accounts/{account_code}/bills", response_model=list[BillOut], tags=["queries"],
             responses={404: {"model": ErrorOut}})
    def bills(account_code: AccountPath, caller: Annotated[Caller, Depends(need("query"))]) -> list[BillOut]:
        def work(conn: psycopg.Connection) -> list[BillOut]:
            account_id, _ = resolve_account(conn, caller.company.id, account_code)
            rows = conn.execute(
                """SELECT b.id, b.period, b.due_date, b.amount, b.tax, b.total, b.status,
                          coalesce(i.amount - i.settled, 0)
                     FROM bill b LEFT JOIN receivable_item i ON i.bill_id = b.id AND i.kind = 'bill'
                    WHERE b.account_id = %s AND b.company_id = %s ORDER BY b.period DESC, b.id DESC LIMIT 120""",
                [account_id, caller.company.id]).fetchall()
            return [BillOut(id=r[0], period=r[1], due_date=r[2], amount=r[3], tax=r[4], total=r[5], status=r[6],
                            open=r[7]) for r in rows]
        return ctx.run(caller.company.id, work)

    @app.get("/v1/accounts/{account_code}/payments", response_model=list[PaymentOut], tags=["queries"],
             responses={404: {"model": ErrorOut}})
    def payments(account_code: AccountPath, caller: Annotated[Caller, Depends(need("query"))]) -> list[PaymentOut]:
        def work(conn: psycopg.Connection) -> list[PaymentOut]:
            account_id, _ = resolve_account(conn, caller.company.id, account_code)
            rows = conn.execute(
                """SELECT channel, external_id FROM payment WHERE account_id = %s AND company_id = %s
                    ORDER BY received_at DESC LIMIT 120""", [account_id, caller.company.id]).fetchall()
            return [payment_out(conn, get_payment(conn, caller.company.id, ch, ext)) for ch, ext in rows]
        return ctx.run(caller.company.id, work)

    @app.get("/v1/payments/{channel}/{transaction_id}", response_model=PaymentOut, tags=["queries"],
             responses={404: {"model": ErrorOut}})
    def payment(channel: Channel, transaction_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")],
                caller: Annotated[Caller, Depends(need("query", "bank", "counter", "prepaid"))]) -> PaymentOut:
        def work(conn: psycopg.Connection) -> PaymentOut:
            p = get_payment(conn, caller.company.id, channel, transaction_id)
            if p is None:
                raise NotFound(f"no {channel} payment {transaction_id}")
            return payment_out(conn, p)
        return ctx.run(caller.company.id, work)

    # -- bank real time ----------------------------------------------------------------------
    @app.post("/v1/bank/query", response_model=BankQueryOut, tags=["bank"], responses={404: {"model": ErrorOut}})
    def bank_query(body: BankQueryIn, caller: Annotated[Caller, Depends(need("bank"))]) -> BankQueryOut:
        def work(conn: psycopg.Connection) -> BankQueryOut:
            account_id, name = resolve_account(conn, caller.company.id, body.account_code)
            pos = customer_position(conn, caller.company.id, account_id, caller.company.today())
            return BankQueryOut(account_code=pos.account_code, customer=mask_name(name), due=pos.due,
                                prepaid_credit=pos.prepaid_credit, amount_due=max(0, pos.net_due))
        return ctx.run(caller.company.id, work)

    @app.post("/v1/bank/payments", response_model=PaymentOut, tags=["bank"],
              responses={409: {"model": ErrorOut}, 400: {"model": ErrorOut}})
    async def bank_pay(body: BankPayIn, caller: Annotated[Caller, Depends(need("bank"))]) -> PaymentOut:
        # concurrent payments of one key are recorded together, one transaction per batch
        # (meterline.ledger.api.batcher); each is answered after its batch commits
        item = PendingPayment(
            PaymentIn(body.transaction_id, None, body.amount, body.paid_at or dt.datetime.now(dt.timezone.utc),
                      cashier=caller.key.cashier, tender="transfer",
                      evidence={"bank": caller.key.cashier, "account_code": body.account_code, "key": caller.key.name}),
            body.account_code)
        key = BatchKey(caller.company, "bank", caller.key.name, policy(caller))
        if batch_payments:
            p, code = await batcher.submit(key, item)
        else:
            p, code = await run_in_threadpool(ctx.run, caller.company.id, lambda conn: record_one(conn, key, item))
        return _payment_out(p, code)

    # -- counter -----------------------------------------------------------------------------
    @app.post("/v1/counter/payments", response_model=CounterOut, tags=["counter"],
              responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}})
    def counter_pay(body: CounterPayIn, caller: Annotated[Caller, Depends(need("counter"))]) -> CounterOut:
        def work(conn: psycopg.Connection) -> CounterOut:
            account_id, _ = resolve_account(conn, caller.company.id, body.account_code)
            r = counter.pay(conn, caller.company.id, cashier=caller.key.cashier, shift=body.shift, tender=body.tender,
                            transaction_id=body.transaction_id, account_id=account_id, amount=body.amount,
                            received_at=body.paid_at or dt.datetime.now(dt.timezone.utc), policy=policy(caller))
            return CounterOut(payment=payment_out(conn, r.payment), receipt=r.receipt)
        return ctx.run(caller.company.id, work)

    @app.post("/v1/counter/receipts/{receipt}/void", response_model=VoidOut, tags=["counter"],
              responses={409: {"model": ErrorOut}})
    def counter_void(receipt: Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{1,40}$")], body: VoidIn,
                     caller: Annotated[Caller, Depends(need("counter"))]) -> VoidOut:
        def work(conn: psycopg.Connection) -> VoidOut:
            entry = counter.void(conn, caller.company.id, caller.key.cashier, receipt, reason=body.reason)
            return VoidOut(receipt=receipt, reversal_entry_id=entry)
        return ctx.run(caller.company.id, work)

    # -- wallets -----------------------------------------------------------------------------
    @app.post("/v1/orders", response_model=OrderOut, tags=["wallets"],
              responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}})
    def order(body: OrderIn, caller: Annotated[Caller, Depends(need("orders"))]) -> OrderOut:
        known = ctx.wechat if body.channel == "wechat" else ctx.alipay
        merchant = known.get(body.merchant)
        if merchant is None or merchant.company_id != caller.company.id:
            raise NotFound(f"{body.channel} merchant {body.merchant} is not configured for this company")

        def work(conn: psycopg.Connection) -> OrderOut:
            account_id, _ = resolve_account(conn, caller.company.id, body.account_code)
            amount = body.amount
            if amount is None:
                pos = customer_position(conn, caller.company.id, account_id)
                amount = pos.net_due
                if amount <= 0:
                    raise NothingToDo(f"account {body.account_code} owes nothing")
            o = wallet.create_order(conn, caller.company.id, channel=body.channel, merchant=body.merchant,
                                    account_id=account_id, amount=amount, created_by=caller.key.name)
            return OrderOut(out_trade_no=o.out_trade_no, channel=o.channel, merchant=o.merchant,
                            account_code=body.account_code, amount=o.amount)
        return ctx.run(caller.company.id, work)

    @app.post("/v1/notify/wechat/{mchid}", tags=["wallets"], include_in_schema=True,
              responses={200: {"description": "accepted (or a harmless replay)"},
                         400: {"description": "refused: no such order or a wrong amount (recorded)"},
                         401: {"description": "signature does not verify (recorded)"}})
    async def wechat_notify(mchid: Annotated[str, Path(pattern=r"^[0-9A-Za-z]{1,32}$")], request: Request) -> JSONResponse:
        """WeChat Pay v3 payment notification, authenticated by its signature (no API key)."""
        body = await request.body()
        headers = dict(request.headers)
        return await run_in_threadpool(_notify, "wechat", mchid, headers, body)

    @app.post("/v1/notify/alipay", tags=["wallets"],
              responses={200: {"description": "the text success (or failure)", "content": {"text/plain": {}}}})
    async def alipay_notify(request: Request) -> PlainTextResponse:
        """Alipay asynchronous notification (form-encoded), authenticated by its RSA2 signature."""
        body = await request.body()
        headers = dict(request.headers)
        return await run_in_threadpool(_notify, "alipay", None, headers, body)

    def _notify(channel: str, mchid: str | None, headers: dict[str, str], body: bytes):
        def answer(ok: bool, status: int, message: str):
            if channel == "wechat":
                return JSONResponse({"code": "SUCCESS" if ok else "FAIL", "message": message}, status_code=status)
            return PlainTextResponse("success" if ok else "failure", status_code=status)

        company_id: int | None = None
        merchant_code = mchid
        try:
            if channel == "wechat":
                merchant = ctx.wechat.get(mchid or "")
                if merchant is None:
                    raise SignatureError("wechat", f"merchant {mchid} is not configured")
                company_id = merchant.company_id
                paid = wallet.verify_wechat(merchant, headers, body)
            else:
                params = wallet.parse_alipay_form(body)
                merchant_code = params.get("app_id")
                app_cfg = ctx.alipay.get(merchant_code or "")
                if app_cfg is None:
                    raise SignatureError("alipay", f"app {merchant_code} is not configured")
                company_id = app_cfg.company_id
                paid = wallet.verify_alipay(app_cfg, params)
        except SignatureError as exc:
            def record(conn: psycopg.Connection) -> None:
                wallet.record_notice(conn, company_id=company_id, channel=channel, merchant=merchant_code,
                                     verdict="rejected", reason=exc.reason, external_id=None, payment_id=None,
                                     headers=headers, body=body)
            if company_id is not None:
                ctx.run(company_id, record)
            else:
                _record_unplaced(record)
            log.warning("%s notification refused: %s", channel, exc.reason)
            return answer(False, 401, exc.reason)
        code = next((c for c, info in ctx.companies.items() if info.id == company_id), None)
        outcome = ctx.run(company_id, lambda conn: wallet.settle_notice(
            conn, company_id, channel, paid, headers=headers, body=body,
            policy=ctx.policies.for_company(code).allocation))
        if outcome.verdict == "rejected":
            return answer(False, 400, outcome.reason or "rejected")
        return answer(True, 200, "成功")

    def _record_unplaced(fn: Callable[[psycopg.Connection], None]) -> None:
        with ctx.db.connection() as conn:
            fn(conn)
            conn.commit()

    # -- prepaid meters ----------------------------------------------------------------------
    @app.post("/v1/prepaid/topups", response_model=PaymentOut, tags=["prepaid"],
              responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}, 400: {"model": ErrorOut}})
    def prepaid_topup(body: TopUpIn, caller: Annotated[Caller, Depends(need("prepaid"))]) -> PaymentOut:
        def work(conn: psycopg.Connection) -> PaymentOut:
            account_id, _ = resolve_account(conn, caller.company.id, body.account_code)
            p = top_up(conn, caller.company.id, channel=body.channel, external_id=body.transaction_id,
                       account_id=account_id, amount=body.amount,
                       received_at=body.paid_at or dt.datetime.now(dt.timezone.utc), card_no=body.card_no,
                       meter_serial=body.meter_serial, token=body.token, purchase_no=body.purchase_no,
                       vendor=caller.key.cashier, policy=policy(caller), created_by=caller.key.name)
            return payment_out(conn, p)
        return ctx.run(caller.company.id, work)

    return app
