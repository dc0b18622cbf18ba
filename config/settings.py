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

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterline.config.loader import apply_env_overrides, build, read_toml

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
    #: on TimescaleDB, compress readings after 60 days (TimescaleDB then cannot row-secure
    #: `reading`; see store/timescale.py); false keeps readings row-secured and uncompressed
    compress_readings: bool = True
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
class SecuritySettings:
    """Company isolation, staff roles and personal data (``store.access``, ``store.personal``)."""

    #: database role application connections switch to (SET ROLE; row-level security applies
    #: to it); "" keeps the DSN's login role (then nothing is isolated: only for maintenance)
    app_role: str = "meterline_app"
    #: TOML file of roles that adds to / overrides ``config/roles.toml``
    roles_file: Path | None = None
    #: personal-data keys: key id -> base64 of 64 random bytes (AES-256-SIV); several keys
    #: while rotating, old ones kept until `meterline personal reencrypt` has run
    data_keys: dict[str, str] = field(default_factory=dict)
    #: key id new values are encrypted with (default: the last key listed)
    current_key: str = ""
    #: with no data_keys: file holding a key generated on first use (default: the user's data
    #: directory / meterline / data-keys.toml); fine for the embedded default, not for production
    key_file: Path | None = None
    #: personal data in exports for outside parties (printers, banks, regulators)
    outside_personal_data: Literal["none", "masked", "full"] = "none"

    def validate(self) -> list[str]:
        problems = []
        if self.app_role and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.app_role):
            problems.append(f"app_role {self.app_role!r} is not a plain lower-case role name")
        for kid, text in self.data_keys.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", kid):
                problems.append(f"data_keys: key id {kid!r} must be 1-32 letters, digits, _ or -")
            try:
                if len(base64.b64decode(text, validate=True)) != 64:
                    problems.append(f"data_keys.{kid}: must be base64 of 64 bytes")
            except (binascii.Error, ValueError):
                problems.append(f"data_keys.{kid}: not base64")
        if self.current_key and self.current_key not in self.data_keys:
            problems.append(f"current_key {self.current_key!r} is not one of data_keys")
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
class VeeSettings:
    """Validation, estimation and editing of readings (``ingest.vee``)."""

    #: the VEE rule file (rule groups, thresholds by use type and meter size); default: the
    #: ``config/vee.toml`` shipped with meterline. A relative path is taken from the settings file's folder.
    rules_file: Path | None = None
    #: meters per chunk of a batch run (``meterline vee run``)
    chunk_meters: int = 50_000
    #: connections loading chunks while the previous one is evaluated
    loaders: int = 2
    #: readings the ingest hook may hold waiting; beyond, batches are left to the batch run (logged, counted)
    hook_queue_max: int = 1_000_000
    #: readings the ingest hook evaluates in one go at most
    hook_batch_max: int = 100_000

    def validate(self) -> list[str]:
        problems = []
        if self.chunk_meters < 1:
            problems.append("chunk_meters must be >= 1")
        if not 1 <= self.loaders <= 16:
            problems.append("loaders must be between 1 and 16")
        if self.hook_queue_max < 1 or self.hook_batch_max < 1:
            problems.append("hook_queue_max and hook_batch_max must be >= 1")
        return problems


@dataclass(frozen=True, slots=True)
class BillingSettings:
    """The billing run (``rating.run``, ``meterline bill run``)."""

    #: a bill is due this many days after its period's last day
    due_days: int = 15
    #: apportionment policy of a master meter whose ``apportion_policy`` is not set
    default_apportion_policy: Literal["master_account", "by_consumption", "equal", "by_area"] = "by_consumption"
    #: the closing read is the effective read nearest the period boundary within this many days
    #: before it ... (walk-by books are read some days before the end of the month)
    closing_before_days: float = 10.0
    #: ... or this many days after it
    closing_after_days: float = 5.0
    #: months a billing period spans, per cycle code (a cycle not listed: 1)
    cycle_months: dict[str, int] = field(default_factory=lambda: {"M": 1, "B": 2})
    #: accounts rated and written per shard (whole meter books; bounds the run's memory)
    shard_accounts: int = 250_000
    #: PostgreSQL work_mem inside a run's transaction (sorting and joining the period's reads)
    work_mem: str = "256MB"
    #: a run of several shards bills this many shards at once, each on its own connection and
    #: committed on its own (an interrupted run is completed by running it again); 1: the whole
    #: run in one transaction
    workers: int = 2

    def validate(self) -> list[str]:
        problems = []
        if not 0 <= self.due_days <= 365:
            problems.append("due_days must be between 0 and 365")
        if self.closing_before_days < 0 or self.closing_after_days < 0:
            problems.append("closing_before_days and closing_after_days must be >= 0")
        for cycle, months in self.cycle_months.items():
            if not isinstance(months, int) or not 1 <= months <= 12:
                problems.append(f"cycle_months.{cycle} must be a whole number of months between 1 and 12")
        if self.shard_accounts < 1:
            problems.append("shard_accounts must be >= 1")
        if not 1 <= self.workers <= 32:
            problems.append("workers must be between 1 and 32")
        if not re.fullmatch(r"[1-9][0-9]*(kB|MB|GB)", self.work_mem):
            problems.append(f"work_mem {self.work_mem!r}: expected a size such as 256MB")
        return problems


@dataclass(frozen=True, slots=True)
class RatingSettings:
    """Rating (``rating/``): where the tariffs are."""

    #: directory of tariff files (*.toml, see README "Tariffs and quotes"); default: the
    #: ``config/tariffs`` shipped with meterline. A relative path is taken from the settings file's folder.
    tariff_dir: Path | None = None

    def validate(self) -> list[str]:
        problems = []
        if self.tariff_dir is not None and Path(self.tariff_dir).is_absolute() and not Path(self.tariff_dir).is_dir():
            problems.append(f"tariff_dir {self.tariff_dir} is not a directory")
        return problems


@dataclass(frozen=True, slots=True)
class CompaniesSettings:
    """Per-company configuration (``config.companies``): ``<dir>/<company code>/...``."""

    #: directory with one folder per company code whose files override the defaults in
    #: ``config/`` (default: ``config/companies`` beside the package)
    dir: Path | None = None


@dataclass(frozen=True, slots=True)
class WMBusSettings:
    """Wireless M-Bus: the AES-128 key of each meter that encrypts (security mode 5)."""

    #: meter id (the 8 digits of the telegram's address) → key as 32 hex digits
    keys: dict[str, str] = field(default_factory=dict)

    def validate(self) -> list[str]:
        problems = []
        for meter, key in self.keys.items():
            if len(meter) != 8 or not all(c in "0123456789abcdefABCDEF" for c in meter):
                problems.append(f"keys: meter id {meter!r} is not the 8 digits of a wM-Bus address")
            if len(key) != 32 or not all(c in "0123456789abcdefABCDEF" for c in key):
                problems.append(f"keys.{meter}: an AES-128 key is 32 hex digits")
        return problems

    def key_bytes(self) -> dict[str, bytes]:
        return {meter.upper(): bytes.fromhex(key) for meter, key in self.keys.items()}


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """The ingest service (``meterline ingest run``) and the sources it starts.

    Each ``[ingest.sources.<name>]`` table names its ``kind`` (``mqtt``, ``coap``, ``mbus``,
    ``modbus``, ...); the rest of the table is that source's own settings, checked by the source
    when the service starts (unknown keys are errors there too).
    """

    #: address of the Prometheus ``/metrics`` endpoint; port 0 turns it off
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9464
    #: on SIGTERM: seconds to let sources drain and the writer commit before giving up
    shutdown_timeout_s: float = 30.0
    #: sources by name
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> list[str]:
        problems = []
        if not 0 <= self.metrics_port <= 65535:
            problems.append("metrics_port must be between 0 and 65535")
        if self.shutdown_timeout_s <= 0:
            problems.append("shutdown_timeout_s must be positive")
        for name, table in self.sources.items():
            kind = table.get("kind")
            if not isinstance(kind, str) or not kind.isidentifier():
                problems.append(f"sources.{name}.kind: required, the source's kind (mqtt, coap, ...), got {kind!r}")
        return problems


@dataclass(frozen=True, slots=True)
class AlertSinkSettings:
    """Where alert events go (``exporters.alert_sinks``); a sink without its address is off."""

    #: MQTT broker for alert events; topic = mqtt_topic/<company>/<book or '-'>/<rule>
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    mqtt_topic: str = "meterline/alerts"
    mqtt_qos: int = 1
    #: HTTP webhook: POST JSON, header X-Meterline-Signature: sha256=<HMAC-SHA256 of timestamp.body>
    webhook_url: str | None = None
    #: environment variable holding the webhook's shared secret (never the secret itself in TOML)
    webhook_secret_env: str = "METERLINE_ALERT_WEBHOOK_SECRET"
    timeout_s: float = 5.0
    #: delivery attempts per event and sink, with exponential backoff between them
    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    #: how often the dispatcher looks for undelivered events
    poll_s: float = 2.0

    def validate(self) -> list[str]:
        problems = []
        if self.mqtt_qos not in (0, 1, 2):
            problems.append("mqtt_qos must be 0, 1 or 2")
        if not 1 <= self.mqtt_port <= 65535:
            problems.append("mqtt_port must be a TCP port")
        if self.webhook_url is not None and not self.webhook_url.startswith(("http://", "https://")):
            problems.append("webhook_url must be an http:// or https:// URL")
        if self.retries < 1 or self.backoff_s < 0 or self.backoff_max_s < self.backoff_s or self.timeout_s <= 0:
            problems.append("retries >= 1, 0 <= backoff_s <= backoff_max_s and timeout_s > 0 are required")
        if self.poll_s <= 0:
            problems.append("poll_s must be positive")
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
    #: bank payments arriving together recorded by one statement in one transaction per batch
    #: (group commit, meterline.ledger.api.batcher); false: a transaction per payment
    batch_payments: bool = True

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
    security: SecuritySettings = field(default_factory=SecuritySettings)
    companies: CompaniesSettings = field(default_factory=CompaniesSettings)
    wmbus: WMBusSettings = field(default_factory=WMBusSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    vee: VeeSettings = field(default_factory=VeeSettings)
    billing: BillingSettings = field(default_factory=BillingSettings)
    alerts: AlertSinkSettings = field(default_factory=AlertSinkSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    rating: RatingSettings = field(default_factory=RatingSettings)
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
        data = read_toml(file, "config file")
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
