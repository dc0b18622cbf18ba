-- Payments audited once per INSERT statement instead of once per row.
--
-- 0101 captured every inserted payment as its own audit_log row (the row image in `after`): a
-- bank return file or a bulk import of 50,000 payments wrote 50,000 audit rows with four
-- indexes, a quarter of the time of recording them (benchmarks/bench_ledger.py).
-- A payment never changes once written (payment_append_only refuses UPDATE and DELETE for
-- every role, payment_no_truncate TRUNCATE), so the payment row is its own after-image for
-- ever; what only the audit trail knows is who wrote it, from where and when. That is the same
-- for every row of one statement, so one audit row per statement and company now says it:
--
--   action 'insert', entity_type 'payment', at / actor / origin / xact as before,
--   entity_id   the payment id when the statement wrote one payment (the API's path), else NULL;
--   account_id  the account when all the statement's payments are of one account, else NULL;
--   after       {"rows": n, "amount": total, "ids": [every payment id, ascending]}.
--
-- For every payment, payment_audit (below) gives that who / when / from where: one row per
-- payment, from the statement rows' `ids` and from the per-row rows 0101 wrote before this
-- migration (whose `after` is the row itself). Account history still lists every payment (its
-- "payment" source reads the payment table); an audit row of a one-account statement also
-- appears there, as before.
-- UPDATE and DELETE on payment stay captured per row by 0101's triggers (they are refused, so
-- they never write anything anyway).

CREATE FUNCTION meterline_audit_capture_statement() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO audit_log (company_id, actor, origin, action, entity_type, entity_id, account_id, before, after)
    SELECT r.company_id, meterline_audit_actor(), meterline_audit_origin(), 'insert', TG_TABLE_NAME,
           CASE WHEN count(*) = 1 THEN min(r.id)::text END,
           CASE WHEN count(r.account_id) = count(*) AND min(r.account_id) = max(r.account_id) THEN min(r.account_id) END,
           NULL,
           jsonb_build_object('rows', count(*), 'amount', sum(r.amount), 'ids', jsonb_agg(r.id ORDER BY r.id))
      FROM new_rows r
     GROUP BY r.company_id;
    RETURN NULL;
END $fn$;

DROP TRIGGER meterline_audit_insert ON payment;
CREATE TRIGGER meterline_audit_insert AFTER INSERT ON payment REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_audit_capture_statement();

-- who wrote each payment, when and from where (both forms of audit row)
CREATE VIEW payment_audit AS
SELECT ids.payment_id, l.company_id, l.at, l.actor, l.origin, l.xact, l.id AS audit_id,
       (l.after ? 'ids') AS per_statement
  FROM audit_log l
 CROSS JOIN LATERAL (
        SELECT e::bigint AS payment_id
          FROM jsonb_array_elements_text(CASE WHEN l.after ? 'ids' THEN l.after -> 'ids'
                                              ELSE jsonb_build_array(l.after -> 'id') END) AS e) ids
 WHERE l.entity_type = 'payment' AND l.action = 'insert';
