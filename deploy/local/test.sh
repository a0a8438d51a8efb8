#!/usr/bin/env bash
# The whole test suite: installs the pinned emulators and tools (first run only),
# starts the emulators on free loopback ports for this run, builds the release
# binaries (the worker image's build, the Lambda zip), runs every Rust test and
# the deploy suite (template, scripts, image, manifests), stops the emulators.
#
#   deploy/local/test.sh                 # all tests
#   deploy/local/test.sh --test e2e worker::   # extra arguments go to `cargo nextest run` (the deploy suite is skipped)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

# cargo-nextest runs the tests of every binary side by side (.config/nextest.toml
# says which may not): the machine's own if it has one, else this pinned version,
# built once into .local/.
NEXTEST_VERSION=0.9.143
local_dir=${STREAM_WORKER_LOCAL_DIR:-$repo/.local}
if ! cargo nextest --version >/dev/null 2>&1; then
  if [ ! -x "$local_dir/nextest/bin/cargo-nextest" ]; then
    echo "test.sh: installing cargo-nextest $NEXTEST_VERSION into $local_dir/nextest (first run only)" >&2
    cargo install --locked --quiet --root "$local_dir/nextest" "cargo-nextest@$NEXTEST_VERSION" >&2
  fi
  export PATH="$local_dir/nextest/bin:$PATH"
fi

# promtool and a Prometheus server for the observability tests: Debian's package,
# pinned to upstream 2.42.0 (Debian revision 5, any rebuild).
PROMETHEUS_VERSION='2.42.0+ds-5*'
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing Debian's prometheus=$PROMETHEUS_VERSION" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "prometheus=$PROMETHEUS_VERSION" >&2
  else
    echo "test.sh: promtool/prometheus not found; install them (Debian: sudo apt-get install prometheus)" >&2
    exit 1
  fi
fi

# Run folders of its own, so that the suite never touches a running demo: the
# timing lane's emulators (also those of a run with arguments) and the bulk lane's
# (see the end of this script).
export EMULATORS_RUN_DIR="$repo/.local/test-run"
bulk_run="$repo/.local/test-run-bulk"
trap 'deploy/local/emulators.sh stop; EMULATORS_RUN_DIR=$bulk_run deploy/local/emulators.sh stop' EXIT
eval "$(deploy/local/emulators.sh start)"

# The release builds: the worker as the Dockerfile builds it, and the Lambda zip
# (tests/e2e/lambda_package.rs checks it; the deploy suite deploys it to moto).
cargo build --release --locked --bin stream-worker
# The engine's example application (tests/e2e/example_archive.rs runs it).
cargo build --release --locked --examples
# A crate that depends on the engine alone (default-features = false) compiles
# none of the binaries' crates.
engine_deps=$(cargo tree --locked --no-default-features -e normal --prefix none)
for crate in clap axum lambda_runtime aws-sdk-secretsmanager tikv-jemallocator; do
  if grep -q "^$crate v" <<<"$engine_deps"; then
    echo "test.sh: the library without its default features depends on $crate (see [features] in Cargo.toml)" >&2
    exit 1
  fi
done
STREAM_WORKER_LAMBDA_ZIP=$(deploy/build-lambda.sh)
export STREAM_WORKER_LAMBDA_ZIP

# In the release profile: the tests share the dependencies just built, and the
# end-to-end tests run the binaries users run (their rate and CPU figures mean
# something only for an optimized build).
if [ "$#" -gt 0 ]; then
  cargo nextest run --release --locked --all-targets --no-fail-fast "$@"
  exit
fi
cargo nextest run --release --locked --all-targets --no-run

# Two lanes at once (.config/nextest.toml says why). The timing lane: the tests
# whose subject is a time or a rate, one at a time, on the emulators started
# above; then the doctests and the documentation (its compiles would otherwise
# come after the bulk lane's tests). The bulk lane: every other test two at
# once, then the deploy suite, on emulators of its own, all under nice, so that
# the timing lane's processes are never short of a core.
timing_log="$EMULATORS_RUN_DIR/timing-lane.log"
timing_lane() {
  local failed=0
  cargo nextest run --release --locked --all-targets --no-fail-fast -E 'group(timing)' || failed=1
  # The crate documentation's example compiles (nextest runs no doctests), and
  # the documentation builds without a warning (a broken or private link).
  cargo test --release --locked --doc || failed=1
  RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked || failed=1
  return "$failed"
}
timing_lane >"$timing_log" 2>&1 &
timing_lane=$!
bulk_env=$(EMULATORS_RUN_DIR="$bulk_run" nice -n "${STREAM_WORKER_TEST_NICE:-5}" deploy/local/emulators.sh start)
failed=()
bulk() { # what to run, under nice, against the bulk lane's emulators
  (eval "$bulk_env"; exec nice -n "${STREAM_WORKER_TEST_NICE:-5}" "$@") || failed+=("$*")
}
bulk cargo nextest run --release --locked --all-targets --no-fail-fast -E 'not group(timing)' --test-threads "${STREAM_WORKER_TEST_THREADS:-2}"
bulk deploy/tests/run.sh -q
wait "$timing_lane" || failed+=("the timing lane: its tests, the doctests or cargo doc (its output follows)")
echo "test.sh: the timing lane (-E 'group(timing)', the doctests, cargo doc):"
cat "$timing_log"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'test.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
