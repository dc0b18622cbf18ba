-- Personal data: customer.id_number and customer.phone hold only ciphertext envelopes
-- 'ml1:<key id>:<base64url>' written by store.personal (AES-SIV, the key from configuration;
-- the key id lets keys rotate: `meterline personal reencrypt`). Plain text is refused by the
-- database. NOT VALID: rows from before this migration are checked by nobody until
-- `meterline personal reencrypt` has encrypted them, which then validates the constraints.

ALTER TABLE customer ADD CONSTRAINT customer_id_number_encrypted
    CHECK (id_number IS NULL OR id_number ~ '^ml1:[A-Za-z0-9_-]{1,32}:[A-Za-z0-9_-]+={0,2}$') NOT VALID;
ALTER TABLE customer ADD CONSTRAINT customer_phone_encrypted
    CHECK (phone IS NULL OR phone ~ '^ml1:[A-Za-z0-9_-]{1,32}:[A-Za-z0-9_-]+={0,2}$') NOT VALID;
