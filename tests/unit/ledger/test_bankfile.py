"""Bank withholding formats: the sample files are byte-exact renderings, and parse back."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterline.errors import ConfigError
from meterline.ledger.channels.bankfile import BankFormat, FieldSpec, FileSpec, load_formats, parse, render
from tests.unit.ledger.bank_samples import ITEMS, out_data, return_data

SAMPLES = Path(__file__).resolve().parents[3] / "config" / "banks" / "samples"
FORMATS = load_formats()


@pytest.mark.parametrize("bank", sorted(FORMATS))
def test_out_file_matches_the_sample(bank: str) -> None:
    fmt = FORMATS[bank]
    header, details = out_data()
    assert render(fmt, fmt.out, header, details) == (SAMPLES / f"{bank}_out_202604250001.txt").read_bytes()


@pytest.mark.parametrize("bank", sorted(FORMATS))
def test_return_sample_parses_with_its_rejects(bank: str) -> None:
    fmt = FORMATS[bank]
    parsed = parse(fmt, fmt.returns, (SAMPLES / f"{bank}_return_202604250001.txt").read_bytes())
    assert parsed.problems == []
    assert parsed.header["batch_no"] == "202604250001"
    assert [d["seq"] for d in parsed.details] == [1, 2, 3, 4]
    assert [d["amount"] for d in parsed.details] == [i["amount"] for i in ITEMS]
    paid = [d["seq"] for d in parsed.details if d["status"] in fmt.returns.success]
    assert paid == [1, 3]
    codes = [d["reason_code"] for d in parsed.details if d["status"] not in fmt.returns.success]
    assert all(code in fmt.returns.reasons for code in codes)


def test_fixed_width_counts_bytes_of_gbk_and_never_cuts_a_character() -> None:
    fmt = FORMATS["icbc"]
    lines = (SAMPLES / "icbc_out_202604250001.txt").read_bytes().split(b"\r\n")
    widths = {len(line) for line in lines[1:-2]}
    assert widths == {sum(f.width for f in fmt.out.detail)}
    name = lines[3][48:78].decode("gbk").rstrip()
    assert name == "北京市朝阳区某某餐饮管理有限公"  # 15 characters = 30 bytes
    odd = BankFormat(bank="x", name="x", out=FileSpec(detail=[FieldSpec("holder_name", width=5)]),
                     returns=fmt.returns)
    assert render(odd, odd.out, {}, [{"holder_name": "张伟伟"}]) == "张伟".encode("gbk") + b" \r\n"


@pytest.mark.parametrize("bank", sorted(FORMATS))
def test_a_trailer_that_does_not_add_up_is_a_problem(bank: str) -> None:
    fmt = FORMATS[bank]
    header, details = return_data(bank)
    bad = render(fmt, fmt.returns, {**header, "total": header["total"] + 1}, details)
    problems = parse(fmt, fmt.returns, bad).problems
    assert any("control total" in p for p in problems)
    fewer = render(fmt, fmt.returns, header, details[:-1])
    assert any("control count" in p for p in parse(fmt, fmt.returns, fewer).problems)


def test_malformed_lines_are_named() -> None:
    fmt = FORMATS["icbc"]
    data = (SAMPLES / "icbc_return_202604250001.txt").read_bytes().replace(b"D00000002", b"D0000000X", 1)
    problems = parse(fmt, fmt.returns, data).problems
    assert any(p.startswith("line 3: seq") for p in problems)
    short = (SAMPLES / "icbc_return_202604250001.txt").read_bytes().replace(b"A000103 ", b"A000103", 1)
    assert any("line 4:" in p and "bytes" in p for p in parse(fmt, fmt.returns, short).problems)
    ccb = FORMATS["ccb"]
    data = (SAMPLES / "ccb_return_202604250001.txt").read_bytes().replace(b"88.00", b"88.001")
    assert any("two decimal places" in p for p in parse(ccb, ccb.returns, data).problems)


def test_a_broken_format_file_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        'bank = "bad"\nname = "x"\nlayout = "fixed"\nencoding = "latin1"\n'
        '[out]\ndetail = [{ field = "nonsense" }]\n[returns]\ndetail = [{ field = "seq", width = 3 }]\n',
        encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_formats(tmp_path)
    text = "\n".join(info.value.problems)
    assert "latin1" in text and "nonsense" in text
