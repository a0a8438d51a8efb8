//! In-memory twin of a Kinesis stream, for fast tests of the consumer, the
//! coordinator and the fleet under controlled time. `tests/e2e/conformance.rs`
//! runs one conformance suite against it and against the Kinesis emulator, so
//! that the twin keeps to the contract of [`StreamClient`].
//!
//! Like Kinesis: records are routed by the MD5 of their partition key (or an
//! explicit hash key) into the open shard whose hash key range holds it;
//! sequence numbers grow within a shard; a split or merge closes the parents
//! and opens children; a closed shard's last GetRecords has no next iterator and
//! names the children. Knobs inject throttling, errors, expired iterators and
//! latency (slept through `tokio::time`, so paused time drives it).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::{RecordBatch, Shard, ShardEvent, StartAt, StreamClient, StreamError, Subscriber, Subscription};
use crate::aws::ErrorClass;
use crate::model::Record;
use crate::model::SequenceNumber;

/// A fault to answer a coming call with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `ProvisionedThroughputExceededException`.
    Throttled,
    /// A 500.
    Transient,
    /// `ExpiredIteratorException` (GetRecords only).
    ExpiredIterator,
    /// PutRecords only: the call succeeds but every other entry is refused
    /// with `ProvisionedThroughputExceededException`.
    PartialPut,
}

#[derive(Debug)]
struct ShardState {
    id: String,
    parents: Vec<String>,
    /// Inclusive hash key range.
    range: (u128, u128),
    records: Vec<Record>,
    closed: bool,
    children: Vec<Shard>,
}

#[derive(Debug, Default)]
struct Inner {
    shards: Vec<ShardState>,
    next_sequence: u128,
    /// Faults for the next calls, in order (any call that can fail takes one).
    faults: VecDeque<Fault>,
    latency: Duration,
    get_records_calls: u64,
}

/// What the twin has served, for tests that check call counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// GetRecords calls so far, faulted ones included.
    pub get_records: u64,
}

/// The in-memory twin of a Kinesis stream, a [`StreamClient`] (see the module
/// docs). Build it with [`MemoryStream::new`], put records with
/// [`MemoryStream::put`], reshard with [`MemoryStream::split`] and
/// [`MemoryStream::merge`], and inject faults with [`MemoryStream::inject`].
#[derive(Debug, Default)]
pub struct MemoryStream {
    inner: Mutex<Inner>,
}

/// Sequence numbers start here, so that they have Kinesis' many digits and no
/// leading zeros.
const SEQUENCE_BASE: u128 = 49_000_000_000_000_000_000_000_000_000;

fn shard_id(n: usize) -> String {
    format!("shardId-{n:012}")
}

fn error(class: ErrorClass, message: impl Into<String>) -> StreamError {
    StreamError { class, message: message.into() }
}

pub use crate::kpl::hash_key;

impl MemoryStream {
    /// A stream of `shards` open shards splitting the hash key space evenly.
    pub fn new(shards: usize) -> Self {
        assert!(shards > 0, "a stream has at least one shard");
        let width = u128::MAX / shards as u128;
        let shards = (0..shards)
            .map(|i| {
                let start = width * i as u128;
                let end = if i + 1 == shards { u128::MAX } else { start + width - 1 };
                ShardState {
                    id: shard_id(i),
                    parents: Vec::new(),
                    range: (start, end),
                    records: Vec::new(),
                    closed: false,
                    children: Vec::new(),
                }
            })
            .collect();
        Self { inner: Mutex::new(Inner { shards, next_sequence: SEQUENCE_BASE, ..Default::default() }) }
    }

    /// Puts a record keyed by `partition_key`; returns its shard and sequence number.
    pub fn put(&self, partition_key: &str, data: &[u8]) -> (String, String) {
        self.put_hashed(hash_key(partition_key), partition_key, data)
    }

    /// Puts a record at an explicit hash key.
    pub fn put_hashed(&self, hash: u128, partition_key: &str, data: &[u8]) -> (String, String) {
        let mut inner = self.inner.lock().unwrap();
        let sequence = inner.next_sequence.to_string();
        inner.next_sequence += 1;
        let shard = inner
            .shards
            .iter_mut()
            .find(|s| !s.closed && s.range.0 <= hash && hash <= s.range.1)
            .expect("the open shards cover the hash key space");
        shard.records.push(Record {
            sequence_number: sequence.clone(),
            partition_key: partition_key.to_owned(),
            data: data.to_vec(),
            arrival: Utc::now(),
            sub_sequence: None,
        });
        (shard.id.clone(), sequence)
    }

    /// Splits an open shard at `at` (default: the middle of its range); returns
    /// the two children.
    pub fn split(&self, shard: &str, at: Option<u128>) -> Result<(String, String), StreamError> {
        let mut inner = self.inner.lock().unwrap();
        let next = inner.shards.len();
        let parent = inner
            .shards
            .iter_mut()
            .find(|s| s.id == shard && !s.closed)
            .ok_or_else(|| error(ErrorClass::NotFound, format!("no open shard {shard}")))?;
        let (start, end) = parent.range;
        let at = at.unwrap_or(start + (end - start) / 2 + 1);
        if at <= start || at > end {
            return Err(error(ErrorClass::Rejected, format!("{at} is not inside {shard}'s hash key range")));
        }
        let children = [(shard_id(next), (start, at - 1)), (shard_id(next + 1), (at, end))];
        parent.closed = true;
        parent.children = children
            .iter()
            .map(|(id, range)| Shard {
                id: id.clone(),
                parents: vec![shard.into()],
                hash_range: Some(*range),
                closed: false,
            })
            .collect();
        for (id, range) in children.clone() {
            inner.shards.push(ShardState {
                id,
                parents: vec![shard.to_owned()],
                range,
                records: Vec::new(),
                closed: false,
                children: Vec::new(),
            });
        }
        Ok((children[0].0.clone(), children[1].0.clone()))
    }

    /// Merges two open shards with adjacent ranges; returns the child.
    pub fn merge(&self, a: &str, b: &str) -> Result<String, StreamError> {
        let mut inner = self.inner.lock().unwrap();
        let find = |inner: &Inner, id: &str| {
            inner
                .shards
                .iter()
                .position(|s| s.id == id && !s.closed)
                .ok_or_else(|| error(ErrorClass::NotFound, format!("no open shard {id}")))
        };
        let (ia, ib) = (find(&inner, a)?, find(&inner, b)?);
        let (ra, rb) = (inner.shards[ia].range, inner.shards[ib].range);
        let (low, high) = if ra.0 < rb.0 { (ra, rb) } else { (rb, ra) };
        if low.1.checked_add(1) != Some(high.0) {
            return Err(error(ErrorClass::Rejected, format!("{a} and {b} are not adjacent")));
        }
        let child = shard_id(inner.shards.len());
        let parents = vec![a.to_owned(), b.to_owned()];
        for i in [ia, ib] {
            inner.shards[i].closed = true;
            inner.shards[i].children = vec![Shard {
                id: child.clone(),
                parents: parents.clone(),
                hash_range: Some((low.0, high.1)),
                closed: false,
            }];
        }
        inner.shards.push(ShardState {
            id: child.clone(),
            parents,
            range: (low.0, high.1),
            records: Vec::new(),
            closed: false,
            children: Vec::new(),
        });
        Ok(child)
    }

    /// Answers the coming calls with these faults, one call each, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    /// Every call waits this long before it is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.lock().unwrap().latency = latency;
    }

    /// The shards that take new records.
    pub fn open_shards(&self) -> Vec<String> {
        self.inner.lock().unwrap().shards.iter().filter(|s| !s.closed).map(|s| s.id.clone()).collect()
    }

    /// The sequence number of the last record put to `shard`.
    pub fn last_sequence(&self, shard: &str) -> Option<String> {
        let inner = self.inner.lock().unwrap();
        inner.shards.iter().find(|s| s.id == shard)?.records.last().map(|r| r.sequence_number.clone())
    }

    /// Every record in the stream: (partition key, data), shard by shard.
    pub fn records(&self) -> Vec<(String, Vec<u8>)> {
        let inner = self.inner.lock().unwrap();
        inner.shards.iter().flat_map(|s| s.records.iter().map(|r| (r.partition_key.clone(), r.data.clone()))).collect()
    }

    /// What the twin has served so far.
    pub fn calls(&self) -> Calls {
        Calls { get_records: self.inner.lock().unwrap().get_records_calls }
    }

    pub(crate) async fn wait_and_take_fault(&self) -> Option<Fault> {
        let latency = self.inner.lock().unwrap().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        self.inner.lock().unwrap().faults.pop_front()
    }
}

pub(crate) fn fault_error(fault: Fault) -> StreamError {
    match fault {
        Fault::Throttled => error(ErrorClass::Throttled, "ProvisionedThroughputExceededException: injected"),
        Fault::Transient => error(ErrorClass::Transient, "InternalFailure: injected"),
        Fault::ExpiredIterator => error(ErrorClass::ExpiredIterator, "ExpiredIteratorException: injected"),
        Fault::PartialPut => error(ErrorClass::Throttled, "ProvisionedThroughputExceededException: injected"),
    }
}

/// An iterator: the shard and the index of the next record.
fn iterator(shard: &str, index: usize) -> String {
    format!("{shard}/{index}")
}

fn parse_iterator(iterator: &str) -> Option<(&str, usize)> {
    let (shard, index) = iterator.rsplit_once('/')?;
    Some((shard, index.parse().ok()?))
}

#[async_trait]
impl StreamClient for MemoryStream {
    async fn list_shards(&self) -> Result<Vec<Shard>, StreamError> {
        match self.wait_and_take_fault().await {
            Some(Fault::ExpiredIterator) | None => {}
            Some(fault) => return Err(fault_error(fault)),
        }
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .shards
            .iter()
            .map(|s| Shard {
                id: s.id.clone(),
                parents: s.parents.clone(),
                hash_range: Some(s.range),
                closed: s.closed,
            })
            .collect())
    }

    async fn shard_iterator(&self, shard_id: &str, start: &StartAt) -> Result<String, StreamError> {
        match self.wait_and_take_fault().await {
            Some(Fault::ExpiredIterator) | None => {}
            Some(fault) => return Err(fault_error(fault)),
        }
        let inner = self.inner.lock().unwrap();
        let shard =
            inner.shards.iter().find(|s| s.id == shard_id).ok_or_else(|| {
                error(ErrorClass::NotFound, format!("ResourceNotFoundException: no shard {shard_id}"))
            })?;
        let index = match start {
            StartAt::TrimHorizon => 0,
            StartAt::Latest => shard.records.len(),
            StartAt::AtTimestamp(t) => {
                shard.records.iter().position(|r| r.arrival >= *t).unwrap_or(shard.records.len())
            }
            StartAt::AfterSequence(seq) | StartAt::AtSequence(seq) => {
                let from = SequenceNumber::parse(seq)
                    .ok_or_else(|| error(ErrorClass::Rejected, format!("InvalidArgumentException: {seq}")))?;
                let at = matches!(start, StartAt::AtSequence(_));
                shard
                    .records
                    .iter()
                    .position(|r| {
                        let n = SequenceNumber::parse(&r.sequence_number).expect("the twin's own");
                        n > from || (at && n == from)
                    })
                    .unwrap_or(shard.records.len())
            }
        };
        Ok(iterator(shard_id, index))
    }

    async fn get_records(&self, it: &str, limit: i32) -> Result<RecordBatch, StreamError> {
        let fault = self.wait_and_take_fault().await;
        let mut inner = self.inner.lock().unwrap();
        inner.get_records_calls += 1;
        if let Some(fault) = fault {
            return Err(fault_error(fault));
        }
        let (shard_id, index) =
            parse_iterator(it).ok_or_else(|| error(ErrorClass::Rejected, format!("InvalidArgumentException: {it}")))?;
        let shard =
            inner.shards.iter().find(|s| s.id == shard_id).ok_or_else(|| {
                error(ErrorClass::NotFound, format!("ResourceNotFoundException: no shard {shard_id}"))
            })?;
        let end = (index + limit.clamp(1, 10_000) as usize).min(shard.records.len());
        let records = shard.records[index.min(end)..end].to_vec();
        let caught_up = end == shard.records.len();
        let millis_behind_latest = match (caught_up, shard.records.get(end)) {
            (false, Some(next)) => (Utc::now() - next.arrival).num_milliseconds().max(0),
            _ => 0,
        };
        let (next_iterator, child_shards) = if caught_up && shard.closed {
            (None, shard.children.clone())
        } else {
            (Some(iterator(shard_id, end)), Vec::new())
        };
        Ok(RecordBatch { records, next_iterator, millis_behind_latest: Some(millis_behind_latest), child_shards })
    }
}

/// Enhanced fan-out on the twin: a subscription sends an event with the
/// records put since the last one every `cadence` (the first at once) and ends
/// after `lifetime`; one subscription per shard at a time
/// (`ResourceInUseException` otherwise). As on AWS, a closed shard's last event
/// has no continuation and names the children. Subscribing takes the stream's
/// injected faults.
#[derive(Debug)]
pub struct MemorySubscriber {
    stream: Arc<MemoryStream>,
    /// How often a subscription sends an event (default 1 s); the first comes at
    /// once.
    pub cadence: Duration,
    /// How long a subscription lasts before the twin ends it (default 300 s, as on
    /// AWS).
    pub lifetime: Duration,
    live: Arc<Mutex<HashSet<String>>>,
    subscriptions: Mutex<u64>,
}

impl MemorySubscriber {
    /// A subscriber on `stream` with AWS-like timings: an event every second, a
    /// subscription ended after 300 s. Change `cadence` and `lifetime` to taste.
    pub fn new(stream: Arc<MemoryStream>) -> Self {
        Self {
            stream,
            cadence: Duration::from_secs(1),
            lifetime: Duration::from_secs(300),
            live: Arc::default(),
            subscriptions: Mutex::new(0),
        }
    }

    /// Subscriptions started so far.
    pub fn subscriptions(&self) -> u64 {
        *self.subscriptions.lock().unwrap()
    }
}

#[async_trait]
impl Subscriber for MemorySubscriber {
    async fn subscribe(&self, shard_id: &str, start: &StartAt) -> Result<Box<dyn Subscription>, StreamError> {
        if let Some(fault) = self.stream.wait_and_take_fault().await {
            return Err(fault_error(fault));
        }
        let iterator = self.stream.shard_iterator(shard_id, start).await?;
        if !self.live.lock().unwrap().insert(shard_id.to_owned()) {
            return Err(error(
                ErrorClass::InUse,
                format!("ResourceInUseException: another active subscription exists on {shard_id}"),
            ));
        }
        *self.subscriptions.lock().unwrap() += 1;
        let continuation = {
            let (_, index) = parse_iterator(&iterator).expect("the twin's own");
            let inner = self.stream.inner.lock().unwrap();
            let shard = inner.shards.iter().find(|s| s.id == shard_id).expect("it has an iterator");
            match index.checked_sub(1) {
                Some(before) => shard.records[before].sequence_number.clone(),
                None => (SEQUENCE_BASE - 1).to_string(),
            }
        };
        Ok(Box::new(MemorySubscription {
            stream: self.stream.clone(),
            shard_id: shard_id.to_owned(),
            iterator: Some(iterator),
            continuation,
            ends: tokio::time::Instant::now() + self.lifetime,
            next: tokio::time::Instant::now(),
            cadence: self.cadence,
            live: self.live.clone(),
        }))
    }
}

struct MemorySubscription {
    stream: Arc<MemoryStream>,
    shard_id: String,
    iterator: Option<String>,
    continuation: String,
    ends: tokio::time::Instant,
    next: tokio::time::Instant,
    cadence: Duration,
    live: Arc<Mutex<HashSet<String>>>,
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.live.lock().unwrap().remove(&self.shard_id);
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, StreamError> {
        tokio::time::sleep_until(self.next).await;
        self.next += self.cadence;
        let Some(iterator) = self.iterator.take() else { return Ok(None) };
        if tokio::time::Instant::now() >= self.ends {
            return Ok(None);
        }
        let batch = self.stream.get_records(&iterator, 10_000).await?;
        if let Some(last) = batch.records.last() {
            self.continuation = last.sequence_number.clone();
        }
        self.iterator = batch.next_iterator;
        Ok(Some(ShardEvent {
            records: batch.records,
            continuation: self.iterator.as_ref().map(|_| self.continuation.clone()),
            millis_behind_latest: batch.millis_behind_latest,
            child_shards: batch.child_shards,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_route_by_md5_into_the_open_shard_that_holds_the_hash() {
        let s = MemoryStream::new(4);
        // MD5("a") = 0cc175b9…: in the first quarter of the hash key space.
        assert_eq!(hash_key("a") >> 120, 0x0c);
        assert_eq!(s.put("a", b"1").0, "shardId-000000000000");
        let (left, right) = s.split("shardId-000000000000", None).unwrap();
        assert_eq!(s.put("a", b"2").0, left, "0x0c… is in the lower half of the first quarter");
        assert_eq!((left.as_str(), right.as_str()), ("shardId-000000000004", "shardId-000000000005"));
        assert!(s.split("shardId-000000000000", None).is_err(), "a closed shard cannot split again");
        assert_eq!(s.merge(&left, &right).unwrap(), "shardId-000000000006");
        assert!(s.merge("shardId-000000000001", "shardId-000000000003").is_err(), "not adjacent");
    }
}
