"""``meterline api``: serve the ledger's HTTP API, make API keys, print the OpenAPI document."""

from __future__ import annotations

import argparse
import json
import os

from meterline.cli._base import Command, Context
from meterline.ledger.api.config import new_key


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("serve", help="run the API with uvicorn (settings [api]; keys from ledger.channels_file)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    k = sub.add_parser("key", help="make an API key and print the channels-file entry holding its hash")
    k.add_argument("--name", required=True)
    k.add_argument("--scope", action="append", choices=["query", "bank", "counter", "orders", "prepaid"], required=True)
    k.add_argument("--cashier", default="", help="cashier / bank code / vending point the key acts as")
    sub.add_parser("openapi", help="print the OpenAPI document (JSON)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "key":
        key, digest = new_key()
        company = ctx.company_code or ctx.settings.utility.company
        ctx.console.print(f"API key (give it to the channel, it is not stored): {key}")
        ctx.console.print("add to the channels file:")
        scopes = ", ".join(f'"{s}"' for s in args.scope)
        ctx.console.print(f'[[api_keys]]\nname = "{args.name}"\ncompany = "{company}"\nscopes = [{scopes}]\n'
                          f'cashier = "{args.cashier}"\nkey_sha256 = "{digest}"')
        return 0
    if args.action == "openapi":
        from meterline.ledger.api.app import ApiContext, create_app
        from meterline.ledger.api.config import ChannelsConfig
        from meterline.ledger.policy import PolicyBook, LedgerPolicy

        app = create_app(ApiContext(None, ChannelsConfig(), PolicyBook(LedgerPolicy(), {}), {}, {}, {}))  # type: ignore[arg-type]
        print(json.dumps(app.openapi(), ensure_ascii=False, indent=2))
        return 0
    import uvicorn

    api = ctx.settings.api
    host, port, workers = args.host or api.host, args.port or api.port, args.workers or api.workers
    if ctx.config_path:
        os.environ["METERLINE_CONFIG"] = ctx.config_path
    if ctx.company_code:
        os.environ["METERLINE_COMPANY"] = ctx.company_code
    ctx.console.print(f"serving the ledger API on http://{host}:{port} ({workers} worker(s))")
    uvicorn.run("meterline.ledger.api.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)
    return 0


COMMANDS = [Command("api", "the ledger's HTTP API: serve, keys, OpenAPI", run, configure,
                    permission={"serve": "db.manage", "key": "users.manage", "openapi": "payments.read"}, scope="group")]
