#!/usr/bin/env python3
"""A stand-in for the X API v2 streams, for tests, benchmarks and trying the producer locally.

Serves what `stream-worker produce --source x-api` reads, the way X serves it:
GET /2/tweets/search/stream and /2/tweets/sample/stream as one long chunked
response of tweets separated by CRLF with blank keep-alive lines, and
GET/POST /2/tweets/search/stream/rules. Bearer authentication as X does it.

    x_api_standin.py --token T [--port 0] [--scenario FILE] [--then steady|unauthorized]
                     [--rate 10] [--sent-log FILE] [--requests-log FILE] [--rules JSON]

The first line on stdout is the base URL (http://127.0.0.1:PORT).

A scenario is a JSON list, one entry per stream connection, in order:
  {"status": 503}                       an HTTP error (with X's problem JSON)
  {"status": 429, "reset_in": 2}        rate limited; x-rate-limit-reset = now + reset_in
  {"status": 200, "steps": [...]}       a stream, then the response ends
Steps: {"tweets": N} (N tweets, one chunk each), {"tweets": N, "split": true}
(each line over two chunks), {"together": N} (N tweets in one chunk),
{"keepalive": N}, {"sleep": S}, {"partial": true} (half a line),
{"error": "operational-disconnect"}, {"stall": true} (send nothing, hold the
connection), {"reset": true} (drop the connection without ending the response).
After the scenario, --then steady streams tweets at --rate per second with a
keep-alive every 20 s (the default); --then unauthorized answers 401.

--sent-log gets one JSON line per tweet fully written: {"id", "sent_ms", "tweet"}.
--requests-log gets one JSON line per request: {"method", "path", "query", "body"}.
"""
import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

AUTHORS = [
    ("7", "Ferris the Crab", "ferris"),
    ("8", "Zoë Müller", "zoe_m"),
    ("9", "山田太郎", "yamada"),
]
TAGS = ["rustlang", "aws", "streaming", "café", "日本"]
LANGS = ["en", "fr", "ja", "de"]
ID_BASE = 1_900_000_000_000_000_000


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.scenario = json.load(open(args.scenario)) if args.scenario else []
        self.next_tweet = 0
        self.next_rule = 1
        self.rules = []
        for r in json.loads(args.rules):
            self.add_rule(r)
        self.sent_log = open(args.sent_log, "a", buffering=1) if args.sent_log else None
        self.requests_log = open(args.requests_log, "a", buffering=1) if args.requests_log else None

    def add_rule(self, r):
        rule = {"id": str(self.next_rule), "value": r["value"]}
        if r.get("tag") is not None:
            rule["tag"] = r["tag"]
        self.next_rule += 1
        self.rules.append(rule)
        return rule

    def next_connection(self):
        with self.lock:
            if self.scenario:
                return self.scenario.pop(0)
        if self.args.then == "unauthorized":
            return {"status": 401}
        return {"status": 200, "steady": True}

    def tweet(self):
        with self.lock:
            n = self.next_tweet
            self.next_tweet += 1
        author_id, name, username = AUTHORS[n % len(AUTHORS)]
        tag = TAGS[n % len(TAGS)]
        text = f"tweet {n} about #{tag} ✓ «{name}»"
        start = text.index("#")
        return {
            "data": {
                "id": str(ID_BASE + n),
                "text": text,
                "author_id": author_id,
                "created_at": "2026-11-27T10:00:00.000Z",
                "lang": LANGS[n % len(LANGS)],
                "entities": {"hashtags": [{"start": start, "end": start + 1 + len(tag), "tag": tag}]},
            },
            "includes": {"users": [{"id": author_id, "name": name, "username": username}]},
            "matching_rules": [{"id": "1", "tag": "standin"}],
        }

    def sent(self, tweets):
        if self.sent_log:
            now = int(time.time() * 1000)
            for t in tweets:
                self.sent_log.write(json.dumps({"id": t["data"]["id"], "sent_ms": now, "tweet": t}) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State = None

    def log_message(self, *a):  # quiet
        pass

    def problem(self, status, title, detail, headers=None):
        body = json.dumps({"title": title, "detail": detail, "type": "about:blank", "status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def json_reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self, body=None):
        if self.state.requests_log:
            url = urlparse(self.path)
            self.state.requests_log.write(
                json.dumps({"method": self.command, "path": url.path, "query": parse_qs(url.query), "body": body}) + "\n"
            )

    def authorized(self):
        if self.headers.get("Authorization") == f"Bearer {self.state.args.token}":
            return True
        self.problem(401, "Unauthorized", "Unauthorized")
        return False

    def do_GET(self):
        self.record()
        if not self.authorized():
            return
        path = urlparse(self.path).path
        if path == "/2/tweets/search/stream/rules":
            rules = self.state.rules
            meta = {"sent": "2026-11-27T10:00:00.000Z", "result_count": len(rules)}
            return self.json_reply(200, {"data": rules, "meta": meta} if rules else {"meta": meta})
        if path in ("/2/tweets/search/stream", "/2/tweets/sample/stream"):
            return self.stream()
        self.problem(404, "Not Found Error", f"no route {path}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        self.record(body)
        if not self.authorized():
            return
        if urlparse(self.path).path != "/2/tweets/search/stream/rules":
            return self.problem(404, "Not Found Error", "no route")
        s = self.state
        with s.lock:
            if "add" in body:
                added = [s.add_rule(r) for r in body["add"]]
                return self.json_reply(201, {"data": added, "meta": {"summary": {"created": len(added)}}})
            ids = set(body.get("delete", {}).get("ids", []))
            before = len(s.rules)
            s.rules = [r for r in s.rules if r["id"] not in ids]
            return self.json_reply(200, {"meta": {"summary": {"deleted": before - len(s.rules)}}})

    # The stream.

    def chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def stream(self):
        conn = self.state.next_connection()
        status = conn.get("status", 200)
        if status == 429:
            reset = int(time.time()) + int(conn.get("reset_in", 1))
            return self.problem(429, "Too Many Requests", "Too Many Requests", {"x-rate-limit-reset": str(reset)})
        if status == 401:
            return self.problem(401, "Unauthorized", "Unauthorized")
        if status != 200:
            return self.problem(status, "Service Unavailable", "scripted")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            if conn.get("steady"):
                self.steady()
            for step in conn.get("steps", []):
                if self.step(step) == "reset":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send_tweets(self, tweets, split=False):
        data = b"".join(json.dumps(t, ensure_ascii=False).encode() + b"\r\n" for t in tweets)
        if split:
            half = len(data) // 2
            self.chunk(data[:half])
            time.sleep(0.01)
            self.chunk(data[half:])
        else:
            self.chunk(data)
        self.state.sent(tweets)

    def step(self, step):
        s = self.state
        if "tweets" in step:
            for _ in range(step["tweets"]):
                self.send_tweets([s.tweet()], split=step.get("split", False))
        elif "together" in step:
            self.send_tweets([s.tweet() for _ in range(step["together"])])
        elif "keepalive" in step:
            for _ in range(step["keepalive"]):
                self.chunk(b"\r\n")
        elif "sleep" in step:
            time.sleep(step["sleep"])
        elif "partial" in step:
            self.chunk(json.dumps(s.tweet()).encode()[:40])
        elif "error" in step:
            error = {
                "title": step["error"],
                "disconnect_type": "UpstreamOperationalDisconnect",
                "detail": "This stream has been disconnected upstream for operational reasons.",
                "type": f"https://api.twitter.com/2/problems/{step['error']}",
            }
            self.chunk(json.dumps({"errors": [error]}).encode() + b"\r\n")
        elif "stall" in step:
            # Hold the connection until the client gives up on it.
            while True:
                time.sleep(0.5)
                try:
                    if self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                        return "reset"
                except BlockingIOError:
                    pass
        elif "reset" in step:
            return "reset"
        return None

    def steady(self):
        rate = self.state.args.rate
        started = time.monotonic()
        sent = 0
        last_keepalive = started
        while True:
            now = time.monotonic()
            due = int((now - started) * rate) - sent
            if due > 0:
                self.send_tweets([self.state.tweet() for _ in range(due)])
                sent += due
            if now - last_keepalive >= 20:
                self.chunk(b"\r\n")
                last_keepalive = now
            time.sleep(min(0.01, 1 / rate if rate else 0.01))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--token", required=True, help="the bearer token clients must send")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--scenario", help="JSON list of stream connections (see above)")
    p.add_argument("--then", choices=["steady", "unauthorized"], default="steady")
    p.add_argument("--rate", type=float, default=10.0, help="tweets per second in steady mode")
    p.add_argument("--rules", default="[]", help='initial rules, JSON: [{"value": "...", "tag": "..."}]')
    p.add_argument("--sent-log")
    p.add_argument("--requests-log")
    args = p.parse_args()
    Handler.state = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
