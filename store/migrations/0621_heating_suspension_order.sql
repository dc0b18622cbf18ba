-- Heating suspensions (0620): a stop with its resume date on or before it is refused with that
-- reason (check_violation), not with the overlap check's "range lower bound must be less than or
-- equal to range upper bound": the BEFORE trigger ran ahead of the table's CHECK.

CREATE OR REPLACE FUNCTION meterline_heating_suspension_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    other record;
BEGIN
    -- dates in the wrong order are refused here with the table's own reason: the overlap test
    -- below would otherwise fail first, building a range whose end precedes its start
    IF NEW.resume_on IS NOT NULL AND NEW.resume_on <= NEW.stop_on THEN
        RAISE EXCEPTION 'heating suspension of account %: resume date % is not after the stop date %',
            NEW.account_id, NEW.resume_on, NEW.stop_on USING ERRCODE = 'check_violation';
    END IF;
    -- the account row locked: two suspensions written at once for one account are checked in turn
    PERFORM 1 FROM account a WHERE a.id = NEW.account_id AND a.company_id = NEW.company_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'heating suspension: account % is not an account of company %', NEW.account_id, NEW.company_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT s.id, s.stop_on, s.resume_on INTO other
      FROM heating_suspension s
     WHERE s.account_id = NEW.account_id AND s.id <> NEW.id
       AND daterange(s.stop_on, s.resume_on) && daterange(NEW.stop_on, NEW.resume_on)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'heating suspension of account % from % overlaps suspension % (% to %)', NEW.account_id,
            NEW.stop_on, other.id, other.stop_on, coalesce(other.resume_on::text, 'not resumed')
            USING ERRCODE = 'exclusion_violation';
    END IF;
    RETURN NEW;
END $$;
