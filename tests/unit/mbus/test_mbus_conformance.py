"""Conformance against libmbus's test frames (rscada/libmbus test/, BSD-3-Clause).

Every ``test-frames/*.hex`` must decode to the records of its ``.norm.xml`` (libmbus's
normalised output): function, storage number, tariff, device, unit, quantity and value. How
values are compared, and the few places where libmbus's text is not the value:

* integer and BCD values are compared exactly: our Decimal, rounded to libmbus's six ``%f``
  decimals, equals the printed decimal (none of the corpus values has more than six decimals);
* 32-bit reals: libmbus prints the float32's binary expansion ``× 10^exp`` (18511.912109);
  we keep the shortest decimal that is the same float32 (18511.912): the two agree within one
  float32 step;
* date-times: libmbus appends ``Z`` to what is the meter's local time; we keep it naive;
* an all-zero date (``2000-00-00`` in libmbus) is no date: our value is None with an error;
* BCD fields holding hex digits A–F (EN 13757-3: the meter signals an error) are printed by
  libmbus as digit arithmetic; our value is None with ``error`` naming the digits;
* some ``.norm.xml`` files declare ISO-8859-1 but hold UTF-8 (``Â°C``): normalised to ``°C``;
* the fixed data structure frame (CI 0x73, ``sen_pollusonic_2``) is printed unscaled in
  kWh/l; we scale to Wh/m³ like every other record.

Every ``error-frames/*.hex`` and ``unsupported-frames/*.hex`` is rejected with a
:class:`DecodeError` whose message names the problem; where libmbus gives an expected
``<Error>`` text, ours carries the same text. One "unsupported" frame, ``svm_f22_telegram2``,
is a well-formed second telegram of a multi-telegram readout (lengths and checksum correct)
whose only record is DIF 0x1F followed by 206 bytes of manufacturer data: libmbus rejects it
for its own buffer size. We decode it (one "more records follow" record) and reject it where it
matters: it has no register to bill from, so ``to_readings`` raises ``NoRegisterError``.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest

from meterline.errors import DecodeError
from meterline.protocols.mbus.errors import MBusError, NoRegisterError
from meterline.protocols.mbus.frame import decode_response, parse_hex
from meterline.protocols.mbus.records import Function, to_readings
from tests.unit.mbus._corpus import LIBMBUS, read_hex

TEST_FRAMES = sorted((LIBMBUS / "test-frames").glob("*.hex"))
ERROR_FRAMES = sorted((LIBMBUS / "error-frames").glob("*.hex"))
UNSUPPORTED = sorted((LIBMBUS / "unsupported-frames").glob("*.hex"))
ACCEPTED_UNSUPPORTED = {"svm_f22_telegram2"}

SIX = Decimal("0.000001")


def test_corpus_is_complete() -> None:
    assert len(TEST_FRAMES) == 50
    assert len(ERROR_FRAMES) == 20
    assert len(UNSUPPORTED) == 7


def _expected(path: Path) -> tuple[dict, list[dict]]:
    root = ET.fromstring(path.with_suffix(".norm.xml").read_bytes())
    slave = {c.tag: (c.text or "") for c in root.find("SlaveInformation")}
    records = [{c.tag: (c.text or "").replace("Â°", "°") for c in r} for r in root.findall("DataRecord")]
    return slave, records


def _function_label(rec) -> str:
    return rec.function.label


@pytest.mark.parametrize("path", TEST_FRAMES, ids=lambda p: p.stem)
def test_test_frame_decodes_like_libmbus(path: Path) -> None:
    slave_exp, expected = _expected(path)
    resp = decode_response(parse_hex(read_hex(path)))
    assert resp.slave is not None
    assert resp.slave.id == slave_exp["Id"].zfill(8)
    if "Manufacturer" in slave_exp:
        assert resp.slave.manufacturer == slave_exp["Manufacturer"]
        assert str(resp.slave.version) == slave_exp["Version"]
        assert f"{resp.slave.signature:04X}" == slave_exp["Signature"]
    assert str(resp.slave.access_number) == slave_exp["AccessNumber"]
    assert f"{resp.slave.status:02X}" == slave_exp["Status"]
    assert len(resp.records) == len(expected)
    for i, (exp, rec) in enumerate(zip(expected, resp.records)):
        where = f"{path.stem} record {i}"
        if not exp:  # libmbus printed an empty record (a reserved VIF it could not name)
            assert rec.quantity == "Reserved", where
            continue
        if resp.fixed:
            _check_fixed(exp, rec, where)
            continue
        assert _function_label(rec) == exp["Function"], where
        assert str(rec.storage) == exp["StorageNumber"], where
        if "Tariff" in exp:
            assert str(rec.tariff) == exp["Tariff"], where
            assert str(rec.device) == exp["Device"], where
        if rec.function in (Function.MANUFACTURER_SPECIFIC, Function.MORE_RECORDS_FOLLOW):
            assert rec.value_text() == exp["Value"], where
            continue
        assert rec.unit == exp["Unit"], where
        assert rec.quantity == exp["Quantity"], where
        _check_value(exp["Value"], rec, where)


def _check_value(text: str, rec, where: str) -> None:
    v = rec.value
    if re.fullmatch(r"\d{4}-00-00", text):
        assert v is None and rec.error == "invalid date/time", where
    elif re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text):
        assert isinstance(v, dt.datetime) and v.isoformat() + "Z" == text, where
    elif re.fullmatch(r"\d{4}-\d\d-\d\d", text):
        assert isinstance(v, dt.date) and v.isoformat() == text, where
    elif re.fullmatch(r"-?\d+\.\d{6}", text):
        if v is None:  # BCD carrying A–F error digits
            assert rec.error and rec.error.startswith("invalid BCD digits"), where
            assert re.search(r"[A-F]", rec.data.hex().upper()), where
            return
        assert isinstance(v, Decimal), where
        if rec.dif[0] & 0x0F == 0x05:  # 32-bit real
            ulp = max(SIX, abs(v) * Decimal(2) ** -23)  # one float32 step at this magnitude
            assert abs(v - Decimal(text)) <= ulp, (where, v, text)
        else:
            assert v.quantize(SIX) == Decimal(text) and v == v.quantize(SIX), (where, v, text)
    else:  # text or hex bytes
        assert rec.value_text() == text, where


def _check_fixed(exp: dict, rec, where: str) -> None:
    assert exp["Function"] == "Actual value" and rec.function is Function.INSTANTANEOUS and rec.storage == 0, where
    factor = {"kWh": (Decimal(1000), "Wh"), "l": (Decimal("0.001"), "m^3")}[exp["Unit"]]
    assert rec.unit == factor[1], where
    assert rec.value == Decimal(exp["Value"]) * factor[0], where


def _reject(path: Path) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_response(parse_hex(read_hex(path)))
    err = info.value
    assert isinstance(err, MBusError)
    assert str(err) and err.reason
    return err


@pytest.mark.parametrize("path", ERROR_FRAMES, ids=lambda p: p.stem)
def test_error_frame_is_rejected(path: Path) -> None:
    err = _reject(path)
    xml = path.with_suffix(".xml")
    if xml.exists():
        expected = ET.fromstring(xml.read_bytes()).find("SlaveInformation/Error").text
        assert expected.replace("Â´", "'").replace("´", "'") in str(err)


@pytest.mark.parametrize("path", [p for p in UNSUPPORTED if p.stem not in ACCEPTED_UNSUPPORTED], ids=lambda p: p.stem)
def test_unsupported_frame_is_rejected(path: Path) -> None:
    _reject(path)


def test_manufacturer_only_telegram_is_rejected_for_billing() -> None:
    path = LIBMBUS / "unsupported-frames" / "svm_f22_telegram2.hex"
    resp = decode_response(parse_hex(read_hex(path)))
    assert [r.function for r in resp.records] == [Function.MORE_RECORDS_FOLLOW]
    assert len(resp.records[0].value) == 206 and resp.more_follows
    with pytest.raises(NoRegisterError, match="no volume or energy register"):
        to_readings(resp.records, ts=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))


@pytest.mark.parametrize(("name", "problem"), [
    ("premature_end_of_data1", "premature end of data"),
    ("premature_end_of_dif1", "DIFE"),
    ("premature_end_of_vif1", "DIF without VIF"),
    ("premature_end_of_var_vif1", "plain-text VIF"),
    ("too_long_var_vif", "plain-text VIF of 243 characters"),
    ("too_many_dife", "more than 10 DIFEs"),
    ("too_many_vife", "more than 10 VIFEs"),
    ("too_short_header", "12 bytes"),
])
def test_error_names_the_problem(name: str, problem: str) -> None:
    err = _reject(LIBMBUS / "error-frames" / f"{name}.hex")
    assert problem in str(err)
