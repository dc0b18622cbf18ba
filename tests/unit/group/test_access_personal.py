"""Roles and permissions as data, separation of duties, personal-data keys and masks, per-company config."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.config.companies import CompanyConfig, merge
from meterline.errors import ConfigError, PermissionDenied, PersonalDataError, SeparationOfDutiesError
from meterline.store import access
from meterline.store.personal import Disclosure, KeyRing, MaskingFilter, generate_key, mask, mask_text

POLICY = access.load_policy()


def actor(*grants: tuple[int | None, str]) -> access.Actor:
    return access.Actor("u", "U", 1, tuple(grants))


def test_default_roles_give_what_the_job_needs() -> None:
    cases = {
        "meter_reader": ("routes.import", "readings.enter"),
        "reading_clerk": ("routes.import",),
        "metering_supervisor": ("readings.review", "alerts.manage", "reports.read"),
        "cashier": ("payments.post", "personal.read", "adjustments.enter"),
        "billing_administrator": ("billing.run", "tariffs.manage", "registry.write"),
        "finance": ("adjustments.approve", "ledger.post", "reports.read", "audit.read"),
        "auditor": ("audit.read", "reports.read", "ledger.read"),
        "group_viewer": ("reports.read", "group.read"),
        "administrator": ("db.manage", "users.manage", "personal.manage"),
    }
    for role, perms in cases.items():
        for perm in perms:
            assert POLICY.roles[role].allows(perm), (role, perm)
    assert not POLICY.roles["cashier"].allows("adjustments.approve")
    assert not POLICY.roles["auditor"].allows("personal.read") and not POLICY.roles["auditor"].allows("payments.post")
    assert not POLICY.roles["group_viewer"].allows("registry.write")
    assert POLICY.roles["auditor"].read_only and POLICY.roles["group_viewer"].read_only


def test_require_names_the_missing_permission_and_who_has_it() -> None:
    cashier = actor((7, "cashier"))
    access.require(POLICY, cashier, "payments.post", 7)
    with pytest.raises(PermissionDenied) as err:
        access.require(POLICY, cashier, "ledger.post", 7, "acme")
    assert err.value.permission == "ledger.post"
    assert "lacks permission 'ledger.post' in company acme" in str(err.value) and "finance" in str(err.value)
    with pytest.raises(PermissionDenied, match="roles there: none"):
        access.require(POLICY, cashier, "payments.post", 8)  # another company
    with pytest.raises(PermissionDenied, match="group-wide"):
        access.require(POLICY, actor((7, "administrator")), "group.read", 7)  # group scope needs a group-wide grant
    access.require(POLICY, actor((None, "group_viewer")), "group.read")
    with pytest.raises(ConfigError, match="not declared"):
        access.require(POLICY, cashier, "payments.psot", 7)  # a typo is an error, not a silent refusal


def test_separation_of_duties() -> None:
    access.check_separation("li", "zhang")
    with pytest.raises(SeparationOfDutiesError, match="li entered this adjustment and may not approve it"):
        access.check_separation("li", "LI ")


def test_roles_file_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "roles.toml"
    bad.write_text('[roles.x]\npermissions = ["ledgr.*"]\ncolour = "red"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        access.load_policy(bad)
    text = str(err.value)
    assert "'ledgr.*' matches no declared permission" in text and "roles.x.colour: unknown key" in text
    good = tmp_path / "good.toml"
    good.write_text('[permissions]\n"meters.swap" = "swap meters"\n[roles.fitter]\npermissions = ["meters.swap"]\n',
                    encoding="utf-8")
    policy = access.load_policy(good)
    assert policy.roles["fitter"].allows("meters.swap") and "cashier" in policy.roles


@given(st.text(min_size=0, max_size=40), st.integers(1, 10**6), st.sampled_from(["phone", "id_number"]))
def test_encryption_round_trips_and_binds_company_and_field(value: str, company: int, field: str) -> None:
    ring = KeyRing.from_text({"a": KEY_A})
    env = ring.encrypt(value, company_id=company, field=field)
    assert env.startswith("ml1:a:") and ring.decrypt(env, company_id=company, field=field) == value
    assert ring.encrypt(value, company_id=company, field=field) == env  # deterministic: re-imports change nothing
    with pytest.raises(PersonalDataError):
        ring.decrypt(env, company_id=company + 1, field=field)
    with pytest.raises(PersonalDataError):
        ring.decrypt(env, company_id=company, field="tax_id")


KEY_A = generate_key()


def test_rotation_keeps_old_values_readable() -> None:
    old = KeyRing.from_text({"a": KEY_A})
    env = old.encrypt("13800000001", company_id=1, field="phone")
    both = KeyRing.from_text({"a": KEY_A, "b": generate_key()}, "b")
    assert both.decrypt(env, company_id=1, field="phone") == "13800000001"
    assert both.encrypt("13800000001", company_id=1, field="phone").startswith("ml1:b:")
    with pytest.raises(PersonalDataError, match="key 'a', which is not configured"):
        KeyRing.from_text({"b": generate_key()}).decrypt(env, company_id=1, field="phone")
    assert both.reveal(env, Disclosure.MASKED, company_id=1, field="phone") == "138****0001"
    assert both.reveal(env, Disclosure.NONE, company_id=1, field="phone") is None


def test_masks() -> None:
    assert mask("13800000001") == "138****0001"
    assert mask("11010119900307123X") == "110***********123X"
    assert mask("12345") == "*****"
    text = "call 13800000001 or id 11010119900307123X; meter 863000000000001, serial WM00000001"
    assert mask_text(text) == "call 138****0001 or id 110***********123X; meter 863000000000001, serial WM00000001"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "customer %s phone %s", ("C1", "13900000003"), None)
    assert MaskingFilter().filter(record) and record.getMessage() == "customer C1 phone 139****0003"


def test_company_config_overrides_defaults(tmp_path: Path) -> None:
    defaults, companies = tmp_path / "config", tmp_path / "companies"
    (defaults).mkdir()
    (companies / "acme").mkdir(parents=True)
    (companies / "beta").mkdir(parents=True)
    (defaults / "late_fees.toml").write_text('rate_per_day = 5\n[grace]\ndays = 10\nholidays = true\n', encoding="utf-8")
    (companies / "acme" / "late_fees.toml").write_text('[grace]\ndays = 15\n', encoding="utf-8")
    (companies / "beta" / "late_fees.toml").write_text('replace = true\nrate_per_day = 3\n', encoding="utf-8")
    cfg = CompanyConfig(defaults, companies)
    assert cfg.load("acme", "late_fees.toml") == {"rate_per_day": 5, "grace": {"days": 15, "holidays": True}}
    assert cfg.load("beta", "late_fees.toml") == {"rate_per_day": 3}
    assert cfg.load("gamma", "late_fees.toml") == {"rate_per_day": 5, "grace": {"days": 10, "holidays": True}}
    assert cfg.path("acme", "late_fees.toml") == companies / "acme" / "late_fees.toml"
    assert cfg.path("gamma", "late_fees.toml") == defaults / "late_fees.toml"
    assert cfg.companies_with("late_fees.toml") == ["acme", "beta"]
    with pytest.raises(ConfigError):
        cfg.path("acme", "../secrets.toml")
    assert merge({"a": [1], "b": {"c": 1}}, {"a": [2], "b": {"d": 2}}) == {"a": [2], "b": {"c": 1, "d": 2}}
