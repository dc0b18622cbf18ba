-- meterline: no-transaction
-- Readings on TimescaleDB: a hypertable (7-day chunks) and a continuous aggregate of daily
-- first/last/min/max per meter. Same columns and key as the plain path
-- (0002_readings.plain.sql), so queries read the same on both. Compression (segmented by
-- meter, after 60 days) is switched on after the migrations by store.timescale, because
-- TimescaleDB cannot compress a row-secured table and that is a deployment's choice.

CREATE TABLE reading (
    meter_id     bigint      NOT NULL,
    ts           timestamptz NOT NULL,
    value        bigint      NOT NULL CHECK (value >= 0),
    received_at  timestamptz NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    company_id   integer     NOT NULL,
    status       integer     NOT NULL DEFAULT 0,
    quantity     smallint    NOT NULL,
    source       smallint    NOT NULL,
    source_ref   text,
    PRIMARY KEY (meter_id, ts, quantity)
);

SELECT create_hypertable('reading', 'ts', chunk_time_interval => INTERVAL '7 days');

CREATE MATERIALIZED VIEW reading_daily_agg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT meter_id,
       quantity,
       time_bucket(INTERVAL '1 day', ts, '{{day_timezone}}') AS bucket,
       first(ts, ts)    AS first_ts,
       first(value, ts) AS first_value,
       last(ts, ts)     AS last_ts,
       last(value, ts)  AS last_value,
       min(value)       AS min_value,
       max(value)       AS max_value,
       count(*)         AS n
FROM reading
GROUP BY meter_id, quantity, time_bucket(INTERVAL '1 day', ts, '{{day_timezone}}')
WITH NO DATA;

SELECT add_continuous_aggregate_policy('reading_daily_agg',
    start_offset => INTERVAL '40 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');
