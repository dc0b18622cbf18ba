-- The ledger: chart of accounts, a cheap per-statement balance check, maintained balances,
-- closes, the receivable sub-ledger (open items and their allocations), payment channels'
-- evidence, corrections with approvals, late-fee runs.
--
-- Account codes (ledger/chart.py documents them; ledger_account_class checks the form):
--   AR:<account id>           receivable of one customer account (bills, late fees, charges)  asset
--   PREPAID:<account id>      prepaid balance / overpayment credit of one account            liability
--   REV:<component>           revenue per tariff component (REV:water, REV:sewage, ...);
--                             REV:waiver (contra-revenue), REV:adjustment (manual charges)    income
--   TAX:<code>                tax payable (TAX:vat)                                          liability
--   CASH:<channel>[:<sub>]    money received per channel and cashier / bank / merchant       asset
--   INC:late_fee, INC:bad_debt_recovery                                                      income
--   EXP:bad_debt                                                                             expense
--   REFUND:payable            refunds approved, not yet paid out                             liability
--   SUSPENSE:<channel>        money received that matches no account                         liability

-- ---------------------------------------------------------------------------------------------
-- chart of accounts: the classes an account code may belong to
CREATE TABLE ledger_account_class (
    prefix      text PRIMARY KEY,
    pattern     text NOT NULL,                  -- a code of this class matches this regex
    type        text NOT NULL CHECK (type IN ('asset', 'liability', 'income', 'expense', 'equity')),
    name        text NOT NULL,
    name_zh     text NOT NULL,
    form        text NOT NULL                   -- documentation: how the code is built
);
INSERT INTO ledger_account_class (prefix, pattern, type, name, name_zh, form) VALUES
    ('AR',       '^AR:[0-9]+$',                    'asset',     'receivable per customer account', '应收账款',   'AR:<account id>'),
    ('PREPAID',  '^PREPAID:[0-9]+$',               'liability', 'prepaid balance per account',     '预收(预存)款', 'PREPAID:<account id>'),
    ('REV',      '^REV:[a-z0-9_]+$',               'income',    'revenue per tariff component',    '营业收入',   'REV:<component>'),
    ('TAX',      '^TAX:[a-z0-9_]+$',               'liability', 'tax payable',                     '应交税费',   'TAX:<tax code>'),
    ('CASH',     '^CASH:[a-z0-9_]+(:[^:[:space:]]+)?$', 'asset', 'money received per channel',     '库存现金/银行存款', 'CASH:<channel>[:<cashier|bank|merchant>]'),
    ('INC',      '^INC:(late_fee|bad_debt_recovery)$', 'income', 'other income',                   '其他收入',   'INC:late_fee | INC:bad_debt_recovery'),
    ('EXP',      '^EXP:bad_debt$',                 'expense',   'bad-debt expense',                '坏账损失',   'EXP:bad_debt'),
    ('REFUND',   '^REFUND:payable$',               'liability', 'refunds payable',                 '应付退款',   'REFUND:payable'),
    ('SUSPENSE', '^SUSPENSE:[a-z0-9_]+$',          'liability', 'unmatched money (suspense)',      '待查款项',   'SUSPENSE:<channel>');

-- ---------------------------------------------------------------------------------------------
-- journal: who/where of an entry (daily close scope), and the transaction that created it
-- (its company and the entry it reverses are checked per statement by journal_entry_statement_check
-- below instead of the per-row foreign keys of 0001; companies and entries are never deleted)
ALTER TABLE journal_entry
    ADD COLUMN channel text,                    -- payment channel of cash entries; NULL otherwise
    ADD COLUMN cashier text,                    -- cashier (counter) or sub-account (bank, merchant)
    ADD COLUMN tx bigint NOT NULL DEFAULT txid_current(),   -- creating transaction (postings only in it)
    DROP CONSTRAINT journal_entry_company_id_fkey,
    DROP CONSTRAINT journal_entry_reverses_id_fkey;
CREATE INDEX journal_entry_booked_idx ON journal_entry (company_id, booked_on);
CREATE UNIQUE INDEX journal_entry_one_reversal_idx ON journal_entry (reverses_id) WHERE reverses_id IS NOT NULL;

-- The 0001 check re-summed the whole entry once per posting row (a deferred row trigger):
-- O(postings) queries at commit. Here each INSERT statement checks its own rows once:
--   * every entry touched must have been created by this transaction (no appending to history;
--     an entry committed empty may still be filled, in one statement, unless its day is closed);
--   * per entry, the postings of this statement sum to zero -> the entry stays balanced
--     (a sum of zero-sum parts); an entry whose parts of this statement do not sum to zero is
--     put on ledger_unbalanced, whose deferred row trigger re-sums it at commit (entries
--     written in several statements are still allowed, and still checked);
--   * every account code belongs to a class of the chart;
--   * the per-account balance deltas of the statement are appended to ledger_balance_delta.
--   * the entry exists and belongs to the posting's company. This replaces the foreign keys of
--     posting (entry_id, company_id): their per-row checks cost more than the rest of the
--     insert (measured: 600k postings 8.7 s with them, 4.8 s without; benchmarks/bench_ledger.py);
--     entries and companies are never deleted (journal_entry refuses DELETE).
DROP TRIGGER posting_balanced ON posting;
ALTER TABLE posting DROP CONSTRAINT posting_entry_id_fkey, DROP CONSTRAINT posting_company_id_fkey;

CREATE UNLOGGED TABLE ledger_unbalanced (
    tx        bigint NOT NULL,
    entry_id  bigint NOT NULL,
    PRIMARY KEY (tx, entry_id)
);

CREATE TABLE ledger_balance (
    company_id    integer NOT NULL REFERENCES company(id),
    account_code  text NOT NULL,
    balance       bigint NOT NULL,              -- signed minor units, debit > 0
    folded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, account_code)
);
-- insert-only deltas (no row is updated by posting, so concurrent payments never queue on a
-- hot account such as CASH:wechat); ledger_fold_balances() moves them into ledger_balance
CREATE TABLE ledger_balance_delta (
    company_id    integer NOT NULL,
    account_code  text NOT NULL,
    amount        bigint NOT NULL
);
CREATE INDEX ledger_balance_delta_idx ON ledger_balance_delta (company_id, account_code);

CREATE FUNCTION meterline_posting_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET work_mem = '64MB'
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    -- an entry committed earlier may only receive postings while it is still empty (written by
    -- the 0001 way: entry first, postings later), and not in a closed day
    SELECT n.entry_id, e.id AS found, e.tx, e.company_id AS entry_company, n.company_id INTO bad
      FROM (SELECT entry_id, company_id, count(*) AS k FROM new_rows GROUP BY entry_id, company_id) n
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

    SELECT n.account_code INTO bad
      FROM (SELECT DISTINCT account_code FROM new_rows) n
      LEFT JOIN ledger_account_class c ON c.prefix = split_part(n.account_code, ':', 1)
     WHERE c.prefix IS NULL OR n.account_code !~ c.pattern
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account code % is not in the chart of accounts (see ledger_account_class)', bad.account_code
            USING ERRCODE = 'check_violation';
    END IF;

    INSERT INTO ledger_unbalanced (tx, entry_id)
    SELECT txid_current(), entry_id FROM new_rows GROUP BY entry_id HAVING sum(amount) <> 0
    ON CONFLICT DO NOTHING;

    INSERT INTO ledger_balance_delta (company_id, account_code, amount)
    SELECT company_id, account_code, sum(amount) FROM new_rows
     GROUP BY company_id, account_code HAVING sum(amount) <> 0;
    RETURN NULL;
END $$;

CREATE TRIGGER posting_statement_check AFTER INSERT ON posting
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION meterline_posting_statement_check();

CREATE FUNCTION meterline_recheck_unbalanced() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
DECLARE
    total bigint;
    n integer;
BEGIN
    SELECT coalesce(sum(amount), 0), count(*) INTO total, n FROM posting WHERE entry_id = NEW.entry_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'journal entry % does not balance: % posting(s) summing to %', NEW.entry_id, n, total
            USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM ledger_unbalanced WHERE tx = NEW.tx AND entry_id = NEW.entry_id;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_unbalanced_recheck
    AFTER INSERT ON ledger_unbalanced DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION meterline_recheck_unbalanced();

-- balances: the maintained table plus the deltas not folded yet
CREATE VIEW ledger_account_balance AS
SELECT company_id, account_code, sum(balance)::bigint AS balance
  FROM (SELECT company_id, account_code, balance FROM ledger_balance
        UNION ALL
        SELECT company_id, account_code, amount FROM ledger_balance_delta) b
 GROUP BY company_id, account_code;

CREATE FUNCTION ledger_fold_balances() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET work_mem = '256MB' AS $$
DECLARE
    n bigint;
BEGIN
    WITH moved AS (DELETE FROM ledger_balance_delta RETURNING company_id, account_code, amount),
         summed AS (SELECT company_id, account_code, sum(amount)::bigint AS amount FROM moved GROUP BY 1, 2)
    INSERT INTO ledger_balance AS b (company_id, account_code, balance)
    SELECT company_id, account_code, amount FROM summed
    ON CONFLICT (company_id, account_code)
    DO UPDATE SET balance = b.balance + EXCLUDED.balance, folded_at = now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- rebuild the maintained balances from the postings (the check compares first; this repairs)
CREATE FUNCTION ledger_rebuild_balances() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET work_mem = '256MB' AS $$
DECLARE
    n bigint;
BEGIN
    LOCK TABLE ledger_balance_delta IN SHARE ROW EXCLUSIVE MODE;   -- postings wait until this commits
    LOCK TABLE ledger_balance IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM ledger_balance_delta;
    DELETE FROM ledger_balance;
    INSERT INTO ledger_balance (company_id, account_code, balance)
    SELECT company_id, account_code, sum(amount) FROM posting GROUP BY 1, 2 HAVING sum(amount) <> 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- ---------------------------------------------------------------------------------------------
-- closes: a closed day (per channel and cashier, or '*' for the whole company) or month takes
-- no new entry; corrections are booked into the next open day
CREATE TABLE ledger_close (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL REFERENCES company(id),
    kind        text NOT NULL CHECK (kind IN ('day', 'month')),
    first_day   date NOT NULL,
    last_day    date NOT NULL,
    channel     text NOT NULL DEFAULT '*',      -- '*': every channel and the non-cash entries
    cashier     text NOT NULL DEFAULT '*',      -- '*': every cashier of the channel
    closed_at   timestamptz NOT NULL DEFAULT now(),
    closed_by   text,
    summary     jsonb NOT NULL DEFAULT '{}'::jsonb,
    CHECK (last_day >= first_day),
    CHECK (kind = 'month' OR first_day = last_day),
    CHECK (channel <> '*' OR cashier = '*'),
    UNIQUE (company_id, kind, first_day, channel, cashier)
);
CREATE INDEX ledger_close_day_idx ON ledger_close (company_id, last_day, first_day);

-- key of the advisory lock an entry's business day is posted under (closing takes it exclusively)
CREATE FUNCTION ledger_day_lock_key(company integer, day date) RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$
    SELECT (x'6d6c6400'::bigint << 24) # ((company::bigint << 20) + (day - date '2000-01-01'))
$$;

-- the first business day on or after ``wanted`` open for an entry of this channel and cashier
CREATE FUNCTION ledger_open_day(company integer, wanted date, channel text, cashier text) RETURNS date
    LANGUAGE plpgsql STABLE SET jit = off AS $$
DECLARE
    d date := wanted;
BEGIN
    WHILE EXISTS (
        SELECT 1 FROM ledger_close c
         WHERE c.company_id = company AND d BETWEEN c.first_day AND c.last_day
           AND (c.channel = '*' OR (c.channel = ledger_open_day.channel
                AND (c.cashier = '*' OR c.cashier = coalesce(ledger_open_day.cashier, ''))))) LOOP
        d := d + 1;
    END LOOP;
    RETURN d;
END $$;

CREATE FUNCTION meterline_entry_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows WHERE tx <> txid_current()) THEN
        RAISE EXCEPTION 'journal_entry.tx is set by the database' USING ERRCODE = 'check_violation';
    END IF;
    -- the references of 0001's foreign keys, checked once per statement
    SELECT n.id, n.company_id INTO bad FROM new_rows n LEFT JOIN company c ON c.id = n.company_id
     WHERE c.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry %: company % does not exist', bad.id, bad.company_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.id, n.reverses_id INTO bad FROM new_rows n LEFT JOIN journal_entry r ON r.id = n.reverses_id
     WHERE n.reverses_id IS NOT NULL AND (r.id IS NULL OR r.company_id <> n.company_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry %: the entry it reverses (%) is missing or of another company', bad.id, bad.reverses_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- serialize with closes of these days (a close waits for entries in flight, then they are visible)
    PERFORM pg_advisory_xact_lock_shared(k)
       FROM (SELECT DISTINCT ledger_day_lock_key(company_id, booked_on) AS k FROM new_rows ORDER BY 1) d;
    SELECT n.id, n.booked_on, n.channel, n.cashier, c.kind INTO bad
      FROM new_rows n
      JOIN ledger_close c ON c.company_id = n.company_id AND n.booked_on BETWEEN c.first_day AND c.last_day
       AND (c.channel = '*' OR (c.channel = n.channel AND (c.cashier = '*' OR c.cashier = coalesce(n.cashier, ''))))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'business day % is closed (% close) for channel % cashier %: book into the next open day',
            bad.booked_on, bad.kind, coalesce(bad.channel, '-'), coalesce(bad.cashier, '-')
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER journal_entry_statement_check AFTER INSERT ON journal_entry
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION meterline_entry_statement_check();

-- ---------------------------------------------------------------------------------------------
-- receivable sub-ledger: open items per account and the allocations that settle them.
-- Invariants (ledger check): settled = sum(allocation.amount) per item; for every account,
-- sum(amount - settled) over its items = balance of AR:<account id>.
--
-- References between ledger rows (items, allocations, payments -> entries, bills, items,
-- payments, companies) are checked once per INSERT statement by the triggers below, set-based,
-- instead of per-row foreign keys: the per-row checks (and the row locks they take on what they
-- reference) cost more than the rows themselves in bulk posting (benchmarks/bench_ledger.py).
-- The checks probe the indexes of what they reference (hash and merge joins are off inside
-- them), so their cost never depends on the referenced table's size or on fresh statistics;
-- JIT is off inside them too (a stale estimate once made every one-row INSERT compile its
-- checks: 30-100 ms each).
-- What they reference is never deleted: entries, postings, payments, items and allocations
-- refuse DELETE. The reference to the registry's account stays a foreign key.
CREATE TABLE receivable_item (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id      integer NOT NULL,
    account_id      bigint NOT NULL REFERENCES account(id),
    kind            text NOT NULL CHECK (kind IN ('bill', 'late_fee', 'charge', 'reinstated')),
    bill_id         bigint,                               -- the bill (late fees: the bill they accrue on)
    entry_id        bigint NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    settled         bigint NOT NULL DEFAULT 0,
    due_date        date NOT NULL,                        -- late fees carry their bill's due date
    accrued_through date,                                 -- late fees: last day charged
    accrual         bigint,                               -- late fees: exact accrual of its days, in
                                                          -- millionths of a minor unit (rounding stays exact)
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'reversed', 'written_off')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (settled BETWEEN 0 AND amount),
    CHECK ((kind IN ('bill', 'late_fee')) = (bill_id IS NOT NULL)),
    CHECK ((kind = 'late_fee') = (accrued_through IS NOT NULL AND accrual IS NOT NULL))
);
CREATE UNIQUE INDEX receivable_item_bill_idx ON receivable_item (bill_id) WHERE kind = 'bill';
CREATE INDEX receivable_item_late_fee_idx ON receivable_item (bill_id, accrued_through) WHERE kind = 'late_fee';
CREATE INDEX receivable_item_open_idx ON receivable_item (account_id, due_date, id) WHERE status = 'open' AND settled < amount;
CREATE INDEX receivable_item_account_idx ON receivable_item (account_id, id);

CREATE TABLE allocation (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL,
    entry_id    bigint NOT NULL,
    item_id     bigint NOT NULL,
    payment_id  bigint,
    source      text NOT NULL CHECK (source IN ('payment', 'prepaid', 'waiver', 'write_off', 'reversal',
                                                 'payment_reversal', 'recovery')),
    amount      bigint NOT NULL CHECK (amount <> 0)       -- negative: the item is reopened
);
CREATE INDEX allocation_item_idx ON allocation (item_id);
CREATE INDEX allocation_payment_idx ON allocation (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX allocation_entry_idx ON allocation (entry_id);

CREATE FUNCTION meterline_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER receivable_item_no_delete BEFORE DELETE ON receivable_item
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_delete();
CREATE TRIGGER receivable_item_no_truncate BEFORE TRUNCATE ON receivable_item
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_refuse_delete();

CREATE FUNCTION meterline_item_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET work_mem = '64MB'
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, 'its entry ' || n.entry_id || ' is missing or of another company' AS why INTO bad
      FROM new_rows n LEFT JOIN journal_entry e ON e.id = n.entry_id
     WHERE e.id IS NULL OR e.company_id <> n.company_id LIMIT 1;
    IF NOT FOUND THEN
        SELECT n.id, 'its bill ' || n.bill_id || ' is missing or of another account' AS why INTO bad
          FROM new_rows n LEFT JOIN bill b ON b.id = n.bill_id
         WHERE n.bill_id IS NOT NULL AND (b.id IS NULL OR b.account_id <> n.account_id OR b.company_id <> n.company_id) LIMIT 1;
    END IF;
    IF NOT FOUND THEN
        SELECT n.id, 'its account ' || n.account_id || ' is of another company' AS why INTO bad
          FROM new_rows n JOIN account a ON a.id = n.account_id WHERE a.company_id <> n.company_id LIMIT 1;
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION 'receivable item %: %', bad.id, bad.why USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER receivable_item_statement_check AFTER INSERT ON receivable_item
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meterline_item_statement_check();

CREATE FUNCTION meterline_allocation_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET work_mem = '64MB'
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, 'its entry ' || n.entry_id || ' is missing or of another company' AS why INTO bad
      FROM new_rows n LEFT JOIN journal_entry e ON e.id = n.entry_id
     WHERE e.id IS NULL OR e.company_id <> n.company_id LIMIT 1;
    IF NOT FOUND THEN
        SELECT n.id, 'its item ' || n.item_id || ' is missing or of another company' AS why INTO bad
          FROM new_rows n LEFT JOIN receivable_item i ON i.id = n.item_id
         WHERE i.id IS NULL OR i.company_id <> n.company_id LIMIT 1;
    END IF;
    IF NOT FOUND THEN
        SELECT n.id, 'its payment ' || n.payment_id || ' is missing or of another company' AS why INTO bad
          FROM new_rows n LEFT JOIN payment p ON p.id = n.payment_id
         WHERE n.payment_id IS NOT NULL AND (p.id IS NULL OR p.company_id <> n.company_id) LIMIT 1;
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION 'allocation %: %', bad.id, bad.why USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER allocation_statement_check AFTER INSERT ON allocation
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meterline_allocation_statement_check();

-- ---------------------------------------------------------------------------------------------
-- payments: immutable once written (a correction is a reversal). Their entry and company are
-- checked per statement (as above) instead of the per-row foreign keys of 0001.
ALTER TABLE payment
    ADD COLUMN cash_account text,                         -- CASH:... debited
    ADD COLUMN tender text,                               -- cash, card, transfer, wallet, ...
    DROP CONSTRAINT payment_entry_id_fkey,
    DROP CONSTRAINT payment_company_id_fkey;

CREATE FUNCTION meterline_payment_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET work_mem = '64MB'
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.external_id, n.entry_id INTO bad
      FROM new_rows n LEFT JOIN journal_entry e ON e.id = n.entry_id
     WHERE n.entry_id IS NULL OR e.id IS NULL OR e.company_id <> n.company_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'payment %: its entry % is missing or of another company', bad.external_id, bad.entry_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.external_id, n.account_id INTO bad
      FROM new_rows n JOIN account a ON a.id = n.account_id WHERE a.company_id <> n.company_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'payment %: account % is of another company', bad.external_id, bad.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER payment_statement_check AFTER INSERT ON payment
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meterline_payment_statement_check();
CREATE INDEX payment_booked_idx ON payment (company_id, booked_on, channel);

CREATE TRIGGER payment_append_only BEFORE UPDATE OR DELETE ON payment
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_change();
CREATE TRIGGER payment_no_truncate BEFORE TRUNCATE ON payment
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_refuse_change();
CREATE TRIGGER allocation_append_only BEFORE UPDATE OR DELETE ON allocation
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_change();
CREATE TRIGGER allocation_no_truncate BEFORE TRUNCATE ON allocation
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_refuse_change();

-- the entry that reversed a payment (one at most)
CREATE TABLE payment_reversal (
    payment_id  bigint PRIMARY KEY REFERENCES payment(id),
    company_id  integer NOT NULL REFERENCES company(id),
    entry_id    bigint NOT NULL REFERENCES journal_entry(id),
    reason      text NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- money of unknown accounts (suspense) later matched to an account
CREATE TABLE suspense_match (
    payment_id  bigint PRIMARY KEY REFERENCES payment(id),
    company_id  integer NOT NULL REFERENCES company(id),
    account_id  bigint NOT NULL REFERENCES account(id),
    entry_id    bigint NOT NULL REFERENCES journal_entry(id),
    matched_by  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- counter: numbered receipt ranges per cashier (票据号码登记), receipts issued and voided
CREATE TABLE receipt_range (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL REFERENCES company(id),
    cashier     text NOT NULL,
    prefix      text NOT NULL DEFAULT '',
    first_no    bigint NOT NULL CHECK (first_no >= 0),
    last_no     bigint NOT NULL,
    next_no     bigint NOT NULL,
    issued_by   text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (last_no >= first_no),
    CHECK (next_no BETWEEN first_no AND last_no + 1)
);
CREATE INDEX receipt_range_cashier_idx ON receipt_range (company_id, cashier, id);

CREATE TABLE receipt (
    company_id  integer NOT NULL REFERENCES company(id),
    prefix      text NOT NULL,
    number      bigint NOT NULL,
    range_id    bigint NOT NULL REFERENCES receipt_range(id),
    cashier     text NOT NULL,
    payment_id  bigint REFERENCES payment(id),            -- NULL: spoiled before use
    business_day date NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, prefix, number)
);
CREATE INDEX receipt_day_idx ON receipt (company_id, business_day, cashier);
CREATE INDEX receipt_payment_idx ON receipt (payment_id);

CREATE TABLE receipt_void (
    company_id  integer NOT NULL,
    prefix      text NOT NULL,
    number      bigint NOT NULL,
    reason      text NOT NULL,
    voided_by   text,
    business_day date NOT NULL,
    voided_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, prefix, number),
    FOREIGN KEY (company_id, prefix, number) REFERENCES receipt (company_id, prefix, number)
);

-- ---------------------------------------------------------------------------------------------
-- bank withholding (托收/代扣): agreements, out batches, return files and their results
CREATE TABLE bank_mandate (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id      integer NOT NULL REFERENCES company(id),
    account_id      bigint NOT NULL REFERENCES account(id),
    bank            text NOT NULL,
    bank_account_no text NOT NULL,
    holder_name     text NOT NULL,
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, account_id, bank)
);

CREATE TABLE withholding_batch (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL REFERENCES company(id),
    bank        text NOT NULL,
    batch_no    text NOT NULL,
    business_day date NOT NULL,
    file_name   text NOT NULL,
    items       integer NOT NULL,
    total       bigint NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, bank, batch_no)
);

CREATE TABLE withholding_item (
    batch_id        bigint NOT NULL REFERENCES withholding_batch(id),
    seq             integer NOT NULL,
    company_id      integer NOT NULL REFERENCES company(id),
    account_id      bigint NOT NULL REFERENCES account(id),
    account_code    text NOT NULL,
    bank_account_no text NOT NULL,
    holder_name     text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    PRIMARY KEY (batch_id, seq)
);

CREATE TABLE bank_return_file (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL REFERENCES company(id),
    bank        text NOT NULL,
    file_name   text NOT NULL,
    sha256      text NOT NULL,
    batch_id    bigint REFERENCES withholding_batch(id),
    status      text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason      text,
    lines       integer,
    paid        integer,
    failed      integer,
    paid_amount bigint,
    received_at timestamptz NOT NULL DEFAULT now(),
    raw         bytea
);
CREATE INDEX bank_return_file_sha_idx ON bank_return_file (company_id, sha256);

CREATE TABLE withholding_result (
    batch_id     bigint NOT NULL,
    seq          integer NOT NULL,
    company_id   integer NOT NULL REFERENCES company(id),
    file_id      bigint NOT NULL REFERENCES bank_return_file(id),
    status       text NOT NULL CHECK (status IN ('paid', 'failed')),
    amount       bigint NOT NULL,
    reason_code  text,
    reason       text,
    bank_ref     text,
    payment_id   bigint REFERENCES payment(id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, seq),
    FOREIGN KEY (batch_id, seq) REFERENCES withholding_item (batch_id, seq)
);

-- ---------------------------------------------------------------------------------------------
-- online wallets (WeChat Pay / Alipay style): orders and every notification received
CREATE TABLE payment_order (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id    integer NOT NULL REFERENCES company(id),
    channel       text NOT NULL,
    merchant      text NOT NULL,                    -- mchid / app_id
    out_trade_no  text NOT NULL,
    account_id    bigint NOT NULL REFERENCES account(id),
    amount        bigint NOT NULL CHECK (amount > 0),
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, merchant, out_trade_no)
);

CREATE TABLE channel_notice (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id   integer REFERENCES company(id),     -- NULL when the sender could not be placed
    channel      text NOT NULL,
    merchant     text,
    verdict      text NOT NULL CHECK (verdict IN ('paid', 'replay', 'rejected', 'ignored')),
    reason       text,
    external_id  text,
    payment_id   bigint REFERENCES payment(id),
    headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
    body         bytea,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channel_notice_idx ON channel_notice (channel, received_at);

-- ---------------------------------------------------------------------------------------------
-- corrections that need a second person: waivers, charges, write-offs, recoveries, refunds
CREATE TABLE adjustment (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id   integer NOT NULL REFERENCES company(id),
    kind         text NOT NULL CHECK (kind IN ('waiver', 'charge', 'write_off', 'recovery', 'refund')),
    account_id   bigint NOT NULL REFERENCES account(id),
    item_id      bigint REFERENCES receivable_item(id),  -- waiver of one item
    amount       bigint NOT NULL CHECK (amount > 0),
    reason       text NOT NULL CHECK (length(btrim(reason)) > 0),
    entered_by   text NOT NULL,
    entered_at   timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by   text,
    decided_at   timestamptz,
    decision_note text,
    entry_id     bigint REFERENCES journal_entry(id),
    CHECK (decided_by IS NULL OR decided_by <> entered_by),
    CHECK ((status = 'pending') = (decided_by IS NULL)),
    CHECK (status <> 'approved' OR entry_id IS NOT NULL)
);
CREATE INDEX adjustment_account_idx ON adjustment (account_id);

CREATE FUNCTION meterline_adjustment_decided_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.status <> 'pending'
       OR NEW.kind <> OLD.kind OR NEW.account_id <> OLD.account_id OR NEW.amount <> OLD.amount
       OR NEW.item_id IS DISTINCT FROM OLD.item_id OR NEW.entered_by <> OLD.entered_by THEN
        RAISE EXCEPTION 'adjustment %: only a pending request can be decided, once', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER adjustment_decided_once BEFORE UPDATE OR DELETE ON adjustment
    FOR EACH ROW EXECUTE FUNCTION meterline_adjustment_decided_once();

-- refunds approved are paid out once
CREATE TABLE refund_payout (
    adjustment_id bigint PRIMARY KEY REFERENCES adjustment(id),
    company_id    integer NOT NULL REFERENCES company(id),
    channel       text NOT NULL,
    entry_id      bigint NOT NULL REFERENCES journal_entry(id),
    paid_by       text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- late-fee runs: one per company and day
CREATE TABLE late_fee_run (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL REFERENCES company(id),
    run_date    date NOT NULL,                  -- its entries: journal_entry.kind 'late_fee', ref_id = id
    bills       integer NOT NULL,
    amount      bigint NOT NULL,
    policy      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, run_date)
);

-- monthly trial balance kept with the month's close
CREATE TABLE trial_balance (
    close_id      bigint NOT NULL REFERENCES ledger_close(id),
    company_id    integer NOT NULL REFERENCES company(id),
    account_code  text NOT NULL,
    debit         bigint NOT NULL,
    credit        bigint NOT NULL,
    balance       bigint NOT NULL,
    PRIMARY KEY (close_id, account_code)
);
