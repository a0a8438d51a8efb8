#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for the local AWS emulators (moto, kinesis-local).

Test support and a tool for experiments, not the product. It listens on 127.0.0.1,
forwards every request to one upstream emulator and, on the way, plays the parts of
the real services that the emulators leave out: DynamoDB's provisioned write
capacity (throttling, UnprocessedItems) and the failures a network and a service
produce (500s, slow answers, reset connections, Kinesis throttling, expired
iterators). Point a client's endpoint at it:

    faults.py --upstream "$AWS_ENDPOINT_URL_DYNAMODB" --wcu 100 --print-port
    AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:<port> stream-worker ...

Faults can be changed while it runs (GET/POST /__faults, see --help), so a test can
start it once and steer it. Python 3.11 standard library only; asyncio, one thread.

What it implements
  HTTP/1.1 with keep-alive towards the client; every answer carries a correct
  Content-Length. Requests are forwarded as they came (method, path, headers
  including Host and the SigV4 Authorization, body); hop-by-hop headers
  (Connection, Keep-Alive, Transfer-Encoding, Expect, ...) are not. A chunked
  request body is forwarded with a Content-Length. Answers are read whole from the
  upstream (Content-Length, chunked, or up to EOF) and sent on.

  DynamoDB write capacity (--wcu N, 0 = off): one token bucket per table (or only
  the table --table names), refilled at N units/s and holding at most N units (one
  second's worth). BatchWriteItem: each PutRequest costs ceil(item size / 1024)
  units (at least 1), each DeleteRequest 1 unit; requests are admitted in order, per
  table, until the first one the bucket cannot pay; the admitted ones are forwarded
  as a rewritten BatchWriteItem and the rest are added to the answer's
  UnprocessedItems (merged with the upstream's own). When nothing at all is
  admitted, the call fails with HTTP 400 ProvisionedThroughputExceededException and
  costs nothing. PutItem: the same accounting for its one item. Item size: the sum
  over attributes of the name's UTF-8 length plus the value's size: S its UTF-8
  bytes, N the length of its digit string, B its decoded bytes, SS/NS/BS the sum of
  their members, BOOL and NULL 1 byte, anything else (M, L) the length of its JSON.

  Generic faults, each a probability per request (restricted to some operations with
  --fault-ops): --error-rate (HTTP 500 InternalServerError for DynamoDB,
  InternalFailure for Kinesis), --slow-rate/--slow-ms (the answer waits),
  --reset-rate (the request is read, then the connection is reset: SO_LINGER 0, a
  RST, no answer), --reset-midway-rate (the request is forwarded, the answer's head
  and half of its body are sent, then the connection is reset), --kinesis-throttle-rate and
  --expired-iterator-rate (GetRecords only: HTTP 400
  ProvisionedThroughputExceededException / ExpiredIteratorException).

Where it knowingly differs from AWS
  * Capacity: no burst capacity beyond one second (DynamoDB banks up to 300 s of
    unused capacity), no adaptive capacity, no partition limits, no on-demand mode,
    no index write costs. Only BatchWriteItem and PutItem are counted (not
    UpdateItem, DeleteItem, TransactWriteItems or reads). A DeleteRequest costs 1
    unit whatever the size of the item it deletes. N and M/L sizes are
    approximations (DynamoDB: about one byte per two significant digits, and 3 bytes
    plus 1 per element for maps and lists). An item bigger than the bucket is
    admitted when the bucket is full and leaves it in debt. DynamoDB chooses which
    items of a batch go unprocessed; here it is always the tail of each table's
    list. A throttled call and unprocessed items cost nothing; admitted items cost
    their units even if the upstream then rejects them.
  * ConsumedCapacity in answers is whatever the upstream says.
  * A rewritten BatchWriteItem no longer matches its SigV4 signature. moto does not
    check signatures; real AWS would refuse it (with --wcu 0 bodies are forwarded
    byte for byte).
  * Kinesis: no per-shard limits (5 GetRecords/s, 2 MB/s, 1000 records/s of writes)
    beyond the injected probabilities; the throttling message names no shard. Error
    bodies are JSON (the Rust SDK speaks JSON 1.1 to Kinesis, never CBOR).
  * Plain HTTP/1.1 only: no TLS, no HTTP/2 (so no SubscribeToShard), no pipelining,
    no streaming (each answer is buffered whole).

Exit status: 0 stopped by SIGTERM/SIGINT, 1 start-up error, 2 usage.
"""

import argparse
import asyncio
import base64
import json
import logging
import math
import random
import signal
import socket
import struct
import sys
import time
import urllib.parse
import uuid
import zlib

DYNAMODB = "DynamoDB_20120810."
KINESIS = "Kinesis_20131202."
ADMIN = "/__faults"
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
              b"trailer", b"upgrade", b"expect", b"proxy-authenticate", b"proxy-authorization"}
REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
           431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
           502: b"Bad Gateway", 504: b"Gateway Timeout"}
DDB_PTEE_MESSAGE = ("The level of configured provisioned throughput for the table was exceeded. "
                    "Consider increasing your provisioning level with the UpdateTable API.")
FAULTS = ("error", "slow", "reset", "kinesis_throttle", "expired_iterator", "reset_midway")
RATES = ("error_rate", "slow_rate", "reset_rate", "kinesis_throttle_rate",
         "expired_iterator_rate", "reset_midway_rate")


def log(msg):
    print(f"faults: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- sizes

def value_size(v):
    """The size DynamoDB counts for one AttributeValue (see the module docstring)."""
    if len(v) == 1:
        (t, x), = v.items()
        if t == "S":
            return len(x.encode())
        if t == "N":
            return len(x)
        if t == "B":
            return len(base64.b64decode(x))
        if t == "SS":
            return sum(len(s.encode()) for s in x)
        if t == "NS":
            return sum(len(s) for s in x)
        if t == "BS":
            return sum(len(base64.b64decode(b)) for b in x)
        if t in ("BOOL", "NULL"):
            return 1
    return len(json.dumps(v, separators=(",", ":")))


def item_units(item):
    """Write capacity units of a put of `item`: its size in KB, rounded up, at least 1."""
    try:
        size = sum(len(k.encode()) + value_size(v) for k, v in item.items())
    except Exception:  # not an item we understand: let the upstream judge it
        return 1
    return max(1, math.ceil(size / 1024))


def request_units(r):
    put = r.get("PutRequest") if isinstance(r, dict) else None
    if isinstance(put, dict) and isinstance(put.get("Item"), dict):
        return item_units(put["Item"])
    return 1


# ------------------------------------------------------------------------- capacity

class Table:
    """One table's bucket and counters."""

    __slots__ = ("tokens", "last", "items_admitted", "items_unprocessed", "calls_throttled",
                 "units_admitted", "units_refused", "history")

    def __init__(self, rate, now):
        self.tokens = rate
        self.last = now
        self.items_admitted = self.items_unprocessed = self.calls_throttled = 0
        self.units_admitted = self.units_refused = 0
        self.history = {}  # epoch second -> units admitted in it

    def refill(self, rate, now):
        self.tokens = min(rate, self.tokens + (now - self.last) * rate)
        self.last = now

    def take(self, units, rate):
        """Pays `units` if the bucket can (or is full: a big item leaves it in debt)."""
        if self.tokens >= units or self.tokens >= rate:
            self.tokens -= units
            return True
        return False

    def admitted(self, items, units, history_s):
        self.items_admitted += items
        self.units_admitted += units
        sec = int(time.time())
        h = self.history
        h[sec] = h.get(sec, 0) + units
        if len(h) > history_s + 5:
            for s in [s for s in h if s <= sec - history_s]:
                del h[s]

    def per_second(self, now_sec, history_s):
        return [[s, self.history.get(s, 0)] for s in range(now_sec - history_s + 1, now_sec + 1)]


# ----------------------------------------------------------------------------- http

class Answer:
    __slots__ = ("status", "reason", "headers", "body", "close_upstream")

    def __init__(self, status, reason, headers, body, close_upstream=False):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body
        self.close_upstream = close_upstream

    def head(self, close):
        out = [b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason)]
        for n, v in self.headers:
            ln = n.lower()
            if ln in HOP_BY_HOP or ln == b"content-length":
                continue
            out.append(n + b": " + v + b"\r\n")
        out.append(b"Content-Length: %d\r\n" % len(self.body))
        out.append(b"Connection: close\r\n\r\n" if close else b"\r\n")
        return b"".join(out)

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def replace_body(self, body, crc=False):
        self.body = body
        self.headers = [(n, v) for n, v in self.headers if n.lower() != b"x-amz-crc32"]
        if crc:
            self.headers.append((b"x-amz-crc32", str(zlib.crc32(body)).encode()))


def json_answer(status, obj, content_type, error_type=None, crc=False):
    body = json.dumps(obj, separators=(",", ":")).encode()
    headers = [(b"Content-Type", content_type.encode()),
               (b"x-amzn-RequestId", uuid.uuid4().hex.upper().encode())]
    if error_type:
        headers.append((b"x-amzn-ErrorType", error_type.encode()))
    if crc:
        headers.append((b"x-amz-crc32", str(zlib.crc32(body)).encode()))
    return Answer(status, REASONS.get(status, b"Error"), headers, body)


def aws_error(target, status, name, message=None):
    """An error shaped as the service of `target` sends it (JSON 1.0 or 1.1 protocol)."""
    if target.startswith(DYNAMODB):
        obj = {"__type": "com.amazonaws.dynamodb.v20120810#" + name}
        if message is not None:
            obj["message"] = message
        return json_answer(status, obj, "application/x-amz-json-1.0", name, crc=True)
    obj = {"__type": name}
    if message is not None:
        obj["message"] = message
    return json_answer(status, obj, "application/x-amz-json-1.1", name)


def parse_headers(block):
    """Header lines (bytes, without the start line) -> [(name, value)]."""
    headers = []
    for line in block.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("bad header line")
        headers.append((name.strip(), value.strip()))
    return headers


def header_map(headers):
    return {n.lower(): v for n, v in headers}


async def read_chunked(reader):
    parts = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers are dropped
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class Upstream:
    """One client connection's connection to the upstream, reused while it allows."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader = self.writer = None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method, target, headers, body):
        data = [b"%s %s HTTP/1.1\r\n" % (method, target)]
        for n, v in headers:
            ln = n.lower()
            if ln in HOP_BY_HOP or ln == b"content-length":
                continue
            data.append(n + b": " + v + b"\r\n")
        if body or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            data.append(b"Content-Length: %d\r\n" % len(body))
        data.append(b"\r\n")
        data = b"".join(data) + body
        for attempt in (0, 1):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=1 << 20), self.timeout)
                sock = self.writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.writer.write(data)
                await self.writer.drain()
                start = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), self.timeout)
            except BaseException as e:
                self.close()  # never reuse a connection in an unknown state
                # A kept-alive connection the upstream closed meanwhile: once more.
                if (reused and attempt == 0 and isinstance(e, (ConnectionError, asyncio.IncompleteReadError))
                        and not getattr(e, "partial", b"")):
                    continue
                raise
            break
        try:
            answer = await asyncio.wait_for(self._rest(method, start), self.timeout)
        except BaseException:
            self.close()
            raise
        if answer.close_upstream:
            self.close()
        return answer

    async def _rest(self, method, start):
        while True:
            line, _, rest = start.partition(b"\r\n")
            version, status, reason = (line.split(b" ", 2) + [b""])[:3]
            status = int(status)
            headers = parse_headers(rest)
            if not 100 <= status < 200:
                break
            start = await self.reader.readuntil(b"\r\n\r\n")  # skip interim answers
        hm = header_map(headers)
        conn = hm.get(b"connection", b"").lower()
        close = conn == b"close" or (version == b"HTTP/1.0" and conn != b"keep-alive")
        if method == b"HEAD" or status in (204, 304):
            body = b""
        elif b"chunked" in hm.get(b"transfer-encoding", b"").lower():
            body = await read_chunked(self.reader)
        elif b"content-length" in hm:
            body = await self.reader.readexactly(int(hm[b"content-length"]))
        else:
            body = await self.reader.read()
            close = True
        return Answer(status, reason.strip() or b"-", headers, body, close)


# ---------------------------------------------------------------------------- proxy

class Proxy:
    def __init__(self, args):
        u = urllib.parse.urlsplit(args.upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"--upstream must be http://HOST:PORT, not {args.upstream!r}")
        self.upstream_url = args.upstream.rstrip("/")
        self.up_host, self.up_port = u.hostname, u.port or 80
        self.timeout = args.upstream_timeout
        self.history_s = args.history
        self.rng = random.Random(args.seed)
        self.settings = {
            "wcu": args.wcu, "table": args.table,
            "error_rate": args.error_rate, "slow_rate": args.slow_rate, "slow_ms": args.slow_ms,
            "reset_rate": args.reset_rate, "kinesis_throttle_rate": args.kinesis_throttle_rate,
            "expired_iterator_rate": args.expired_iterator_rate,
            "reset_midway_rate": args.reset_midway_rate,
            "fault_ops": args.fault_ops, "verbose": args.verbose,
        }
        self.validate(self.settings)
        self.listen = ""
        self.reset_counters()

    # ----------------------------------------------------------------- settings

    @staticmethod
    def validate(s):
        for k in RATES:
            v = s[k]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                raise ValueError(f"{k} must be a number in 0..1, not {v!r}")
        for k in ("wcu", "slow_ms"):
            v = s[k]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{k} must be a number >= 0, not {v!r}")
        if s["table"] is not None and not isinstance(s["table"], str):
            raise ValueError("table must be a string or null")
        if s["table"] == "":
            s["table"] = None
        ops = s["fault_ops"]
        if isinstance(ops, str):
            ops = [o for o in ops.split(",") if o]
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise ValueError("fault_ops must be a list of operation names (or a comma-separated string)")
        s["fault_ops"] = ops
        if not isinstance(s["verbose"], bool):
            raise ValueError("verbose must be true or false")

    def update(self, changes):
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object")
        changes = dict(changes)
        reset = changes.pop("reset_counters", False)
        unknown = set(changes) - set(self.settings)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}; known: {sorted(self.settings)} "
                             "and reset_counters")
        new = dict(self.settings, **changes)
        self.validate(new)
        now = time.monotonic()
        for t in self.tables.values():  # refill at the old rate up to now, then switch
            t.refill(self.settings["wcu"], now)
            if new["wcu"] != self.settings["wcu"]:
                t.tokens = min(t.tokens, new["wcu"]) if self.settings["wcu"] else new["wcu"]
        self.settings = new
        if reset:
            self.reset_counters()
        self.fault_ops = frozenset(new["fault_ops"])
        log(f"settings {json.dumps(changes, separators=(',', ':'))}"
            + (" (counters reset)" if reset else ""))

    def reset_counters(self):
        self.started = time.monotonic()
        self.requests = {}
        self.faults = dict.fromkeys(FAULTS, 0)
        self.upstream_failures = 0
        self.connections = 0
        self.tables = {}  # table name -> Table (buckets restart full)
        self.fault_ops = frozenset(self.settings["fault_ops"])

    def state(self):
        now_sec = int(time.time())
        now = time.monotonic()
        tables = {}
        total = {"items_admitted": 0, "items_unprocessed": 0, "calls_throttled": 0,
                 "units_admitted": 0, "units_refused": 0}
        per_second = [[s, 0] for s in range(now_sec - self.history_s + 1, now_sec + 1)]
        wcu = self.settings["wcu"]
        for name, t in self.tables.items():
            if wcu:
                t.refill(wcu, now)
            d = {k: getattr(t, k) for k in total}
            for k in total:
                total[k] += d[k]
            d["tokens"] = round(t.tokens, 3)
            d["units_per_second"] = t.per_second(now_sec, self.history_s)
            for row, (_, u) in zip(per_second, d["units_per_second"]):
                row[1] += u
            tables[name] = d
        return {
            "listen": self.listen,
            "upstream": self.upstream_url,
            "uptime_s": round(now - self.started, 3),
            "settings": self.settings,
            "requests": {"total": sum(self.requests.values()), "by_operation": self.requests},
            "faults": self.faults,
            "upstream_failures": self.upstream_failures,
            "connections": self.connections,
            "capacity": dict(total, units_per_second=per_second, tables=tables),
        }

    def report_line(self, window=10):
        s = self.state()
        c = s["capacity"]
        recent = c["units_per_second"][-window - 1:-1]
        rate = sum(u for _, u in recent) / max(1, len(recent))
        faults = " ".join(f"{k}={v}" for k, v in s["faults"].items() if v) or "none"
        return (f"{s['uptime_s']:.0f}s requests={s['requests']['total']} "
                f"admitted={c['items_admitted']} unprocessed={c['items_unprocessed']} "
                f"throttled={c['calls_throttled']} units={c['units_admitted']} "
                f"units/s(last {len(recent)}s)={rate:.1f} upstream_failures={s['upstream_failures']} "
                f"faults: {faults}")

    # ----------------------------------------------------------------- capacity

    def table(self, name, now):
        """The table's state if its writes are limited, else None."""
        wcu = self.settings["wcu"]
        if not wcu or (self.settings["table"] is not None and name != self.settings["table"]):
            return None
        t = self.tables.get(name)
        if t is None:
            t = self.tables[name] = Table(wcu, now)
        else:
            t.refill(wcu, now)
        return t

    def batch_write(self, target, body):
        """-> (answer or None, body to forward, {table: [unprocessed requests]})."""
        try:
            req = json.loads(body)
            items = req["RequestItems"]
            if not isinstance(items, dict) or not all(isinstance(v, list) for v in items.values()):
                raise TypeError
        except Exception:
            return None, body, {}  # let the upstream say what is wrong with it
        now = time.monotonic()
        wcu = self.settings["wcu"]
        admitted, unprocessed, limited = {}, {}, False
        for name, reqs in items.items():
            t = self.table(name, now)
            if t is None:
                admitted[name] = reqs
                continue
            limited = True
            units = n = 0
            for r in reqs:
                cost = request_units(r)
                if not t.take(cost, wcu):
                    break
                units += cost
                n += 1
            if n:
                admitted[name] = reqs[:n]
                t.admitted(n, units, self.history_s)
            if n < len(reqs):
                rest = reqs[n:]
                unprocessed[name] = rest
                t.items_unprocessed += len(rest)
                t.units_refused += sum(request_units(r) for r in rest)
        if not limited or not unprocessed:
            return None, body, {}
        if not admitted:
            for name in unprocessed:
                t = self.tables[name]
                t.calls_throttled += 1
                t.items_unprocessed -= len(unprocessed[name])  # a throttled call, not unprocessed items
            return aws_error(target, 400, "ProvisionedThroughputExceededException", DDB_PTEE_MESSAGE), body, {}
        req["RequestItems"] = admitted
        return None, json.dumps(req, separators=(",", ":")).encode(), unprocessed

    def put_item(self, target, body):
        try:
            req = json.loads(body)
            name, item = req["TableName"], req["Item"]
            if not isinstance(item, dict):
                raise TypeError
        except Exception:
            return None
        t = self.table(name, time.monotonic())
        if t is None:
            return None
        cost = item_units(item)
        if t.take(cost, self.settings["wcu"]):
            t.admitted(1, cost, self.history_s)
            return None
        t.calls_throttled += 1
        t.units_refused += cost
        return aws_error(target, 400, "ProvisionedThroughputExceededException", DDB_PTEE_MESSAGE)

    @staticmethod
    def merge_unprocessed(answer, unprocessed):
        if answer.status != 200:
            return
        try:
            resp = json.loads(answer.body) if answer.body.strip() else {}
            if not isinstance(resp.get("UnprocessedItems", {}), dict):
                raise TypeError
        except Exception:
            return
        ui = resp.get("UnprocessedItems") or {}
        for name, reqs in unprocessed.items():
            ui.setdefault(name, []).extend(reqs)
        resp["UnprocessedItems"] = ui
        answer.replace_body(json.dumps(resp, separators=(",", ":")).encode(), crc=True)

    # ------------------------------------------------------------------ serving

    async def serve_client(self, reader, writer):
        self.connections += 1
        sock = writer.get_extra_info("socket")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        upstream = Upstream(self.up_host, self.up_port, self.timeout)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break  # the client closed the connection
                except asyncio.LimitOverrunError:
                    writer.write(Answer(431, REASONS[431], [], b"").head(True))
                    break
                line, _, rest = head.partition(b"\r\n")
                try:
                    method, target, version = line.split(b" ")
                    headers = parse_headers(rest)
                except ValueError:
                    writer.write(Answer(400, REASONS[400], [], b"bad request").head(True) + b"bad request")
                    break
                hm = header_map(headers)
                if hm.get(b"expect", b"").lower() == b"100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if b"chunked" in hm.get(b"transfer-encoding", b"").lower():
                    body = await read_chunked(reader)
                else:
                    body = await reader.readexactly(int(hm.get(b"content-length", b"0")))
                conn = hm.get(b"connection", b"").lower()
                keep = conn != b"close" if version == b"HTTP/1.1" else conn == b"keep-alive"
                if target.startswith(ADMIN.encode()):
                    answer = self.admin(method, body)
                else:
                    answer = await self.forward(method, target, headers, hm, body, upstream, writer)
                    if answer is None:
                        return  # the connection was reset or cut on purpose
                if writer.is_closing():
                    break
                writer.write(answer.head(not keep) + answer.body)
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            upstream.close()
            if not writer.is_closing():
                writer.close()

    def admin(self, method, body):
        try:
            if method == b"POST":
                self.update(json.loads(body or b"{}"))
            elif method != b"GET":
                return json_answer(405, {"error": "use GET or POST"}, "application/json")
            return json_answer(200, self.state(), "application/json")
        except ValueError as e:  # json.JSONDecodeError is one
            return json_answer(400, {"error": str(e)}, "application/json")

    def roll(self, rate):
        return rate > 0 and self.rng.random() < rate

    async def forward(self, method, target, headers, hm, body, upstream, writer):
        t0 = time.monotonic()
        op = hm.get(b"x-amz-target", b"").decode("latin-1")
        key = op or "(no X-Amz-Target)"
        self.requests[key] = self.requests.get(key, 0) + 1
        s = self.settings
        ops = self.fault_ops
        faultable = not ops or op in ops or op.rpartition(".")[2] in ops
        injected = []
        answer = None
        unprocessed = {}
        if faultable and self.roll(s["reset_rate"]):
            self.faults["reset"] += 1
            self.verbose(op, "reset", t0)
            reset(writer)
            return None
        if faultable and self.roll(s["error_rate"]):
            self.faults["error"] += 1
            injected.append("error")
            if op.startswith(DYNAMODB):
                answer = aws_error(op, 500, "InternalServerError", "injected")
            else:
                answer = aws_error(op, 500, "InternalFailure")
        elif op == KINESIS + "GetRecords" and faultable:
            if self.roll(s["kinesis_throttle_rate"]):
                self.faults["kinesis_throttle"] += 1
                injected.append("kinesis_throttle")
                answer = aws_error(op, 400, "ProvisionedThroughputExceededException",
                                   "Rate exceeded for shard in stream under account 000000000000.")
            elif self.roll(s["expired_iterator_rate"]):
                self.faults["expired_iterator"] += 1
                injected.append("expired_iterator")
                answer = aws_error(op, 400, "ExpiredIteratorException", "Iterator expired")
        forward = body
        if answer is None and s["wcu"]:
            if op == DYNAMODB + "BatchWriteItem":
                answer, forward, unprocessed = self.batch_write(op, body)
            elif op == DYNAMODB + "PutItem":
                answer = self.put_item(op, body)
            if answer is not None:
                injected.append("throttled")
        if answer is None:
            if forward is not body:
                headers = [(n, v) for n, v in headers if n.lower() != b"x-amz-crc32"]
            try:
                answer = await upstream.request(method, target, headers, forward)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                    asyncio.LimitOverrunError) as e:
                self.upstream_failures += 1
                injected.append("upstream_failure")
                kind = "timed out" if isinstance(e, asyncio.TimeoutError) else f"failed: {e!r}"
                answer = json_answer(504 if isinstance(e, asyncio.TimeoutError) else 502,
                                     {"__type": "UpstreamUnavailable", "message": f"faults.py: upstream {kind}"},
                                     "application/json")
            if unprocessed:
                self.merge_unprocessed(answer, unprocessed)
        if faultable and self.roll(s["slow_rate"]):
            self.faults["slow"] += 1
            injected.append("slow")
            await asyncio.sleep(s["slow_ms"] / 1000)
        if faultable and self.roll(s["reset_midway_rate"]):
            self.faults["reset_midway"] += 1
            self.verbose(op, f"{answer.status} reset_midway", t0)
            if not writer.is_closing():
                writer.write(answer.head(False) + answer.body[:len(answer.body) // 2])
                await writer.drain()
                reset(writer)
            return None
        if s["verbose"]:
            self.verbose(op, f"{answer.status} {' '.join(injected)}".rstrip(), t0,
                         f" unprocessed={sum(map(len, unprocessed.values()))}" if unprocessed else "")
        return answer

    def verbose(self, op, what, t0, extra=""):
        if self.settings["verbose"]:
            log(f"{op or '-'} {what} {1000 * (time.monotonic() - t0):.1f}ms{extra}")


def reset(writer):
    """Closes the connection with a RST (SO_LINGER 0), nothing more sent."""
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


# ----------------------------------------------------------------------------- main

def probability(text):
    v = float(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"not a probability in 0..1: {text}")
    return v


def non_negative(text):
    v = float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return int(v) if v.is_integer() else v


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="faults.py",
        description="A fault-injecting HTTP proxy in front of a local AWS emulator "
                    "(moto for DynamoDB, kinesis-local for Kinesis).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
examples
  faults.py --upstream "$AWS_ENDPOINT_URL_DYNAMODB" --wcu 100 --print-port
  faults.py --upstream "$AWS_ENDPOINT_URL_KINESIS" --kinesis-throttle-rate 0.2 --error-rate 0.01

admin endpoint (same port; AWS requests go to path /, so it does not collide)
  GET  /__faults   current settings and counters, as JSON
  POST /__faults   JSON object of settings to change, e.g. {"wcu": 500}, {"error_rate": 0},
                   {"fault_ops": ["BatchWriteItem"]}, {"table": "tweets"}, {"verbose": true};
                   "reset_counters": true zeroes all counters and refills the buckets.
                   Answers the new state (400 {"error": ...} for an unknown key or bad value).
  Settings: wcu table error_rate slow_rate slow_ms reset_rate kinesis_throttle_rate
            expired_iterator_rate reset_midway_rate fault_ops verbose

counters (GET /__faults)
  {"listen", "upstream", "uptime_s", "settings": {...},
   "requests": {"total", "by_operation": {"DynamoDB_20120810.BatchWriteItem": n, ...}},
   "faults": {"error", "slow", "reset", "kinesis_throttle", "expired_iterator", "reset_midway"},
   "upstream_failures",   (answered 502/504: the upstream could not be reached or timed out)
   "connections",         (client connections accepted: keep-alive shows as few)
   "capacity": {"items_admitted", "items_unprocessed", "calls_throttled", "units_admitted",
                "units_refused", "units_per_second": [[epoch_second, units], ...],
                "tables": {NAME: {the same counters, "tokens", "units_per_second"}}}}
  units_per_second covers the last --history seconds, oldest first; the last entry is the
  current, unfinished second. Utilization over a steady window of whole seconds =
  sum(units) / (wcu * seconds). items_unprocessed counts items sent back in
  UnprocessedItems (not those of throttled calls); units_refused counts both.
  PutItem counts as one item. Only tables with limited capacity appear under capacity.

faults order per request: reset, then error, then (GetRecords) kinesis throttle or
expired iterator, then capacity, then the upstream; slow and reset-midway apply to the
answer, whatever it is. Probabilities are drawn independently per request.

Start-up prints "faults: listening on 127.0.0.1:PORT -> UPSTREAM" on stderr (and PORT
alone on stdout with --print-port); SIGTERM/SIGINT print the final counters as one
JSON line on stderr and exit 0. See the module docstring for how it differs from AWS.""")
    p.add_argument("--upstream", required=True, metavar="URL",
                   help="the emulator to forward to, http://127.0.0.1:PORT")
    p.add_argument("--port", type=int, default=0, help="port to listen on, 127.0.0.1 (default 0: a free one)")
    p.add_argument("--print-port", action="store_true", help="print the listening port alone on stdout")
    p.add_argument("--wcu", type=non_negative, default=0, metavar="N",
                   help="DynamoDB write capacity units per second per table, burst N "
                        "(BatchWriteItem, PutItem; default 0: unlimited)")
    p.add_argument("--table", metavar="NAME",
                   help="limit only this table's writes (default: every table, each its own N units/s)")
    p.add_argument("--error-rate", type=probability, default=0.0, metavar="P",
                   help="answer HTTP 500 (InternalServerError / InternalFailure)")
    p.add_argument("--slow-rate", type=probability, default=0.0, metavar="P", help="delay the answer by --slow-ms")
    p.add_argument("--slow-ms", type=non_negative, default=1000, metavar="MS", help="the delay (default 1000)")
    p.add_argument("--reset-rate", type=probability, default=0.0, metavar="P",
                   help="read the request, then reset the connection (RST) without an answer")
    p.add_argument("--reset-midway-rate", type=probability, default=0.0, metavar="P",
                   help="forward the request, send half of the answer's body, then reset the connection")
    p.add_argument("--kinesis-throttle-rate", type=probability, default=0.0, metavar="P",
                   help="GetRecords: HTTP 400 ProvisionedThroughputExceededException")
    p.add_argument("--expired-iterator-rate", type=probability, default=0.0, metavar="P",
                   help="GetRecords: HTTP 400 ExpiredIteratorException")
    p.add_argument("--fault-ops", default="", metavar="OP,...",
                   help="apply the probabilistic faults only to these operations (BatchWriteItem or "
                        "DynamoDB_20120810.BatchWriteItem; default: all); capacity is not affected")
    p.add_argument("--history", type=int, default=60, metavar="S",
                   help="seconds of per-second admitted units kept (default 60)")
    p.add_argument("--report-interval", type=float, default=10, metavar="S",
                   help="print a counters line on stderr every S seconds (default 10; 0: never)")
    p.add_argument("--upstream-timeout", type=float, default=30, metavar="S",
                   help="answer 504 when the upstream takes longer (default 30)")
    p.add_argument("--seed", type=int, help="seed the random faults (reproducible runs)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request on stderr")
    args = p.parse_args(argv)
    if args.history < 1:
        p.error("--history must be >= 1")
    return args


async def run(args):
    proxy = Proxy(args)
    server = await asyncio.start_server(proxy.serve_client, "127.0.0.1", args.port,
                                        limit=1 << 20, backlog=1024, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    proxy.listen = f"127.0.0.1:{port}"
    log(f"listening on 127.0.0.1:{port} -> {proxy.upstream_url}")
    if args.print_port:
        print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def report():
        while True:
            await asyncio.sleep(args.report_interval)
            log(proxy.report_line())

    reporter = asyncio.create_task(report()) if args.report_interval > 0 else None
    await stop.wait()
    if reporter:
        reporter.cancel()
    server.close()
    log("final " + json.dumps(proxy.state(), separators=(",", ":")))


def main(argv):
    args = parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # no noise about clients gone away
    try:
        asyncio.run(run(args))
    except (ValueError, OSError) as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
