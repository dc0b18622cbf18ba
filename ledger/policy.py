"""Ledger policy per company, from TOML: allocation order and late fees (滞纳金).

``config/ledger/policy.toml`` is the default (every key documented there). A file has the
company-independent tables ``[allocation]`` and ``[late_fee]``, and per-company overrides under
``[companies.<company code>.<table>]``; a company gets the defaults with its overrides laid over
them. Unknown keys and bad values are reported all at once (:class:`~meterline.errors.ConfigError`).

Rates are decimal strings, held inside as integer parts per million: ``daily_rate = "0.003"``
(3‰ of the open principal per day) is 3000 ppm; ``cap = "1"`` (at most the bill's principal) is
1,000,000 ppm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, Mapping

from meterline.config.loader import build, read_toml
from meterline.errors import ConfigError

DEFAULT_POLICY_FILE = Path(__file__).resolve().parents[1] / "config" / "ledger" / "policy.toml"


def decimal_ppm(text: str) -> int | None:
    """'0.003' -> 3000; None when the string is no decimal with at most 6 places, >= 0."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    ppm = value * 1_000_000
    if ppm != ppm.to_integral_value():
        return None
    return int(ppm)


@dataclass(frozen=True, slots=True)
class AllocationPolicy:
    #: within each bill, is its late fee paid before or after its principal
    late_fee: Literal["before_principal", "after_principal"] = "before_principal"

    @property
    def late_fee_first(self) -> bool:
        return self.late_fee == "before_principal"


@dataclass(frozen=True, slots=True)
class LateFeePolicy:
    enabled: bool = True
    #: share of the open principal charged per day after the grace period (decimal string)
    daily_rate: str = "0.003"
    #: days after the due date before fees start (the first charged day is due + grace + 1)
    grace_days: int = 0
    #: total late fees of a bill at most this multiple of its principal ("1": the principal);
    #: empty string: no cap
    cap: str = "1"
    #: accruals smaller than this (minor units) wait for a later run rather than being posted
    min_charge: int = 1
    #: how an accrual is rounded to the minor unit
    rounding: Literal["half_up", "down"] = "half_up"

    @property
    def rate_ppm(self) -> int:
        return decimal_ppm(self.daily_rate) or 0

    @property
    def cap_ppm(self) -> int | None:
        return None if self.cap == "" else decimal_ppm(self.cap)

    def validate(self) -> list[str]:
        problems = []
        ppm = decimal_ppm(self.daily_rate)
        if ppm is None:
            problems.append(f"daily_rate {self.daily_rate!r} must be a decimal >= 0 with at most 6 places")
        elif ppm > 100_000:
            problems.append(f"daily_rate {self.daily_rate!r} is more than 10% a day")
        if self.cap != "" and decimal_ppm(self.cap) is None:
            problems.append(f"cap {self.cap!r} must be a decimal >= 0 with at most 6 places, or \"\" for none")
        if not 0 <= self.grace_days <= 366:
            problems.append("grace_days must be between 0 and 366")
        if self.min_charge < 1:
            problems.append("min_charge must be >= 1")
        return problems

    def accrual(self, open_principal: int, days: int) -> int:
        """Exact accrual on ``open_principal`` for ``days`` days, in millionths of a minor unit."""
        if days <= 0 or open_principal <= 0:
            return 0
        return open_principal * self.rate_ppm * days

    def owed(self, accrued: int) -> int:
        """A bill's total accrual rounded to the minor unit (before the cap)."""
        if self.rounding == "half_up":
            return (accrued + 500_000) // 1_000_000
        return accrued // 1_000_000

    def cap_amount(self, principal: int) -> int | None:
        """Most late fees a bill of ``principal`` may carry in total (rounded down), None: no cap."""
        cap = self.cap_ppm
        return None if cap is None else principal * cap // 1_000_000


@dataclass(frozen=True, slots=True)
class LedgerPolicy:
    allocation: AllocationPolicy = field(default_factory=AllocationPolicy)
    late_fee: LateFeePolicy = field(default_factory=LateFeePolicy)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class PolicyBook:
    """Every company's policy from one file."""

    default: LedgerPolicy
    companies: dict[str, LedgerPolicy]
    source: str = "<defaults>"

    def for_company(self, code: str | None) -> LedgerPolicy:
        return self.companies.get(code or "", self.default)


def policy_from_mapping(data: Mapping[str, Any], source: str = "<mapping>") -> PolicyBook:
    data = dict(data)
    overrides = data.pop("companies", {}) or {}
    problems: list[str] = []
    default = None
    try:
        default = build(LedgerPolicy, data, source=source)
    except ConfigError as exc:
        problems.extend(exc.problems)
    companies: dict[str, LedgerPolicy] = {}
    if not isinstance(overrides, Mapping):
        problems.append("companies: expected a table of company codes")
        overrides = {}
    for code, over in overrides.items():
        if not isinstance(over, Mapping):
            problems.append(f"companies.{code}: expected a table")
            continue
        try:
            companies[code] = build(LedgerPolicy, _merge(data, over), source=source)
        except ConfigError as exc:
            problems.extend(f"companies.{code}.{p}" for p in exc.problems)
    if problems or default is None:
        raise ConfigError(problems, source)
    return PolicyBook(default, companies, source)


def load_policy(path: str | Path | None = None) -> PolicyBook:
    """The policy book of ``path`` (default: ``config/ledger/policy.toml``)."""
    file = Path(path) if path else DEFAULT_POLICY_FILE
    data = read_toml(file, "ledger policy file")
    return policy_from_mapping(data, str(file))
