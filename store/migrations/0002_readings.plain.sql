-- Readings on plain PostgreSQL: declaratively range-partitioned by month on ts.
-- Partitions are created ahead (and on demand by the writer) by meterline itself:
-- store.partitions / `meterline db maintain`. There is deliberately no DEFAULT partition:
-- creating a month later would have to move rows out of it under an exclusive lock.
--
-- value is the cumulative register in the quantity's base unit (litres for water and gas
-- volume, Wh for energy), exactly as the meter reported it (times nothing: the multiplier is
-- applied when consumption is derived). Raw readings are never updated.

CREATE TABLE reading (
    meter_id     bigint      NOT NULL,
    ts           timestamptz NOT NULL,
    value        bigint      NOT NULL CHECK (value >= 0),
    received_at  timestamptz NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    company_id   integer     NOT NULL,
    status       integer     NOT NULL DEFAULT 0,     -- meter-reported status bits (ingest.model.MeterStatus)
    quantity     smallint    NOT NULL,               -- quantity.code
    source       smallint    NOT NULL,               -- reading_source.code
    source_ref   text,                               -- message id, file:line, ...
    PRIMARY KEY (meter_id, ts, quantity)
) PARTITION BY RANGE (ts);

-- Daily aggregate per meter and local day (bucket = local midnight as timestamptz, in the
-- time zone recorded in meterline_meta 'day_timezone'). On this path it is a table that
-- `meterline db maintain` refreshes; on TimescaleDB it is a continuous aggregate with the same
-- columns, so the view `reading_daily` below reads the same on both paths.
CREATE TABLE reading_daily_agg (
    meter_id    bigint      NOT NULL,
    quantity    smallint    NOT NULL,
    bucket      timestamptz NOT NULL,
    first_ts    timestamptz NOT NULL,
    first_value bigint      NOT NULL,
    last_ts     timestamptz NOT NULL,
    last_value  bigint      NOT NULL,
    min_value   bigint      NOT NULL,
    max_value   bigint      NOT NULL,
    n           bigint      NOT NULL,
    PRIMARY KEY (meter_id, quantity, bucket)
);
