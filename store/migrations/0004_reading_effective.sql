-- The readings a bill may use. For now every raw reading, not estimated; validation (VEE)
-- replaces this view to leave out rejected readings and add estimates, and rating reads only
-- this view, never `reading` directly.
CREATE VIEW reading_effective AS
SELECT r.meter_id,
       r.ts,
       r.quantity,
       r.value,
       r.source,
       false       AS estimated,
       NULL::text  AS method,
       r.company_id
FROM reading r;
