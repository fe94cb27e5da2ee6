-- A link's success and failure redirects carry different secrets, so a person who saw one of
-- the two URLs cannot use the other. Both are stored only as SHA-256.
ALTER TABLE sync.customer_links RENAME COLUMN token_hash TO success_hash;
-- NULL for links created before this migration: their one secret stays the success secret,
-- and their failure URL no longer answers (such a link simply expires, within 10 minutes).
ALTER TABLE sync.customer_links ADD COLUMN failure_hash bytea UNIQUE;
COMMENT ON COLUMN sync.customer_links.success_hash IS 'SHA-256 of the secret in the success URL (the customer approved).';
COMMENT ON COLUMN sync.customer_links.failure_hash IS 'SHA-256 of the secret in the failure URL (the customer refused); NULL on links made before separate secrets.';

-- A success redirect whose customer number RABOT does not confirm (unknown, another external
-- id, no Linked relation, malformed) is refused and the link stays pending; each refusal is
-- kept here, so a forgery attempt is visible.
CREATE TABLE sync.link_refusals (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    link_id           uuid        NOT NULL REFERENCES sync.customer_links (id) ON DELETE CASCADE,
    refused_at        timestamptz NOT NULL DEFAULT now(),
    reason            text        NOT NULL,
    offered_customer_number text  NOT NULL
);
CREATE INDEX link_refusals_link_idx ON sync.link_refusals (link_id, refused_at);
COMMENT ON TABLE sync.link_refusals IS 'Success redirects refused because RABOT did not confirm the offered customer number; the link stayed pending.';
COMMENT ON COLUMN sync.link_refusals.reason IS 'Why the customer number was refused, e.g. that no RABOT customer with it carries the link''s external id.';
COMMENT ON COLUMN sync.link_refusals.offered_customer_number IS 'The customerNumber the redirect offered, escaped (control and non-ASCII characters as \u{..}) and cut to 64 characters: it came from a browser.';
