//! Reading the stream: the narrow [`StreamClient`] (polling) and [`Subscriber`]
//! (enhanced fan-out) edges, their Kinesis implementations and in-memory twins,
//! and the [`ShardReader`] seam through which a shard's consumer reads either way.

pub mod fan_out;
pub mod kinesis;
pub mod memory;
pub mod polling;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::aws::ErrorClass;
use crate::model::{HashRange, Record};

/// A shard as ListShards describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shard {
    /// The shard id, e.g. `shardId-000000000003`; also the key of its lease.
    pub id: String,
    /// `ParentShardId` and `AdjacentParentShardId`, when present.
    pub parents: Vec<String>,
    /// `HashKeyRange`, when given (ListShards and ChildShards give it).
    pub hash_range: Option<HashRange>,
    /// ListShards gives an `EndingSequenceNumber`: no record goes to it any more.
    pub closed: bool,
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// `TRIM_HORIZON`: the oldest record the stream retains.
    TrimHorizon,
    /// `LATEST`: the tip of the shard: only records put from then on.
    Latest,
    /// `AT_TIMESTAMP`: the first record that arrived at or after this time.
    AtTimestamp(DateTime<Utc>),
    /// `AFTER_SEQUENCE_NUMBER`: just after the record with this sequence number
    /// (where a fan-out subscription continues).
    AfterSequence(String),
    /// The record itself included: a checkpoint inside a KPL aggregate resumes
    /// there and skips the user records already processed.
    AtSequence(String),
}

/// One GetRecords response.
#[derive(Debug, Clone, Default)]
pub struct RecordBatch {
    /// The records in sequence order (possibly none), as Kinesis records:
    /// aggregates are not yet split.
    pub records: Vec<Record>,
    /// `None` once the shard is closed and every record was returned.
    pub next_iterator: Option<String>,
    /// `MillisBehindLatest`: how far the shard's tip is ahead of this response, in
    /// milliseconds; `None` when the service does not say.
    pub millis_behind_latest: Option<i64>,
    /// Children announced at shard end (some implementations never send them).
    pub child_shards: Vec<Shard>,
}

/// A failed stream call (ListShards, GetShardIterator, GetRecords,
/// SubscribeToShard), classed by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class:?}: {message}")]
pub struct StreamError {
    /// How the call failed; it tells the caller whether to retry, slow down, get a
    /// new iterator or give up.
    pub class: ErrorClass,
    /// The error, for logs.
    pub message: String,
}

/// The stream, as the worker needs it.
///
/// Contract: `get_records` returns records of one shard in sequence order; a
/// closed shard's last response has no next iterator. Errors carry their class:
/// `ExpiredIterator` means "get a new iterator", `Throttled` "slow down".
#[async_trait]
pub trait StreamClient: Send + Sync + 'static {
    /// Every shard of the stream (open and closed, within retention).
    async fn list_shards(&self) -> Result<Vec<Shard>, StreamError>;
    /// A shard iterator (GetShardIterator) for `shard_id` at `start`.
    /// [`ErrorClass::NotFound`] means the shard is gone or past retention.
    async fn shard_iterator(&self, shard_id: &str, start: &StartAt) -> Result<String, StreamError>;
    /// One GetRecords call: at most `limit` records (1 to 10,000) from `iterator`,
    /// with the next iterator.
    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordBatch, StreamError>;
}

/// What a [`ShardReader`] read.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Records in sequence order (possibly none).
    pub records: Vec<Record>,
    /// How far the shard's tip is ahead of them.
    pub millis_behind_latest: Option<i64>,
    /// `Some` once the shard is closed and these were its last records: its
    /// children, when the service named them.
    pub end: Option<Vec<Shard>>,
}

/// One shard read in order, by polling or by a subscription. The consumer's
/// rules (checkpoint after a durable write, never after the lease is lost,
/// `SHARD_END` at the end) stay in the consumer, the same for every reader.
///
/// Contract: a reader retries what can be retried itself (throttling, errors,
/// expired iterators, ended subscriptions) and returns only records or the end;
/// dropping a pending `read` loses nothing that was processed.
#[async_trait]
pub trait ShardReader: Send {
    /// Waits until the next read may start (polling: the call interval;
    /// fan-out: the next event, then held); the consumer reserves memory for
    /// the read after it, so that a shard waiting holds none.
    async fn ready(&mut self) {}
    /// The next records of the shard, or its end. Failures are retried inside, so
    /// it returns only records (possibly none) or the end.
    async fn read(&mut self) -> Read;
    /// Everything up to this position is processed: a reader that has to start
    /// over (an expired iterator) starts here.
    fn processed(&mut self, at: StartAt);
}

/// One SubscribeToShard event.
#[derive(Debug, Clone, Default)]
pub struct ShardEvent {
    /// The event's records in sequence order (possibly none), as Kinesis records:
    /// aggregates are not yet split.
    pub records: Vec<Record>,
    /// Where the next subscription continues (`AFTER_SEQUENCE_NUMBER`); `None`
    /// once the shard is closed and fully delivered.
    pub continuation: Option<String>,
    /// `MillisBehindLatest`: how far the shard's tip is ahead of these records, in
    /// milliseconds.
    pub millis_behind_latest: Option<i64>,
    /// The children, in the shard's last event.
    pub child_shards: Vec<Shard>,
}

/// Enhanced fan-out, as the worker needs it: a subscription to one shard for the
/// registered stream consumer.
#[async_trait]
pub trait Subscriber: Send + Sync + 'static {
    /// Starts a SubscribeToShard subscription to `shard_id` from `start`. An
    /// [`ErrorClass::InUse`] error means another subscription to the shard is still
    /// live; [`ErrorClass::NotFound`] that the shard is gone.
    async fn subscribe(&self, shard_id: &str, start: &StartAt) -> Result<Box<dyn Subscription>, StreamError>;
}

/// A live subscription: events in order until the service ends it (after five
/// minutes on AWS).
#[async_trait]
pub trait Subscription: Send {
    /// The next event; `Ok(None)` once the subscription has ended.
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, StreamError>;
}

/// Which shards the last ListShards reported closed (shard sync fills it): a
/// fan-out reader whose subscription stays idle on one of them confirms its end
/// with GetRecords, for services that never end a closed shard's subscription.
#[derive(Debug, Default)]
pub struct ClosedShards(RwLock<HashSet<String>>);

impl ClosedShards {
    /// Replaces the set with the closed shards among `shards` (a ListShards
    /// result).
    pub fn set(&self, shards: &[Shard]) {
        *self.0.write().unwrap() = shards.iter().filter(|s| s.closed).map(|s| s.id.clone()).collect();
    }

    /// Whether the last ListShards reported `shard_id` closed.
    pub fn contains(&self, shard_id: &str) -> bool {
        self.0.read().unwrap().contains(shard_id)
    }
}

/// How a worker reads its shards (`--retrieval`).
#[derive(Clone)]
pub enum Retrieval {
    /// GetRecords, shared with every other polling consumer of the stream.
    Polling(polling::PollingConfig),
    /// SubscribeToShard: a pipe of its own per shard for the registered consumer.
    FanOut {
        /// Opens the subscriptions:
        /// [`KinesisSubscriber`](kinesis::KinesisSubscriber) for the registered
        /// stream consumer.
        subscriber: Arc<dyn Subscriber>,
        /// When a subscription is replaced, and when a closed shard's end is
        /// checked with GetRecords.
        config: fan_out::FanOutConfig,
    },
}

impl std::fmt::Debug for Retrieval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Polling(config) => f.debug_tuple("Polling").field(config).finish(),
            Self::FanOut { config, .. } => f.debug_struct("FanOut").field("config", config).finish(),
        }
    }
}

impl Retrieval {
    /// A reader of `shard_id` from `start`.
    pub fn reader(
        &self,
        stream: Arc<dyn StreamClient>,
        closed: Arc<ClosedShards>,
        shard_id: &str,
        start: StartAt,
    ) -> Box<dyn ShardReader> {
        match self {
            Self::Polling(config) => Box::new(polling::PollingReader::new(stream, shard_id, start, config.clone())),
            Self::FanOut { subscriber, config } => Box::new(fan_out::FanOutReader::new(
                subscriber.clone(),
                stream,
                closed,
                shard_id,
                start,
                config.clone(),
            )),
        }
    }

    /// The records a read is assumed to bring, for the memory budget:
    /// `--max-records` when polling; for fan-out, as many as a default poll.
    pub fn records_per_read(&self) -> u64 {
        match self {
            Self::Polling(config) => config.max_records.max(1) as u64,
            Self::FanOut { .. } => polling::PollingConfig::default().max_records as u64,
        }
    }

    /// The label of `stream_worker_*` metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Polling(_) => "polling",
            Self::FanOut { .. } => "fan-out",
        }
    }
}
