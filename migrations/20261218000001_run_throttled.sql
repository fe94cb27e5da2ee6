-- How many of a run's requests the partner answered with 429: a pass that was slower than
-- requests / rate says here whether the partner refused it.
ALTER TABLE sync.runs ADD COLUMN throttled bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN sync.runs.throttled IS
    'Requests of this run the partner answered with 429 Too Many Requests (each was retried or failed the request).';
