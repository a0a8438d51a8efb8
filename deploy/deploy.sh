#!/usr/bin/env bash
# Deploy the whole stream-worker system as one CloudFormation stack (deploy/template.yaml).
#
#   deploy/deploy.sh --bucket NAME [options]
#   eval "$(deploy/deploy.sh env [--stack-name NAME] [--region REGION])"
#
# Steps, each skipped when already done, so that a second run changes nothing:
#   1. build the Lambda consumer's zip (deploy/build-lambda.sh), unless --lambda-zip PATH
#   2. upload it to s3://BUCKET/lambda/stream-worker-lambda-<sha256>.zip (bucket created if absent)
#   3. build the worker image from the top-level Dockerfile and push it to the ECR repository
#      (created if absent; needs Docker), unless --image URI of an image already pushed
#   4. aws cloudformation deploy, with the parameters below (others keep their current values)
#   5. print the stack's outputs
#
# Options:
#   --bucket NAME            S3 bucket for the zip and the packaged template (required; created if absent)
#   --stack-name NAME        stack name (default: stream-worker)
#   --region REGION          AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, then the CLI's configuration)
#   --lambda-zip PATH        a built zip (one executable named bootstrap) instead of deploy/build-lambda.sh
#   --image URI              a pushed worker image instead of building one (no Docker needed)
#   --ecr-repository NAME    ECR repository to push to (default: stream-worker)
#   --processing-path P      lambda or worker: which consumer reads the stream (on a running system
#                            use deploy/switch.sh instead: it moves without a gap)
#   --parameter KEY=VALUE    any other template parameter (repeatable), e.g. ShardCount=4
#   --dry-run                print every command it would run, run none (no AWS call at all)
#   -h, --help               this text
#
# env: point the stream-worker CLI at a deployed stack. Prints, for the stack's names and
# settings, one shell `export` per variable the operator commands (status, dead-letters,
# checkpoints rewind, consumer deregister) read, to eval in the shell they run from:
#   AWS_REGION                       the stack's region (--region, else as above)
#   STREAM_WORKER_STREAM             output StreamName
#   STREAM_WORKER_TWEETS_TABLE       output TweetsTableName
#   STREAM_WORKER_LEASE_TABLE        output LeaseTableName
#   STREAM_WORKER_DEAD_LETTER_TABLE  output DeadLetterTableName
#   STREAM_WORKER_CONSUMER_NAME      output StreamConsumerName (the fleet's fan-out consumer)
#   STREAM_WORKER_TTL_DAYS           parameter TtlDays (dead-letters replay writes tweets)
#   STREAM_WORKER_MAX_WRITE_RATE     parameter MaxWriteRate
# Options: --stack-name, --region, --dry-run (print the reads it would make, make none). It only
# reads the stack (describe-stacks; list-stack-resources if the stack reports no outputs); a
# stack that does not exist is a one-line error, with nothing on stdout.
#
# AWS credentials and endpoints come from the standard chain (AWS_PROFILE, AWS_ACCESS_KEY_ID,
# AWS_ENDPOINT_URL, ...). Without an `aws` on PATH, the pinned AWS CLI is installed from PyPI
# into .local/tools (deploy/local/tools.sh). Commands are echoed to stderr as they run; the
# stack's outputs go to stdout. Any failure ends the script with one line saying what failed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
template=$repo/deploy/template.yaml
me=deploy.sh

die() { echo "$me: $*" >&2; exit "${DIE_CODE:-1}"; }
usage_error() { DIE_CODE=2 die "$* (see --help)"; }

stack=stream-worker
region=
bucket=
lambda_zip=
image=
ecr_repo=stream-worker
dry_run=false
params=()
mode=deploy

need_value() { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || usage_error "$1 needs a value"; }

if [ "${1:-}" = env ]; then mode=env; shift; fi
# Options that only a deployment takes.
deploy_only() { [ "$mode" = deploy ] || usage_error "$1 is not an option of '$me env' (it takes --stack-name, --region, --dry-run)"; }

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --bucket) deploy_only "$1"; need_value "$@"; bucket=$2; shift 2 ;;
    --stack-name) need_value "$@"; stack=$2; shift 2 ;;
    --region) need_value "$@"; region=$2; shift 2 ;;
    --lambda-zip) deploy_only "$1"; need_value "$@"; lambda_zip=$2; shift 2 ;;
    --image) deploy_only "$1"; need_value "$@"; image=$2; shift 2 ;;
    --ecr-repository) deploy_only "$1"; need_value "$@"; ecr_repo=$2; shift 2 ;;
    --processing-path) deploy_only "$1"; need_value "$@"; params+=("ProcessingPath=$2"); shift 2 ;;
    --parameter) deploy_only "$1"; need_value "$@"; params+=("$2"); shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    env) usage_error "'env' comes first: $me env [--stack-name NAME] [--region REGION]" ;;
    *) usage_error "unknown option '$1'" ;;
  esac
done

# ---------------------------------------------------------------- checks before any call

[[ "$stack" =~ ^[A-Za-z][A-Za-z0-9-]{0,63}$ ]] || usage_error "--stack-name '$stack' is not a valid stack name (letters, digits, hyphens; starts with a letter)"
if [ "$mode" = deploy ]; then
  # Checks of a deployment only; `env` reads a stack and takes none of these.
  [ -n "$bucket" ] || usage_error "--bucket is required (the S3 bucket for the Lambda zip)"
  [[ "$bucket" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || usage_error "--bucket '$bucket' is not a valid S3 bucket name"
  if [ -n "$lambda_zip" ] && [ ! -f "$lambda_zip" ]; then usage_error "--lambda-zip '$lambda_zip': no such file"; fi

  # The template's parameters and their AllowedValues, read from its Parameters section
  # (AllowedValues are written in flow style on one line there for this reason).
  declare -A known allowed
  while IFS=$'\t' read -r name values; do
    known[$name]=1
    [ -n "$values" ] && allowed[$name]=$values
  done < <(awk '
    /^Parameters:/ { in_params = 1; next }
    in_params && /^[A-Za-z]/ { in_params = 0 }
    in_params && /^  [A-Za-z0-9]+:[ \t]*$/ { if (name != "") print name "\t" values; name = $1; sub(":", "", name); values = ""; next }
    in_params && /^    AllowedValues: *\[/ { v = $0; sub(/^[^[]*\[/, "", v); sub(/\].*$/, "", v); gsub(/[ "]/, "", v); values = v }
    END { if (name != "") print name "\t" values }
  ' "$template")
  [ "${#known[@]}" -gt 0 ] || die "could not read the parameters of $template"

  for kv in ${params[@]+"${params[@]}"}; do
    [[ "$kv" == *=* ]] || usage_error "--parameter '$kv' is not KEY=VALUE"
    key=${kv%%=*} value=${kv#*=}
    case "$key" in
      LambdaCodeBucket|LambdaCodeKey|WorkerImage|EcrRepositoryName)
        usage_error "parameter $key is set by $me itself (use --bucket, --lambda-zip, --image, --ecr-repository)" ;;
    esac
    [ -n "${known[$key]:-}" ] || usage_error "unknown template parameter '$key'"
    if [ -n "${allowed[$key]:-}" ] && [[ ",${allowed[$key]}," != *",$value,"* ]]; then
      usage_error "parameter $key must be one of ${allowed[$key]//,/, } (got '$value')"
    fi
  done
fi

region=${region:-${AWS_REGION:-${AWS_DEFAULT_REGION:-}}}

# ---------------------------------------------------------------- helpers

# Every command goes through run: printed (with shell quoting) and, unless --dry-run, run.
show() {
  local out="+" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+=" $a"   # as it is
    elif [[ "$a" != *[\"\$\`\\!]* ]]; then out+=" \"$a\""      # a query: readable in double quotes
    else out+=" $(printf '%q' "$a")"; fi
  done
  echo "$out"
}
run() {
  if $dry_run; then show "$@"; else show "$@" >&2; "$@"; fi
}
# A command whose failure is a fact to learn (does it exist?), not an error.
probe() {
  if $dry_run; then show "$@"; return 1; fi
  show "$@" >&2; "$@" >/dev/null 2>&1
}
# A failing step ends the script with its first error line.
step() { # description command...
  local what=$1 log; shift
  log=$(mktemp); trap 'rm -f "$log"' RETURN
  if $dry_run; then show "$@"; return 0; fi
  show "$@" >&2
  # stdout (JSON answers, progress) goes to stderr: stdout carries the outputs only.
  if ! "$@" >&2 2>"$log"; then
    die "$what failed: $(first_error "$log")"
  fi
}
# The line of a log that says what went wrong: the first that looks like an error, else the
# last non-empty one (the CLI's upload progress comes first and is not the reason).
first_error() {
  local line
  line=$(tr '\r' '\n' <"$1" | grep -iE 'error|failed|denied|invalid|not found|does not exist' | head -1 || true)
  [ -n "$line" ] || line=$(tr '\r' '\n' <"$1" | grep -v '^[[:space:]]*$' | tail -1 || true)
  echo "${line:-no error message}" | sed 's/^[[:space:]]*//'
}

if $dry_run; then
  aws=aws
else
  if command -v aws >/dev/null; then aws=aws; else aws="$("$repo/deploy/local/tools.sh" venv)/bin/aws"; fi
  if [ -z "$region" ]; then region=$($aws configure get region 2>/dev/null || true); fi
fi
[ -n "$region" ] || $dry_run || usage_error "no AWS region: pass --region or set AWS_REGION"
region=${region:-us-east-1}
awsr() { run "$aws" --region "$region" "$@"; }

# ---------------------------------------------------------------- env: the CLI's settings of a stack

# One word quoted for any POSIX shell (bash, zsh, sh), whatever the value holds.
sh_quote() { local q="'\\''"; printf "'%s'" "${1//\'/$q}"; }
emit() { echo "export $1=$(sh_quote "$2")"; }

if [ "$mode" = env ]; then
  # One read: the stack's status, outputs and parameters, as "kind<TAB>key<TAB>value" rows.
  query="Stacks[0].[[['status', StackStatus]], Outputs[].['output', OutputKey, OutputValue], Parameters[].['parameter', ParameterKey, ParameterValue]][]"
  describe=("$aws" --region "$region" cloudformation describe-stacks --stack-name "$stack" --query "$query" --output text)
  resources=("$aws" --region "$region" cloudformation list-stack-resources --stack-name "$stack"
             --query "StackResourceSummaries[].[LogicalResourceId,PhysicalResourceId]" --output text)
  if $dry_run; then
    show "${describe[@]}"
    echo "# if the stack reports no outputs (an emulator may keep none), its resources name the stream and tables:"
    show "${resources[@]}"
    exit 0
  fi
  log=$(mktemp); trap 'rm -f "$log"' EXIT
  show "${describe[@]}" >&2
  if ! rows=$("${describe[@]}" 2>"$log"); then
    grep -q "does not exist" "$log" &&
      die "stack $stack does not exist in $region (deploy it with deploy/deploy.sh --stack-name $stack, or pass --region)"
    die "cannot read stack $stack: $(first_error "$log")"
  fi
  declare -A output parameter resource
  status=
  while IFS=$'\t' read -r kind key value; do
    case "$kind" in
      status) status=$key ;;
      output) [ -z "$key" ] || output[$key]=$value ;;
      parameter) [ -z "$key" ] || parameter[$key]=$value ;;
    esac
  done <<<"$rows"
  case "$status" in
    REVIEW_IN_PROGRESS|CREATE_IN_PROGRESS|CREATE_FAILED|ROLLBACK_*|DELETE_*)
      die "stack $stack is $status: it has no stream and tables to point at" ;;
  esac
  # Outputs name the stream and tables; a stack that reports none (moto keeps no outputs of a
  # stack deployed through a change set) names them through its resources.
  for key in StreamName TweetsTableName LeaseTableName DeadLetterTableName; do
    if [ -z "${output[$key]:-}" ]; then
      show "${resources[@]}" >&2
      rows=$("${resources[@]}" 2>"$log") || die "cannot list the resources of stack $stack: $(first_error "$log")"
      while IFS=$'\t' read -r key value; do [ -z "$key" ] || resource[$key]=$value; done <<<"$rows"
      break
    fi
  done
  name() { # output key, logical resource id
    local value=${output[$1]:-${resource[$2]:-}}
    [ -n "$value" ] && [ "$value" != None ] || die "stack $stack has no output $1 nor resource $2: is it a stream-worker stack?"
    echo "$value"
  }
  stream=$(name StreamName Stream)
  tweets=$(name TweetsTableName TweetsTable)
  leases=$(name LeaseTableName LeaseTable)
  dead_letters=$(name DeadLetterTableName DeadLetterTable)
  # The fleet's fan-out consumer is named after its lease table (a stack deployed before the
  # StreamConsumerName output has the same name).
  consumer=${output[StreamConsumerName]:-$leases}

  # Exports only, no comment: zsh runs a `#` line as a command unless interactive_comments is set.
  emit AWS_REGION "$region"
  emit STREAM_WORKER_STREAM "$stream"
  emit STREAM_WORKER_TWEETS_TABLE "$tweets"
  emit STREAM_WORKER_LEASE_TABLE "$leases"
  emit STREAM_WORKER_DEAD_LETTER_TABLE "$dead_letters"
  emit STREAM_WORKER_CONSUMER_NAME "$consumer"
  # What `dead-letters replay` writes with, as the stack's consumers do.
  [ -z "${parameter[TtlDays]:-}" ] || emit STREAM_WORKER_TTL_DAYS "${parameter[TtlDays]}"
  [ -z "${parameter[MaxWriteRate]:-}" ] || emit STREAM_WORKER_MAX_WRITE_RATE "${parameter[MaxWriteRate]}"
  exit 0
fi

# ---------------------------------------------------------------- 1. the Lambda zip

if [ -z "$lambda_zip" ]; then
  if $dry_run; then
    show "$repo/deploy/build-lambda.sh"
    lambda_zip=$repo/target/lambda/stream-worker-lambda/bootstrap.zip
  else
    [ -x "$repo/deploy/build-lambda.sh" ] || die "deploy/build-lambda.sh not found; pass --lambda-zip PATH"
    show "$repo/deploy/build-lambda.sh" >&2
    lambda_zip=$("$repo/deploy/build-lambda.sh" | tail -1) || die "deploy/build-lambda.sh failed"
    [ -f "$lambda_zip" ] || die "deploy/build-lambda.sh printed '$lambda_zip', which is not a file"
  fi
fi
if [ -f "$lambda_zip" ]; then
  digest=$(sha256sum "$lambda_zip" | cut -c1-64)
else
  digest="<sha256-of-zip>"
fi
# Named by content: the same zip is the same key, and the stack sees no change.
code_key=lambda/stream-worker-lambda-$digest.zip

# ---------------------------------------------------------------- 2. bucket and upload

if ! probe "$aws" --region "$region" s3api head-bucket --bucket "$bucket"; then
  $dry_run && echo "# if the bucket is absent:"
  if [ "$region" = us-east-1 ]; then
    step "creating bucket $bucket" "$aws" --region "$region" s3api create-bucket --bucket "$bucket"
  else
    step "creating bucket $bucket" "$aws" --region "$region" s3api create-bucket --bucket "$bucket" \
      --create-bucket-configuration "LocationConstraint=$region"
  fi
  step "blocking public access to $bucket" "$aws" --region "$region" s3api put-public-access-block --bucket "$bucket" \
    --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
fi
if ! probe "$aws" --region "$region" s3api head-object --bucket "$bucket" --key "$code_key"; then
  $dry_run && echo "# if the zip is not uploaded yet:"
  step "uploading $lambda_zip" "$aws" --region "$region" s3api put-object --bucket "$bucket" --key "$code_key" --body "$lambda_zip"
fi

# ---------------------------------------------------------------- 3. the worker image

if [ -n "$image" ]; then
  # Pull permissions are granted on the image's repository when it is an ECR one.
  if [[ "$image" =~ ^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com[^/]*/([^:@]+) ]]; then
    ecr_repo=${BASH_REMATCH[1]}
  else
    ecr_repo=
  fi
else
  if ! $dry_run; then
    command -v docker >/dev/null || die "docker not found: install Docker to build the worker image, or pass --image URI of a pushed one"
  fi
  if $dry_run; then
    account="<account-id>"
    show "$aws" --region "$region" sts get-caller-identity --query Account --output text
  else
    account=$("$aws" --region "$region" sts get-caller-identity --query Account --output text) || die "cannot read the AWS account id (credentials?)"
  fi
  registry=$account.dkr.ecr.$region.amazonaws.com
  tag=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo untracked)
  # A work tree with changes gets a tag named after them: the same changes, the same tag.
  if [ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]; then
    tag=$tag-dirty-$( (git -C "$repo" diff HEAD; git -C "$repo" status --porcelain) | sha256sum | cut -c1-10)
  fi
  image=$registry/$ecr_repo:$tag
  if ! probe "$aws" --region "$region" ecr describe-repositories --repository-names "$ecr_repo"; then
    $dry_run && echo "# if the repository is absent:"
    step "creating ECR repository $ecr_repo" "$aws" --region "$region" ecr create-repository --repository-name "$ecr_repo" \
      --image-scanning-configuration scanOnPush=true --encryption-configuration encryptionType=AES256
  fi
  if ! probe "$aws" --region "$region" ecr describe-images --repository-name "$ecr_repo" --image-ids "imageTag=$tag"; then
    $dry_run && echo "# if the image is not pushed yet:"
    if $dry_run; then
      echo "+ $aws --region $region ecr get-login-password | docker login --username AWS --password-stdin $registry"
    else
      show "$aws" --region "$region" ecr get-login-password "|" docker login --username AWS --password-stdin "$registry" >&2
      "$aws" --region "$region" ecr get-login-password | docker login --username AWS --password-stdin "$registry" >/dev/null \
        || die "docker login to $registry failed"
    fi
    step "building the worker image" docker build --platform linux/amd64 --build-arg "STREAM_WORKER_COMMIT=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" -t "$image" "$repo"
    step "pushing $image" docker push "$image"
  fi
fi

# ---------------------------------------------------------------- 4. the stack

overrides=(
  "LambdaCodeBucket=$bucket"
  "LambdaCodeKey=$code_key"
  "WorkerImage=$image"
  "EcrRepositoryName=$ecr_repo"
  ${params[@]+"${params[@]}"}
)
# Up to date already (same template, every parameter given here already has this value):
# nothing to do. CloudFormation would answer the same with an empty change set, after an
# upload and a change set round trip.
up_to_date() {
  $dry_run && return 1
  local status body current kv
  status=$("$aws" --region "$region" cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].StackStatus" --output text 2>/dev/null) || return 1
  case "$status" in CREATE_COMPLETE|UPDATE_COMPLETE) ;; *) return 1 ;; esac
  body=$("$aws" --region "$region" cloudformation get-template --stack-name "$stack" \
    --query TemplateBody --output text 2>/dev/null) || return 1
  [ "$body" = "$(cat "$template")" ] || return 1
  current=$("$aws" --region "$region" cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Parameters[].[ParameterKey,ParameterValue]" --output text 2>/dev/null) || return 1
  for kv in "${overrides[@]}"; do
    grep -qxF "${kv%%=*}"$'\t'"${kv#*=}" <<<"$current" || return 1
  done
}
if up_to_date; then
  echo "$me: stack $stack is up to date (same template and parameters); nothing to deploy" >&2
else
step "deploying stack $stack" "$aws" --region "$region" cloudformation deploy \
  --stack-name "$stack" --template-file "$template" \
  --s3-bucket "$bucket" --s3-prefix templates \
  --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
  --parameter-overrides "${overrides[@]}"
fi

# ---------------------------------------------------------------- 5. outputs

if $dry_run; then
  show "$aws" --region "$region" cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Outputs[].[OutputKey,OutputValue]" --output text
else
  outputs=$("$aws" --region "$region" cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Outputs[].[OutputKey,OutputValue]" --output text) \
    || die "cannot read the outputs of stack $stack"
  if [ -n "$outputs" ] && [ "$outputs" != None ]; then
    echo "$outputs"
  else
    # No outputs reported (an emulator may not keep them): the resources say the names.
    "$aws" --region "$region" cloudformation list-stack-resources --stack-name "$stack" \
      --query "StackResourceSummaries[].[LogicalResourceId,PhysicalResourceId]" --output text \
      || die "cannot list the resources of stack $stack"
  fi
fi
