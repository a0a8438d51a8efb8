#!/usr/bin/env bash
# The whole pipeline on this machine: emulators, stream and tables, a producer of
# synthetic tweets, two workers sharing the shards, progress every few seconds.
# Ctrl-C stops it all (workers gracefully: checkpoint, release leases).
#
#   deploy/local/demo.sh
#
# Settings (environment): DEMO_STREAM (tweets), DEMO_SHARDS (4), DEMO_RATE
# records/s (100), DEMO_MALFORMED_RATIO (0.01), DEMO_METRICS_PORT (9464; the
# second worker uses the next port).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
stream=${DEMO_STREAM:-tweets}
shards=${DEMO_SHARDS:-4}
rate=${DEMO_RATE:-100}
port=${DEMO_METRICS_PORT:-9464}
logs=$repo/.local/demo
mkdir -p "$logs"

command -v cargo >/dev/null || { echo "demo.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
echo "demo: building stream-worker"
cargo build --locked --quiet
bin=$repo/target/debug/stream-worker

eval "$(deploy/local/emulators.sh start)"
py=$repo/.local/emulators/venv/bin/python
"$py" deploy/local/resources.py create --stream "$stream" --shards "$shards"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "demo: stopping (workers checkpoint and release their leases)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$py" deploy/local/resources.py show --stream "$stream" || true
  deploy/local/emulators.sh stop
}
trap cleanup INT TERM EXIT

for i in 1 2; do
  "$bin" run --stream "$stream" --worker-id "worker-$i" --metrics-addr "127.0.0.1:$((port + i - 1))" \
    >"$logs/worker-$i.log" 2>&1 &
  pids+=($!)
done
"$bin" produce --stream "$stream" --rate "$rate" --minutes 600 \
  --malformed-ratio "${DEMO_MALFORMED_RATIO:-0.01}" --seed "$RANDOM" >"$logs/producer.log" 2>&1 &
pids+=($!)

cat <<MSG
demo: producer putting $rate tweets/s into stream '$stream'; worker-1 and worker-2 consuming.
  metrics:  curl -s 127.0.0.1:$port/metrics | grep ^stream_worker   (worker-2 on port $((port + 1)))
  rows:     $py deploy/local/resources.py show --stream $stream
  logs:     $logs/
  stop:     Ctrl-C
MSG
while sleep 5; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "demo: a process exited; see $logs/"; tail -5 "$logs"/*.log; exit 1; }
  done
  printf '%s  ' "$(date +%T)"
  "$py" deploy/local/resources.py show --brief --stream "$stream"
done
