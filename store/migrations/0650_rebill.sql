-- Billing an account again (补开) after its bill was reversed (红冲, ledger.bills.reverse_bill), in the
-- same billing run or in the run of the cycle the account is in now (rating/run.py, rebill=True).
--
--   * bill.replaces: the reversed bill a new bill bills again (same company, account and period);
--     each reversed bill is billed again at most once. The reversed bill stays as it was.
--   * One standing bill per account and period, whatever the run: 0001's key (account, period,
--     run) let the same run never bill an account twice, reversed or not; now a reversed bill
--     leaves room for its re-bill, and an issued bill is the only one of its period (two runs of
--     different cycles billing a moved account are refused here too, not only by the run's skip).
--   * meter_period_read is keyed by (meter, period, revision): the reads of a re-bill are the
--     next revision of the meter's period; the reversed bill's reads stay (append-only). The next
--     period opens from the latest revision of the meter's latest earlier period.
--   * bill_reversed_idx: the run finds the reversed bills of a period without reading the others.

ALTER TABLE bill ADD COLUMN replaces bigint;   -- bill.id of the reversed bill this one bills again

ALTER TABLE bill DROP CONSTRAINT bill_account_id_period_run_id_key;
CREATE UNIQUE INDEX bill_standing_key ON bill (account_id, period) WHERE status = 'issued';
CREATE UNIQUE INDEX bill_replaces_key ON bill (replaces) WHERE replaces IS NOT NULL;
CREATE INDEX bill_reversed_idx ON bill (period, account_id) WHERE status = 'reversed';

-- 0500's once-per-statement check of new bills, plus: what a bill replaces is a reversed bill of the
-- same company, account and period
CREATE OR REPLACE FUNCTION meterline_bill_statement_check() RETURNS trigger
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
    SELECT n.id, n.replaces INTO bad
      FROM new_rows n
     WHERE n.replaces IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM bill o WHERE o.id = n.replaces AND o.company_id = n.company_id
                          AND o.account_id = n.account_id AND o.period = n.period AND o.status = 'reversed')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bill % replaces bill %, which is not a reversed bill of the same account and period',
            bad.id, bad.replaces USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

ALTER TABLE meter_period_read ADD COLUMN revision smallint NOT NULL DEFAULT 0 CHECK (revision >= 0);
ALTER TABLE meter_period_read DROP CONSTRAINT meter_period_read_pkey;
ALTER TABLE meter_period_read ADD PRIMARY KEY (meter_id, period, revision);
