"""The VEE rule file: strict loading, every problem at once, thresholds by group, use type and size."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterline.config.settings import settings_from_mapping
from meterline.errors import ConfigError
from meterline.ingest.vee import rules as R
from meterline.ingest.vee.config import DEFAULT_FILE, config_for, load_config, parse_config


def test_shipped_rule_file_is_valid_and_covers_every_group() -> None:
    c = load_config()
    assert set(c.groups) == {"remote", "handheld", "manual"}
    assert "night_flow" in c.enabled("remote") and "night_flow" not in c.enabled("handheld")
    assert "status_leak" not in c.enabled("manual")


def test_thresholds_by_size_use_type_and_group() -> None:
    c = load_config()
    assert c.params("remote", "residential", "DN15").max_per_day == 75_000
    assert c.params("remote", "residential", "DN100").min_per_day == 1_000
    nr = c.params("handheld", "non_residential", "DN25")
    assert (nr.spike_factor, nr.missing_days, nr.max_per_day) == (8.0, 40.0, 189_000)
    assert c.params("remote", None, None).max_per_day == 0  # no size, no limit


def test_more_specific_overrides_apply_last() -> None:
    c = parse_config({"overrides": [{"use_type": "x", "size": "DN15", "spike_factor": 9.0},
                                    {"size": "DN15", "spike_factor": 7.0},
                                    {"spike_factor": 6.0}]})
    assert c.params("remote", "x", "DN15").spike_factor == 9.0
    assert c.params("remote", "y", "DN15").spike_factor == 7.0
    assert c.params("remote", "y", "DN20").spike_factor == 6.0


def test_every_problem_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"groups": {"remote": {"rules": ["spike", "no_such_rule"]}, "drones": {"rules": []}},
                      "rules": {"spike": {"action": "explode"}, "unknown": {}},
                      "overrides": [{"size": "DN15", "rollover_window": 2.0, "colour": "red"}]})
    text = str(exc.value)
    assert "rules.spike.action: 'explode' is not one of" in text
    assert "overrides[0].colour: unknown key" in text


def test_semantic_problems_are_all_reported() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"groups": {"remote": {"rules": ["spike", "no_such_rule"]}, "drones": {"rules": []}},
                      "rules": {"unknown": {}, "missing_reads": {"action": "hold"}},
                      "overrides": [{"size": "DN15", "rollover_window": 2.0}]})
    problems = exc.value.problems
    assert any("groups.remote.rules: unknown rule 'no_such_rule'" in p for p in problems)
    assert any("groups.drones: unknown source group" in p for p in problems)
    assert any("rules.unknown: unknown rule" in p for p in problems)
    assert any("rules.missing_reads: only reading rules take an action" in p for p in problems)
    assert any("overrides[0]: rollover_window must be between 0 and 1" in p for p in problems)


def test_rule_settings_change_severity_action_and_alert() -> None:
    c = parse_config({"rules": {"reverse_flow": {"severity": "critical", "action": "hold", "alert": False}}})
    r = c.rule("reverse_flow")
    assert (r.severity, r.action, r.alert) == ("critical", "hold", False)
    assert c.actions()[R.REVERSE_FLOW.bit] == 2


def test_rules_file_from_settings_is_relative_to_the_settings_file(tmp_path: Path) -> None:
    (tmp_path / "vee.toml").write_text(DEFAULT_FILE.read_text(encoding="utf-8").replace(
        "history_days = 14", "history_days = 21"), encoding="utf-8")
    s = settings_from_mapping({"vee": {"rules_file": "vee.toml"}})
    object.__setattr__(s, "source", tmp_path / "meterline.toml")
    assert config_for(s).history_days == 21
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_rule_bits_are_unique_and_registered_once() -> None:
    bits = [r.bit for r in R.READING_RULES]
    assert len(bits) == len(set(bits))
    with pytest.raises(ValueError):
        R.register(R.Rule("spike", "reading", "info", "flag", False, "again", 40))
    assert R.codes_of((1 << R.SPIKE.bit) | (1 << R.ROLLOVER.bit)) == ["rollover", "spike"]
