"""The validation rules: one registry entry per rule, with its defaults.

Each rule has a code (what supervisors see, stored in ``reading_validation.flags`` and
``alert.rule``), a scope, and defaults the TOML configuration may change per deployment:

* ``severity``: info, warning or critical (of the alert it raises);
* ``action`` (reading rules): ``flag`` (keep the reading, note the rule), ``hold`` (keep it
  out of billing until a person reviews it or the next read explains it) or ``reject``;
* ``alert``: whether firing opens (or updates) the supervisor's alert for (meter, rule).

Reading rules are evaluated together, per meter and in time order, by the compiled kernel
(:mod:`meterline.ingest.vee.kernel`), which knows them by their ``bit``; meter, book and tree
rules run over a whole period in :mod:`meterline.ingest.vee.batch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from meterline.ingest.model import MeterStatus

SEVERITIES = ("info", "warning", "critical")
ACTIONS = ("flag", "hold", "reject")
#: kernel action codes (reading state): 0 nothing fired, then by ACTIONS
ACTION_CODE = {"flag": 1, "hold": 2, "reject": 3}
STATE_OF_ACTION = {0: "valid", 1: "flagged", 2: "held", 3: "rejected"}
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    scope: str  # reading, meter, book, tree
    severity: str
    action: str  # for reading rules; 'flag' for the others
    alert: bool
    description: str
    bit: int = -1  # reading rules: bit in the kernel's flag word


RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    if rule.code in RULES:
        raise ValueError(f"rule {rule.code!r} registered twice")
    if rule.scope == "reading" and not 0 <= rule.bit < 63:
        raise ValueError(f"reading rule {rule.code!r} needs a bit in 0..62")
    if rule.scope == "reading" and any(r.bit == rule.bit for r in RULES.values() if r.scope == "reading"):
        raise ValueError(f"rule {rule.code!r}: bit {rule.bit} already taken")
    RULES[rule.code] = rule
    return rule


def _reading(bit: int, code: str, severity: str, action: str, alert: bool, description: str) -> Rule:
    return register(Rule(code, "reading", severity, action, alert, description, bit))


# -- reading rules (evaluated by the kernel; the bit numbers are the kernel's) -----------------
FUTURE_TIMESTAMP = _reading(0, "future_timestamp", "warning", "reject", True,
                            "reading time is later than when it was received (meter clock ahead)")
PAST_TIMESTAMP = _reading(1, "past_timestamp", "warning", "hold", True,
                          "reading time is far in the past (meter clock lost, stale backlog)")
# meter-reported status bits (ingest.model.MeterStatus): data, not code
STATUS_RULES = {
    MeterStatus.LEAK: _reading(2, "status_leak", "warning", "flag", True, "meter reports a leak"),
    MeterStatus.BURST: _reading(3, "status_burst", "critical", "flag", True, "meter reports a burst"),
    MeterStatus.BACKFLOW: _reading(4, "status_backflow", "warning", "flag", True, "meter reports backflow"),
    MeterStatus.TAMPER: _reading(5, "status_tamper", "critical", "hold", True,
                                 "meter reports tampering or magnetic interference"),
    MeterStatus.LOW_BATTERY: _reading(6, "status_low_battery", "info", "flag", True, "meter battery is low"),
    MeterStatus.DRY: _reading(7, "status_dry", "warning", "flag", True, "meter reports an empty pipe (dry)"),
    MeterStatus.HARDWARE_ERROR: _reading(8, "status_hardware_error", "warning", "hold", True,
                                         "meter reports a hardware error"),
}
ROLLOVER = _reading(9, "rollover", "info", "flag", False, "register wrapped at its last digit and started again")
REVERSE_FLOW = _reading(10, "reverse_flow", "warning", "flag", True, "register went back a little: reverse flow")
METER_REPLACED = _reading(11, "meter_replaced", "info", "flag", False,
                          "device replaced since the previous read (install history)")
REGISTER_RESET = _reading(12, "register_reset", "critical", "hold", True,
                          "register went back with no replacement recorded (unrecorded meter change or reset)")
SPIKE = _reading(13, "spike", "warning", "hold", True, "consumption far above the meter's own rolling median")
HIGH_LIMIT = _reading(14, "high_limit", "warning", "hold", True, "consumption above what a meter of this size can pass")
LOW_LIMIT = _reading(15, "low_limit", "info", "flag", True, "daily consumption below the minimum for this meter")
ISOLATED_OUTLIER = _reading(16, "isolated_outlier", "warning", "reject", True,
                            "one read far off, the next back in line: a corrupt telegram or a mis-keyed read")
STUCK = _reading(17, "stuck", "warning", "flag", True, "register has not moved for days on an occupied account")
READING_GAP = _reading(18, "reading_gap", "info", "flag", False, "no reading for days before this one")
NIGHT_FLOW = _reading(19, "night_flow", "warning", "flag", True,
                      "minimum night flow above the threshold several nights running: likely leak")

# -- meter, book and tree rules (period-level, batch) ------------------------------------------
MISSING_READS = register(Rule("missing_reads", "meter", "warning", "flag", True,
                              "no reading for days up to the end of the period"))
ESTIMATED = register(Rule("estimated", "meter", "info", "flag", False,
                          "period-end read estimated (no acceptable real read)"))
ESTIMATION_FAILED = register(Rule("estimation_failed", "meter", "critical", "flag", True,
                                  "no acceptable period-end read and no basis to estimate one: blocks billing"))
READING_RATE = register(Rule("reading_rate", "book", "warning", "flag", True,
                             "share of a book's meters read in the period below target"))
IMBALANCE = register(Rule("master_sub_imbalance", "tree", "warning", "flag", True,
                          "non-revenue water (master minus its sub-meters) above the threshold"))
SUBS_EXCEED_MASTER = register(Rule("subs_exceed_master", "tree", "critical", "flag", True,
                                   "sub-meters together used more than their master meter"))
REREAD_REQUESTED = register(Rule("reread_requested", "meter", "info", "flag", True,
                                 "a supervisor asked for the meter to be read again"))

READING_RULES: tuple[Rule, ...] = tuple(sorted((r for r in RULES.values() if r.scope == "reading"), key=lambda r: r.bit))
#: flag bit -> rule code, for decoding the kernel's flag words
CODE_OF_BIT = {r.bit: r.code for r in READING_RULES}


def codes_of(flags: int) -> list[str]:
    """Rule codes of a kernel flag word, in bit order."""
    return [r.code for r in READING_RULES if flags >> r.bit & 1]


def status_bits() -> tuple[tuple[int, int], ...]:
    """(MeterStatus bit value, rule flag bit) pairs for the kernel."""
    return tuple((int(k), r.bit) for k, r in STATUS_RULES.items())
