-- A bill records the apportioned litres its consumption holds (bill.apportioned), so that
-- consumption - apportioned is the volume its tiers priced. Annual cumulative tiers count exactly
-- that volume towards the year to date of later bills (rating/run.py, _YTD): the account's meters
-- that are not master meters. The apportioned master-meter residual is priced on its own
-- 'apportioned' lines (at the component's apportioned_price), never occupies tier volume in its
-- own bill, and so does not in later ones either; a master meter the account holds is never part
-- of its volume. Until now the year to date summed meter_period_read over all of the account's
-- meters, its master meters included.
--
-- Bills written before this migration are filled in from their apportioned lines: each part of a
-- bill (tariff version, part start) has one apportioned line per component, every one with that
-- part's apportioned litres. One pass over bill_line (a one-off).

ALTER TABLE bill ADD COLUMN apportioned bigint NOT NULL DEFAULT 0;

SELECT set_config('meterline.actor', 'migration 0640_bill_apportioned', true);

UPDATE bill b SET apportioned = x.litres
  FROM (SELECT p.bill_id, sum(p.litres)::bigint AS litres
          FROM (SELECT l.bill_id, max(l.quantity) AS litres
                  FROM bill_line l
                 WHERE l.source->>'kind' = 'apportioned'
                 GROUP BY l.bill_id, l.tariff_version, l.source->>'from') p
         GROUP BY p.bill_id) x
 WHERE b.id = x.bill_id AND x.litres > 0;

ALTER TABLE bill ADD CONSTRAINT bill_apportioned_check CHECK (apportioned >= 0 AND apportioned <= consumption);
