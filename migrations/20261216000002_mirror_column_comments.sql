-- Every column in `mirror` says what it holds (docs/finance.md is generated from these
-- comments, and a test fails on a column without one).

COMMENT ON COLUMN mirror.rabot_customers_versions.customer_number IS 'RABOT customer number.';
COMMENT ON COLUMN mirror.rabot_customers_versions.valid_from IS 'When this version was first mirrored.';
COMMENT ON COLUMN mirror.rabot_customers_versions.valid_to IS 'When it was replaced or the customer tombstoned; NULL for the current version.';
COMMENT ON COLUMN mirror.rabot_customers_versions.payload IS 'The customer as RABOT sent it in this version.';
COMMENT ON COLUMN mirror.rabot_customers_versions.content_hash IS 'SHA-256 of the payload.';

COMMENT ON COLUMN mirror.rabot_contracts_versions.customer_number IS 'RABOT customer number.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.contract_number IS 'RABOT contract number.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.valid_from IS 'When this version was first mirrored.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.valid_to IS 'When it was replaced or the contract tombstoned; NULL for the current version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.payload IS 'The contract as RABOT sent it in this version.';
COMMENT ON COLUMN mirror.rabot_contracts_versions.content_hash IS 'SHA-256 of the payload.';

-- The "current" views pass their tables' columns through: each such column says what the
-- table's column says (the contract's table first, where both tables have the name).
DO $$
DECLARE
    source record;
BEGIN
    FOR source IN
        SELECT v.attname AS column_name, s.view_name, d.description
          FROM (VALUES (1, 'rabot_current_contracts', 'rabot_contracts'),
                       (2, 'rabot_current_contracts', 'rabot_customers'),
                       (3, 'energyzero_current_contracts', 'energyzero_contracts'),
                       (4, 'energyzero_current_contracts', 'energyzero_users'))
               AS s(priority, view_name, table_name)
          JOIN pg_attribute v ON v.attrelid = format('mirror.%I', s.view_name)::regclass
          JOIN pg_attribute t ON t.attrelid = format('mirror.%I', s.table_name)::regclass
                             AND t.attname = v.attname
          JOIN pg_description d ON d.objoid = t.attrelid AND d.objsubid = t.attnum
                               AND d.classoid = 'pg_class'::regclass
         WHERE v.attnum > 0 AND t.attnum > 0
         ORDER BY s.priority DESC
    LOOP
        -- Lower priorities run last, so their comment is the one that stays.
        EXECUTE format('COMMENT ON COLUMN mirror.%I.%I IS %L',
                       source.view_name, source.column_name, source.description);
    END LOOP;
END
$$;
