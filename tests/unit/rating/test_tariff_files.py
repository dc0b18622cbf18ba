"""Tariff files are validated strictly: every problem of every file, each with file and key."""

from __future__ import annotations

import datetime as dt

import pytest

from meterline.errors import ConfigError
from meterline.rating.errors import UnknownTariff
from meterline.rating.tariff import TariffBook

GOOD = """
id = "w"
use_type = "residential"
[[versions]]
effective = "2025-01-01"
thresholds = ["22", "30"]
[[versions.components]]
code = "water"
prices = ["1.00", "2.00", "3.00"]
"""


def problems(texts: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        TariffBook.from_texts(texts)
    return info.value.problems


def test_a_good_file_loads_into_integers() -> None:
    t = TariffBook.from_texts({"w.toml": GOOD}).get("w")
    v = t.versions[0]
    assert v.components[0].thresholds == (22_000, 30_000)
    assert v.components[0].prices == (1_000_000, 2_000_000, 3_000_000)
    assert v.label == "w@2025-01-01"


def test_every_problem_is_named_with_file_and_key() -> None:
    bad = """
id = "Bad Id"
use_type = "residential"
colour = "blue"
rounding = "nearest"
[[versions]]
effective = "2025-13-01"
thresholds = ["30", "22"]
[[versions.components]]
code = "water"
prices = ["1.00", 2.00]
tax_rate = "1.5"
[[versions.components]]
code = "sewage"
price = "1.0000001"
[versions.fixed]
sizes = { DN15 = "abc" }
"""
    found = problems({"bad.toml": bad, "other.toml": GOOD.replace('"1.00"', '"-1"')})
    expected = [
        "bad.toml: id: 'Bad Id' does not match",
        "bad.toml: colour: unknown key",
        "bad.toml: rounding: 'nearest' is not one of half_up, half_even, down, up",
        "bad.toml: versions[0].effective: '2025-13-01' is not a date",
        "bad.toml: versions[0].thresholds: thresholds must be positive and strictly increasing",
        "bad.toml: versions[0].components[0].prices[1]: write numbers as decimal strings",
        "bad.toml: versions[0].components[0].tax_rate: tax rate '1.5' must be below 1",
        "bad.toml: versions[0].components[1].price: price '1.0000001' has more decimals",
        "bad.toml: versions[0].fixed.sizes.DN15: price 'abc' is not a decimal number",
        "other.toml: versions[0].components[0].prices[0]: price '-1' must not be negative",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in found), (text, found)


@pytest.mark.parametrize("fragment, message", [
    ('[[versions.components]]\ncode = "garbage"\nprices = ["1", "2"]\n', "2 prices for 2 thresholds (need 3)"),
    ('[[versions.components]]\ncode = "fixed"\nprice = "1"\n', "'fixed' is reserved"),
    ('[[versions.components]]\ncode = "water"\nprice = "1"\n', "component 'water' appears twice"),
    ('[[versions.components]]\ncode = "x"\nprice = "1"\nprices = ["1", "2", "3"]\n', "not both"),
    ('[versions.household]\nbase_size = 4\n', "base_size and per_person go together"),
    ('[versions.household]\nmin_size = 5\nraise = ["1"]\n', "gives 1 values for 2 thresholds"),
    ('[versions.minimum]\n', "amount: required key is missing"),
    ('[versions.heating]\nprice = "1"\nseason_start = "11-31"\nseason_end = "03-15"\n', "'11-31' is not a day"),
])
def test_version_problems(fragment, message) -> None:
    found = problems({"w.toml": GOOD + fragment})
    assert any(message in p and p.startswith("w.toml: versions[0]") for p in found), found


def test_versions_in_order_and_unique() -> None:
    two = GOOD + GOOD[GOOD.index("[[versions]]"):].replace("2025-01-01", "2024-01-01")
    assert any("oldest first" in p for p in problems({"w.toml": two}))


def test_duplicate_ids_and_company_override() -> None:
    assert any("defined twice" in p for p in problems({"a.toml": GOOD, "b.toml": GOOD}))
    own = GOOD.replace('use_type = "residential"', 'use_type = "residential"\ncompany = "sz"').replace(
        '"1.00", "2.00"', '"1.50", "2.00"')
    book = TariffBook.from_texts({"a.toml": GOOD, "b.toml": own})
    assert book.get("w", "sz").versions[0].components[0].prices[0] == 1_500_000
    assert book.get("w", "other").versions[0].components[0].prices[0] == 1_000_000
    assert book.get("w").company is None
    with pytest.raises(UnknownTariff, match="unknown tariff 'nope'"):
        book.get("nope")


def test_year_start_is_configurable() -> None:
    book = TariffBook.from_texts({"w.toml": GOOD.replace('use_type = "residential"',
                                                         'use_type = "residential"\nyear_start = "07-01"')})
    assert book.year_start("w", dt.date(2026, 10, 5)) == dt.date(2026, 7, 1)
    assert book.year_start("w", dt.date(2026, 6, 30)) == dt.date(2025, 7, 1)


def test_load_reports_the_directory(tmp_path) -> None:
    (tmp_path / "a.toml").write_text("id = \n", encoding="utf-8")
    (tmp_path / "b.toml").write_text(GOOD.replace("thresholds", "thresholdz"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TariffBook.load(tmp_path)
    text = str(info.value)
    assert "a.toml: not valid TOML" in text and "b.toml: versions[0].thresholdz: unknown key" in text
    with pytest.raises(ConfigError, match="does not exist"):
        TariffBook.load(tmp_path / "missing")


def test_limits() -> None:
    found = problems({"w.toml": GOOD.replace('"3.00"', '"1000.01"').replace('"30"]', '"10000001"]')
                      + '[versions.fixed]\ndefault = "1000000.01"\n'})
    assert any("prices[2]: price '1000.01' is above the limit of 1,000" in p for p in found), found
    assert any("thresholds[1]: volume '10000001' is above the limit of 10,000,000 m³" in p for p in found), found
    assert any("fixed.default: price '1000000.01' is above the limit of 1,000,000" in p for p in found), found
