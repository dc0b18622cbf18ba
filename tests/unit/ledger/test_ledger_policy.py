"""Ledger policy TOML: defaults, per-company overrides, every problem at once; fee arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.errors import ConfigError
from meterline.ledger import chart
from meterline.ledger.errors import UnknownAccountCode
from meterline.ledger.policy import LateFeePolicy, decimal_ppm, load_policy, policy_from_mapping


def test_shipped_policy_loads() -> None:
    book = load_policy()
    assert book.default.late_fee.rate_ppm == 3000
    assert book.default.late_fee.cap_ppm == 1_000_000
    assert book.default.allocation.late_fee_first


def test_company_overrides_lay_over_the_defaults() -> None:
    book = policy_from_mapping({"late_fee": {"daily_rate": "0.005"},
                                "companies": {"acme": {"late_fee": {"grace_days": 15}}}})
    acme = book.for_company("acme")
    assert (acme.late_fee.rate_ppm, acme.late_fee.grace_days) == (5000, 15)
    assert book.for_company("other").late_fee.grace_days == 0


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        policy_from_mapping({"late_fee": {"daily_rate": "abc", "grace_days": -1, "bogus": 1},
                             "allocation": {"late_fee": "sometimes"},
                             "companies": {"acme": {"late_fee": {"cap": "1.0000001"}}}})
    text = "\n".join(info.value.problems)
    for needle in ("daily_rate", "grace_days", "late_fee.bogus", "sometimes", "companies.acme", "cap"):
        assert needle in text, needle


def test_decimal_ppm() -> None:
    assert decimal_ppm("0.003") == 3000
    assert decimal_ppm("1") == 1_000_000
    assert decimal_ppm("0.0000001") is None
    assert decimal_ppm("-1") is None
    assert decimal_ppm("x") is None


@given(open_=st.integers(0, 10**9), days=st.integers(-3, 400), ppm=st.integers(0, 100_000))
def test_accrual_is_exact_and_owed_rounds_once(open_: int, days: int, ppm: int) -> None:
    p = LateFeePolicy(daily_rate=f"{ppm / 1_000_000:.6f}")
    acc = p.accrual(open_, days)
    assert acc == (open_ * ppm * days if days > 0 else 0)
    assert p.owed(acc) == (acc + 500_000) // 1_000_000
    down = LateFeePolicy(daily_rate=p.daily_rate, rounding="down")
    assert down.owed(acc) <= p.owed(acc) <= down.owed(acc) + 1


def test_cap() -> None:
    assert LateFeePolicy(cap="1").cap_amount(999) == 999
    assert LateFeePolicy(cap="0.5").cap_amount(999) == 499
    assert LateFeePolicy(cap="").cap_amount(999) is None


def test_account_codes() -> None:
    assert chart.ar(12) == "AR:12" and chart.prepaid(12) == "PREPAID:12"
    assert chart.rev("Resource Fee") == "REV:resource_fee"
    assert chart.cash("counter", "张 伟") == "CASH:counter:张_伟"
    assert chart.account_class("CASH:wechat:1900000001").type == "asset"
    assert chart.account_class("PREPAID:3").normal_sign == -1
    for bad in ("AR:x", "REV:Water", "FOO:1", "INC:other", "CASH:bank:a:b"):
        with pytest.raises(UnknownAccountCode):
            chart.account_class(bad)
    assert chart.customer_account_id("PREPAID:42") == 42 and chart.customer_account_id("REV:water") is None
