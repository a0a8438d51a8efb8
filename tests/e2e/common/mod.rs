//! Harness for tests against the local emulators and the real binary.
//!
//! The emulators are started once for the whole suite by `deploy/local/test.sh`
//! (or by hand: `eval "$(deploy/local/emulators.sh start)"`); tests find them
//! through the standard AWS endpoint variables and fail, saying how to start
//! them, when they cannot reach them.
#![allow(dead_code)]

pub mod proxy;

use std::collections::{HashMap, HashSet};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

pub const BIN: &str = env!("CARGO_BIN_EXE_stream-worker");
pub const LAMBDA_BIN: &str = env!("CARGO_BIN_EXE_stream-worker-lambda");
pub type Item = HashMap<String, AttributeValue>;

const HOW_TO_START: &str = "start the local emulators first: `eval \"$(deploy/local/emulators.sh start)\"` \
     (or run the whole suite with `deploy/local/test.sh`, which does it for you)";

/// Checks that both endpoints are set and answer; the error says how to fix it.
pub fn check_emulators(kinesis: Option<&str>, dynamodb: Option<&str>) -> Result<(), String> {
    for (var, value) in [("AWS_ENDPOINT_URL_KINESIS", kinesis), ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb)] {
        let Some(url) = value.filter(|v| !v.is_empty()) else {
            return Err(format!(
                "{var} is not set: this test needs the Kinesis and DynamoDB emulators; {HOW_TO_START}"
            ));
        };
        let hostport = url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
        let reachable = hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
        if !reachable {
            return Err(format!("nothing answers at {var}={url}: the emulators are not running; {HOW_TO_START}"));
        }
    }
    Ok(())
}

/// The emulators, or a panic that says how to start them.
pub fn emulators() {
    let k = std::env::var("AWS_ENDPOINT_URL_KINESIS").ok();
    let d = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok();
    if let Err(message) = check_emulators(k.as_deref(), d.as_deref()) {
        panic!("{message}");
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    let local = std::env::var("STREAM_WORKER_LOCAL_DIR").map(PathBuf::from).unwrap_or_else(|_| repo().join(".local"));
    local.join("emulators/venv/bin/python")
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Held by a test that measures rates, so that no other such test in its binary
/// shares the machine's cores and the emulators with it (`cargo test` runs the
/// tests of a binary in parallel). Not poisoned by a failing test.
pub async fn measuring_alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}

/// A directory of the test's own under the system's temporary directory,
/// emptied first: a tag holds the test binary's pid, a pid comes back in a later
/// run, and the put logs (opened to append) would then also hold the earlier
/// run's sequence numbers, which the emulators of this run never gave.
pub fn test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stream-worker-test-{tag}"));
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "cannot empty {}: {e}", dir.display());
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A stream and its tables, named uniquely for one test.
#[derive(Clone)]
pub struct Setup {
    pub stream: String,
    pub tweets_table: String,
    pub dead_letter_table: String,
    pub lease_table: String,
    pub dir: PathBuf,
    /// How this setup's workers read (`--retrieval`).
    pub retrieval: Retrieval,
}

/// `stream-worker run --retrieval`: the worker's tests run in both modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    Polling,
    FanOut,
}

impl Retrieval {
    pub fn flag(self) -> &'static str {
        match self {
            Self::Polling => "polling",
            Self::FanOut => "fan-out",
        }
    }
}

/// One test per retrieval mode, from `async fn $name(mode: Retrieval)`.
#[macro_export]
macro_rules! both_retrievals {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn polling() {
                super::$name($crate::common::Retrieval::Polling).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn fan_out() {
                super::$name($crate::common::Retrieval::FanOut).await
            }
        }
    )*};
}

impl Setup {
    pub fn new(test: &str, shards: u32) -> Self {
        Self::with(test, shards, &[])
    }

    /// `extra`: more options of `resources.py create` (e.g. `--write-capacity`).
    pub fn with(test: &str, shards: u32, extra: &[&str]) -> Self {
        emulators();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{test}-{}-{n}", std::process::id());
        let dir = test_dir(&tag);
        let setup = Self {
            stream: format!("s-{tag}"),
            tweets_table: format!("tweets-{tag}"),
            dead_letter_table: format!("dead-{tag}"),
            lease_table: format!("leases-{tag}"),
            dir,
            retrieval: Retrieval::Polling,
        };
        let out = Command::new(python())
            .arg(repo().join("deploy/local/resources.py"))
            .args(["create", "--stream", &setup.stream, "--shards", &shards.to_string()])
            .args(["--tweets-table", &setup.tweets_table, "--dead-letter-table", &setup.dead_letter_table])
            .args(extra)
            .output()
            .expect("run deploy/local/resources.py");
        assert!(out.status.success(), "resources.py create failed: {}", String::from_utf8_lossy(&out.stderr));
        setup
    }

    /// This setup's workers read with `retrieval`.
    pub fn reading(mut self, retrieval: Retrieval) -> Self {
        self.retrieval = retrieval;
        self
    }

    /// Runs `stream-worker produce` to completion and returns what Kinesis accepted.
    pub fn produce(&self, args: &[&str]) -> PutLog {
        let log = self.dir.join(format!("put-{}.log", NEXT.fetch_add(1, Ordering::SeqCst)));
        let out = Command::new(BIN)
            .args(["produce", "--stream", &self.stream, "--put-log"])
            .arg(&log)
            .args(args)
            .output()
            .expect("run stream-worker produce");
        assert!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
        PutLog::read(&log)
    }

    /// Starts `stream-worker produce` in the background.
    pub fn start_producer(&self, args: &[&str]) -> Producer {
        let log = self.dir.join(format!("put-{}.log", NEXT.fetch_add(1, Ordering::SeqCst)));
        let child = Command::new(BIN)
            .args(["produce", "--stream", &self.stream, "--put-log"])
            .arg(&log)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stream-worker produce");
        Producer { child, log }
    }

    /// Each shard's owner (`None` when released) and checkpoint.
    pub async fn lease_states(&self) -> HashMap<String, (Option<String>, String)> {
        self.leases()
            .await
            .into_iter()
            .map(|(k, l)| {
                let owner = l.get("leaseOwner").and_then(|o| o.as_s().ok()).cloned();
                (k, (owner, l["checkpoint"].as_s().unwrap().clone()))
            })
            .collect()
    }

    /// Sets the fleet's coordination protocol before any worker starts (the
    /// tables are created if missing), as `stream-worker fleet` would.
    pub async fn set_protocol(&self, protocol: u32) {
        use stream_worker::leases::LeaseStore;
        let store = stream_worker::leases::dynamodb::DynamoLeaseStore::new(dynamodb().await, &self.lease_table);
        store.ensure_table().await.unwrap();
        let current = store.fleet().await.unwrap().protocol;
        store.set_protocol(current, protocol).await.unwrap().done().unwrap();
    }

    /// The fleet's heartbeat table as one read sees it: the protocol row and
    /// every worker's row.
    pub async fn fleet(&self) -> stream_worker::model::Fleet {
        use stream_worker::leases::LeaseStore;
        let store = stream_worker::leases::dynamodb::DynamoLeaseStore::new(dynamodb().await, &self.lease_table);
        store.fleet().await.unwrap_or_default()
    }

    pub fn worker(&self, name: &str, extra: &[&str]) -> Worker {
        Worker::start(self, name, extra, &[], None)
    }

    /// A worker with extra environment (e.g. another DynamoDB endpoint).
    pub fn worker_with_env(&self, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        Worker::start(self, name, extra, env, None)
    }

    /// A worker given `--metrics-addr metrics_addr` as is (`metrics_port` is 0:
    /// see [`Worker::logged_metrics_port`]).
    pub fn worker_at(&self, name: &str, metrics_addr: &str) -> Worker {
        Worker::start(self, name, &[], &[], Some(metrics_addr))
    }

    /// The Lambda path: `deploy/local/esm.py` (the local event source mapping)
    /// driving `stream-worker-lambda` over the Runtime API. `args` go to esm.py
    /// (e.g. `--starting-position`), `env` to the function.
    pub fn lambda(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Esm {
        Esm::start(self, name, args, env)
    }

    pub async fn tweets(&self) -> HashMap<String, Item> {
        scan(&self.tweets_table).await.into_iter().map(|i| (i["Id"].as_s().unwrap().clone(), i)).collect()
    }

    /// How many rows the tweets table holds: a counting scan, that spares the
    /// shared DynamoDB emulator the items while a test waits.
    pub async fn row_count(&self) -> usize {
        count(&self.tweets_table).await
    }

    /// Waits until every tweet put is a row; asserts the rows are exactly those
    /// tweets (the ids put, never a count) and returns them.
    pub async fn rows_of(&self, puts: &PutLog) -> HashMap<String, Item> {
        let ids = puts.tweet_ids();
        let rows = eventually(Duration::from_secs(120), "every tweet put as a row", || async {
            if self.row_count().await < ids.len() {
                return None;
            }
            let rows = self.tweets().await;
            (rows.len() >= ids.len()).then_some(rows)
        })
        .await;
        assert_eq!(rows.keys().cloned().collect::<HashSet<_>>(), ids, "the rows are exactly the tweets put");
        rows
    }

    pub async fn dead_letters(&self) -> HashMap<(String, String), Item> {
        scan(&self.dead_letter_table)
            .await
            .into_iter()
            .map(|i| ((i["ShardId"].as_s().unwrap().clone(), i["SequenceNumber"].as_s().unwrap().clone()), i))
            .collect()
    }

    /// Runs `stream-worker ARGS` to completion (an operator's command).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run stream-worker")
    }

    pub async fn leases(&self) -> HashMap<String, Item> {
        scan(&self.lease_table).await.into_iter().map(|i| (i["leaseKey"].as_s().unwrap().clone(), i)).collect()
    }

    /// The lease rows once no write is landing: a write a worker sent just
    /// before it was killed may still be applied after its death. Read until two
    /// reads half a second apart agree.
    pub async fn settled_leases(&self) -> HashMap<String, Item> {
        let mut last = self.leases().await;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.leases().await;
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

pub struct Producer {
    child: Child,
    log: PathBuf,
}

impl Producer {
    /// Waits for the producer to finish and returns what Kinesis accepted.
    pub fn finish(mut self) -> PutLog {
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
        assert!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
        PutLog::read(&self.log)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the producer's put log.
#[derive(Debug, Clone)]
pub struct Put {
    /// The tweet id (a made-up name for a malformed record).
    pub key: String,
    pub partition_key: String,
    pub shard: String,
    pub sequence: String,
    pub kind: String,
    /// When Kinesis accepted it, in Unix milliseconds.
    pub accepted_ms: i64,
    /// Its sub-sequence number when it was put inside a KPL aggregate.
    pub sub: Option<u64>,
}

impl Put {
    pub fn is_tweet(&self) -> bool {
        !self.kind.starts_with("malformed")
    }
}

#[derive(Debug, Clone, Default)]
pub struct PutLog(pub Vec<Put>);

impl PutLog {
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap();
        Self(
            text.lines()
                .map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    Put {
                        key: f[0].into(),
                        partition_key: f[1].into(),
                        shard: f[2].into(),
                        sequence: f[3].into(),
                        kind: f[4].into(),
                        accepted_ms: f[5].parse().unwrap(),
                        sub: f.get(6).map(|s| s.parse().unwrap()),
                    }
                })
                .collect(),
        )
    }

    pub fn tweet_ids(&self) -> HashSet<String> {
        self.0.iter().filter(|p| p.is_tweet()).map(|p| p.key.clone()).collect()
    }

    pub fn malformed(&self) -> Vec<&Put> {
        self.0.iter().filter(|p| !p.is_tweet()).collect()
    }

    /// The last sequence number put to each shard.
    pub fn last_per_shard(&self) -> HashMap<String, String> {
        let mut last: HashMap<String, String> = HashMap::new();
        for p in &self.0 {
            let e = last.entry(p.shard.clone()).or_default();
            if seq_cmp(&p.sequence, e) == std::cmp::Ordering::Greater {
                *e = p.sequence.clone();
            }
        }
        last
    }
}

/// Numeric order of two sequence numbers (decimal strings of any length).
pub fn seq_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `stream-worker run` process.
pub struct Worker {
    pub name: String,
    pub child: Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Worker {
    fn start(setup: &Setup, name: &str, extra: &[&str], env: &[(&str, &str)], metrics_addr: Option<&str>) -> Self {
        Self::start_bin(BIN, setup, name, extra, env, metrics_addr)
    }

    /// A worker run by the binary at `bin` (another build, for upgrades).
    pub fn start_bin(
        bin: &str,
        setup: &Setup,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        metrics_addr: Option<&str>,
    ) -> Self {
        let (metrics_port, metrics_addr) = match metrics_addr {
            Some(addr) => (0, addr.to_owned()),
            None => {
                let port = free_port();
                (port, format!("127.0.0.1:{port}"))
            }
        };
        let log = setup.dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .args(["run", "--stream", &setup.stream, "--worker-id", name])
            .args(["--tweets-table", &setup.tweets_table, "--dead-letter-table", &setup.dead_letter_table])
            .args(["--lease-table", &setup.lease_table])
            .args(["--metrics-addr", &metrics_addr])
            .args(["--retrieval", setup.retrieval.flag()])
            .args(extra)
            .env("RUST_LOG", std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "info".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start stream-worker run");
        Self { name: name.into(), child, metrics_port, log }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the process to exit, up to `limit`; returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() > limit {
                self.child.kill().ok();
                panic!("{} did not exit within {limit:?}; log:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port of the endpoints as the worker logged it at start-up.
    pub fn logged_metrics_port(&self) -> Option<u16> {
        let log = self.log_text();
        let line = log.lines().find(|l| l.contains("serving /metrics"))?;
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr="))?;
        Some(addr.parse::<std::net::SocketAddr>().ok()?.port())
    }

    /// The process's peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    /// The value of a metric (summed over its label sets), or `None` if absent.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metric_with(name, "")
    }

    /// The value of a metric, summed over the label sets whose text contains
    /// `labels` (e.g. `table="tweets-…"`).
    pub fn metric_with(&self, name: &str, labels: &str) -> Option<f64> {
        let body = http_get(self.metrics_port, "/metrics").ok()?;
        let values: Vec<f64> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // A failed test shows what each worker last said (CI keeps no files).
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" DEBUG ")).collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- the last {} lines of {} ({}):\n{}",
                tail.len(),
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// GET http://127.0.0.1:port/path; the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    match http_status(port, path)? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("{status}: {body}")),
    }
}

/// GET http://127.0.0.1:port/path; the status and body of any answer. Blocking,
/// from a test's thread or its runtime: the request runs on a thread of its own.
pub fn http_status(port: u16, path: &str) -> Result<(u16, String), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(stream_worker::http::get(&url, Duration::from_secs(5)))
    })
    .join()
    .unwrap()
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
}

pub async fn kinesis() -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
}

pub async fn scan(table: &str) -> Vec<Item> {
    let client = dynamodb().await;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = match client.scan().table_name(table).set_exclusive_start_key(start.take()).send().await {
            Ok(out) => out,
            Err(e) if format!("{e:?}").contains("ResourceNotFound") => return items,
            Err(e) => panic!("scan {table}: {e:?}"),
        };
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return items,
        }
    }
}

/// The number of items in `table` (a `Select=COUNT` scan; 0 if it does not exist).
pub async fn count(table: &str) -> usize {
    let client = dynamodb().await;
    let mut n = 0;
    let mut start = None;
    loop {
        let request = client.scan().table_name(table).select(aws_sdk_dynamodb::types::Select::Count);
        let out = match request.set_exclusive_start_key(start.take()).send().await {
            Ok(out) => out,
            Err(e) if format!("{e:?}").contains("ResourceNotFound") => return n,
            Err(e) => panic!("scan {table}: {e:?}"),
        };
        n += out.count as usize;
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return n,
        }
    }
}

/// Polls `check` until it returns `Some`, failing with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A running `deploy/local/esm.py` and the function processes it drives.
pub struct Esm {
    pub name: String,
    pub child: Child,
    pub status_file: PathBuf,
    pub log: PathBuf,
    pub function_logs: PathBuf,
}

impl Esm {
    fn start(setup: &Setup, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let status_file = setup.dir.join(format!("{name}.status.json"));
        let log = setup.dir.join(format!("{name}.log"));
        let function_logs = setup.dir.join(format!("{name}-function"));
        let child = Command::new(python())
            .arg(repo().join("deploy/local/esm.py"))
            .args(["--stream", &setup.stream, "--status-file"])
            .arg(&status_file)
            .arg("--log-dir")
            .arg(&function_logs)
            .args(args)
            .arg("--")
            .arg(LAMBDA_BIN)
            .env("STREAM_WORKER_TWEETS_TABLE", &setup.tweets_table)
            .env("STREAM_WORKER_DEAD_LETTER_TABLE", &setup.dead_letter_table)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start deploy/local/esm.py");
        Self { name: name.into(), child, status_file, log, function_logs }
    }

    /// The mapping's status file (see esm.py), once it exists.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(&self.status_file).ok()?).ok()
    }

    /// A counter of the status file (0 before it exists).
    pub fn count(&self, key: &str) -> u64 {
        self.status().and_then(|s| s[key].as_u64()).unwrap_or(0)
    }

    /// Each shard's last record done, as the mapping sees it.
    pub fn done(&self) -> HashMap<String, String> {
        let Some(status) = self.status() else { return HashMap::new() };
        let shards = status["shards"].as_object().cloned().unwrap_or_default();
        shards.into_iter().filter_map(|(shard, s)| Some((shard, s["done_sequence"].as_str()?.to_owned()))).collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every log line of every function process.
    pub fn function_log_text(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(&self.function_logs).into_iter().flatten().flatten() {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        text
    }

    pub fn stop(&mut self) {
        let status = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "esm.py exited with {status:?}\n{}", self.log_text());
                return;
            }
            assert!(Instant::now() < deadline, "esm.py did not stop\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Esm {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `deploy/local/faults.py`: a fault-injecting proxy in front of an emulator
/// (DynamoDB capacity with `UnprocessedItems` and throttling, 500s, slow
/// answers, resets), controlled through its `/__faults` endpoint.
pub struct Faults {
    pub port: u16,
    child: Child,
}

impl Faults {
    /// A proxy to `upstream` (a URL) with the given faults.py options.
    pub fn start(upstream: &str, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(python())
            .arg(repo().join("deploy/local/faults.py"))
            .args(["--upstream", upstream, "--port", "0", "--print-port", "--report-interval", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start deploy/local/faults.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("faults.py printed {line:?}, not a port"));
        Self { port, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The proxy's settings and counters.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(self.port, "/__faults").unwrap()).unwrap()
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
