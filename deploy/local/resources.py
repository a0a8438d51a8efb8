#!/usr/bin/env python3
"""Create (or delete) the stream and tables of a local stream-worker deployment.

The table keys are the contract of docs/design.md ("Tables") and deploy/ (tweets: Id, GSI ByUser,
TTL ExpirationTime; dead letters: ShardId + SequenceNumber). The lease table and the
heartbeat table beside it (<lease table>-workers) are not created here: the worker
creates them. Endpoints and region come from the standard
AWS variables that `deploy/local/emulators.sh start` prints.

    resources.py create --stream tweets --shards 4 [--tweets-table tweets]
                        [--dead-letter-table stream-worker-dead-letters]
    resources.py delete --stream tweets [...same names]
    resources.py show [--brief] [...same names]    row counts, sample rows, leases
"""
import argparse
import os
import signal
import sys
import time

# Ctrl-C ends the script at once and quietly (the demo runs `show` in the
# foreground of its loop: a Ctrl-C there must not print a traceback).
signal.signal(signal.SIGINT, signal.SIG_DFL)

import boto3  # noqa: E402 (after the signal handler: importing boto3 takes a while)
from botocore.exceptions import ClientError  # noqa: E402


def create_stream(kinesis, name, shards):
    try:
        kinesis.create_stream(StreamName=name, ShardCount=shards)
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
    for _ in range(300):
        status = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            return
        time.sleep(0.1)
    sys.exit(f"stream {name} did not become ACTIVE")


def create_table(dynamodb, wcu=0, **spec):
    if wcu:
        # Provisioned: the table and each index get `wcu` write (and read) units.
        throughput = {"ReadCapacityUnits": wcu, "WriteCapacityUnits": wcu}
        spec = dict(spec, BillingMode="PROVISIONED", ProvisionedThroughput=throughput)
        for index in spec.get("GlobalSecondaryIndexes", []):
            index["ProvisionedThroughput"] = throughput
    else:
        spec = dict(spec, BillingMode="PAY_PER_REQUEST")
    try:
        dynamodb.create_table(**spec)
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=spec["TableName"], WaiterConfig={"Delay": 1})


def client(service):
    # botocore reads AWS_DEFAULT_REGION only; the Rust SDK and our scripts use AWS_REGION.
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.client(service, region_name=region)


def create(args):
    create_stream(client("kinesis"), args.stream, args.shards)
    dynamodb = client("dynamodb")
    create_table(
        dynamodb,
        wcu=args.write_capacity,
        TableName=args.tweets_table,
        AttributeDefinitions=[
            {"AttributeName": "Id", "AttributeType": "S"},
            {"AttributeName": "Username", "AttributeType": "S"},
            {"AttributeName": "Timestamp", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "ByUser",
            "KeySchema": [
                {"AttributeName": "Username", "KeyType": "HASH"},
                {"AttributeName": "Timestamp", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }],
    )
    dynamodb.update_time_to_live(
        TableName=args.tweets_table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "ExpirationTime"},
    )
    create_table(
        dynamodb,
        TableName=args.dead_letter_table,
        AttributeDefinitions=[
            {"AttributeName": "ShardId", "AttributeType": "S"},
            {"AttributeName": "SequenceNumber", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "ShardId", "KeyType": "HASH"},
            {"AttributeName": "SequenceNumber", "KeyType": "RANGE"},
        ],
    )
    print(f"stream {args.stream} ({args.shards} shards), tables {args.tweets_table}, {args.dead_letter_table}: ready")


def delete(args):
    def ignore_missing(call, **kw):
        try:
            call(**kw)
        except ClientError as e:
            if e.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
    ignore_missing(client("kinesis").delete_stream, StreamName=args.stream, EnforceConsumerDeletion=True)
    dynamodb = client("dynamodb")
    for table in (args.tweets_table, args.dead_letter_table, args.lease_table, args.lease_table + "-workers"):
        ignore_missing(dynamodb.delete_table, TableName=table)


def count(dynamodb, table):
    total, kwargs = 0, {"TableName": table, "Select": "COUNT"}
    while True:
        try:
            out = dynamodb.scan(**kwargs)
        except ClientError as e:
            if e.response["Error"]["Code"] == "ResourceNotFoundException":
                return 0
            raise
        total += out["Count"]
        if "LastEvaluatedKey" not in out:
            return total
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def show(args):
    dynamodb = client("dynamodb")
    try:
        leases = dynamodb.scan(TableName=args.lease_table)["Items"]
    except ClientError:
        leases = []
    owners = {}
    for lease in leases:
        owner = lease.get("leaseOwner", {}).get("S", "-")
        owners[owner] = owners.get(owner, 0) + 1
    print(f"tweets: {count(dynamodb, args.tweets_table)}  dead letters: {count(dynamodb, args.dead_letter_table)}  "
          f"leases per worker: {dict(sorted(owners.items()))}", flush=True)
    if args.brief:
        return
    for item in dynamodb.scan(TableName=args.tweets_table, Limit=3)["Items"]:
        print(f"  @{item.get('ScreenName', {}).get('S', '?')} {item['Timestamp']['S']} "
              f"{item['Message']['S'][:80]!r}")
    for item in dynamodb.scan(TableName=args.dead_letter_table, Limit=3)["Items"]:
        print(f"  dead letter {item['ShardId']['S']}/{item['SequenceNumber']['S'][-8:]}: {item['Reason']['S']}")
    for lease in sorted(leases, key=lambda l: l["leaseKey"]["S"]):
        print(f"  {lease['leaseKey']['S']}: owner={lease.get('leaseOwner', {}).get('S', '-')} "
              f"checkpoint={lease['checkpoint']['S'][-12:]} counter={lease['leaseCounter']['N']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["create", "delete", "show"])
    parser.add_argument("--stream", default="tweets")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--tweets-table", default="tweets")
    parser.add_argument("--dead-letter-table", default="stream-worker-dead-letters")
    parser.add_argument("--lease-table", default="stream-worker-leases", help="deleted by `delete` only")
    parser.add_argument("--write-capacity", type=int, default=0, metavar="WCU",
                        help="create: a provisioned tweets table of WCU write units/s (default 0: on demand)")
    parser.add_argument("--brief", action="store_true", help="show: counts only")
    args = parser.parse_args()
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        sys.exit("resources.py: no AWS region or endpoints set\n"
                 "  hint: eval \"$(deploy/local/emulators.sh env)\" first (or `start`, if the emulators are not running)")
    {"create": create, "delete": delete, "show": show}[args.action](args)


if __name__ == "__main__":
    main()
