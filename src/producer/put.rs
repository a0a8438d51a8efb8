//! The Kinesis side: the `Producer`'s settings, its run (the source and the put
//! loop joined by the buffer, stopped within the shutdown timeout) and the put
//! loop itself (batches, aggregates, retries until every record is accepted).

use std::io::Write;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::aggregate::{Packer, ShardMap};
use super::batch::{self, oversized, Batch, Keyed, Put};
use super::sink::{Entry, PutSink};
use super::{Handoff, Received, Stats, Summary, BACKOFF, BUFFER_RECORDS, LINGER};
use crate::health::Health;
use crate::metrics as m;
use crate::processor::limiter::WriteLimiter;

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
    use super::*;
    use crate::producer::test_support::producer;
    use crate::producer::{aggregate, feed_iter, synthetic};
    use crate::retrieval::memory::{Fault, MemoryStream};

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
