#!/usr/bin/env python3
"""Create (or delete) the stream and tables of a local stream-worker deployment.

The table keys are the contract of DESIGN.md and deploy/ (tweets: Id, GSI ByUser,
TTL ExpirationTime; dead letters: ShardId + SequenceNumber). The lease table is not
created here: the worker creates it. Endpoints and region come from the standard
AWS variables that `deploy/local/emulators.sh start` prints.

    resources.py create --stream tweets --shards 4 [--tweets-table tweets]
                        [--dead-letter-table stream-worker-dead-letters]
    resources.py delete --stream tweets [...same names]
"""
import argparse
import os
import sys
import time

import boto3
from botocore.exceptions import ClientError


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


def create_table(dynamodb, **spec):
    try:
        dynamodb.create_table(BillingMode="PAY_PER_REQUEST", **spec)
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
    for table in (args.tweets_table, args.dead_letter_table, args.lease_table):
        ignore_missing(dynamodb.delete_table, TableName=table)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["create", "delete"])
    parser.add_argument("--stream", required=True)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--tweets-table", default="tweets")
    parser.add_argument("--dead-letter-table", default="stream-worker-dead-letters")
    parser.add_argument("--lease-table", default="stream-worker-leases", help="deleted by `delete` only")
    args = parser.parse_args()
    create(args) if args.action == "create" else delete(args)


if __name__ == "__main__":
    main()
