"""meterline's typed settings: TOML file + environment, validated when built.

Where settings come from, later overriding earlier:

1. defaults in these dataclasses;
2. a TOML file: ``--config PATH``, else ``$METERLINE_CONFIG``, else ``./meterline.toml`` if it
   exists (``config/meterline.example.toml`` documents every key);
3. environment: ``METERLINE_DSN`` (the database), ``METERLINE_COMPANY`` (the company code
   commands act for) and, generically, ``METERLINE__SECTION__KEY=value``.

Unknown keys are rejected with their dotted path and every problem is reported at once
(:class:`meterline.errors.ConfigError`). Each section is a frozen dataclass; a module that
needs settings of its own adds a section here.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterline.config.loader import apply_env_overrides, build
from meterline.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """Where the database is. With no ``dsn`` meterline runs its embedded PostgreSQL."""

    dsn: str | None = None
    #: data directory of the embedded server; default: the user's data dir / meterline / pgdata
    embedded_data_dir: Path | None = None
    #: database created and used on the embedded server
    embedded_database: str = "meterline"
    pool_min_size: int = 1
    pool_max_size: int = 8
    connect_timeout_s: float = 10.0
    #: try ``CREATE EXTENSION timescaledb`` on migrate; off forces the plain-PostgreSQL path
    timescaledb: bool = True
    #: months of reading partitions ``db maintain`` keeps created ahead of today (plain path)
    partitions_ahead_months: int = 3
    #: months of partitions created behind today on first migrate (for history loads)
    partitions_behind_months: int = 24

    def validate(self) -> list[str]:
        problems = []
        if self.pool_min_size < 0 or self.pool_max_size < 1 or self.pool_min_size > self.pool_max_size:
            problems.append("pool sizes must satisfy 0 <= pool_min_size <= pool_max_size, pool_max_size >= 1")
        if self.connect_timeout_s <= 0:
            problems.append("connect_timeout_s must be positive")
        if not 0 <= self.partitions_ahead_months <= 120:
            problems.append("partitions_ahead_months must be between 0 and 120")
        if not 0 <= self.partitions_behind_months <= 600:
            problems.append("partitions_behind_months must be between 0 and 600")
        return problems


@dataclass(frozen=True, slots=True)
class UtilitySettings:
    """The company commands act for, and its local conventions."""

    #: company code (``company.code``) that CLI commands act for
    company: str = "demo"
    #: IANA zone where billing periods and business days are cut
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    #: minor units per major unit (fen per yuan)
    minor_units: int = 100

    def validate(self) -> list[str]:
        problems = []
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone {self.timezone!r} is not an IANA time zone")
        if self.minor_units not in (1, 10, 100, 1000):
            problems.append("minor_units must be 1, 10, 100 or 1000")
        if not self.company:
            problems.append("company must not be empty")
        return problems


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """The batching reading writer (``ingest.writer``)."""

    #: readings per COPY batch
    batch_size: int = 20_000
    #: a partly filled batch is flushed after this long
    max_delay_ms: int = 50
    #: parallel writer connections (each COPYs and inserts its own batches)
    connections: int = 2
    #: readings waiting in the queue before submitters are made to wait (back-pressure)
    queue_max: int = 500_000
    #: readings stamped further in the future than this are dead letters
    future_tolerance_s: int = 300

    def validate(self) -> list[str]:
        problems = []
        if self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        if self.max_delay_ms < 0:
            problems.append("max_delay_ms must be >= 0")
        if not 1 <= self.connections <= 64:
            problems.append("connections must be between 1 and 64")
        if self.queue_max < self.batch_size:
            problems.append("queue_max must be >= batch_size")
        if self.future_tolerance_s < 0:
            problems.append("future_tolerance_s must be >= 0")
        return problems


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """The ledger (``ledger/``): policy, bank formats and files, API channels."""

    #: allocation and late-fee policy (TOML); default: config/ledger/policy.toml
    policy_file: Path | None = None
    #: directory of bank withholding formats (*.toml); default: config/banks
    banks_dir: Path | None = None
    #: where ``meterline bank out`` writes out-files
    bank_out_dir: Path = Path("out/bank")
    #: API keys and wallet merchants (TOML, see config/channels.example.toml); needed by ``api serve``
    channels_file: Path | None = None

    def validate(self) -> list[str]:
        problems = []
        for name in ("policy_file", "channels_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{name} {path} is not a file")
        if self.banks_dir is not None and not Path(self.banks_dir).is_dir():
            problems.append(f"banks_dir {self.banks_dir} is not a directory")
        return problems


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The HTTP API server (``meterline api serve``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: server processes (each with its own connection pool)
    workers: int = 1
    #: database connections per process
    pool_max_size: int = 16
    #: handler threads per process (requests waiting for the database beyond this queue)
    threads: int = 64

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.port <= 65535:
            problems.append("port must be between 1 and 65535")
        if not 1 <= self.workers <= 64:
            problems.append("workers must be between 1 and 64")
        if not 1 <= self.pool_max_size <= 512:
            problems.append("pool_max_size must be between 1 and 512")
        if not 1 <= self.threads <= 1024:
            problems.append("threads must be between 1 and 1024")
        return problems


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    utility: UtilitySettings = field(default_factory=UtilitySettings)
    writer: WriterSettings = field(default_factory=WriterSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    #: the file these settings were read from, if any (not a TOML key)
    source: Path | None = field(default=None, init=False, compare=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.utility.timezone)


def find_config_file(explicit: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit).expanduser()
    if env.get("METERLINE_CONFIG"):
        return Path(env["METERLINE_CONFIG"]).expanduser()
    local = Path.cwd() / "meterline.toml"
    return local if local.is_file() else None


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load, overlay the environment, validate and return the settings."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError([f"config file not found: {file}"], str(file)) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"not valid TOML: {exc}"], str(file)) from exc
    data = apply_env_overrides(data, env)
    if env.get("METERLINE_DSN"):
        data.setdefault("database", {})["dsn"] = env["METERLINE_DSN"]
    if env.get("METERLINE_COMPANY"):
        data.setdefault("utility", {})["company"] = env["METERLINE_COMPANY"]
    settings = build(Settings, data, source=str(file) if file else "environment")
    object.__setattr__(settings, "source", file)
    return settings


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    """Build settings from an in-memory mapping (tests, embedding)."""
    return build(Settings, dict(data), source="<mapping>")
