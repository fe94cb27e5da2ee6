-- An append-only audit trail: who changed what a finance reader relies on (customer links,
-- bank consents and their rotations, manual runs and overrides). Rows are only ever inserted:
-- the triggers below refuse UPDATE, DELETE and TRUNCATE for every role, the table's owner
-- included, so the trail cannot be rewritten through the daemon's own credentials.
CREATE TABLE sync.audit (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text        NOT NULL,
    action  text        NOT NULL,
    partner text,
    subject text,
    detail  jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_subject_at_idx ON sync.audit (subject, at);
CREATE INDEX audit_at_idx ON sync.audit (at);

CREATE FUNCTION sync.audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sync.audit is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit rows are only ever inserted; record a correcting entry instead.';
END;
$$;

CREATE TRIGGER audit_no_update_or_delete
    BEFORE UPDATE OR DELETE ON sync.audit
    FOR EACH ROW EXECUTE FUNCTION sync.audit_refuse_change();
CREATE TRIGGER audit_no_truncate
    BEFORE TRUNCATE ON sync.audit
    FOR EACH STATEMENT EXECUTE FUNCTION sync.audit_refuse_change();

COMMENT ON TABLE sync.audit IS 'Append-only audit trail of links, consents, token rotations and manual runs; UPDATE, DELETE and TRUNCATE are refused by triggers.';
COMMENT ON COLUMN sync.audit.id IS 'Order of recording.';
COMMENT ON COLUMN sync.audit.at IS 'When the entry was recorded (the transaction''s start).';
COMMENT ON COLUMN sync.audit.actor IS 'Who: the OS user of a CLI call, admin-token:<first 8 hex of the token''s SHA-256>, scheduler, signal or browser.';
COMMENT ON COLUMN sync.audit.action IS 'What happened, e.g. link.created, link.linked, grant.refreshed, resync.requested, guard.override.';
COMMENT ON COLUMN sync.audit.partner IS 'The partner concerned (rabot, rabobank, …); NULL when none.';
COMMENT ON COLUMN sync.audit.subject IS 'What it happened to: an external id, a customer number, a grant id, a job; NULL when nothing in particular.';
COMMENT ON COLUMN sync.audit.detail IS 'More about the entry as JSON; never a token, link secret or OAuth state.';
COMMENT ON FUNCTION sync.audit_refuse_change() IS 'Refuses any change to sync.audit but an INSERT.';
