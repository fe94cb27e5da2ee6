-- OAuth authorization-code grants (Rabobank consents) and the pending `state` values of
-- consents being given. Tokens are stored only sealed (AES-256-GCM, see src/crypto.rs).

-- Items a run could not process (grants that failed to rotate, users that failed to mirror).
ALTER TABLE sync.runs ADD COLUMN failed bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN sync.runs.failed IS 'Items the run could not process; the error column names them.';

CREATE TABLE sync.oauth_states (
    -- SHA-256 of the state: the table alone is not enough to answer a callback.
    state_hash  bytea       PRIMARY KEY,
    provider    text        NOT NULL,
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    outcome     text        CHECK (outcome IN ('granted', 'denied', 'failed')),
    error       text,
    grant_id    uuid
);
CREATE INDEX oauth_states_expires_idx ON sync.oauth_states (expires_at);
COMMENT ON TABLE sync.oauth_states IS 'Single-use OAuth state values of consents started with `rabobank authorize`, and how each ended.';

CREATE TABLE sync.oauth_grants (
    id                     uuid        PRIMARY KEY,
    provider               text        NOT NULL,
    label                  text,
    status                 text        NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'needs_reconsent', 'revoked')),
    -- Id of the key that sealed both tokens (a fingerprint, not the key).
    key_id                 text        NOT NULL,
    -- nonce || AES-256-GCM ciphertext with the grant id as associated data.
    access_token_sealed    bytea       NOT NULL,
    refresh_token_sealed   bytea       NOT NULL,
    access_expires_at      timestamptz NOT NULL,
    refresh_expires_at     timestamptz NOT NULL,
    consented_on           timestamptz,
    consent_id             text,
    consent_status         text,
    consent_checked_at     timestamptz,
    scope                  text,
    refresh_count          integer     NOT NULL DEFAULT 0,
    last_refreshed_at      timestamptz,
    -- Set when a refresh was sent but its answer never arrived: the refresh token may be spent.
    refresh_in_doubt_since timestamptz,
    last_error             text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_grants_rotation_idx ON sync.oauth_grants (provider, refresh_expires_at)
    WHERE status = 'active';
COMMENT ON TABLE sync.oauth_grants IS 'OAuth grants (bank consents) whose refresh tokens partner-sync keeps alive. Tokens are sealed; never readable by the reporting role.';
COMMENT ON COLUMN sync.oauth_grants.status IS 'active; needs_reconsent (the refresh token was refused: the user must consent again); revoked (the consent was withdrawn or expired).';
COMMENT ON COLUMN sync.oauth_grants.refresh_count IS 'Refreshes since consent; Rabobank allows 4096 per consent.';
