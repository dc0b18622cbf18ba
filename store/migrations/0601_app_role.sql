-- The application's database role and the ledger: the journal and the payment record only grow.
--
-- meterline_app (created by 0100_access.sql; row-level security applies to it) may read and add
-- ledger rows but never update, delete or truncate them. meterline_apply_rls() (run after every
-- migrate) grants per table from meterline_append_only, so the ledger's append-only tables are
-- registered there rather than granted here. (Superusers and the owner are still stopped by
-- the append-only triggers.) The maintained balance tables are written by SECURITY DEFINER
-- triggers and functions only.
INSERT INTO meterline_append_only (relname) VALUES
    ('journal_entry'), ('posting'), ('payment'), ('allocation'), ('payment_reversal'), ('suspense_match'),
    ('receipt'), ('receipt_void'), ('withholding_result'), ('bank_return_file'), ('channel_notice'),
    ('late_fee_run'), ('trial_balance'), ('refund_payout'), ('ledger_close')
ON CONFLICT DO NOTHING;
INSERT INTO meterline_read_only (relname) VALUES ('ledger_balance_delta'), ('ledger_balance')
ON CONFLICT DO NOTHING;

-- rebuilding the maintained balances is for the owner (an operator running `ledger check --repair`)
REVOKE EXECUTE ON FUNCTION ledger_rebuild_balances() FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'meterline_app') THEN
        EXECUTE 'GRANT EXECUTE ON FUNCTION ledger_fold_balances() TO meterline_app';
    END IF;
END $$;
