-- Who linked, when: the link outcomes finance may read, without what completes a link (the
-- secret's hash, the authorization URL with its state) or the partner's refusal texts.
CREATE VIEW mirror.rabot_customer_links AS
SELECT id AS link_id, external_id, customer_number, status, created_at, completed_at, unlinked_at
  FROM sync.customer_links
 WHERE partner = 'rabot';
COMMENT ON VIEW mirror.rabot_customer_links IS 'RABOT customer links and how each ended; one row per link started (a customer who linked twice has two). Who did what is in sync.audit.';
COMMENT ON COLUMN mirror.rabot_customer_links.link_id IS 'The link (sync.customer_links.id, also the audit subject of its entries).';
COMMENT ON COLUMN mirror.rabot_customer_links.external_id IS 'Our id for the customer, which RABOT stores as the customer''s externalIdentifier.';
COMMENT ON COLUMN mirror.rabot_customer_links.customer_number IS 'RABOT customer number once the customer approved (mirror.rabot_customers.customer_number); NULL while pending or after a refusal.';
COMMENT ON COLUMN mirror.rabot_customer_links.status IS 'pending (waiting for the customer; void after 10 minutes), linked, denied (the customer or RABOT refused), or unlinked.';
COMMENT ON COLUMN mirror.rabot_customer_links.created_at IS 'When the link was started.';
COMMENT ON COLUMN mirror.rabot_customer_links.completed_at IS 'When the customer approved or refused; NULL while pending.';
COMMENT ON COLUMN mirror.rabot_customer_links.unlinked_at IS 'When `partner-sync unlink` removed the link; NULL otherwise.';
GRANT SELECT ON mirror.rabot_customer_links TO partner_sync_reader;
