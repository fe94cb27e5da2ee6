-- A refresh request, once sent, may rotate the refresh token at the bank even if its answer is
-- never saved (the process is killed in between). The mark below is committed before the
-- request is sent and cleared with its outcome, so such a refresh is found afterwards.

ALTER TABLE sync.oauth_grants
    -- Set just before a refresh request is sent, cleared when its outcome is recorded. While the
    -- refresh runs, its process holds the grant's advisory lock; a mark with no lock holder was
    -- left by a process that stopped in between.
    ADD COLUMN refresh_started_at timestamptz,
    -- With refresh_in_doubt_since: the refresh was interrupted (its process stopped) rather than
    -- left unanswered by the bank. Such a refresh token is never sent again automatically.
    ADD COLUMN refresh_interrupted boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN sync.oauth_grants.refresh_in_doubt_since IS 'A refresh sent at this time got no saved answer: the refresh token may be spent. See refresh_interrupted.';
COMMENT ON COLUMN sync.oauth_grants.refresh_started_at IS 'A refresh request is in flight since this time (its process holds the grant''s advisory lock).';
COMMENT ON COLUMN sync.oauth_grants.refresh_interrupted IS 'The refresh in doubt was interrupted by a stopped process: it is not retried automatically; see README, Rabobank consents.';
