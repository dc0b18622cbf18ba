"""`meterline quote`: the console entry in-process, its JSON and table, its settings, its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meterline.cli import main


@pytest.fixture(autouse=True)
def no_settings_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.setenv("METERLINE_COMPANY", "demo")


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["quote", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def flat(text: str) -> str:
    return " ".join(text.split())


def test_json_lines_and_total(capsys) -> None:
    code, out = run(capsys, "--tariff", "water-residential", "--volume", "35", "--household-size", "4",
                    "--date", "2026-10-05", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [(x["component"], x["tier"], x["quantity"], x["unit_price"], x["amount"]) for x in doc["lines"]] == [
        ("water", 1, 22000, 1_750_000, 3850), ("water", 2, 8000, 3_130_000, 2504),
        ("water", 3, 5000, 4_130_000, 2065), ("resource_fee", None, 35000, 400_000, 1400),
        ("sewage", None, 35000, 1_300_000, 4550)]
    assert doc["total"] == 14369 and doc["period_start"] == "2026-10-01" and doc["period_end"] == "2026-10-31"


def test_annual_tiers_with_year_to_date(capsys) -> None:
    code, out = run(capsys, "--tariff", "water-residential-annual", "--volume", "50", "--year-to-date", "150",
                    "--date", "2026-10-05", "--json")
    assert code == 0 and json.loads(out)["total"] == 29000


def test_table(capsys) -> None:
    code, out = run(capsys, "--tariff", "example-price-change", "--volume", "40", "--period-start", "2026-10-01",
                    "--period-end", "2026-10-31")
    assert code == 0
    assert "176.14" in out and "10-16 +16d" in out and "example-price-change@2026-10-16" in out


def test_tariff_dir_setting(capsys, tmp_path) -> None:
    tariffs = tmp_path / "mine"
    tariffs.mkdir()
    (tariffs / "x.toml").write_text(
        'id = "x"\nuse_type = "residential"\n[[versions]]\neffective = "2020-01-01"\n'
        '[[versions.components]]\ncode = "water"\nprice = "2.00"\n', encoding="utf-8")
    (tmp_path / "meterline.toml").write_text('[rating]\ntariff_dir = "mine"\n', encoding="utf-8")
    code, out = run(capsys, "--tariff", "x", "--volume", "1.5", "--date", "2026-10-05", "--json")
    assert code == 0 and json.loads(out)["total"] == 300
    code, out = run(capsys, "--tariff", "water-residential", "--volume", "1")
    assert code == 1 and "unknown tariff 'water-residential'" in flat(out)


def test_bad_input_is_a_clear_error(capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["quote", "--tariff", "water-residential", "--volume", "1.0001"])
    assert info.value.code == 2
    assert "more decimals" in capsys.readouterr().err
    code, out = run(capsys, "--tariff", "water-residential", "--volume", "1", "--period-start", "2026-10-01")
    assert code == 2 and "both --period-start and --period-end" in out
    code, out = run(capsys, "--tariff", "water-nonresidential", "--volume", "1", "--meter-size", "DN999",
                    "--date", "2026-10-05")
    assert code == 1 and flat(out) == "error: water-nonresidential@2025-07-01 has no fixed charge for meter size 'DN999'"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "b.toml").write_text('id = "b"\n', encoding="utf-8")
    (tmp_path / "meterline.toml").write_text('[rating]\ntariff_dir = "broken"\n', encoding="utf-8")
    code, out = run(capsys, "--tariff", "b", "--volume", "1")
    assert code == 2 and "b.toml: use_type: required key is missing" in flat(out)
    assert "Traceback" not in out


def test_console_script_in_a_subprocess(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "meterline", "quote", "--tariff", "water-special", "--volume", "10",
                           "--meter-size", "DN25", "--date", "2026-10-05", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "METERLINE_COMPANY": "demo"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    # water 158.00 (VAT 4.74), resource 20.00, sewage 22.00, fixed 12.00 (VAT 0.36)
    assert (doc["amount"], doc["tax"], doc["total"]) == (21200, 510, 21710)


HEAT = ("--tariff", "heat-residential", "--volume", "0", "--area", "89.5", "--date", "2026-12-01")


def test_heating_suspensions_listed_and_rated(capsys) -> None:
    # 89.50 m² × 24.00 = 2148 yuan a season of 121 days; December off 3–4 and 20–21: 27 heated days,
    # 214800 × 27 / 121 = 47930.6 -> 47931 (the stop before the period is not rated, nor listed)
    code, out = run(capsys, *HEAT, "--heating-suspension", "2026-12-20:2026-12-22",
                    "--heating-suspension", "2026-12-03:2026-12-05", "--heating-suspension", "2026-11-16:2026-11-20",
                    "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["heating_suspensions"] == [{"stop": "2026-12-03", "resume": "2026-12-05"},
                                          {"stop": "2026-12-20", "resume": "2026-12-22"}]
    assert doc["lines"][0]["source"]["heated_days"] == 27 and doc["total"] == 47931
    # open ends: off to the 1st, and from the 28th on (not resumed): 31 − 1 − 4 = 26 heated days
    code, out = run(capsys, *HEAT, "--heating-suspension", ":2026-12-02", "--heating-suspension", "2026-12-28")
    assert code == 0
    assert "26/121d" in out and "461.55" in out   # 214800 × 26 / 121 = 46155.4
    assert "heating stopped from the season's start, resumed 2026-12-02" in flat(out)
    assert "heating stopped 2026-12-28, not resumed" in flat(out)
    # the single pair works as before, and with more
    code, out = run(capsys, *HEAT, "--heating-stop", "2026-12-03", "--heating-resume", "2026-12-05",
                    "--heating-suspension", "2026-12-20:2026-12-22", "--json")
    assert code == 0 and json.loads(out)["total"] == 47931


@pytest.mark.parametrize("args, message", [
    (("--heating-suspension", "2026-12-03:2026-12-10", "--heating-suspension", "2026-12-08:2026-12-12"),
     "error: heating suspensions overlap: stopped 2026-12-03, resumed 2026-12-10 and stopped 2026-12-08, "
     "resumed 2026-12-12"),
    (("--heating-suspension", "2026-12-10:2026-12-05"),
     "error: heating stopped 2026-12-10, resumed 2026-12-05: the resume date must be after the stop date"),
    (("--heating-stop", "2026-12-10", "--heating-resume", "2026-12-10"), "the resume date must be after the stop"),
    (("--heating-stop", "2026-12-03", "--heating-stop", "2026-12-20"),
     "error: --heating-stop is one suspension and given 2 times"),
])
def test_bad_heating_suspensions_are_a_clear_error(capsys, args, message) -> None:
    code, out = run(capsys, *HEAT, *args)
    assert code == 2 and message in flat(out) and "Traceback" not in out


@pytest.mark.parametrize("text, message", [("2026-12-3x", "is not STOP[:RESUME]"), ("2026-12-03:soon", "is not STOP"),
                                           (":", "give a stop date, a resume date or both")])
def test_unreadable_heating_suspension_is_a_usage_error(capsys, text, message) -> None:
    with pytest.raises(SystemExit) as info:
        main(["quote", *HEAT, "--heating-suspension", text])
    assert info.value.code == 2
    err = flat(capsys.readouterr().err)
    assert f"argument --heating-suspension: {text!r}" in err and message in err
