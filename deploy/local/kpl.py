#!/usr/bin/env python3
"""KPL aggregates made and read by an independent implementation: the awslabs
Python library aws-kinesis-agg (pinned in deploy/local/emulators.sh), for the
interoperability tests of stream-worker's own aggregation.

    kpl.py put --stream S --file tweets.jsonl [--per-aggregate N] [--put-log F]
        packs each N lines (default 100) of the file into one aggregate with the
        library's RecordAggregator (partition key: the tweet id, or the line
        number) and puts it with PutRecord; the put log gets a line per user
        record: key, partition key, shard, sequence number, kind (kpl, or
        malformed:kpl for a line that is not a tweet), acceptance
        time (Unix ms), sub-sequence number (tab-separated, as `produce`'s).
    kpl.py read --stream S
        reads every shard from its trim horizon and de-aggregates each record
        with the library; prints one JSON object per user record: shard,
        sequence, sub (null for a plain record), partition_key, explicit_hash_key,
        data (UTF-8 text).

Endpoints and credentials come from the standard AWS variables
(`deploy/local/emulators.sh env`).
"""
import argparse
import base64
import json
import os
import sys
import time

import boto3
from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import iter_deaggregate_records


def key_of(line, n):
    try:
        tweet = json.loads(line)
        return tweet.get("id_str") or tweet["data"]["id"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"line-{n}"


def put(kinesis, args):
    with open(args.file, encoding="utf-8") as f:
        lines = [(n + 1, line.rstrip("\n")) for n, line in enumerate(f) if line.strip()]
    log = open(args.put_log, "a", encoding="utf-8") if args.put_log else None
    for start in range(0, len(lines), args.per_aggregate):
        chunk = lines[start:start + args.per_aggregate]
        aggregator = RecordAggregator()
        keys = []
        for n, line in chunk:
            key = key_of(line, n)
            if aggregator.add_user_record(key, line.encode("utf-8")) is not None:
                sys.exit("kpl.py: an aggregate filled up; use a smaller --per-aggregate")
            keys.append((key, "malformed:kpl" if key == f"line-{n}" else "kpl"))
        partition_key, explicit_hash_key, data = aggregator.clear_and_get().get_contents()
        request = {"StreamName": args.stream, "PartitionKey": partition_key, "Data": data}
        if explicit_hash_key:
            request["ExplicitHashKey"] = explicit_hash_key
        out = kinesis.put_record(**request)
        accepted = int(time.time() * 1000)
        if log:
            for sub, (key, kind) in enumerate(keys):
                log.write(f"{key}\t{key}\t{out['ShardId']}\t{out['SequenceNumber']}\t{kind}\t{accepted}\t{sub}\n")
    if log:
        log.close()


def read(kinesis, args):
    shards = kinesis.list_shards(StreamName=args.stream)["Shards"]
    for shard in shards:
        iterator = kinesis.get_shard_iterator(
            StreamName=args.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            out = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            for record in iter_deaggregate_records(out["Records"], data_format="Boto3"):
                k = record["kinesis"]
                aggregated = k.get("aggregated", False)
                # The library re-encodes user records' data in base64 (as Lambda
                # delivers it) and passes plain records' bytes through.
                data = base64.b64decode(k["data"]) if aggregated else k["data"]
                print(json.dumps({
                    "shard": shard["ShardId"],
                    "sequence": k["sequenceNumber"],
                    "sub": k.get("subSequenceNumber") if aggregated else None,
                    "partition_key": k["partitionKey"],
                    "explicit_hash_key": k.get("explicitHashKey"),
                    "data": data.decode("utf-8"),
                }))
            if not out["Records"] and out.get("MillisBehindLatest", 0) == 0:
                break
            iterator = out.get("NextShardIterator")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("put")
    p.add_argument("--stream", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--per-aggregate", type=int, default=100)
    p.add_argument("--put-log")
    r = sub.add_parser("read")
    r.add_argument("--stream", required=True)
    args = parser.parse_args()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    kinesis = boto3.client("kinesis", region_name=region)
    put(kinesis, args) if args.command == "put" else read(kinesis, args)


if __name__ == "__main__":
    main()
