-- RABOT customer links: a customer grants us access on RABOT's own pages and is sent back to
-- our success or failure URL, which carries the link's secret in its path. Only the SHA-256 of
-- that secret is stored, so reading this table is not enough to complete a link.
CREATE TABLE sync.customer_links (
    id                 uuid        PRIMARY KEY,
    token_hash         bytea       NOT NULL UNIQUE,
    partner            text        NOT NULL DEFAULT 'rabot',
    status             text        NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'linked', 'denied', 'unlinked')),
    external_id        text        NOT NULL,
    auth_as            text,
    sign_up_url        text,
    authorization_url  text        NOT NULL,
    customer_number    text,
    error_name         text,
    error_description  text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    completed_at       timestamptz,
    mirrored_at        timestamptz,
    unlinked_at        timestamptz
);
CREATE INDEX customer_links_customer_idx ON sync.customer_links (partner, customer_number);
-- The link mirror looks for these after every link and on its schedule.
CREATE INDEX customer_links_unmirrored_idx ON sync.customer_links (partner)
    WHERE status = 'linked' AND mirrored_at IS NULL;
COMMENT ON TABLE sync.customer_links IS 'Customer links started with `partner-sync link rabot` or POST /links/rabot, and how each ended.';
COMMENT ON COLUMN sync.customer_links.token_hash IS 'SHA-256 of the secret in the success and failure URLs.';
COMMENT ON COLUMN sync.customer_links.status IS 'pending (waiting for the customer; void after expires_at), linked, denied, or unlinked.';
COMMENT ON COLUMN sync.customer_links.external_id IS 'Our id for the customer, sent as externalCustomerId: RABOT stores it as the customer''s externalIdentifier.';
COMMENT ON COLUMN sync.customer_links.auth_as IS 'Partner account whose login page the link used (authAs); NULL = the default account.';
COMMENT ON COLUMN sync.customer_links.authorization_url IS 'Where the customer was sent to log in and approve (valid 10 minutes).';
COMMENT ON COLUMN sync.customer_links.customer_number IS 'RABOT customer number returned on approval.';
COMMENT ON COLUMN sync.customer_links.error_name IS 'error_name RABOT sent on refusal (e.g. access_denied).';
COMMENT ON COLUMN sync.customer_links.mirrored_at IS 'When the customer was first mirrored after linking; NULL = the link mirror still has to.';
COMMENT ON COLUMN sync.customer_links.unlinked_at IS 'When `partner-sync unlink` removed the link; mirrored rows stay but are no longer refreshed.';
