-- Settling a receivable item (UPDATE receivable_item SET settled = ...) as a heap-only update.
--
-- Every payment allocated raises its items' `settled`. receivable_item_open_idx (0600) had
-- `settled < amount` in its predicate, and a column an index predicate reads counts as an
-- indexed column: no such UPDATE could be HOT, so each wrote a new row version plus an entry
-- in every index of the table (four), a sixth of the time of a payment batch
-- (benchmarks/bench_ledger.py). Now:
--   * the open-items index covers the items whose status is open, settled or not; the readers
--     (allocation, prepaid, late fees, statements) keep their `settled < amount` condition and
--     filter the few settled items of an account on the way (an account has a bill a month);
--   * the table leaves room on each page (fillfactor 60) for the new versions, so the update
--     stays on its page and touches no index. ALTER ... SET (fillfactor) applies to pages
--     written from now on; pages written before fill up as they were.
-- A status change (reversed, written off, reopened) still updates the index, as before.

CREATE INDEX receivable_item_open_status_idx ON receivable_item (account_id, due_date, id) WHERE status = 'open';
DROP INDEX receivable_item_open_idx;
ALTER INDEX receivable_item_open_status_idx RENAME TO receivable_item_open_idx;
ALTER TABLE receivable_item SET (fillfactor = 60);
