"""Who may call the HTTP API: API keys per channel, wallet merchants, from a TOML file.

``config/channels.example.toml`` documents the file. API keys are stored as their SHA-256
(``meterline api key`` makes a key and prints the line to add); each key belongs to one company
and has scopes:

=========  ===================================================================================
scope      may
=========  ===================================================================================
query      read an account's balance, bills and payments, a payment by channel and id
bank       bank real-time query and payment (its ``cashier`` is the bank code: ``CASH:bank:<code>``)
counter    take counter payments and void receipts (its ``cashier`` is the cashier)
orders     create WeChat Pay / Alipay orders
prepaid    record IC-card and token top-ups (its ``cashier`` is the vending point)
=========  ===================================================================================

Wallet notifications carry no API key: they are authenticated by the wallet's signature, with
the keys configured per merchant (``[[wechat]]``: ``mchid``, the API v3 key — from the
environment variable named by ``apiv3_key_env`` — and the platform certificate or public key;
``[[alipay]]``: ``app_id`` and Alipay's public key). Paths are relative to the file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from meterline.config.loader import build, read_toml
from meterline.errors import ConfigError

Scope = Literal["query", "bank", "counter", "orders", "prepaid"]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh API key and its SHA-256 (the key is shown once; only the hash is configured)."""
    key = "mlk_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    company: str
    key_sha256: str
    scopes: list[Scope] = field(default_factory=lambda: ["query"])
    cashier: str = ""

    def validate(self) -> list[str]:
        out = []
        if len(self.key_sha256) != 64 or any(c not in "0123456789abcdef" for c in self.key_sha256):
            out.append(f"api key {self.name}: key_sha256 must be 64 lower-case hex digits")
        if any(s in ("bank", "counter", "prepaid") for s in self.scopes) and not self.cashier:
            out.append(f"api key {self.name}: scopes bank, counter and prepaid need a cashier (bank code, cashier, vending point)")
        return out


@dataclass(frozen=True, slots=True)
class WechatConfig:
    mchid: str
    company: str
    apiv3_key_env: str = ""
    apiv3_key: str = ""
    platform_public_key_file: Path | None = None
    platform_public_key: str = ""
    max_skew_s: int = 300

    def secret(self) -> bytes:
        key = os.environ.get(self.apiv3_key_env, "") if self.apiv3_key_env else self.apiv3_key
        return key.encode()

    def validate(self) -> list[str]:
        out = []
        if not (self.apiv3_key_env or self.apiv3_key):
            out.append(f"wechat {self.mchid}: apiv3_key_env (or apiv3_key) is required")
        if not (self.platform_public_key_file or self.platform_public_key):
            out.append(f"wechat {self.mchid}: platform_public_key_file (or platform_public_key) is required")
        return out


@dataclass(frozen=True, slots=True)
class AlipayConfig:
    app_id: str
    company: str
    public_key_file: Path | None = None
    public_key: str = ""

    def validate(self) -> list[str]:
        if not (self.public_key_file or self.public_key):
            return [f"alipay {self.app_id}: public_key_file (or public_key) is required"]
        return []


@dataclass(frozen=True, slots=True)
class ChannelsConfig:
    api_keys: list[ApiKey] = field(default_factory=list)
    wechat: list[WechatConfig] = field(default_factory=list)
    alipay: list[AlipayConfig] = field(default_factory=list)
    #: directory relative paths are resolved against (not a TOML key)
    base_dir: Path = field(default=Path("."), init=False, compare=False)

    def validate(self) -> list[str]:
        out = []
        hashes = [k.key_sha256 for k in self.api_keys]
        if len(hashes) != len(set(hashes)):
            out.append("two api keys have the same key_sha256")
        names = [k.name for k in self.api_keys]
        if len(names) != len(set(names)):
            out.append("api key names must be unique")
        return out

    def find_key(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented)
        found = None
        for key in self.api_keys:
            if hmac.compare_digest(key.key_sha256, digest):
                found = key
        return found

    def read(self, path: Path | None, inline: str) -> str:
        if inline:
            return inline
        assert path is not None
        full = path if path.is_absolute() else self.base_dir / path
        try:
            return full.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read {full}: {exc}"]) from exc


def load_channels(path: str | Path) -> ChannelsConfig:
    path = Path(path)
    data = read_toml(path, "channels file")
    cfg = build(ChannelsConfig, data, source=str(path))
    object.__setattr__(cfg, "base_dir", path.resolve().parent)
    return cfg
