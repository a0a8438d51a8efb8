"""deploy/deploy.sh and deploy/switch.sh against moto (S3, CloudFormation, Lambda, ECS,
DynamoDB, CloudWatch), with the pinned AWS CLI; deploy/local/tools.sh."""
import datetime
import hashlib
import json
import os
import re
import stat
import time

import botocore.exceptions
import pytest
import yaml

from conftest import REGION, REPO, TEMPLATE, CfnLoader, run, unique

DEPLOY = str(REPO / "deploy" / "deploy.sh")
SWITCH = str(REPO / "deploy" / "switch.sh")
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/stream-worker:test"


def stack_exists(aws, name):
    # By name: listing every stack makes moto render all of them, a broken one included.
    try:
        aws("cloudformation").describe_stacks(StackName=name)
        return True
    except botocore.exceptions.ClientError as e:
        assert "does not exist" in str(e), e
        return False


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


# ---------------------------------------------------------------- deploy.sh

def test_help(aws_env):
    r = run([DEPLOY, "--help"], aws_env)
    assert r.returncode == 0
    for word in ("--bucket", "--lambda-zip", "--image", "--dry-run", "--parameter", "Docker", "ECR",
                 'eval "$(deploy/deploy.sh env', *(var for _, var in NAMES.values()), "STREAM_WORKER_CONSUMER_NAME"):
        assert word in r.stdout, word


def test_dry_run_prints_every_call_and_makes_none(aws, aws_env):
    bucket, stack = unique("dry"), unique("dry")
    r = run([DEPLOY, "--dry-run", "--bucket", bucket, "--stack-name", stack, "--parameter", "ShardCount=4"], aws_env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for call in ("deploy/build-lambda.sh", "s3api head-bucket", "s3api create-bucket", "s3api put-public-access-block",
                 "s3api put-object", "sts get-caller-identity", "ecr describe-repositories", "ecr create-repository",
                 "ecr get-login-password | docker login", "docker build", "docker push", "cloudformation deploy",
                 "cloudformation describe-stacks"):
        assert call in out, f"dry run does not show {call!r}:\n{out}"
    deploy_line = next(l for l in out.splitlines() if "cloudformation deploy" in l)
    for part in (f"--stack-name {stack}", "--capabilities CAPABILITY_IAM", "--no-fail-on-empty-changeset",
                 "ShardCount=4", f"LambdaCodeBucket={bucket}", "WorkerImage=", "EcrRepositoryName=stream-worker"):
        assert part in deploy_line, part
    # Nothing was created.
    assert bucket not in [b["Name"] for b in aws("s3").list_buckets()["Buckets"]]
    assert not stack_exists(aws, stack)


def test_dry_run_with_image_and_zip_skips_builds(aws_env, lambda_zip):
    r = run([DEPLOY, "--dry-run", "--bucket", unique("dry"), "--lambda-zip", str(lambda_zip), "--image", IMAGE], aws_env)
    assert r.returncode == 0, r.stderr
    assert "docker" not in r.stdout and "build-lambda.sh" not in r.stdout
    digest = hashlib.sha256(lambda_zip.read_bytes()).hexdigest()
    assert f"lambda/stream-worker-lambda-{digest}.zip" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--processing-path", "banana"], "ProcessingPath must be one of lambda, worker"),
    (["--parameter", "Nope=1"], "unknown template parameter 'Nope'"),
    (["--parameter", "LogRetentionDays=2"], "LogRetentionDays must be one of"),
    (["--parameter", "ShardCount"], "is not KEY=VALUE"),
    (["--parameter", "WorkerImage=x"], "is set by deploy.sh itself"),
    (["--lambda-zip", "/nonexistent.zip"], "no such file"),
    (["--bucket", "Bad_Bucket"], "not a valid S3 bucket name"),
    ([], "--bucket is required"),
])
def test_bad_parameter_fails_with_one_clear_line(aws, aws_env, args, message):
    stack = unique("bad")
    base = [] if "--bucket" in args or args == [] else ["--bucket", unique("bad")]
    r = run([DEPLOY, "--stack-name", stack, "--image", IMAGE] + base + args, aws_env)
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(lines(r.stderr)) == 1, r.stderr
    assert r.stderr.startswith("deploy.sh: ") and message in r.stderr, r.stderr
    assert not stack_exists(aws, stack)


def test_failed_aws_call_is_one_line(aws_env, lambda_zip, tmp_path):
    """A failure past the checks (here: no AWS endpoint answers) also ends in one line."""
    env = {**aws_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1",
           "AWS_RETRY_MODE": "standard"}
    r = run([DEPLOY, "--bucket", unique("down"), "--stack-name", unique("down"), "--lambda-zip", str(lambda_zip),
             "--image", IMAGE], env, timeout=120)
    assert r.returncode == 1
    errors = [l for l in lines(r.stderr) if l.startswith("deploy.sh:")]
    assert len(errors) == 1 and "failed" in errors[0], r.stderr
    assert not [l for l in lines(r.stderr) if not l.startswith(("+ ", "deploy.sh:"))], r.stderr


@pytest.fixture(scope="module")
def deployed(aws, aws_env, lambda_zip):
    bucket, stack = unique("artifacts"), unique("deployed")
    cmd = [DEPLOY, "--bucket", bucket, "--stack-name", stack, "--lambda-zip", str(lambda_zip), "--image", IMAGE,
           "--parameter", "ShardCount=3", "--parameter", "WorkerReplicas=2"]
    first = run(cmd, aws_env)
    assert first.returncode == 0, first.stderr
    cf = aws("cloudformation")
    before = dict(
        events=len(cf.describe_stack_events(StackName=stack)["StackEvents"]),
        stack=cf.describe_stacks(StackName=stack)["Stacks"][0],
        resources=cf.list_stack_resources(StackName=stack)["StackResourceSummaries"],
        objects=sorted(o["Key"] for o in aws("s3").list_objects_v2(Bucket=bucket).get("Contents", [])),
    )
    second = run(cmd, aws_env)
    return dict(bucket=bucket, stack=stack, first=first, second=second, before=before, cmd=cmd)


def test_real_run_creates_the_stack(aws, deployed, lambda_zip):
    cf = aws("cloudformation")
    stack = cf.describe_stacks(StackName=deployed["stack"])["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    digest = hashlib.sha256(lambda_zip.read_bytes()).hexdigest()
    assert params["LambdaCodeKey"] == f"lambda/stream-worker-lambda-{digest}.zip"
    assert params["LambdaCodeBucket"] == deployed["bucket"] and params["WorkerImage"] == IMAGE
    assert params["EcrRepositoryName"] == "stream-worker" and str(params["ShardCount"]) == "3"
    objects = deployed["before"]["objects"]
    assert params["LambdaCodeKey"] in objects
    assert any(k.startswith("templates/") for k in objects), "the template goes through the bucket (size limit)"
    pab = aws("s3").get_public_access_block(Bucket=deployed["bucket"])["PublicAccessBlockConfiguration"]
    assert all(pab.values())
    resources = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in deployed["before"]["resources"]}
    summary = aws("kinesis").describe_stream_summary(StreamName=resources["Stream"])["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 3
    # The outputs (or, where moto keeps none, the resources) are on stdout.
    assert resources["Stream"] in deployed["first"].stdout


def test_second_run_changes_nothing(aws, deployed):
    second = deployed["second"]
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stderr
    assert "put-object" not in second.stderr and "cloudformation deploy" not in second.stderr
    cf = aws("cloudformation")
    stack = cf.describe_stacks(StackName=deployed["stack"])["Stacks"][0]
    before = deployed["before"]
    assert len(cf.describe_stack_events(StackName=deployed["stack"])["StackEvents"]) == before["events"]
    assert stack.get("LastUpdatedTime") == before["stack"].get("LastUpdatedTime")
    assert stack["Parameters"] == before["stack"]["Parameters"]
    assert cf.list_stack_resources(StackName=deployed["stack"])["StackResourceSummaries"] == before["resources"]
    objects = sorted(o["Key"] for o in aws("s3").list_objects_v2(Bucket=deployed["bucket"]).get("Contents", []))
    assert objects == before["objects"]


# ---------------------------------------------------------------- deploy.sh env

STREAM_WORKER = os.environ.get("STREAM_WORKER_BIN") or str(REPO / "target" / "release" / "stream-worker")
# Output -> the resource it names (moto keeps no outputs of a stack deployed through a change
# set, as deploy.sh deploys) and the variable deploy.sh env sets from it.
NAMES = {
    "StreamName": ("Stream", "STREAM_WORKER_STREAM"),
    "TweetsTableName": ("TweetsTable", "STREAM_WORKER_TWEETS_TABLE"),
    "LeaseTableName": ("LeaseTable", "STREAM_WORKER_LEASE_TABLE"),
    "DeadLetterTableName": ("DeadLetterTable", "STREAM_WORKER_DEAD_LETTER_TABLE"),
}
# As docs/operations.md writes it, then the command.
WITH_STACK_ENV = 'eval "$("$0" env --stack-name "$1")"; shift; exec "$@"'


def stack_settings(aws, stack):
    """What deploy.sh env must print for a stack, read through boto3."""
    cf = aws("cloudformation")
    described = cf.describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    params = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
    resources = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                 for r in cf.list_stack_resources(StackName=stack)["StackResourceSummaries"] if r.get("LogicalResourceId")}
    expected = {var: outputs.get(output, resources[logical]) for output, (logical, var) in NAMES.items()}
    expected.update(
        AWS_REGION=REGION,
        STREAM_WORKER_CONSUMER_NAME=outputs.get("StreamConsumerName", expected["STREAM_WORKER_LEASE_TABLE"]),
        STREAM_WORKER_TTL_DAYS=str(params["TtlDays"]),
        STREAM_WORKER_MAX_WRITE_RATE=str(params["MaxWriteRate"]),
    )
    return expected


def evaluated(env, *args, shell="bash"):
    """The variables a shell has after eval "$(deploy/deploy.sh env ARGS)": STREAM_WORKER_*, AWS_REGION."""
    r = run([shell, "-c", 'eval "$("$0" env "$@")"; env -0', DEPLOY, *args], env)
    assert r.returncode == 0, r.stderr
    pairs = (kv.split("=", 1) for kv in r.stdout.split("\0") if "=" in kv)
    return {k: v for k, v in pairs if k.startswith("STREAM_WORKER_") or k == "AWS_REGION"}


def test_env_prints_the_stacks_names(aws, aws_env, deployed):
    stack = deployed["stack"]
    expected = stack_settings(aws, stack)
    # The stack's names, not the CLI's defaults (tweets, stream-worker-leases, ...).
    assert expected["STREAM_WORKER_TWEETS_TABLE"] == f"{stack}-tweets"
    assert expected["STREAM_WORKER_LEASE_TABLE"] == f"{stack}-leases"
    assert expected["STREAM_WORKER_DEAD_LETTER_TABLE"] == f"{stack}-dead-letters"

    r = run([DEPLOY, "env", "--stack-name", stack], aws_env)
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert all(l.startswith("export ") for l in out), r.stdout
    assert len(out) == len(expected), "one line per variable, nothing else (a comment line breaks zsh's eval)"
    assert f"export STREAM_WORKER_STREAM='{stack}-tweets'" in out, "one shell-quoted export per variable"
    assert "describe-stacks" in r.stderr, "the call is echoed to stderr, as deploy.sh does"
    # Evaluated in a shell set to another region and stream: the stack's settings win.
    # (Without the suite's own STREAM_WORKER_* variables: only what the step prints is compared.)
    inherited = {k: v for k, v in aws_env.items() if not k.startswith("STREAM_WORKER_")}
    other = {**inherited, "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
             "STREAM_WORKER_STREAM": "tweets", "STREAM_WORKER_CONSUMER_NAME": "another-app"}
    assert evaluated(other, "--stack-name", stack, "--region", REGION) == expected
    assert evaluated(other, "--stack-name", stack, "--region", REGION, shell="sh") == expected, "POSIX quoting"


def test_env_points_the_cli_at_the_stack(aws, aws_env, deployed):
    """The operator commands, run as docs/operations.md shows, find the stack's stream and tables
    (moto serves both: the stack's stream is in moto's Kinesis, not in kinesis-local)."""
    if not os.access(STREAM_WORKER, os.X_OK):
        pytest.fail(f"{STREAM_WORKER} not found: build it with cargo build --release --locked --bin stream-worker "
                    "(deploy/local/test.sh does), or set STREAM_WORKER_BIN")
    stack = deployed["stack"]
    names = stack_settings(aws, stack)
    ddb = aws("dynamodb")
    ddb.put_item(TableName=names["STREAM_WORKER_DEAD_LETTER_TABLE"], Item={
        "ShardId": {"S": "shardId-000000000001"}, "SequenceNumber": {"S": "49600000000000000000000000000000000000000000000000000001"},
        "PartitionKey": {"S": "k"}, "Data": {"B": b"not json"}, "DataBytes": {"N": "8"}, "Reason": {"S": "not_json"},
        "Error": {"S": "not JSON: expected value at line 1 column 1"}, "DeadLetteredAt": {"S": "2026-01-31T12:00:00Z"}})
    ddb.put_item(TableName=names["STREAM_WORKER_LEASE_TABLE"], Item={
        "leaseKey": {"S": "shardId-000000000000"}, "leaseOwner": {"S": "worker-of-the-stack"}, "leaseCounter": {"N": "3"},
        "checkpoint": {"S": "TRIM_HORIZON"}, "checkpointSubSequenceNumber": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"}})

    def cli(*args):
        r = run(["bash", "-c", WITH_STACK_ENV, DEPLOY, stack, STREAM_WORKER, *args], aws_env, timeout=60)
        assert r.returncode == 0, f"stream-worker {' '.join(args)}:\n{r.stderr}"
        return r.stdout

    (letter,) = [json.loads(l) for l in lines(cli("dead-letters", "list", "--json"))]
    assert (letter["shard_id"], letter["reason"]) == ("shardId-000000000001", "not_json")

    status = json.loads(cli("status", "--json"))
    assert [w["table"] for w in status["write_limits"]] == [f"{stack}-tweets", f"{stack}-dead-letters"]
    shards = {s["shard_id"]: s for s in status["shards"]}
    assert len(shards) == 3, "the stack's stream (ShardCount=3)"
    assert shards["shardId-000000000000"]["owner"] == "worker-of-the-stack"

    rewind = json.loads(cli("checkpoints", "rewind", "--to", "latest", "--dry-run", "--json"))
    (moved,) = rewind["shards"]
    assert (moved["shard_id"], moved["before"], moved["after"]) == ("shardId-000000000000", "TRIM_HORIZON", "LATEST")

    # Without the step, the same command reads the CLI's default table, which the stack does not have.
    r = run([STREAM_WORKER, "dead-letters", "list"], aws_env, timeout=60)
    assert r.returncode != 0 and "stream-worker-dead-letters" in r.stderr, r.stderr


def test_env_dry_run_makes_no_call(aws_env):
    env = {**aws_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing answers there
    r = run([DEPLOY, "env", "--stack-name", "some-stack", "--dry-run"], env)
    assert r.returncode == 0, r.stderr
    assert "cloudformation describe-stacks --stack-name some-stack" in r.stdout
    assert "export" not in r.stdout


def test_env_of_a_missing_stack_is_one_line(aws, aws_env):
    stack = unique("absent")
    r = run([DEPLOY, "env", "--stack-name", stack], aws_env)
    assert r.returncode == 1 and r.stdout == ""
    errors = [l for l in lines(r.stderr) if not l.startswith("+ ")]
    assert errors == [f"deploy.sh: stack {stack} does not exist in {REGION} "
                      f"(deploy it with deploy/deploy.sh --stack-name {stack}, or pass --region)"], r.stderr


@pytest.mark.parametrize("args,message", [
    (["env", "--bucket", "b"], "--bucket is not an option of 'deploy.sh env'"),
    (["env", "--parameter", "ShardCount=2"], "--parameter is not an option of 'deploy.sh env'"),
    (["--stack-name", "s", "env"], "'env' comes first"),
    (["env", "--stack-name", "1bad"], "not a valid stack name"),
])
def test_env_bad_arguments(aws_env, args, message):
    r = run([DEPLOY] + args, aws_env)
    assert r.returncode == 2 and r.stdout == "" and len(lines(r.stderr)) == 1, r.stderr
    assert message in r.stderr, r.stderr


def test_changed_parameter_is_deployed(aws, aws_env, deployed):
    """Not up to date when a parameter differs: the run goes to CloudFormation."""
    r = run(deployed["cmd"] + ["--parameter", "LogLevel=debug"], aws_env)
    assert "cloudformation deploy" in r.stderr and "up to date" not in r.stderr
    # moto's change-set engine may or may not apply an update; the script must have tried.


# ---------------------------------------------------------------- switch.sh

def stub_status(tmp_path, behind_ms):
    path = tmp_path / "stream-worker"
    rows = [{"shard_id": "shardId-000000000000", "state": "owned", "owner": "w-1", "behind_ms": behind_ms},
            {"shard_id": "shardId-000000000001", "state": "owned", "owner": "w-2", "behind_ms": 10},
            {"shard_id": "shardId-000000000002", "state": "finished", "behind_ms": None}]
    status = {"shards": rows, "live_workers": 2, "write_limits": []}
    path.write_text(f"#!/bin/sh\n[ \"$1\" = status ] || exit 2\necho '{json.dumps(status)}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def switch_stack(aws, lambda_zip):
    """A stack on the lambda path, created with every parameter given: moto re-reads on update
    only the parameters the stack was created with (real CloudFormation keeps them all)."""
    tpl = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    values = {k: str(v.get("Default", "")) for k, v in tpl["Parameters"].items()}
    s3, cf = aws("s3"), aws("cloudformation")
    bucket, name = unique("code"), unique("switch")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code.zip", Body=lambda_zip.read_bytes())
    values.update(LambdaCodeBucket=bucket, LambdaCodeKey="code.zip", WorkerImage=IMAGE, ProcessingPath="lambda")
    cf.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
                    Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()])
    assert cf.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    return name


def stack_params(aws, name):
    stack = aws("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}


def test_switch_dry_run_changes_nothing(aws, aws_env, switch_stack, tmp_path):
    r = run([SWITCH, "worker", "--stack-name", switch_stack, "--dry-run", "--status-cmd", stub_status(tmp_path, 5)],
            aws_env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    first = out.index("ProcessingPath=worker OverlapPath=lambda WorkerInitialPosition=at-timestamp:")
    wait = out.index("# wait")
    last = out.index("OverlapPath=none")
    assert first < wait < last, out
    assert stack_params(aws, switch_stack)["ProcessingPath"] == "lambda"


def test_switch_to_worker_and_back(aws, aws_env, switch_stack, tmp_path):
    ddb, cf = aws("dynamodb"), aws("cloudformation")
    leases = cf.describe_stack_resource(StackName=switch_stack, LogicalResourceId="LeaseTable")[
        "StackResourceDetail"]["PhysicalResourceId"]
    ddb.put_item(TableName=leases, Item={"leaseKey": {"S": "shardId-000000000000"}, "checkpoint": {"S": "123"}})

    started = time.time()
    r = run([SWITCH, "worker", "--stack-name", switch_stack, "--margin", "120", "--poll", "1",
             "--status-cmd", stub_status(tmp_path, 250)], aws_env)
    assert r.returncode == 0, r.stderr
    p = stack_params(aws, switch_stack)
    assert (p["ProcessingPath"], p["OverlapPath"]) == ("worker", "none")
    position = p["WorkerInitialPosition"]
    assert position.startswith("at-timestamp:")
    at = datetime.datetime.strptime(position.split(":", 1)[1], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert started - 120 - 5 <= at <= time.time() - 120 + 1, "the worker starts at the cutover minus the margin"
    assert ddb.scan(TableName=leases)["Count"] == 0, "stale leases are cleared before the fleet starts"
    err = r.stderr
    assert err.index("OverlapPath=lambda") < err.index("worker path caught up") < err.index("OverlapPath=none")

    # Back to Lambda: the mapping starts at the cutover minus the margin, the worker stops once
    # the function's IteratorAge is low.
    fn = cf.describe_stack_resource(StackName=switch_stack, LogicalResourceId="ConsumerFunction")[
        "StackResourceDetail"]["PhysicalResourceId"]
    aws("cloudwatch").put_metric_data(Namespace="AWS/Lambda", MetricData=[{
        "MetricName": "IteratorAge", "Dimensions": [{"Name": "FunctionName", "Value": fn}],
        "Value": 900.0, "Unit": "Milliseconds"}])
    started = time.time()
    r = run([SWITCH, "lambda", "--stack-name", switch_stack, "--poll", "1"], aws_env)
    assert r.returncode == 0, r.stderr
    p = stack_params(aws, switch_stack)
    assert (p["ProcessingPath"], p["OverlapPath"]) == ("lambda", "none")
    assert started - 300 - 5 <= int(p["StartingPositionTimestamp"]) <= time.time() - 300 + 1
    assert "IteratorAge 900ms" in r.stderr


def test_switch_waits_and_keeps_both_on_until_caught_up(aws, aws_env, switch_stack, tmp_path):
    r = run([SWITCH, "worker", "--stack-name", switch_stack, "--poll", "1", "--timeout", "2", "--lag-ms", "1000",
             "--status-cmd", stub_status(tmp_path, 5000)], aws_env)
    assert r.returncode == 1
    assert "has not caught up" in lines(r.stderr)[-1] and "both paths stay on" in r.stderr
    p = stack_params(aws, switch_stack)
    assert (p["ProcessingPath"], p["OverlapPath"]) == ("worker", "lambda"), "the old path must not stop"
    # Going back: the path that never stopped stays, the new one stops.
    r = run([SWITCH, "lambda", "--stack-name", switch_stack], aws_env)
    assert r.returncode == 0, r.stderr
    p = stack_params(aws, switch_stack)
    assert (p["ProcessingPath"], p["OverlapPath"]) == ("lambda", "none")


def test_switch_to_the_running_path_is_a_no_op(aws, aws_env, switch_stack):
    r = run([SWITCH, "lambda", "--stack-name", switch_stack], aws_env)
    assert r.returncode == 0 and "already runs the lambda path" in r.stderr


def test_switch_bad_arguments(aws_env):
    for args, message in [([], "which path?"), (["both"], "unknown argument 'both'"),
                          (["worker", "--margin", "soon"], "--margin must be a whole number")]:
        r = run([SWITCH] + args, aws_env)
        assert r.returncode == 2 and len(lines(r.stderr)) == 1 and message in r.stderr, (args, r.stderr)


# ---------------------------------------------------------------- tools.sh

def test_tools_sh_venv_prints_only_the_path(aws_env):
    r = run([str(REPO / "deploy" / "local" / "tools.sh"), "venv"], aws_env)
    assert r.returncode == 0, r.stderr
    (path,) = r.stdout.splitlines()
    for tool in ("cfn-lint", "checkov", "hadolint", "kubernetes-validate", "aws", "pytest"):
        assert os.access(os.path.join(path, "bin", tool), os.X_OK), tool
    versions = run([str(REPO / "deploy" / "local" / "tools.sh"), "versions"], aws_env).stdout
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9.]*", l) for l in versions.splitlines()), versions
