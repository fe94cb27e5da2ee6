-- RABOT contract consumption (GET /customers/{n}/contracts/{k}/metrics, metric type
-- Consumption, value type Actual): one row per contract, interval and period, and its history.
-- RABOT is the truth: a period it sends again with another value or state (a Final period
-- corrected, even back to Preliminary) is overwritten, and the version it replaces is kept in
-- rabot_contract_consumption_versions. Nothing here is tombstoned: consumption that was
-- measured stays true.
--
-- The key holds the interval: the same contract read Monthly and Daily (rabot.consumption_interval
-- changed) has a Monthly and a Daily period starting at the same instant, each true.

CREATE TABLE mirror.rabot_contract_consumption (
    contract_number  text        NOT NULL,
    period_interval  text        NOT NULL,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    value            numeric,
    unit             text,
    value_state      text,
    relevance_type   text,
    payload          jsonb       NOT NULL,
    content_hash     bytea       NOT NULL,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    changed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contract_number, period_interval, period_start)
);
COMMENT ON TABLE mirror.rabot_contract_consumption IS 'RABOT contract consumption (GET /customers/{n}/contracts/{k}/metrics, Consumption, Actual), one row per contract, interval and period. RABOT is the truth: a period it corrects is overwritten, the old version kept in rabot_contract_consumption_versions. Join to rabot_contracts on contract_number.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.contract_number IS 'RABOT contract number; joins mirror.rabot_contracts.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.period_interval IS 'The Interval the period was asked in (rabot.consumption_interval): QuarterHourly, Hourly, Daily, Weekly, Monthly or Yearly.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.period_start IS 'The record''s moment, which RABOT writes without a zone, read in rabot.metrics_timezone (the earlier instant when that clock shows it twice).';
COMMENT ON COLUMN mirror.rabot_contract_consumption.period_end IS 'Where the next record starts, or one interval after period_start (on the clock of rabot.metrics_timezone) for the last record of an answer.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.value IS 'value: the consumption in the period, in unit; NULL when RABOT sent null.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.unit IS 'valueUnitInfo of the answer, as RABOT wrote it, e.g. "in kWh".';
COMMENT ON COLUMN mirror.rabot_contract_consumption.value_state IS 'valueState, e.g. Final; a period not Final (the open one, say) is read again by every run.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.relevance_type IS 'valueRelevanceType, e.g. Actual or Forecast.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.payload IS 'The record exactly as RABOT sent it (its zone-less moment included).';
COMMENT ON COLUMN mirror.rabot_contract_consumption.content_hash IS 'SHA-256 of the record, its period_end and unit; unchanged rows are never rewritten.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.first_seen_at IS 'When partner-sync first mirrored the period.';
COMMENT ON COLUMN mirror.rabot_contract_consumption.changed_at IS 'When the period last changed.';

CREATE TABLE mirror.rabot_contract_consumption_versions (
    contract_number  text        NOT NULL,
    period_interval  text        NOT NULL,
    period_start     timestamptz NOT NULL,
    recorded_from    timestamptz NOT NULL,
    recorded_to      timestamptz,
    period_end       timestamptz NOT NULL,
    value            numeric,
    unit             text,
    value_state      text,
    relevance_type   text,
    payload          jsonb       NOT NULL,
    content_hash     bytea       NOT NULL,
    PRIMARY KEY (contract_number, period_interval, period_start, recorded_from)
);
COMMENT ON TABLE mirror.rabot_contract_consumption_versions IS 'Every distinct version of each RABOT contract consumption period; recorded_to is NULL for the current one and set on change.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.contract_number IS 'RABOT contract number.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.period_interval IS 'The Interval the period was asked in.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.period_start IS 'The period''s start.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.recorded_from IS 'When this version was first mirrored.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.recorded_to IS 'When it was replaced; NULL for the current version.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.period_end IS 'period_end in this version.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.value IS 'value in this version.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.unit IS 'unit in this version.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.value_state IS 'valueState in this version.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.relevance_type IS 'valueRelevanceType in this version.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.payload IS 'The record as RABOT sent it.';
COMMENT ON COLUMN mirror.rabot_contract_consumption_versions.content_hash IS 'SHA-256 of the record, its period_end and unit.';

CREATE FUNCTION mirror.rabot_contract_consumption_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mirror.rabot_contract_consumption_versions SET recorded_to = now()
     WHERE contract_number = NEW.contract_number AND period_interval = NEW.period_interval
       AND period_start = NEW.period_start AND recorded_to IS NULL;
    INSERT INTO mirror.rabot_contract_consumption_versions
        (contract_number, period_interval, period_start, recorded_from, period_end, value, unit,
         value_state, relevance_type, payload, content_hash)
    VALUES (NEW.contract_number, NEW.period_interval, NEW.period_start, now(), NEW.period_end,
            NEW.value, NEW.unit, NEW.value_state, NEW.relevance_type, NEW.payload,
            NEW.content_hash)
    ON CONFLICT (contract_number, period_interval, period_start, recorded_from) DO UPDATE
       SET period_end = EXCLUDED.period_end, value = EXCLUDED.value, unit = EXCLUDED.unit,
           value_state = EXCLUDED.value_state, relevance_type = EXCLUDED.relevance_type,
           payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, recorded_to = NULL;
    RETURN NULL;
END $$;

-- Fires only when content changed; the upsert never touches unchanged rows anyway.
CREATE TRIGGER rabot_contract_consumption_history
    AFTER INSERT OR UPDATE OF content_hash ON mirror.rabot_contract_consumption
    FOR EACH ROW EXECUTE FUNCTION mirror.rabot_contract_consumption_history();

-- As for the other mirror tables: finance's access does not depend on who migrates.
GRANT SELECT ON mirror.rabot_contract_consumption, mirror.rabot_contract_consumption_versions
    TO partner_sync_reader;
