-- `partner-sync resync` requests, delivered to every replica by NOTIFY on channel partner_sync.
-- One row per requested job; the first replica to claim a row runs it, so exactly one does.
CREATE TABLE sync.trigger_requests (
    id            uuid        NOT NULL,
    job           text        NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    requested_by  text        NOT NULL DEFAULT '',
    claimed_by    text,
    claimed_at    timestamptz,
    run_id        bigint      REFERENCES sync.runs (id),
    -- Why no run answers the request (e.g. another replica was already running the job).
    skipped       text,
    PRIMARY KEY (id, job)
);
CREATE INDEX trigger_requests_unclaimed_idx ON sync.trigger_requests (requested_at)
    WHERE claimed_by IS NULL;
COMMENT ON TABLE sync.trigger_requests IS 'Resync requests sent with `partner-sync resync`: who claimed each job and which run answered it.';

-- One row per cron tick a replica took: with several replicas each tick runs once, even when a
-- run ends before another replica's scheduler fires for the same tick.
CREATE TABLE sync.schedule_ticks (
    job        text        NOT NULL,
    tick_at    timestamptz NOT NULL,
    claimed_by text        NOT NULL,
    PRIMARY KEY (job, tick_at)
);
COMMENT ON TABLE sync.schedule_ticks IS 'Cron ticks claimed by a replica, so each tick runs once across replicas.';
