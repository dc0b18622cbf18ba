-- Bills are never deleted: a wrong bill is reversed (红冲, ledger.bills.reverse_bill) and billed
-- again. 0500 replaced the per-row foreign keys of bill and bill_line with once-per-statement
-- checks on INSERT; this migration keeps the other side of those references, so nothing a bill
-- points to or that points to a bill can disappear:
--   * bill, bill_line and billing_run refuse DELETE and TRUNCATE, for every role;
--   * bill_line is append-only for the application role (a line is written once);
--   * an account with bills refuses DELETE (close it instead: account.status = 'closed').

CREATE TRIGGER bill_no_delete BEFORE DELETE ON bill
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_delete();
CREATE TRIGGER bill_no_truncate BEFORE TRUNCATE ON bill
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_refuse_delete();
CREATE TRIGGER bill_line_no_delete BEFORE DELETE ON bill_line
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_delete();
CREATE TRIGGER bill_line_no_truncate BEFORE TRUNCATE ON bill_line
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_refuse_delete();
CREATE TRIGGER billing_run_no_delete BEFORE DELETE ON billing_run
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_delete();
CREATE TRIGGER billing_run_no_truncate BEFORE TRUNCATE ON billing_run
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_refuse_delete();

INSERT INTO meterline_append_only (relname) VALUES ('bill_line') ON CONFLICT DO NOTHING;

-- SECURITY DEFINER: the bills of the account are found whatever the caller's scope
CREATE FUNCTION meterline_account_keep_billed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM bill b WHERE b.account_id = OLD.id) THEN
        RAISE EXCEPTION 'account % (%) has bills and is never deleted: close it instead', OLD.code, OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER account_keep_billed BEFORE DELETE ON account
    FOR EACH ROW EXECUTE FUNCTION meterline_account_keep_billed();
