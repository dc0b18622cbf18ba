-- The billing run (rating/run.py): what a run needs beyond 0001's billing_run, bill and bill_line.
--
--   * meter_period_read: per meter and billing period, the opening and closing reads a bill used
--     (reading keys meter_id + ts, values, estimated flag) and the consumption derived from them.
--     The next period's opening read of a meter is the closing read of its latest row: nothing is
--     billed twice or skipped, also across periods an account was skipped in. Master meters billed
--     to nobody get a row too when their tree was apportioned. Append-only.
--   * apportionment / apportionment_share: per master meter and period, its consumption, the sum
--     of its direct sub-meters', the residual, the policy and the outcome; and where the residual
--     went (the accounts that received a share, in litres). Append-only.
--   * billing_run_skip: accounts of a run that were not billed, with the reason (kept current by
--     each re-run of the run: a skip that is billed later is removed).
--   * billing_run.due_date (the due-date rule: period end + billing.due_days, a setting) and the
--     books a run was asked for.

ALTER TABLE billing_run ADD COLUMN due_date date;
ALTER TABLE billing_run ADD COLUMN books text[];          -- NULL: every book of the cycle

CREATE TABLE meter_period_read (
    meter_id          bigint      NOT NULL,                     -- meter.id (checked per statement, below)
    period            text        NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    company_id        integer     NOT NULL,                     -- company.id (checked per statement)
    -- written only by the billing run, in the transaction that writes the run, the bill and the
    -- account's row: no foreign keys on these three (a million rows a run; each key is a check per row)
    run_id            bigint      NOT NULL,                     -- billing_run.id
    account_id        bigint,                                   -- account.id; NULL: a master meter billed to nobody
    bill_id           bigint,                                   -- bill.id; NULL: not billed itself (a master meter)
    -- where the opening read came from: the previous billed period's closing read ('previous');
    -- for a meter never billed: the effective read nearest the period start ('read'), the initial
    -- register of a device installed in the period ('installation'), the latest read before the
    -- period ('last_read') or the first read inside it ('first_read')
    opening_basis     text        NOT NULL CHECK (opening_basis IN ('previous', 'read', 'installation', 'last_read', 'first_read')),
    opening_ts        timestamptz NOT NULL,
    opening_value     bigint      NOT NULL,
    opening_estimated boolean     NOT NULL,
    closing_ts        timestamptz NOT NULL,                     -- reading key (meter_id, closing_ts)
    closing_value     bigint      NOT NULL,
    closing_estimated boolean     NOT NULL,
    consumption       bigint      NOT NULL,                     -- base units × multiplier
    kind              smallint    NOT NULL,                     -- store.consumption.Kind
    PRIMARY KEY (meter_id, period),
    CHECK (closing_ts >= opening_ts)
);
CREATE INDEX meter_period_read_bill_idx ON meter_period_read (bill_id) WHERE bill_id IS NOT NULL;
CREATE INDEX meter_period_read_run_idx ON meter_period_read (run_id);

CREATE TABLE apportionment (
    master_meter_id     bigint  NOT NULL REFERENCES meter(id),
    period              text    NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    company_id          integer NOT NULL REFERENCES company(id),
    run_id              bigint  NOT NULL REFERENCES billing_run(id),
    root_meter_id       bigint  NOT NULL,                       -- the tree's top master
    policy              text    NOT NULL CHECK (policy IN ('master_account', 'by_consumption', 'equal', 'by_area')),
    master_consumption  bigint  NOT NULL,
    subs_consumption    bigint  NOT NULL,                       -- sum of the direct sub-meters'
    residual            bigint  NOT NULL,                       -- master − subs (negative: not billed)
    inherited           bigint  NOT NULL DEFAULT 0,             -- passed down from the master above
    distributed         bigint  NOT NULL,                       -- residual (if >= 0) + inherited, all shared out
    -- apportioned; negative (alert raised, nothing billed); no_recipients (nobody to bill it to)
    status              text    NOT NULL CHECK (status IN ('apportioned', 'negative', 'no_recipients')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (master_meter_id, period)
);
CREATE INDEX apportionment_run_idx ON apportionment (run_id);

CREATE TABLE apportionment_share (
    master_meter_id bigint  NOT NULL,
    period          text    NOT NULL,
    account_id      bigint  NOT NULL REFERENCES account(id),
    company_id      integer NOT NULL REFERENCES company(id),
    via_meter_id    bigint  NOT NULL REFERENCES meter(id),    -- the direct sub-meter (or the master itself) it went through
    weight          bigint  NOT NULL,                         -- litres, 0.01 m², or 1 (equal)
    share           bigint  NOT NULL CHECK (share >= 0),      -- litres
    PRIMARY KEY (master_meter_id, period, account_id),
    FOREIGN KEY (master_meter_id, period) REFERENCES apportionment (master_meter_id, period)
);
CREATE INDEX apportionment_share_account_idx ON apportionment_share (account_id, period);

CREATE TABLE billing_run_skip (
    run_id     bigint  NOT NULL REFERENCES billing_run(id),
    account_id bigint  NOT NULL REFERENCES account(id),
    company_id integer NOT NULL REFERENCES company(id),
    reason     text    NOT NULL,     -- no_closing_read, no_opening_read, register_reset, negative_consumption, tariff, installation
    message    text    NOT NULL,
    detail     jsonb   NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (run_id, account_id)
);

CREATE INDEX bill_account_period_idx ON bill (account_id, period);

-- Bills, their lines and the period reads come a million at a time: the references of 0001's
-- foreign keys are checked once per INSERT statement, set-based (as the ledger does in 0600),
-- instead of one check per row (which cost more than the rows themselves: benchmarks/bench_billing.py).
-- The checks are correlated probes (NOT EXISTS per new row, on the referenced primary key), so
-- stale statistics of a table just filled in the same transaction (it looks empty) cannot turn them
-- into scans (sequential scans are off inside them, which leaves the primary keys), JIT off.
ALTER TABLE bill DROP CONSTRAINT bill_company_id_fkey, DROP CONSTRAINT bill_run_id_fkey,
    DROP CONSTRAINT bill_account_id_fkey;
ALTER TABLE bill_line DROP CONSTRAINT bill_line_bill_id_fkey, DROP CONSTRAINT bill_line_company_id_fkey;

CREATE FUNCTION meterline_bill_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    SET enable_seqscan = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.company_id, n.run_id, n.account_id INTO bad
      FROM new_rows n
     WHERE NOT EXISTS (SELECT 1 FROM billing_run r WHERE r.id = n.run_id AND r.company_id = n.company_id)
        OR NOT EXISTS (SELECT 1 FROM account a WHERE a.id = n.account_id AND a.company_id = n.company_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bill %: billing run % or account % is missing or of another company than %',
            bad.id, bad.run_id, bad.account_id, bad.company_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER bill_statement_check AFTER INSERT ON bill
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meterline_bill_statement_check();

CREATE FUNCTION meterline_bill_line_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    SET enable_seqscan = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.bill_id, n.line_no, n.company_id INTO bad
      FROM new_rows n
     WHERE NOT EXISTS (SELECT 1 FROM bill b WHERE b.id = n.bill_id AND b.company_id = n.company_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bill line %/%: bill % is missing or of another company than %',
            bad.bill_id, bad.line_no, bad.bill_id, bad.company_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER bill_line_statement_check AFTER INSERT ON bill_line
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meterline_bill_line_statement_check();

CREATE FUNCTION meterline_period_read_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    SET enable_seqscan = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.meter_id, n.period, n.company_id INTO bad
      FROM new_rows n
     WHERE NOT EXISTS (SELECT 1 FROM meter m WHERE m.id = n.meter_id AND m.company_id = n.company_id)
        OR (n.bill_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM bill b WHERE b.id = n.bill_id
                                                   AND b.company_id = n.company_id AND b.account_id = n.account_id))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'period read of meter % (%): the meter or the bill is missing or of another company than %',
            bad.meter_id, bad.period, bad.company_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER meter_period_read_statement_check AFTER INSERT ON meter_period_read
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meterline_period_read_statement_check();

INSERT INTO meterline_append_only (relname) VALUES
    ('meter_period_read'), ('apportionment'), ('apportionment_share')
ON CONFLICT DO NOTHING;

CREATE TRIGGER meter_period_read_append_only BEFORE UPDATE OR DELETE ON meter_period_read
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_change();
CREATE TRIGGER apportionment_append_only BEFORE UPDATE OR DELETE ON apportionment
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_change();
CREATE TRIGGER apportionment_share_append_only BEFORE UPDATE OR DELETE ON apportionment_share
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_change();
