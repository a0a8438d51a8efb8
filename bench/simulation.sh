#!/usr/bin/env bash
# The fleet simulator as a benchmark (tests/simulation.rs, docs/simulation.md):
# real workers on the in-memory twins under paused time, at defaults.
#
#   bench/simulation.sh seeds   # every invariant over 1,000 seeds at 10 × 64 and
#                               # 500 at 20 × 200 with random faults (~25 minutes)
#   bench/simulation.sh sizes   # start together, settle, lose a tenth, scale out
#                               # and in by a tenth: 3 × 8 up to 100 × 2,000
#   SIM_DRIFT=0.08 bench/simulation.sh seeds   # clocks up to 8 % fast or slow
#
# CI runs the short version: 10 seeds at 20 × 200 and one 20 × 200 fleet.
# Each seed's line, and a failure's seed (which replays it), are in
# .local/bench-sim/.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out="$repo/.local/bench-sim"
mkdir -p "$out"
cargo test --release --locked --quiet --test simulation --no-run 2>/dev/null

# Runs `seeds` seeds of workers × shards from seed `first`, on both cores.
seeds() {
  local workers=$1 shards=$2 count=$3 half=$(($3 / 2)) started=$SECONDS status=0
  local log="$out/seeds-${workers}x${shards}"
  for part in 0 1; do
    SIM_WORKERS=$workers SIM_SHARDS=$shards SIM_SEED=$((1 + part * half)) \
      SIM_SEEDS=$((part == 0 ? half : count - half)) \
      cargo test --release --locked --quiet --test simulation seeded -- --nocapture >"$log.$part" 2>&1 &
  done
  wait %1 || status=1
  wait %2 || status=1
  local passed
  passed=$(cat "$log.0" "$log.1" | grep -c '^seed [0-9]*: ')
  if [ "$status" = 0 ] && [ "$passed" = "$count" ]; then
    echo "$workers × $shards: $passed of $count seeds kept every invariant ($((SECONDS - started)) s)"
  else
    echo "$workers × $shards: FAILED after $passed of $count seeds:" >&2
    grep -h -A1 'panicked' "$log.0" "$log.1" >&2 || true
    return 1
  fi
}

# One fleet of workers × shards: start together, settle, idle, a tenth crash,
# scale out and in by a tenth. Costs are measured with clocks 100 ppm apart, as
# quartz clocks are: at the invariant runs' 2 % a fast clock now and then thinks
# a slow worker's beat stood still (one more take round and a failed mark each).
size() {
  SIM_DRIFT=${SIM_DRIFT:-0.0001} SIM_WORKERS=$1 SIM_SHARDS=$2 cargo test --release --locked --quiet --test simulation a_fleet -- --nocapture 2>&1 |
    tee "$out/size-$1x$2" | grep ' workers × .* shards, seed '
}

case "${1:-seeds}" in
  seeds) seeds 10 64 1000 && seeds 20 200 500 ;;
  sizes) for s in 3x8 10x64 20x200 50x1000 60x1500 50x2000 100x2000; do size "${s%x*}" "${s#*x}"; done ;;
  *) echo "usage: bench/simulation.sh [seeds|sizes]" >&2; exit 2 ;;
esac
