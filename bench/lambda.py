"""Figures of the Lambda function (stream-worker-lambda, release build) on the local emulators.

    bench/run.sh lambda [--json]                  # builds, starts the emulators and the keep-alive front
    eval "$(deploy/local/emulators.sh start)"     # or by hand, against running emulators:
    .local/emulators/venv/bin/python bench/lambda.py [--json] [--invocations 100] [--records 100]

This script is the Lambda service: it serves a minimal Runtime API on 127.0.0.1
(GET invocation/next, POST invocation/{id}/response|error, POST init/error) and
spawns the release binary with the variables Lambda sets. It measures
  * cold start: from spawn to the function's first GET invocation/next (it reads
    its configuration and DescribeTables both tables before that), median of 5;
  * then, on the last of those processes, 100 invocations of 100 ~1 KB v1.1 tweets
    (one shard's batch each, the Kinesis event shape of deploy/local/esm.py), each
    answered with no batchItemFailures: invocation latency (event handed out →
    response received), peak RSS (VmHWM) and CPU per record (utime + stime from
    /proc, after the cold start) of the function, and the DynamoDB emulator's CPU
    over the same window when its pid file is found.
The worker's CPU per record, for comparison, is `bench/run.sh cpu`.
"""
import argparse
import base64
import json
import math
import os
import queue
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

from procstat import cpu_seconds, peak_rss_mib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STREAM_WORKER_LAMBDA_BIN", os.path.join(REPO, "target/release/stream-worker-lambda"))
RUN_DIR = os.environ.get("EMULATORS_RUN_DIR", os.path.join(REPO, ".local/run"))
API = "/2018-06-01/runtime"
FUNCTION = "stream-worker-lambda"
SHARD = "shardId-000000000000"
TARGET_COLD_MS = 100
TARGET_RSS_MIB = 32
WORDS = ("stream", "kinesis", "lambda", "rust", "tweet", "shard", "lease", "replay", "latency", "batch",
         "durable", "idempotent", "checkpoint", "café", "naïve", "größe", "東京", "🚀", "🦀", "📈")
TAGS = ("aws", "rustlang", "serverless", "kinesis", "dynamodb", "streaming", "bigdata", "cloud")


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def helper_pids():
    """The DynamoDB emulator (and run.sh's keep-alive front, if any) by their pid files."""
    pids = {}
    try:
        pid = int(open(os.path.join(RUN_DIR, "dynamodb.pid")).read())
        port = open(os.path.join(RUN_DIR, "dynamodb.port")).read().strip()
        os.kill(pid, 0)
        if f"\0-p\0{port}\0" in open(f"/proc/{pid}/cmdline").read():
            pids["dynamodb"] = pid
    except (OSError, ValueError):
        pass
    try:
        master = int(open(os.path.join(RUN_DIR, "nginx.pid")).read())
        children = open(f"/proc/{master}/task/{master}/children").read().split()
        pids["nginx"] = int(children[0]) if children else master
    except (OSError, ValueError):
        pass
    return pids


def percentile(values, p):
    s = sorted(values)
    return s[max(0, math.ceil(p * len(s)) - 1)]


# ---------------------------------------------------------------- Runtime API

class Job:
    def __init__(self, payload):
        self.id = str(uuid.uuid4())
        self.payload = payload
        self.sent = None
        self.answered = None
        self.kind = None
        self.body = b""
        self.done = threading.Event()


class Runtime(ThreadingHTTPServer):
    """One execution environment's Runtime API: a queue of invocations, one at a time."""
    daemon_threads = True
    block_on_close = False

    def __init__(self, function_arn):
        super().__init__(("127.0.0.1", 0), Handler)
        self.function_arn = function_arn
        self.jobs = queue.Queue()
        self.by_id = {}
        self.lock = threading.Lock()
        self.nexts = 0
        self.first_next = threading.Event()
        self.first_next_at = None
        self.init_error = None
        self.next_seen = threading.Condition(self.lock)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self):
        for _ in range(4):
            self.jobs.put(None)       # releases a handler blocked in GET /next
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):
        pass                          # the function was killed mid-poll: expected


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, data, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        rt = self.server
        if self.path.split("?")[0].rstrip("/") != API + "/invocation/next":
            return self.reply(404, b'{"errorType":"NotFound"}')
        now = time.monotonic()
        with rt.lock:
            rt.nexts += 1
            if rt.first_next_at is None:
                rt.first_next_at = now
            rt.next_seen.notify_all()
        rt.first_next.set()
        job = rt.jobs.get()
        if job is None:
            self.close_connection = True
            return
        job.sent = time.monotonic()
        self.reply(200, job.payload, (
            ("Lambda-Runtime-Aws-Request-Id", job.id),
            ("Lambda-Runtime-Deadline-Ms", str(int((time.time() + 60) * 1000))),
            ("Lambda-Runtime-Invoked-Function-Arn", rt.function_arn),
            ("Lambda-Runtime-Trace-Id", "Root=1-%08x-%s;Parent=%s;Sampled=0" % (
                int(time.time()), uuid.uuid4().hex[:24], uuid.uuid4().hex[:16])),
        ))

    def do_POST(self):
        rt = self.server
        body = self.read_body()
        now = time.monotonic()
        path = self.path.split("?")[0].rstrip("/")
        if path == API + "/init/error":
            rt.init_error = body.decode(errors="replace")
            self.reply(202, b'{"status":"OK"}')
            rt.first_next.set()
            return
        m = re.fullmatch(re.escape(API) + r"/invocation/([^/]+)/(response|error)", path)
        job = rt.by_id.get(m.group(1)) if m else None
        if job is None:
            return self.reply(400, b'{"errorType":"InvalidRequestID"}')
        job.answered, job.kind, job.body = now, m.group(2), body
        self.reply(202, b'{"status":"OK"}')
        job.done.set()


# ---------------------------------------------------------------- the function

def spawn(args, tables, log_path):
    account = "000000000000"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    rt = Runtime(f"arn:aws:lambda:{region}:{account}:function:{FUNCTION}")
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{rt.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(args.memory),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d", time.gmtime()) + "/[$LATEST]" + uuid.uuid4().hex,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "LAMBDA_TASK_ROOT": os.path.dirname(BIN),
        "_HANDLER": "bootstrap",
        "STREAM_WORKER_TWEETS_TABLE": tables[0],
        "STREAM_WORKER_DEAD_LETTER_TABLE": tables[1],
        **({"STREAM_WORKER_MAX_WRITE_RATE": str(args.max_write_rate)} if args.max_write_rate else {}),
        "AWS_REGION": region,
    })
    env.setdefault("AWS_DEFAULT_REGION", region)
    out = open(log_path, "wb")
    started = time.monotonic()
    proc = subprocess.Popen([BIN], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out.close()
    while not rt.first_next.wait(0.05):
        if proc.poll() is not None or time.monotonic() - started > 30:
            break
    if rt.first_next_at is None:
        stop(proc)
        rt.close()
        tail = open(log_path, errors="replace").read()[-2000:]
        sys.exit(f"lambda bench: the function did not reach invocation/next "
                 f"(status {proc.returncode}, init error {rt.init_error!r}); log {log_path}:\n{tail}")
    return proc, rt, (rt.first_next_at - started) * 1000


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the events

def tweet(rng, tweet_id, size):
    words = []
    while len(" ".join(words).encode()) < size:
        words.append(rng.choice(WORDS))
    tags = rng.sample(TAGS, 3)
    name = rng.choice(("Ada Lovelace", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson"))
    doc = {
        "id_str": tweet_id,
        "text": " ".join(words) + " " + " ".join("#" + t for t in tags),
        "created_at": "Wed Oct 10 20:19:24 +0000 2018",
        "user": {"name": name, "screen_name": name.lower().replace(" ", "_")},
        "lang": "en",
        "entities": {"hashtags": [{"text": t, "indices": [0, len(t) + 1]} for t in tags]},
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def events(n_invocations, n_records, stream_arn, region):
    """The payloads, built before anything is measured; ids unique across runs."""
    rng = random.Random(7)
    id_base = (int(time.time() * 1000) - 1288834974657) << 22     # a snowflake id of now
    seq = 4965 * 10 ** 52 + rng.randrange(10 ** 40)                   # 56 digits, as Kinesis's
    arrival = time.time() - 5
    payloads, sizes = [], []
    for i in range(n_invocations):
        records = []
        for j in range(n_records):
            tweet_id = str(id_base + i * n_records + j)
            data = tweet(rng, tweet_id, 700)
            sizes.append(len(data))
            seq += rng.randrange(1, 10 ** 20)
            arrival += 0.0013
            records.append({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": tweet_id,
                    "sequenceNumber": str(seq),
                    "data": base64.b64encode(data).decode("ascii"),
                    "approximateArrivalTimestamp": round(arrival, 3),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{SHARD}:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::000000000000:role/{FUNCTION}",
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            })
        payloads.append(json.dumps({"Records": records}, separators=(",", ":")).encode())
    assert len(str(seq)) == 56, seq
    return payloads, sizes


# ---------------------------------------------------------------- the run

def create_tables(dynamodb, tag):
    tweets, dead = f"{tag}-tweets", f"{tag}-dead"
    dynamodb.create_table(TableName=tweets, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}])
    dynamodb.create_table(TableName=dead, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "ShardId", "AttributeType": "S"},
                                                {"AttributeName": "SequenceNumber", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "ShardId", "KeyType": "HASH"},
                                     {"AttributeName": "SequenceNumber", "KeyType": "RANGE"}])
    for name in (tweets, dead):
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
    return tweets, dead


def count(dynamodb, table):
    n, kwargs = 0, {"TableName": table, "Select": "COUNT"}
    while True:
        out = dynamodb.scan(**kwargs)
        n += out["Count"]
        if "LastEvaluatedKey" not in out:
            return n
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def run(args):
    if not os.access(BIN, os.X_OK):
        sys.exit(f"lambda bench: {BIN} not found; build it: cargo build --release --bin stream-worker-lambda")
    if not os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
        sys.exit('lambda bench: AWS_ENDPOINT_URL_DYNAMODB unset; eval "$(deploy/local/emulators.sh start)" first')
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    dynamodb = boto3.client("dynamodb", region_name=region)
    work = tempfile.mkdtemp(prefix="stream-worker-bench-lambda-")
    tag = f"bench-lambda-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"
    stream_arn = f"arn:aws:kinesis:{region}:000000000000:stream/{tag}"
    payloads, sizes = events(args.invocations, args.records, stream_arn, region)
    n_records = args.invocations * args.records
    tables = create_tables(dynamodb, tag)
    say(f"lambda: tables {tables[0]}, {tables[1]}; {args.invocations} events of {args.records} records built")
    proc = rt = None
    try:
        colds = []
        for i in range(args.cold_starts):
            proc, rt, ms = spawn(args, tables, os.path.join(work, f"function-{i + 1}.log"))
            colds.append(ms)
            say(f"lambda: cold start {i + 1}: {ms:.1f} ms (pid {proc.pid})")
            if i + 1 < args.cold_starts:
                stop(proc)
                rt.close()
        helpers = helper_pids()
        cpu0 = cpu_seconds(proc.pid)
        helpers0 = {k: cpu_seconds(v) for k, v in helpers.items()}
        wall0 = time.monotonic()
        latencies = []
        for i, payload in enumerate(payloads):
            job = Job(payload)
            rt.by_id[job.id] = job
            rt.jobs.put(job)
            while not job.done.wait(1):
                if proc.poll() is not None:
                    sys.exit(f"lambda bench: the function exited ({proc.returncode}) during invocation {i + 1}; "
                             f"log {work}/function-{args.cold_starts}.log")
            if job.kind != "response":
                sys.exit(f"lambda bench: invocation {i + 1} failed: {job.body[:500]!r}")
            answer = json.loads(job.body or b"null") or {}
            if answer.get("batchItemFailures"):
                sys.exit(f"lambda bench: invocation {i + 1} reported failures: {job.body[:500]!r}")
            latencies.append((job.answered - job.sent) * 1000)
        with rt.lock:   # the function is idle again once it asks for the next invocation
            rt.next_seen.wait_for(lambda: rt.nexts > args.invocations, timeout=2)
        wall = time.monotonic() - wall0
        cpu = cpu_seconds(proc.pid) - cpu0
        helpers_cpu = {k: cpu_seconds(v) - helpers0[k] for k, v in helpers.items()}
        rss = peak_rss_mib(proc.pid)
        written, dead = count(dynamodb, tables[0]), count(dynamodb, tables[1])
    finally:
        if proc is not None:
            stop(proc)
        if rt is not None:
            rt.close()
        if not args.keep_tables:
            for t in tables:
                dynamodb.delete_table(TableName=t)
    cold = statistics.median(colds)
    return {
        "cold_start_ms": {"median": round(cold, 1), "each": [round(c, 1) for c in colds],
                          "target": TARGET_COLD_MS, "met": cold <= TARGET_COLD_MS},
        "peak_rss_mib": {"value": round(rss, 1), "target": TARGET_RSS_MIB, "met": rss <= TARGET_RSS_MIB},
        "cpu_per_record_us": round(cpu / n_records * 1e6, 1),
        "function_cpu_s": round(cpu, 2),
        "helpers_cpu_s": {k: round(v, 2) for k, v in helpers_cpu.items()},
        "invocation_ms": {"p50": round(percentile(latencies, 0.5), 1), "p99": round(percentile(latencies, 0.99), 1),
                          "max": round(max(latencies), 1), "first": round(latencies[0], 1)},
        "invocations": args.invocations, "records": n_records, "wall_s": round(wall, 2),
        "records_per_s": round(n_records / wall),
        "tweet_bytes_mean": round(statistics.mean(sizes)),
        "event_bytes_mean": round(statistics.mean(len(p) for p in payloads)),
        "tweets_in_table": written, "dead_letters": dead,
        "max_write_rate": args.max_write_rate,
        "dynamodb_endpoint": os.environ["AWS_ENDPOINT_URL_DYNAMODB"],
        "binary": BIN, "logs": work, "cores": os.cpu_count(),
    }


def show(r):
    c, m, lat = r["cold_start_ms"], r["peak_rss_mib"], r["invocation_ms"]
    ok = lambda met: "met" if met else "MISSED"
    helpers = ", ".join(f"{k} {v:.2f} s" for k, v in r["helpers_cpu_s"].items()) or "pid not found"
    print(f"""
Lambda function ({r['binary']})
  cold start, spawn → first invocation/next    median {c['median']:.1f} ms   (target ≤ {c['target']} ms)  {ok(c['met'])}
                                                each   {', '.join(f'{x:.1f}' for x in c['each'])} ms
  peak RSS (VmHWM) after {r['invocations']} invocations       {m['value']:.1f} MiB   (target ≤ {m['target']} MiB)  {ok(m['met'])}
  CPU per record (utime+stime after cold start) {r['cpu_per_record_us']:.1f} µs   (compare: worker figure, bench/run.sh cpu)
      function {r['function_cpu_s']:.2f} s for {r['records']:,} records; emulators over the same window: {helpers}
  invocation latency ({r['invocations']} × {r['records'] // r['invocations']} records)      p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms (first {lat['first']:.1f})
  throughput                                    {r['records_per_s']:,} records/s over {r['wall_s']:.1f} s
  check: {r['tweets_in_table']:,} tweets in the table, {r['dead_letters']} dead letters; tweets ~{r['tweet_bytes_mean']} B, events ~{r['event_bytes_mean'] // 1024} KiB
  (STREAM_WORKER_MAX_WRITE_RATE={r['max_write_rate'] or 'default'}; DynamoDB at {r['dynamodb_endpoint']}; {r['cores']} cores; logs in {r['logs']})""")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--invocations", type=int, default=100)
    p.add_argument("--records", type=int, default=100, help="records per invocation")
    p.add_argument("--cold-starts", type=int, default=5)
    p.add_argument("--memory", type=int, default=128, help="AWS_LAMBDA_FUNCTION_MEMORY_SIZE (not enforced)")
    p.add_argument("--max-write-rate", type=int, default=None,
                   help="STREAM_WORKER_MAX_WRITE_RATE (default: unset, the function's own default)")
    p.add_argument("--keep-tables", action="store_true", help="do not delete the two tables afterwards")
    args = p.parse_args()
    r = run(args)
    if args.json:
        print(json.dumps(r, ensure_ascii=False))
    else:
        show(r)


if __name__ == "__main__":
    main()
