#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL, NATS and Redis.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# promtool checks the alert rules and the metrics output (Debian's prometheus package).
if ! command -v promtool >/dev/null 2>&1; then
  echo "[test] installing prometheus (for promtool)" >&2
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# An S3-compatible server for the receipt object-store test (moto, from PyPI).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "[test] installing moto[server] (an S3-compatible test server)" >&2
  python3 -m pip install --quiet "moto[server]"
fi
# Databases left behind by interrupted test runs.
runuser_psql() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- psql "$@"; else sudo -u postgres psql "$@"; fi; }
for db in $(runuser_psql -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'smartpos_t_%'" 2>/dev/null); do
  runuser_psql -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
done
# The end-to-end tests start the real binaries, so build them first.
cargo build --workspace --bins
# Streams left behind by interrupted or failed test runs.
target/debug/sweep-test-streams || echo "[test] could not sweep leftover test streams" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
