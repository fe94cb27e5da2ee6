-- The mirror's state on any date, for finance: the contract versions carry their typed columns
-- (so a past state reads the same columns as the present one), functions that answer "as
-- mirrored at that moment" and "the prices in force on that day", and month-end snapshots that
-- freeze each closed month once.

-- 1. Typed columns in the contract histories. The history triggers copy them from the row the
-- daemon wrote (read from the payload by the partner's wire module), so a version and its live
-- row can never disagree. Versions written before this migration are filled once below.
ALTER TABLE mirror.rabot_contracts_versions
    ADD COLUMN name                text,
    ADD COLUMN state               text,
    ADD COLUMN tariff_name         text,
    ADD COLUMN delivery_start      date,
    ADD COLUMN delivery_end        date,
    ADD COLUMN meter_number        text,
    ADD COLUMN malo_id             text,
    ADD COLUMN melo_id             text,
    ADD COLUMN expected_annual_kwh numeric,
    ADD COLUMN accounting_method   text,
    ADD COLUMN grid_operator_code  text,
    ADD COLUMN grid_operator_name  text;
COMMENT ON COLUMN mirror.rabot_contracts_versions.customer_number IS 'RABOT customer number.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.contract_number IS 'RABOT contract number.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.valid_from IS 'When this version was first mirrored.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.valid_to IS 'When it was replaced or tombstoned; NULL for the current version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.payload IS 'The contract as RABOT sent it.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.content_hash IS 'SHA-256 of the payload.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.name IS 'name in this version (as mirror.rabot_contracts.name).';
COMMENT ON COLUMN mirror.rabot_contracts_versions.state IS 'contractState in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.tariff_name IS 'tariffName in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.delivery_start IS 'actualDateOfDelivery in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.delivery_end IS 'endDateOfDelivery in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.meter_number IS 'meterNumber in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.malo_id IS 'maLoIdentifier in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.melo_id IS 'meLoIdentifier in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.expected_annual_kwh IS 'expectedAnnualConsumptionInKwhPerYear in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.accounting_method IS 'accountingMethod in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.grid_operator_code IS 'distributionSystemOperatorCode in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.grid_operator_name IS 'distributionSystemOperatorName in this version.';

ALTER TABLE mirror.energyzero_contracts_versions
    ADD COLUMN accepted_at            timestamptz,
    ADD COLUMN consumer_type          text,
    ADD COLUMN company                text,
    ADD COLUMN energy_contract_type   text,
    ADD COLUMN phase                  text,
    ADD COLUMN start_date             date,
    ADD COLUMN original_start_date    date,
    ADD COLUMN end_date               date,
    ADD COLUMN delivery_stopped_date  date,
    ADD COLUMN duration_months        integer,
    ADD COLUMN payment_method         text,
    ADD COLUMN has_gas                boolean,
    ADD COLUMN has_electricity        boolean,
    ADD COLUMN has_production         boolean,
    ADD COLUMN total_yearly_usage_kwh numeric,
    ADD COLUMN delivery_zip_code      text,
    ADD COLUMN delivery_city          text;
COMMENT ON COLUMN mirror.energyzero_contracts_versions.accepted_at IS 'acceptedAt in this version (as mirror.energyzero_contracts.accepted_at).';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.consumer_type IS 'consumerType in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.company IS 'company in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.energy_contract_type IS 'energyContractType in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.phase IS 'phase in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.start_date IS 'startDate in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.original_start_date IS 'originalStartDate in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.end_date IS 'endDate in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.delivery_stopped_date IS 'deliveryStoppedDate in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.duration_months IS 'duration in months in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.payment_method IS 'paymentMethod in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.has_gas IS 'hasGas in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.has_electricity IS 'hasElectricity in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.has_production IS 'hasProduction in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.total_yearly_usage_kwh IS 'totalYearlyUsage in kWh in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.delivery_zip_code IS 'deliveryAddress.zipCode in this version.';
COMMENT ON COLUMN mirror.energyzero_contracts_versions.delivery_city IS 'deliveryAddress.city in this version.';

CREATE OR REPLACE FUNCTION mirror.rabot_contracts_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.rabot_contracts_versions SET valid_to = now()
     WHERE customer_number = NEW.customer_number AND contract_number = NEW.contract_number
       AND valid_to IS NULL;
    IF NEW.deleted_at IS NULL THEN
        INSERT INTO mirror.rabot_contracts_versions
            (customer_number, contract_number, valid_from, payload, content_hash,
             name, state, tariff_name, delivery_start, delivery_end, meter_number, malo_id,
             melo_id, expected_annual_kwh, accounting_method, grid_operator_code,
             grid_operator_name)
        VALUES (NEW.customer_number, NEW.contract_number, now(), NEW.payload, NEW.content_hash,
                NEW.name, NEW.state, NEW.tariff_name, NEW.delivery_start, NEW.delivery_end,
                NEW.meter_number, NEW.malo_id, NEW.melo_id, NEW.expected_annual_kwh,
                NEW.accounting_method, NEW.grid_operator_code, NEW.grid_operator_name)
        ON CONFLICT (customer_number, contract_number, valid_from) DO UPDATE
           SET payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, valid_to = NULL,
               name = EXCLUDED.name, state = EXCLUDED.state, tariff_name = EXCLUDED.tariff_name,
               delivery_start = EXCLUDED.delivery_start, delivery_end = EXCLUDED.delivery_end,
               meter_number = EXCLUDED.meter_number, malo_id = EXCLUDED.malo_id,
               melo_id = EXCLUDED.melo_id, expected_annual_kwh = EXCLUDED.expected_annual_kwh,
               accounting_method = EXCLUDED.accounting_method,
               grid_operator_code = EXCLUDED.grid_operator_code,
               grid_operator_name = EXCLUDED.grid_operator_name;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mirror.energyzero_contracts_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.energyzero_contracts_versions SET valid_to = now()
     WHERE user_id = NEW.user_id AND contract_id = NEW.contract_id AND valid_to IS NULL;
    IF NEW.deleted_at IS NULL THEN
        INSERT INTO mirror.energyzero_contracts_versions
            (user_id, contract_id, valid_from, payload, content_hash,
             accepted_at, consumer_type, company, energy_contract_type, phase, start_date,
             original_start_date, end_date, delivery_stopped_date, duration_months,
             payment_method, has_gas, has_electricity, has_production, total_yearly_usage_kwh,
             delivery_zip_code, delivery_city)
        VALUES (NEW.user_id, NEW.contract_id, now(), NEW.payload, NEW.content_hash,
                NEW.accepted_at, NEW.consumer_type, NEW.company, NEW.energy_contract_type,
                NEW.phase, NEW.start_date, NEW.original_start_date, NEW.end_date,
                NEW.delivery_stopped_date, NEW.duration_months, NEW.payment_method, NEW.has_gas,
                NEW.has_electricity, NEW.has_production, NEW.total_yearly_usage_kwh,
                NEW.delivery_zip_code, NEW.delivery_city)
        ON CONFLICT (user_id, contract_id, valid_from) DO UPDATE
           SET payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, valid_to = NULL,
               accepted_at = EXCLUDED.accepted_at, consumer_type = EXCLUDED.consumer_type,
               company = EXCLUDED.company, energy_contract_type = EXCLUDED.energy_contract_type,
               phase = EXCLUDED.phase, start_date = EXCLUDED.start_date,
               original_start_date = EXCLUDED.original_start_date, end_date = EXCLUDED.end_date,
               delivery_stopped_date = EXCLUDED.delivery_stopped_date,
               duration_months = EXCLUDED.duration_months,
               payment_method = EXCLUDED.payment_method, has_gas = EXCLUDED.has_gas,
               has_electricity = EXCLUDED.has_electricity,
               has_production = EXCLUDED.has_production,
               total_yearly_usage_kwh = EXCLUDED.total_yearly_usage_kwh,
               delivery_zip_code = EXCLUDED.delivery_zip_code,
               delivery_city = EXCLUDED.delivery_city;
    END IF;
    RETURN NULL;
END $$;

-- Versions written before this migration: the current version of a row is its live row, copied
-- exactly; older ones are read from their payload by these functions, which follow the wire
-- modules' lenient rules (text: trimmed strings, numbers, booleans; dates: the first 10
-- characters as YYYY-MM-DD; decimals: finite numbers or numeric strings; anything else NULL,
-- never an error). They exist only for this one fill and are dropped at its end.
CREATE FUNCTION sync.fill_text(v jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'string' THEN nullif(btrim(v #>> '{}'), '')
        WHEN 'number' THEN v #>> '{}'
        WHEN 'boolean' THEN v #>> '{}'
    END
$$;
CREATE FUNCTION sync.fill_date(v jsonb) RETURNS date LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(v) = 'string' AND (v #>> '{}') ~ '^\d{4}-\d{2}-\d{2}' THEN
        RETURN left(v #>> '{}', 10)::date;
    END IF;
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
CREATE FUNCTION sync.fill_numeric(v jsonb) RETURNS numeric LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n numeric;
BEGIN
    IF jsonb_typeof(v) NOT IN ('number', 'string') THEN
        RETURN NULL;
    END IF;
    n := btrim(v #>> '{}')::numeric;
    IF n IN ('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric) THEN
        RETURN NULL;
    END IF;
    RETURN n;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
CREATE FUNCTION sync.fill_timestamptz(v jsonb) RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(v) = 'string' THEN
        RETURN (v #>> '{}')::timestamptz;
    END IF;
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

UPDATE mirror.rabot_contracts_versions v
   SET name = sync.fill_text(v.payload -> 'name'),
       state = sync.fill_text(v.payload -> 'contractState'),
       tariff_name = sync.fill_text(v.payload -> 'tariffName'),
       delivery_start = sync.fill_date(v.payload -> 'actualDateOfDelivery'),
       delivery_end = sync.fill_date(v.payload -> 'endDateOfDelivery'),
       meter_number = sync.fill_text(v.payload -> 'meterNumber'),
       malo_id = sync.fill_text(v.payload -> 'maLoIdentifier'),
       melo_id = sync.fill_text(v.payload -> 'meLoIdentifier'),
       expected_annual_kwh = sync.fill_numeric(v.payload -> 'expectedAnnualConsumptionInKwhPerYear'),
       accounting_method = sync.fill_text(v.payload -> 'accountingMethod'),
       grid_operator_code = sync.fill_text(v.payload -> 'distributionSystemOperatorCode'),
       grid_operator_name = sync.fill_text(v.payload -> 'distributionSystemOperatorName');
UPDATE mirror.rabot_contracts_versions v
   SET name = c.name, state = c.state, tariff_name = c.tariff_name,
       delivery_start = c.delivery_start, delivery_end = c.delivery_end,
       meter_number = c.meter_number, malo_id = c.malo_id, melo_id = c.melo_id,
       expected_annual_kwh = c.expected_annual_kwh, accounting_method = c.accounting_method,
       grid_operator_code = c.grid_operator_code, grid_operator_name = c.grid_operator_name
  FROM mirror.rabot_contracts c
 WHERE c.customer_number = v.customer_number AND c.contract_number = v.contract_number
   AND c.content_hash = v.content_hash;

UPDATE mirror.energyzero_contracts_versions v
   SET accepted_at = sync.fill_timestamptz(v.payload -> 'acceptedAt'),
       consumer_type = sync.fill_text(v.payload -> 'consumerType'),
       company = sync.fill_text(v.payload -> 'company'),
       energy_contract_type = sync.fill_text(v.payload -> 'energyContractType'),
       phase = sync.fill_text(v.payload -> 'phase'),
       start_date = sync.fill_date(v.payload -> 'startDate'),
       original_start_date = sync.fill_date(v.payload -> 'originalStartDate'),
       end_date = sync.fill_date(v.payload -> 'endDate'),
       delivery_stopped_date = sync.fill_date(v.payload -> 'deliveryStoppedDate'),
       duration_months = CASE WHEN jsonb_typeof(v.payload -> 'duration') = 'number'
                               AND (v.payload ->> 'duration') ~ '^-?\d{1,9}$'
                              THEN (v.payload ->> 'duration')::integer END,
       payment_method = sync.fill_text(v.payload -> 'paymentMethod'),
       has_gas = CASE WHEN jsonb_typeof(v.payload -> 'hasGas') = 'boolean'
                      THEN (v.payload -> 'hasGas')::boolean END,
       has_electricity = CASE WHEN jsonb_typeof(v.payload -> 'hasElectricity') = 'boolean'
                              THEN (v.payload -> 'hasElectricity')::boolean END,
       has_production = CASE WHEN jsonb_typeof(v.payload -> 'hasProduction') = 'boolean'
                             THEN (v.payload -> 'hasProduction')::boolean END,
       total_yearly_usage_kwh = sync.fill_numeric(v.payload -> 'totalYearlyUsage'),
       delivery_zip_code = sync.fill_text(v.payload -> 'deliveryAddress' -> 'zipCode'),
       delivery_city = sync.fill_text(v.payload -> 'deliveryAddress' -> 'city');
UPDATE mirror.energyzero_contracts_versions v
   SET accepted_at = c.accepted_at, consumer_type = c.consumer_type, company = c.company,
       energy_contract_type = c.energy_contract_type, phase = c.phase,
       start_date = c.start_date, original_start_date = c.original_start_date,
       end_date = c.end_date, delivery_stopped_date = c.delivery_stopped_date,
       duration_months = c.duration_months, payment_method = c.payment_method,
       has_gas = c.has_gas, has_electricity = c.has_electricity,
       has_production = c.has_production, total_yearly_usage_kwh = c.total_yearly_usage_kwh,
       delivery_zip_code = c.delivery_zip_code, delivery_city = c.delivery_city
  FROM mirror.energyzero_contracts c
 WHERE c.user_id = v.user_id AND c.contract_id = v.contract_id
   AND c.content_hash = v.content_hash;

DROP FUNCTION sync.fill_text(jsonb);
DROP FUNCTION sync.fill_date(jsonb);
DROP FUNCTION sync.fill_numeric(jsonb);
DROP FUNCTION sync.fill_timestamptz(jsonb);

-- 2. The state at a moment. A version is in force at `at` when valid_from <= at < valid_to
-- (valid_to NULL = still current). A tombstone closes the last version at its time and opens
-- none, so a contract tombstoned at or before `at` is not returned; one first mirrored after
-- `at` has no version yet. The bodies use $1 rather than the name `at`, a keyword in
-- `AT TIME ZONE`.
CREATE FUNCTION mirror.rabot_contracts_as_of(at timestamptz)
RETURNS TABLE (
    customer_number     text,
    contract_number     text,
    name                text,
    state               text,
    tariff_name         text,
    delivery_start      date,
    delivery_end        date,
    meter_number        text,
    malo_id             text,
    melo_id             text,
    expected_annual_kwh numeric,
    accounting_method   text,
    grid_operator_code  text,
    grid_operator_name  text,
    version_valid_from  timestamptz
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT v.customer_number, v.contract_number, v.name, v.state, v.tariff_name,
           v.delivery_start, v.delivery_end, v.meter_number, v.malo_id, v.melo_id,
           v.expected_annual_kwh, v.accounting_method, v.grid_operator_code,
           v.grid_operator_name, v.valid_from
      FROM mirror.rabot_contracts_versions v
     WHERE v.valid_from <= $1 AND (v.valid_to IS NULL OR v.valid_to > $1)
$$;
COMMENT ON FUNCTION mirror.rabot_contracts_as_of(timestamptz) IS 'Every RABOT contract as partner-sync had mirrored it at that moment: the version in force then (valid_from <= at < valid_to), with the typed columns of mirror.rabot_contracts and version_valid_from (when that version was first mirrored). Contracts tombstoned at or before `at`, and contracts first mirrored after it, are not returned. Times are when partner-sync saw a change, not when RABOT made it. History purged under retention.tombstoned_versions or erased by `partner-sync forget` is gone; the frozen month ends are in mirror.month_end_contracts. Example: SELECT * FROM mirror.rabot_contracts_as_of(''2026-11-30 23:59:59 Europe/Berlin'').';

CREATE FUNCTION mirror.energyzero_contracts_as_of(at timestamptz)
RETURNS TABLE (
    user_id                text,
    contract_id            text,
    accepted_at            timestamptz,
    consumer_type          text,
    company                text,
    energy_contract_type   text,
    phase                  text,
    start_date             date,
    original_start_date    date,
    end_date               date,
    delivery_stopped_date  date,
    duration_months        integer,
    payment_method         text,
    has_gas                boolean,
    has_electricity        boolean,
    has_production         boolean,
    total_yearly_usage_kwh numeric,
    delivery_zip_code      text,
    delivery_city          text,
    version_valid_from     timestamptz
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT v.user_id, v.contract_id, v.accepted_at, v.consumer_type, v.company,
           v.energy_contract_type, v.phase, v.start_date, v.original_start_date, v.end_date,
           v.delivery_stopped_date, v.duration_months, v.payment_method, v.has_gas,
           v.has_electricity, v.has_production, v.total_yearly_usage_kwh,
           v.delivery_zip_code, v.delivery_city, v.valid_from
      FROM mirror.energyzero_contracts_versions v
     WHERE v.valid_from <= $1 AND (v.valid_to IS NULL OR v.valid_to > $1)
$$;
COMMENT ON FUNCTION mirror.energyzero_contracts_as_of(timestamptz) IS 'Every EnergyZero contract as partner-sync had mirrored it at that moment: the version in force then (valid_from <= at < valid_to), with the typed columns of mirror.energyzero_contracts and version_valid_from. Contracts tombstoned at or before `at`, and contracts first mirrored after it, are not returned. Times are when partner-sync saw a change, not when EnergyZero made it.';

-- 3. The prices in force on a day. A price period starts at its validFrom, an instant; a day is
-- a calendar day in a zone. The period in force on `on_date` is the one with the greatest
-- validFrom whose date in `zone` is on or before `on_date`, i.e. validFrom earlier than the
-- next day's local midnight. RABOT is a German supplier whose periods start at German
-- midnights, so the zone defaults to Europe/Berlin and needs no connection setting.
CREATE FUNCTION mirror.rabot_contract_price_on(
    contract_number text,
    on_date date,
    zone text DEFAULT 'Europe/Berlin'
)
RETURNS TABLE (
    valid_from timestamptz,
    component  text,
    value      numeric,
    unit_main  text,
    unit_per   text,
    unit_text  text
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT c.valid_from, c.component, c.value, c.unit_main, c.unit_per, c.unit_text
      FROM mirror.rabot_contract_cost_components c
     WHERE c.contract_number = $1
       AND c.valid_from = (
           SELECT max(p.valid_from)
             FROM mirror.rabot_contract_costs_periods p
            WHERE p.contract_number = $1
              AND p.valid_from < (($2 + 1)::timestamp AT TIME ZONE $3))
     ORDER BY c.component
$$;
COMMENT ON FUNCTION mirror.rabot_contract_price_on(text, date, text) IS 'The price components of a RABOT contract in force on a calendar day: those of the period with the greatest valid_from whose date, read in `zone` (default Europe/Berlin, RABOT''s own; never the connection''s TimeZone setting), is on or before `on_date`. One row per component (name, value, units) with the period''s valid_from; no rows when no period had started by then. Reads the current price periods (mirror.rabot_contract_costs_periods), which are never tombstoned. Example: SELECT * FROM mirror.rabot_contract_price_on(''K-1'', ''2026-11-30'').';

-- 4. Month-end snapshots (job month_end_snapshot): each closed month's RABOT contracts as of its
-- last moment, frozen once. A month is recorded in month_end_snapshots in the same transaction
-- as its contracts, and its key refuses a second recording, so a second run or a second
-- replica freezes nothing again.
CREATE TABLE mirror.month_end_snapshots (
    month        date        PRIMARY KEY CHECK (extract(day FROM month) = 1),
    snapshot_at  timestamptz NOT NULL,
    timezone     text        NOT NULL,
    taken_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE mirror.month_end_snapshots IS 'The months frozen into mirror.month_end_contracts, one row each; a month listed here is never taken again.';
COMMENT ON COLUMN mirror.month_end_snapshots.month IS 'The month, as its first day.';
COMMENT ON COLUMN mirror.month_end_snapshots.snapshot_at IS 'The moment frozen: midnight at the start of the next month in `timezone` (the state at the month''s very end).';
COMMENT ON COLUMN mirror.month_end_snapshots.timezone IS 'The IANA zone the month was read in (month_end.timezone when it was taken).';
COMMENT ON COLUMN mirror.month_end_snapshots.taken_at IS 'When partner-sync froze the month.';

CREATE TABLE mirror.month_end_contracts (
    month               date        NOT NULL REFERENCES mirror.month_end_snapshots (month),
    snapshot_at         timestamptz NOT NULL,
    taken_at            timestamptz NOT NULL,
    customer_number     text        NOT NULL,
    contract_number     text        NOT NULL,
    name                text,
    state               text,
    tariff_name         text,
    delivery_start      date,
    delivery_end        date,
    meter_number        text,
    malo_id             text,
    melo_id             text,
    expected_annual_kwh numeric,
    accounting_method   text,
    grid_operator_code  text,
    grid_operator_name  text,
    version_valid_from  timestamptz NOT NULL,
    PRIMARY KEY (month, contract_number)
);
CREATE INDEX month_end_contracts_customer_idx ON mirror.month_end_contracts (customer_number);
COMMENT ON TABLE mirror.month_end_contracts IS 'Every RABOT contract as mirrored at the end of each closed month (mirror.rabot_contracts_as_of(snapshot_at)), frozen once by the job month_end_snapshot: later changes, history purges and late corrections never alter a closed month. Rows are only ever inserted; `partner-sync forget` removes an erased customer''s rows.';
COMMENT ON COLUMN mirror.month_end_contracts.month IS 'The month, as its first day; joins mirror.month_end_snapshots.';
COMMENT ON COLUMN mirror.month_end_contracts.snapshot_at IS 'The moment frozen: midnight at the start of the next month in the snapshot''s zone.';
COMMENT ON COLUMN mirror.month_end_contracts.taken_at IS 'When partner-sync froze the month.';
COMMENT ON COLUMN mirror.month_end_contracts.customer_number IS 'RABOT customer number.';
COMMENT ON COLUMN mirror.month_end_contracts.contract_number IS 'RABOT contract number.';
COMMENT ON COLUMN mirror.month_end_contracts.name IS 'Contract name at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.state IS 'contractState at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.tariff_name IS 'tariffName at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.delivery_start IS 'actualDateOfDelivery at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.delivery_end IS 'endDateOfDelivery at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.meter_number IS 'meterNumber at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.malo_id IS 'maLoIdentifier at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.melo_id IS 'meLoIdentifier at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.expected_annual_kwh IS 'expectedAnnualConsumptionInKwhPerYear at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.accounting_method IS 'accountingMethod at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.grid_operator_code IS 'distributionSystemOperatorCode at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.grid_operator_name IS 'distributionSystemOperatorName at the month''s end.';
COMMENT ON COLUMN mirror.month_end_contracts.version_valid_from IS 'When the version frozen was first mirrored.';

-- A closed month is never rewritten, by any role: only inserts (and an erasure's deletes).
CREATE FUNCTION mirror.month_end_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% of a frozen month is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Closed months are frozen once; a correction belongs in a later month.';
END $$;
COMMENT ON FUNCTION mirror.month_end_refuse_update() IS 'Refuses UPDATE of mirror.month_end_contracts and mirror.month_end_snapshots.';
CREATE TRIGGER month_end_contracts_frozen
    BEFORE UPDATE ON mirror.month_end_contracts
    FOR EACH ROW EXECUTE FUNCTION mirror.month_end_refuse_update();
CREATE TRIGGER month_end_snapshots_frozen
    BEFORE UPDATE ON mirror.month_end_snapshots
    FOR EACH ROW EXECUTE FUNCTION mirror.month_end_refuse_update();

GRANT SELECT ON mirror.month_end_snapshots, mirror.month_end_contracts TO partner_sync_reader;
GRANT EXECUTE ON FUNCTION mirror.rabot_contracts_as_of(timestamptz),
    mirror.energyzero_contracts_as_of(timestamptz),
    mirror.rabot_contract_price_on(text, date, text) TO partner_sync_reader;
