#!/usr/bin/env bash
# Records what a healthy partner-sync looks like and plots it (README: Dashboard and alerts):
# the sandbox, the daemon with every job every 20 s and one approved Rabobank consent whose
# refresh token lives 5 minutes (so the rotation shows), /metrics sampled every 5 s.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/partner_sync_plot deploy/plot/record_demo.sh [IMAGE] [SECONDS]
#
# IMAGE defaults to docs/operating.png, SECONDS to 240. DATABASE_URL names an empty scratch
# database (`createdb -h 127.0.0.1 -U postgres partner_sync_plot`): old grants would show too.
# PARTNER_SYNC names the binary (default target/debug/partner-sync); needs curl and matplotlib.
set -euo pipefail
cd "$(dirname "$0")/../.."

image="${1:-docs/operating.png}"
seconds="${2:-240}"
binary="${PARTNER_SYNC:-target/debug/partner-sync}"
: "${DATABASE_URL:?set DATABASE_URL to a scratch database}"
work="$(mktemp -d)"
pids=()
# Waits for `condition` while the process started last still runs; shows its log if it ended.
wait_for() {
    until eval "$1"; do
        kill -0 "${pids[-1]}" 2>/dev/null || { cat "$2" >&2; exit 1; }
        sleep 0.3
    done
}
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

sandbox=127.0.0.1:18089 public=127.0.0.1:18080 ops=127.0.0.1:19464
"$binary" sandbox --listen "$sandbox" --customers 60 --rate-limit 20 \
    --rabobank-refresh-lifetime 5m >"$work/sandbox.out" 2>"$work/sandbox.log" &
pids+=($!)
wait_for "grep -q '^PARTNER_SYNC__ENERGYZERO__USER_IDS=' '$work/sandbox.out'" "$work/sandbox.log"
# Every environment line the sandbox prints, and what makes the picture move quickly.
mapfile -t environment < <(grep '^PARTNER_SYNC__' "$work/sandbox.out")
environment+=(
    PARTNER_SYNC__SECURITY__TOKEN_KEY="$(head -c 32 /dev/urandom | base64)"
    PARTNER_SYNC__SERVER__LISTEN="$public" PARTNER_SYNC__SERVER__PUBLIC_URL="http://$public"
    PARTNER_SYNC__SERVER__OPS_LISTEN="$ops" PARTNER_SYNC__LOG__FORMAT=json
    PARTNER_SYNC__RABOT__SCHEDULE="*/20 * * * * *" PARTNER_SYNC__ENERGYZERO__SCHEDULE="5/20 * * * * *"
    PARTNER_SYNC__RABOBANK__SCHEDULE="10/20 * * * * *" PARTNER_SYNC__RABOBANK__ROTATE_BEFORE=4m
)

env "${environment[@]}" "$binary" run 2>"$work/daemon.log" &
pids+=($!)
wait_for "curl -fs 'http://$ops/readyz' >/dev/null" "$work/daemon.log"

# One consent, approved through the sandbox bank's decision knob instead of its form.
authorize_url="$(env "${environment[@]}" "$binary" rabobank authorize --label Demo 2>/dev/null | grep '^http')"
callback="$(curl -fs -o /dev/null -w '%{redirect_url}' "$authorize_url&sandbox_decision=approve")"
curl -fs "$callback" >/dev/null

python3 deploy/plot/plot_metrics.py sample "http://$ops/metrics" "$work/samples.jsonl" --every 5 --for "$seconds"
python3 deploy/plot/plot_metrics.py plot "$work/samples.jsonl" "$image"
echo "wrote $image"
