-- `partner-sync resync rabot --customer ID`: a request for the targeted refresh of one RABOT
-- customer names it here, as the operator gave it (a customer number or an external id). The
-- command bounds it; the bound is kept here too, so nothing else can store an unbounded one.
ALTER TABLE sync.trigger_requests
    ADD COLUMN customer text CHECK (customer IS NULL OR length(customer) BETWEEN 1 AND 200);

COMMENT ON COLUMN sync.trigger_requests.customer IS 'For job rabot_customer_refresh: the customer number or external id to refresh; NULL for other jobs.';
