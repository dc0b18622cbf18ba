"""The dedupe window: repeats found while remembered, acknowledged only after the original commits."""

from meterline.ingest.dedupe import DedupeWindow, Ticket


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_seen_within_window_and_bounded() -> None:
    clock = Clock()
    w = DedupeWindow(window_s=10, max_keys=3, clock=clock)
    t1 = Ticket()
    w.add(["a", "b"], t1)
    assert w.seen("a") is t1 and w.first_seen(["x", "b"]) is t1 and w.seen("x") is None
    clock.t = 5
    w.add(["c", "d"], Ticket())
    w.evict()
    assert len(w) == 3 and w.seen("a") is None  # the oldest went beyond max_keys
    clock.t = 16
    w.evict()
    assert len(w) == 0  # beyond the window


def test_failed_batches_are_forgotten() -> None:
    w = DedupeWindow()
    t = Ticket()
    w.add(["k"], t)
    t.resolve(False)
    assert w.seen("k") is None


def test_repeat_of_a_pending_message_waits_for_its_commit() -> None:
    t = Ticket()
    acks = []
    t.on_commit(lambda ok: acks.append(("first", ok)))
    assert acks == []
    t.resolve(True)
    t.resolve(False)  # only the first resolution counts
    t.on_commit(lambda ok: acks.append(("late", ok)))  # already committed: runs at once
    assert acks == [("first", True), ("late", True)]
