"""``meterline decode mbus|wmbus``: slave information and records, tables or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meterline.cli import main
from meterline.protocols.mbus.frame import parse_hex
from meterline.protocols.wmbus.telegram import add_crcs
from tests.unit.mbus._corpus import LIBMBUS, WMBUS

KAMSTRUP = LIBMBUS / "test-frames" / "kamstrup_multical_601.hex"


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("METERLINE_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)


def test_decode_file_as_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "mbus", str(KAMSTRUP)]) == 0
    out = capsys.readouterr().out
    for words in ("06855817", "KAM", "Energy", "Wh", "37351000", "Volume", "561.08", "Instantaneous value"):
        assert words in out


def test_decode_hex_argument_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "mbus", KAMSTRUP.read_text(), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["slave"]["id"] == "06855817" and doc["slave"]["manufacturer"] == "KAM"
    first = doc["records"][1]  # after the fabrication number
    assert (first["quantity"], first["unit"], first["value"], first["storage"]) == ("Energy", "Wh", "37351000", 0)


def test_decode_binary_file_with_two_telegrams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = parse_hex((LIBMBUS / "test-frames" / "sontex_supercal_531_telegram1.hex").read_text())
    two = parse_hex(KAMSTRUP.read_text())
    f = tmp_path / "capture.bin"
    f.write_bytes(one + two)
    assert main(["decode", "mbus", str(f), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["more_records_follow"] for d in doc] == [True, False]


def test_bad_frame_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "mbus", str(LIBMBUS / "error-frames" / "too_many_vife.hex")]) == 1
    assert "more than 10 VIFEs" in capsys.readouterr().out
    assert main(["decode", "mbus", "68 04 04 68 08 01 70 08 82 16"]) == 1
    assert "checksum" in capsys.readouterr().out


def test_decode_wmbus_with_key_and_crcs(capsys: pytest.CaptureFixture[str]) -> None:
    case = next(c for c in json.loads((WMBUS / "wmbusmeters_water_heat_gas.json").read_text())
                if c["case_id"] == "wmbus-018-picoflux")
    framed = add_crcs(bytes.fromhex(case["telegram_hex"])).hex()
    assert main(["decode", "wmbus", framed, "--crc", "A", "--key", f"{case['meter_id']}={case['aes_key']}",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["decrypted"] is True and doc["id"] == case["meter_id"]
    assert any(r["quantity"] == "Volume" and r["value"] == "4.492" for r in doc["records"])
    assert main(["decode", "wmbus", case["telegram_hex"]]) == 1
    assert "no key is configured" in capsys.readouterr().out
    assert main(["decode", "wmbus", case["telegram_hex"], "--key", "123=00"]) == 2
    assert "need ID=HEX" in capsys.readouterr().out


def test_wmbus_keys_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    case = next(c for c in json.loads((WMBUS / "wmbusmeters_water_heat_gas.json").read_text())
                if c["case_id"] == "wmbus-016-kadenwater")
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[wmbus]\nkeys = {{ "{case["meter_id"]}" = "{case["aes_key"]}" }}\n', encoding="utf-8")
    assert main(["-c", str(cfg), "decode", "wmbus", case["telegram_hex"]]) == 0
    assert "81.0976" in capsys.readouterr().out
    cfg.write_text('[wmbus]\nkeys = { "123" = "xyz" }\n', encoding="utf-8")
    assert main(["-c", str(cfg), "decode", "wmbus", case["telegram_hex"]]) == 2
    assert "32 hex digits" in capsys.readouterr().out
