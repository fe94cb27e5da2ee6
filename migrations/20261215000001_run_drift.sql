-- Schema drift: names a run saw in the partner's answers that the typed columns do not know
-- (a new field, a new enum value, a new fee name). The payloads already keep them in `raw`;
-- this column says that they appeared, and when, so a mapping can be added before finance miss
-- them.
ALTER TABLE sync.runs ADD COLUMN drift jsonb;
COMMENT ON COLUMN sync.runs.drift IS
    'Names the run saw that the typed columns do not know: {"<where>": {"<name>": <items>}}, e.g. {"contract.contractState": {"Open": 3}}; null when there were none.';
CREATE INDEX runs_drift_idx ON sync.runs (finished_at) WHERE drift IS NOT NULL;
