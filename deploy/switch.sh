#!/usr/bin/env bash
# Move a running stream-worker stack from one processing path to the other without a gap.
#
#   deploy/switch.sh lambda|worker [options]
#
# The cutover, by stack updates on the deployed template (nothing else in the stack changes):
#   1. start the new path at the cutover time minus --margin, the old one still running:
#      to worker: empty the lease table (the fleet is stopped: its checkpoints are stale), then
#                 ProcessingPath=worker, OverlapPath=lambda, WorkerInitialPosition=at-timestamp:T
#      to lambda: ProcessingPath=lambda, OverlapPath=worker, StartingPositionTimestamp=T
#                 (the event source mapping is created afresh, starting at T)
#   2. wait until the new path has caught up: lag below --lag-ms
#      lambda: the function's IteratorAge (CloudWatch, latest minute); an idle stream counts as caught up
#      worker: `stream-worker status --json`: every unfinished shard owned, behind_ms below the limit
#   3. stop the old path: OverlapPath=none
# During the overlap both paths write the same rows under the tweet id, so nothing is lost
# and nothing is doubled. If the new path does not catch up within --timeout, both stay on and
# the script exits 1; run it again to resume waiting (a switch in progress is resumed, not restarted).
#
# Options:
#   --stack-name NAME    stack to switch (default: stream-worker)
#   --region REGION      AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, then the CLI's configuration)
#   --margin SECONDS     how far before the cutover the new path starts (default: 300)
#   --lag-ms N           caught up below this lag in milliseconds (default: 60000)
#   --timeout SECONDS    longest wait for the catch-up (default: 3600)
#   --poll SECONDS       pause between catch-up checks (default: 30)
#   --status-cmd CMD     how to run `stream-worker` for the worker's status (default: stream-worker
#                        on PATH, else target/release/stream-worker)
#   --dry-run            read the stack, print the updates and checks it would make, change nothing
#   -h, --help           this text
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=switch.sh

die() { echo "$me: $*" >&2; exit "${DIE_CODE:-1}"; }
usage_error() { DIE_CODE=2 die "$* (see --help)"; }
say() { echo "$me: $*" >&2; }

target=
stack=stream-worker
region=
margin=300
lag_ms=60000
timeout=3600
poll=30
status_cmd=
dry_run=false

need_value() { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || usage_error "$1 needs a value"; }
need_number() { [[ "$2" =~ ^[0-9]+$ ]] || usage_error "$1 must be a whole number (got '$2')"; }

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    lambda|worker) [ -z "$target" ] || usage_error "one path only"; target=$1; shift ;;
    --stack-name) need_value "$@"; stack=$2; shift 2 ;;
    --region) need_value "$@"; region=$2; shift 2 ;;
    --margin) need_value "$@"; need_number "$@"; margin=$2; shift 2 ;;
    --lag-ms) need_value "$@"; need_number "$@"; lag_ms=$2; shift 2 ;;
    --timeout) need_value "$@"; need_number "$@"; timeout=$2; shift 2 ;;
    --poll) need_value "$@"; need_number "$@"; poll=$2; shift 2 ;;
    --status-cmd) need_value "$@"; status_cmd=$2; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
[ -n "$target" ] || usage_error "which path? lambda or worker"
command -v python3 >/dev/null || die "python3 not found (needed for times and JSON)"

if command -v aws >/dev/null; then aws=aws; else aws="$("$repo/deploy/local/tools.sh" venv)/bin/aws"; fi
region=${region:-${AWS_REGION:-${AWS_DEFAULT_REGION:-}}}
if [ -z "$region" ]; then region=$($aws configure get region 2>/dev/null || true); fi
[ -n "$region" ] || usage_error "no AWS region: pass --region or set AWS_REGION"

show() { local out="+" a; for a in "$@"; do out+=" $(printf '%q' "$a")"; done; echo "$out"; }
# Reads run even with --dry-run; changes only print there.
read_aws() { "$aws" --region "$region" "$@"; }
change_aws() {
  if $dry_run; then show "$aws" --region "$region" "$@"; return 0; fi
  if [ "$1 $2" = "cloudformation update-stack" ]; then
    echo "+ $aws --region $region ${*:1:$(($# - 1))} <parameters>" >&2
  else
    show "$aws" --region "$region" "$@" >&2
  fi
  local log; log=$(mktemp)
  if ! "$aws" --region "$region" "$@" >/dev/null 2>"$log"; then
    local line; line=$(grep -v '^[[:space:]]*$' "$log" | head -1); rm -f "$log"
    die "aws $1 $2 failed: $line"
  fi
  rm -f "$log"
}

# ---------------------------------------------------------------- the stack as it is

stack_json=$(read_aws cloudformation describe-stacks --stack-name "$stack" --output json 2>/dev/null) \
  || die "stack $stack not found in $region (deploy it first with deploy/deploy.sh)"
read -r status path overlap < <(python3 -c '
import json, sys
s = json.load(sys.stdin)["Stacks"][0]
p = {x["ParameterKey"]: x.get("ParameterValue", "") for x in s.get("Parameters", [])}
print(s["StackStatus"], p.get("ProcessingPath", "?"), p.get("OverlapPath", "none"))
' <<<"$stack_json")
# Every parameter's current value, as JSON: updates pass them all explicitly (the same as
# UsePreviousValue, and what moto, the local test bed, also understands).
current_params=$(python3 -c '
import json, sys
print(json.dumps({x["ParameterKey"]: x.get("ParameterValue", "") for x in json.load(sys.stdin)["Stacks"][0].get("Parameters", [])}))
' <<<"$stack_json")
case "$status" in
  CREATE_COMPLETE|UPDATE_COMPLETE|UPDATE_ROLLBACK_COMPLETE) ;;
  *) die "stack $stack is $status; wait until it is *_COMPLETE" ;;
esac
[ "$path" = lambda ] || [ "$path" = worker ] || die "stack $stack has no ProcessingPath parameter; is it a stream-worker stack?"

resource() { # logical id -> physical id
  read_aws cloudformation describe-stack-resource --stack-name "$stack" --logical-resource-id "$1" \
    --query StackResourceDetail.PhysicalResourceId --output text
}

# Stack update on the deployed template: the given parameters change, every other keeps its value.
update_stack() { # KEY=VALUE...
  local json
  json=$(python3 - "$current_params" "$@" <<'PY'
import json, sys
params = json.loads(sys.argv[1])
params.update(a.split("=", 1) for a in sys.argv[2:])
print(json.dumps([{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()]))
PY
)
  if $dry_run; then
    echo "+ $aws --region $region cloudformation update-stack --stack-name $stack --use-previous-template --capabilities CAPABILITY_IAM --parameters <$*; the others unchanged>"
    echo "+ $aws --region $region cloudformation wait stack-update-complete --stack-name $stack"
    return 0
  fi
  say "stack update: $* (the other parameters unchanged)"
  change_aws cloudformation update-stack --stack-name "$stack" --use-previous-template \
    --capabilities CAPABILITY_IAM --parameters "$json"
  change_aws cloudformation wait stack-update-complete --stack-name "$stack"
  current_params=$(python3 -c 'import json, sys; p = json.loads(sys.argv[1]); p.update(a.split("=", 1) for a in sys.argv[2:]); print(json.dumps(p))' "$current_params" "$@")
}

other() { if [ "$1" = lambda ]; then echo worker; else echo lambda; fi; }

# ---------------------------------------------------------------- catch-up checks

now_epoch() { python3 -c 'import time; print(int(time.time()))'; }
iso() { python3 -c 'import sys, datetime; print(datetime.datetime.fromtimestamp(int(sys.argv[1]), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))' "$1"; }

# Prints a reason and fails when not caught up.
lambda_caught_up() {
  local fn stream now from age incoming
  fn=$(resource ConsumerFunction) stream=$(resource Stream)
  now=$(now_epoch); from=$((now - 300))
  age=$(read_aws cloudwatch get-metric-statistics --namespace AWS/Lambda --metric-name IteratorAge \
    --dimensions "Name=FunctionName,Value=$fn" --start-time "$(iso "$from")" --end-time "$(iso "$now")" \
    --period 60 --statistics Maximum --output json | python3 -c '
import json, sys
points = sorted(json.load(sys.stdin).get("Datapoints", []), key=lambda p: p["Timestamp"])
print(int(points[-1]["Maximum"]) if points else "none")')
  if [ "$age" = none ]; then
    incoming=$(read_aws cloudwatch get-metric-statistics --namespace AWS/Kinesis --metric-name IncomingRecords \
      --dimensions "Name=StreamName,Value=$stream" --start-time "$(iso "$from")" --end-time "$(iso "$now")" \
      --period 300 --statistics Sum --output json | python3 -c '
import json, sys
print(int(sum(p["Sum"] for p in json.load(sys.stdin).get("Datapoints", []))))')
    if [ "$incoming" = 0 ]; then echo "no IteratorAge yet, and the stream is idle"; return 0; fi
    echo "no IteratorAge from $fn yet, $incoming records came in over the last 5 minutes"; return 1
  fi
  if [ "$age" -lt "$lag_ms" ]; then echo "IteratorAge ${age}ms"; return 0; fi
  echo "IteratorAge ${age}ms, not below ${lag_ms}ms"; return 1
}

worker_caught_up() {
  local stream leases out
  stream=$(resource Stream) leases=$(resource LeaseTable)
  if ! out=$(AWS_REGION=$region $status_cmd status --stream "$stream" --lease-table "$leases" --json 2>/dev/null); then
    echo "stream-worker status failed"; return 1
  fi
  STATUS_JSON=$out python3 - "$lag_ms" <<'PY'
import json, os, sys
limit = int(sys.argv[1])
rows = [r for r in json.loads(os.environ["STATUS_JSON"])["shards"] if r.get("state") != "finished"]
if not rows:
    print("no shards reported"); sys.exit(1)
late = [r for r in rows if r.get("state") not in ("owned", "pending-handoff")
        or r.get("behind_ms") is None or r["behind_ms"] >= limit]
if late:
    r = late[0]
    print(f"{len(late)} of {len(rows)} shards not caught up, e.g. {r['shard_id']} {r.get('state')} behind {r.get('behind_ms')}ms")
    sys.exit(1)
print(f"{len(rows)} shards owned, at most {max(r['behind_ms'] for r in rows)}ms behind")
PY
}

wait_caught_up() { # path
  local deadline why
  if $dry_run; then
    echo "# wait (every ${poll}s, at most ${timeout}s) until the $1 path is less than ${lag_ms}ms behind"
    return 0
  fi
  deadline=$(( $(now_epoch) + timeout ))
  while :; do
    if why=$("${1}_caught_up"); then say "$1 path caught up: $why"; return 0; fi
    if [ "$(now_epoch)" -ge "$deadline" ]; then
      die "the $1 path has not caught up within ${timeout}s ($why); both paths stay on. Run deploy/switch.sh $1 again to keep waiting, or deploy/switch.sh $(other "$1") to go back"
    fi
    say "waiting for the $1 path: $why"
    sleep "$poll"
  done
}

if [ "$target" = worker ]; then
  if [ -z "$status_cmd" ]; then
    if command -v stream-worker >/dev/null; then status_cmd=stream-worker
    elif [ -x "$repo/target/release/stream-worker" ]; then status_cmd=$repo/target/release/stream-worker
    else die "stream-worker not found for the worker's status: build it (cargo build --release) or pass --status-cmd"; fi
  fi
fi

# ---------------------------------------------------------------- the procedure

if [ "$path" = "$target" ] && [ "$overlap" = none ]; then
  say "stack $stack already runs the $target path"; exit 0
fi
if [ "$overlap" = "$target" ]; then
  # An interrupted switch away from the target: the target never stopped. Going back is
  # stopping the path that was being started.
  say "a switch to $path was under way; going back to $target (it never stopped)"
  update_stack "ProcessingPath=$target" "OverlapPath=none"
  say "switched back to the $target path"; exit 0
fi

old=$(other "$target")
if [ "$path" = "$target" ] && [ "$overlap" = "$old" ]; then
  say "resuming the switch to $target: it runs next to $old already"
else
  cutover=$(now_epoch)
  start=$((cutover - margin))
  say "cutover at $(iso "$cutover"); the $target path starts at $(iso "$start") (margin ${margin}s)"
  if [ "$target" = worker ]; then
    # The fleet is stopped; its checkpoints, if any, are from its last run. Without them
    # every shard starts at the timestamp below.
    leases=$(resource LeaseTable) cluster=$(resource Cluster)
    running=$(read_aws ecs describe-services --cluster "$cluster" --services worker \
      --query "services[0].[desiredCount,runningCount]" --output text)
    [ "$(echo "$running" | tr -s '[:space:]' ' ' | sed 's/ $//')" = "0 0" ] \
      || die "the worker service still runs tasks (desired/running: $running); stop it before switching"
    for key in $(read_aws dynamodb scan --table-name "$leases" --projection-expression leaseKey \
                   --query "Items[].leaseKey.S" --output text); do
      [ "$key" = None ] && continue
      change_aws dynamodb delete-item --table-name "$leases" --key "{\"leaseKey\":{\"S\":\"$key\"}}"
    done
    update_stack "ProcessingPath=worker" "OverlapPath=lambda" "WorkerInitialPosition=at-timestamp:$(iso "$start")"
  else
    update_stack "ProcessingPath=lambda" "OverlapPath=worker" "StartingPositionTimestamp=$start"
  fi
fi

wait_caught_up "$target"
update_stack "OverlapPath=none"
if $dry_run; then
  echo "# dry run: nothing changed"
else
  say "switched to the $target path; the $old path is stopped"
fi
