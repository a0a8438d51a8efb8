#!/usr/bin/env bash
# The upgrade and the rollback against the last release before protocol 2:
# builds c641ca1 (once, into .local/upgrade/), then runs tests/e2e/upgrade.rs with
# its binary as the older workers (STREAM_WORKER_OLD_BIN), on emulators this
# script starts. CI runs the same test with this build as the older workers
# (the fleet held at protocol 1); this adds the refusal beside a worker that
# writes no heartbeat, and the older release's own lease rules.
#
#   bench/upgrade.sh                 # about 8 minutes the first time (the build)
#   OLD_REV=<commit> bench/upgrade.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rev=${OLD_REV:-c641ca109d46a89c46ff07d4115e8deb36717648}
dir="$repo/.local/upgrade"
old="$dir/target/release/stream-worker"
if [ ! -x "$old" ] || [ "$(cat "$dir/rev" 2>/dev/null)" != "$rev" ]; then
  rm -rf "$dir/src"
  mkdir -p "$dir"
  git -C "$repo" worktree prune
  git -C "$repo" worktree add --detach "$dir/src" "$rev" >&2
  (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --release --locked --bin stream-worker >&2)
  git -C "$repo" worktree remove --force "$dir/src"
  echo "$rev" >"$dir/rev"
fi
export EMULATORS_RUN_DIR="$repo/.local/upgrade-run"
mkdir -p "$EMULATORS_RUN_DIR"
trap 'deploy/local/emulators.sh stop' EXIT
eval "$(deploy/local/emulators.sh start)"
STREAM_WORKER_OLD_BIN="$old" cargo test --release --locked --test e2e upgrade:: -- --nocapture
