"""The API's web stack without its database: the ceiling of ``bench_ledger.py``'s API figures.

``uvicorn benchmarks._api_ceiling:app`` (started by ``bench_ledger.py --only api``) serves
``POST /v1/bank/payments`` on the ledger API's own stack — FastAPI, uvicorn with the same workers,
the same request and response models (``meterline.ledger.api.app.BankPayIn`` / ``PaymentOut``),
the API key checked by its SHA-256 as ``ChannelsConfig.find_key`` does — and answers at once:
no database, no allocation, no commit. Whatever latency and payments/s it reaches under the same
load are what no API payment on this machine can beat.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import os
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from meterline.ledger.api.app import BankPayIn, PaymentOut

DIGEST = os.environ.get("BENCH_KEY_SHA256", "")
app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
api_key = APIKeyHeader(name="X-API-Key", auto_error=False)
ids = itertools.count(1)


class Refused(Exception):
    pass


app.add_exception_handler(Refused, lambda request, exc: JSONResponse({"error": "unauthorized"}, status_code=401))


async def caller(key: Annotated[str | None, Depends(api_key)] = None) -> str:
    if not key or not hmac.compare_digest(hashlib.sha256(key.encode()).hexdigest(), DIGEST):
        raise Refused()
    return key


@app.post("/v1/bank/payments", response_model=PaymentOut)
async def bank_pay(body: BankPayIn, key: Annotated[str, Depends(caller)]) -> PaymentOut:
    now = dt.datetime.now(dt.timezone.utc)
    return PaymentOut(id=next(ids), channel="bank", transaction_id=body.transaction_id, account_code=body.account_code,
                      amount=body.amount, received_at=body.paid_at or now, booked_on=now.date(), allocated=body.amount,
                      reversed=False, replay=False)
