-- Apportionment shares come tens of thousands a run (one per account of a master–sub tree): the
-- references of 0500's foreign keys are checked once per INSERT statement, set-based, like the
-- bills' in 0500, instead of four checks per row (most of the apportionment stage of
-- benchmarks/bench_billing.py). Correlated probes on the referenced primary keys, sequential scans
-- and JIT off inside them, as in 0500.
ALTER TABLE apportionment_share DROP CONSTRAINT apportionment_share_account_id_fkey,
    DROP CONSTRAINT apportionment_share_company_id_fkey, DROP CONSTRAINT apportionment_share_via_meter_id_fkey,
    DROP CONSTRAINT apportionment_share_master_meter_id_period_fkey;

CREATE FUNCTION meterline_apportionment_share_statement_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    SET enable_seqscan = off SET jit = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.master_meter_id, n.period, n.account_id, n.company_id INTO bad
      FROM new_rows n
     WHERE NOT EXISTS (SELECT 1 FROM apportionment a WHERE a.master_meter_id = n.master_meter_id
                          AND a.period = n.period AND a.company_id = n.company_id)
        OR NOT EXISTS (SELECT 1 FROM account a WHERE a.id = n.account_id AND a.company_id = n.company_id)
        OR NOT EXISTS (SELECT 1 FROM meter m WHERE m.id = n.via_meter_id AND m.company_id = n.company_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'apportionment share of master meter % (%) to account %: the apportionment, the account or the meter is missing or of another company than %',
            bad.master_meter_id, bad.period, bad.account_id, bad.company_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER apportionment_share_statement_check AFTER INSERT ON apportionment_share
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meterline_apportionment_share_statement_check();
