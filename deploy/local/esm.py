#!/usr/bin/env python3
"""A local stand-in for AWS Lambda's Kinesis event source mapping and the Lambda service.

Test support and demo tooling, not the product. It reads a Kinesis stream (the local
emulator, or anything boto3 reaches) the way a Kinesis event source mapping does and
invokes a function process over the real Lambda Runtime API, so the Lambda binary
(`stream-worker-lambda`, built on `lambda_runtime`) runs unmodified on this machine:

    esm.py --stream tweets -- target/debug/stream-worker-lambda
    esm.py --stream tweets --concurrency 2 --batch-size 500 -v -- target/release/stream-worker-lambda

What it implements
  The Lambda service: --concurrency execution environments, each a child process with
  its own Runtime API server on 127.0.0.1 and the variables Lambda sets
  (AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_FUNCTION_NAME, ..._VERSION, ..._MEMORY_SIZE,
  ..._LOG_GROUP_NAME, ..._LOG_STREAM_NAME, AWS_LAMBDA_INITIALIZATION_TYPE,
  LAMBDA_TASK_ROOT, _HANDLER; AWS_REGION/AWS_DEFAULT_REGION when unset). Runtime API:
  GET invocation/next (long poll; Lambda-Runtime-Aws-Request-Id, -Deadline-Ms,
  -Invoked-Function-Arn, -Trace-Id), POST invocation/{id}/response (202; 413 above
  6 MB), POST invocation/{id}/error (202), POST init/error (202); unknown request ids
  400 InvalidRequestID, answering twice 403 InvalidStateTransition, other paths 404.
  A child that exits is restarted (a new cold start, backoff up to 5 s) and the batch
  it was running fails; a batch not answered by its deadline (+1 s) kills the child
  (as a Lambda timeout resets the environment), fails, and the child is restarted.
  The mapping: one poller per shard (ListShards, paginated), GetShardIterator at
  TRIM_HORIZON / LATEST / AT_TIMESTAMP, GetRecords at most 5 calls/s per shard and
  about once a second on an idle shard, batches of up to --batch-size records and
  6 MB of event JSON, gathered for up to --batching-window seconds; one batch per
  shard in flight, per-shard order kept; the AWS Kinesis event shape. Responses are
  read as with FunctionResponseTypes=[ReportBatchItemFailures] (always on): empty,
  null, {} or an empty/null batchItemFailures list = success; otherwise everything
  before the lowest reported sequence number is done and the retry starts at it; not
  JSON, an item without itemIdentifier, a null/empty one or one not in the batch, an
  /error, a crash or a timeout fail the whole batch (AWS docs: "Configuring partial
  batch response with Kinesis Data Streams and Lambda"). MaximumRetryAttempts,
  MaximumRecordAgeInSeconds, BisectBatchOnFunctionError ("splitting batches doesn't
  consume the retry quota"; with a partial response the batch is bisected at the
  returned sequence number), on-failure records shaped like Lambda's Kinesis
  invocation record (requestContext, responseContext, KinesisBatchInfo) as JSON lines
  (AWS docs: "Retain discarded batch records for a Kinesis Data Streams event
  source"). Resharding: a shard starts when all its listed parents are finished;
  ExpiredIteratorException re-positions AFTER_SEQUENCE_NUMBER of the last record read;
  throttling and transient errors back off.

Where it knowingly differs from AWS
  * An init error (POST init/error before the environment's first /next) prints the
    error and exits with status 3, as does a function that exits before its first
    /next three times in a row; AWS would keep retrying the init. Locally, failing
    fast is more useful.
  * A retried batch is the rest of the failed batch (AWS re-reads from the checkpoint
    and may top the batch up to BatchSize). Reading a shard pauses while its batch is
    in flight.
  * Retry counting: each whole-batch failure counts one retry of that batch unless it
    was bisected; a partial response counts one retry of the remainder unless bisect is
    on and the reported record is not the first (then it is a split, which does not
    count). A batch is discarded once its failures exceed --maximum-retry-attempts.
  * A top-level JSON response that is neither an object nor null fails the batch
    (strict, to surface bugs). --maximum-record-age accepts any value >= 1 (AWS: 60 to
    604800). Record age and IteratorAge compare this machine's clock with the
    records' ApproximateArrivalTimestamp.
  * Shards listed at start use --starting-position (one that must wait for its parents
    starts at the timestamp, or at the mapping's start time for LATEST); shards that
    appear later start at TRIM_HORIZON.
  * Not implemented: ParallelizationFactor, tumbling windows, event filtering,
    enhanced fan-out, SQS/SNS/S3 destinations (a file instead), the Extensions,
    Telemetry and response-streaming APIs, memory limits (only the variable is set).
  * SIGTERM/SIGINT: stop reading, let in-flight invocations finish (up to --timeout),
    stop the children (SIGTERM, then SIGKILL after 2 s), exit 0; a second signal
    exits at once with 130. Queued, not yet started batches are not delivered.

Exit status: 0 stopped (signal or --stop-when-idle), 1 start-up error or internal
error, 2 usage, 3 the function could not initialise.
"""

import argparse
import base64
import collections
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

MAX_PAYLOAD = 6 * 1024 * 1024          # synchronous invocation request and response limit
TIMEOUT_GRACE = 1.0                    # seconds past the deadline before the child is killed
INIT_FAILURES_FATAL = 3                # exits before the first /next, in a row, that end the run
MIN_POLL_INTERVAL = 0.2                # 5 GetRecords calls per second per shard
IDLE_POLL_INTERVAL = 1.0               # an idle shard is polled about once a second
API = "/2018-06-01/runtime"
THROTTLES = {"ProvisionedThroughputExceededException", "LimitExceededException",
             "KMSThrottlingException", "ThrottlingException"}


def log(msg):
    sys.stderr.write(f"esm: {msg}\n")
    sys.stderr.flush()


def short(seq):
    return "-" if seq is None else ("…" + seq[-8:] if len(seq) > 8 else seq)


def iso_ms(t):
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def backoff(n, base=0.2, cap=5.0):
    """Exponential backoff with jitter: n-th consecutive failure (n >= 1)."""
    c = min(cap, base * 2 ** max(0, n - 1))
    return random.uniform(c / 2, c)


# ---------------------------------------------------------------- invocations

class Invocation:
    def __init__(self, payload, shard_id, n):
        self.id = str(uuid.uuid4())
        self.payload = payload
        self.shard_id = shard_id
        self.n = n
        self.state = "queued"          # queued, running, done
        self.kind = None               # response, error, crash, timeout, too_large, cancelled
        self.body = b""
        self.detail = ""
        self.env = None
        self.deadline = None           # epoch seconds
        self.deadline_mono = None
        self.started = None
        self.done = threading.Event()


class Dispatcher:
    """Batches waiting for a free execution environment, and the running ones by id."""

    def __init__(self, app):
        self.app = app
        self.queue = collections.deque()
        self.by_id = {}

    def submit(self, inv):
        with self.app.cond:
            if self.app.stopping.is_set():
                inv.state, inv.kind = "done", "cancelled"
                inv.done.set()
                return
            self.queue.append(inv)
            self.by_id[inv.id] = inv
            self.app.cond.notify_all()

    def take(self, env, gen):
        """Block until an invocation is assigned to env (child generation gen), or None."""
        app = self.app
        with app.cond:
            while True:
                if env.generation != gen or app.closing or app.fatal_code is not None:
                    return None
                if self.queue:
                    inv = self.queue.popleft()
                    inv.state, inv.env = "running", env
                    inv.started = time.monotonic()
                    inv.deadline = time.time() + app.opts.timeout
                    inv.deadline_mono = inv.started + app.opts.timeout
                    env.current = inv
                    return inv
                app.cond.wait(0.25)

    def requeue(self, inv, env):
        with self.app.cond:
            if inv.state == "running" and env.current is inv:
                env.current = None
                inv.state, inv.env = "queued", None
                self.queue.appendleft(inv)
                self.app.cond.notify_all()

    def finish(self, inv, kind, body=b"", detail=""):
        with self.app.cond:
            if inv.state == "done":
                return False
            inv.state, inv.kind, inv.body, inv.detail = "done", kind, body, detail
            if inv.env is not None and inv.env.current is inv:
                inv.env.current = None
            self.by_id.pop(inv.id, None)
            if inv.env is not None:
                ids = self.app.finished_ids
                ids[inv.id] = True
                while len(ids) > 1000:
                    ids.popitem(last=False)
            inv.done.set()
            self.app.cond.notify_all()
            return True

    def cancel_queued(self):
        with self.app.cond:
            pending = list(self.queue)
            self.queue.clear()
        for inv in pending:
            self.finish(inv, "cancelled")


# ---------------------------------------------------------------- Runtime API

class RuntimeServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        if self.env.app.opts.verbose >= 2:
            super().handle_error(request, client_address)


class RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "esm-runtime-api/1"

    def log_message(self, fmt, *args):
        if self.server.env.app.opts.verbose >= 3:
            log(f"env {self.server.env.index}: " + fmt % args)

    def reply(self, status, obj, headers=None):
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def fail(self, status, etype, msg):
        self.reply(status, {"errorMessage": msg, "errorType": etype})

    def read_body(self):
        """(body, too_large, trailers); handles Content-Length and chunked bodies."""
        trailers = {}
        kept, total, too_large = [], 0, False
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                        k, _, v = t.decode("latin-1").partition(":")
                        trailers[k.strip().lower()] = v.strip()
                    break
                chunk = self.rfile.read(size)
                self.rfile.readline()
                total += size
                if total > MAX_PAYLOAD:
                    too_large = True
                else:
                    kept.append(chunk)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            too_large = left > MAX_PAYLOAD
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
                if not too_large:
                    kept.append(chunk)
        return b"".join(kept), too_large, trailers

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path != API + "/invocation/next":
            return self.fail(404, "NotFound", f"no such endpoint: GET {path}")
        env, app = self.server.env, self.server.env.app
        with app.cond:
            gen = env.generation
            env.saw_next = True
            stale = env.current
        if stale is not None:
            app.dispatcher.finish(stale, "error", b"", "the function asked for the next invocation "
                                  "without answering the current one")
        inv = app.dispatcher.take(env, gen)
        if inv is None:
            self.close_connection = True
            return
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.id,
            "Lambda-Runtime-Deadline-Ms": str(int(inv.deadline * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": app.function_arn,
            "Lambda-Runtime-Trace-Id": "Root=1-%08x-%s;Parent=%s;Sampled=0" % (
                int(time.time()), uuid.uuid4().hex[:24], uuid.uuid4().hex[:16]),
        }
        try:
            self.reply(200, inv.payload, headers)
        except OSError:
            self.close_connection = True
            app.dispatcher.requeue(inv, env)

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        env, app = self.server.env, self.server.env.app
        body, too_large, trailers = self.read_body()
        if path == API + "/init/error":
            with app.cond:
                before_first_next = not env.saw_next
            if not before_first_next:
                return self.fail(403, "InvalidStateTransition",
                                 "init/error after the first invocation/next")
            self.reply(202, {"status": "OK"})
            app.init_error(env, body, self.headers.get("Lambda-Runtime-Function-Error-Type"))
            return
        m = re.fullmatch(re.escape(API) + r"/invocation/([^/]+)/(response|error)", path)
        if not m:
            return self.fail(404, "NotFound", f"no such endpoint: POST {path}")
        rid, what = m.group(1), m.group(2)
        with app.cond:
            inv = app.dispatcher.by_id.get(rid)
            state = inv.state if inv else None
        if inv is None:
            if rid in app.finished_ids:
                return self.fail(403, "InvalidStateTransition",
                                 f"invocation {rid} was already answered or timed out")
            return self.fail(400, "InvalidRequestID", f"unknown request id {rid}")
        if state != "running":
            return self.fail(400, "InvalidRequestID", f"invocation {rid} is not running")
        if too_large:
            app.dispatcher.finish(inv, "too_large", b"", f"{what} payload larger than 6 MB")
            return self.fail(413, "RequestEntityTooLarge",
                             f"the {what} payload exceeds {MAX_PAYLOAD} bytes")
        etype = self.headers.get("Lambda-Runtime-Function-Error-Type") or \
            trailers.get("lambda-runtime-function-error-type")
        if what == "response" and "lambda-runtime-function-error-type" in trailers:
            what = "error"
            body = trailers.get("lambda-runtime-function-error-body", "").encode()
        # Finish before answering: the runtime asks for the next invocation right after the 202.
        if what == "response":
            app.dispatcher.finish(inv, "response", body)
        else:
            app.dispatcher.finish(inv, "error", body, etype or "")
        self.reply(202, {"status": "OK"})


class Environment:
    """One execution environment: a Runtime API server and the function child process."""

    def __init__(self, app, index):
        self.app = app
        self.index = index
        self.server = RuntimeServer(("127.0.0.1", 0), RuntimeHandler)
        self.server.env = self
        self.port = self.server.server_address[1]
        self.proc = None
        self.generation = 0
        self.current = None
        self.saw_next = False
        self.starts = 0
        self.init_failures = 0
        self.log_path = None if app.opts.log_dir == "-" else \
            os.path.join(app.opts.log_dir, f"env-{index}.log")
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                         name=f"runtime-api-{index}", daemon=True).start()
        self.thread = threading.Thread(target=self.supervise, name=f"env-{index}", daemon=True)

    def spawn(self):
        app, opts = self.app, self.app.opts
        self.starts += 1
        now = time.time()
        env = dict(os.environ)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.port}",
            "AWS_LAMBDA_FUNCTION_NAME": opts.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(opts.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{opts.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d", time.gmtime(now))
            + "/[$LATEST]" + uuid.uuid4().hex,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "LAMBDA_TASK_ROOT": app.task_root,
            "_HANDLER": "bootstrap",
        })
        env.setdefault("AWS_REGION", app.region)
        env.setdefault("AWS_DEFAULT_REGION", app.region)
        out = None
        if self.log_path:
            out = open(self.log_path, "ab")
            out.write(f"=== esm: env {self.index} cold start #{self.starts} at {iso_ms(now)} ===\n"
                      .encode())
            out.flush()
        try:
            with app.cond:
                self.generation += 1
                self.saw_next = False
                self.current = None
            self.proc = subprocess.Popen(app.command, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT if out else None,
                                         start_new_session=True)
        finally:
            if out:
                out.close()
        if opts.verbose or self.starts > 1:
            log(f"env {self.index}: started function (pid {self.proc.pid}, cold start "
                f"#{self.starts}, AWS_LAMBDA_RUNTIME_API=127.0.0.1:{self.port})")

    def kill(self, sig):
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def supervise(self):
        app, opts = self.app, self.app.opts
        restarts = 0
        while not app.closing and app.fatal_code is None:
            try:
                self.spawn()
            except OSError as e:
                app.fatal(1, f"cannot start the function {app.command!r}: {e}")
                return
            started = time.monotonic()
            timed_out, rc = None, None
            while True:
                rc = self.proc.poll()
                if rc is not None or app.closing or app.fatal_code is not None:
                    break
                with app.cond:
                    inv = self.current
                if inv is not None and time.monotonic() > inv.deadline_mono + TIMEOUT_GRACE:
                    timed_out = inv
                    self.kill(signal.SIGKILL)
                    rc = self.proc.wait()
                    break
                time.sleep(0.05)
            if rc is None:          # closing or fatal: stop_children() ends the process
                return
            with app.cond:
                self.generation += 1
                inv, self.current = self.current, None
                saw_next = self.saw_next
                app.cond.notify_all()
            if timed_out is not None:
                log(f"env {self.index}: invocation {timed_out.id} timed out after "
                    f"{opts.timeout:g}s; killed the function")
                app.dispatcher.finish(timed_out, "timeout", b"",
                                      f"Task timed out after {opts.timeout:.2f} seconds")
            elif inv is not None:
                app.dispatcher.finish(inv, "crash", b"",
                                      f"Runtime exited with status {rc} during the invocation")
            if app.closing or app.fatal_code is not None:
                return
            where = f"; log: {self.log_path}" if self.log_path else ""
            if not saw_next and timed_out is None:
                self.init_failures += 1
                if self.init_failures >= INIT_FAILURES_FATAL:
                    app.fatal(3, f"the function exited (status {rc}) before asking for its first "
                              f"invocation, {self.init_failures} times in a row: it cannot "
                              f"initialise{where}" + app.log_tail(self))
                    return
            else:
                self.init_failures = 0
            restarts = 1 if time.monotonic() - started > 10 else restarts + 1
            delay = backoff(restarts, base=0.25)
            if timed_out is None:
                log(f"env {self.index}: function exited with status {rc}"
                    f"{' during invocation ' + inv.id if inv else ''}; cold start in "
                    f"{delay:.2f}s{where}")
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not app.closing and app.fatal_code is None:
                time.sleep(0.05)


# ---------------------------------------------------------------- the mapping

class Record:
    __slots__ = ("seq", "arrival", "json", "size")

    def __init__(self, app, shard_id, r):
        self.seq = r["SequenceNumber"]
        ts = r.get("ApproximateArrivalTimestamp")
        self.arrival = ts.timestamp() if ts is not None else time.time()
        self.json = json.dumps({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": r["PartitionKey"],
                "sequenceNumber": self.seq,
                "data": base64.b64encode(r["Data"]).decode("ascii"),
                "approximateArrivalTimestamp": round(self.arrival, 3),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{self.seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": app.role_arn,
            "awsRegion": app.region,
            "eventSourceARN": app.stream_arn,
        }, separators=(",", ":"))
        self.size = len(self.json)


class Batch:
    def __init__(self, records, attempts=0, invokes=0):
        self.records = records
        self.attempts = attempts      # failed attempts that count against the retry quota
        self.invokes = invokes        # invocations that carried these records
        self.retry_due = attempts > 0
        self.request_id = None
        self.function_error = None
        self.last_error = None

    def child(self, records, count):
        b = Batch(records, self.attempts + (1 if count else 0), self.invokes)
        b.retry_due = True
        b.request_id, b.function_error, b.last_error = \
            self.request_id, self.function_error, self.last_error
        return b


def classify(body, records):
    """('ok', None) | ('partial', index of the lowest reported record) | ('malformed', why)."""
    text = body.strip()
    if not text:
        return "ok", None
    try:
        obj = json.loads(text)
    except ValueError:
        return "malformed", "the response is not JSON: " + text[:200].decode("utf-8", "replace")
    if obj is None:
        return "ok", None
    if not isinstance(obj, dict):
        return "malformed", f"the response is JSON but not an object: {text[:200]!r}"
    failures = obj.get("batchItemFailures")
    if failures is None or failures == []:
        return "ok", None
    if not isinstance(failures, list):
        return "malformed", "batchItemFailures is not a list"
    index = {r.seq: i for i, r in enumerate(records)}
    lowest = None
    for item in failures:
        if not isinstance(item, dict) or "itemIdentifier" not in item:
            return "malformed", f"a batchItemFailures item without itemIdentifier: {item!r}"
        ident = item["itemIdentifier"]
        if ident is None or ident == "":
            return "malformed", "a null or empty itemIdentifier"
        if not isinstance(ident, str) or ident not in index:
            return "malformed", f"itemIdentifier {ident!r} is not a sequence number of this batch"
        lowest = index[ident] if lowest is None else min(lowest, index[ident])
    return "partial", lowest


class ShardReader(threading.Thread):
    def __init__(self, app, shard_id, position, timestamp=None):
        super().__init__(name=f"shard-{shard_id}", daemon=True)
        self.app = app
        self.shard_id = shard_id
        self.position = position
        self.timestamp = timestamp
        self.iterator = None
        self.buffer = collections.deque()
        self.buffer_since = None
        self.pending = collections.deque()
        self.in_flight = False
        self.last_read_seq = None
        self.done_seq = None
        self.iterator_age_ms = None
        self.millis_behind = None
        self.finished = False
        self.ready = False
        self.polls = 0
        self.last_activity = time.monotonic()
        self.next_poll = 0.0
        self.errors = 0
        name = shard_id.rsplit("-", 1)[-1]
        self.label = str(int(name)) if name.isdigit() else shard_id

    # -- Kinesis
    def sleep(self, seconds):
        """Sleep unless the mapping is stopping; True when it is."""
        return self.app.stopping.wait(max(0.0, seconds))

    def transient(self, what, e):
        self.errors += 1
        code = e.response["Error"]["Code"] if isinstance(e, ClientError) else type(e).__name__
        delay = backoff(self.errors)
        if code in THROTTLES:
            self.app.count("throttles")
            if self.app.opts.verbose:
                log(f"{self.shard_id}: {what} throttled ({code}); backing off {delay:.2f}s")
        else:
            log(f"{self.shard_id}: {what} failed ({code}: {e}); retrying in {delay:.2f}s")
        self.sleep(delay)

    def get_iterator(self, kind, **extra):
        while not self.app.stopping.is_set():
            try:
                r = self.app.kinesis.get_shard_iterator(StreamName=self.app.opts.stream,
                                                        ShardId=self.shard_id,
                                                        ShardIteratorType=kind, **extra)
                self.errors = 0
                return r.get("ShardIterator")
            except ClientError as e:
                if e.response["Error"]["Code"] == "ResourceNotFoundException":
                    log(f"{self.shard_id}: shard not found ({e}); treating it as finished")
                    return None
                self.transient("GetShardIterator", e)
            except BotoCoreError as e:
                self.transient("GetShardIterator", e)
        return None

    def initial_iterator(self):
        if self.position == "AT_TIMESTAMP":
            return self.get_iterator("AT_TIMESTAMP", Timestamp=self.timestamp)
        return self.get_iterator(self.position)

    def poll(self):
        limit = min(10000, max(self.app.opts.batch_size, 500))
        now = time.monotonic()
        try:
            r = self.app.kinesis.get_records(ShardIterator=self.iterator, Limit=limit)
        except ClientError as e:
            code = e.response["Error"]["Code"]
            if code == "ExpiredIteratorException":
                log(f"{self.shard_id}: iterator expired; re-positioning after {short(self.last_read_seq)}")
                if self.last_read_seq is not None:
                    self.iterator = self.get_iterator("AFTER_SEQUENCE_NUMBER",
                                                      StartingSequenceNumber=self.last_read_seq)
                else:
                    self.iterator = self.initial_iterator()
                return
            if code == "ResourceNotFoundException":
                log(f"{self.shard_id}: shard not found ({e}); treating it as finished")
                self.iterator = None
                return
            self.transient("GetRecords", e)
            return
        except BotoCoreError as e:
            self.transient("GetRecords", e)
            return
        self.errors = 0
        self.polls += 1
        self.app.count("get_records")
        self.iterator = r.get("NextShardIterator")
        self.millis_behind = r.get("MillisBehindLatest", self.millis_behind)
        records = r.get("Records", [])
        for raw in records:
            rec = Record(self.app, self.shard_id, raw)
            if rec.size + 14 > MAX_PAYLOAD:
                log(f"{self.shard_id}: record {rec.seq} alone exceeds the 6 MB payload limit")
            self.buffer.append(rec)
            self.last_read_seq = rec.seq
        if records:
            self.last_activity = time.monotonic()
            if self.buffer_since is None:
                self.buffer_since = time.monotonic()
        idle = not records and not self.millis_behind
        self.next_poll = now + (IDLE_POLL_INTERVAL if idle else MIN_POLL_INTERVAL)

    # -- batches
    def batch_ready(self):
        if not self.buffer:
            return False
        opts = self.app.opts
        if len(self.buffer) >= opts.batch_size or self.iterator is None:
            return True
        if sum(r.size + 1 for r in self.buffer) + 13 >= MAX_PAYLOAD:
            return True
        return time.monotonic() >= self.buffer_since + opts.batching_window

    def take_batch(self):
        records, size = [], 13
        while self.buffer and len(records) < self.app.opts.batch_size:
            r = self.buffer[0]
            if records and size + r.size + 1 > MAX_PAYLOAD:
                break
            records.append(self.buffer.popleft())
            size += r.size + 1
        self.buffer_since = time.monotonic() if self.buffer else None
        return Batch(records)

    def run(self):
        try:
            self.main()
        except Exception:
            self.app.fatal(1, f"internal error in the reader of {self.shard_id}:\n"
                           + traceback.format_exc())

    def main(self):
        app = self.app
        self.iterator = self.initial_iterator()
        self.ready = True
        if app.opts.verbose:
            pos = self.position + (f" {self.timestamp.isoformat()}" if self.timestamp else "")
            log(f"{self.shard_id}: reading from {pos}")
        app.write_status()
        while not app.stopping.is_set():
            if self.pending:
                self.process()
                continue
            if self.batch_ready():
                self.pending.append(self.take_batch())
                continue
            if self.iterator is None:
                if self.buffer:
                    continue
                break
            now = time.monotonic()
            wake = self.next_poll
            if self.buffer:
                wake = min(wake, self.buffer_since + app.opts.batching_window)
            if wake > now:
                self.sleep(min(wake - now, 0.5))
                continue
            self.poll()
        if self.iterator is None and not self.pending and not self.buffer \
                and not app.stopping.is_set():
            with app.cond:
                self.finished = True
                app.shards_changed.set()
            log(f"{self.shard_id}: shard finished (last record done: {short(self.done_seq)})")
            app.write_status()

    def process(self):
        app, opts = self.app, self.app.opts
        batch = self.pending[0]
        if batch.retry_due:
            if self.sleep(backoff(batch.attempts or 1)):
                return
        if opts.maximum_record_age >= 0:
            limit = time.time() - opts.maximum_record_age
            k = 0
            while k < len(batch.records) and batch.records[k].arrival < limit:
                k += 1
            if k:
                self.discard(batch, batch.records[:k], "RecordAgeExceeded")
                batch.records = batch.records[k:]
                if not batch.records:
                    self.pending.popleft()
                    return
        records = batch.records
        payload = ('{"Records":[' + ",".join(r.json for r in records) + "]}").encode()
        inv = Invocation(payload, self.shard_id, len(records))
        batch.invokes += 1
        batch.request_id = inv.id
        self.in_flight = True
        t0 = time.monotonic()
        app.dispatcher.submit(inv)
        inv.done.wait()
        self.in_flight = False
        if inv.kind == "cancelled":
            return
        took = (time.monotonic() - t0) * 1000
        env = f"env {inv.env.index}" if inv.env else "env ?"
        what = f"{self.shard_id} [{len(records)} records {short(records[0].seq)}..{short(records[-1].seq)}]"
        if inv.kind == "response":
            verdict, arg = classify(inv.body, records)
        else:
            verdict = "failed"
            if inv.kind == "error":
                arg = "function error"
                try:
                    e = json.loads(inv.body or b"{}")
                    etype = e.get("errorType") or inv.detail
                    arg += f" {etype}: {e.get('errorMessage')}" if e.get("errorMessage") else f": {etype}"
                except (ValueError, AttributeError):
                    arg += f" {inv.detail}: {inv.body[:200]!r}"
            else:
                arg = inv.detail
        if verdict == "ok":
            app.count("invocations")
            self.pending.popleft()
            self.done(records)
            if opts.verbose:
                log(f"{what} {env}: ok in {took:.0f}ms")
            return
        if verdict == "partial":
            app.count("invocations", "partial_failures")
            if arg:
                self.done(records[:arg])
            rest = records[arg:]
            split = opts.bisect_batch_on_function_error and arg > 0
            nb = batch.child(rest, count=not split)
            nb.function_error = None
            nb.last_error = f"item failure reported at {rest[0].seq}"
            if opts.verbose:
                log(f"{what} {env}: partial failure at {short(rest[0].seq)}: {arg} done, "
                    f"retrying {len(rest)}")
            self.pending.popleft()
            self.retry_or_discard(nb, counted=not split)
            return
        # whole-batch failure: malformed response, /error, crash, timeout, too large
        app.count("invocations", "failed_invocations")
        batch.function_error = "Unhandled"
        batch.last_error = arg
        self.pending.popleft()
        if opts.bisect_batch_on_function_error and len(records) > 1:
            half = (len(records) + 1) // 2
            a, b = batch.child(records[:half], False), batch.child(records[half:], False)
            self.pending.appendleft(b)
            self.pending.appendleft(a)
            log(f"{what} {env}: {arg}; bisecting into {len(a.records)} + {len(b.records)}")
            return
        nb = batch.child(records, count=True)
        log(f"{what} {env}: {arg}")
        self.retry_or_discard(nb, counted=True)

    def retry_or_discard(self, nb, counted):
        opts = self.app.opts
        if counted and opts.maximum_retry_attempts >= 0 and nb.attempts > opts.maximum_retry_attempts:
            self.discard(nb, nb.records, "RetryAttemptsExhausted")
            return
        if counted:
            self.app.count("retries")
        self.pending.appendleft(nb)
        self.app.write_status()  # the failure counts, even when nothing was done

    def done(self, records):
        now = time.time()
        with self.app.cond:
            self.done_seq = records[-1].seq
            self.iterator_age_ms = max(0, int((now - records[-1].arrival) * 1000))
            self.last_activity = time.monotonic()
            self.app.stats["records_delivered"] += len(records)
        self.app.write_status()

    def discard(self, batch, records, condition):
        app = self.app
        now = time.time()
        rec = {
            "requestContext": {
                "requestId": batch.request_id or str(uuid.uuid4()),
                "functionArn": app.function_arn,
                "condition": condition,
                "approximateInvokeCount": batch.invokes,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": batch.function_error,
            },
            "version": "1.0",
            "timestamp": iso_ms(now),
            "KinesisBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": records[0].seq,
                "endSequenceNumber": records[-1].seq,
                "approximateArrivalOfFirstRecord": iso_ms(records[0].arrival),
                "approximateArrivalOfLastRecord": iso_ms(records[-1].arrival),
                "batchSize": len(records),
                "streamArn": app.stream_arn,
            },
        }
        line = json.dumps(rec, separators=(",", ":"))
        log(f"{self.shard_id}: discarding {len(records)} records {short(records[0].seq)}.."
            f"{short(records[-1].seq)} ({condition} after {batch.invokes} invocations"
            f"{'; last error: ' + batch.last_error if batch.last_error else ''})")
        log(f"on-failure record: {line}")
        with app.cond:
            if app.opts.on_failure:
                with open(app.opts.on_failure, "a") as f:
                    f.write(line + "\n")
            self.done_seq = records[-1].seq
            self.iterator_age_ms = max(0, int((now - records[-1].arrival) * 1000))
            self.last_activity = time.monotonic()
            app.stats["records_discarded"] += len(records)
        app.write_status()

    def is_idle(self, quiet_for):
        if self.finished:
            return True
        if not self.ready or self.in_flight or self.pending or self.buffer or self.polls == 0:
            return False
        return time.monotonic() - self.last_activity >= quiet_for


# ---------------------------------------------------------------- the application

class App:
    def __init__(self, opts, command):
        self.opts = opts
        self.command = command
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.status_lock = threading.Lock()
        self.dispatcher = Dispatcher(self)
        self.stopping = threading.Event()       # readers stop reading
        self.closing = False                    # environments stop
        self.wake = threading.Event()
        self.shards_changed = threading.Event()
        self.fatal_code = None
        self.fatal_msg = None
        self.finished_ids = collections.OrderedDict()
        self.readers = {}
        self.stats = collections.Counter({k: 0 for k in (
            "invocations", "failed_invocations", "partial_failures", "retries",
            "records_delivered", "records_discarded", "get_records", "throttles")})
        self.started_at = time.time()
        self.envs = []
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    def count(self, *keys):
        with self.lock:
            for k in keys:
                self.stats[k] += 1

    def fatal(self, code, msg):
        with self.cond:
            if self.fatal_code is None:
                self.fatal_code, self.fatal_msg = code, msg
            self.cond.notify_all()
        self.stopping.set()
        self.wake.set()

    def init_error(self, env, body, etype):
        try:
            e = json.loads(body)
            text = "\n".join(f"  {k}: {v if isinstance(v, str) else json.dumps(v)}"
                             for k, v in e.items()) if isinstance(e, dict) else "  " + body.decode()
        except ValueError:
            text = "  " + body.decode("utf-8", "replace")
        where = f" (function log: {env.log_path})" if env.log_path else ""
        self.fatal(3, f"the function reported an initialization error in env {env.index}, before "
                   f"its first invocation{where}:\n"
                   + (f"  Lambda-Runtime-Function-Error-Type: {etype}\n" if etype else "") + text
                   + "\nesm: exiting with status 3 (AWS would retry the init at the next "
                     "invocation; locally the mapping fails fast)")

    def log_tail(self, env, n=15):
        if not env.log_path:
            return ""
        try:
            with open(env.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 8192))
                lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n  last lines of the log:\n" + "\n".join("    " + l for l in lines)

    # -- start-up
    def connect(self):
        opts = self.opts
        if not self.region:
            sys.exit("esm: error: no AWS region: set AWS_REGION (eval \"$(deploy/local/emulators.sh start)\" does)")
        cfg = botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"},
                                     connect_timeout=3, read_timeout=20, max_pool_connections=64)
        self.kinesis = boto3.client("kinesis", region_name=self.region, config=cfg)
        endpoint = self.kinesis.meta.endpoint_url
        try:
            s = self.kinesis.describe_stream_summary(StreamName=opts.stream)["StreamDescriptionSummary"]
        except ClientError as e:
            code = e.response["Error"]["Code"]
            hint = ("check the name and AWS_REGION; locally, create it with "
                    "`deploy/local/resources.py create`") if code == "ResourceNotFoundException" else \
                "check the credentials and the endpoint"
            sys.exit(f"esm: error: kinesis stream '{opts.stream}' (region {self.region}, endpoint "
                     f"{endpoint}): {code}: {e.response['Error'].get('Message', '')}\n  hint: {hint}")
        except BotoCoreError as e:
            sys.exit(f"esm: error: kinesis stream '{opts.stream}' (region {self.region}, endpoint "
                     f"{endpoint}): {e}\n  hint: are the emulators running? "
                     "eval \"$(deploy/local/emulators.sh start)\"")
        self.stream_arn = s["StreamARN"]
        parts = self.stream_arn.split(":")
        account = parts[4] if len(parts) > 5 and parts[4] else "000000000000"
        self.function_arn = f"arn:aws:lambda:{self.region}:{account}:function:{opts.function_name}"
        self.role_arn = f"arn:aws:iam::{account}:role/{opts.function_name}"
        return s

    def list_shards(self):
        shards, token = [], None
        while True:
            try:
                r = self.kinesis.list_shards(NextToken=token) if token else \
                    self.kinesis.list_shards(StreamName=self.opts.stream)
            except (ClientError, BotoCoreError) as e:
                log(f"ListShards failed ({e}); will retry at the next shard sync")
                return None
            shards.extend(r.get("Shards", []))
            token = r.get("NextToken")
            if not token:
                return shards

    def sync_shards(self, initial=False):
        shards = self.list_shards()
        if shards is None:
            return
        listed = {s["ShardId"]: s for s in shards}
        for sid in sorted(listed):
            if sid in self.readers:
                continue
            s = listed[sid]
            if initial:
                self.initial_ids.add(sid)
            parents = [p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p]
            blocked = [p for p in parents if p in listed
                       and not (p in self.readers and self.readers[p].finished)]
            if blocked:
                continue
            if sid in self.initial_ids:
                pos, ts = self.opts.starting_position, self.opts.timestamp
                if not initial and pos == "LATEST":
                    pos, ts = "AT_TIMESTAMP", datetime.datetime.fromtimestamp(
                        self.started_at, datetime.timezone.utc)
            else:
                pos, ts = "TRIM_HORIZON", None
            reader = ShardReader(self, sid, pos, ts)
            with self.lock:
                self.readers[sid] = reader
            if not initial:
                log(f"{sid}: starting (parents {', '.join(parents) or 'none'}) at {pos}")
            reader.start()

    # -- observability
    def write_status(self):
        path = self.opts.status_file
        if not path:
            return
        with self.lock:
            doc = {
                "shards": {sid: {
                    "done_sequence": r.done_seq,
                    "iterator_age_ms": r.iterator_age_ms,
                    "millis_behind_latest": r.millis_behind,
                    "finished": r.finished,
                } for sid, r in sorted(self.readers.items()) if r.ready},
                "invocations": self.stats["invocations"],
                "failed_invocations": self.stats["failed_invocations"],
                "records_delivered": self.stats["records_delivered"],
                "partial_failures": self.stats["partial_failures"],
                "retries": self.stats["retries"],
                "records_discarded": self.stats["records_discarded"],
            }
        with self.status_lock:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            os.replace(tmp, path)

    def progress(self):
        with self.lock:
            st = self.stats
            parts = []
            for sid, r in sorted(self.readers.items()):
                if r.finished:
                    parts.append(f"{r.label}: finished")
                    continue
                age = "-" if r.iterator_age_ms is None else f"{r.iterator_age_ms}ms"
                behind = "-" if r.millis_behind is None else f"{r.millis_behind}ms"
                parts.append(f"{r.label}: {short(r.done_seq)} age {age} behind {behind}")
            line = (f"{st['invocations']} invocations ({st['failed_invocations']} failed, "
                    f"{st['partial_failures']} partial), {st['retries']} retries, "
                    f"{st['records_delivered']} records done, {st['records_discarded']} discarded")
        log(time.strftime("%H:%M:%S ") + line + (" | " + " | ".join(parts) if parts else ""))

    def idle(self):
        quiet = self.opts.stop_when_idle
        with self.lock:
            if self.shards_changed.is_set() or not self.readers:
                return False
            if self.dispatcher.queue or self.dispatcher.by_id:
                return False
            if not all(r.is_idle(quiet) for r in self.readers.values()):
                return False
            last = max(r.last_activity for r in self.readers.values())
        return time.monotonic() - last >= quiet

    # -- run
    def run(self):
        opts = self.opts
        summary = self.connect()
        if opts.log_dir is None:
            opts.log_dir = tempfile.mkdtemp(prefix="esm-logs-")
        elif opts.log_dir != "-":
            os.makedirs(opts.log_dir, exist_ok=True)
        exe = shutil.which(self.command[0])
        self.task_root = os.path.dirname(os.path.abspath(exe)) if exe else os.getcwd()
        self.envs = [Environment(self, i) for i in range(opts.concurrency)]
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)
        pos = opts.starting_position + (f" {opts.timestamp.isoformat()}" if opts.timestamp else "")
        logs = "inherited" if opts.log_dir == "-" else opts.log_dir
        log(f"stream '{opts.stream}' ({summary.get('OpenShardCount', '?')} open shards, {self.stream_arn}) "
            f"from {pos}, batch size {opts.batch_size}, window {opts.batching_window:g}s -> function "
            f"'{opts.function_name}': {opts.concurrency} env(s), Runtime API "
            + ", ".join(f"127.0.0.1:{e.port}" for e in self.envs)
            + f", timeout {opts.timeout:g}s; function logs: {logs}")
        for e in self.envs:
            e.thread.start()
        self.initial_ids = set()
        self.sync_shards(initial=True)
        self.write_status()
        next_sync = time.monotonic() + opts.shard_sync_interval
        next_progress = time.monotonic() + opts.progress_interval if opts.progress_interval > 0 else None
        reason = None
        while True:
            if self.fatal_code is not None:
                break
            if self.stopping.is_set():
                reason = "signal"
                break
            now = time.monotonic()
            if self.shards_changed.is_set() or now >= next_sync:
                self.shards_changed.clear()
                self.sync_shards()
                next_sync = now + opts.shard_sync_interval
            if next_progress is not None and now >= next_progress:
                self.progress()
                next_progress = now + opts.progress_interval
            if opts.stop_when_idle is not None and self.idle():
                log(f"idle for {opts.stop_when_idle:g}s with nothing in flight; stopping (--stop-when-idle)")
                reason = "idle"
                break
            self.wake.wait(0.1)
            self.wake.clear()
        return self.shutdown(reason)

    def on_signal(self, signum, frame):
        if self.stopping.is_set():
            log("second signal: stopping at once")
            for e in self.envs:
                e.kill(signal.SIGKILL)
            os._exit(130)
        log(f"{signal.Signals(signum).name}: stopping (finishing in-flight invocations)")
        self.stopping.set()
        self.wake.set()

    def shutdown(self, reason):
        self.stopping.set()
        self.dispatcher.cancel_queued()
        if self.fatal_code is None:
            limit = time.monotonic() + self.opts.timeout + TIMEOUT_GRACE + 3
            for r in list(self.readers.values()):
                r.join(max(0.0, limit - time.monotonic()))
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        for e in self.envs:
            e.kill(signal.SIGTERM)
        limit = time.monotonic() + 2
        for e in self.envs:
            while e.proc is not None and e.proc.poll() is None and time.monotonic() < limit:
                time.sleep(0.05)
            e.kill(signal.SIGKILL)
            if e.proc is not None:
                try:
                    e.proc.wait(2)
                except subprocess.TimeoutExpired:
                    pass
        for e in self.envs:
            e.server.shutdown()
            e.server.server_close()
        if self.fatal_code is not None:
            log(f"error: {self.fatal_msg}")
            try:
                self.write_status()
            except OSError:
                pass
            return self.fatal_code
        self.write_status()
        self.progress()
        log("stopped")
        return 0


# ---------------------------------------------------------------- command line

def parse_timestamp(text):
    try:
        return datetime.datetime.fromtimestamp(float(text), datetime.timezone.utc)
    except ValueError:
        pass
    try:
        d = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not RFC 3339 or epoch seconds: {text!r}")
    return d if d.tzinfo else d.replace(tzinfo=datetime.timezone.utc)


def build_parser():
    p = argparse.ArgumentParser(
        prog="esm.py",
        usage="esm.py --stream NAME [options] -- COMMAND [ARGS...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A local stand-in for AWS Lambda's Kinesis event source mapping and the Lambda "
                    "service: reads the stream and invokes COMMAND (a Lambda function using the "
                    "Runtime API) with Kinesis events. Test support and demo tooling; see the "
                    "docstring at the top of this file for what differs from AWS.",
        epilog="Endpoints, region and credentials come from the standard AWS variables "
               "(eval \"$(deploy/local/emulators.sh start)\").\n"
               "Exit status: 0 stopped, 1 start-up or internal error, 2 usage, 3 the function "
               "could not initialise (init/error, or exited before its first /next 3 times).\n"
               "Status file: {\"shards\": {ID: {\"done_sequence\", \"iterator_age_ms\", "
               "\"millis_behind_latest\", \"finished\"}}, \"invocations\", \"failed_invocations\", "
               "\"records_delivered\", \"partial_failures\", \"retries\", \"records_discarded\"}; "
               "a shard appears once its first iterator is obtained.")
    a = p.add_argument
    a("--stream", required=True, metavar="NAME", help="Kinesis stream to read (required)")
    m = p.add_argument_group("the mapping")
    m.add_argument("--starting-position", default="TRIM_HORIZON",
                   choices=["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"],
                   help="where shards listed at start begin (default TRIM_HORIZON); shards created "
                        "later begin at TRIM_HORIZON")
    m.add_argument("--starting-position-timestamp", type=parse_timestamp, metavar="TIME",
                   dest="timestamp", help="for AT_TIMESTAMP: RFC 3339 (2024-05-01T12:00:00Z) or "
                                          "epoch seconds")
    m.add_argument("--batch-size", type=int, default=100, metavar="N",
                   help="most records per invocation, 1..10000 (default 100); also at most 6 MB of "
                        "event JSON")
    m.add_argument("--batching-window", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long to fill a batch, 0..300 (default 0)")
    m.add_argument("--maximum-retry-attempts", type=int, default=-1, metavar="N",
                   help="discard a batch after N failed retries, -1..10000 (default -1: retry until "
                        "success)")
    m.add_argument("--maximum-record-age", type=float, default=-1, metavar="SECONDS",
                   help="discard records older than this before invoking (default -1: no limit)")
    m.add_argument("--bisect-batch-on-function-error", action="store_true",
                   help="split a batch that fails as a whole in two and process the halves in "
                        "order (a split does not count as a retry)")
    m.add_argument("--on-failure", metavar="FILE",
                   help="append an on-failure record (JSON line, Lambda's Kinesis invocation record "
                        "shape) per discarded batch; always printed to stderr too")
    m.add_argument("--shard-sync-interval", type=float, default=10.0, metavar="SECONDS",
                   help="re-list shards this often (default 10); also when a shard finishes")
    f = p.add_argument_group("the function")
    f.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="execution environments (function processes), each with its own Runtime "
                        "API port (default 1)")
    f.add_argument("--function-name", default="stream-worker-lambda", metavar="NAME",
                   help="AWS_LAMBDA_FUNCTION_NAME and the ARNs (default stream-worker-lambda)")
    f.add_argument("--memory", type=int, default=128, metavar="MB",
                   help="AWS_LAMBDA_FUNCTION_MEMORY_SIZE, not enforced (default 128)")
    f.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="invocation timeout: Lambda-Runtime-Deadline-Ms = now + this; unanswered "
                        "1 s past it, the function is killed and restarted (default 60)")
    f.add_argument("--log-dir", metavar="DIR",
                   help="function stdout/stderr go to DIR/env-N.log (default: a new temp dir, "
                        "named at start-up); '-' inherits this process's")
    o = p.add_argument_group("observability and stopping")
    o.add_argument("-v", "--verbose", action="count", default=0,
                   help="a line per batch result (-vv: Runtime API errors, -vvv: every request)")
    o.add_argument("--progress-interval", type=float, default=5.0, metavar="SECONDS",
                   help="progress line every this many seconds (default 5; 0: none)")
    o.add_argument("--status-file", metavar="FILE",
                   help="JSON status, rewritten atomically after each batch (format below)")
    o.add_argument("--stop-when-idle", type=float, metavar="SECONDS",
                   help="exit 0 once every open shard returned nothing new for this long and "
                        "nothing is in flight")
    return p


def main(argv):
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    else:
        command = []
    parser = build_parser()
    opts = parser.parse_args(argv)
    if not command:
        parser.error("give the function command after --, e.g. -- target/debug/stream-worker-lambda")
    if not 1 <= opts.batch_size <= 10000:
        parser.error("--batch-size must be 1..10000")
    if not 0 <= opts.batching_window <= 300:
        parser.error("--batching-window must be 0..300")
    if not -1 <= opts.maximum_retry_attempts <= 10000:
        parser.error("--maximum-retry-attempts must be -1..10000")
    if opts.maximum_record_age != -1 and opts.maximum_record_age < 1:
        parser.error("--maximum-record-age must be -1 or at least 1")
    if opts.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if not 0 < opts.timeout <= 900:
        parser.error("--timeout must be in (0, 900]")
    if opts.shard_sync_interval <= 0:
        parser.error("--shard-sync-interval must be positive")
    if (opts.starting_position == "AT_TIMESTAMP") != (opts.timestamp is not None):
        parser.error("--starting-position-timestamp goes with --starting-position AT_TIMESTAMP")
    if not (shutil.which(command[0]) or (os.sep in command[0] and os.access(command[0], os.X_OK))):
        parser.error(f"function command not found or not executable: {command[0]}")
    return App(opts, command).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
