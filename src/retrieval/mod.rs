//! Reading the stream: the narrow [`StreamClient`] edge, its Kinesis
//! implementation (polling GetRecords) and its in-memory twin.

pub mod kinesis;
pub mod memory;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::aws::ErrorClass;
use crate::processor::{HashRange, Record};

/// A shard as ListShards describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shard {
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
    TrimHorizon,
    Latest,
    AtTimestamp(DateTime<Utc>),
    AfterSequence(String),
    /// The record itself included: a checkpoint inside a KPL aggregate resumes
    /// there and skips the user records already processed.
    AtSequence(String),
}

/// One GetRecords response.
#[derive(Debug, Clone, Default)]
pub struct RecordBatch {
    pub records: Vec<Record>,
    /// `None` once the shard is closed and every record was returned.
    pub next_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
    /// Children announced at shard end (some implementations never send them).
    pub child_shards: Vec<Shard>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{class:?}: {message}")]
pub struct StreamError {
    pub class: ErrorClass,
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
    async fn shard_iterator(&self, shard_id: &str, start: &StartAt) -> Result<String, StreamError>;
    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordBatch, StreamError>;
}
