-- Schemas: `mirror` is what finance reads; `sync` is the daemon's own bookkeeping.
CREATE SCHEMA IF NOT EXISTS mirror;
CREATE SCHEMA IF NOT EXISTS sync;

COMMENT ON SCHEMA mirror IS 'Partner data mirrored by partner-sync. Read-only for reporting.';
COMMENT ON SCHEMA sync IS 'partner-sync bookkeeping: job runs, grants, links. Not for reporting.';

-- One row per job run.
CREATE TABLE sync.runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          text        NOT NULL,
    cause        text        NOT NULL,
    status       text        NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    pages        integer     NOT NULL DEFAULT 0,
    requests     bigint      NOT NULL DEFAULT 0,
    fetched      bigint      NOT NULL DEFAULT 0,
    inserted     bigint      NOT NULL DEFAULT 0,
    updated      bigint      NOT NULL DEFAULT 0,
    unchanged    bigint      NOT NULL DEFAULT 0,
    deleted      bigint      NOT NULL DEFAULT 0,
    skipped      bigint      NOT NULL DEFAULT 0,
    error        text,
    host         text        NOT NULL DEFAULT ''
);
CREATE INDEX runs_job_started_idx ON sync.runs (job, started_at DESC);
COMMENT ON TABLE sync.runs IS 'One row per job run: cause, timing, outcome and row counts.';

-- Keys seen by a running pass, so deletions can be detected after it completes without holding
-- every key in memory and without rewriting unchanged mirror rows. UNLOGGED: it is scratch data
-- that is worthless after a crash, so it costs no WAL.
CREATE UNLOGGED TABLE sync.rabot_seen (
    run_id          bigint NOT NULL,
    customer_number text   NOT NULL,
    contract_number text   NOT NULL DEFAULT '',  -- '' marks the customer itself
    PRIMARY KEY (run_id, customer_number, contract_number)
);

CREATE TABLE mirror.rabot_customers (
    customer_number text        PRIMARY KEY,
    external_id     text,
    first_name      text,
    last_name       text,
    business_name   text,
    email           text,
    relations       text[]      NOT NULL DEFAULT '{}',
    payload         jsonb       NOT NULL,
    content_hash    bytea       NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    changed_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX rabot_customers_external_id_idx ON mirror.rabot_customers (external_id);
COMMENT ON TABLE mirror.rabot_customers IS 'RABOT customers (GET /customers). deleted_at is set when a complete pass no longer returns the customer.';
COMMENT ON COLUMN mirror.rabot_customers.customer_number IS 'RABOT customer number (key).';
COMMENT ON COLUMN mirror.rabot_customers.external_id IS 'externalIdentifier: the partner''s own id for the customer.';
COMMENT ON COLUMN mirror.rabot_customers.first_name IS 'firstName.';
COMMENT ON COLUMN mirror.rabot_customers.last_name IS 'lastName.';
COMMENT ON COLUMN mirror.rabot_customers.business_name IS 'businessName, for business customers.';
COMMENT ON COLUMN mirror.rabot_customers.email IS 'emailAddress.';
COMMENT ON COLUMN mirror.rabot_customers.relations IS 'Relations of the partner to the customer: Owner, Affiliate, Linked.';
COMMENT ON COLUMN mirror.rabot_customers.payload IS 'The customer exactly as RABOT sent it.';
COMMENT ON COLUMN mirror.rabot_customers.content_hash IS 'SHA-256 of the payload; unchanged rows are never rewritten.';
COMMENT ON COLUMN mirror.rabot_customers.first_seen_at IS 'When partner-sync first mirrored the customer.';
COMMENT ON COLUMN mirror.rabot_customers.changed_at IS 'When the payload last changed (or the row was revived).';
COMMENT ON COLUMN mirror.rabot_customers.deleted_at IS 'When a complete pass stopped returning the customer; NULL while present.';

CREATE TABLE mirror.rabot_contracts (
    customer_number      text        NOT NULL,
    contract_number      text        NOT NULL,
    name                 text,
    state                text,
    tariff_name          text,
    delivery_start       date,
    delivery_end         date,
    meter_number         text,
    malo_id              text,
    melo_id              text,
    expected_annual_kwh  numeric,
    accounting_method    text,
    grid_operator_code   text,
    grid_operator_name   text,
    payload              jsonb       NOT NULL,
    content_hash         bytea       NOT NULL,
    first_seen_at        timestamptz NOT NULL DEFAULT now(),
    changed_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz,
    PRIMARY KEY (customer_number, contract_number)
);
CREATE INDEX rabot_contracts_contract_number_idx ON mirror.rabot_contracts (contract_number);
CREATE INDEX rabot_contracts_state_idx ON mirror.rabot_contracts (state);
COMMENT ON TABLE mirror.rabot_contracts IS 'RABOT contracts (GET /customers/{n}/contracts). Join to rabot_customers on customer_number.';
COMMENT ON COLUMN mirror.rabot_contracts.customer_number IS 'RABOT customer number; joins mirror.rabot_customers.';
COMMENT ON COLUMN mirror.rabot_contracts.contract_number IS 'RABOT contract number.';
COMMENT ON COLUMN mirror.rabot_contracts.name IS 'Contract name as shown to the customer.';
COMMENT ON COLUMN mirror.rabot_contracts.tariff_name IS 'tariffName.';
COMMENT ON COLUMN mirror.rabot_contracts.meter_number IS 'meterNumber.';
COMMENT ON COLUMN mirror.rabot_contracts.accounting_method IS 'accountingMethod.';
COMMENT ON COLUMN mirror.rabot_contracts.grid_operator_name IS 'distributionSystemOperatorName.';
COMMENT ON COLUMN mirror.rabot_contracts.content_hash IS 'SHA-256 of the payload; unchanged rows are never rewritten.';
COMMENT ON COLUMN mirror.rabot_contracts.first_seen_at IS 'When partner-sync first mirrored the contract.';
COMMENT ON COLUMN mirror.rabot_contracts.changed_at IS 'When the payload last changed (or the row was revived).';
COMMENT ON COLUMN mirror.rabot_contracts.state IS 'contractState: PendingDelivery, Delivery, Cancelled, Revoked, Unspecified, or a newer value RABOT adds.';
COMMENT ON COLUMN mirror.rabot_contracts.delivery_start IS 'actualDateOfDelivery.';
COMMENT ON COLUMN mirror.rabot_contracts.delivery_end IS 'endDateOfDelivery; NULL while open-ended.';
COMMENT ON COLUMN mirror.rabot_contracts.malo_id IS 'Market location id (maLoIdentifier).';
COMMENT ON COLUMN mirror.rabot_contracts.melo_id IS 'Metering location id (meLoIdentifier).';
COMMENT ON COLUMN mirror.rabot_contracts.expected_annual_kwh IS 'expectedAnnualConsumptionInKwhPerYear.';
COMMENT ON COLUMN mirror.rabot_contracts.grid_operator_code IS 'distributionSystemOperatorCode (grid operator).';
COMMENT ON COLUMN mirror.rabot_contracts.payload IS 'The contract exactly as RABOT sent it (addresses, bank details, periods, ...).';
COMMENT ON COLUMN mirror.rabot_contracts.deleted_at IS 'When a complete pass stopped returning the contract; NULL while present.';

-- History: every distinct version of each row, written by triggers so no code path can forget it.
CREATE TABLE mirror.rabot_customers_versions (
    customer_number text        NOT NULL,
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,
    payload         jsonb       NOT NULL,
    content_hash    bytea       NOT NULL,
    PRIMARY KEY (customer_number, valid_from)
);
COMMENT ON TABLE mirror.rabot_customers_versions IS 'Every distinct version of each RABOT customer; valid_to is NULL for the current one and set on change or deletion.';

CREATE TABLE mirror.rabot_contracts_versions (
    customer_number text        NOT NULL,
    contract_number text        NOT NULL,
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,
    payload         jsonb       NOT NULL,
    content_hash    bytea       NOT NULL,
    PRIMARY KEY (customer_number, contract_number, valid_from)
);
COMMENT ON TABLE mirror.rabot_contracts_versions IS 'Every distinct version of each RABOT contract; valid_to is NULL for the current one and set on change or deletion.';

CREATE FUNCTION mirror.rabot_customers_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.rabot_customers_versions SET valid_to = now()
     WHERE customer_number = NEW.customer_number AND valid_to IS NULL;
    IF NEW.deleted_at IS NULL THEN
        INSERT INTO mirror.rabot_customers_versions (customer_number, valid_from, payload, content_hash)
        VALUES (NEW.customer_number, now(), NEW.payload, NEW.content_hash)
        ON CONFLICT (customer_number, valid_from) DO UPDATE
           SET payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, valid_to = NULL;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION mirror.rabot_contracts_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.rabot_contracts_versions SET valid_to = now()
     WHERE customer_number = NEW.customer_number AND contract_number = NEW.contract_number
       AND valid_to IS NULL;
    IF NEW.deleted_at IS NULL THEN
        INSERT INTO mirror.rabot_contracts_versions (customer_number, contract_number, valid_from, payload, content_hash)
        VALUES (NEW.customer_number, NEW.contract_number, now(), NEW.payload, NEW.content_hash)
        ON CONFLICT (customer_number, contract_number, valid_from) DO UPDATE
           SET payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, valid_to = NULL;
    END IF;
    RETURN NULL;
END $$;

-- Fires only when content or presence changed; the upsert never touches unchanged rows anyway.
CREATE TRIGGER rabot_customers_history
    AFTER INSERT OR UPDATE OF content_hash, deleted_at ON mirror.rabot_customers
    FOR EACH ROW EXECUTE FUNCTION mirror.rabot_customers_history();
CREATE TRIGGER rabot_contracts_history
    AFTER INSERT OR UPDATE OF content_hash, deleted_at ON mirror.rabot_contracts
    FOR EACH ROW EXECUTE FUNCTION mirror.rabot_contracts_history();

-- The everyday question ("which contracts are live, for whom") without remembering the tombstones.
CREATE VIEW mirror.rabot_current_contracts AS
SELECT k.customer_number, c.external_id, c.first_name, c.last_name, c.business_name, c.email,
       k.contract_number, k.name, k.state, k.tariff_name, k.delivery_start, k.delivery_end,
       k.meter_number, k.malo_id, k.melo_id, k.expected_annual_kwh, k.accounting_method,
       k.grid_operator_code, k.grid_operator_name, k.changed_at
  FROM mirror.rabot_contracts k
  JOIN mirror.rabot_customers c USING (customer_number)
 WHERE k.deleted_at IS NULL AND c.deleted_at IS NULL;
COMMENT ON VIEW mirror.rabot_current_contracts IS 'Contracts currently returned by RABOT, with their customer''s names.';

-- Finance reads `mirror` through this role (grant it to a login role: GRANT partner_sync_reader TO alice).
-- Roles are cluster-wide, so two databases migrating at once may race to create it.
DO $$
BEGIN
    CREATE ROLE partner_sync_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
GRANT USAGE ON SCHEMA mirror TO partner_sync_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA mirror TO partner_sync_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA mirror GRANT SELECT ON TABLES TO partner_sync_reader;
