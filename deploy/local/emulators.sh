#!/usr/bin/env bash
# Local AWS-API emulators for tests and the demo: kinesis-local (Kinesis) and moto (DynamoDB,
# through moto_atomic.py, which makes its conditional writes atomic as DynamoDB's are).
#
#   deploy/local/emulators.sh install          install the pinned emulators into .local/ (idempotent)
#   eval "$(deploy/local/emulators.sh start)"  install if needed, start both on free 127.0.0.1 ports,
#                                              print the AWS_* variables that point at them
#   deploy/local/emulators.sh env              print those variables again for running emulators
#   deploy/local/emulators.sh stop             stop the emulators this folder started (by their pids)
#
# Ports: KINESIS_PORT and DYNAMODB_PORT pick fixed ports; unset, free ones are chosen.
# State (installs, pids, logs) lives in STREAM_WORKER_LOCAL_DIR (default: <repo>/.local);
# EMULATORS_RUN_DIR picks the pids/logs folder (default: $STREAM_WORKER_LOCAL_DIR/run).
set -euo pipefail

KINESIS_LOCAL_VERSION=0.6.2
MOTO_VERSION=5.2.5
# Beside moto (and its boto3), in the same venv: the awslabs KPL aggregation library
# (deploy/local/kpl.py, the interoperability tests), with the dependencies it needs
# but does not declare.
PY_PINS=("moto[server]==$MOTO_VERSION" "aws-kinesis-agg==1.2.3" "six==1.17.0" "protobuf==7.36.2")

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${STREAM_WORKER_LOCAL_DIR:-$repo/.local}
emu=$state/emulators
run=${EMULATORS_RUN_DIR:-$state/run}

log() { echo "emulators: $*" >&2; }

install() {
  mkdir -p "$emu"
  if [ ! -f "$emu/node_modules/kinesis-local/package.json" ] ||
     ! grep -q "\"version\" : \"$KINESIS_LOCAL_VERSION\"" "$emu/node_modules/kinesis-local/package.json"; then
    command -v npm >/dev/null || { log "npm not found; install Node.js 18+ and npm"; exit 1; }
    log "installing kinesis-local@$KINESIS_LOCAL_VERSION"
    (cd "$emu" && [ -f package.json ] || echo '{"private":true}' > "$emu/package.json"
     cd "$emu" && npm install --no-audit --no-fund --loglevel=error "kinesis-local@$KINESIS_LOCAL_VERSION" >&2)
  fi
  if [ ! -x "$emu/venv/bin/moto_server" ] || [ "$(cat "$emu/venv/pins.txt" 2>/dev/null)" != "${PY_PINS[*]}" ]; then
    command -v python3 >/dev/null || { log "python3 not found; install Python 3.11+"; exit 1; }
    log "installing ${PY_PINS[*]}"
    python3 -m venv "$emu/venv"
    "$emu/venv/bin/pip" install --quiet --disable-pip-version-check "${PY_PINS[@]}" >&2
    echo "${PY_PINS[*]}" > "$emu/venv/pins.txt"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

wait_http() { # name url pid
  for _ in $(seq 1 300); do
    if python3 - "$2" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass  # any HTTP answer means the server is up
PY
    kill -0 "$3" 2>/dev/null || { log "$1 exited during start-up; see $run/$1.log"; tail -20 "$run/$1.log" >&2; exit 1; }
    sleep 0.1
  done
  log "$1 did not answer at $2 within 30 s; see $run/$1.log"; exit 1
}

print_env() {
  cat <<ENV
export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$(cat "$run/kinesis.port")
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$(cat "$run/dynamodb.port")
export AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:$(cat "$run/dynamodb.port")
export AWS_REGION=\${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-test}
# Kinesis over TLS (HTTP/2 by ALPN, as AWS): set AWS_ENDPOINT_URL_KINESIS to the first, AWS_CA_BUNDLE to the second.
export STREAM_WORKER_LOCAL_KINESIS_TLS_URL=https://localhost:$(cat "$run/kinesis.tls.port")
export STREAM_WORKER_LOCAL_CA_BUNDLE=$emu/tls/ca.pem
ENV
}

start() {
  install
  mkdir -p "$run"
  if alive kinesis && alive dynamodb; then log "already running"; print_env; return; fi
  stop 2>/dev/null || true
  rm -f "$run/kinesis.pid" "$run/dynamodb.pid"
  local kport=${KINESIS_PORT:-$(free_port)} tport dport=${DYNAMODB_PORT:-$(free_port)}
  tport=$(free_port)
  # A CA and a certificate for localhost and 127.0.0.1 (the one kinesis-local ships names no host).
  "$emu/venv/bin/python" "$repo/deploy/local/tls.py" "$emu/tls"
  # kinesis-local binds every interface; only the loopback address is ever used.
  # setsid: a Ctrl-C in the terminal must not stop the emulators before the
  # workers have checkpointed. Each process writes its own pid, then execs.
  (cd "$run" && exec env KINESIS_MOCK_PLAIN_PORT="$kport" KINESIS_MOCK_TLS_PORT="$tport" \
    KINESIS_MOCK_CERT_PATH="$emu/tls/server.json" \
    CREATE_STREAM_DURATION=50ms DELETE_STREAM_DURATION=50ms MERGE_SHARDS_DURATION=50ms \
    SPLIT_SHARD_DURATION=50ms UPDATE_SHARD_COUNT_DURATION=50ms REGISTER_STREAM_CONSUMER_DURATION=50ms \
    DEREGISTER_STREAM_CONSUMER_DURATION=50ms SHARD_LIMIT="${KINESIS_SHARD_LIMIT:-500}" \
    LOG_LEVEL=WARN ROOT_LOG_LEVEL=ERROR AWS_REGION="${AWS_REGION:-us-east-1}" \
    setsid bash -c 'echo $$ >"$1"; exec node "$2"' _ "$run/kinesis.pid" "$emu/node_modules/kinesis-local/main.js") \
    >"$run/kinesis.log" 2>&1 </dev/null &
  (cd "$run" && exec setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$run/dynamodb.pid" \
    "$emu/venv/bin/python" "$repo/deploy/local/moto_atomic.py" -H 127.0.0.1 -p "$dport") >"$run/dynamodb.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do [ -s "$run/kinesis.pid" ] && [ -s "$run/dynamodb.pid" ] && break; sleep 0.05; done
  echo "$kport" >"$run/kinesis.port"; echo "$tport" >"$run/kinesis.tls.port"; echo "$dport" >"$run/dynamodb.port"
  wait_http kinesis "http://127.0.0.1:$kport/" "$(cat "$run/kinesis.pid")"
  wait_http dynamodb "http://127.0.0.1:$dport/" "$(cat "$run/dynamodb.pid")"
  log "kinesis on 127.0.0.1:$kport, dynamodb on 127.0.0.1:$dport (logs in $run)"
  print_env
}

stop() {
  for name in kinesis dynamodb; do
    if alive "$name"; then
      local pid; pid=$(cat "$run/$name.pid")
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 -- "-$pid" 2>/dev/null || true
      log "stopped $name (pid $pid)"
    fi
    rm -f "$run/$name.pid"
  done
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  env) alive kinesis && alive dynamodb || { log "not running; start with: eval \"\$(deploy/local/emulators.sh start)\""; exit 1; }; print_env ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
