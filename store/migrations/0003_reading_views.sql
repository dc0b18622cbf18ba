-- Views over readings that read the same on both storage paths.

-- daily figures per meter and local day; consumption is the register advance since the
-- previous day's last value (NULL on a meter's first day, negative when the register went
-- backwards: validation decides what that means)
CREATE VIEW reading_daily AS
SELECT d.meter_id,
       d.quantity,
       (d.bucket AT TIME ZONE (SELECT value FROM meterline_meta WHERE key = 'day_timezone'))::date AS day,
       d.first_ts, d.first_value, d.last_ts, d.last_value, d.min_value, d.max_value, d.n,
       d.last_value - lag(d.last_value) OVER (PARTITION BY d.meter_id, d.quantity ORDER BY d.bucket) AS consumption
FROM reading_daily_agg d;

-- readings with their names resolved, for people
CREATE VIEW reading_named AS
SELECT r.meter_id, m.serial, r.ts, q.name AS quantity, r.value, q.base_unit, s.name AS source,
       r.status, r.source_ref, r.received_at, r.committed_at, r.company_id
FROM reading r
JOIN meter m ON m.id = r.meter_id
JOIN quantity q ON q.code = r.quantity
JOIN reading_source s ON s.code = r.source;
