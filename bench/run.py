"""End-to-end figures of stream-worker on the local emulators.

Run through bench/run.sh (it builds, starts the emulators and sets the variables).
Each figure runs the real release binary; CPU and memory are read from /proc.
The emulators' own CPU is printed beside, to show who the bottleneck is.
"""
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

from procstat import cpu_seconds, peak_rss_mib

BIN = os.environ["STREAM_WORKER_BIN"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_DIR = os.environ["EMULATORS_RUN_DIR"]
WORK = tempfile.mkdtemp(prefix="stream-worker-bench-")
rows = []
_ports = iter(range(19500, 19600))


def region():
    return os.environ.get("AWS_REGION", "us-east-1")


def emulator_pids():
    pids = {name: int(open(os.path.join(RUN_DIR, f"{name}.pid")).read()) for name in ("kinesis", "dynamodb")}
    master = int(open(os.path.join(RUN_DIR, "nginx.pid")).read())
    children = open(f"/proc/{master}/task/{master}/children").read().split()
    pids["nginx"] = int(children[0]) if children else master
    return pids


def metric(port, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = None
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    return total


def resources(tag, shards):
    names = {"stream": f"bench-{tag}", "tweets": f"bench-{tag}-tweets", "dead": f"bench-{tag}-dead",
             "leases": f"bench-{tag}-leases"}
    subprocess.run([sys.executable, f"{REPO}/deploy/local/resources.py", "create", "--stream", names["stream"],
                    "--shards", str(shards), "--tweets-table", names["tweets"], "--dead-letter-table", names["dead"]],
                   check=True, stdout=subprocess.DEVNULL)
    return names


def produce(names, *args):
    log = os.path.join(WORK, f"{names['stream']}-{time.time_ns()}.log")
    subprocess.run([BIN, "produce", "--stream", names["stream"], "--put-log", log, *args], check=True,
                   stdout=subprocess.DEVNULL)
    return [line.rstrip("\n").split("\t") for line in open(log)]


def start_producer(names, *args):
    log = os.path.join(WORK, f"{names['stream']}-{time.time_ns()}.log")
    p = subprocess.Popen([BIN, "produce", "--stream", names["stream"], "--put-log", log, *args],
                         stdout=subprocess.DEVNULL)
    return p, log


def worker(names, worker_id, *extra, env=None, bin=None):
    port = next(_ports)
    p = subprocess.Popen([bin or BIN, "run", "--stream", names["stream"], "--worker-id", worker_id,
                          "--tweets-table", names["tweets"], "--dead-letter-table", names["dead"],
                          "--lease-table", names["leases"], "--metrics-addr", f"127.0.0.1:{port}", *extra],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, f"{names['stream']}-{worker_id}.log"), "w"),
                         env=dict(os.environ, **(env or {})))
    for _ in range(100):
        try:
            metric(port, "stream_worker_records_read_total")
            break
        except OSError:
            time.sleep(0.1)
    return p, port


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)


def wait_processed(port, n, limit=600):
    """Waits until the worker has processed n records; returns when it did, as
    time.time() interpolated between the two scrapes around it. Scrapes are a
    second apart (a scrape costs the worker CPU too; Prometheus takes one every
    15 s), and a drain of a few seconds timed to the scrape would be off by up
    to a fifth."""
    start = before = time.time()
    done_before = metric(port, "stream_worker_records_processed_total") or 0
    while done_before < n:
        if time.time() - start > limit:
            sys.exit(f"timed out waiting for {n} records processed")
        time.sleep(1)
        now, done = time.time(), metric(port, "stream_worker_records_processed_total") or 0
        if done >= n:
            return before + (now - before) * (n - done_before) / (done - done_before)
        before, done_before = now, done
    return before


def report(figure, value, target, ok, note=""):
    rows.append((figure, value, target, "met" if ok else "MISSED", note))
    print(f"  {figure}: {value} (target {target}) {note}", flush=True)


def drain(tag, shards, records, max_records, *produce_args, env=None, bin=None):
    names = resources(tag, shards)
    print(f"{tag}: loading {records} records on {shards} shards {' '.join(produce_args)}", flush=True)
    produce(names, "--count", str(records), "--seed", "7", *produce_args)
    emu = emulator_pids()
    emu_before = {k: cpu_seconds(v) for k, v in emu.items()}
    p, port = worker(names, "bench", "--max-records", str(max_records), *shlex.split(os.environ.get("BENCH_WORKER_ARGS", "")),
                     env=env, bin=bin)
    # CPU per record in the steady drain: from the first batch processed, so
    # that start-up (SDK, tables, shard sync: ~0.2 s of CPU) is not spread over
    # the records.
    while not metric(port, "stream_worker_records_processed_total"):
        time.sleep(0.05)
    started = time.time()
    cpu_start = cpu_seconds(p.pid)
    first = metric(port, "stream_worker_records_processed_total")
    # Both scaled from the records after the first batch to all of them.
    took = (wait_processed(port, records) - started) * records / (records - first)
    cpu = (cpu_seconds(p.pid) - cpu_start) * records / (records - first)
    rss = peak_rss_mib(p.pid)
    emu_cpu = {k: cpu_seconds(v) - emu_before[k] for k, v in emu.items()}
    stop(p)
    return cpu, rss, took, emu_cpu


def kinesis_read_ceiling(n):
    """How fast kinesis-local serves the drain's records to a bare reader: n
    records on 8 shards read with boto3, one GetRecords call at a time, written
    nowhere. No consumer drains faster than this on the machine."""
    names = resources("read-ceiling", 8)
    produce(names, "--count", str(n), "--seed", "7")
    kinesis = boto3.client("kinesis", region_name=region())
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=names["stream"])["Shards"]]
    iterators = {s: kinesis.get_shard_iterator(StreamName=names["stream"], ShardId=s,
                                               ShardIteratorType="TRIM_HORIZON")["ShardIterator"] for s in shards}
    pid = emulator_pids()["kinesis"]
    cpu_start, started, read = cpu_seconds(pid), time.time(), 0
    while iterators:
        for shard, iterator in list(iterators.items()):
            got = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            read += len(got["Records"])
            if got["Records"]:
                iterators[shard] = got["NextShardIterator"]
            else:
                del iterators[shard]
    return read / (time.time() - started), (cpu_seconds(pid) - cpu_start) / read


def bench_cpu():
    # The emulators share the two cores with the worker and their pace varies
    # from run to run, so the figure is the median of three drains. 15,000
    # records: kinesis-local's PutRecords slows down as one stream grows (here
    # 1,600 records/s into a new stream, 250 records/s once it holds 24,000), and
    # past ~18,000 a 500-record call outlasts the 3 s attempt timeout; 50,000
    # never finished loading.
    n = 15_000
    runs, rates, ceilings = [], [], []
    for i in range(3):
        cpu, rss, took, emu = drain(f"cpu{i}", 8, n, 1000)
        runs.append(cpu / n)
        rates.append(n / took)
        # What the machine could drain if every core did nothing but this
        # drain's work: its cores over the CPU a row costs, emulators included.
        ceilings.append(os.cpu_count() * n / (cpu + sum(emu.values())))
        print(f"    run {i + 1}: {cpu / n * 1e6:.1f} µs [{n / took:.0f} rec/s; worker {cpu:.1f} s CPU; emulators: "
              f"kinesis {emu['kinesis']:.1f} s, dynamodb {emu['dynamodb']:.1f} s, keep-alive front "
              f"{emu['nginx']:.1f} s CPU over {took:.1f} s]", flush=True)
    median = statistics.median(runs)
    report(f"worker CPU per record ({n:,} on 8 shards, median of 3)", f"{median * 1e6:.1f} µs", "≤ 16 µs",
           median <= 16e-6, f"[runs: {', '.join(f'{r * 1e6:.1f}' for r in runs)} µs]")
    rate = statistics.median(rates)
    report("drain throughput (median of 3)", f"{rate:,.0f} rows/s", "≥ 6,000 rows/s", rate >= 6000,
           "[bound by the emulators: see their CPU above]")
    ceiling = statistics.median(ceilings)
    report("  the machine's ceiling for this drain: its cores over the CPU per row, emulators included",
           f"{ceiling:,.0f} rows/s", "(measured)", True,
           f"[the drain reached {rate / ceiling:.0%} of it; the worker's share of the CPU per row: "
           f"{statistics.median(runs) * ceiling / os.cpu_count():.0%}]")
    served, per_record = kinesis_read_ceiling(n)
    report("  kinesis-local serving the same records to a bare reader (boto3, one call at a time, written nowhere)",
           f"{served:,.0f} rows/s", "(measured)", True,
           f"[kinesis-local: {per_record * 1e3:.2f} ms of CPU per record; no consumer drains faster here]")
    # The worker shares two cores with moto, which takes most of them and runs
    # for milliseconds between each of the worker's wake-ups: each wake-up finds
    # the caches cold. The same drain with the tweets' BatchWriteItem answered at
    # once by the front (the leases and checkpoints still go to moto) tells that
    # cost apart from the worker's own.
    alone = []
    for i in range(3):
        cpu, _, took, emu = drain(f"cpu-writes-nowhere{i}", 8, n, 1000,
                                  env={"AWS_ENDPOINT_URL_DYNAMODB": os.environ["BENCH_WRITES_NOWHERE_URL"]})
        alone.append(cpu / n)
        print(f"    run {i + 1}, writes answered by the front: {cpu / n * 1e6:.1f} µs [{n / took:.0f} rec/s; "
              f"worker {cpu:.1f} s CPU; emulators: kinesis {emu['kinesis']:.1f} s, dynamodb {emu['dynamodb']:.1f} s]",
              flush=True)
    report("  the same drain, its tweet writes answered at once by the front and written nowhere (moto's CPU "
           "out of the way)", f"{statistics.median(alone) * 1e6:.1f} µs", "(measured)", True,
           f"[runs: {', '.join(f'{r * 1e6:.1f}' for r in alone)} µs]")


def bench_cpu_pairs():
    """bench_cpu's drain, alternating this build's worker with another binary
    (BENCH_BASELINE_BIN, e.g. main's last commit built elsewhere) in pairs,
    each pair in the other order from the last, so that a drift of the
    emulators' pace or the machine's load falls on both alike."""
    baseline = os.environ.get("BENCH_BASELINE_BIN")
    if not baseline:
        sys.exit("bench: cpu-pairs compares with another build: set BENCH_BASELINE_BIN to its stream-worker binary")
    n, pairs = 15_000, int(os.environ.get("BENCH_PAIRS", "5"))
    new, old, rss = [], [], {"new": [], "old": []}
    for i in range(pairs):
        order = [("new", BIN), ("old", baseline)] if i % 2 == 0 else [("old", baseline), ("new", BIN)]
        got = {}
        for which, bin in order:
            cpu, peak, took, _ = drain(f"pair{i}-{which}", 8, n, 1000, bin=bin)
            got[which] = cpu / n
            rss[which].append(peak)
        new.append(got["new"])
        old.append(got["old"])
        print(f"    pair {i + 1}: new {got['new'] * 1e6:.1f} µs, old {got['old'] * 1e6:.1f} µs", flush=True)
    lower = sum(a < b for a, b in zip(new, old))
    report(f"worker CPU per record, this build ({n:,} on 8 shards, median of {pairs} pairs)",
           f"{statistics.median(new) * 1e6:.1f} µs", "(measured)", True, f"[{', '.join(f'{r * 1e6:.1f}' for r in new)}]")
    report("  the same, BENCH_BASELINE_BIN", f"{statistics.median(old) * 1e6:.1f} µs", "(measured)", True,
           f"[{', '.join(f'{r * 1e6:.1f}' for r in old)}]")
    report("  pairs in which this build used less CPU", f"{lower} of {pairs}", "(measured)", True, "")
    report("  peak RSS, this build / BENCH_BASELINE_BIN (medians)",
           f"{statistics.median(rss['new']):.1f} / {statistics.median(rss['old']):.1f} MiB", "(measured)", True, "")


def bench_memory():
    n = 32_000
    cpu, rss, took, emu = drain("memory", 16, n, 1000)
    report("worker peak RSS (draining 16 shards)", f"{rss:.1f} MiB", "≤ 64 MiB", rss <= 64,
           f"[{n} records in {took:.1f} s]")


def bench_capacity():
    # Tweets behind deploy/local/faults.py admitting WCU write units per second
    # to the tweets table, as a provisioned table does (UnprocessedItems beyond
    # it, a throttling error when none is admitted). Worker at defaults. 12,000
    # tweets, not the 20,000: see bench_cpu on kinesis-local's limits.
    n, wcu = 12_000, 300
    names = resources("capacity", 4)
    print(f"capacity: loading {n} records on 4 shards", flush=True)
    produce(names, "--count", str(n), "--seed", "31")
    proxy = subprocess.Popen([sys.executable, f"{REPO}/deploy/local/faults.py", "--upstream",
                              os.environ["AWS_ENDPOINT_URL_DYNAMODB"], "--port", "0", "--print-port",
                              "--report-interval", "0", "--wcu", str(wcu), "--table", names["tweets"],
                              "--history", "600"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proxy_port = int(proxy.stdout.readline())

    def stats():
        body = urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}/__faults", timeout=5).read()
        return json.loads(body)["capacity"]["tables"].get(names["tweets"], {})

    p, port = worker(names, "bench", env={"AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{proxy_port}"})
    while not stats().get("items_admitted"):
        time.sleep(0.5)
    time.sleep(10)
    early = stats()
    wait_processed(port, n)
    late = stats()
    stop(p)
    proxy.terminate()
    refused = late.get("items_unprocessed", 0) - early.get("items_unprocessed", 0)
    admitted = late.get("items_admitted", 0) - early.get("items_admitted", 0)
    seconds = [(s, u) for s, u in late["units_per_second"]]
    first = next(s for s, u in seconds if u > 0)
    last = next(s for s, u in reversed(seconds) if u > 0)
    steady = [u for s, u in seconds if first + 10 <= s < last - 1]
    utilization = sum(steady) / (len(steady) * wcu)
    share = refused / max(refused + admitted, 1)
    report(f"utilization of a {wcu} WCU/s table, {n:,} tweets, steady phase", f"{utilization * 100:.1f} %",
           "≥ 85 %", utilization >= 0.85, f"[{len(steady)} s; per second: {min(steady)}–{max(steady)} units]")
    report("throttled items after the first 10 s", f"{share * 100:.1f} %", "≤ 10 %", share <= 0.10,
           f"[{refused} of {refused + admitted}]")


def bench_budget():
    # 64 shards read 10,000 records a call: without a budget, every shard's batch
    # is in memory at once. 8,000 tweets of ~4 KB (32 MB) against an 8 MiB budget
    # (bigger records make kinesis-local's PutRecords outlast the 3 s timeout).
    n, budget_mib = 8_000, 8
    path = os.path.join(WORK, "big-tweets.jsonl")
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id_str": f"b{i}", "text": f"{i} " + "x" * 4000, "lang": "en"}) + "\n")
    for run, budget in (("unbounded", "0"), ("budget", f"{budget_mib}MiB")):
        names = resources(f"budget-{run}", 64)
        print(f"budget ({run}): loading {n} records of ~4 KB on 64 shards", flush=True)
        produce(names, "--source", f"file:{path}")
        p, port = worker(names, "bench", "--max-records", "10000", "--max-in-flight-bytes", budget)
        wait_processed(port, n)
        rss = peak_rss_mib(p.pid)
        stop(p)
        if run == "unbounded":
            print(f"  without a budget: peak RSS {rss:.1f} MiB", flush=True)
        else:
            report(f"peak RSS, 64 shards, --max-records 10000, --max-in-flight-bytes {budget_mib}MiB",
                   f"{rss:.1f} MiB", f"≤ {budget_mib + 32} MiB", rss <= budget_mib + 32)


def put_to_row_ms(puts, tweets_table):
    """Put → row latencies in ms, sorted: the put log's put time against each row's ProcessedAt."""
    put_ms = {f[0]: int(f[5]) for f in puts}
    table = boto3.client("dynamodb", region_name=region())
    latencies = []
    kwargs = {"TableName": tweets_table, "ProjectionExpression": "Id, ProcessedAt"}
    while True:
        out = table.scan(**kwargs)
        for item in out["Items"]:
            processed = time.mktime(time.strptime(item["ProcessedAt"]["S"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            processed_ms = processed * 1000 + int(item["ProcessedAt"]["S"][20:23])
            latencies.append(processed_ms - put_ms[item["Id"]["S"]])
        if "LastEvaluatedKey" not in out:
            break
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    return sorted(latencies)


def percentile(values, q):
    return values[min(len(values) - 1, int(len(values) * q))]


def bench_latency():
    names = resources("latency", 4)
    p, port = worker(names, "bench")
    producer, log = start_producer(names, "--rate", "200", "--duration", "1m", "--seed", "8")
    producer.wait()
    puts = [line.rstrip("\n").split("\t") for line in open(log)]
    wait_processed(port, len(puts))
    stop(p)
    latencies = put_to_row_ms(puts, names["tweets"])
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    report("latency put → processed, p50 (200 rec/s, 4 shards)", f"{p50:.0f} ms", "≤ 300 ms", p50 <= 300,
           f"[{len(latencies)} tweets]")
    report("latency put → processed, p99", f"{p99:.0f} ms", "≤ 700 ms", p99 <= 700)


def bench_fan_out():
    """Polling and fan-out side by side: two applications (lease and tweets tables of their
    own) read one stream under one load, at defaults."""
    polling = resources("fan-out", 4)
    fan_out = dict(polling, tweets="bench-fan-out-tweets-2", dead="bench-fan-out-dead-2",
                   leases="bench-fan-out-leases-2")
    subprocess.run([sys.executable, f"{REPO}/deploy/local/resources.py", "create", "--stream", polling["stream"],
                    "--shards", "4", "--tweets-table", fan_out["tweets"], "--dead-letter-table", fan_out["dead"]],
                   check=True, stdout=subprocess.DEVNULL)
    workers = {"polling": worker(polling, "polling"), "fan-out": worker(fan_out, "fan-out", "--retrieval", "fan-out")}
    time.sleep(5)  # both hold their 4 leases (and the fan-out worker its consumer) before the load
    checkpoints0 = {k: metric(port, "stream_worker_checkpoints_total") for k, (_, port) in workers.items()}
    started = time.time()
    producer, log = start_producer(polling, "--rate", "200", "--duration", "1m", "--seed", "10")
    producer.wait()
    puts = [line.rstrip("\n").split("\t") for line in open(log)]
    for _, port in workers.values():
        wait_processed(port, len(puts))
    minutes = (time.time() - started) / 60
    for mode, (p, port) in workers.items():
        checkpoints = (metric(port, "stream_worker_checkpoints_total") - checkpoints0[mode]) / 4 / minutes
        stop(p)
        lat = put_to_row_ms(puts, (polling if mode == "polling" else fan_out)["tweets"])
        report(f"{mode}: put → row p50 / p99 (200 rec/s, 4 shards, both at once)",
               f"{percentile(lat, 0.5):.0f} / {percentile(lat, 0.99):.0f} ms", "(measured)", True,
               f"[{len(lat)} tweets; checkpoints {checkpoints:.0f} per shard per minute]")


def metric_with(port, name, labels):
    """The sum of `name`'s series whose labels contain `labels` (e.g. 'kind="sync"')."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name + "{") and labels in line)


# Every write the coordination makes: lease rows (each under 1 KB: one write
# unit) and heartbeat rows (under 200 bytes), applied or refused.
COORDINATION_WRITES = ["stream_worker_lease_renewals_total", "stream_worker_lease_renewal_failures_total",
                       "stream_worker_leases_taken_total", "stream_worker_leases_stolen_total",
                       "stream_worker_leases_released_total", "stream_worker_checkpoints_total",
                       "stream_worker_checkpoint_failures_total", "stream_worker_heartbeats_total",
                       "stream_worker_heartbeat_failures_total",
                       "stream_worker_workers_marked_dead_total"]


def coordination(workers, names):
    """Totals over the workers: coordination writes, coordination read units
    (a scan of the 8- or 64-row lease table is one 4 KB read unit, half for an
    eventually consistent one), tweets and dead letters written."""
    writes = reads = tweets = dead = 0.0
    for _, port in workers:
        writes += sum(metric(port, n) or 0 for n in COORDINATION_WRITES)
        writes += metric_with(port, "stream_worker_lease_handoffs_total", 'side="requested"')
        writes += metric_with(port, "stream_worker_lease_handoffs_total", 'side="asked"')
        eventual = metric_with(port, "stream_worker_lease_table_scans_total", 'kind="round"') + \
            metric_with(port, "stream_worker_lease_table_scans_total", 'kind="watch"')
        reads += 0.5 * eventual + metric_with(port, "stream_worker_lease_table_scans_total", 'kind="sync"')
        # A Query of a small fleet's heartbeats: under 4 KB, half a read unit.
        reads += 0.5 * (metric(port, "stream_worker_heartbeat_reads_total") or 0)
        tweets += metric_with(port, "stream_worker_sink_items_written_total", f'table="{names["tweets"]}"')
        dead += metric_with(port, "stream_worker_sink_items_written_total", f'table="{names["dead"]}"')
    return writes, reads, tweets, dead


def bench_lease_cost():
    # Issue #33's figures, at defaults. Under load: 2 workers on 8 shards, 5
    # tweets/s per shard (a quiet shard), 60 s once settled. Each tweet costs two
    # write units (its row and the ByUser index entry, both under 1 KB).
    names = resources("lease-cost", 8)
    workers = [worker(names, f"w{i}") for i in range(2)]
    producer, _ = start_producer(names, "--rate", "40", "--duration", "3m", "--seed", "9")
    time.sleep(30)  # converge; the figures are the steady state's
    w0, r0, t0, d0 = coordination(workers, names)
    window = 60
    time.sleep(window)
    w1, r1, t1, d1 = coordination(workers, names)
    producer.terminate()
    for p, _ in workers:
        stop(p)
    writes, reads, tweets, dead = w1 - w0, r1 - r0, t1 - t0, d1 - d0
    per_1000 = writes / max(tweets, 1) * 1000
    share = (writes + reads) / max(writes + reads + 2 * tweets + dead, 1)
    report("coordination write units per 1,000 tweets (2 workers, 8 shards, 5 tweets/s each)", f"{per_1000:.0f}",
           "≤ 60", per_1000 <= 60, f"[{writes:.0f} writes for {tweets:.0f} tweets in {window} s]")
    report("coordination's share of all DynamoDB units, reads included", f"{share:.1%}", "≤ 4 %", share <= 0.04,
           f"[{reads:.1f} read units]")

    # Idle: 3 workers on 64 shards, nothing put, 60 s once settled.
    names = resources("lease-idle", 64)
    workers = [worker(names, f"w{i}") for i in range(3)]
    time.sleep(30)
    w0, _, _, _ = coordination(workers, names)
    time.sleep(window)
    w1, _, _, _ = coordination(workers, names)
    for p, _ in workers:
        stop(p)
    idle = (w1 - w0) / 64 / (window / 60)
    report("idle coordination writes per shard per minute (3 workers, 64 shards)", f"{idle:.1f}", "≤ 3", idle <= 3)


def bench_fleet():
    out = subprocess.run(["cargo", "test", "--release", "--locked", "--test", "fleet", "--", "--nocapture"],
                         cwd=REPO, capture_output=True, text=True)
    text = out.stdout + out.stderr
    for line in text.splitlines():
        if line.startswith(("converged", "failover", "rolling restart")):
            print("  " + line[:160], flush=True)
    ok = out.returncode == 0
    report("failover, handoff, convergence (tests/e2e/fleet.rs, release build)", "see lines above",
           "≤ 5 s (fan-out 10 s), ≤ 3 s, ≤ 30 s", ok)


def standin(rate, tag):
    """deploy/local/x_api_standin.py streaming `rate` tweets/s; returns it, its URL and its sent log."""
    sent = os.path.join(WORK, f"{tag}-sent.jsonl")
    p = subprocess.Popen([sys.executable, f"{REPO}/deploy/local/x_api_standin.py", "--token", "bench",
                          "--rate", str(rate), "--sent-log", sent], stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().strip(), sent


def x_producer(names, url, minutes, put_log=True):
    """The producer on the stand-in at its defaults; with the put log (which
    costs CPU per record) only where a figure needs each record's times."""
    tag = f"{names['stream']}-{time.time_ns()}"
    log, out = os.path.join(WORK, f"{tag}.log"), os.path.join(WORK, f"{tag}.out")
    port = next(_ports)
    p = subprocess.Popen([BIN, "produce", "--stream", names["stream"], "--source", "x-api-sample",
                          "--x-api-url", url, "--duration", f"{round(minutes * 60)}s", "--metrics-addr", f"127.0.0.1:{port}"]
                         + (["--put-log", log] if put_log else []),
                         stdout=open(out, "w"), env=dict(os.environ, X_BEARER_TOKEN="bench"))
    return p, (log if put_log else out), port


def lines(path):
    try:
        return sum(1 for _ in open(path))
    except FileNotFoundError:
        return 0


def bench_producer():
    # 15 s only: kinesis-local's PutRecords slows as a stream grows, and past
    # ~18,000 records a 500-record call outlasts the 3 s call timeout.
    names = resources("producer-cpu", 4)
    print("producer: 1,000 tweets/s from the X API stand-in for 15 s", flush=True)
    s, url, _ = standin(1000, "producer-cpu")
    p, out, port = x_producer(names, url, 0.25, put_log=False)
    time.sleep(3)  # start-up and the first connection are not the steady state
    received, put = "stream_worker_producer_received_total", "stream_worker_producer_put_total"
    cpu0, put0, got0, t0 = cpu_seconds(p.pid), metric(port, put), metric(port, received), time.time()
    time.sleep(11)
    cpu1, put1, got1, t1 = cpu_seconds(p.pid), metric(port, put), metric(port, received), time.time()
    rss = peak_rss_mib(p.pid)
    # To its exit, every tweet received is put: the CPU from 3 s in to the
    # end, over the tweets put meanwhile, is each tweet's read and put. The
    # window's CPU over its puts is not: kinesis-local accepts only ~700
    # records/s, so that window reads more tweets than it puts.
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    s.kill()
    put_end = int(re.search(r", put (\d+) ", open(out).read()).group(1))
    per = (usage.ru_utime + usage.ru_stime - cpu0) / max(put_end - put0, 1) * 1e6
    per_received = (cpu1 - cpu0) / max(got1 - got0, 1) * 1e6
    report("producer CPU per tweet at 1,000 tweets/s (X API stand-in), read and put (3 s in to the exit) "
           "/ per tweet received in 11 s",
           f"{per:.1f} / {per_received:.1f} µs ({put_end - put0:.0f} put after 3 s; in 11 s "
           f"{(got1 - got0) / (t1 - t0):.0f} received/s, {(put1 - put0) / (t1 - t0):.0f} put/s)", "≤ 10 µs",
           per <= 10)
    report("producer peak RSS, same run", f"{rss:.1f} MiB", "≤ 32 MiB", rss <= 32)
    print("producer: 50 tweets/s for 60 s, latency received → accepted", flush=True)
    names = resources("producer-latency", 4)
    s, url, sent = standin(50, "producer-latency")
    p, log, _ = x_producer(names, url, 1)
    p.wait(timeout=120)
    s.kill()
    sent_ms = {}
    for line in open(sent):
        o = json.loads(line)
        sent_ms[o["id"]] = o["sent_ms"]
    lat = sorted(int(f[5]) - sent_ms[f[0]] for f in (l.rstrip("\n").split("\t") for l in open(log)) if f[0] in sent_ms)
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    report("producer put latency at 50 tweets/s, sent by the stand-in → accepted by Kinesis",
           f"p50 {p50} ms, p99 {p99} ms ({len(lat)} tweets)", "p99 ≤ 150 ms", p99 <= 150)


def summary(names, *args):
    """Runs the producer to the end; returns its summary line's numbers."""
    done = subprocess.run([BIN, "produce", "--stream", names["stream"], *args], check=True, capture_output=True,
                          text=True)
    out = done.stdout + done.stderr
    line = [l for l in out.splitlines() if "PutRecords calls" in l][-1]
    m = re.search(r"put (\d+) \((\d+) Kinesis records, (\d+) bytes, (\d+) PutRecords calls\)", line)
    return dict(zip(["put", "records", "bytes", "calls"], map(int, m.groups())))


def bench_aggregation():
    n = 10_000
    plain = summary(resources("agg-plain", 4), "--count", str(n), "--seed", "7")
    aggregated = summary(resources("agg-kpl", 4), "--count", str(n), "--seed", "7", "--aggregate")
    for name, s in [("plain", plain), ("--aggregate", aggregated)]:
        report(f"producer per {n:,} tweets, {name}: PutRecords calls / Kinesis records / MB",
               f"{s['calls']} / {s['records']} / {s['bytes'] / 1e6:.2f}", "(measured)", True)
    # Same drain as the CPU figure, one aggregated and one plain, alternating.
    n = 15_000
    per = {"plain": [], "aggregated": []}
    for i in range(2):
        for name, args in [("plain", ()), ("aggregated", ("--aggregate",))]:
            cpu, rss, took, emu = drain(f"agg-drain-{name}-{i}", 8, n, 1000, *args)
            per[name].append(cpu / n)
            print(f"    {name} run {i + 1}: {cpu / n * 1e6:.1f} µs per tweet [{n / took:.0f} tweets/s; "
                  f"peak RSS {rss:.1f} MiB]", flush=True)
    for name, runs in per.items():
        best = min(runs)
        report(f"worker CPU per tweet, {name} stream ({n:,} on 8 shards, best of 2)", f"{best * 1e6:.1f} µs",
               "(beside each other)", True, f"[runs: {', '.join(f'{r * 1e6:.1f}' for r in runs)} µs]")


FIGURES = {"cpu": bench_cpu, "cpu-pairs": bench_cpu_pairs, "memory": bench_memory, "capacity": bench_capacity, "budget": bench_budget,
           "latency": bench_latency, "fan-out": bench_fan_out, "lease-cost": bench_lease_cost, "fleet": bench_fleet,
           "producer": bench_producer, "aggregation": bench_aggregation}

if __name__ == "__main__":
    wanted = sys.argv[1:] or [f for f in FIGURES if f != "cpu-pairs"]
    for name in wanted:
        FIGURES[name]()
    print()
    print(f"{'figure':<66} {'value':>12} {'target':>22}  result")
    for figure, value, target, result, _ in rows:
        print(f"{figure:<66} {value:>12} {target:>22}  {result}")
    print(f"\n(machine: {os.cpu_count()} cores; emulators on the same machine; logs in {WORK})")
