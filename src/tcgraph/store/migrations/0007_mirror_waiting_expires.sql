-- A waiting status expires with its task (the status's `expires`), so that
-- statuses whose definition never came do not pile up (store/expiry.py).
ALTER TABLE mirror_waiting ADD COLUMN expires timestamptz;   -- NULL: the status did not say
CREATE INDEX mirror_waiting_expires ON mirror_waiting (expires);
