#!/usr/bin/env bash
# The end-to-end benchmark: release build, emulators on this machine, the real
# binary; prints one table of figures against their targets (see bench/run.py).
#
#   bench/run.sh            # all figures (about 6 minutes)
#   bench/run.sh cpu memory # some of: cpu memory latency lease-cost fleet
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cargo build --release --locked --quiet
export EMULATORS_RUN_DIR="$repo/.local/bench-run"
trap 'deploy/local/emulators.sh stop' EXIT
eval "$(deploy/local/emulators.sh start)"
export STREAM_WORKER_BIN="$repo/target/release/stream-worker"
"$repo/.local/emulators/venv/bin/python" bench/run.py "$@"
