-- Audit trail: who did what, when, from where, to which entity, with the row before and after.
--
-- Append-only (UPDATE, DELETE and TRUNCATE are refused by triggers; the application role may
-- only read and insert). Rows come from two places:
--   * database capture: statement-level triggers with transition tables on the audited tables
--     (meterline_audit_table() attaches them) record one row per inserted, changed or deleted
--     row, the actor and origin taken from the session settings meterline.actor and
--     meterline.origin (store.audit.set_actor; 'db:<login>' when a session did not say);
--     an UPDATE that changes nothing records nothing;
--   * the application: store.audit.record() for actions that are not a row change of an
--     audited table (an approval, an export of personal data, a billing run's start, ...).
-- account_id ties a row to the account whose history it belongs to (`meterline audit --account`).

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id  integer REFERENCES company(id),    -- NULL: a group-level action (users, companies)
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    origin      text NOT NULL,                     -- cli:<host>, api:<client address>, db:<login>
    action      text NOT NULL,                     -- insert | update | delete | <area>.<verb>
    entity_type text NOT NULL,                     -- table name or business entity
    entity_id   text,
    account_id  bigint,
    before      jsonb,
    after       jsonb,
    xact        bigint NOT NULL DEFAULT txid_current()
);
CREATE INDEX audit_log_account_idx ON audit_log (company_id, account_id, at) WHERE account_id IS NOT NULL;
CREATE INDEX audit_log_actor_idx ON audit_log (company_id, actor, at);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_refuse_change();

INSERT INTO meterline_append_only VALUES ('audit_log');

-- group-level actions (company_id NULL) may be recorded from any scope; only group scope reads them
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_group_level_insert ON audit_log FOR INSERT WITH CHECK (company_id IS NULL);

CREATE FUNCTION meterline_audit_actor() RETURNS text LANGUAGE sql STABLE AS
$$ SELECT coalesce(nullif(current_setting('meterline.actor', true), ''), 'db:' || session_user) $$;

CREATE FUNCTION meterline_audit_origin() RETURNS text LANGUAGE sql STABLE AS
$$ SELECT coalesce(nullif(current_setting('meterline.origin', true), ''),
                   'db:' || coalesce(host(inet_client_addr()), 'local')) $$;

-- statement trigger: TG_ARGV = (key columns joining old and new rows, entity id expression over
-- r, account id expression over r); transition tables old_rows / new_rows
CREATE FUNCTION meterline_audit_capture() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    cols   constant text := 'company_id, actor, origin, action, entity_type, entity_id, account_id, before, after';
    actor  constant text := meterline_audit_actor();
    origin constant text := meterline_audit_origin();
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO audit_log (%s) SELECT r.company_id, $1, $2, ''insert'', %L, %s, %s, NULL, to_jsonb(r) FROM new_rows r',
                       cols, TG_TABLE_NAME, TG_ARGV[1], TG_ARGV[2]) USING actor, origin;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO audit_log (%s) SELECT r.company_id, $1, $2, ''delete'', %L, %s, %s, to_jsonb(r), NULL FROM old_rows r',
                       cols, TG_TABLE_NAME, TG_ARGV[1], TG_ARGV[2]) USING actor, origin;
    ELSE
        EXECUTE format('INSERT INTO audit_log (%s) SELECT r.company_id, $1, $2, ''update'', %L, %s, %s, to_jsonb(o), to_jsonb(r) '
                       'FROM new_rows r JOIN old_rows o USING (%s) WHERE to_jsonb(o) IS DISTINCT FROM to_jsonb(r)',
                       cols, TG_TABLE_NAME, TG_ARGV[1], TG_ARGV[2], TG_ARGV[0]) USING actor, origin;
    END IF;
    RETURN NULL;
END $fn$;

-- Attach audit capture to a table (idempotent). ops: which of INSERT, UPDATE, DELETE;
-- key_cols: columns that identify a row across an UPDATE; entity_expr / account_expr: SQL over
-- the row alias r (default r.id::text, and r.account_id when the table has that column).
CREATE FUNCTION meterline_audit_table(
    tbl regclass,
    ops text[] DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE'],
    key_cols text DEFAULT 'id',
    entity_expr text DEFAULT NULL,
    account_expr text DEFAULT NULL
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    op text;
    tname text := (SELECT relname FROM pg_class WHERE oid = tbl);
BEGIN
    entity_expr := coalesce(entity_expr, 'r.id::text');
    IF account_expr IS NULL THEN
        account_expr := CASE WHEN EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = tbl AND attname = 'account_id'
                                          AND NOT attisdropped) THEN 'r.account_id' ELSE 'NULL::bigint' END;
    END IF;
    FOREACH op IN ARRAY ops LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'meterline_audit_' || lower(op), tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s TABLE AS %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION meterline_audit_capture(%L, %L, %L)',
                       'meterline_audit_' || lower(op), op, tbl,
                       CASE op WHEN 'INSERT' THEN 'NEW' WHEN 'DELETE' THEN 'OLD' ELSE 'OLD TABLE AS old_rows NEW' END,
                       CASE op WHEN 'DELETE' THEN 'old_rows' ELSE 'new_rows' END,
                       key_cols, entity_expr, account_expr);
    END LOOP;
END $fn$;

-- registry
SELECT meterline_audit_table('customer');
SELECT meterline_audit_table('account', account_expr => 'r.id');
SELECT meterline_audit_table('meter');
SELECT meterline_audit_table('meter_book');
SELECT meterline_audit_table('district');
SELECT meterline_audit_table('use_type', key_cols => 'company_id, code', entity_expr => 'r.code');
SELECT meterline_audit_table('meter_installation',
                             account_expr => '(SELECT m.account_id FROM meter m WHERE m.id = r.meter_id)');
-- money and review actions
SELECT meterline_audit_table('payment');
SELECT meterline_audit_table('billing_run');
SELECT meterline_audit_table('bill', ARRAY['UPDATE', 'DELETE']);          -- issued bills arrive with their run
SELECT meterline_audit_table('alert', ARRAY['UPDATE', 'DELETE']);         -- acknowledge / resolve
-- who may do what (group-level rows carry no company)
SELECT meterline_audit_table('staff_role', ARRAY['INSERT', 'DELETE'], entity_expr => 'r.user_id::text || '':'' || r.role');
