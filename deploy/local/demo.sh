#!/usr/bin/env bash
# The whole pipeline on this machine: emulators, stream and tables, a producer of
# synthetic tweets, a consumer path, progress every few seconds. Ctrl-C stops it
# all (workers gracefully: checkpoint, release leases).
#
#   deploy/local/demo.sh                  # two workers sharing the shards
#   DEMO_PATH=lambda deploy/local/demo.sh # the reference architecture's path: the
#                                         # Lambda function, invoked by the local
#                                         # event source mapping (deploy/local/esm.py)
#
# Settings (environment): DEMO_PATH (worker | lambda), DEMO_STREAM (tweets),
# DEMO_SHARDS (4), DEMO_RATE records/s (100), DEMO_MALFORMED_RATIO (0.01),
# DEMO_METRICS_PORT (9464; the second worker uses the next port).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
path=${DEMO_PATH:-worker}
case "$path" in worker|lambda) ;; *) echo "demo.sh: DEMO_PATH must be worker or lambda, not '$path'" >&2; exit 2 ;; esac
stream=${DEMO_STREAM:-tweets}
shards=${DEMO_SHARDS:-4}
rate=${DEMO_RATE:-100}
port=${DEMO_METRICS_PORT:-9464}
logs=$repo/.local/demo
mkdir -p "$logs"

command -v cargo >/dev/null || { echo "demo.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
echo "demo: building stream-worker and stream-worker-lambda (release; the first build takes several minutes)"
cargo build --release --locked --quiet --bins
bin=$repo/target/release/stream-worker

eval "$(deploy/local/emulators.sh start)"
py=$repo/.local/emulators/venv/bin/python
"$py" deploy/local/resources.py create --stream "$stream" --shards "$shards"

# The consumers and the producer run in sessions of their own (setsid), so that
# Ctrl-C on the terminal reaches only this script: cleanup then sends each one
# SIGTERM, once. A second signal would make a worker exit at once, without
# releasing its leases.
pids=()
names=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "demo: stopping (workers checkpoint and release their leases)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$py" deploy/local/resources.py show --stream "$stream" || true
  deploy/local/emulators.sh stop
}
trap cleanup INT TERM EXIT

if [ "$path" = worker ]; then
  for i in 1 2; do
    setsid "$bin" run --stream "$stream" --worker-id "worker-$i" --metrics-addr "127.0.0.1:$((port + i - 1))" \
      >"$logs/worker-$i.log" 2>&1 &
    pids+=($!)
    names+=("worker-$i")
  done
  consumers="worker-1 and worker-2 consuming.
  metrics:  curl -s 127.0.0.1:$port/metrics | grep ^stream_worker   (worker-2 on port $((port + 1)))
  leases:   watch them live, in another terminal (from $repo):
              eval \"\$(deploy/local/emulators.sh env)\" && target/release/stream-worker status --watch --stream $stream
            then stop a worker (kill ${pids[0]}: worker-1 releases its leases and worker-2 takes them),
            or add one (target/release/stream-worker run --stream $stream --metrics-addr 127.0.0.1:0 there;
            it takes its share within seconds; Ctrl-C it before stopping the demo)"
else
  # Two execution environments, as Lambda would run for concurrent shards.
  setsid "$py" deploy/local/esm.py --stream "$stream" --concurrency 2 --log-dir "$logs/lambda" \
    --status-file "$logs/esm-status.json" -- "$repo/target/release/stream-worker-lambda" >"$logs/esm.log" 2>&1 &
  pids+=($!)
  names+=(mapping)
  consumers="the Lambda function consuming through the local event source mapping.
  mapping:  $logs/esm.log, $logs/esm-status.json
  function: $logs/lambda/ (JSON logs and EMF metric lines)"
fi
setsid "$bin" produce --stream "$stream" --rate "$rate" --duration 10h \
  --malformed-ratio "${DEMO_MALFORMED_RATIO:-0.01}" --seed "$RANDOM" >"$logs/producer.log" 2>&1 &
pids+=($!)
names+=(producer)

cat <<MSG
demo: producer putting $rate tweets/s into stream '$stream'; $consumers
  rows:     eval "\$(deploy/local/emulators.sh env)" && $py deploy/local/resources.py show --stream $stream
  logs:     $logs/
  stop:     Ctrl-C
MSG
declare -A gone=()
while sleep 5; do
  running=0
  for i in "${!pids[@]}"; do
    name=${names[$i]}
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      [ "$name" = producer ] || running=$((running + 1))
    elif [ -z "${gone[$name]:-}" ]; then
      gone[$name]=1
      echo "demo: $name exited; see $logs/"
    fi
  done
  # A stopped worker is part of the demo (its leases move); no consumer or no
  # producer left is the end of it.
  if [ -n "${gone[producer]:-}" ] || [ "$running" -eq 0 ]; then tail -5 "$logs"/*.log; exit 1; fi
  printf '%s  ' "$(date +%T)"
  "$py" deploy/local/resources.py show --brief --stream "$stream"
done
