-- The application's database role: meterline_app (NOLOGIN; grant it to the login role the
-- services use: GRANT meterline_app TO meterline_web). It may read everything and write what
-- the application writes, but the journal and the payment record only grow: it has no UPDATE,
-- DELETE or TRUNCATE on journal_entry, posting, payment, allocation. (Superusers and the
-- owner are still stopped by the append-only triggers.)
--
-- Roles belong to the whole server. The role is created when the migrating user may create
-- roles; otherwise the grants are skipped with a notice (create the role and re-grant by hand:
-- see README "Ledger and payments").
-- rebuilding the maintained balances is for the owner (an operator running `ledger check --repair`)
REVOKE EXECUTE ON FUNCTION ledger_rebuild_balances() FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'meterline_app') THEN
        BEGIN
            CREATE ROLE meterline_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object THEN NULL;        -- created concurrently (another database)
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role meterline_app here: grants skipped';
                RETURN;
        END;
    END IF;

    EXECUTE 'GRANT USAGE ON SCHEMA public TO meterline_app';
    EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO meterline_app';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO meterline_app';
    -- the append-only record: read and add, nothing else
    EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE ON journal_entry, posting, payment, allocation, payment_reversal,
                    suspense_match, receipt, receipt_void, withholding_result, bank_return_file, channel_notice,
                    late_fee_run, trial_balance, refund_payout, ledger_balance_delta, ledger_balance,
                    ledger_unbalanced, ledger_account_class, ledger_close
               FROM meterline_app';
    EXECUTE 'REVOKE INSERT ON ledger_balance_delta, ledger_balance, ledger_unbalanced, ledger_account_class
               FROM meterline_app';
    EXECUTE 'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO meterline_app';
    EXECUTE 'GRANT EXECUTE ON FUNCTION ledger_fold_balances() TO meterline_app';
    -- tables later migrations create are usable by the application (each may revoke what it must)
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO meterline_app';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO meterline_app';
END $$;
