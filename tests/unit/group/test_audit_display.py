"""How audit rows read in `meterline audit` (store.audit.describe_change)."""

from meterline.store.audit import describe_change


def test_a_batch_audit_row_shows_the_ends_and_size_of_its_ids() -> None:
    # a statement's row of payments (0630) names every id: shown by its ends and its size
    shown = describe_change({"before": None, "after": {"rows": 50000, "amount": 123, "ids": list(range(7, 50007))}})
    assert shown == "rows=50000, amount=123, ids=[7, 8, 9, … 50006] (50000)"
    assert describe_change({"after": {"ids": [1, 2]}}) == "ids=[1, 2]"
