//! The producer: tweets from a source (synthetic, a file, the X API) through a
//! bounded buffer into batched PutRecords (≤ 500 records and ≤ 5 MiB per call,
//! ≤ 1 MiB per record, partition key = tweet id), failed entries retried with
//! backoff until Kinesis accepts them.
//!
//! The source and the put loop are two tasks joined by a bounded channel: when
//! Kinesis slows down or is away, the buffer fills and the source waits (the X
//! stream is then not read), so nothing received is dropped. On stop, the source
//! ends and the put loop drains the buffer, within a timeout.

pub mod aggregate;
pub mod batch;
pub mod sink;
pub mod synthetic;
pub mod x_api;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics as m;
use crate::processor::limiter::WriteLimiter;
use crate::retry::Backoff;
use aggregate::{Packer, ShardMap};
use batch::{oversized, Batch, Keyed, Put};
use sink::{Entry, PutSink};
use x_api::Reconnect;

/// A partly filled batch is sent this long after its first record was
/// received (or could have been: see [`x_api::READ_PACE`]), so a slow source
/// sees low latency.
pub const LINGER: Duration = Duration::from_millis(100);
/// Records received and not yet put, at most: past it the source waits.
pub const BUFFER_RECORDS: usize = 10_000;
/// A PutRecords attempt unanswered by then is abandoned and sent again, as the
/// KPL's `RequestTimeout` (6 s). Longer than the other calls' 3 s
/// ([`crate::aws::ATTEMPT_TIMEOUT`]): a call carries up to 5 MiB, and Kinesis
/// may have stored a call it did not answer in time, so each early give-up
/// puts every record of it twice.
pub const PUT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// One record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The tweet id (the partition key unless `--partition-keys` is given); for a
    /// record that is not a tweet, a made-up unique name.
    pub id: String,
    pub data: Vec<u8>,
    /// What it is (`v1`, `v2`, `malformed:…`, `file`), for the put log.
    pub kind: &'static str,
}

/// Lines of a JSON-lines file; the partition key is the tweet id when the line
/// decodes as a tweet, else the line number.
pub fn file_source(path: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Outgoing>>> {
    let file = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open {}: {e}\n  hint: --source file:PATH replays a file of tweets, one JSON object per line \
             (X API v2 stream lines or v1.1 tweets; see docs/producer.md)",
            path.display()
        )
    })?;
    let path = path.display().to_string();
    Ok(BufReader::new(file).lines().enumerate().filter_map(move |(n, line)| match line {
        Ok(line) if line.trim().is_empty() => None,
        Ok(line) => {
            let key = crate::processor::tweet::decode(line.as_bytes())
                .map(|t| t.id.into_owned())
                .unwrap_or_else(|_| format!("line-{}", n + 1));
            Some(Ok(Outgoing { id: key, data: line.into_bytes(), kind: "file" }))
        }
        Err(e) => Some(Err(anyhow::anyhow!("reading {path} line {}: {e}", n + 1))),
    }))
}

/// A record and when the source received it (for the put latency).
pub type Received = (Outgoing, Instant);

/// What the producer did: the final summary and the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records the source handed over (tweets read from the X stream).
    pub received: u64,
    /// Records (tweets) Kinesis accepted.
    pub put: u64,
    /// Kinesis records they were put in: fewer with `--aggregate`.
    pub records: u64,
    /// Bytes of those Kinesis records' data.
    pub bytes: u64,
    pub calls: u64,
    /// Entries put again after Kinesis refused them (or their call failed).
    pub retried: u64,
    /// Received and never accepted: only when stopped before the buffer drained.
    pub failed: u64,
    pub reconnects: BTreeMap<Reconnect, u64>,
    /// Error objects in the stream that were not disconnects.
    pub stream_errors: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {}, put {} ({} Kinesis records, {} bytes, {} PutRecords calls), retried {}, failed {}",
            self.received, self.put, self.records, self.bytes, self.calls, self.retried, self.failed
        )?;
        if !self.reconnects.is_empty() || self.stream_errors > 0 {
            write!(f, "; reconnects: {}", x_api::reconnect_counts(&self.reconnects))?;
            write!(f, "; stream errors {}", self.stream_errors)?;
        }
        Ok(())
    }
}

/// Counters shared by the source, the put loop and the progress reports.
#[derive(Debug, Default)]
pub struct Stats {
    /// The per-record series, registered once (a lookup per record was a
    /// measurable share of the producer's CPU per tweet).
    handles: std::sync::OnceLock<Handles>,
    received: AtomicU64,
    put: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    calls: AtomicU64,
    retried: AtomicU64,
    stream_errors: AtomicU64,
    connected: AtomicBool,
    reconnects: Mutex<BTreeMap<Reconnect, u64>>,
    last_received: Mutex<Option<Instant>>,
}

/// The handles of the series [`Stats`] moves per record.
#[derive(Debug)]
struct Handles {
    received: metrics::Counter,
    put: metrics::Counter,
    put_latency: metrics::Histogram,
}

impl Stats {
    /// Registered at first use, which comes after the metrics recorder is
    /// installed (`main` installs it before any command runs).
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles {
            received: metrics::counter!(m::PRODUCER_RECEIVED),
            put: metrics::counter!(m::PRODUCER_PUT),
            put_latency: metrics::histogram!(m::PRODUCER_PUT_LATENCY_SECONDS),
        })
    }

    /// A record received from the source at `at`.
    pub fn received(&self, at: Instant) {
        self.received.fetch_add(1, Ordering::Relaxed);
        *self.last_received.lock().unwrap() = Some(at);
        self.handles().received.increment(1);
    }

    /// The Kinesis records of one call accepted (tweets, or aggregates of
    /// tweets), at `now`.
    fn accepted<'a>(&self, puts: impl IntoIterator<Item = &'a Put>, now: Instant) {
        let handles = self.handles();
        let (mut records, mut bytes, mut tweets) = (0, 0, 0);
        for put in puts {
            records += 1;
            bytes += put.data().len() as u64;
            let latency =
                |r: &Keyed| handles.put_latency.record(now.saturating_duration_since(r.received).as_secs_f64());
            match put {
                Put::Plain(r) => {
                    latency(r);
                    tweets += 1;
                }
                Put::Aggregate(a) => {
                    a.members.iter().for_each(latency);
                    tweets += a.members.len() as u64;
                }
            }
        }
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.put.fetch_add(tweets, Ordering::Relaxed);
        handles.put.increment(tweets);
    }

    fn retried(&self, n: usize) {
        self.retried.fetch_add(n as u64, Ordering::Relaxed);
        metrics::counter!(m::PRODUCER_RETRIED).increment(n as u64);
    }

    pub fn stream_error(&self) {
        self.stream_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::PRODUCER_STREAM_ERRORS).increment(1);
    }

    pub fn reconnect(&self, reason: Reconnect) {
        *self.reconnects.lock().unwrap().entry(reason).or_default() += 1;
        metrics::counter!(m::PRODUCER_RECONNECTS, "reason" => reason.label()).increment(1);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics::gauge!(m::PRODUCER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn received_count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn last_received(&self) -> Option<Instant> {
        *self.last_received.lock().unwrap()
    }

    pub fn summary(&self) -> Summary {
        let received = self.received.load(Ordering::Relaxed);
        let put = self.put.load(Ordering::Relaxed);
        Summary {
            received,
            put,
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: received.saturating_sub(put),
            reconnects: self.reconnects.lock().unwrap().clone(),
            stream_errors: self.stream_errors.load(Ordering::Relaxed),
        }
    }
}

/// The source's end of the buffer: counts each record received, holds it to
/// `--rate`, and hands it to the put loop, waiting while the buffer is full.
pub struct Handoff {
    tx: mpsc::Sender<Received>,
    limiter: Option<WriteLimiter>,
    stats: Arc<Stats>,
}

impl Handoff {
    pub async fn send(&self, record: Outgoing) -> anyhow::Result<()> {
        let now = Instant::now();
        self.send_since(record, now, now).await
    }

    /// As [`send`](Self::send), for a record read at `read` (the time its
    /// chunk came: one clock read per chunk, not per record) that may have
    /// waited unread since `since` (the source paused reading then): its
    /// linger counts from there.
    pub async fn send_since(&self, record: Outgoing, read: Instant, since: Instant) -> anyhow::Result<()> {
        self.stats.received(read);
        let since = match &self.limiter {
            Some(limiter) => {
                // Held back to `--rate`: its linger starts once it is let go.
                limiter.acquire(1).await;
                Instant::now()
            }
            None => since,
        };
        self.tx.send((record, since)).await.map_err(|_| anyhow::anyhow!("the producer's put loop ended"))
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Hands records from an iterator (synthetic, file) to the put loop until it
/// ends, `count` records are taken, `deadline` passes or `stop` is cancelled.
pub async fn feed_iter(
    source: impl Iterator<Item = anyhow::Result<Outgoing>>,
    handoff: Handoff,
    count: Option<u64>,
    deadline: Option<Instant>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    for (taken, next) in (0u64..).zip(source) {
        if count.is_some_and(|c| taken >= c) || deadline.is_some_and(|d| Instant::now() >= d) || stop.is_cancelled() {
            break;
        }
        handoff.send(next?).await?;
    }
    Ok(())
}

/// The Kinesis side: the put loop and its settings.
pub struct Producer {
    pub sink: Arc<dyn PutSink>,
    pub rate: Option<NonZeroU32>,
    /// Spread records over this many partition keys (`key-0` …) instead of
    /// keying each by its tweet id.
    pub partition_keys: Option<NonZeroU32>,
    /// Written a call at a time (a line per record, flushed after each call).
    pub put_log: Option<std::io::BufWriter<std::fs::File>>,
    /// `--aggregate`: pack tweets into KPL aggregates of at most this many bytes.
    pub aggregate: Option<usize>,
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    /// After `stop`, how long the buffer may take to drain.
    pub shutdown_timeout: Duration,
}

impl Producer {
    /// Runs `feed` (the source) against the put loop until the source ends and
    /// everything it handed over is put, or until `stop` plus the shutdown
    /// timeout. Returns the summary and the first error of either side.
    pub async fn run<F, Fut>(self, feed: F, stop: CancellationToken) -> (Summary, anyhow::Result<()>)
    where
        F: FnOnce(Handoff, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let (tx, rx) = mpsc::channel(BUFFER_RECORDS);
        // The rate applies where records enter the buffer: applied in the put
        // loop, it held a batch back until it filled.
        let handoff = Handoff { tx, limiter: self.rate.map(WriteLimiter::new), stats: self.stats.clone() };
        let stats = self.stats.clone();
        let health = self.health.clone();
        let shutdown_timeout = self.shutdown_timeout;
        // The source also stops when the put loop fails.
        let feed_stop = stop.child_token();
        let put_failed = feed_stop.clone();
        let mut putter = tokio::spawn(async move {
            let result = PutLoop::new(self, rx).run().await;
            if result.is_err() {
                put_failed.cancel();
            }
            result
        });
        health.started();
        // The timeout also covers a source blocked on a full buffer.
        let give_up = async {
            stop.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await
        };
        tokio::pin!(give_up);
        let feeding = feed(handoff, feed_stop);
        tokio::pin!(feeding);
        let fed = tokio::select! {
            fed = &mut feeding => Some(fed),
            _ = &mut give_up => None,
        };
        let drained = match fed {
            None => None,
            Some(_) => tokio::select! {
                joined = &mut putter => Some(joined.unwrap_or_else(|e| Err(anyhow::anyhow!("the put loop panicked: {e}")))),
                _ = &mut give_up => None,
            },
        };
        let fed = fed.unwrap_or(Ok(()));
        health.shutting_down();
        let put = match drained {
            Some(result) => result,
            None => {
                putter.abort();
                let s = stats.summary();
                Err(anyhow::anyhow!(
                    "stopped before the buffer drained: {} received record(s) were not put (Kinesis did not accept \
                     them within the shutdown timeout)",
                    s.failed
                ))
            }
        };
        // The put loop's error explains a source that stopped because of it.
        let result = match (put, fed) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        };
        (stats.summary(), result)
    }
}

struct PutLoop {
    producer: Producer,
    rx: mpsc::Receiver<Received>,
    batch: Batch,
    /// With `--aggregate`: the open aggregates, and whether the shard map must
    /// be read again before the next is packed.
    packer: Option<Packer>,
    map_stale: bool,
}

impl PutLoop {
    fn new(producer: Producer, rx: mpsc::Receiver<Received>) -> Self {
        let packer = producer.aggregate.map(Packer::new);
        Self { producer, rx, batch: Batch::default(), map_stale: packer.is_some(), packer }
    }

    /// Nothing received waits to be put.
    fn idle(&self) -> bool {
        self.batch.is_empty() && self.packer.as_ref().is_none_or(Packer::is_empty)
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut taken = 0u64;
        // Whatever waits is taken at once: one wake-up per burst, not per record.
        let mut inbox = Vec::with_capacity(batch::MAX_RECORDS_PER_CALL);
        // One timer, re-armed when a batch starts (a timer per wake-up cost CPU per record).
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        loop {
            metrics::gauge!(m::PRODUCER_BUFFER_RECORDS).set(self.rx.len() as f64);
            let received = if self.idle() {
                self.rx.recv_many(&mut inbox, batch::MAX_RECORDS_PER_CALL).await
            } else {
                tokio::select! {
                    biased;
                    n = self.rx.recv_many(&mut inbox, batch::MAX_RECORDS_PER_CALL) => n,
                    _ = &mut linger => {
                        self.flush().await?;
                        continue;
                    }
                }
            };
            if received == 0 {
                // Every sender is gone and the buffer is empty.
                return self.flush().await;
            }
            if self.map_stale {
                self.refresh_map().await;
            }
            for (record, received) in inbox.drain(..) {
                let partition_key = match self.producer.partition_keys {
                    Some(n) => format!("key-{}", taken % u64::from(n.get())),
                    None => record.id.clone(),
                };
                taken += 1;
                let record = Keyed { record, partition_key, received };
                if let Some(why) = oversized(&record) {
                    tracing::error!(id = %record.record.id, %why, "a record can never be put; counted as failed");
                    continue;
                }
                if self.idle() {
                    linger.as_mut().reset(record.received + LINGER);
                }
                let ready = match &mut self.packer {
                    Some(packer) => packer.add(record),
                    None => Some(Put::Plain(record)),
                };
                if let Some(put) = ready {
                    self.enqueue(put).await?;
                }
            }
        }
    }

    /// Adds a record to the batch, putting the batch first if it does not fit
    /// and after if it is full.
    async fn enqueue(&mut self, put: Put) -> anyhow::Result<()> {
        if !self.batch.fits(&put) {
            self.put_batch().await?;
        }
        self.batch.push(put);
        if self.batch.is_full() {
            self.put_batch().await?;
        }
        Ok(())
    }

    /// Puts everything received: the open aggregates too.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(packer) = &mut self.packer {
            for put in packer.drain() {
                self.enqueue(put).await?;
            }
        }
        self.put_batch().await
    }

    /// Reads the open shards' hash key ranges for packing. On failure the
    /// packer keeps the map it has, and tries again at the next records.
    async fn refresh_map(&mut self) {
        let Some(packer) = &mut self.packer else { return };
        match self.producer.sink.shards().await {
            Ok(shards) => {
                tracing::info!(shards = shards.len(), "shard map read for aggregation");
                packer.set_map(ShardMap::new(&shards));
                self.map_stale = false;
            }
            Err(e) => tracing::warn!(error = %e.message, "ListShards failed; aggregating with the last shard map"),
        }
    }

    /// Puts the batch, retrying refused entries (and retryable call errors)
    /// until every record is accepted.
    async fn put_batch(&mut self) -> anyhow::Result<()> {
        let mut pending = self.batch.take();
        let p = &mut self.producer;
        let mut attempt = 0;
        while !pending.is_empty() {
            p.stats.calls.fetch_add(1, Ordering::Relaxed);
            let entries = match p.sink.put_records(&pending).await {
                Ok(entries) => entries,
                Err(err) if err.class.is_retryable() => {
                    tracing::warn!(class = ?err.class, attempt, error = %err.message, "PutRecords failed, retrying");
                    p.stats.retried(pending.iter().map(Put::tweets).sum());
                    BACKOFF.sleep(attempt).await;
                    attempt += 1;
                    continue;
                }
                Err(err) => anyhow::bail!("{}", err.message),
            };
            p.health.store_ok();
            let accepted_ms = chrono::Utc::now().timestamp_millis();
            let accepted_at = Instant::now();
            let (mut accepted, mut refused) = (Vec::with_capacity(pending.len()), Vec::new());
            for (put, entry) in pending.into_iter().zip(entries) {
                match entry {
                    Entry::Accepted { shard, sequence } => {
                        match &put {
                            Put::Plain(r) => {
                                if let Some(log) = &mut p.put_log {
                                    writeln!(
                                        log,
                                        "{}\t{}\t{shard}\t{sequence}\t{}\t{accepted_ms}",
                                        r.record.id, r.partition_key, r.record.kind
                                    )?;
                                }
                            }
                            Put::Aggregate(a) => {
                                if a.shard.as_deref() != Some(shard.as_str()) {
                                    tracing::info!(predicted = ?a.shard, %shard,
                                        "an aggregate landed on another shard than predicted; reading the shard map again");
                                    self.map_stale = true;
                                }
                                if let Some(log) = &mut p.put_log {
                                    for (sub, r) in a.members.iter().enumerate() {
                                        writeln!(
                                            log,
                                            "{}\t{}\t{shard}\t{sequence}\t{}\t{accepted_ms}\t{sub}",
                                            r.record.id, r.partition_key, r.record.kind
                                        )?;
                                    }
                                }
                            }
                        }
                        accepted.push(put);
                    }
                    Entry::Failed { code } => {
                        tracing::debug!(%code, "entry not accepted, retrying");
                        refused.push(put);
                    }
                }
            }
            p.stats.accepted(&accepted, accepted_at);
            if let Some(log) = &mut p.put_log {
                log.flush()?;
            }
            if !refused.is_empty() {
                p.stats.retried(refused.iter().map(Put::tweets).sum());
                BACKOFF.sleep(attempt).await;
                attempt += 1;
            }
            pending = refused;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::StreamExt;

    use super::x_api::{Body, Connect, ConnectError, Limits};
    use super::*;
    use crate::retrieval::memory::{Fault, MemoryStream};

    fn producer(stream: Arc<MemoryStream>, stats: Arc<Stats>) -> Producer {
        Producer {
            sink: stream,
            rate: None,
            partition_keys: None,
            put_log: None,
            aggregate: None,
            stats,
            health: Arc::new(Health::new(Duration::from_secs(30))),
            shutdown_timeout: Duration::from_secs(20),
        }
    }

    /// Runs the producer in a task on `n` synthetic records of `seed`, at `rate`.
    fn spawn_synthetic(
        stream: &Arc<MemoryStream>,
        stats: &Arc<Stats>,
        (seed, n): (u64, usize),
        rate: Option<u32>,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<(Summary, anyhow::Result<()>)> {
        let mut p = producer(stream.clone(), stats.clone());
        p.rate = rate.and_then(NonZeroU32::new);
        let source = synthetic::Synthetic::new(seed, 0.0).take(n).map(Ok);
        tokio::spawn(p.run(move |tx, stop| feed_iter(source, tx, None, None, stop), stop.clone()))
    }

    fn ids(stream: &MemoryStream) -> Vec<String> {
        let mut ids: Vec<String> = stream.records().into_iter().map(|(key, _)| key).collect();
        ids.sort_by_key(|id| id.parse::<u64>().unwrap_or(u64::MAX));
        ids
    }

    enum Step {
        Chunk(String),
        Wait(Duration),
        Stall,
        Fail,
    }

    enum Conn {
        Open(Vec<Step>),
        Status(u16),
        RateLimited(Duration),
        Unreachable,
    }

    /// The X API, scripted: one entry per connection attempt.
    struct Script {
        conns: Mutex<VecDeque<Conn>>,
        attempts: Mutex<Vec<Instant>>,
    }

    #[async_trait]
    impl Connect for Script {
        async fn connect(&self) -> Result<Body, ConnectError> {
            self.attempts.lock().unwrap().push(Instant::now());
            let retry = |reason, reset_in| Err(ConnectError::Retry { reason, detail: "scripted".into(), reset_in });
            match self.conns.lock().unwrap().pop_front().expect("the script covers every attempt") {
                Conn::Status(401) => Err(ConnectError::Fatal("the bearer token was refused (401 Unauthorized)".into())),
                Conn::Status(_) => retry(Reconnect::HttpError, None),
                Conn::RateLimited(wait) => retry(Reconnect::RateLimited, Some(wait)),
                Conn::Unreachable => retry(Reconnect::Network, None),
                Conn::Open(steps) => Ok(futures::stream::unfold(steps.into_iter(), |mut steps| async move {
                    loop {
                        match steps.next()? {
                            Step::Chunk(c) => return Some((Ok(Bytes::from(c)), steps)),
                            Step::Wait(d) => tokio::time::sleep(d).await,
                            Step::Stall => std::future::pending::<()>().await,
                            Step::Fail => return Some((Err("connection reset by peer".to_owned()), steps)),
                        }
                    }
                })
                .boxed()),
            }
        }
    }

    fn tweet(id: u64) -> String {
        format!(
            r#"{{"data":{{"id":"{id}","text":"tweet {id} #rust","author_id":"7","lang":"en"}},"includes":{{"users":[{{"id":"7","name":"Ferris","username":"ferris"}}]}},"matching_rules":[{{"id":"1","tag":"rust"}}]}}"#
        ) + "\r\n"
    }

    #[tokio::test(start_paused = true)]
    async fn the_x_stream_reconnects_on_schedule_and_every_tweet_is_put_once() {
        use Step::*;
        let t1 = tweet(1);
        let (t1a, t1b) = t1.split_at(30);
        let disconnect = r#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamOperationalDisconnect","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#;
        let script = Script {
            conns: Mutex::new(VecDeque::from([
                // Split lines, a keep-alive, two tweets in a chunk, then a cut-off line and the end.
                Conn::Open(vec![
                    Chunk(t1a.into()),
                    Chunk(t1b.into()),
                    Chunk("\r\n".into()),
                    Chunk(tweet(2) + &tweet(3)),
                    Wait(Duration::from_secs(5)),
                    Chunk(r#"{"data":{"id":"99""#.into()),
                ]),
                Conn::Status(503),
                Conn::RateLimited(Duration::from_secs(7)),
                Conn::Open(vec![Chunk(tweet(4)), Chunk(format!("{disconnect}\r\n"))]),
                Conn::Open(vec![Chunk(tweet(5)), Wait(Duration::from_secs(19)), Chunk("\r\n".into()), Stall]),
                Conn::Unreachable,
                Conn::Open(vec![Chunk(tweet(6) + &tweet(7)), Fail]),
                Conn::Status(401),
            ])),
            attempts: Mutex::new(Vec::new()),
        };
        let stream = Arc::new(MemoryStream::new(2));
        let stats = Arc::new(Stats::default());
        let limits = Limits { count: None, deadline: None, stall_timeout: x_api::STALL_TIMEOUT };
        let (summary, result) = producer(stream.clone(), stats.clone())
            .run(|tx, stop| async { x_api::feed(&script, tx, limits, stop).await }, CancellationToken::new())
            .await;
        assert!(result.unwrap_err().to_string().contains("401"), "a 401 is fatal");
        let attempts = script.attempts.lock().unwrap().clone();
        let gaps: Vec<u128> = attempts.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(
            gaps,
            [
                5_000 + 250,           // closed by the server after 5 s: the first network step
                5_000,                 // 503: the first HTTP step
                7_000,                 // 429: until x-rate-limit-reset
                250,                   // operational disconnect, after data (the schedule started over)
                19_000 + 20_000 + 250, // a keep-alive at 19 s, then 20 s of nothing: a stall
                500,                   // unreachable: the second network step in a row
                250,                   // reset mid-stream, after data
            ]
        );
        assert_eq!(ids(&stream), ["1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!((summary.received, summary.put, summary.failed), (7, 7, 0));
        let reconnects: Vec<_> = summary.reconnects.iter().map(|(r, n)| (r.label(), *n)).collect();
        assert_eq!(
            reconnects,
            [
                ("network", 2),
                ("stall", 1),
                ("closed", 1),
                ("operational_disconnect", 1),
                ("http_error", 1),
                ("rate_limited", 1)
            ]
        );
    }

    /// A stream whose tweets arrive at set times after it opens; records when
    /// each is taken by the reader.
    struct Timed {
        arrivals: Vec<(Duration, u64)>,
        taken: Arc<Mutex<Vec<Duration>>>,
    }

    #[async_trait]
    impl Connect for Timed {
        async fn connect(&self) -> Result<Body, ConnectError> {
            let (opened, taken) = (Instant::now(), self.taken.clone());
            Ok(futures::stream::unfold(self.arrivals.clone().into_iter(), move |mut arrivals| {
                let taken = taken.clone();
                async move {
                    let Some((at, id)) = arrivals.next() else { return std::future::pending().await };
                    tokio::time::sleep_until(opened + at).await;
                    taken.lock().unwrap().push(opened.elapsed());
                    Some((Ok(Bytes::from(tweet(id))), arrivals))
                }
            })
            .boxed())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_x_stream_is_read_in_gathers_and_every_tweet_is_sent_within_the_linger_of_its_arrival() {
        let ms = Duration::from_millis;
        // Tweets 1 and 2 are put together at 100 ms; tweet 3 arrives in the
        // next pause; then a burst.
        let arrivals =
            vec![(ms(0), 1), (ms(80), 2), (ms(105), 3), (ms(305), 4), (ms(315), 5), (ms(325), 6), (ms(335), 7)];
        let taken = Arc::new(Mutex::new(Vec::new()));
        let script = Timed { arrivals: arrivals.clone(), taken: taken.clone() };
        let stream = Arc::new(MemoryStream::new(2));
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let start = Instant::now();
        let run = tokio::spawn({
            let (p, stop) = (producer(stream.clone(), stats.clone()), stop.clone());
            let limits = Limits { count: None, deadline: None, stall_timeout: x_api::STALL_TIMEOUT };
            async move { p.run(|tx, stop| async move { x_api::feed(&script, tx, limits, stop).await }, stop).await }
        });
        let mut put_at = BTreeMap::new();
        while put_at.len() < arrivals.len() {
            for (id, _) in stream.records() {
                put_at.entry(id).or_insert_with(|| start.elapsed());
            }
            tokio::time::sleep(ms(1)).await;
        }
        stop.cancel();
        run.await.unwrap().1.unwrap();
        // A tweet is read as it comes; then reading pauses READ_PACE (the
        // linger): tweet 2 is read at 100, tweet 3 at 200; nothing came in the
        // pause to 300, so tweet 4 is read as it comes, the rest of the burst
        // at once at 405.
        assert_eq!(x_api::READ_PACE, LINGER);
        let read = [0, 100, 200, 305, 405, 405, 405].map(ms);
        assert_eq!(*taken.lock().unwrap(), read);
        // What a pause gathered is put as it is read: what is read after a
        // pause lingers from when the pause began (tweet 3 would otherwise be
        // put at 300 ms, 195 ms after it arrived). So none waits longer than
        // the linger after it arrived.
        let put = [100, 100, 200, 405, 405, 405, 405].map(ms);
        for ((arrived, id), due) in arrivals.into_iter().zip(put) {
            let at = put_at[&id.to_string()];
            assert!(at >= due && at <= due + ms(1), "tweet {id} was put at {at:?}, not at {due:?}");
            let waited = at - arrived;
            assert!(waited <= LINGER + ms(1), "tweet {id} arrived at {arrived:?} and was put {waited:?} later");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refused_entries_and_failed_calls_are_put_again_until_all_are_in() {
        let stream = Arc::new(MemoryStream::new(4));
        stream.inject([Fault::Transient, Fault::PartialPut, Fault::Throttled, Fault::PartialPut, Fault::PartialPut]);
        let stats = Arc::new(Stats::default());
        let source = synthetic::Synthetic::new(3, 0.0).take(1_200).map(Ok);
        let (summary, result) = producer(stream.clone(), stats.clone())
            .run(|tx, stop| feed_iter(source, tx, None, None, stop), CancellationToken::new())
            .await;
        result.unwrap();
        let expected: Vec<String> = synthetic::Synthetic::new(3, 0.0).take(1_200).map(|o| o.id).collect();
        let mut got: Vec<String> = stream.records().into_iter().map(|(k, _)| k).collect();
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(got, want, "every record exactly once");
        assert_eq!((summary.received, summary.put, summary.failed), (1_200, 1_200, 0));
        assert!(summary.retried >= 500 + 250, "a failed call of 500 and at least one half refused: {summary:?}");
    }

    /// A user record in the twin, where it landed.
    struct Landed {
        shard: String,
        range: (u128, u128),
        sequence: String,
        id: String,
        hash: u128,
    }

    /// Every user record in the twin, de-aggregated.
    fn user_records(stream: &MemoryStream) -> Vec<Landed> {
        use crate::retrieval::StreamClient;
        let shards = futures::executor::block_on(stream.list_shards()).unwrap();
        let mut out = Vec::new();
        for shard in shards {
            let it =
                futures::executor::block_on(stream.shard_iterator(&shard.id, &crate::retrieval::StartAt::TrimHorizon))
                    .unwrap();
            let batch = futures::executor::block_on(stream.get_records(&it, 100_000)).unwrap();
            for r in batch.records {
                let users = crate::kpl::deaggregate(&r.data).expect("an aggregate").unwrap();
                for u in users {
                    let id = crate::processor::tweet::decode(&u.data).unwrap().id.into_owned();
                    out.push(Landed {
                        shard: shard.id.clone(),
                        range: shard.hash_range.unwrap(),
                        sequence: r.sequence_number.clone(),
                        id,
                        hash: u.hash_key(),
                    });
                }
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn aggregates_land_on_their_tweets_shard_and_a_reshard_makes_the_map_read_again() {
        let stream = Arc::new(MemoryStream::new(4));
        let stats = Arc::new(Stats::default());
        let mut p = producer(stream.clone(), stats.clone());
        p.aggregate = Some(aggregate::DEFAULT_MAX_BYTES);
        // At a steady rate, as from the X stream: what is packed with a stale map
        // is what arrives before the first put after the split is answered.
        p.rate = NonZeroU32::new(1_000);
        let (twin, counts) = (stream.clone(), stats.clone());
        let (summary, result) = p
            .run(
                |tx, stop| async move {
                    let mut source = synthetic::Synthetic::new(8, 0.0);
                    for record in source.by_ref().take(2_000) {
                        tx.send(record).await?;
                    }
                    while counts.summary().put < 2_000 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    twin.split("shardId-000000000000", None).unwrap();
                    feed_iter(source.take(2_000).map(Ok), tx, None, None, stop).await
                },
                CancellationToken::new(),
            )
            .await;
        result.unwrap();
        let users = user_records(&stream);
        let mut got: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        got.sort();
        let mut want: Vec<String> = synthetic::Synthetic::new(8, 0.0).take(4_000).map(|o| o.id).collect();
        want.sort();
        assert_eq!(got, want, "every tweet exactly once");
        assert_eq!((summary.put, summary.failed), (4_000, 0));
        assert!(summary.records * 20 < summary.put, "far fewer Kinesis records than tweets: {summary:?}");
        // Before the split every tweet is on its own shard; after it, only what
        // was packed with the old map (one linger's worth) may mix the children's.
        let outside: std::collections::BTreeSet<&String> =
            users.iter().filter(|u| !(u.range.0..=u.range.1).contains(&u.hash)).map(|u| &u.sequence).collect();
        assert!(outside.len() <= 2, "aggregates with tweets of another shard: {outside:?}");
        let children: usize = users.iter().filter(|u| u.shard != "shardId-000000000000" && u.range.0 == 0).count();
        assert!(children > 0, "tweets of the split range went to its children");
    }

    #[tokio::test(start_paused = true)]
    async fn a_kinesis_outage_fills_the_buffer_and_the_source_waits_without_dropping() {
        let stream = Arc::new(MemoryStream::new(2));
        stream.inject(std::iter::repeat_n(Fault::Transient, 30));
        let stats = Arc::new(Stats::default());
        let total = BUFFER_RECORDS * 2;
        let run = spawn_synthetic(&stream, &stats, (4, total), None, &CancellationToken::new());
        // Thirty failed calls take well over a minute of backoff.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let during = stats.summary();
        assert_eq!(during.put, 0, "Kinesis is away");
        // The channel, the batch being put, the rest of what the put loop took
        // from the channel with it, and the record waiting for room.
        assert!(
            during.received <= (BUFFER_RECORDS + 2 * batch::MAX_RECORDS_PER_CALL + 1) as u64,
            "the source waits on the full buffer: {during:?}"
        );
        let (summary, result) = run.await.unwrap();
        result.unwrap();
        assert_eq!((summary.received, summary.put, summary.failed), (total as u64, total as u64, 0));
        assert_eq!(stream.records().len(), total);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_source_and_drains_the_buffer() {
        let stream = Arc::new(MemoryStream::new(2));
        stream.set_latency(Duration::from_millis(50));
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let run = spawn_synthetic(&stream, &stats, (5, usize::MAX), Some(1_000), &stop);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.cancel();
        let (summary, result) = run.await.unwrap();
        result.unwrap();
        assert!(summary.received > 1_000, "{summary:?}");
        assert_eq!((summary.put, summary.failed), (summary.received, 0), "everything received is put");
        assert_eq!(stream.records().len() as u64, summary.put);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_source_is_put_as_it_goes_not_a_full_batch_at_a_time() {
        let stream = Arc::new(MemoryStream::new(2));
        let stats = Arc::new(Stats::default());
        let run = spawn_synthetic(&stream, &stats, (8, 300), Some(100), &CancellationToken::new());
        tokio::time::sleep(Duration::from_millis(1_250)).await;
        // At 100/s, 1.25 s in: at least 125 records taken, all but the last
        // linger's worth put. (With the rate applied in the put loop, nothing
        // was put until 300 records had waited their turn.)
        let put = stream.records().len();
        assert!(put >= 100, "{put} records put 1.25 s in");
        let (summary, result) = run.await.unwrap();
        result.unwrap();
        assert_eq!(summary.put, 300);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_with_a_full_buffer_during_an_outage_still_ends_after_the_timeout() {
        let stream = Arc::new(MemoryStream::new(2));
        stream.inject(std::iter::repeat_n(Fault::Transient, 1_000));
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let started = Instant::now();
        // More than the buffer holds: the source blocks on it.
        let run = spawn_synthetic(&stream, &stats, (7, BUFFER_RECORDS * 3), None, &stop);
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.cancel();
        let (summary, result) = run.await.unwrap();
        assert!(result.unwrap_err().to_string().contains("were not put"));
        assert_eq!(summary.put, 0);
        assert_eq!(summary.failed, summary.received, "{summary:?}");
        assert!(summary.received < (BUFFER_RECORDS * 3) as u64, "the source was waiting on the buffer");
        assert_eq!(started.elapsed().as_secs(), 30, "10 s, then the 20 s shutdown timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_during_an_outage_gives_up_after_the_timeout_and_counts_the_rest_failed() {
        let stream = Arc::new(MemoryStream::new(2));
        stream.inject(std::iter::repeat_n(Fault::Transient, 1_000));
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let started = Instant::now();
        let run = spawn_synthetic(&stream, &stats, (6, 100), None, &stop);
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.cancel();
        let (summary, result) = run.await.unwrap();
        assert!(result.unwrap_err().to_string().contains("100 received record(s) were not put"));
        assert_eq!((summary.received, summary.put, summary.failed), (100, 0, 100));
        assert_eq!(started.elapsed().as_secs(), 30, "10 s, then the 20 s shutdown timeout");
    }
}
