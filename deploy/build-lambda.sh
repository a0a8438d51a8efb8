#!/usr/bin/env bash
# Builds the Lambda function's zip for the provided.al2023 runtime on x86_64:
# one executable, `bootstrap`, at the root of the zip.
#
#   deploy/build-lambda.sh            # prints the zip's path on stdout
#
# It is `cargo build --release --locked --bin stream-worker-lambda` (the release
# profile is spelled out in Cargo.toml: unwinding panics, which the runtime
# reports through /error), `strip --strip-debug` of a copy, and a zip. Cargo builds for this machine's target, so
# the machine must be x86_64 Linux with glibc; the binary's highest GLIBC_
# symbol version must be <= 2.34 (Amazon Linux 2023), which
# tests/e2e/lambda_package.rs checks. For arm64 (Graviton), build on an arm64 Linux
# machine (or with a toolchain that has aarch64-unknown-linux-gnu) and set
# `Architectures: [arm64]` on the function.
#
# Settings (environment): LAMBDA_ZIP (output path,
# default target/lambda/stream-worker-lambda/bootstrap.zip).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
command -v cargo >/dev/null || { echo "build-lambda.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
case "$(uname -m)-$(uname -s)" in
  x86_64-Linux) ;;
  *) echo "build-lambda.sh: this builds for the machine's own target, and this is $(uname -m) $(uname -s); build on x86_64 Linux (see the comment at the top)" >&2; exit 1 ;;
esac
zip=${LAMBDA_ZIP:-$repo/target/lambda/stream-worker-lambda/bootstrap.zip}
command -v strip >/dev/null || { echo "build-lambda.sh: strip not found; install binutils (Debian: apt-get install binutils)" >&2; exit 1; }
cargo build --release --locked --bin stream-worker-lambda >&2
mkdir -p "$(dirname "$zip")"
# The zip's copy without its debug info (the release profile keeps line tables
# for the worker's backtraces): 35 MB of zip become 8; symbols stay, so a
# panic's backtrace still names its functions.
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
strip --strip-debug -o "$stripped" "$repo/target/release/stream-worker-lambda"
python3 - "$stripped" "$zip" <<'PY'
import sys, zipfile
binary, out = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16  # a regular, executable file
info.compress_type = zipfile.ZIP_DEFLATED
with open(binary, "rb") as f, zipfile.ZipFile(out, "w") as z:
    z.writestr(info, f.read())
PY
echo "build-lambda.sh: $(du -h "$zip" | cut -f1) $zip" >&2
echo "$zip"
