-- The ledger's once-per-statement reference checks (0600: entries, postings, receivable items,
-- allocations, payments) probe what they reference by primary key: hash and merge joins are off
-- inside them. Sequential scans were not, so a plan cached by a session while a table was still
-- small (a fresh database: payment, allocation and journal_entry start empty) kept scanning it
-- whole for every new row as it grew, until its next ANALYZE: a minute of API payments on a
-- fresh database read 140 million payment rows from the allocation check's cached plan, and
-- 200 concurrent payments fell from 1,500 to 760 a second (benchmarks/bench_ledger.py).
-- Sequential scans off inside them too, as the billing checks of 0500 already are: the
-- transition tables are still read whole (they have no index), everything else by its index.
ALTER FUNCTION meterline_entry_statement_check() SET enable_seqscan = off;
ALTER FUNCTION meterline_posting_statement_check() SET enable_seqscan = off;
ALTER FUNCTION meterline_item_statement_check() SET enable_seqscan = off;
ALTER FUNCTION meterline_allocation_statement_check() SET enable_seqscan = off;
ALTER FUNCTION meterline_payment_statement_check() SET enable_seqscan = off;
