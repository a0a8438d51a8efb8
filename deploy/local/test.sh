#!/usr/bin/env bash
# The whole test suite: installs the pinned emulators (first run only), starts
# them on free loopback ports for this run, runs every test, stops them.
#
#   deploy/local/test.sh                 # all tests
#   deploy/local/test.sh --test worker   # extra arguments go to `cargo test`
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

# A run folder of its own, so that the suite never touches a running demo.
export EMULATORS_RUN_DIR="$repo/.local/test-run"
trap 'deploy/local/emulators.sh stop' EXIT
eval "$(deploy/local/emulators.sh start)"

cargo test --locked --all-targets "$@"
