-- Replicas that use the same partner credential divide its rate limit: each one sending with
-- it keeps a row here fresh, and takes the configured rate divided by the fresh rows.
CREATE TABLE sync.rate_budget_members (
    budget text NOT NULL,
    member uuid NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (budget, member)
);
COMMENT ON TABLE sync.rate_budget_members IS
    'Processes sending with one partner credential now, so each takes its share of the configured rate; a row not renewed for a few seconds no longer counts.';
COMMENT ON COLUMN sync.rate_budget_members.budget IS
    'The partner and a digest of the client id (never the id itself).';
COMMENT ON COLUMN sync.rate_budget_members.member IS 'One process''s client, random per start.';
COMMENT ON COLUMN sync.rate_budget_members.seen_at IS 'When the process last said it was sending.';
