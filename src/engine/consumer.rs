//! One shard's consumer task.
//!
//! Rules (after the KCL's `ShardRecordProcessor`): checkpoint only after records
//! are durably written (a batch is written and checkpointed a slice at a time);
//! never checkpoint once the lease is lost or fenced; always checkpoint
//! `SHARD_END` when a closed shard is fully read. On shutdown the
//! in-flight batch is finished and checkpointed before the task returns.
//!
//! KPL aggregates are read as their user records, and a checkpoint may fall
//! inside one (sequence number, sub-sequence number), as with the KCL: a
//! restart reads from that record (`AT_SEQUENCE_NUMBER`) and skips the user
//! records at or below the checkpoint.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Durable, RecordProcessor};
use crate::engine::budget::{ByteBudget, Reservation};
use crate::engine::held::HeldLease;
use crate::fence::within;
use crate::kpl::deaggregate_records;
use crate::leases::Cas;
use crate::metrics as m;
use crate::model::Checkpoint;
use crate::model::HashRange;
use crate::retrieval::{ClosedShards, Read, Retrieval, Shard, StartAt, StreamClient};
use crate::retry::Backoff;

/// How each shard's [`Consumer`] reads and checkpoints. One value serves every
/// shard of a worker (`WorkerConfig::consumer`);
/// [`WorkerConfig::new`](crate::engine::coordinator::WorkerConfig::new) fills in
/// `stream-worker run`'s defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Polling or enhanced fan-out.
    pub retrieval: Retrieval,
    /// The process's memory budget for records read and not yet written.
    pub budget: Option<Arc<ByteBudget>>,
    /// At most one checkpoint per shard per this long, and always at a stop
    /// (shutdown, handoff) and at the shard's end: what a crash reads again is
    /// at most this long of the shard's records. Zero: after every slice.
    pub checkpoint_interval: Duration,
}

/// What is durable but not yet checkpointed (checkpoints are coalesced).
struct Pending {
    checkpoint: Option<Checkpoint>,
    /// Records the pending checkpoint covers.
    records: u64,
    /// When this consumer last wrote a checkpoint; `None` before its first,
    /// which is written at once: a lease's new owner shows progress (and
    /// bounds what a crash reads again) from its first slice.
    written_at: Option<tokio::time::Instant>,
}

impl Pending {
    fn new() -> Self {
        Self { checkpoint: None, records: 0, written_at: None }
    }

    /// When the pending checkpoint must be written, if there is one.
    fn due(&self, interval: Duration) -> Option<tokio::time::Instant> {
        let first = tokio::time::Instant::now();
        self.checkpoint.as_ref().map(|_| self.written_at.map_or(first, |at| at + interval))
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a record is assumed to weigh before a shard has read any.
const FIRST_RECORD_BYTES_GUESS: u64 = 1024;

/// Why a consumer stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The shard is closed and fully processed; `SHARD_END` is checkpointed.
    ShardEnd {
        /// The shards the stream named as this shard's children when it ended;
        /// empty when it named none (or the lease already held `SHARD_END` at
        /// the start). The worker creates their leases at once.
        children: Vec<Shard>,
    },
    /// The lease was lost or fenced; nothing more was checkpointed.
    LeaseLost,
    /// Asked to stop (worker shutdown or a handoff request); the last batch is
    /// checkpointed.
    Stopped,
}

const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// One shard's consumer: reads the shard of a held lease, hands the records to
/// the processor a slice at a time and checkpoints what the processor reports
/// durable, until the shard ends, the lease is lost or a stop is asked for.
///
/// The worker builds one per held lease and spawns [`Consumer::run`]; the
/// returned [`Exit`] says why it stopped.
pub struct Consumer {
    /// The lease the shard is consumed under: checkpoints go through it, and it
    /// says when the lease is lost or fenced and when a graceful stop is asked for.
    pub held: Arc<HeldLease>,
    /// The shard's hash key range, when known: user records of aggregates
    /// outside it are counted.
    pub hash_range: Option<HashRange>,
    /// The stream the shard is read from (Kinesis, or the in-memory twin in tests).
    pub stream: Arc<dyn StreamClient>,
    /// Shards ListShards reported closed (for fan-out's end check).
    pub closed: Arc<ClosedShards>,
    /// The application's processor that the records are handed to.
    pub processor: Arc<dyn RecordProcessor>,
    /// Retrieval mode, memory budget and checkpoint interval.
    pub config: ConsumerConfig,
    /// The time an `AT_TIMESTAMP` checkpoint starts from (the worker's
    /// `InitialPosition::AtTimestamp`); `None`: from the trim horizon.
    pub initial_timestamp: Option<DateTime<Utc>>,
}

/// Runs `fut` unless the lease goes first.
macro_rules! or_lost {
    ($held:expr, $fut:expr) => {
        tokio::select! {
            biased;
            _ = $held.gone() => return Exit::LeaseLost,
            out = $fut => out,
        }
    };
}

/// Runs `fut` unless the lease goes or the consumer is asked to stop first.
macro_rules! or_stopped {
    ($held:expr, $fut:expr) => {
        tokio::select! {
            biased;
            _ = $held.gone() => return Exit::LeaseLost,
            _ = $held.stop_token().cancelled() => return Exit::Stopped,
            out = $fut => out,
        }
    };
}

impl Consumer {
    /// Consumes the shard until it ends, the lease is lost or a stop is asked
    /// for; tells the processor when the shard ends or the lease is lost.
    pub async fn run(self) -> Exit {
        let shard_id = self.held.key().to_owned();
        let mut pending = Pending::new();
        let exit = match self.consume(&shard_id, &mut pending).await {
            // A stop (shutdown, handoff) writes what is pending first.
            Exit::Stopped if !self.flush(&shard_id, &mut pending).await => Exit::LeaseLost,
            exit => exit,
        };
        match &exit {
            Exit::ShardEnd { .. } => self.processor.shard_ended(&shard_id),
            Exit::LeaseLost => self.processor.lease_lost(&shard_id),
            Exit::Stopped => {}
        }
        exit
    }

    async fn consume(&self, shard_id: &str, pending: &mut Pending) -> Exit {
        let shard_id = shard_id.to_owned();
        let start = self.held.snapshot().await.checkpoint;
        self.processor.shard_started(&shard_id, &start);
        let position = match &start {
            Checkpoint::ShardEnd => return Exit::ShardEnd { children: Vec::new() },
            Checkpoint::TrimHorizon => StartAt::TrimHorizon,
            Checkpoint::Latest => StartAt::Latest,
            Checkpoint::AtTimestamp => match self.initial_timestamp {
                Some(t) => StartAt::AtTimestamp(t),
                None => StartAt::TrimHorizon,
            },
            Checkpoint::Sequence { number, .. } => StartAt::AtSequence(number.to_string()),
        };
        // What was processed of the record the shard is read from.
        let mut skip_through = match start {
            Checkpoint::Sequence { number, sub } => Some((number, sub)),
            _ => None,
        };
        tracing::info!(shard_id, from = ?position, retrieval = self.config.retrieval.name(), "shard consumer started");
        let mut reader =
            self.config.retrieval.reader(self.stream.clone(), self.closed.clone(), &shard_id, position.clone());
        let records_per_read = self.config.retrieval.records_per_read();
        let mut record_bytes = FIRST_RECORD_BYTES_GUESS;
        loop {
            or_stopped!(self.held, reader.ready());
            // Hold the bytes this read may bring before making it.
            let mut reservation: Option<Reservation> = match &self.config.budget {
                Some(budget) => Some(or_stopped!(self.held, budget.reserve(records_per_read * record_bytes))),
                None => None,
            };
            // The read is waited on, writing the pending checkpoint when it is due.
            let read = {
                let read = reader.read();
                tokio::pin!(read);
                loop {
                    tokio::select! {
                        biased;
                        _ = self.held.gone() => return Exit::LeaseLost,
                        _ = self.held.stop_token().cancelled() => return Exit::Stopped,
                        _ = sleep_until(pending.due(self.config.checkpoint_interval)) => {
                            if !self.flush(&shard_id, pending).await {
                                return Exit::LeaseLost;
                            }
                        }
                        read = &mut read => break read,
                    }
                }
            };
            let Read { mut records, millis_behind_latest, end } = read;
            if let Some(ms) = millis_behind_latest {
                metrics::gauge!(m::BEHIND_LATEST_SECONDS, "shard_id" => shard_id.clone()).set(ms as f64 / 1000.0);
            }
            // Age of the newest record read: how old the data is when it is processed.
            let iterator_age_ms = match records.last() {
                Some(last) => (chrono::Utc::now() - last.arrival).num_milliseconds().max(0),
                None => millis_behind_latest.unwrap_or(0),
            };
            metrics::gauge!(m::ITERATOR_AGE_SECONDS, "shard_id" => shard_id.clone())
                .set(iterator_age_ms as f64 / 1000.0);
            if !records.is_empty() {
                let bytes: usize = records.iter().map(|r| r.data.len()).sum();
                record_bytes = (bytes / records.len()).max(1) as u64;
                if let Some(r) = reservation.as_mut() {
                    // Not interrupted by a stop: the batch is in memory already.
                    or_lost!(self.held, r.settle(bytes as u64));
                }
                metrics::counter!(m::RECORDS_READ).increment(records.len() as u64);
                metrics::counter!(m::BYTES_READ).increment(bytes as u64);
                deaggregate_records(&mut records, &shard_id, self.hash_range);
                if let Some((number, sub)) = skip_through.take() {
                    // Records come in order: only a prefix can be covered.
                    let covered = records
                        .iter()
                        .position(|r| r.position().is_none_or(|(n, s)| n.cmp(&number).then(s.cmp(&sub)).is_gt()))
                        .unwrap_or(records.len());
                    if covered > 0 {
                        records.drain(..covered);
                        let checkpoint = Checkpoint::Sequence { number: number.clone(), sub };
                        tracing::info!(shard_id, skipped = covered, %checkpoint,
                            "read again from the checkpointed record: skipping what the checkpoint covers");
                    }
                    if records.is_empty() {
                        skip_through = Some((number, sub));
                    }
                }
            }
            if !records.is_empty() {
                // Not interrupted by shutdown: the slice in flight is finished. A
                // batch is written and checkpointed a slice (about a second of
                // writes) at a time: a stop (shutdown or handoff) waits for one
                // slice, not for a whole batch at a slow write rate, and a crash
                // replays at most one slice. A checkpoint may so fall inside a
                // KPL aggregate.
                let mut slices = records.chunks(self.processor.slice_len().max(1)).peekable();
                while let Some(slice) = slices.next() {
                    let mut rest = slice;
                    let mut attempt = 0;
                    while !rest.is_empty() {
                        let durable = match or_lost!(
                            self.held,
                            within(self.held.write_fence(), self.processor.process(&shard_id, rest, None))
                        ) {
                            Durable::All => rest.len(),
                            Durable::Before(i) => i.min(rest.len()),
                        };
                        if durable > 0 {
                            let last = &rest[durable - 1];
                            match last.position() {
                                Some((number, sub)) => {
                                    pending.checkpoint = Some(Checkpoint::Sequence { number: number.clone(), sub });
                                    pending.records += durable as u64;
                                    metrics::gauge!(m::RECORDS_SINCE_CHECKPOINT, "shard_id" => shard_id.clone())
                                        .set(pending.records as f64);
                                    let due = pending.due(self.config.checkpoint_interval);
                                    if due.is_some_and(|due| due <= tokio::time::Instant::now())
                                        && !self.flush(&shard_id, pending).await
                                    {
                                        return Exit::LeaseLost;
                                    }
                                    // Should the reader start over, read again from here.
                                    reader.processed(StartAt::AtSequence(number.to_string()));
                                    skip_through = Some((number, sub));
                                }
                                // Kinesis never sends one; if it did, the slice is written, the
                                // next checkpoint covers it, and reading goes on.
                                None => {
                                    tracing::error!(shard_id, sequence_number = %last.sequence_number, "unreadable sequence number; not checkpointing")
                                }
                            }
                            rest = &rest[durable..];
                            attempt = 0;
                        }
                        if !rest.is_empty() {
                            // The processor kept the rest back: hand it again after a pause.
                            tracing::debug!(
                                shard_id,
                                records = rest.len(),
                                attempt,
                                "not yet durable; handing the rest again"
                            );
                            or_lost!(self.held, BACKOFF.sleep(attempt));
                            attempt += 1;
                        }
                    }
                    if slices.peek().is_some() && self.held.stop_token().is_cancelled() {
                        tracing::info!(shard_id, "stopping inside a batch; what is written is checkpointed");
                        return Exit::Stopped;
                    }
                }
                metrics::counter!(m::BATCHES).increment(1);
            }
            if let Some(children) = end {
                return self.finish(&shard_id, children, pending).await;
            }
        }
    }

    async fn finish(&self, shard_id: &str, children: Vec<Shard>, pending: &mut Pending) -> Exit {
        let ids: Vec<String> = children.iter().map(|c| c.id.clone()).collect();
        // SHARD_END covers what is pending.
        pending.checkpoint = None;
        if !self.checkpoint(shard_id, Checkpoint::ShardEnd, &ids, std::mem::take(&mut pending.records)).await {
            return Exit::LeaseLost;
        }
        metrics::gauge!(m::RECORDS_SINCE_CHECKPOINT, "shard_id" => shard_id.to_owned()).set(0.0);
        tracing::info!(shard_id, children = ?ids, "shard ended; checkpointed SHARD_END");
        Exit::ShardEnd { children }
    }

    /// Writes the pending checkpoint, if any. Returns whether the lease is still held.
    async fn flush(&self, shard_id: &str, pending: &mut Pending) -> bool {
        let Some(checkpoint) = pending.checkpoint.take() else { return true };
        let records = std::mem::take(&mut pending.records);
        if !self.checkpoint(shard_id, checkpoint.clone(), &[], records).await {
            return false;
        }
        pending.written_at = Some(tokio::time::Instant::now());
        metrics::gauge!(m::RECORDS_SINCE_CHECKPOINT, "shard_id" => shard_id.to_owned()).set(0.0);
        tracing::debug!(shard_id, records, %checkpoint, "checkpointed");
        true
    }

    /// Writes a checkpoint, retrying store errors until it is written or the
    /// lease is gone. Returns whether the lease is still held.
    async fn checkpoint(&self, shard_id: &str, checkpoint: Checkpoint, children: &[String], records: u64) -> bool {
        let mut attempt = 0;
        loop {
            let written = tokio::select! {
                _ = self.held.gone() => return false,
                written = self.held.checkpoint(checkpoint.clone(), children, records) => written,
            };
            match written {
                Ok(Cas::Done(())) => {
                    metrics::counter!(m::CHECKPOINTS).increment(1);
                    return true;
                }
                Ok(Cas::Lost) => {
                    metrics::counter!(m::CHECKPOINT_FAILURES).increment(1);
                    tracing::warn!(shard_id, %checkpoint, "lease lost; checkpoint not written");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(shard_id, error = %e, attempt, "checkpoint failed, retrying");
                    tokio::select! {
                        _ = self.held.gone() => return false,
                        _ = BACKOFF.sleep(attempt) => {}
                    }
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The consumer's rules on the twins (stream, lease store, tables), under
    //! paused time.

    use super::*;
    use crate::leases::memory::MemoryLeaseStore;
    use crate::leases::LeaseStore;
    use crate::model::Record;
    use crate::model::{Lease, SequenceNumber};
    use crate::processor::sink::MemoryTable;
    use crate::processor::Processor;
    use crate::retrieval::fan_out::FanOutConfig;
    use crate::retrieval::memory::{Fault, MemoryStream, MemorySubscriber};
    use crate::retrieval::polling::PollingConfig;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    /// Every rule holds for both readers.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Polling,
        FanOut,
    }

    /// One test per reader, from `async fn $name(mode: Mode)`.
    macro_rules! both_readers {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                #[tokio::test(start_paused = true)]
                async fn polling() {
                    super::$name(super::Mode::Polling).await
                }
                #[tokio::test(start_paused = true)]
                async fn fan_out() {
                    super::$name(super::Mode::FanOut).await
                }
            }
        )*};
    }

    both_readers!(
        a_closed_shard_is_checkpointed_after_each_written_batch_then_at_its_end,
        a_checkpoint_inside_an_aggregate_resumes_after_its_last_processed_user_record,
        a_stop_inside_an_aggregate_checkpoints_the_last_user_record_written,
        once_the_lease_is_lost_nothing_is_checkpointed_again,
        throttling_errors_and_expired_iterators_are_retried_and_nothing_is_skipped,
        a_stop_returns_with_what_was_written_checkpointed,
    );

    /// Long enough that no fence passes without renewals.
    const FAILOVER: Duration = Duration::from_secs(3600);
    const SHARD: &str = "shardId-000000000000";

    struct Rig {
        stream: Arc<MemoryStream>,
        retrieval: Retrieval,
        store: Arc<MemoryLeaseStore>,
        tweets: Arc<MemoryTable>,
        stop: CancellationToken,
    }

    impl Rig {
        async fn new(records: usize, mode: Mode) -> Self {
            let stream = Arc::new(MemoryStream::new(1));
            let subscriber = Arc::new(MemorySubscriber::new(stream.clone()));
            let retrieval = match mode {
                Mode::Polling => Retrieval::Polling(PollingConfig { max_records: 10, ..PollingConfig::default() }),
                Mode::FanOut => Retrieval::FanOut { subscriber: subscriber.clone(), config: FanOutConfig::default() },
            };
            let rig = Self {
                stream,
                retrieval,
                store: Arc::new(MemoryLeaseStore::new()),
                tweets: Arc::new(MemoryTable::new("tweets", &["Id"])),
                stop: CancellationToken::new(),
            };
            rig.put(0..records);
            let created = rig.store.create(&Lease::new(SHARD, Checkpoint::TrimHorizon, vec![])).await.unwrap();
            assert_eq!(created, Cas::Done(()));
            rig
        }

        fn put(&self, ids: std::ops::Range<usize>) {
            for i in ids {
                self.stream.put(&format!("k{i}"), format!(r#"{{"id_str":"{i}","text":"t"}}"#).as_bytes());
            }
        }

        /// Puts one KPL aggregate of tweets `ids`; returns its sequence number.
        fn put_aggregate(&self, ids: std::ops::Range<usize>) -> String {
            let mut aggregate = crate::kpl::Aggregator::default();
            for i in ids.clone() {
                aggregate.add(&format!("k{i}"), format!(r#"{{"id_str":"{i}","text":"t"}}"#).as_bytes());
            }
            self.stream.put(&format!("k{}", ids.start), &aggregate.finish()).1
        }

        async fn lease(&self) -> Lease {
            self.store.list().await.unwrap().remove(0)
        }

        async fn consumer(&self) -> (Consumer, Arc<HeldLease>) {
            let taken = self.store.take(&self.lease().await, "me").await.unwrap().done().unwrap();
            let held = Arc::new(HeldLease::new(taken, Instant::now(), self.store.clone(), FAILOVER, self.stop.clone()));
            let dead = Arc::new(MemoryTable::new("dead", &["ShardId", "SequenceNumber"]));
            let processor = Arc::new(Processor::new(self.tweets.clone(), dead, None, Duration::from_secs(86_400)));
            let config = ConsumerConfig {
                retrieval: self.retrieval.clone(),
                budget: None,
                // After every slice, as these rules are stated; coalescing has tests of its own.
                checkpoint_interval: Duration::ZERO,
            };
            // The twins end closed shards' subscriptions: the end check is the reader's test.
            let closed = Arc::new(ClosedShards::default());
            let consumer = Consumer {
                held: held.clone(),
                hash_range: None,
                stream: self.stream.clone(),
                closed,
                processor,
                config,
                initial_timestamp: None,
            };
            (consumer, held)
        }

        /// Waits (in paused time) until the stored lease satisfies `done`.
        async fn until(&self, done: impl Fn(&Lease) -> bool) -> Lease {
            for _ in 0..10_000 {
                let lease = self.lease().await;
                if done(&lease) {
                    return lease;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the lease never got there: {:?}", self.lease().await);
        }
    }

    /// The checkpoint of everything put to the shard so far.
    fn at_the_end(stream: &MemoryStream) -> Checkpoint {
        Checkpoint::at(SequenceNumber::parse(&stream.last_sequence(SHARD).unwrap()).unwrap())
    }

    async fn a_closed_shard_is_checkpointed_after_each_written_batch_then_at_its_end(mode: Mode) {
        let rig = Rig::new(25, mode).await;
        let (left, right) = rig.stream.split(SHARD, None).unwrap();
        let (consumer, _) = rig.consumer().await;
        let exit = consumer.run().await;
        let Exit::ShardEnd { children } = exit else { panic!("{exit:?}") };
        let mut ids: Vec<String> = children.into_iter().map(|c| c.id).collect();
        ids.sort();
        assert_eq!(ids, [left, right]);
        let lease = rig.lease().await;
        assert_eq!(rig.tweets.len(), 25);
        assert_eq!((lease.checkpoint.clone(), lease.records_processed), (Checkpoint::ShardEnd, 25));
        // Take, the batches (polling: 10, 10, 5; fan-out: one event), shard end: one write each.
        let batches = match mode {
            Mode::Polling => 3,
            Mode::FanOut => 1,
        };
        assert_eq!(lease.counter, batches + 2, "{lease:?}");
        assert_eq!(lease.children.len(), 2);
    }

    async fn a_checkpoint_inside_an_aggregate_resumes_after_its_last_processed_user_record(mode: Mode) {
        let rig = Rig::new(0, mode).await;
        rig.put(0..3);
        let aggregate = rig.put_aggregate(3..33);
        rig.put(33..35);
        // A KCL (or this worker) processed user records 0..=9 of the aggregate.
        let inside = Checkpoint::at(SequenceNumber::parse(&aggregate).unwrap()).with_sub(9);
        rig.store.rewind(&rig.lease().await, &inside).await.unwrap().done().unwrap();
        let (consumer, _) = rig.consumer().await;
        let end = at_the_end(&rig.stream);
        let task = tokio::spawn(consumer.run());
        let lease = rig.until(|l| l.checkpoint == end).await;
        rig.stop.cancel();
        assert_eq!(task.await.unwrap(), Exit::Stopped);
        let mut ids: Vec<usize> = rig.tweets.rows.lock().unwrap().keys().map(|k| k[0].parse().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, (13..35).collect::<Vec<_>>(), "nothing at or below the checkpoint, nothing after it missed");
        assert_eq!(lease.records_processed, 22);
        let row = rig.tweets.get(&["13"]).unwrap();
        assert_eq!(
            (row["SequenceNumber"].as_s().unwrap(), row["SubSequenceNumber"].as_n().unwrap()),
            (&aggregate, &"10".to_owned())
        );
    }

    async fn a_stop_inside_an_aggregate_checkpoints_the_last_user_record_written(mode: Mode) {
        let rig = Rig::new(0, mode).await;
        let aggregate = rig.put_aggregate(0..100);
        let (mut consumer, _) = rig.consumer().await;
        // 25 writes/s: the aggregate is written 25 user records at a time.
        let tweets = rig.tweets.clone();
        let dead = Arc::new(MemoryTable::new("dead", &["ShardId", "SequenceNumber"]));
        consumer.processor =
            Arc::new(Processor::new(tweets, dead, std::num::NonZeroU32::new(25), Duration::from_secs(60)));
        let task = tokio::spawn(consumer.run());
        rig.until(|_| rig.tweets.len() >= 25).await;
        rig.stop.cancel();
        assert_eq!(task.await.unwrap(), Exit::Stopped);
        let lease = rig.lease().await;
        let written = rig.tweets.len() as u64;
        assert!(written < 100, "stopped inside the aggregate");
        assert_eq!(lease.checkpoint, Checkpoint::at(SequenceNumber::parse(&aggregate).unwrap()).with_sub(written - 1));
        assert_eq!(lease.records_processed, written);
    }

    async fn once_the_lease_is_lost_nothing_is_checkpointed_again(mode: Mode) {
        let rig = Rig::new(10, mode).await;
        let (consumer, held) = rig.consumer().await;
        let end = at_the_end(&rig.stream);
        let task = tokio::spawn(consumer.run());
        let read = rig.until(|l| l.checkpoint == end).await;
        // An operator's rewind takes the lease away while the consumer reads on.
        rig.store.rewind(&read, &Checkpoint::TrimHorizon).await.unwrap().done().unwrap();
        rig.put(10..30);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!held.renew().await.unwrap(), "the renewal finds the lease lost");
        assert_eq!(task.await.unwrap(), Exit::LeaseLost);
        let lease = rig.lease().await;
        assert_eq!(
            (lease.checkpoint, lease.owner),
            (Checkpoint::TrimHorizon, None),
            "never checkpointed after the loss"
        );
    }

    async fn throttling_errors_and_expired_iterators_are_retried_and_nothing_is_skipped(mode: Mode) {
        let rig = Rig::new(30, mode).await;
        rig.stream.split(SHARD, None).unwrap();
        rig.stream.inject([Fault::Throttled, Fault::Transient, Fault::ExpiredIterator, Fault::Throttled]);
        rig.stream.set_latency(Duration::from_millis(30));
        let (consumer, _) = rig.consumer().await;
        assert!(matches!(consumer.run().await, Exit::ShardEnd { .. }));
        assert_eq!(rig.tweets.len(), 30);
        assert_eq!(rig.lease().await.records_processed, 30, "each record checkpointed once");
    }

    #[tokio::test(start_paused = true)]
    async fn checkpoints_are_coalesced_to_one_per_interval_and_written_at_a_stop() {
        let rig = Rig::new(100, Mode::Polling).await;
        let (mut consumer, _) = rig.consumer().await;
        consumer.config.checkpoint_interval = Duration::from_secs(5);
        let taken = rig.lease().await.counter;
        let started = Instant::now();
        let end = at_the_end(&rig.stream);
        let task = tokio::spawn(consumer.run());
        rig.until(|_| rig.tweets.len() == 100).await;
        // Written (ten reads of ten); the first slice checkpointed at once, the
        // rest not yet: the interval has not passed.
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let first = rig.lease().await;
        assert_eq!((first.counter - taken, first.records_processed), (1, 10), "{first:?}");
        let lease = rig.until(|l| l.checkpoint == end).await;
        assert!(started.elapsed() >= Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!((lease.counter - taken, lease.records_processed), (2, 100), "one checkpoint for nine slices");
        // More: written at once, checkpointed at the stop without waiting for the interval.
        rig.put(100..110);
        rig.until(|_| rig.tweets.len() == 110).await;
        let stopped_at = Instant::now();
        rig.stop.cancel();
        assert_eq!(task.await.unwrap(), Exit::Stopped);
        assert!(stopped_at.elapsed() < Duration::from_secs(1), "{:?}", stopped_at.elapsed());
        let lease = rig.lease().await;
        assert_eq!(lease.checkpoint, at_the_end(&rig.stream));
        assert_eq!((lease.counter - taken, lease.records_processed), (3, 110));
    }

    /// Writes the first half of what it is handed and says so; one record, all of it.
    struct Halves {
        inner: Arc<dyn RecordProcessor>,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl RecordProcessor for Halves {
        async fn process(&self, shard_id: &str, records: &[Record], deadline: Option<Instant>) -> Durable {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The sink's writes run within the lease's fence (crate::fence).
            let fence = crate::fence::current().expect("processing runs within the lease's fence");
            assert!(fence > Instant::now(), "handed records past the fence");
            let half = records.len().div_ceil(2);
            assert_eq!(self.inner.process(shard_id, &records[..half], deadline).await, Durable::All);
            if half == records.len() {
                Durable::All
            } else {
                Durable::Before(half)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_processor_keeps_back_is_handed_again_and_what_it_made_durable_is_checkpointed() {
        let rig = Rig::new(40, Mode::Polling).await;
        rig.stream.split(SHARD, None).unwrap();
        let (mut consumer, _) = rig.consumer().await;
        let halves = Arc::new(Halves { inner: consumer.processor.clone(), calls: Default::default() });
        consumer.processor = halves.clone();
        assert!(matches!(consumer.run().await, Exit::ShardEnd { .. }));
        let mut ids: Vec<usize> = rig.tweets.rows.lock().unwrap().keys().map(|k| k[0].parse().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, (0..40).collect::<Vec<_>>(), "each record written, none skipped");
        let lease = rig.lease().await;
        assert_eq!((lease.checkpoint, lease.records_processed), (Checkpoint::ShardEnd, 40), "each checkpointed once");
        // Four reads of ten: 10 → 5 + 3 + 1 + 1 durable, four calls each.
        assert_eq!(halves.calls.load(std::sync::atomic::Ordering::Relaxed), 16);
    }

    async fn a_stop_returns_with_what_was_written_checkpointed(mode: Mode) {
        let rig = Rig::new(30, mode).await;
        let (consumer, _) = rig.consumer().await;
        let end = at_the_end(&rig.stream);
        let task = tokio::spawn(consumer.run());
        rig.until(|l| l.checkpoint == end).await;
        rig.stop.cancel();
        assert_eq!(task.await.unwrap(), Exit::Stopped);
        let lease = rig.lease().await;
        assert_eq!((lease.checkpoint, lease.records_processed), (end, 30));
        assert_eq!(lease.owner.as_deref(), Some("me"), "releasing is the coordinator's job");
    }
}
