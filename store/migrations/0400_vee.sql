-- Validation, estimation and editing (VEE) of readings, and alerts for metering supervisors.
--
-- Raw readings (`reading`) are never changed. What validation concludes about a reading lives
-- here, beside it:
--   * reading_validation: one row per reading that a rule flagged or a person reviewed (a
--     reading without a row is valid): the rules that fired, the automatic state, the review
--     decision and a corrected value with its method;
--   * reading_estimate: estimated period-end reads where no acceptable real read exists, with
--     the method; a real read that arrives later inside the estimate's window replaces it;
--   * reading_effective (replaced here, same columns in the same order, one appended): what a
--     bill may use: raw reads minus the ones held or rejected, with corrections, plus estimates.
-- Consumption from cumulative registers (rollover, reverse flow, meter replacement) is defined
-- once: meterline_consumption() here and meterline.store.consumption for array code, kept equal
-- by tests; reading_consumption applies it between consecutive effective reads.

CREATE TABLE vee_run (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL REFERENCES company(id),
    mode        text NOT NULL CHECK (mode IN ('batch', 'ingest')),
    period      text CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    starts_at   timestamptz,                      -- period boundaries (company-local midnights)
    ends_at     timestamptz,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    stats       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_by  text
);
CREATE INDEX vee_run_company_idx ON vee_run (company_id, period, started_at);

-- a rule that failed on one meter's data: recorded, and the run went on with the others
CREATE TABLE vee_failure (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint REFERENCES vee_run(id),
    company_id  integer REFERENCES company(id),
    meter_id    bigint,
    stage       text NOT NULL,                    -- rule code or stage: kernel, estimation, imbalance, ...
    error       text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vee_failure_run_idx ON vee_failure (run_id);

CREATE TABLE reading_validation (
    meter_id        bigint      NOT NULL,
    ts              timestamptz NOT NULL,
    quantity        smallint    NOT NULL,
    company_id      integer     NOT NULL REFERENCES company(id),
    flags           text[]      NOT NULL DEFAULT '{}',  -- codes of the rules that fired
    -- automatic state: valid (nothing fired), flagged (kept, with flags), held (kept out of
    -- billing until reviewed or explained by the next read), rejected (kept out)
    auto_state      text        NOT NULL DEFAULT 'valid' CHECK (auto_state IN ('valid', 'flagged', 'held', 'rejected')),
    -- a person's decision, which wins over the automatic state
    review          text        CHECK (review IN ('approved', 'overridden', 'reread_requested')),
    corrected_value bigint      CHECK (corrected_value >= 0),
    method          text,                             -- how corrected_value was obtained
    consumption     bigint,                           -- base units since the previous accepted read (× multiplier)
    detail          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    run_id          bigint,
    validated_at    timestamptz NOT NULL DEFAULT now(),
    reviewed_by     text,
    reviewed_at     timestamptz,
    PRIMARY KEY (meter_id, ts, quantity),
    CHECK ((review IS NOT DISTINCT FROM 'overridden') = (corrected_value IS NOT NULL))
);
CREATE INDEX reading_validation_company_idx ON reading_validation (company_id, ts);

CREATE TABLE reading_estimate (
    meter_id         bigint      NOT NULL REFERENCES meter(id),
    ts               timestamptz NOT NULL,            -- the period boundary the estimate stands for
    quantity         smallint    NOT NULL,
    company_id       integer     NOT NULL REFERENCES company(id),
    period           text        NOT NULL,
    value            bigint      NOT NULL CHECK (value >= 0),
    method           text        NOT NULL,            -- interpolation, same_period_last_year, average_last_periods, override
    basis            jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- the reads and figures it came from
    window_before    interval    NOT NULL,            -- a real read this close to ts replaces the estimate
    window_after     interval    NOT NULL,
    run_id           bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    superseded_at    timestamptz,                     -- a real read arrived: no longer effective
    superseded_by_ts timestamptz,
    PRIMARY KEY (meter_id, ts, quantity)
);
CREATE INDEX reading_estimate_company_idx ON reading_estimate (company_id, period);

-- does a reading count for billing? (no validation row, or kept automatically, or approved / corrected)
CREATE FUNCTION meterline_reading_accepted(auto_state text, review text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN review IN ('approved', 'overridden') THEN true
        WHEN review = 'reread_requested' THEN false
        ELSE coalesce(auto_state, 'valid') IN ('valid', 'flagged')
    END
$$;

-- The readings a bill may use (the contract with rating; the first eight columns are those of
-- 0004, in the same order): raw reads that validation kept or a person approved (with a
-- person's corrected value where there is one), plus estimates that no acceptable real read
-- within their window has replaced. `state`: valid, flagged, approved, overridden, estimated.
CREATE OR REPLACE VIEW reading_effective AS
SELECT r.meter_id,
       r.ts,
       r.quantity,
       coalesce(v.corrected_value, r.value) AS value,
       r.source,
       false AS estimated,
       v.method,
       r.company_id,
       coalesce(v.review, v.auto_state, 'valid') AS state
FROM reading r
LEFT JOIN reading_validation v ON v.meter_id = r.meter_id AND v.ts = r.ts AND v.quantity = r.quantity
WHERE v.meter_id IS NULL OR meterline_reading_accepted(v.auto_state, v.review)
UNION ALL
SELECT e.meter_id,
       e.ts,
       e.quantity,
       e.value,
       11::smallint AS source,                        -- reading_source 'estimate'
       true AS estimated,
       e.method,
       e.company_id,
       'estimated' AS state
FROM reading_estimate e
WHERE e.superseded_at IS NULL
  AND NOT EXISTS (
        SELECT 1
        FROM reading r
        LEFT JOIN reading_validation v ON v.meter_id = r.meter_id AND v.ts = r.ts AND v.quantity = r.quantity
        WHERE r.meter_id = e.meter_id AND r.quantity = e.quantity
          AND r.ts >= e.ts - e.window_before AND r.ts <= e.ts + e.window_after
          AND (v.meter_id IS NULL OR meterline_reading_accepted(v.auto_state, v.review)));

-- Register advance between two reads of one device (register units, before the multiplier):
-- forward; rollover when going forward through the register's wrap is shorter than going back
-- and within rollover_window × modulus; reverse (negative, reverse flow) when the register went
-- back by at most reverse_max; otherwise reset (the register restarted: the advance is the
-- current value, counted from zero).
CREATE FUNCTION meterline_register_advance(
    prev_value bigint, cur_value bigint, modulus bigint,
    reverse_max bigint DEFAULT 200, rollover_window double precision DEFAULT 0.1,
    OUT advance bigint, OUT kind text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    back bigint;
    wrapped bigint;
BEGIN
    IF cur_value >= prev_value THEN
        advance := cur_value - prev_value; kind := 'forward'; RETURN;
    END IF;
    back := prev_value - cur_value;
    wrapped := cur_value + modulus - prev_value;
    IF wrapped < back AND wrapped <= rollover_window * modulus THEN
        advance := wrapped; kind := 'rollover';
    ELSIF back <= reverse_max THEN
        advance := -back; kind := 'reverse';
    ELSE
        advance := cur_value; kind := 'reset';
    END IF;
END $$;

-- Consumption between two reads of a metering point, in base units (× multiplier). When the
-- device was replaced in between, final_old is the removed device's final register,
-- initial_new the new device's initial register, and between_devices what devices installed
-- and removed in between counted; kind is then 'replacement' (or 'reset' when a segment reset).
-- The same definition as meterline.store.consumption.consumption (kept equal by tests).
CREATE FUNCTION meterline_consumption(
    prev_value bigint, cur_value bigint, modulus bigint, multiplier integer DEFAULT 1,
    final_old bigint DEFAULT NULL, initial_new bigint DEFAULT NULL, between_devices bigint DEFAULT 0,
    reverse_max bigint DEFAULT 200, rollover_window double precision DEFAULT 0.1,
    OUT consumption bigint, OUT kind text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    a1 record;
    a2 record;
BEGIN
    IF final_old IS NULL THEN
        SELECT * INTO a1 FROM meterline_register_advance(prev_value, cur_value, modulus, reverse_max, rollover_window);
        consumption := a1.advance * multiplier; kind := a1.kind; RETURN;
    END IF;
    SELECT * INTO a1 FROM meterline_register_advance(prev_value, final_old, modulus, reverse_max, rollover_window);
    SELECT * INTO a2 FROM meterline_register_advance(coalesce(initial_new, 0), cur_value, modulus, reverse_max, rollover_window);
    consumption := (a1.advance + coalesce(between_devices, 0) + a2.advance) * multiplier;
    kind := CASE WHEN a1.kind = 'reset' OR a2.kind = 'reset' THEN 'reset' ELSE 'replacement' END;
END $$;

-- consumption between consecutive effective reads of each meter and quantity
CREATE VIEW reading_consumption AS
SELECT e.meter_id, e.quantity, e.prev_ts, e.ts, e.prev_value, e.value,
       c.consumption, c.kind, e.prev_estimated, e.estimated, e.company_id
FROM (
    SELECT r.*,
           lag(r.ts) OVER w AS prev_ts,
           lag(r.value) OVER w AS prev_value,
           lag(r.estimated) OVER w AS prev_estimated
    FROM reading_effective r
    WINDOW w AS (PARTITION BY r.meter_id, r.quantity ORDER BY r.ts)
) e
JOIN meter m ON m.id = e.meter_id
LEFT JOIN LATERAL (
    SELECT (array_agg(i.prev_final ORDER BY i.installed_at))[1] AS final_old,
           (array_agg(i.initial_register ORDER BY i.installed_at DESC))[1] AS initial_new,
           coalesce(sum((i.final_register - i.initial_register + m.register_modulus) % m.register_modulus)
                    FILTER (WHERE i.removed_at <= e.ts), 0)::bigint AS between_devices
    FROM (SELECT mi.*, lag(mi.final_register) OVER (ORDER BY mi.installed_at) AS prev_final
          FROM meter_installation mi WHERE mi.meter_id = e.meter_id) i
    WHERE i.installed_at > e.prev_ts AND i.installed_at <= e.ts AND i.prev_final IS NOT NULL
) rp ON true
CROSS JOIN LATERAL meterline_consumption(e.prev_value, e.value, m.register_modulus, m.multiplier,
                                         rp.final_old, rp.initial_new, rp.between_devices) c
WHERE e.prev_ts IS NOT NULL;

-- Alerts (table in 0001): routed to a person, the event that last raised them, and the period
-- for period-level rules. Book-level alerts (no meter) are one open per (book, rule).
ALTER TABLE alert ADD COLUMN assignee text;              -- meter_book.supervisor when raised
ALTER TABLE alert ADD COLUMN event_ts timestamptz;       -- time of the reading / period that raised it last
ALTER TABLE alert ADD COLUMN period text;
CREATE UNIQUE INDEX alert_one_open_book_idx ON alert (book_id, rule) WHERE meter_id IS NULL AND status <> 'resolved';
CREATE INDEX alert_assignee_idx ON alert (company_id, assignee, status);

-- outbox of alert events for the sinks (MQTT, webhook): written in the transaction that
-- changed the alert, delivered afterwards, at least once, by the dispatcher
CREATE TABLE alert_event (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL REFERENCES company(id),
    alert_id    bigint NOT NULL REFERENCES alert(id),
    kind        text NOT NULL CHECK (kind IN ('opened', 'updated', 'acknowledged', 'resolved')),
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_event_alert_idx ON alert_event (alert_id);

CREATE TABLE alert_delivery (
    event_id     bigint NOT NULL REFERENCES alert_event(id),
    sink         text NOT NULL,
    status       text NOT NULL CHECK (status IN ('delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, sink)
);

-- every review action on a reading or an estimate: who, when, before and after; append-only
CREATE TABLE reading_review_action (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id  integer NOT NULL REFERENCES company(id),
    meter_id    bigint NOT NULL REFERENCES meter(id),
    ts          timestamptz NOT NULL,
    quantity    smallint NOT NULL,
    target      text NOT NULL CHECK (target IN ('reading', 'estimate')),
    action      text NOT NULL CHECK (action IN ('approve', 'override', 'request_reread')),
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    before      jsonb NOT NULL,
    after       jsonb NOT NULL,
    note        text
);
CREATE INDEX reading_review_action_meter_idx ON reading_review_action (meter_id, ts);

CREATE TRIGGER reading_review_action_append_only BEFORE UPDATE OR DELETE ON reading_review_action
    FOR EACH ROW EXECUTE FUNCTION meterline_refuse_change();
CREATE TRIGGER reading_review_action_no_truncate BEFORE TRUNCATE ON reading_review_action
    FOR EACH STATEMENT EXECUTE FUNCTION meterline_refuse_change();
