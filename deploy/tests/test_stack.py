"""The template on moto's CloudFormation: it reaches CREATE_COMPLETE, and what it created is
checked through the service APIs. What moto skips is checked from the parsed template in
test_template.py; COVERAGE below names, for every property that matters, which way it is
checked, and test_coverage_ledger_is_complete keeps that list honest.
"""
import ast
import base64
import hashlib
import time

import pytest

from conftest import REGION, TEMPLATE, conditions, defaults, jdump, unique
from test_template import NO_RESOURCE_LEVEL

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/stream-worker:test"

# What is checked, and how: "api" = through moto's service APIs on a deployed stack (this
# file); "template" = from the parsed template because moto skips the resource type or ignores
# the property (test_template.py). The value names the test function that checks it.
COVERAGE = {
    "stream: created, shard count, retention": ("api", "test_stream"),
    "stream: KMS encryption (moto ignores StreamEncryption)": ("template", "test_stream_encryption"),
    "stream: on-demand mode drops ShardCount": ("template", "test_stream_on_demand"),
    "tweets table: key Id, GSI ByUser (Username + Timestamp), on-demand": ("api", "test_tables"),
    "lease table: key leaseKey": ("api", "test_tables"),
    "dead-letter table: key ShardId + SequenceNumber": ("api", "test_tables"),
    "tables: TTL on ExpirationTime (moto ignores TimeToLiveSpecification)": ("template", "test_table_ttl_pitr_sse"),
    "tables: point-in-time recovery (moto ignores it)": ("template", "test_table_ttl_pitr_sse"),
    "tables: encryption at rest (moto ignores SSESpecification)": ("template", "test_table_ttl_pitr_sse"),
    "tweets table: provisioned option with capacity on table and GSI": ("template", "test_tweets_provisioned_option"),
    "function: provided.al2023, x86_64, code from the uploaded zip, env": ("api", "test_function"),
    "log groups: retention": ("api", "test_log_groups"),
    "mapping: batch size/window, bisect, retries, record age, response types, on-failure queue, enabled":
        ("api", "test_mapping"),
    "mapping: AT_TIMESTAMP when StartingPositionTimestamp is set": ("template", "test_mapping_at_timestamp"),
    "starting positions in either spelling: Kinesis' to the mapping, the CLI's to the worker":
        ("api", "test_starting_positions_in_either_spelling"),
    "ProcessingPath=lambda: mapping enabled, worker desired count 0": ("api", "test_lambda_path_enables_only_lambda"),
    "ProcessingPath=worker: no mapping, worker desired count = WorkerReplicas": ("api", "test_worker_path_enables_only_worker"),
    "ProcessingPath/OverlapPath: alarms and auto scaling follow the path (moto skips both)":
        ("template", "test_path_conditions_for_skipped_resources"),
    "worker service: Fargate, awsvpc, private subnets, no public IP (moto drops the network configuration)":
        ("template", "test_worker_task_and_service"),
    "worker task: health check, stop timeout above shutdown timeout, read-only root, non-root": ("api", "test_task_definitions"),
    "worker task: STREAM_WORKER_* environment matches the stack's names": ("api", "test_task_definitions"),
    "producer: service with desired count 0": ("api", "test_producer_service"),
    "producer: X bearer token from Secrets Manager (moto skips the secret and drops ValueFrom)":
        ("template", "test_producer_secret"),
    "auto scaling on CPU and on lag (moto skips Application Auto Scaling)": ("template", "test_autoscaling"),
    "alarms: iterator age, worker lag, dead letters, on-failure queue; SNS topic (moto skips alarms)":
        ("template", "test_alarms"),
    "SNS alarm topic": ("api", "test_alarm_topic_and_queue"),
    "on-failure SQS queue: created, encrypted": ("api", "test_alarm_topic_and_queue"),
    "security groups: worker only 9464 from the VPC in, producer nothing in": ("api", "test_security_group"),
    "security group: only 443 out (moto ignores SecurityGroupEgress)": ("template", "test_security_group_egress"),
    "network: VPC and subnets created when VpcId is empty": ("api", "test_network_created"),
    "network: given VpcId/SubnetIds used instead": ("template", "test_given_network"),
    "IAM: one role per component, no '*' action, resources scoped": ("template", "test_iam_statements_are_scoped"),
    "IAM: the roles moto created carry those policies": ("api", "test_iam_roles_created"),
    "outputs: every name a user needs": ("template", "test_outputs"),
}

# Resource types moto's CloudFormation skips; a skipped type not listed here fails
# test_skipped_types_are_checked_from_the_template, so a gap cannot hide.
SKIPPED_TYPES_CHECKED_FROM_TEMPLATE = {
    "AWS::CloudWatch::Alarm": "test_alarms",
    "AWS::SecretsManager::Secret": "test_producer_secret",
    "AWS::ApplicationAutoScaling::ScalableTarget": "test_autoscaling",
    "AWS::ApplicationAutoScaling::ScalingPolicy": "test_autoscaling",
}


def create_stack(aws, tpl, lambda_zip, **params):
    """Uploads the zip to moto's S3 and creates a stack from the template; CREATE_COMPLETE or fail."""
    s3, cf = aws("s3"), aws("cloudformation")
    bucket = unique("code")
    s3.create_bucket(Bucket=bucket)
    data = lambda_zip.read_bytes()
    key = f"lambda/stream-worker-lambda-{hashlib.sha256(data).hexdigest()}.zip"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    name = unique("stack")
    values = dict(LambdaCodeBucket=bucket, LambdaCodeKey=key, WorkerImage=IMAGE)
    values.update(params)
    cf.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
                    Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in values.items()])
    deadline = time.time() + 60
    while True:
        stack = cf.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS") or time.time() > deadline:
            break
        time.sleep(0.5)
    events = cf.describe_stack_events(StackName=name)["StackEvents"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", f"{stack['StackStatus']}: {jdump(events[:5])}"
    resources = {r["LogicalResourceId"]: r for r in cf.list_stack_resources(StackName=name)["StackResourceSummaries"]}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return dict(name=name, bucket=bucket, key=key, zip=data, params=values, resources=resources, outputs=outputs)


@pytest.fixture(scope="module")
def lambda_stack(aws, template, lambda_zip):
    return create_stack(aws, template, lambda_zip, ProcessingPath="lambda", BatchSize=250,
                        BatchingWindowSeconds=2, MaximumRetryAttempts=50, MaximumRecordAgeSeconds=3600)


@pytest.fixture(scope="module")
def worker_stack(aws, template, lambda_zip):
    return create_stack(aws, template, lambda_zip, ProcessingPath="worker", WorkerReplicas=3, ShardCount=4)


def phys(stack, logical):
    return stack["resources"][logical]["PhysicalResourceId"]


# ---------------------------------------------------------------- through the APIs

def test_stack_reaches_create_complete(lambda_stack, worker_stack):
    assert lambda_stack["outputs"]["StreamName"] == phys(lambda_stack, "Stream")
    assert worker_stack["outputs"]["ProcessingPath"] == "worker"


def test_skipped_types_are_checked_from_the_template(lambda_stack, template):
    """Every resource moto left without a physical id is a type this suite checks from the template."""
    created = {k for k, r in lambda_stack["resources"].items() if r.get("PhysicalResourceId")}
    active = conditions(template, lambda_stack["params"])
    for name, res in template["Resources"].items():
        if "Condition" in res and not active[res["Condition"]]:
            continue
        if name not in created:
            assert res["Type"] in SKIPPED_TYPES_CHECKED_FROM_TEMPLATE, \
                f"moto skipped {name} ({res['Type']}); check it in test_template.py and list its type here"


def test_stream(aws, lambda_stack, worker_stack):
    kinesis = aws("kinesis")
    s = kinesis.describe_stream_summary(StreamName=phys(lambda_stack, "Stream"))["StreamDescriptionSummary"]
    assert s["StreamStatus"] == "ACTIVE"
    assert s["OpenShardCount"] == 2 and s["RetentionPeriodHours"] == 24
    assert s["StreamModeDetails"]["StreamMode"] == "PROVISIONED"
    w = kinesis.describe_stream_summary(StreamName=phys(worker_stack, "Stream"))["StreamDescriptionSummary"]
    assert w["OpenShardCount"] == 4


def test_tables(aws, lambda_stack):
    ddb = aws("dynamodb")
    tweets = ddb.describe_table(TableName=phys(lambda_stack, "TweetsTable"))["Table"]
    assert tweets["KeySchema"] == [{"AttributeName": "Id", "KeyType": "HASH"}]
    assert tweets["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    (gsi,) = tweets["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "ByUser"
    assert gsi["KeySchema"] == [{"AttributeName": "Username", "KeyType": "HASH"},
                                {"AttributeName": "Timestamp", "KeyType": "RANGE"}]
    assert gsi["Projection"]["ProjectionType"] == "ALL"
    types = {a["AttributeName"]: a["AttributeType"] for a in tweets["AttributeDefinitions"]}
    assert types == {"Id": "S", "Username": "S", "Timestamp": "S"}

    leases = ddb.describe_table(TableName=phys(lambda_stack, "LeaseTable"))["Table"]
    assert leases["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert {a["AttributeName"]: a["AttributeType"] for a in leases["AttributeDefinitions"]} == {"leaseKey": "S"}

    workers = ddb.describe_table(TableName=phys(lambda_stack, "WorkersTable"))["Table"]
    assert workers["TableName"] == phys(lambda_stack, "LeaseTable") + "-workers"
    assert workers["KeySchema"] == [{"AttributeName": "fleet", "KeyType": "HASH"},
                                    {"AttributeName": "worker", "KeyType": "RANGE"}]

    dead = ddb.describe_table(TableName=phys(lambda_stack, "DeadLetterTable"))["Table"]
    assert dead["KeySchema"] == [{"AttributeName": "ShardId", "KeyType": "HASH"},
                                 {"AttributeName": "SequenceNumber", "KeyType": "RANGE"}]
    assert {a["AttributeName"]: a["AttributeType"] for a in dead["AttributeDefinitions"]} == \
        {"ShardId": "S", "SequenceNumber": "S"}


def test_function(aws, lambda_stack):
    cfg = aws("lambda").get_function(FunctionName=phys(lambda_stack, "ConsumerFunction"))["Configuration"]
    assert cfg["Runtime"] == "provided.al2023" and cfg["Architectures"] == ["x86_64"]
    assert cfg["Handler"] == "bootstrap"
    assert cfg["MemorySize"] == 256 and cfg["Timeout"] == 60
    # The code is the zip uploaded to S3 (moto hashes what it read from its S3).
    assert cfg["CodeSha256"] == base64.b64encode(hashlib.sha256(lambda_stack["zip"]).digest()).decode()
    env = {k: str(v) for k, v in cfg["Environment"]["Variables"].items()}
    assert env == {
        "STREAM_WORKER_TWEETS_TABLE": phys(lambda_stack, "TweetsTable"),
        "STREAM_WORKER_DEAD_LETTER_TABLE": phys(lambda_stack, "DeadLetterTable"),
        "STREAM_WORKER_TTL_DAYS": "7",
        "STREAM_WORKER_MAX_WRITE_RATE": "0",
        "RUST_LOG": "info",
    }
    assert cfg["Role"].split("/")[-1] == phys(lambda_stack, "ConsumerRole")


def test_log_groups(aws, lambda_stack):
    logs = aws("logs")
    for logical, name in [("ConsumerLogGroup", f"/aws/lambda/{lambda_stack['name']}-consumer"),
                          ("WorkerLogGroup", f"/ecs/{lambda_stack['name']}/worker"),
                          ("ProducerLogGroup", f"/ecs/{lambda_stack['name']}/producer")]:
        groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        assert [g["logGroupName"] for g in groups] == [name] == [phys(lambda_stack, logical)]
        assert groups[0]["retentionInDays"] == 30


def mappings_of(aws, stack):
    fn = f"arn:aws:lambda:{REGION}:123456789012:function:{phys(stack, 'ConsumerFunction')}"
    return [m for m in aws("lambda").list_event_source_mappings()["EventSourceMappings"] if m["FunctionArn"] == fn]


def test_mapping(aws, lambda_stack):
    (m,) = mappings_of(aws, lambda_stack)
    assert m["UUID"] == phys(lambda_stack, "ConsumerMapping")
    assert m["EventSourceArn"].endswith(f":stream/{phys(lambda_stack, 'Stream')}")
    assert m["State"] == "Enabled"
    assert m["StartingPosition"] == "TRIM_HORIZON"
    assert m["BatchSize"] == 250
    assert m["MaximumBatchingWindowInSeconds"] == 2
    assert m["ParallelizationFactor"] == 1
    assert m["BisectBatchOnFunctionError"] is True
    assert m["MaximumRetryAttempts"] == 50
    assert m["MaximumRecordAgeInSeconds"] == 3600
    assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_arn = aws("sqs").get_queue_attributes(QueueUrl=phys(lambda_stack, "OnFailureQueue"),
                                                AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert m["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn


def test_starting_positions_in_either_spelling(aws, template, lambda_zip):
    """The parameters take the CLI's spelling and Kinesis' (the stacks above use today's
    defaults, TRIM_HORIZON and trim-horizon); each consumer gets the one it reads."""
    stack = create_stack(aws, template, lambda_zip, ProcessingPath="lambda", LambdaStartingPosition="latest",
                         WorkerInitialPosition="AT_TIMESTAMP:2026-01-31T12:00:00Z")
    (m,) = mappings_of(aws, stack)
    assert m["StartingPosition"] == "LATEST"
    td = aws("ecs").describe_task_definition(taskDefinition=phys(stack, "WorkerTaskDefinition"))["taskDefinition"]
    env = {e["name"]: e["value"] for e in td["containerDefinitions"][0]["environment"]}
    assert env["STREAM_WORKER_INITIAL_POSITION"] == "at-timestamp:2026-01-31T12:00:00Z"


def services(aws, stack):
    out = aws("ecs").describe_services(cluster=phys(stack, "Cluster"), services=["worker", "producer"])["services"]
    return {s["serviceName"]: s for s in out}


def test_lambda_path_enables_only_lambda(aws, lambda_stack):
    """ProcessingPath=lambda: the mapping exists and is enabled; the worker service runs no task."""
    (m,) = mappings_of(aws, lambda_stack)
    assert m["State"] == "Enabled"
    assert services(aws, lambda_stack)["worker"]["desiredCount"] == 0


def test_worker_path_enables_only_worker(aws, worker_stack):
    """ProcessingPath=worker: no mapping at all (see the template's guide); the fleet runs WorkerReplicas."""
    assert mappings_of(aws, worker_stack) == []
    assert "ConsumerMapping" not in worker_stack["resources"]
    assert services(aws, worker_stack)["worker"]["desiredCount"] == 3
    # The function itself stays (it costs nothing idle), invoked by nothing.
    aws("lambda").get_function(FunctionName=phys(worker_stack, "ConsumerFunction"))


def test_producer_service(aws, lambda_stack):
    assert services(aws, lambda_stack)["producer"]["desiredCount"] == 0


def test_task_definitions(aws, lambda_stack, template):
    ecs = aws("ecs")
    worker = ecs.describe_task_definition(taskDefinition=phys(lambda_stack, "WorkerTaskDefinition"))["taskDefinition"]
    (c,) = worker["containerDefinitions"]
    assert c["image"] == IMAGE and c["command"] == ["run"]
    assert c["healthCheck"]["command"] == ["CMD", "/usr/local/bin/stream-worker", "healthcheck"]
    max_shutdown = int(template["Parameters"]["WorkerShutdownTimeoutSeconds"]["MaxValue"])
    assert c["stopTimeout"] > max_shutdown, "the stop timeout must stay above any allowed shutdown timeout"
    assert c["readonlyRootFilesystem"] is True and c["user"] == "65532:65532"
    assert c["portMappings"][0]["containerPort"] == 9464
    env = {e["name"]: e["value"] for e in c["environment"]}
    assert env["STREAM_WORKER_STREAM"] == phys(lambda_stack, "Stream")
    assert env["STREAM_WORKER_TWEETS_TABLE"] == phys(lambda_stack, "TweetsTable")
    assert env["STREAM_WORKER_LEASE_TABLE"] == phys(lambda_stack, "LeaseTable")
    assert env["STREAM_WORKER_DEAD_LETTER_TABLE"] == phys(lambda_stack, "DeadLetterTable")
    assert env["STREAM_WORKER_INITIAL_POSITION"] == "trim-horizon"
    assert env["STREAM_WORKER_SHUTDOWN_TIMEOUT"] == "5s"
    assert env["STREAM_WORKER_METRICS_ADDR"] == "0.0.0.0:9464"
    assert env["STREAM_WORKER_LOG_FORMAT"] == "json"
    assert c["logConfiguration"]["options"]["awslogs-group"] == phys(lambda_stack, "WorkerLogGroup")

    producer = ecs.describe_task_definition(taskDefinition=phys(lambda_stack, "ProducerTaskDefinition"))["taskDefinition"]
    (p,) = producer["containerDefinitions"]
    assert p["command"] == ["produce", "--source", "x-api"]
    assert [s["name"] for s in p["secrets"]] == ["X_BEARER_TOKEN"]
    assert "X_BEARER_TOKEN" not in {e["name"] for e in p["environment"]}
    penv = {e["name"]: e.get("value", "") for e in p["environment"]}
    assert penv["STREAM_WORKER_RULE"] == "", "no rule unless ProducerRule is given"
    assert penv["STREAM_WORKER_PRODUCER_METRICS_ADDR"] == "0.0.0.0:9464"


def test_alarm_topic_and_queue(aws, lambda_stack):
    topics = [t["TopicArn"] for t in aws("sns").list_topics()["Topics"]]
    assert phys(lambda_stack, "AlarmTopic") in topics
    attrs = aws("sqs").get_queue_attributes(QueueUrl=phys(lambda_stack, "OnFailureQueue"),
                                            AttributeNames=["All"])["Attributes"]
    assert attrs["SqsManagedSseEnabled"] == "true"
    assert attrs["MessageRetentionPeriod"] == "1209600"


def test_security_group(aws, lambda_stack):
    (sg,) = aws("ec2").describe_security_groups(GroupIds=[phys(lambda_stack, "WorkerSecurityGroup")])["SecurityGroups"]
    ingress = [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
               for p in sg["IpPermissions"]]
    assert ingress == [("tcp", 9464, 9464, ["10.20.0.0/16"])]
    (producer,) = aws("ec2").describe_security_groups(
        GroupIds=[phys(lambda_stack, "ProducerSecurityGroup")])["SecurityGroups"]
    assert producer["IpPermissions"] == [], "nothing reaches the producer"
    # moto keeps the default allow-all egress rule: the egress rule is checked from the
    # template (test_template.test_security_group_egress).


def test_network_created(aws, lambda_stack):
    ec2 = aws("ec2")
    vpc = phys(lambda_stack, "Vpc")
    assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"] == "10.20.0.0/16"
    subnets = ec2.describe_subnets(SubnetIds=[phys(lambda_stack, n) for n in
                                              ("PrivateSubnetA", "PrivateSubnetB", "PublicSubnet")])["Subnets"]
    assert {s["CidrBlock"] for s in subnets} == {"10.20.0.0/20", "10.20.16.0/20", "10.20.240.0/24"}
    assert all(not s["MapPublicIpOnLaunch"] for s in subnets)
    assert len({s["AvailabilityZone"] for s in subnets if s["CidrBlock"].endswith("/20")}) == 2
    gw = ec2.describe_nat_gateways(NatGatewayIds=[phys(lambda_stack, "NatGateway")])["NatGateways"][0]
    assert gw["SubnetId"] == phys(lambda_stack, "PublicSubnet")


def test_iam_roles_created(aws, lambda_stack):
    iam = aws("iam")
    for logical in ("ConsumerRole", "WorkerTaskRole", "WorkerExecutionRole", "ProducerTaskRole", "ProducerExecutionRole"):
        role = phys(lambda_stack, logical)
        names = iam.list_role_policies(RoleName=role)["PolicyNames"]
        assert len(names) == 1, f"{logical}: one inline policy expected, got {names}"
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
        if isinstance(doc, str):  # moto hands back the Python repr of the document
            doc = ast.literal_eval(doc)
        for st in filter(None, doc["Statement"]):  # moto keeps an Fn::If's AWS::NoValue as null
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert not [a for a in actions if "*" in a], f"{logical}: {st}"
            resources = st.get("Resource") or []
            for r in resources if isinstance(resources, list) else [resources]:
                if r == "*":
                    assert set(actions) <= NO_RESOURCE_LEVEL, f"{logical}: {st}"
                    continue
                named = r[:-2] if ":log-group:" in r and r.endswith(":*") else r
                assert "*" not in named, f"{logical}: {st}"
                assert lambda_stack["name"] in r or r.endswith(":repository/stream-worker"), f"{logical}: {r}"


# ---------------------------------------------------------------- the ledger

def test_coverage_ledger_is_complete():
    """Every entry names a test that exists, in the file its way says."""
    import test_template
    for what, (way, test) in COVERAGE.items():
        module = globals() if way == "api" else vars(test_template)
        assert way in ("api", "template"), what
        assert callable(module.get(test)), f"{what}: {test} is not a test in the {way} checks"
    for typ, test in SKIPPED_TYPES_CHECKED_FROM_TEMPLATE.items():
        assert callable(vars(test_template).get(test)), f"{typ}: {test} missing from test_template.py"
    print("\n".join(f"{way:8} {what}" for what, (way, _) in sorted(COVERAGE.items(), key=lambda x: x[1])))


def test_default_parameters_deploy_without_extra_values(template):
    """Every parameter but the three deploy.sh fills has a default that works."""
    required = {k for k, v in template["Parameters"].items() if "Default" not in v}
    assert required == {"LambdaCodeBucket", "LambdaCodeKey", "WorkerImage"}
    for name, p in template["Parameters"].items():
        assert len(p.get("Description", "").split()) >= 3, f"{name} needs a description"
        if "AllowedValues" in p and "Default" in p:
            assert str(p["Default"]) in [str(v) for v in p["AllowedValues"]], name
    assert defaults(template)["ProcessingPath"] == "lambda"
