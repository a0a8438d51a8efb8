#!/usr/bin/env bash
# The end-to-end benchmark: release build, emulators on this machine, the real
# binary; prints one table of figures against their targets (see bench/run.py).
#
#   bench/run.sh            # all figures (about 10 minutes)
#   bench/run.sh cpu memory # some of: cpu memory capacity budget latency fan-out lease-cost fleet producer aggregation
#   BENCH_WORKER_ARGS='--max-write-rate 1000' bench/run.sh cpu   # the drains' worker with a setting
#   BENCH_BASELINE_BIN=/path/to/old/stream-worker bench/run.sh cpu-pairs  # cpu's drain, this
#                           # build against another, alternating in pairs (BENCH_PAIRS, 5)
#   bench/run.sh lambda [--json]  # the Lambda function: cold start, peak RSS, CPU per
#                           # record, invocation latency (see bench/lambda.py; not in "all")
#
# moto (the DynamoDB emulator) closes every connection after one response, while
# DynamoDB keeps them alive; a worker talking to moto directly spends a fifth of
# its CPU opening connections. So the worker reaches moto through Debian's nginx,
# which keeps the worker's connections alive, as DynamoDB would.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
NGINX_VERSION='1.22.1-9*'
if ! command -v nginx >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "nginx=$NGINX_VERSION" >&2
fi
command -v nginx >/dev/null || { echo "bench: nginx not found; install it (Debian: apt-get install nginx)" >&2; exit 1; }
cargo build --release --locked --quiet
export EMULATORS_RUN_DIR="$repo/.local/bench-run"
mkdir -p "$EMULATORS_RUN_DIR"
cleanup() {
  [ -f "$EMULATORS_RUN_DIR/nginx.pid" ] && kill "$(cat "$EMULATORS_RUN_DIR/nginx.pid")" 2>/dev/null || true
  deploy/local/emulators.sh stop
}
trap cleanup EXIT
eval "$(deploy/local/emulators.sh start)"
moto=${AWS_ENDPOINT_URL_DYNAMODB#http://}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
front=$(free_port)
writes_nowhere=$(free_port)
cat >"$EMULATORS_RUN_DIR/nginx.conf" <<CONF
worker_processes 1;
pid $EMULATORS_RUN_DIR/nginx.pid;
error_log $EMULATORS_RUN_DIR/nginx.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $EMULATORS_RUN_DIR/nginx-body;
  proxy_temp_path $EMULATORS_RUN_DIR/nginx-proxy;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  client_max_body_size 32m;
  server {
    listen 127.0.0.1:$front;
    location / { proxy_pass http://$moto; proxy_set_header Host \$http_host; proxy_buffering off; }
  }
  # The same, but the tweets' BatchWriteItem is answered at once ("{}": all
  # written) and written nowhere: bench_cpu's drain without moto's CPU.
  server {
    listen 127.0.0.1:$writes_nowhere;
    location / {
      default_type application/x-amz-json-1.0;
      if (\$http_x_amz_target = "DynamoDB_20120810.BatchWriteItem") { return 200 '{}'; }
      proxy_pass http://$moto; proxy_set_header Host \$http_host; proxy_buffering off;
    }
  }
}
CONF
nginx -c "$EMULATORS_RUN_DIR/nginx.conf" -e "$EMULATORS_RUN_DIR/nginx.log"
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$front"
export BENCH_WRITES_NOWHERE_URL="http://127.0.0.1:$writes_nowhere"
export STREAM_WORKER_BIN="$repo/target/release/stream-worker"
export STREAM_WORKER_LAMBDA_BIN="$repo/target/release/stream-worker-lambda"
case "${1:-}" in
  lambda) shift; "$repo/.local/emulators/venv/bin/python" bench/lambda.py "$@" ;;
  *) "$repo/.local/emulators/venv/bin/python" bench/run.py "$@" ;;
esac
