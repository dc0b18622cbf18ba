"""Run the API: an app factory from settings (used by ``meterline api serve`` and by uvicorn
workers, which each build their own pool)."""

from __future__ import annotations

import contextlib
import os
from typing import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI

from meterline.config.settings import Settings, load_settings
from meterline.errors import ConfigError
from meterline.ledger.api.app import build_context, create_app
from meterline.ledger.api.config import load_channels
from meterline.ledger.policy import load_policy
from meterline.store.db import open_database


def app_from_settings(settings: Settings) -> FastAPI:
    if settings.ledger.channels_file is None:
        raise ConfigError(["ledger.channels_file is required to serve the API (API keys and wallet merchants)"])
    channels = load_channels(settings.ledger.channels_file)
    policies = load_policy(settings.ledger.policy_file)
    db = open_database(settings, min_size=1, max_size=settings.api.pool_max_size)
    try:
        ctx = build_context(db, channels, policies)
    except Exception:
        db.close()
        raise
    app = create_app(ctx, batch_payments=settings.api.batch_payments)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api.threads
        try:
            yield
        finally:
            db.close()

    app.router.lifespan_context = lifespan
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: settings from $METERLINE_CONFIG and the environment."""
    return app_from_settings(load_settings(os.environ.get("METERLINE_CONFIG")))
