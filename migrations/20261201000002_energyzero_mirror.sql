-- EnergyZero: users (read through impersonation) and their contracts, the users ops add, and
-- the per-item failures of any run.

CREATE TABLE mirror.energyzero_users (
    user_id          text        PRIMARY KEY,
    customer_number  text,
    email            text,
    first_name       text,
    middle_name      text,
    surname          text,
    phone_number     text,
    birth_date       date,
    vendor           text,
    payload          jsonb       NOT NULL,
    content_hash     bytea       NOT NULL,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    changed_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);
CREATE INDEX energyzero_users_customer_number_idx ON mirror.energyzero_users (customer_number);
COMMENT ON TABLE mirror.energyzero_users IS 'EnergyZero users (GraphQL `me`, read while impersonating each user listed in energyzero.user_ids or sync.energyzero_subjects).';
COMMENT ON COLUMN mirror.energyzero_users.user_id IS 'EnergyZero user id (key), as impersonated.';
COMMENT ON COLUMN mirror.energyzero_users.customer_number IS 'customerNumber.';
COMMENT ON COLUMN mirror.energyzero_users.email IS 'email.';
COMMENT ON COLUMN mirror.energyzero_users.first_name IS 'firstName.';
COMMENT ON COLUMN mirror.energyzero_users.middle_name IS 'middleName (Dutch tussenvoegsel), often NULL.';
COMMENT ON COLUMN mirror.energyzero_users.surname IS 'surname.';
COMMENT ON COLUMN mirror.energyzero_users.phone_number IS 'phoneNumber.';
COMMENT ON COLUMN mirror.energyzero_users.birth_date IS 'birthDate.';
COMMENT ON COLUMN mirror.energyzero_users.vendor IS 'vendor: the white-label brand the user belongs to.';
COMMENT ON COLUMN mirror.energyzero_users.payload IS 'The user exactly as EnergyZero sent it, without the contracts connection.';
COMMENT ON COLUMN mirror.energyzero_users.content_hash IS 'SHA-256 of the payload; unchanged rows are never rewritten.';
COMMENT ON COLUMN mirror.energyzero_users.first_seen_at IS 'When partner-sync first mirrored the user.';
COMMENT ON COLUMN mirror.energyzero_users.changed_at IS 'When the payload last changed (or the row was revived).';
COMMENT ON COLUMN mirror.energyzero_users.deleted_at IS 'Reserved for a user no longer returned; users are never tombstoned by a pass today (a user that cannot be read is recorded in sync.run_failures instead).';

CREATE TABLE mirror.energyzero_contracts (
    user_id                  text        NOT NULL,
    contract_id              text        NOT NULL,
    accepted_at              timestamptz,
    consumer_type            text,
    company                  text,
    energy_contract_type     text,
    phase                    text,
    start_date               date,
    original_start_date      date,
    end_date                 date,
    delivery_stopped_date    date,
    duration_months          integer,
    payment_method           text,
    has_gas                  boolean,
    has_electricity          boolean,
    has_production           boolean,
    total_yearly_usage_kwh   numeric,
    delivery_zip_code        text,
    delivery_city            text,
    payload                  jsonb       NOT NULL,
    content_hash             bytea       NOT NULL,
    first_seen_at            timestamptz NOT NULL DEFAULT now(),
    changed_at               timestamptz NOT NULL DEFAULT now(),
    deleted_at               timestamptz,
    PRIMARY KEY (user_id, contract_id)
);
CREATE INDEX energyzero_contracts_contract_id_idx ON mirror.energyzero_contracts (contract_id);
CREATE INDEX energyzero_contracts_phase_idx ON mirror.energyzero_contracts (phase);
COMMENT ON TABLE mirror.energyzero_contracts IS 'EnergyZero contracts (me.contracts) per user. Join to energyzero_users on user_id.';
COMMENT ON COLUMN mirror.energyzero_contracts.user_id IS 'EnergyZero user id; joins mirror.energyzero_users.';
COMMENT ON COLUMN mirror.energyzero_contracts.contract_id IS 'Contract id.';
COMMENT ON COLUMN mirror.energyzero_contracts.accepted_at IS 'acceptedAt: when the customer accepted the contract.';
COMMENT ON COLUMN mirror.energyzero_contracts.consumer_type IS 'consumerType: CONSUMER, BUSINESS, or a newer value.';
COMMENT ON COLUMN mirror.energyzero_contracts.company IS 'company: business name, NULL for consumers.';
COMMENT ON COLUMN mirror.energyzero_contracts.energy_contract_type IS 'energyContractType: FIXED, VARIABLE, DYNAMIC, or a newer value.';
COMMENT ON COLUMN mirror.energyzero_contracts.phase IS 'phase (ContractPhase): USER_INPUT … DELIVERY_STARTED, DELIVERY_STOPPED, NEVER_DELIVERED, or a newer value.';
COMMENT ON COLUMN mirror.energyzero_contracts.start_date IS 'startDate.';
COMMENT ON COLUMN mirror.energyzero_contracts.original_start_date IS 'originalStartDate.';
COMMENT ON COLUMN mirror.energyzero_contracts.end_date IS 'endDate; NULL while open-ended.';
COMMENT ON COLUMN mirror.energyzero_contracts.delivery_stopped_date IS 'deliveryStoppedDate.';
COMMENT ON COLUMN mirror.energyzero_contracts.duration_months IS 'duration in months; NULL for open-ended contracts.';
COMMENT ON COLUMN mirror.energyzero_contracts.payment_method IS 'paymentMethod: DIRECT_DEBIT, MANUAL, or a newer value.';
COMMENT ON COLUMN mirror.energyzero_contracts.has_gas IS 'hasGas.';
COMMENT ON COLUMN mirror.energyzero_contracts.has_electricity IS 'hasElectricity.';
COMMENT ON COLUMN mirror.energyzero_contracts.has_production IS 'hasProduction (e.g. solar panels).';
COMMENT ON COLUMN mirror.energyzero_contracts.total_yearly_usage_kwh IS 'totalYearlyUsage in kWh.';
COMMENT ON COLUMN mirror.energyzero_contracts.delivery_zip_code IS 'deliveryAddress.zipCode.';
COMMENT ON COLUMN mirror.energyzero_contracts.delivery_city IS 'deliveryAddress.city.';
COMMENT ON COLUMN mirror.energyzero_contracts.payload IS 'The contract exactly as EnergyZero sent it (both addresses included).';
COMMENT ON COLUMN mirror.energyzero_contracts.content_hash IS 'SHA-256 of the payload; unchanged rows are never rewritten.';
COMMENT ON COLUMN mirror.energyzero_contracts.first_seen_at IS 'When partner-sync first mirrored the contract.';
COMMENT ON COLUMN mirror.energyzero_contracts.changed_at IS 'When the payload last changed (or the row was revived).';
COMMENT ON COLUMN mirror.energyzero_contracts.deleted_at IS 'When a complete pass of its user stopped returning the contract; NULL while present.';

-- History, written by triggers as for RABOT.
CREATE TABLE mirror.energyzero_users_versions (
    user_id       text        NOT NULL,
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz,
    payload       jsonb       NOT NULL,
    content_hash  bytea       NOT NULL,
    PRIMARY KEY (user_id, valid_from)
);
COMMENT ON TABLE mirror.energyzero_users_versions IS 'Every distinct version of each EnergyZero user; valid_to is NULL for the current one and set on change or deletion.';
COMMENT ON COLUMN mirror.energyzero_users_versions.user_id IS 'EnergyZero user id.';
COMMENT ON COLUMN mirror.energyzero_users_versions.valid_from IS 'When this version was first mirrored.';
COMMENT ON COLUMN mirror.energyzero_users_versions.valid_to IS 'When it was replaced or deleted; NULL for the current version.';
COMMENT ON COLUMN mirror.energyzero_users_versions.payload IS 'The user as EnergyZero sent it.';
COMMENT ON COLUMN mirror.energyzero_users_versions.content_hash IS 'SHA-256 of the payload.';

CREATE TABLE mirror.energyzero_contracts_versions (
    user_id       text        NOT NULL,
    contract_id   text        NOT NULL,
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz,
    payload       jsonb       NOT NULL,
    content_hash  bytea       NOT NULL,
    PRIMARY KEY (user_id, contract_id, valid_from)
);
COMMENT ON TABLE mirror.energyzero_contracts_versions IS 'Every distinct version of each EnergyZero contract; valid_to is NULL for the current one and set on change or deletion.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.user_id IS 'EnergyZero user id.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.contract_id IS 'Contract id.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.valid_from IS 'When this version was first mirrored.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.valid_to IS 'When it was replaced or deleted; NULL for the current version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.payload IS 'The contract as EnergyZero sent it.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.content_hash IS 'SHA-256 of the payload.';

CREATE FUNCTION mirror.energyzero_users_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.energyzero_users_versions SET valid_to = now()
     WHERE user_id = NEW.user_id AND valid_to IS NULL;
    IF NEW.deleted_at IS NULL THEN
        INSERT INTO mirror.energyzero_users_versions (user_id, valid_from, payload, content_hash)
        VALUES (NEW.user_id, now(), NEW.payload, NEW.content_hash)
        ON CONFLICT (user_id, valid_from) DO UPDATE
           SET payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, valid_to = NULL;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION mirror.energyzero_contracts_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.energyzero_contracts_versions SET valid_to = now()
     WHERE user_id = NEW.user_id AND contract_id = NEW.contract_id AND valid_to IS NULL;
    IF NEW.deleted_at IS NULL THEN
        INSERT INTO mirror.energyzero_contracts_versions (user_id, contract_id, valid_from, payload, content_hash)
        VALUES (NEW.user_id, NEW.contract_id, now(), NEW.payload, NEW.content_hash)
        ON CONFLICT (user_id, contract_id, valid_from) DO UPDATE
           SET payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, valid_to = NULL;
    END IF;
    RETURN NULL;
END $$;

-- Fires only when content or presence changed; the upsert never touches unchanged rows anyway.
CREATE TRIGGER energyzero_users_history
    AFTER INSERT OR UPDATE OF content_hash, deleted_at ON mirror.energyzero_users
    FOR EACH ROW EXECUTE FUNCTION mirror.energyzero_users_history();
CREATE TRIGGER energyzero_contracts_history
    AFTER INSERT OR UPDATE OF content_hash, deleted_at ON mirror.energyzero_contracts
    FOR EACH ROW EXECUTE FUNCTION mirror.energyzero_contracts_history();

CREATE VIEW mirror.energyzero_current_contracts AS
SELECT k.user_id, u.customer_number, u.email, u.first_name, u.middle_name, u.surname, u.vendor,
       k.contract_id, k.accepted_at, k.consumer_type, k.company, k.energy_contract_type, k.phase,
       k.start_date, k.original_start_date, k.end_date, k.delivery_stopped_date,
       k.duration_months, k.payment_method, k.has_gas, k.has_electricity, k.has_production,
       k.total_yearly_usage_kwh, k.delivery_zip_code, k.delivery_city, k.changed_at
  FROM mirror.energyzero_contracts k
  JOIN mirror.energyzero_users u USING (user_id)
 WHERE k.deleted_at IS NULL AND u.deleted_at IS NULL;
COMMENT ON VIEW mirror.energyzero_current_contracts IS 'EnergyZero contracts currently returned, with their user''s names and customer number.';

-- The default privileges of the RABOT migration cover new tables only for the role that ran it;
-- granting explicitly keeps finance's access independent of who migrates.
GRANT SELECT ON mirror.energyzero_users, mirror.energyzero_contracts,
    mirror.energyzero_users_versions, mirror.energyzero_contracts_versions,
    mirror.energyzero_current_contracts TO partner_sync_reader;

-- Users to mirror besides energyzero.user_ids.
CREATE TABLE sync.energyzero_subjects (
    user_id   text        PRIMARY KEY,
    label     text,
    enabled   boolean     NOT NULL DEFAULT true,
    added_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sync.energyzero_subjects IS 'Ops insert users here: EnergyZero users to mirror besides energyzero.user_ids (INSERT INTO sync.energyzero_subjects (user_id, label) VALUES (...)); read at the start of every run.';
COMMENT ON COLUMN sync.energyzero_subjects.user_id IS 'EnergyZero user id (the impersonation user_id).';
COMMENT ON COLUMN sync.energyzero_subjects.label IS 'Free text for people: who this is, why it is mirrored.';
COMMENT ON COLUMN sync.energyzero_subjects.enabled IS 'false = keep the row but stop mirroring the user.';
COMMENT ON COLUMN sync.energyzero_subjects.added_at IS 'When the row was inserted.';

-- Items (users, grants, …) that failed within a run that as a whole went on.
CREATE TABLE sync.run_failures (
    run_id  bigint NOT NULL REFERENCES sync.runs(id) ON DELETE CASCADE,
    item    text   NOT NULL,
    error   text   NOT NULL,
    PRIMARY KEY (run_id, item)
);
COMMENT ON TABLE sync.run_failures IS 'The per-item failures of a run (e.g. an EnergyZero user that could not be read); the run itself may still have succeeded.';
COMMENT ON COLUMN sync.run_failures.run_id IS 'The run (sync.runs.id).';
COMMENT ON COLUMN sync.run_failures.item IS 'What failed, e.g. the EnergyZero user id.';
COMMENT ON COLUMN sync.run_failures.error IS 'Why, on one line, without secrets.';
