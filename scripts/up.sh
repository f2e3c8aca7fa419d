#!/usr/bin/env bash
# Brings the whole system up on this machine and serves until Ctrl-C:
# services (installed and started if needed), database, migrations, streams,
# then every process of the system.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo build --release --bins
target/release/posctl setup
echo "[up] demo credentials: target/release/posctl seed-demo --json" >&2
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
target/release/command-api & pids+=($!)
target/release/projectors & pids+=($!)
target/release/query-api & pids+=($!)
target/release/workers & pids+=($!)
# Stop everything when any process exits.
wait -n
