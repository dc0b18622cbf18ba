"""Errors of rating: a row that cannot be rated names its tariff and rows."""

from __future__ import annotations

from meterline.errors import MeterlineError


class RatingError(MeterlineError):
    """Rows could not be rated: ``tariff_id`` (if one tariff is at fault), ``rows`` (caller's keys),
    ``reason`` (one line, the same for every row listed)."""

    def __init__(self, reason: str, tariff_id: str | None = None, rows: list[int] | None = None) -> None:
        self.reason = reason
        self.tariff_id = tariff_id
        self.rows = list(rows or [])
        shown = ", ".join(str(r) for r in self.rows[:10])
        more = f" and {len(self.rows) - 10} more" if len(self.rows) > 10 else ""
        where = f" (rows {shown}{more})" if self.rows else ""
        super().__init__(f"{reason}{where}")


class UnknownTariff(RatingError):
    """No tariff file defines this id (for this company or for every company)."""
