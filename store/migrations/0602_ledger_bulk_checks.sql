-- Bulk posting without per-row checks on the hot ledger tables (benchmarks/bench_ledger.py):
--
-- * receivable_item.account_id and payment.account_id were the last per-row foreign keys of the
--   rows a billing run or a payment file writes (one check and one row lock on account per
--   item or payment: 1.5 s of 200k bills posted). The account is now checked once per INSERT
--   statement with the other references (it exists and is of the row's company), as 0500 did
--   for bill and bill_line; and, as 0610 does for billed accounts, an account that has items
--   or payments refuses DELETE (close it instead), so nothing they point to disappears.
-- * The statement checks of receivable_item and payment probe every reference in one pass over
--   the new rows (correlated probes on the referenced primary keys; sequential scans, hash and
--   merge joins and JIT off inside them, so stale statistics cannot turn them into scans).
-- * The posting check reads its new rows twice instead of four times: once grouped per entry
--   (the entry's existence and company, its postings' sum for ledger_unbalanced) and once per
--   account (the chart check over the account codes and the balance deltas).
-- The guarantees are those of 0600: same checks, same errors.

ALTER TABLE receivable_item DROP CONSTRAINT receivable_item_account_id_fkey;
ALTER TABLE payment DROP CONSTRAINT payment_account_id_fkey;

CREATE OR REPLACE FUNCTION meterline_item_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.company_id, n.account_id, n.entry_id, n.bill_id,
           NOT EXISTS (SELECT 1 FROM journal_entry e WHERE e.id = n.entry_id AND e.company_id = n.company_id) AS no_entry,
           NOT EXISTS (SELECT 1 FROM account a WHERE a.id = n.account_id AND a.company_id = n.company_id) AS no_account
      INTO bad
      FROM new_rows n
     WHERE NOT EXISTS (SELECT 1 FROM journal_entry e WHERE e.id = n.entry_id AND e.company_id = n.company_id)
        OR NOT EXISTS (SELECT 1 FROM account a WHERE a.id = n.account_id AND a.company_id = n.company_id)
        OR (n.bill_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM bill b WHERE b.id = n.bill_id
                                                   AND b.account_id = n.account_id AND b.company_id = n.company_id))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'receivable item %: %', bad.id,
            CASE WHEN bad.no_entry THEN 'its entry ' || bad.entry_id || ' is missing or of another company'
                 WHEN bad.no_account THEN 'its account ' || bad.account_id || ' is missing or of another company'
                 ELSE 'its bill ' || bad.bill_id || ' is missing or of another account' END
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION meterline_payment_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.external_id, n.entry_id, n.account_id,
           n.entry_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM journal_entry e WHERE e.id = n.entry_id AND e.company_id = n.company_id) AS no_entry
      INTO bad
      FROM new_rows n
     WHERE n.entry_id IS NULL
        OR NOT EXISTS (SELECT 1 FROM journal_entry e WHERE e.id = n.entry_id AND e.company_id = n.company_id)
        OR (n.account_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM account a WHERE a.id = n.account_id AND a.company_id = n.company_id))
     LIMIT 1;
    IF FOUND THEN
        IF bad.no_entry THEN
            RAISE EXCEPTION 'payment %: its entry % is missing or of another company', bad.external_id, bad.entry_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RAISE EXCEPTION 'payment %: account % is missing or of another company', bad.external_id, bad.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION meterline_posting_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET work_mem = '64MB'
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    -- per entry: it exists, is of the postings' company, and was created by this transaction
    -- (an entry committed earlier may only receive postings while it is still empty, and not in
    -- a closed day); an entry whose postings of this statement do not sum to zero is re-summed
    -- at commit (ledger_unbalanced)
    WITH per_entry AS MATERIALIZED (
        SELECT entry_id, company_id, count(*) AS k, sum(amount) AS total FROM new_rows GROUP BY entry_id, company_id
    ), unbalanced AS (
        INSERT INTO ledger_unbalanced (tx, entry_id)
        SELECT txid_current(), entry_id FROM per_entry WHERE total <> 0
        ON CONFLICT DO NOTHING
    )
    SELECT n.entry_id, e.id AS found, e.tx, e.company_id AS entry_company, n.company_id INTO bad
      FROM per_entry n
      LEFT JOIN journal_entry e ON e.id = n.entry_id
     WHERE e.id IS NULL OR e.company_id <> n.company_id
        OR (e.tx <> txid_current()
            AND ((SELECT count(*) FROM posting p WHERE p.entry_id = n.entry_id) <> n.k
                 OR EXISTS (SELECT 1 FROM ledger_close c
                             WHERE c.company_id = e.company_id AND e.booked_on BETWEEN c.first_day AND c.last_day
                               AND (c.channel = '*' OR (c.channel = e.channel
                                    AND (c.cashier = '*' OR c.cashier = coalesce(e.cashier, '')))))))
     LIMIT 1;
    IF FOUND THEN
        IF bad.found IS NULL THEN
            RAISE EXCEPTION 'posting refers to journal entry %, which does not exist', bad.entry_id
                USING ERRCODE = 'foreign_key_violation';
        ELSIF bad.entry_company <> bad.company_id THEN
            RAISE EXCEPTION 'posting of company % on journal entry % of company %', bad.company_id, bad.entry_id, bad.entry_company
                USING ERRCODE = 'check_violation';
        END IF;
        RAISE EXCEPTION 'journal entry % was committed earlier with postings, or in a day closed since: postings may only be added by the transaction that created the entry (post a new entry instead)', bad.entry_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    -- per account: every code is in the chart (its class found by the prefix, split once per
    -- code); the balance deltas of the statement
    WITH per_account AS MATERIALIZED (
        SELECT company_id, account_code, split_part(account_code, ':', 1) AS prefix, sum(amount) AS amount
          FROM new_rows GROUP BY company_id, account_code
    ), deltas AS (
        INSERT INTO ledger_balance_delta (company_id, account_code, amount)
        SELECT company_id, account_code, amount FROM per_account WHERE amount <> 0
    )
    SELECT n.account_code INTO bad
      FROM per_account n
      LEFT JOIN ledger_account_class c ON c.prefix = n.prefix
     WHERE c.prefix IS NULL OR n.account_code !~ c.pattern
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account code % is not in the chart of accounts (see ledger_account_class)', bad.account_code
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

-- the other side of the references: an account with ledger rows is never deleted
CREATE FUNCTION meterline_account_keep_ledger() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM receivable_item i WHERE i.account_id = OLD.id)
       OR EXISTS (SELECT 1 FROM payment p WHERE p.account_id = OLD.id) THEN
        RAISE EXCEPTION 'account % (%) has receivable items or payments and is never deleted: close it instead', OLD.code, OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER account_keep_ledger BEFORE DELETE ON account
    FOR EACH ROW EXECUTE FUNCTION meterline_account_keep_ledger();

-- The entry check groups its new rows once, by the scope they are booked in (company, day,
-- channel, cashier: one or a few per statement), and checks the company, takes the day locks and
-- looks for closes per scope instead of per entry (five passes over the new rows were one).
CREATE OR REPLACE FUNCTION meterline_entry_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
    foreign_tx boolean;
    reversing boolean;
    ids bigint[];
    companies integer[];
    days date[];
    channels text[];
    cashiers text[];
BEGIN
    SELECT bool_or(s.foreign_tx), bool_or(s.reversing),
           array_agg(s.id), array_agg(s.company_id), array_agg(s.booked_on), array_agg(s.channel), array_agg(s.cashier)
      INTO foreign_tx, reversing, ids, companies, days, channels, cashiers
      FROM (SELECT company_id, booked_on, channel, cashier, min(id) AS id,
                   bool_or(tx <> txid_current()) AS foreign_tx, bool_or(reverses_id IS NOT NULL) AS reversing
              FROM new_rows GROUP BY company_id, booked_on, channel, cashier) s;
    IF foreign_tx THEN
        RAISE EXCEPTION 'journal_entry.tx is set by the database' USING ERRCODE = 'check_violation';
    END IF;
    -- the references of 0001's foreign keys, checked once per statement
    SELECT s.id, s.company_id INTO bad FROM unnest(ids, companies) AS s(id, company_id)
     WHERE NOT EXISTS (SELECT 1 FROM company c WHERE c.id = s.company_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry %: company % does not exist', bad.id, bad.company_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF reversing THEN
        SELECT n.id, n.reverses_id INTO bad FROM new_rows n LEFT JOIN journal_entry r ON r.id = n.reverses_id
         WHERE n.reverses_id IS NOT NULL AND (r.id IS NULL OR r.company_id <> n.company_id) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'journal entry %: the entry it reverses (%) is missing or of another company', bad.id, bad.reverses_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    -- serialize with closes of these days (a close waits for entries in flight, then they are visible)
    PERFORM pg_advisory_xact_lock_shared(k)
       FROM (SELECT DISTINCT ledger_day_lock_key(company_id, booked_on) AS k
               FROM unnest(companies, days) AS s(company_id, booked_on) ORDER BY 1) d;
    SELECT s.booked_on, s.channel, s.cashier, c.kind INTO bad
      FROM unnest(companies, days, channels, cashiers) AS s(company_id, booked_on, channel, cashier)
      JOIN ledger_close c ON c.company_id = s.company_id AND s.booked_on BETWEEN c.first_day AND c.last_day
       AND (c.channel = '*' OR (c.channel = s.channel AND (c.cashier = '*' OR c.cashier = coalesce(s.cashier, ''))))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'business day % is closed (% close) for channel % cashier %: book into the next open day',
            bad.booked_on, bad.kind, coalesce(bad.channel, '-'), coalesce(bad.cashier, '-')
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN NULL;
END $$;
