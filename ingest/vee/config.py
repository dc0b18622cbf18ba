"""The VEE rule file (``config/vee.toml``): rule groups, thresholds, estimation, alerts.

The file is read with the same strict loader as the settings (unknown keys rejected with their
path, every problem reported at once). Its parts:

* ``[defaults]``: every threshold (:class:`Params`);
* ``[groups.remote|handheld|manual]``: the reading rules each source group runs
  (``ingest.model.Source.group``; estimates are never validated);
* ``[[overrides]]``: thresholds for a ``group``, ``use_type`` and/or meter ``size``; the more
  selectors an override has, the later it applies (file order among equals);
* ``[rules.<code>]``: severity, action and alert of a rule (defaults in :mod:`.rules`);
* ``[estimation]``, ``[reading_rate]``, ``[imbalance]``: period-level settings.

Quantities are in the quantity's base unit (litres for water and gas volume, Wh for energy).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import numpy as np

from meterline.config.loader import build, read_toml
from meterline.ingest.vee import rules as R

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "config" / "vee.toml"
GROUPS = ("remote", "handheld", "manual")
GROUP_CODE = {g: i for i, g in enumerate(GROUPS)}


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds of the reading rules, for one (source group, use type, meter size)."""

    #: reading time later than its receipt by more than this: future_timestamp
    future_tolerance_s: float = 300.0
    #: reading time earlier than its receipt by more than this: past_timestamp
    max_age_days: float = 400.0
    #: spike: consumption above spike_factor × the meter's rolling median daily use (× days, at least 1)
    spike_factor: float = 5.0
    #: never a spike below this consumption (base units)
    spike_min: float = 500.0
    #: days of history the rolling median needs before the spike rule applies
    history_min_days: int = 5
    #: high limit: most a meter of this size can pass per day (base units; 0: no limit)
    max_per_day: float = 0.0
    #: low limit: daily use below this over a day or more is flagged (0: no limit)
    min_per_day: float = 0.0
    #: a register going back by at most this (register units) is reverse flow, more is a reset
    reverse_max: int = 200
    #: a rollover may span at most this share of the register
    rollover_window: float = 0.1
    #: stuck: no register advance for this many days on an active account
    stuck_days: float = 7.0
    #: reading_gap: this many days without a reading before the current one
    gap_days: float = 3.0
    #: missing_reads: no reading in the last this-many days of the period
    missing_days: float = 3.0
    #: a real read this close before / after the period end is the period-end read (else: estimate)
    period_end_before_days: float = 3.0
    period_end_after_days: float = 1.0
    #: night-flow leak: local night hours [start, end), intervals up to this long
    night_start_hour: int = 1
    night_end_hour: int = 5
    night_max_interval_h: float = 2.0
    #: intervals a night needs before its minimum counts
    night_min_intervals: int = 2
    #: minimum night flow (base units per hour) above which a night counts as leaking
    night_threshold_per_h: float = 10.0
    #: consecutive leaking nights that raise night_flow
    night_nights: int = 3

    def validate(self) -> list[str]:
        p = []
        if self.spike_factor <= 1:
            p.append("spike_factor must be > 1")
        for name in ("future_tolerance_s", "max_age_days", "spike_min", "max_per_day", "min_per_day",
                     "stuck_days", "gap_days", "missing_days", "period_end_before_days", "period_end_after_days",
                     "night_threshold_per_h"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0")
        if self.reverse_max < 0:
            p.append("reverse_max must be >= 0")
        if not 0 < self.rollover_window < 1:
            p.append("rollover_window must be between 0 and 1")
        if not 0 <= self.night_start_hour < self.night_end_hour <= 24:
            p.append("night hours must satisfy 0 <= night_start_hour < night_end_hour <= 24")
        if self.night_nights < 1 or self.night_min_intervals < 1 or self.history_min_days < 1:
            p.append("night_nights, night_min_intervals and history_min_days must be >= 1")
        if self.max_per_day and self.min_per_day > self.max_per_day:
            p.append("min_per_day must not exceed max_per_day")
        return p


PARAM_NAMES = tuple(f.name for f in dataclasses.fields(Params))
P_INDEX = {name: i for i, name in enumerate(PARAM_NAMES)}

# an override: optional selectors plus any of the thresholds
_TYPES = {"float": float, "int": int, float: float, int: int}
Override = dataclasses.make_dataclass(
    "Override",
    [("group", Optional[Literal["remote", "handheld", "manual"]], None),
     ("use_type", Optional[str], None),
     ("size", Optional[str], None)]
    + [(f.name, Optional[_TYPES[f.type]], None) for f in dataclasses.fields(Params)],
    frozen=True,
    slots=True,
)
Override.__doc__ = "Thresholds for the readings of a source group, use type and/or meter size."
Override.__module__ = __name__


@dataclass(frozen=True, slots=True)
class GroupRules:
    """The reading and meter rules a source group runs."""

    rules: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RuleSetting:
    severity: Literal["info", "warning", "critical"] | None = None
    action: Literal["flag", "hold", "reject"] | None = None
    alert: bool | None = None


@dataclass(frozen=True, slots=True)
class EstimationSettings:
    #: methods tried in order: interpolation, same_period_last_year, average_last_periods
    methods: list[str] = field(default_factory=lambda: ["interpolation", "same_period_last_year", "average_last_periods"])
    #: interpolation: the read after the period end may be at most this many days later
    bracket_max_days: float = 35.0
    #: average_last_periods: how many periods (months) back
    average_periods: int = 3
    #: history-based methods: how far from the wanted instant a basis read may be
    basis_window_days: float = 7.0

    def validate(self) -> list[str]:
        known = {"interpolation", "same_period_last_year", "average_last_periods"}
        p = [f"unknown estimation method {m!r} (known: {', '.join(sorted(known))})" for m in self.methods if m not in known]
        if self.average_periods < 1:
            p.append("average_periods must be >= 1")
        if self.bracket_max_days <= 0 or self.basis_window_days <= 0:
            p.append("bracket_max_days and basis_window_days must be > 0")
        return p


@dataclass(frozen=True, slots=True)
class ReadingRateSettings:
    #: a book whose share of meters with a real period-end read is below this raises reading_rate
    target_pct: float = 98.0
    #: books with fewer active meters are not judged
    min_meters: int = 10

    def validate(self) -> list[str]:
        return [] if 0 <= self.target_pct <= 100 else ["target_pct must be between 0 and 100"]


@dataclass(frozen=True, slots=True)
class ImbalanceSettings:
    #: non-revenue water (master − Σ direct subs) / master above this raises master_sub_imbalance
    nrw_threshold_pct: float = 25.0
    #: masters that used less than this in the period (base units) are not judged
    min_master_consumption: int = 1000
    #: subs may exceed the master by this share before subs_exceed_master (meter tolerance)
    subs_tolerance_pct: float = 2.0

    def validate(self) -> list[str]:
        return [] if self.nrw_threshold_pct > 0 and self.subs_tolerance_pct >= 0 else [
            "nrw_threshold_pct must be > 0 and subs_tolerance_pct >= 0"]


@dataclass(frozen=True, slots=True)
class VeeConfig:
    #: days of history before a period the batch run reads (rolling median, pending reads)
    history_days: int = 14
    defaults: Params = field(default_factory=Params)
    groups: dict[str, GroupRules] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)  # type: ignore[valid-type]
    rules: dict[str, RuleSetting] = field(default_factory=dict)
    estimation: EstimationSettings = field(default_factory=EstimationSettings)
    reading_rate: ReadingRateSettings = field(default_factory=ReadingRateSettings)
    imbalance: ImbalanceSettings = field(default_factory=ImbalanceSettings)

    def validate(self) -> list[str]:
        p = []
        if not 1 <= self.history_days <= 32:
            p.append("history_days must be between 1 and 32")
        for g, gr in self.groups.items():
            if g not in GROUPS:
                p.append(f"groups.{g}: unknown source group (known: {', '.join(GROUPS)})")
            for code in gr.rules:
                if code not in R.RULES:
                    p.append(f"groups.{g}.rules: unknown rule {code!r}")
        for code in self.rules:
            if code not in R.RULES:
                p.append(f"rules.{code}: unknown rule")
        for code, s in self.rules.items():
            if code in R.RULES and R.RULES[code].scope != "reading" and s.action not in (None, "flag"):
                p.append(f"rules.{code}: only reading rules take an action")
        for i, o in enumerate(self.overrides):
            merged = dataclasses.replace(self.defaults, **{k: getattr(o, k) for k in PARAM_NAMES if getattr(o, k) is not None})
            p.extend(f"overrides[{i}]: {q}" for q in merged.validate())
        return p

    # -- resolved views ----------------------------------------------------------------
    def rule(self, code: str) -> R.Rule:
        """The rule with this deployment's severity, action and alert."""
        base = R.RULES[code]
        s = self.rules.get(code)
        if s is None:
            return base
        return dataclasses.replace(base, severity=s.severity or base.severity, action=s.action or base.action,
                                   alert=base.alert if s.alert is None else s.alert)

    def enabled(self, group: str) -> set[str]:
        """Rule codes the source group runs (every rule when the group is not configured)."""
        gr = self.groups.get(group)
        return set(R.RULES) if gr is None else set(gr.rules)

    def params(self, group: str, use_type: str | None, size: str | None) -> Params:
        """Thresholds for one source group, use type and meter size."""
        chosen = []
        for i, o in enumerate(self.overrides):
            sel = (o.group, o.use_type, o.size)
            if (o.group is None or o.group == group) and (o.use_type is None or o.use_type == use_type) \
                    and (o.size is None or o.size == size):
                chosen.append((sum(s is not None for s in sel), i, o))
        p = self.defaults
        for _n, _i, o in sorted(chosen, key=lambda t: (t[0], t[1])):
            p = dataclasses.replace(p, **{k: getattr(o, k) for k in PARAM_NAMES if getattr(o, k) is not None})
        return p

    def param_table(self, combos: list[tuple[str | None, str | None]]) -> tuple[np.ndarray, np.ndarray]:
        """Kernel tables for (use type, size) combos × source groups.

        Returns ``(params, enabled)``: float64 ``[len(combos) × 3, len(PARAM_NAMES)]`` and the
        int64 bit mask of enabled reading rules per row; row ``combo * 3 + group``.
        """
        n = len(combos) * len(GROUPS)
        table = np.zeros((n, len(PARAM_NAMES)), dtype=np.float64)
        enabled = np.zeros(n, dtype=np.int64)
        masks = {}
        for g in GROUPS:
            codes = self.enabled(g)
            masks[g] = sum(1 << r.bit for r in R.READING_RULES if r.code in codes)
        for c, (use_type, size) in enumerate(combos):
            for g in GROUPS:
                row = c * len(GROUPS) + GROUP_CODE[g]
                p = self.params(g, use_type, size)
                table[row] = [float(getattr(p, k)) for k in PARAM_NAMES]
                enabled[row] = masks[g]
        return table, enabled

    def actions(self) -> np.ndarray:
        """Kernel action code per flag bit (0 where no reading rule has the bit)."""
        out = np.zeros(64, dtype=np.int8)
        for r in R.READING_RULES:
            out[r.bit] = R.ACTION_CODE[self.rule(r.code).action]
        return out


def parse_config(data: Mapping[str, Any], source: str = "<mapping>") -> VeeConfig:
    return build(VeeConfig, dict(data), source=source)


def load_config(path: str | Path | None = None) -> VeeConfig:
    """Read and validate a VEE rule file (default: the ``config/vee.toml`` shipped with meterline)."""
    file = Path(path).expanduser() if path else DEFAULT_FILE
    data = read_toml(file, "VEE rule file")
    return parse_config(data, str(file))


def config_for(settings: Any) -> VeeConfig:
    """The rule file named by ``settings.vee.rules_file`` (relative to the settings file), else the default."""
    path = settings.vee.rules_file
    if path is not None and not Path(path).is_absolute() and settings.source is not None:
        path = Path(settings.source).parent / path
    return load_config(path)
