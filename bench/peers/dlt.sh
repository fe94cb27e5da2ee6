#!/usr/bin/env bash
# Peer comparison, not run in CI: mirrors the same sandbox data once with partner-sync's
# `sync rabot` and once with dlt's `rest_api` source into PostgreSQL, then prints each one's
# rows/s and peak RSS and partner-sync's ÷ dlt's.
#
#   bench/peers/dlt.sh [CUSTOMERS]        # default 20000
#
# Needs python3 with venv, PostgreSQL at DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)
# and GNU time (/usr/bin/time). The partner-sync binary is built with --release unless
# PARTNER_SYNC_BIN names one. dlt is installed in a virtual environment under
# ${DLT_VENV:-target/peers/dlt-venv}, pinned to DLT_VERSION.
set -euo pipefail
cd "$(dirname "$0")/../.."

CUSTOMERS="${1:-20000}"
DLT_VERSION="${DLT_VERSION:-1.31.0}"
VENV="${DLT_VENV:-target/peers/dlt-venv}"
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SERVER_URL="${SERVER_URL%/*}"
OURS_DB=partner_sync_peer_ours
DLT_DB=partner_sync_peer_dlt
PORT="${SANDBOX_PORT:-18189}"
BASE="http://127.0.0.1:$PORT"
WORK="$(mktemp -d)"
trap 'kill "${SANDBOX_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) is needed for peak RSS" >&2; exit 1; }

if [ -z "${PARTNER_SYNC_BIN:-}" ]; then
    cargo build --release --quiet
    PARTNER_SYNC_BIN=target/release/partner-sync
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet "dlt[postgres]==$DLT_VERSION"

for db in "$OURS_DB" "$DLT_DB"; do
    psql -q "$SERVER_URL/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done

# The same data for both: one sandbox, ordinary customers with 2 contracts each, no limit.
RUST_LOG=warn "$PARTNER_SYNC_BIN" sandbox --listen "127.0.0.1:$PORT" --customers "$CUSTOMERS" \
    --heavy-customer-every 0 >/dev/null &
SANDBOX_PID=$!
for _ in $(seq 1 600); do
    curl -s -o /dev/null "$BASE/" && break
    sleep 0.1
done

# Prints "seconds peak_kib" of the command after --.
measure() {
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || {
        cat "$WORK/err" >&2
        exit 1
    }
    cat "$WORK/time"
}

read -r OURS_S OURS_KIB < <(measure env -i PATH="$PATH" \
    DATABASE_URL="$SERVER_URL/$OURS_DB" RUST_LOG=error \
    PARTNER_SYNC__RABOT__ENABLED=true \
    PARTNER_SYNC__RABOT__TOKEN_URL="$BASE/rabot/connect/token" \
    PARTNER_SYNC__RABOT__API_BASE_URL="$BASE/rabot/partner/v1" \
    PARTNER_SYNC__RABOT__CLIENT_ID=sandbox-client \
    PARTNER_SYNC__RABOT__CLIENT_SECRET=sandbox-secret \
    PARTNER_SYNC__RABOT__REQUESTS_PER_SECOND=100000 \
    PARTNER_SYNC__RABOT__BURST=1000 \
    PARTNER_SYNC__RABOT__PAGE_SIZE=500 \
    PARTNER_SYNC__RABOT__CONCURRENCY=16 \
    "$PARTNER_SYNC_BIN" sync rabot)
OURS_ROWS=$(psql -qtA "$SERVER_URL/$OURS_DB" -c \
    "SELECT (SELECT count(*) FROM mirror.rabot_customers) + (SELECT count(*) FROM mirror.rabot_contracts)")

DLT_URL="$(python3 -c 'import sys, urllib.parse as u
url = u.urlsplit(sys.argv[1])
netloc = url.netloc if url.password else url.netloc.replace("@", ":unused@", 1)
print(u.urlunsplit(url._replace(netloc=netloc)))' "$SERVER_URL/$DLT_DB")"
cat >"$WORK/pipeline.py" <<PY
import dlt
from dlt.sources.helpers.rest_client.auth import OAuth2ClientCredentials
from dlt.sources.rest_api import rest_api_source

source = rest_api_source({
    "client": {
        "base_url": "$BASE/rabot/partner/v1/",
        "auth": OAuth2ClientCredentials(
            access_token_url="$BASE/rabot/connect/token",
            client_id="sandbox-client",
            client_secret="sandbox-secret",
            access_token_request_data={"scope": "api:partner role:finance-reporting"},
        ),
    },
    "resources": [
        {
            "name": "customers",
            "primary_key": "customer_number",
            "write_disposition": "merge",
            "endpoint": {
                "path": "customers",
                "data_selector": "data",
                "paginator": {"type": "offset", "limit": 500, "total_path": None,
                              "has_more_path": "hasMoreItems"},
            },
        },
        {
            "name": "contracts",
            "primary_key": ["_customers_customer_number", "contract_number"],
            "write_disposition": "merge",
            "parallelized": True,
            "endpoint": {
                "path": "customers/{resources.customers.customerNumber}/contracts",
                "data_selector": "data",
                "paginator": "single_page",
            },
            "include_from_parent": ["customerNumber"],
        },
    ],
})
# dlt insists on a password; a server that trusts local connections ignores it.
pipeline = dlt.pipeline(pipeline_name="peer_rabot", destination=dlt.destinations.postgres(
    "$DLT_URL"), dataset_name="rabot", pipelines_dir="$WORK/pipelines")
print(pipeline.run(source))
PY
read -r DLT_S DLT_KIB < <(measure "$VENV/bin/python" "$WORK/pipeline.py")
DLT_ROWS=$(psql -qtA "$SERVER_URL/$DLT_DB" -c \
    "SELECT (SELECT count(*) FROM rabot.customers) + (SELECT count(*) FROM rabot.contracts)")

python3 - "$CUSTOMERS" "$OURS_S" "$OURS_KIB" "$OURS_ROWS" "$DLT_S" "$DLT_KIB" "$DLT_ROWS" <<'PY'
import sys
customers, ours_s, ours_kib, ours_rows, dlt_s, dlt_kib, dlt_rows = sys.argv[1:]
ours_s, dlt_s = float(ours_s), float(dlt_s)
ours_rows, dlt_rows = int(ours_rows), int(dlt_rows)
ours_mib, dlt_mib = int(ours_kib) / 1024, int(dlt_kib) / 1024
print(f"{customers} customers, one first pass each into an empty database")
print(f"{'':>14} {'rows':>9} {'seconds':>9} {'rows/s':>9} {'peak RSS MiB':>13}")
print(f"{'partner-sync':>14} {ours_rows:>9} {ours_s:>9.2f} {ours_rows / ours_s:>9.0f} {ours_mib:>13.1f}")
print(f"{'dlt rest_api':>14} {dlt_rows:>9} {dlt_s:>9.2f} {dlt_rows / dlt_s:>9.0f} {dlt_mib:>13.1f}")
print(f"partner-sync ÷ dlt: rows/s {(ours_rows / ours_s) / (dlt_rows / dlt_s):.2f}, "
      f"peak RSS {ours_mib / dlt_mib:.2f}")
if ours_rows != dlt_rows:
    print(f"note: the two mirrors hold different row counts ({ours_rows} vs {dlt_rows})")
PY
