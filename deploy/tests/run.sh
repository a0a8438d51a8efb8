#!/usr/bin/env bash
# The deploy suite: template, scripts, image and manifests, offline.
#
#   deploy/tests/run.sh [pytest arguments]
#
# Installs the pinned tools (deploy/local/tools.sh, first run only) and runs pytest on
# deploy/tests. The tests that deploy need moto: the one `deploy/local/emulators.sh start`
# runs, found through AWS_ENDPOINT_URL_DYNAMODB (or STREAM_WORKER_MOTO_ENDPOINT). This script
# does not start it; without it those tests fail and say how to start it.
# STREAM_WORKER_LAMBDA_ZIP=path deploys the real Lambda zip instead of a stand-in.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=$("$repo/deploy/local/tools.sh" venv)
cd "$repo/deploy/tests"
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest "$@"
