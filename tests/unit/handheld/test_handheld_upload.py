"""Handheld upload parsing (pure): formats, timestamps, and that no row is ever lost."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.protocols.handheld.upload import SKIP_CODES, UploadError, parse_upload

NOW = dt.datetime(2026, 3, 10, tzinfo=dt.timezone.utc)
UTC = dt.timezone.utc


def us(*args, tz=UTC) -> int:
    return int(dt.datetime(*args, tzinfo=tz).timestamp() * 1_000_000)


def parse(text: str, **kw):
    return parse_upload(text.encode(kw.pop("encoding", "utf-8")), name=kw.pop("name", "u.csv"),
                        tz=kw.pop("tz", "Asia/Shanghai"), now=NOW, **kw)


def test_timestamp_spellings() -> None:
    p = parse("meter,reader,read_at,register\n"
              "A,r,2026-03-02 09:12,1\n"
              "B,r,2026-03-02T09:12:30,1\n"
              "C,r,2026-03-02T09:12:00Z,1\n"
              "D,r,2026-03-02T09:12:00+01:00,1\n"
              "E,r,2026-03-02 09:12:00.250,1\n")
    assert not p.errors
    assert p.rows["ts"].to_list() == [us(2026, 3, 2, 1, 12), us(2026, 3, 2, 1, 12, 30), us(2026, 3, 2, 9, 12),
                                      us(2026, 3, 2, 8, 12), us(2026, 3, 2, 1, 12) + 250_000]


def test_local_time_that_does_not_exist_is_refused() -> None:
    p = parse("meter,reader,read_at,register\nA,r,2025-03-30 02:30,1\nB,r,2025-10-26 02:30,1\n", tz="Europe/Berlin")
    assert [e.line for e in p.errors] == [2] and "does not exist in Europe/Berlin" in p.errors[0].message
    assert p.rows["ts"].to_list() == [us(2025, 10, 26, 0, 30)]  # ambiguous: the earlier instant


def test_bom_semicolons_quotes_and_extra_columns() -> None:
    p = parse('\ufeffMeter;Reader;Read_At;Register;Photo;Tablet\n"A;1";"Wang, Wei";2026-03-02 09:12;1,5;x.jpg;T1\n')
    assert p.ignored_columns == ("tablet",)
    assert [e.message for e in p.errors] == ["register '1,5' is not a non-negative decimal of at most 12 digits"]
    p = parse('meter;reader;read_at;register\n"A;1";"Wang, Wei";2026-03-02 09:12;1.5\n')
    assert p.rows.select("meter", "reader", "register").row(0) == ("A;1", "Wang, Wei", "1.5")


def test_whole_file_problems() -> None:
    with pytest.raises(UploadError, match="the file is empty"):
        parse("")
    with pytest.raises(UploadError, match=r"missing required column\(s\): read_at"):
        parse("meter,reader,register\nA,r,1\n")
    with pytest.raises(UploadError, match="column\\(s\\) given twice: meter"):
        parse("meter,reader,read_at,meter\nA,r,2026-03-02 09:12,B\n")
    with pytest.raises(UploadError, match="not utf-8 text"):
        parse_upload(b"meter,reader,read_at\n\xff\xfe,r,x\n", name="x.csv", tz="UTC", now=NOW)
    with pytest.raises(UploadError, match="not valid JSON at line 2"):
        parse_upload(b'[{"meter": "A"},\n  oops]', name="x.json", tz="UTC", now=NOW)
    with pytest.raises(UploadError, match="unknown encoding 'klingon'"):
        parse_upload(b"x", name="x.csv", tz="UTC", encoding="klingon", now=NOW)


def test_json_lines_and_objects() -> None:
    data = b'{"meter": "A", "reader": "r", "read_at": "2026-03-02 09:12", "register": 12.5}\n' \
           b'[1, 2]\n' \
           b'{"meter": "B", "reader": "r", "read_at": "2026-03-02 09:12", "skip_code": "hazard", "photo": {"x": 1}}\n'
    p = parse_upload(data, name="u.jsonl", tz="UTC", now=NOW)
    assert p.format == "json" and p.rows["register"].to_list() == ["12.5"]
    assert [(e.line, e.message) for e in p.errors] == [(2, "expected an object, got list"),
                                                       (3, "photo must be a string or a number")]


FIELD = {
    "meter": st.sampled_from(["WM1", "WM2", "", "  WM3 "]),
    "reader": st.sampled_from(["R1", "", "张伟"]),
    "read_at": st.sampled_from(["2026-03-02 09:12", "2026-02-30 10:00", "", "2099-01-01 00:00", "1999-12-31 23:00",
                                "2026-03-02T09:12:00+08:00", "now"]),
    "register": st.sampled_from(["", "0", "12.345", "-1", "1e3", "1234567890123", "00042"]),
    "skip_code": st.sampled_from(["", "", "no_access", "dog"] + list(SKIP_CODES[:2])),
}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries(FIELD), max_size=30), st.sets(st.integers(0, 29), max_size=3))
def test_every_row_is_accepted_or_reported_never_lost(rows, blank_after) -> None:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(list(FIELD))
    lines = []
    line = 1
    for i, row in enumerate(rows):
        w.writerow([row[k] for k in FIELD])
        line += 1
        lines.append(line)
        if i in blank_after:
            out.write("\n")
            line += 1
    p = parse(out.getvalue())
    good = set(p.rows["line"].to_list())
    bad = {e.line for e in p.errors}
    assert good.isdisjoint(bad)
    assert good | bad == set(lines)
    assert p.total == len(rows)
    for e in p.errors:
        assert e.message and e.line in lines


def test_mixed_spellings_with_errors_in_both_parts() -> None:
    """Found by the property test above: rows whose times parse at the first try and rows that
    need the other spellings are concatenated; error messages formatted from that frame made
    polars panic instead of reporting the rows."""
    p = parse("meter,reader,read_at,register,skip_code\n"
              "  WM3 ,张伟,2026-03-02 09:12,,meter_damaged\n"
              "  WM3 ,张伟,,,\n"
              "  WM3 ,张伟,,,\n")
    assert p.total == 3
    assert {e.line for e in p.errors} == {3, 4}
    assert all("read_at is empty" in [x.message for x in p.errors if x.line == n] for n in (3, 4))
