-- RABOT contract price components (GET /customers/{n}/contracts/{k}/costs): each price period
-- as RABOT sent it, its components one row each, their history, and a wide view for finance.
-- A period RABOT stops returning is kept: prices that were in force stay true, so nothing here
-- is ever tombstoned.

CREATE TABLE mirror.rabot_contract_costs_periods (
    contract_number  text        NOT NULL,
    valid_from       timestamptz NOT NULL,
    payload          jsonb       NOT NULL,
    content_hash     bytea       NOT NULL,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    changed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contract_number, valid_from)
);
COMMENT ON TABLE mirror.rabot_contract_costs_periods IS 'RABOT contract price periods (GET /customers/{n}/contracts/{k}/costs), one row per contract and validFrom. Kept when RABOT stops returning them: they were in force. Join to rabot_contracts on contract_number.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods.contract_number IS 'RABOT contract number; joins mirror.rabot_contracts.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods.valid_from IS 'validFrom: when the period''s prices start.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods.payload IS 'The period exactly as RABOT sent it (every component, those partner-sync does not know included).';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods.content_hash IS 'SHA-256 of the payload; unchanged rows are never rewritten.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods.first_seen_at IS 'When partner-sync first mirrored the period.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods.changed_at IS 'When the payload last changed.';

CREATE TABLE mirror.rabot_contract_cost_components (
    contract_number  text        NOT NULL,
    valid_from       timestamptz NOT NULL,
    component        text        NOT NULL,
    value            numeric,
    unit_main        text,
    unit_per         text,
    unit_text        text,
    PRIMARY KEY (contract_number, valid_from, component),
    FOREIGN KEY (contract_number, valid_from)
        REFERENCES mirror.rabot_contract_costs_periods (contract_number, valid_from)
);
COMMENT ON TABLE mirror.rabot_contract_cost_components IS 'The price components of each RABOT contract price period, one row each, under the name RABOT sent (names the documents do not list included). Kept like their periods.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components.contract_number IS 'RABOT contract number; joins mirror.rabot_contract_costs_periods and mirror.rabot_contracts.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components.valid_from IS 'The period''s validFrom; joins mirror.rabot_contract_costs_periods.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components.component IS 'The component''s name as RABOT sent it, e.g. baseServiceFee, variableGridFee, or a newer one.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components.value IS 'value, as RABOT sent it (gross, incl. VAT, unless RABOT says otherwise); NULL when it was null or not a number.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components.unit_main IS 'unit.main, e.g. Euro, Cent, KilowattHour; None when not applicable.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components.unit_per IS 'unit.per, e.g. Month, Year, KilowattHour; None when not applicable.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components.unit_text IS 'unitText: the unit as RABOT writes it for people, e.g. ct/kWh.';

-- History, written by triggers as for the other mirror tables. The periods' own valid_from is
-- part of their key, so a version's lifetime is recorded_from .. recorded_to.
CREATE TABLE mirror.rabot_contract_costs_periods_versions (
    contract_number  text        NOT NULL,
    valid_from       timestamptz NOT NULL,
    recorded_from    timestamptz NOT NULL,
    recorded_to      timestamptz,
    payload          jsonb       NOT NULL,
    content_hash     bytea       NOT NULL,
    PRIMARY KEY (contract_number, valid_from, recorded_from)
);
COMMENT ON TABLE mirror.rabot_contract_costs_periods_versions IS 'Every distinct version of each RABOT contract price period; recorded_to is NULL for the current one and set on change.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods_versions.contract_number IS 'RABOT contract number.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods_versions.valid_from IS 'The period''s validFrom.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods_versions.recorded_from IS 'When this version was first mirrored.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods_versions.recorded_to IS 'When it was replaced; NULL for the current version.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods_versions.payload IS 'The period as RABOT sent it.';
COMMENT ON COLUMN mirror.rabot_contract_costs_periods_versions.content_hash IS 'SHA-256 of the payload.';

CREATE TABLE mirror.rabot_contract_cost_components_versions (
    contract_number  text        NOT NULL,
    valid_from       timestamptz NOT NULL,
    component        text        NOT NULL,
    recorded_from    timestamptz NOT NULL,
    recorded_to      timestamptz,
    value            numeric,
    unit_main        text,
    unit_per         text,
    unit_text        text,
    PRIMARY KEY (contract_number, valid_from, component, recorded_from)
);
COMMENT ON TABLE mirror.rabot_contract_cost_components_versions IS 'Every distinct version of each RABOT contract price component; recorded_to is NULL for the current one and set on change.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.contract_number IS 'RABOT contract number.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.valid_from IS 'The period''s validFrom.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.component IS 'The component''s name as RABOT sent it.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.recorded_from IS 'When this version was first mirrored.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.recorded_to IS 'When it was replaced; NULL for the current version.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.value IS 'value in this version.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.unit_main IS 'unit.main in this version.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.unit_per IS 'unit.per in this version.';
COMMENT ON COLUMN mirror.rabot_contract_cost_components_versions.unit_text IS 'unitText in this version.';

CREATE FUNCTION mirror.rabot_contract_costs_periods_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.rabot_contract_costs_periods_versions SET recorded_to = now()
     WHERE contract_number = NEW.contract_number AND valid_from = NEW.valid_from
       AND recorded_to IS NULL;
    INSERT INTO mirror.rabot_contract_costs_periods_versions
        (contract_number, valid_from, recorded_from, payload, content_hash)
    VALUES (NEW.contract_number, NEW.valid_from, now(), NEW.payload, NEW.content_hash)
    ON CONFLICT (contract_number, valid_from, recorded_from) DO UPDATE
       SET payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, recorded_to = NULL;
    RETURN NULL;
END $$;

CREATE FUNCTION mirror.rabot_contract_cost_components_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.rabot_contract_cost_components_versions SET recorded_to = now()
     WHERE contract_number = NEW.contract_number AND valid_from = NEW.valid_from
       AND component = NEW.component AND recorded_to IS NULL;
    INSERT INTO mirror.rabot_contract_cost_components_versions
        (contract_number, valid_from, component, recorded_from, value, unit_main, unit_per, unit_text)
    VALUES (NEW.contract_number, NEW.valid_from, NEW.component, now(), NEW.value, NEW.unit_main,
            NEW.unit_per, NEW.unit_text)
    ON CONFLICT (contract_number, valid_from, component, recorded_from) DO UPDATE
       SET value = EXCLUDED.value, unit_main = EXCLUDED.unit_main, unit_per = EXCLUDED.unit_per,
           unit_text = EXCLUDED.unit_text, recorded_to = NULL;
    RETURN NULL;
END $$;

-- Fires only when content changed; the upsert never touches unchanged rows anyway.
CREATE TRIGGER rabot_contract_costs_periods_history
    AFTER INSERT OR UPDATE OF content_hash ON mirror.rabot_contract_costs_periods
    FOR EACH ROW EXECUTE FUNCTION mirror.rabot_contract_costs_periods_history();
CREATE TRIGGER rabot_contract_cost_components_history
    AFTER INSERT OR UPDATE OF value, unit_main, unit_per, unit_text ON mirror.rabot_contract_cost_components
    FOR EACH ROW EXECUTE FUNCTION mirror.rabot_contract_cost_components_history();

-- The documented fees as columns, one row per contract and period; components the documents
-- do not list are in rabot_contract_cost_components (and the period's payload).
CREATE VIEW mirror.rabot_contract_costs AS
SELECT p.contract_number,
       p.valid_from,
       max(c.value) FILTER (WHERE c.component = 'baseServiceFee') AS base_service_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'baseServiceFee') AS base_service_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'baseServiceFee') AS base_service_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'baseServiceFee') AS base_service_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'variableServiceFee') AS variable_service_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'variableServiceFee') AS variable_service_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'variableServiceFee') AS variable_service_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'variableServiceFee') AS variable_service_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'baseGridFee') AS base_grid_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'baseGridFee') AS base_grid_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'baseGridFee') AS base_grid_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'baseGridFee') AS base_grid_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'variableGridFee') AS variable_grid_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'variableGridFee') AS variable_grid_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'variableGridFee') AS variable_grid_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'variableGridFee') AS variable_grid_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'meteringFee') AS metering_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'meteringFee') AS metering_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'meteringFee') AS metering_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'meteringFee') AS metering_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'expectedEnergyCost') AS expected_energy_cost_value,
       max(c.unit_main) FILTER (WHERE c.component = 'expectedEnergyCost') AS expected_energy_cost_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'expectedEnergyCost') AS expected_energy_cost_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'expectedEnergyCost') AS expected_energy_cost_unit_text,
       max(c.value) FILTER (WHERE c.component = 'guaranteeOfOrigin') AS guarantee_of_origin_value,
       max(c.unit_main) FILTER (WHERE c.component = 'guaranteeOfOrigin') AS guarantee_of_origin_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'guaranteeOfOrigin') AS guarantee_of_origin_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'guaranteeOfOrigin') AS guarantee_of_origin_unit_text,
       max(c.value) FILTER (WHERE c.component = 'concessionFee') AS concession_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'concessionFee') AS concession_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'concessionFee') AS concession_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'concessionFee') AS concession_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'kwkgFee') AS kwkg_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'kwkgFee') AS kwkg_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'kwkgFee') AS kwkg_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'kwkgFee') AS kwkg_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'electricityTax') AS electricity_tax_value,
       max(c.unit_main) FILTER (WHERE c.component = 'electricityTax') AS electricity_tax_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'electricityTax') AS electricity_tax_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'electricityTax') AS electricity_tax_unit_text,
       max(c.value) FILTER (WHERE c.component = 'savingsShare') AS savings_share_value,
       max(c.unit_main) FILTER (WHERE c.component = 'savingsShare') AS savings_share_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'savingsShare') AS savings_share_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'savingsShare') AS savings_share_unit_text,
       max(c.value) FILTER (WHERE c.component = 'estimatedConsumption') AS estimated_consumption_value,
       max(c.unit_main) FILTER (WHERE c.component = 'estimatedConsumption') AS estimated_consumption_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'estimatedConsumption') AS estimated_consumption_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'estimatedConsumption') AS estimated_consumption_unit_text,
       max(c.value) FILTER (WHERE c.component = 'offshoreFee') AS offshore_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'offshoreFee') AS offshore_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'offshoreFee') AS offshore_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'offshoreFee') AS offshore_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'p19Fee') AS p19_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'p19Fee') AS p19_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'p19Fee') AS p19_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'p19Fee') AS p19_fee_unit_text,
       max(c.value) FILTER (WHERE c.component = 'exchangeFee') AS exchange_fee_value,
       max(c.unit_main) FILTER (WHERE c.component = 'exchangeFee') AS exchange_fee_unit_main,
       max(c.unit_per) FILTER (WHERE c.component = 'exchangeFee') AS exchange_fee_unit_per,
       max(c.unit_text) FILTER (WHERE c.component = 'exchangeFee') AS exchange_fee_unit_text,
       p.changed_at
  FROM mirror.rabot_contract_costs_periods p
  LEFT JOIN mirror.rabot_contract_cost_components c USING (contract_number, valid_from)
 GROUP BY p.contract_number, p.valid_from, p.changed_at;
COMMENT ON VIEW mirror.rabot_contract_costs IS 'RABOT contract prices, one row per contract and price period, each documented fee as <fee>_value, <fee>_unit_main, <fee>_unit_per and <fee>_unit_text (NULL when RABOT did not send it).';
COMMENT ON COLUMN mirror.rabot_contract_costs.contract_number IS 'RABOT contract number; joins mirror.rabot_contracts.';
COMMENT ON COLUMN mirror.rabot_contract_costs.valid_from IS 'validFrom: when the period''s prices start.';
COMMENT ON COLUMN mirror.rabot_contract_costs.changed_at IS 'When the period last changed.';
COMMENT ON COLUMN mirror.rabot_contract_costs.base_service_fee_value IS 'baseServiceFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.base_service_fee_unit_main IS 'baseServiceFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.base_service_fee_unit_per IS 'baseServiceFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.base_service_fee_unit_text IS 'baseServiceFee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.variable_service_fee_value IS 'variableServiceFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.variable_service_fee_unit_main IS 'variableServiceFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.variable_service_fee_unit_per IS 'variableServiceFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.variable_service_fee_unit_text IS 'variableServiceFee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.base_grid_fee_value IS 'baseGridFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.base_grid_fee_unit_main IS 'baseGridFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.base_grid_fee_unit_per IS 'baseGridFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.base_grid_fee_unit_text IS 'baseGridFee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.variable_grid_fee_value IS 'variableGridFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.variable_grid_fee_unit_main IS 'variableGridFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.variable_grid_fee_unit_per IS 'variableGridFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.variable_grid_fee_unit_text IS 'variableGridFee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.metering_fee_value IS 'meteringFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.metering_fee_unit_main IS 'meteringFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.metering_fee_unit_per IS 'meteringFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.metering_fee_unit_text IS 'meteringFee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.expected_energy_cost_value IS 'expectedEnergyCost.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.expected_energy_cost_unit_main IS 'expectedEnergyCost.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.expected_energy_cost_unit_per IS 'expectedEnergyCost.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.expected_energy_cost_unit_text IS 'expectedEnergyCost.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.guarantee_of_origin_value IS 'guaranteeOfOrigin.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.guarantee_of_origin_unit_main IS 'guaranteeOfOrigin.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.guarantee_of_origin_unit_per IS 'guaranteeOfOrigin.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.guarantee_of_origin_unit_text IS 'guaranteeOfOrigin.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.concession_fee_value IS 'concessionFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.concession_fee_unit_main IS 'concessionFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.concession_fee_unit_per IS 'concessionFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.concession_fee_unit_text IS 'concessionFee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.kwkg_fee_value IS 'kwkgFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.kwkg_fee_unit_main IS 'kwkgFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.kwkg_fee_unit_per IS 'kwkgFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.kwkg_fee_unit_text IS 'kwkgFee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.electricity_tax_value IS 'electricityTax.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.electricity_tax_unit_main IS 'electricityTax.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.electricity_tax_unit_per IS 'electricityTax.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.electricity_tax_unit_text IS 'electricityTax.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.savings_share_value IS 'savingsShare.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.savings_share_unit_main IS 'savingsShare.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.savings_share_unit_per IS 'savingsShare.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.savings_share_unit_text IS 'savingsShare.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.estimated_consumption_value IS 'estimatedConsumption.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.estimated_consumption_unit_main IS 'estimatedConsumption.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.estimated_consumption_unit_per IS 'estimatedConsumption.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.estimated_consumption_unit_text IS 'estimatedConsumption.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.offshore_fee_value IS 'offshoreFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.offshore_fee_unit_main IS 'offshoreFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.offshore_fee_unit_per IS 'offshoreFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.offshore_fee_unit_text IS 'offshoreFee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.p19_fee_value IS 'p19Fee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.p19_fee_unit_main IS 'p19Fee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.p19_fee_unit_per IS 'p19Fee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.p19_fee_unit_text IS 'p19Fee.unitText.';
COMMENT ON COLUMN mirror.rabot_contract_costs.exchange_fee_value IS 'exchangeFee.value.';
COMMENT ON COLUMN mirror.rabot_contract_costs.exchange_fee_unit_main IS 'exchangeFee.unit.main.';
COMMENT ON COLUMN mirror.rabot_contract_costs.exchange_fee_unit_per IS 'exchangeFee.unit.per.';
COMMENT ON COLUMN mirror.rabot_contract_costs.exchange_fee_unit_text IS 'exchangeFee.unitText.';

-- As for the other mirror tables: finance's access does not depend on who migrates.
GRANT SELECT ON mirror.rabot_contract_costs_periods, mirror.rabot_contract_cost_components,
    mirror.rabot_contract_costs_periods_versions, mirror.rabot_contract_cost_components_versions,
    mirror.rabot_contract_costs TO partner_sync_reader;
