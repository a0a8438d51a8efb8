"""Checks from the parsed template: what moto skips (alarms, secrets, auto scaling) or ignores
(TTL, point-in-time recovery, encryption, ECS networking), the path conditions for those, and
the IAM policy rules. test_stack.COVERAGE lists which property is checked here and which
through the APIs.
"""
import re

import pytest

from conftest import conditions, load_template

TPL = load_template()
RES = TPL["Resources"]


def props(name):
    return RES[name]["Properties"]


def branches(value):
    """All concrete alternatives of a value with Fn::If in it (AWS::NoValue dropped)."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, a, b = value["Fn::If"]
        return [x for v in (a, b) for x in branches(v)]
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


# ---------------------------------------------------------------- stream and tables

def test_stream_encryption():
    enc = props("Stream")["StreamEncryption"]
    assert enc["EncryptionType"] == "KMS"
    assert branches(enc["KeyId"]) == [{"Ref": "StreamKmsKeyArn"}, "alias/aws/kinesis"]
    assert TPL["Parameters"]["StreamKmsKeyArn"]["Default"] == ""  # the AWS-managed key by default
    assert conditions(TPL, {})["StreamCmk"] is False


def test_stream_on_demand():
    p = props("Stream")
    assert p["ShardCount"] == {"Fn::If": ["OnDemandStream", {"Ref": "AWS::NoValue"}, {"Ref": "ShardCount"}]}
    assert p["StreamModeDetails"]["StreamMode"] == {"Ref": "StreamMode"}
    assert TPL["Parameters"]["StreamMode"]["AllowedValues"] == ["PROVISIONED", "ON_DEMAND"]
    assert conditions(TPL, {"StreamMode": "ON_DEMAND"})["OnDemandStream"] is True


def test_table_ttl_pitr_sse():
    assert props("TweetsTable")["TimeToLiveSpecification"] == {"AttributeName": "ExpirationTime", "Enabled": True}
    assert props("WorkersTable")["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    for table in ("TweetsTable", "LeaseTable", "WorkersTable", "DeadLetterTable"):
        p = props(table)
        assert p["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, table
        assert p["SSESpecification"] == {"SSEEnabled": True}, table
        # Deleting the stack deletes everything (the issue's contract).
        assert RES[table]["DeletionPolicy"] == "Delete", table
    assert props("LeaseTable")["BillingMode"] == "PAY_PER_REQUEST"
    assert props("DeadLetterTable")["BillingMode"] == "PAY_PER_REQUEST"


def test_tweets_provisioned_option():
    p = props("TweetsTable")
    assert p["BillingMode"] == {"Ref": "TweetsBillingMode"}
    assert TPL["Parameters"]["TweetsBillingMode"]["Default"] == "PAY_PER_REQUEST"
    capacity = {"ReadCapacityUnits": {"Ref": "TweetsReadCapacity"}, "WriteCapacityUnits": {"Ref": "TweetsWriteCapacity"}}
    expected = {"Fn::If": ["ProvisionedTweets", capacity, {"Ref": "AWS::NoValue"}]}
    assert p["ProvisionedThroughput"] == expected
    assert p["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"] == expected


# ---------------------------------------------------------------- Lambda path

def test_mapping_at_timestamp():
    p = props("ConsumerMapping")
    assert p["StartingPosition"] == {
        "Fn::If": ["LambdaAtTimestamp", "AT_TIMESTAMP", {"Fn::If": ["LambdaLatest", "LATEST", "TRIM_HORIZON"]}]}
    assert p["StartingPositionTimestamp"] == {
        "Fn::If": ["LambdaAtTimestamp", {"Ref": "StartingPositionTimestamp"}, {"Ref": "AWS::NoValue"}]}
    assert conditions(TPL, {})["LambdaAtTimestamp"] is False
    assert conditions(TPL, {"StartingPositionTimestamp": "1767225600"})["LambdaAtTimestamp"] is True


# ---------------------------------------------------------------- starting positions

def resolve(value, params):
    """A property's value for these parameter values: Ref, Fn::If, Fn::Join, Fn::Split and
    Fn::Sub of parameters, as CloudFormation resolves them."""
    values = {k: str(v.get("Default", "")) for k, v in TPL["Parameters"].items()}
    values.update(params)
    conds = conditions(TPL, params)

    def ev(v):
        if isinstance(v, dict):
            (fn, arg), = v.items()
            if fn == "Ref":
                return values[arg]
            if fn == "Fn::If":
                return ev(arg[1] if conds[arg[0]] else arg[2])
            if fn == "Fn::Join":
                return arg[0].join(ev(arg[1]))
            if fn == "Fn::Split":
                return ev(arg[1]).split(arg[0])
            if fn == "Fn::Sub" and isinstance(arg, str):
                return re.sub(r"\$\{([A-Za-z0-9]+)\}", lambda m: values[m.group(1)], arg)
            raise AssertionError(f"{fn} not handled by this evaluator")
        if isinstance(v, list):
            return [ev(x) for x in v]
        return v

    return ev(value)


def worker_env(name):
    (c,) = props("WorkerTaskDefinition")["ContainerDefinitions"]
    (value,) = [e["Value"] for e in c["Environment"] if e["Name"] == name]
    return value


# Today's values and the other spelling of each: the CLI's (trim-horizon) and Kinesis' (TRIM_HORIZON).
LAMBDA_POSITIONS = {"TRIM_HORIZON": "TRIM_HORIZON", "LATEST": "LATEST", "trim-horizon": "TRIM_HORIZON", "latest": "LATEST"}
WORKER_POSITIONS = {
    "trim-horizon": "trim-horizon",
    "latest": "latest",
    "at-timestamp:2026-01-31T12:00:00Z": "at-timestamp:2026-01-31T12:00:00Z",
    "at-timestamp:2026-01-31T12:00:00.250+01:00": "at-timestamp:2026-01-31T12:00:00.250+01:00",
    "TRIM_HORIZON": "trim-horizon",
    "LATEST": "latest",
    "AT_TIMESTAMP:2026-01-31T12:00:00Z": "at-timestamp:2026-01-31T12:00:00Z",
}


@pytest.mark.parametrize("given,mapping", LAMBDA_POSITIONS.items())
def test_lambda_starting_position_in_either_spelling(given, mapping):
    """The mapping takes Kinesis' spelling only; the parameter takes the CLI's too."""
    p = TPL["Parameters"]["LambdaStartingPosition"]
    assert given in p["AllowedValues"]
    position = props("ConsumerMapping")["StartingPosition"]
    assert resolve(position, {"LambdaStartingPosition": given}) == mapping
    assert resolve(position, {"LambdaStartingPosition": given, "StartingPositionTimestamp": "1767225600"}) == "AT_TIMESTAMP"


@pytest.mark.parametrize("given,env", WORKER_POSITIONS.items())
def test_worker_initial_position_in_either_spelling(given, env):
    """The worker gets the CLI's spelling (what STREAM_WORKER_INITIAL_POSITION has always held),
    whichever spelling the parameter was given in."""
    assert re.fullmatch(TPL["Parameters"]["WorkerInitialPosition"]["AllowedPattern"], given)
    assert resolve(worker_env("STREAM_WORKER_INITIAL_POSITION"), {"WorkerInitialPosition": given}) == env


@pytest.mark.parametrize("bad", ["", "Latest", "trim_horizon", "AT_TIMESTAMP", "at-timestamp:yesterday",
                                 "AT_TIMESTAMP:2026-01-31", "latest ", "LATEST:2026-01-31T12:00:00Z"])
def test_worker_initial_position_rejects(bad):
    assert not re.fullmatch(TPL["Parameters"]["WorkerInitialPosition"]["AllowedPattern"], bad)


def test_durations_passed_to_the_worker_carry_their_unit():
    """A parameter that is a duration says its unit in its name (as the mapping's own settings
    do), and the worker gets it in the CLI's spelling (5s), never a bare number."""
    assert resolve(worker_env("STREAM_WORKER_SHUTDOWN_TIMEOUT"), {"WorkerShutdownTimeoutSeconds": "25"}) == "25s"
    assert worker_env("STREAM_WORKER_SHUTDOWN_TIMEOUT") == {"Fn::Sub": "${WorkerShutdownTimeoutSeconds}s"}


# ---------------------------------------------------------------- the paths

PATHS = [
    # ProcessingPath, OverlapPath, lambda on, worker on
    ("lambda", "none", True, False),
    ("worker", "none", False, True),
    ("worker", "lambda", True, True),   # switching lambda -> worker
    ("lambda", "worker", True, True),   # switching worker -> lambda
]


@pytest.mark.parametrize("path,overlap,lambda_on,worker_on", PATHS)
def test_path_conditions_for_skipped_resources(path, overlap, lambda_on, worker_on):
    """The resolved conditions: outside a switch exactly one consumer is on, and the resources
    moto skips (alarms, auto scaling) follow it. The mapping and the service's desired count,
    which moto does create, are checked through the APIs in test_stack.py."""
    c = conditions(TPL, {"ProcessingPath": path, "OverlapPath": overlap})
    assert (c["LambdaOn"], c["WorkerOn"]) == (lambda_on, worker_on)
    if overlap == "none":
        assert c["LambdaOn"] != c["WorkerOn"], "exactly one consumer outside a switch"
    on = {"LambdaOn": lambda_on, "WorkerOn": worker_on}
    assert RES["ConsumerMapping"]["Condition"] == "LambdaOn"
    assert RES["ConsumerLagAlarm"]["Condition"] == "LambdaOn"
    for name in ("WorkerLagAlarm", "WorkerScalableTarget", "WorkerCpuScaling", "WorkerLagScaling"):
        assert RES[name]["Condition"] == "WorkerOn", name
    assert props("WorkerService")["DesiredCount"] == {"Fn::If": ["WorkerOn", {"Ref": "WorkerReplicas"}, 0]}
    active = {n for n, r in RES.items() if on.get(r.get("Condition"), True)}
    assert ("ConsumerMapping" in active) == lambda_on
    assert ("WorkerScalableTarget" in active) == worker_on


def test_overlap_is_only_the_other_path():
    assert TPL["Parameters"]["OverlapPath"]["AllowedValues"] == ["none", "lambda", "worker"]
    assert TPL["Parameters"]["OverlapPath"]["Default"] == "none"


# ---------------------------------------------------------------- ECS

def test_worker_task_and_service():
    td = props("WorkerTaskDefinition")
    assert td["RequiresCompatibilities"] == ["FARGATE"] and td["NetworkMode"] == "awsvpc"
    assert td["RuntimePlatform"] == {"OperatingSystemFamily": "LINUX", "CpuArchitecture": "X86_64"}
    svc = props("WorkerService")
    assert svc["LaunchType"] == "FARGATE"
    net = svc["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert net["AssignPublicIp"] == {"Ref": "AssignPublicIp"}
    assert TPL["Parameters"]["AssignPublicIp"]["Default"] == "DISABLED"
    assert branches(net["Subnets"])[0] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]
    assert net["SecurityGroups"] == [{"Ref": "WorkerSecurityGroup"}]
    assert svc["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100
    # Containers' stop timeout above the largest shutdown timeout the parameter allows.
    (c,) = td["ContainerDefinitions"]
    assert c["StopTimeout"] > TPL["Parameters"]["WorkerShutdownTimeoutSeconds"]["MaxValue"]
    # Metrics: the VPC only.
    (rule,) = props("WorkerSecurityGroup")["SecurityGroupIngress"]
    assert (rule["FromPort"], rule["ToPort"], rule["CidrIp"]) == (9464, 9464, {"Ref": "VpcCidr"})


def test_worker_retrieval_switches_fan_out_and_its_permissions():
    (c,) = props("WorkerTaskDefinition")["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in c["Environment"]}
    assert env["STREAM_WORKER_RETRIEVAL"] == {"Ref": "WorkerRetrieval"}
    p = TPL["Parameters"]["WorkerRetrieval"]
    assert (p["AllowedValues"], p["Default"]) == (["polling", "fan-out"], "polling")
    assert TPL["Conditions"]["WorkerFanOut"] == {"Fn::Equals": [{"Ref": "WorkerRetrieval"}, "fan-out"]}
    statements = [st for policy in props("WorkerTaskRole")["Policies"] for st in policy["PolicyDocument"]["Statement"]]
    (fan_out,) = [st for st in statements if isinstance(st, dict) and "Fn::If" in st
                  and st["Fn::If"][0] == "WorkerFanOut"]
    granted = fan_out["Fn::If"][1]
    assert sorted(granted["Action"]) == ["kinesis:DescribeStreamConsumer", "kinesis:RegisterStreamConsumer",
                                          "kinesis:SubscribeToShard"]
    assert fan_out["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    # The lease table's name is the consumer's (the worker's --consumer-name default).
    consumer = granted["Resource"][1]["Fn::Sub"]
    assert consumer.endswith("/consumer/${AWS::StackName}-leases:*")
    assert props("LeaseTable")["TableName"] == {"Fn::Sub": "${AWS::StackName}-leases"}
    # The heartbeat table is named as the worker names it: <lease table>-workers.
    assert props("WorkersTable")["TableName"] == {"Fn::Sub": "${AWS::StackName}-leases-workers"}
    assert props("Stream")["Name"] == {"Fn::Sub": "${AWS::StackName}-tweets"}


def test_security_group_egress():
    for group in ("WorkerSecurityGroup", "ProducerSecurityGroup"):
        (rule,) = props(group)["SecurityGroupEgress"]
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443), group
    assert "SecurityGroupIngress" not in props("ProducerSecurityGroup")
    net = props("ProducerService")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert net["SecurityGroups"] == [{"Ref": "ProducerSecurityGroup"}]


def test_producer_secret():
    secret = RES["XBearerTokenSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret" and secret["Condition"] == "CreateSecret"
    assert "SecretString" not in secret["Properties"], "the token is never a value in the template"
    (c,) = props("ProducerTaskDefinition")["ContainerDefinitions"]
    (s,) = c["Secrets"]
    assert s["Name"] == "X_BEARER_TOKEN"
    assert branches(s["ValueFrom"]) == [{"Ref": "XBearerTokenSecret"}, {"Ref": "XBearerTokenSecretArn"}]
    assert all(e["Name"] != "X_BEARER_TOKEN" for e in c["Environment"])
    p = TPL["Parameters"]["XBearerTokenSecretArn"]
    assert "NoEcho" not in p and "secretsmanager" in p["AllowedPattern"], "an ARN, never the token itself"
    assert props("ProducerService")["DesiredCount"] == {"Ref": "ProducerCount"}
    assert TPL["Parameters"]["ProducerCount"]["Default"] == 0


def test_producer_rule_health_and_stop():
    (c,) = props("ProducerTaskDefinition")["ContainerDefinitions"]
    (rule,) = [e for e in c["Environment"] if e["Name"] == "STREAM_WORKER_RULE"]
    cond, on, off = rule["Value"]["Fn::If"]
    assert (cond, on, off) == ("ProducerRuleOn", {"Ref": "ProducerRule"}, ""), "empty is no rule"
    assert TPL["Parameters"]["ProducerRule"]["Default"] == ""
    assert "x-api-sample" in TPL["Parameters"]["ProducerSource"]["AllowedValues"]
    # Liveness, not readiness: a restart would not shorten X's reconnect backoff.
    assert c["HealthCheck"]["Command"][-1].endswith(":9464/healthz")
    assert {"Name": "STREAM_WORKER_PRODUCER_METRICS_ADDR", "Value": "0.0.0.0:9464"} in c["Environment"]
    assert c["StopTimeout"] > 20, "the stop timeout covers the producer's 20 s --shutdown-timeout"


def test_autoscaling():
    target = props("WorkerScalableTarget")
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert target["MinCapacity"] == {"Ref": "WorkerReplicas"} and target["MaxCapacity"] == {"Ref": "WorkerMaxReplicas"}
    assert "WorkerService.Name" in target["ResourceId"]["Fn::Sub"]
    cpu = props("WorkerCpuScaling")["TargetTrackingScalingPolicyConfiguration"]
    assert cpu["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    lag = props("WorkerLagScaling")
    assert lag["PolicyType"] == "StepScaling"
    assert {"Ref": "WorkerLagScaling"} in props("WorkerLagAlarm")["AlarmActions"]


def test_alarms():
    alarms = {n: r["Properties"] for n, r in RES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    metrics = {n: (a["Namespace"], a["MetricName"]) for n, a in alarms.items()}
    assert metrics == {
        "ConsumerLagAlarm": ("AWS/Lambda", "IteratorAge"),
        "WorkerLagAlarm": ("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds"),
        "DeadLetterAlarm": ("AWS/DynamoDB", "ConsumedWriteCapacityUnits"),
        "OnFailureAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    }
    assert alarms["ConsumerLagAlarm"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ConsumerFunction"}}]
    assert alarms["DeadLetterAlarm"]["Dimensions"] == [{"Name": "TableName", "Value": {"Ref": "DeadLetterTable"}}]
    for name, a in alarms.items():
        assert {"Ref": "AlarmTopic"} in a["AlarmActions"], name
        assert a["TreatMissingData"] == "notBreaching", name
    assert RES["AlarmTopic"]["Type"] == "AWS::SNS::Topic"


def test_given_network():
    c = conditions(TPL, {"VpcId": "vpc-0abc", "SubnetIds": "subnet-01,subnet-02"})
    assert c["CreateVpc"] is False
    created = [n for n, r in RES.items() if r.get("Condition") == "CreateVpc"]
    assert {"Vpc", "PrivateSubnetA", "PrivateSubnetB", "NatGateway"} <= set(created)
    net = props("WorkerService")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert branches(net["Subnets"])[1] == {"Fn::Split": [",", {"Ref": "SubnetIds"}]}
    assert branches(props("WorkerSecurityGroup")["VpcId"]) == [{"Ref": "Vpc"}, {"Ref": "VpcId"}]


def test_outputs():
    needed = {"StreamName", "StreamArn", "TweetsTableName", "LeaseTableName", "DeadLetterTableName",
              "ConsumerFunctionName", "ConsumerMappingId", "OnFailureQueueUrl", "ClusterName", "WorkerServiceName",
              "ProducerServiceName", "XBearerTokenSecret", "AlarmTopicArn", "ConsumerLogGroupName",
              "WorkerLogGroupName", "ProducerLogGroupName", "MetricsNamespace", "DashboardDataSource",
              "ProcessingPath", "VpcId", "StreamConsumerName"}
    assert needed <= set(TPL["Outputs"])
    for name, o in TPL["Outputs"].items():
        assert o.get("Description"), name
    assert TPL["Outputs"]["MetricsNamespace"]["Value"] == "StreamWorker"
    # The fleet's fan-out consumer is named after the lease table (the CLI's --consumer-name default).
    assert TPL["Outputs"]["StreamConsumerName"]["Value"] == {"Ref": "LeaseTable"}


def test_parameters_are_described_constrained_and_defaulted():
    for name, p in TPL["Parameters"].items():
        assert len(p.get("Description", "").split()) >= 3, f"{name}: description"
        constraint = {"AllowedValues", "AllowedPattern", "MinValue", "MaxValue", "MinLength"} & set(p)
        assert constraint, f"{name}: no allowed values, pattern or bounds"
        if "AllowedValues" in p and "Default" in p:
            assert p["Default"] in p["AllowedValues"], name
        if "AllowedPattern" in p and "Default" in p:
            assert re.fullmatch(p["AllowedPattern"], str(p["Default"])), f"{name}: default fails its own pattern"
    required = {k for k, v in TPL["Parameters"].items() if "Default" not in v}
    assert required == {"LambdaCodeBucket", "LambdaCodeKey", "WorkerImage"}, "deploy.sh fills exactly these"


# ---------------------------------------------------------------- IAM

# Actions that have no resource-level permissions: "*" is the only resource they accept.
NO_RESOURCE_LEVEL = {"kinesis:ListStreams", "ecr:GetAuthorizationToken"}
ROLE_OF = {
    "ConsumerFunction": "ConsumerRole",
    "WorkerTaskDefinition": ("WorkerExecutionRole", "WorkerTaskRole"),
    "ProducerTaskDefinition": ("ProducerExecutionRole", "ProducerTaskRole"),
}


def iam_problems(statements):
    """The rule of the issue: no '*' (or wildcard) action; no unscoped resource where a scoped
    one exists. Returns what is wrong, one string per problem."""
    problems = []
    for st in statements:
        sid = st.get("Sid", "?")
        actions = st.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if "NotAction" in st or "NotResource" in st:
            problems.append(f"{sid}: NotAction/NotResource")
        for a in actions:
            if "*" in a:
                problems.append(f"{sid}: wildcard action {a}")
        resources = st.get("Resource")
        if resources is None:
            problems.append(f"{sid}: no Resource")
            continue
        for r in [b for x in (resources if isinstance(resources, list) else [resources]) for b in branches(x)]:
            if r == "*":
                extra = set(actions) - NO_RESOURCE_LEVEL
                if extra:
                    problems.append(f"{sid}: Resource '*' for {sorted(extra)}, which can be scoped")
            elif isinstance(r, str):
                problems.append(f"{sid}: literal resource {r}; name this stack's resources")
            elif "Fn::Sub" in r:
                text = r["Fn::Sub"] if isinstance(r["Fn::Sub"], str) else r["Fn::Sub"][0]
                # A log group's ARN ends in ":*" (its log streams), a stream consumer's in ":*"
                # (its registration time): still one named group or consumer.
                named = ":log-group:" in text or "/consumer/" in text
                body = text[:-2] if named and text.endswith(":*") else text
                if "*" in body:
                    problems.append(f"{sid}: wildcard in resource {text}")
                if "${AWS::StackName}" not in text and "${EcrRepositoryName}" not in text:
                    problems.append(f"{sid}: resource {text} is not this stack's")
            elif not ({"Ref", "Fn::GetAtt"} & set(r)):
                problems.append(f"{sid}: resource {r} is neither a reference nor a stack-named ARN")
    return problems


def policy_statements(role):
    out = []
    for policy in props(role).get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            out += branches(st)
    return out


def test_iam_statements_are_scoped():
    roles = [n for n, r in RES.items() if r["Type"] == "AWS::IAM::Role"]
    assert sorted(roles) == sorted(["ConsumerRole", "WorkerExecutionRole", "WorkerTaskRole",
                                    "ProducerExecutionRole", "ProducerTaskRole"])
    assert not [n for n, r in RES.items() if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")]
    for role in roles:
        assert "ManagedPolicyArns" not in props(role), f"{role}: managed policies are not scoped to this stack"
        statements = policy_statements(role)
        assert statements, role
        assert iam_problems(statements) == [], role
    # One role per component, each used by that component only.
    assert props("ConsumerFunction")["Role"] == {"Fn::GetAtt": ["ConsumerRole", "Arn"]}
    for td, (execution, task) in [("WorkerTaskDefinition", ("WorkerExecutionRole", "WorkerTaskRole")),
                                  ("ProducerTaskDefinition", ("ProducerExecutionRole", "ProducerTaskRole"))]:
        assert props(td)["ExecutionRoleArn"] == {"Fn::GetAtt": [execution, "Arn"]}
        assert props(td)["TaskRoleArn"] == {"Fn::GetAtt": [task, "Arn"]}
    # Least privilege, as the code calls: the worker never creates tables; only the producer puts.
    worker = {a for st in policy_statements("WorkerTaskRole") for a in st["Action"]}
    assert "dynamodb:CreateTable" not in worker and not {a for a in worker if a.startswith("kinesis:Put")}
    consumer = {a for st in policy_statements("ConsumerRole") for a in st["Action"]}
    assert {"kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
            "kinesis:ListShards", "kinesis:ListStreams", "sqs:SendMessage", "dynamodb:BatchWriteItem",
            "dynamodb:DescribeTable"} <= consumer
    secret_readers = [r for r in roles if any(a.startswith("secretsmanager:")
                                             for st in policy_statements(r) for a in st["Action"])]
    assert secret_readers == ["ProducerExecutionRole"]


def test_iam_checker_catches_what_it_should():
    """The checker above is not vacuous."""
    bad = [
        {"Sid": "A", "Action": "*", "Resource": {"Fn::GetAtt": ["Stream", "Arn"]}},
        {"Sid": "B", "Action": ["dynamodb:*"], "Resource": {"Fn::GetAtt": ["LeaseTable", "Arn"]}},
        {"Sid": "C", "Action": ["dynamodb:GetItem"], "Resource": "*"},
        {"Sid": "D", "Action": ["kinesis:GetRecords"], "Resource": {"Fn::Sub": "arn:aws:kinesis:*:*:stream/*"}},
        {"Sid": "E", "Action": ["sqs:SendMessage"], "Resource": "arn:aws:sqs:us-east-1:1:q"},
        {"Sid": "F", "Action": ["kinesis:SubscribeToShard"],
         "Resource": {"Fn::Sub": "arn:aws:kinesis:r:1:stream/${AWS::StackName}-tweets/consumer/*"}},
    ]
    found = iam_problems(bad)
    for sid in "ABCDEF":
        assert any(p.startswith(sid + ":") for p in found), (sid, found)
    assert iam_problems([{"Sid": "L", "Action": ["kinesis:ListStreams"], "Resource": "*"}]) == []
