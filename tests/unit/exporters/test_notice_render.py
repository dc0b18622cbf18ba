"""The payment notice page: escaped, self-contained, the same text for the same input."""

from __future__ import annotations

import datetime as dt

from meterline.exporters._files import CompanyRef
from meterline.exporters.notice import Read, render_notice

COMPANY = CompanyRef(1, "acme", "测试<水务>", "Asia/Shanghai", "CNY", 100)


def _notice(**over: object) -> dict:
    n = {"account": "A1", "address": "人民路<1>号 & 2", "book": "B1", "customer_name": "张伟", "phone": None,
         "period": "2026-10", "period_start": dt.date(2026, 10, 1), "period_end": dt.date(2026, 10, 31),
         "as_of": dt.date(2026, 11, 2), "due_date": dt.date(2026, 11, 20), "estimated": False, "consumption": 12000,
         "medium": "water",
         "reads": [Read("M1", "water", dt.datetime(2026, 9, 30, 16, tzinfo=dt.timezone.utc), 100000, False,
                        dt.datetime(2026, 10, 31, 16, tzinfo=dt.timezone.utc), 112000, True)],
         "lines": [{"component": "water", "tier": 1, "quantity": 12000, "unit_price": 3_000_000, "price_scale": 4,
                    "amount": 3600, "tax": 324},
                   {"component": "heating", "tier": None, "quantity": 8550, "unit_price": 0, "price_scale": 4,
                    "amount": 1200, "tax": 0}],
         "amount": 4800, "tax": 324, "total": 5124, "covered": 1000, "this_due": 4124,
         "arrears": [{"kind": "late_fee", "period": "2026-08", "due_date": dt.date(2026, 9, 20), "open": 37}],
         "arrears_total": 37, "total_due": 4161}
    n.update(over)
    return n


def test_notice_page() -> None:
    page = render_notice(_notice(), COMPANY)
    assert page == render_notice(_notice(), COMPANY)
    assert "人民路&lt;1&gt;号 &amp; 2" in page and "测试&lt;水务&gt;" in page and "<1>" not in page
    assert "<script" not in page and "src=" not in page and "http" not in page
    # local dates of the reads, m³ with three decimals, estimated marked
    assert "2026-10-01" in page and "2026-11-01" in page and "112.000（估）" in page and "12.000" in page
    assert "85.50 m²" in page  # area lines in m² (0.01 m² units)
    assert "51.24" in page and "10.00" in page and "0.37" in page and "41.61" in page and "滞纳金" in page


def test_notice_without_readings_or_arrears() -> None:
    page = render_notice(_notice(reads=[], arrears=[], arrears_total=0), COMPANY)
    assert "no readings recorded" in page and "往期欠费 Arrears</h2>" not in page
