#!/usr/bin/env python3
"""Test support for deploy/local/esm.py: a tiny Lambda function speaking the Runtime API.

It loops on GET /2018-06-01/runtime/invocation/next (at $AWS_LAMBDA_RUNTIME_API),
decodes each Kinesis record's base64 data in order, appends "<shardId> <sequenceNumber>"
for each record it handled to the file $FAKE_OUT, and answers
{"batchItemFailures": []}. Record data steers it:

    crash        exit 1 (every time; once per record with FAKE_ONCE=1)
    error        POST .../error for the whole batch (likewise)
    sleep:N      sleep N seconds first (likewise), to provoke a timeout

FAKE_FAIL_SEQ=<sequence number>: report that record once as a batch item failure
(records before it count as handled; the rest of the batch is not looked at).
FAKE_INIT_ERROR=<message>: POST init/error with the message and exit 1.
"Once" is remembered across restarts in $FAKE_OUT.once. Standard library only.
"""
import base64
import json
import os
import sys
import time
import urllib.request

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
OUT = os.environ.get("FAKE_OUT", "/dev/null")
ONCE_FILE = OUT + ".once"


def post(path, obj, headers=None):
    req = urllib.request.Request(API + path, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    urllib.request.urlopen(req).read()


def first_time(key, always_once=False):
    """True if this behaviour should happen now (always, unless FAKE_ONCE or always_once)."""
    if not (always_once or os.environ.get("FAKE_ONCE") == "1"):
        return True
    done = set(open(ONCE_FILE).read().split()) if os.path.exists(ONCE_FILE) else set()
    if key in done:
        return False
    with open(ONCE_FILE, "a") as f:
        f.write(key + "\n")
    return True


def handle(event):
    handled = []
    try:
        for rec in event["Records"]:
            seq = rec["kinesis"]["sequenceNumber"]
            shard = rec["eventID"].rsplit(":", 1)[0]
            data = base64.b64decode(rec["kinesis"]["data"])
            if seq == os.environ.get("FAKE_FAIL_SEQ") and first_time("fail:" + seq, True):
                return {"batchItemFailures": [{"itemIdentifier": seq}]}, None
            if data == b"crash" and first_time("crash:" + seq):
                sys.exit(1)
            if data == b"error" and first_time("error:" + seq):
                return None, {"errorMessage": f"record {seq} says error", "errorType": "FakeError"}
            if data.startswith(b"sleep:") and first_time("sleep:" + seq):
                time.sleep(float(data[6:]))
            handled.append(f"{shard} {seq}\n")
        return {"batchItemFailures": []}, None
    finally:
        with open(OUT, "a") as f:
            f.write("".join(handled))


def main():
    if os.environ.get("FAKE_INIT_ERROR"):
        post("/init/error", {"errorMessage": os.environ["FAKE_INIT_ERROR"], "errorType": "FakeInitError"},
             {"Lambda-Runtime-Function-Error-Type": "FakeInitError"})
        sys.exit(1)
    while True:
        with urllib.request.urlopen(API + "/invocation/next") as r:
            rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(r.read())
        response, error = handle(event)
        if error:
            post(f"/invocation/{rid}/error", error, {"Lambda-Runtime-Function-Error-Type": error["errorType"]})
        else:
            post(f"/invocation/{rid}/response", response)


if __name__ == "__main__":
    main()
