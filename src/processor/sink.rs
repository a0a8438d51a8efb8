//! Writing items to a DynamoDB table: BatchWriteItem in chunks of 25 under the
//! shared rate limit, `UnprocessedItems` and throttling retried with backoff and
//! full jitter, items the table refuses isolated and handed back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, OnDemandThroughput, ProvisionedThroughputDescription, PutRequest, TableDescription,
    WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures::StreamExt;

use super::rate::AdaptiveRate;
use crate::aws::{classify, describe, write_units, ErrorClass};
use crate::metrics as m;
use crate::retry::Backoff;

/// A DynamoDB item: attribute names to values.
pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's BatchWriteItem limit.
pub const MAX_BATCH_ITEMS: usize = 25;

/// How many chunks of one call are in flight at once.
const CHUNK_CONCURRENCY: usize = 4;

const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(10));

/// Why a [`BatchWriter`] call failed: retrying may help or not.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// Throttled, 5xx, timeout, unreachable: the same request may succeed later.
    #[error("{class:?}: {message}")]
    Retryable {
        /// How the call failed: [`ErrorClass::Throttled`] also slows the table's
        /// write rate.
        class: ErrorClass,
        /// The error's message, for the log (from DynamoDB, the whole error chain
        /// on one line).
        message: String,
    },
    /// The table refuses the request as it is (validation, item too large, ...).
    #[error("{0}")]
    Rejected(String),
}

/// One table's batch write: the narrow edge the processor writes through.
///
/// Contract: `write` puts every item or returns the ones not (yet) written
/// (DynamoDB's `UnprocessedItems`); an `Err` means none of them is known written.
/// Putting an item again overwrites it (idempotent by key). Items are moved into
/// the request, as the SDK consumes what it sends: after an `Err` they are gone,
/// and the caller rebuilds them (see [`Rebuild`]) rather than every call
/// sending a clone.
#[async_trait]
pub trait BatchWriter: Send + Sync + 'static {
    /// Puts `items` (at most [`MAX_BATCH_ITEMS`], DynamoDB's limit) in one call;
    /// returns those not written yet (DynamoDB's `UnprocessedItems`), empty when
    /// all are.
    async fn write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError>;
    /// The table's name, for logs and metrics.
    fn table(&self) -> &str;
    /// The table's own limit on writes, in write units per second, if it has
    /// one (see [`write_limit`]).
    async fn write_limit(&self) -> Result<Option<u32>, WriteError> {
        Ok(None)
    }
}

/// A table's limit on writes, in write units per second: a provisioned table's
/// write capacity, or an on-demand table's maximum write request units; the
/// lowest of the table's and its global secondary indexes' (every put also
/// writes to each index). `None`: no limit but DynamoDB's own.
pub fn write_limit(table: &TableDescription) -> Option<u32> {
    let on_demand = table.billing_mode_summary().and_then(|b| b.billing_mode()) == Some(&BillingMode::PayPerRequest);
    let limit = |provisioned: Option<&ProvisionedThroughputDescription>, max: Option<&OnDemandThroughput>| {
        let provisioned = provisioned.and_then(|p| p.write_capacity_units()).filter(|_| !on_demand);
        let max = max.and_then(|m| m.max_write_request_units());
        [provisioned, max].into_iter().flatten().filter(|&u| u > 0).min()
    };
    std::iter::once(limit(table.provisioned_throughput(), table.on_demand_throughput()))
        .chain(
            table
                .global_secondary_indexes()
                .iter()
                .map(|i| limit(i.provisioned_throughput(), i.on_demand_throughput())),
        )
        .flatten()
        .min()
        .map(|u| u.min(i64::from(u32::MAX)) as u32)
}

/// The [`BatchWriter`] on a DynamoDB table: one `BatchWriteItem` of put
/// requests per call, with `DescribeTable` for its write limit.
#[derive(Debug, Clone)]
pub struct DynamoTable {
    client: Client,
    table: String,
}

impl DynamoTable {
    /// A writer to the table `table`; nothing is called until the first write.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

#[async_trait]
impl BatchWriter for DynamoTable {
    async fn write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        let requests = items
            .into_iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().expect("item is set"))
                    .build()
            })
            .collect();
        let result = self.client.batch_write_item().request_items(self.table.clone(), requests).send().await;
        match result {
            Ok(out) => Ok(out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|w| w.put_request.map(|p| p.item))
                .collect()),
            Err(err) => {
                let class = classify(&err);
                let message = describe(&err);
                if class.is_retryable() {
                    Err(WriteError::Retryable { class, message })
                } else {
                    Err(WriteError::Rejected(message))
                }
            }
        }
    }

    fn table(&self) -> &str {
        &self.table
    }

    async fn write_limit(&self) -> Result<Option<u32>, WriteError> {
        match self.client.describe_table().table_name(&self.table).send().await {
            Ok(out) => Ok(out.table.as_ref().and_then(write_limit)),
            Err(err) => {
                let (class, message) = (classify(&err), describe(&err));
                Err(if class.is_retryable() {
                    WriteError::Retryable { class, message }
                } else {
                    WriteError::Rejected(message)
                })
            }
        }
    }
}

/// Builds again the item at an index of the items given to [`write_all`], for
/// a retry after a failed call (rare), so that no call sends a clone.
pub type Rebuild<'a> = &'a (dyn Fn(usize) -> Item + Sync);

/// Why an item given to [`write_all`] is not (known to be) written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotWritten {
    /// The table refuses it as it is; retrying cannot help.
    Rejected(String),
    /// The deadline came first; it may or may not be in the table, and writing it
    /// again later is harmless.
    OutOfTime,
}

/// Writes `items` (in any order) and returns those not written, by their index
/// in `items`. Transient failures are retried until they succeed or, with a
/// deadline, until the deadline: nothing is skipped for being slow. Without a
/// deadline every item is written or [`NotWritten::Rejected`].
pub async fn write_all(
    writer: &dyn BatchWriter,
    rate: &AdaptiveRate,
    items: Vec<Item>,
    rebuild: Rebuild<'_>,
    deadline: Option<Instant>,
) -> Vec<(usize, NotWritten)> {
    let chunk_size = MAX_BATCH_ITEMS.min(rate.burst() as usize).max(1);
    let mut chunks = Vec::with_capacity(items.len().div_ceil(chunk_size));
    let mut indexed = items.into_iter().enumerate().peekable();
    while indexed.peek().is_some() {
        chunks.push(indexed.by_ref().take(chunk_size).collect::<Vec<_>>());
    }
    // The rate is paid for a group of chunks at a time (by the first of them to
    // start), and the group is sent together: calls paced one by one (a 25-item
    // call every 25 ms at 1,000 units/s) each wake the worker alone and cost it
    // more CPU per record than the same calls side by side.
    // A group is at most a tenth of a second of the rate, so that at a low rate
    // (a fleet's share of a small table) calls stay evenly spread.
    let group_len = (rate.burst() as usize / 10 / chunk_size).clamp(1, CHUNK_CONCURRENCY);
    let groups: Vec<Group> = chunks
        .chunks(group_len)
        .map(|group| Group {
            units: group.iter().flatten().map(|(_, item)| write_units(item)).sum(),
            paid: tokio::sync::OnceCell::new(),
        })
        .collect();
    let groups = &groups;
    futures::stream::iter(chunks.into_iter().enumerate())
        .map(|(i, chunk)| write_paid(writer, rate, chunk, &groups[i / group_len], rebuild, deadline))
        .buffer_unordered(CHUNK_CONCURRENCY)
        .flat_map(futures::stream::iter)
        .collect()
        .await
}

type Chunk = Vec<(usize, Item)>;

/// Chunks sent together, and whether their units could be paid for in time.
struct Group {
    units: u32,
    paid: tokio::sync::OnceCell<bool>,
}

async fn write_paid(
    writer: &dyn BatchWriter,
    rate: &AdaptiveRate,
    chunk: Chunk,
    group: &Group,
    rebuild: Rebuild<'_>,
    deadline: Option<Instant>,
) -> Vec<(usize, NotWritten)> {
    if *group.paid.get_or_init(|| async { acquire(rate, group.units, deadline).await.is_ok() }).await {
        write_chunk(writer, rate, chunk, rebuild, deadline).await
    } else {
        chunk.into_iter().map(|(index, _)| (index, NotWritten::OutOfTime)).collect()
    }
}

/// Waits for `units` of the write rate, recording the wait, unless `deadline` comes first.
async fn acquire(rate: &AdaptiveRate, units: u32, deadline: Option<Instant>) -> Result<(), NotWritten> {
    let waited = before(deadline, rate.acquire(units)).await.ok_or(NotWritten::OutOfTime)?;
    metrics::histogram!(m::RATE_LIMIT_WAIT_SECONDS).record(waited.as_secs_f64());
    Ok(())
}

async fn write_chunk(
    writer: &dyn BatchWriter,
    rate: &AdaptiveRate,
    chunk: Chunk,
    rebuild: Rebuild<'_>,
    deadline: Option<Instant>,
) -> Vec<(usize, NotWritten)> {
    let (indexes, items): (Vec<usize>, Vec<Item>) = chunk.into_iter().unzip();
    let all = || indexes.iter().map(|&index| rebuild(index)).collect();
    match write_retrying(writer, rate, items, &all, deadline, true).await {
        Ok(()) => Vec::new(),
        Err(NotWritten::Rejected(_)) if indexes.len() > 1 => {
            // Find the item(s) the table refuses; the others are written.
            let mut failed = Vec::new();
            for &index in &indexes {
                let one = || vec![rebuild(index)];
                if let Err(why) = write_retrying(writer, rate, one(), &one, deadline, false).await {
                    failed.push((index, why));
                }
            }
            failed
        }
        Err(why) => indexes.into_iter().map(|index| (index, why.clone())).collect(),
    }
}

/// `fut`'s output, or `None` if `deadline` comes first.
async fn before<F: std::future::Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Writes one chunk until every item is in, or the table rejects the request;
/// `paid`: the rate for the first attempt is paid already.
/// After a failed call the whole chunk is rebuilt and sent again: putting an
/// item already written once more is harmless.
async fn write_retrying(
    writer: &dyn BatchWriter,
    rate: &AdaptiveRate,
    items: Vec<Item>,
    rebuild: &(dyn Fn() -> Vec<Item> + Sync),
    deadline: Option<Instant>,
    paid: bool,
) -> Result<(), NotWritten> {
    let table = writer.table();
    let mut pending = items;
    let mut attempt = 0;
    let mut paid = paid;
    loop {
        if !std::mem::take(&mut paid) {
            acquire(rate, pending.iter().map(write_units).sum(), deadline).await?;
        }
        let started = Instant::now();
        let sent = pending.len();
        // A call cut off by the deadline may or may not have written its items.
        let result = before(deadline, writer.write(std::mem::take(&mut pending))).await.ok_or(NotWritten::OutOfTime)?;
        metrics::histogram!(m::SINK_WRITE_SECONDS, "table" => table.to_owned()).record(started.elapsed().as_secs_f64());
        match result {
            Ok(left) if left.is_empty() => {
                metrics::counter!(m::SINK_ITEMS_WRITTEN, "table" => table.to_owned()).increment(sent as u64);
                rate.succeeded();
                return Ok(());
            }
            Ok(left) => {
                // DynamoDB leaves items unprocessed when it is over capacity.
                rate.throttled(started);
                metrics::counter!(m::SINK_ITEMS_WRITTEN, "table" => table.to_owned())
                    .increment((sent - left.len()) as u64);
                metrics::counter!(m::SINK_UNPROCESSED_RETRIES, "table" => table.to_owned())
                    .increment(left.len() as u64);
                pending = left;
            }
            Err(WriteError::Retryable { class, message }) => {
                if class == ErrorClass::Throttled {
                    metrics::counter!(m::SINK_THROTTLES, "table" => table.to_owned()).increment(1);
                    rate.throttled(started);
                }
                tracing::warn!(table = %table, ?class, attempt, error = %message, "write failed, retrying");
                pending = rebuild();
            }
            Err(WriteError::Rejected(message)) => return Err(NotWritten::Rejected(message)),
        }
        let delay = BACKOFF.delay(attempt, &mut rand::thread_rng());
        if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
            return Err(NotWritten::OutOfTime);
        }
        tokio::time::sleep(delay).await;
        attempt = attempt.saturating_add(1);
    }
}

/// An in-memory table, keyed by the given key attributes, for unit tests.
/// It can be told to throttle, to leave items unprocessed, and to reject items.
#[derive(Default)]
pub struct MemoryTable {
    name: String,
    key: Vec<String>,
    /// The rows written, by the values of their key attributes.
    pub rows: Mutex<HashMap<Vec<String>, Item>>,
    /// The number of items of each `write` call, in call order.
    pub calls: Mutex<Vec<usize>>,
    faults: Mutex<Faults>,
}

type Predicate = Arc<dyn Fn(&Item) -> bool + Send + Sync>;

#[derive(Default)]
struct Faults {
    throttle_next: usize,
    unprocess_next: usize,
    reject: Option<Predicate>,
    throttle: Option<Predicate>,
}

impl MemoryTable {
    /// An empty table named `name`, keyed by the string attributes `key` (e.g.
    /// `&["Id"]`, or `&["ShardId", "SequenceNumber"]`), with no faults.
    pub fn new(name: &str, key: &[&str]) -> Self {
        Self { name: name.into(), key: key.iter().map(|k| k.to_string()).collect(), ..Default::default() }
    }

    /// The next `n` calls fail as throttled.
    pub fn throttle_next(&self, n: usize) {
        self.faults.lock().unwrap().throttle_next = n;
    }

    /// The next `n` calls write only the first half of their items.
    pub fn unprocess_next(&self, n: usize) {
        self.faults.lock().unwrap().unprocess_next = n;
    }

    /// Calls containing an item matching `pred` are throttled.
    pub fn throttle_matching(&self, pred: impl Fn(&Item) -> bool + Send + Sync + 'static) {
        self.faults.lock().unwrap().throttle = Some(Arc::new(pred));
    }

    /// Calls containing an item matching `pred` are rejected as invalid.
    pub fn reject(&self, pred: impl Fn(&Item) -> bool + Send + Sync + 'static) {
        self.faults.lock().unwrap().reject = Some(Arc::new(pred));
    }

    /// The number of rows stored.
    pub fn len(&self) -> usize {
        self.rows.lock().unwrap().len()
    }

    /// Whether no row is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row with the key attributes' values `key`, in the order the key was
    /// given to [`MemoryTable::new`]; `None` if there is none.
    pub fn get(&self, key: &[&str]) -> Option<Item> {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        self.rows.lock().unwrap().get(&key).cloned()
    }
}

#[async_trait]
impl BatchWriter for MemoryTable {
    async fn write(&self, mut items: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        self.calls.lock().unwrap().push(items.len());
        assert!(items.len() <= MAX_BATCH_ITEMS, "batch of {} items", items.len());
        let unprocessed = {
            let mut faults = self.faults.lock().unwrap();
            let matches = |pred: &Option<Predicate>| pred.as_ref().is_some_and(|p| items.iter().any(|i| p(i)));
            if faults.throttle_next > 0 || matches(&faults.throttle) {
                faults.throttle_next = faults.throttle_next.saturating_sub(1);
                return Err(WriteError::Retryable {
                    class: ErrorClass::Throttled,
                    message: "ProvisionedThroughputExceededException".into(),
                });
            }
            if matches(&faults.reject) {
                return Err(WriteError::Rejected("ValidationException: item rejected".into()));
            }
            if faults.unprocess_next > 0 && items.len() > 1 {
                faults.unprocess_next -= 1;
                items.split_off(items.len() / 2)
            } else {
                Vec::new()
            }
        };
        let mut rows = self.rows.lock().unwrap();
        for item in items {
            let key = self.key.iter().map(|k| item[k].as_s().expect("string key").clone()).collect();
            rows.insert(key, item);
        }
        Ok(unprocessed)
    }

    fn table(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn item(i: usize) -> Item {
        HashMap::from([("Id".to_owned(), AttributeValue::S(i.to_string()))])
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n).map(item).collect()
    }

    /// Rebuilds items by index and counts how often it was asked to.
    #[derive(Default)]
    struct Rebuilds(std::sync::atomic::AtomicUsize);

    impl Rebuilds {
        fn rebuild(&self, i: usize) -> Item {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            item(i)
        }

        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    async fn write(table: &MemoryTable, rate: &AdaptiveRate, n: usize) -> (Vec<(usize, NotWritten)>, usize) {
        let rebuilds = Rebuilds::default();
        let rejected = write_all(table, rate, items(n), &|i| rebuilds.rebuild(i), None).await;
        (rejected, rebuilds.count())
    }

    fn limiter(rate: u32) -> AdaptiveRate {
        AdaptiveRate::new("t", NonZeroU32::new(rate))
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_of_at_most_25_each_item_sent_once_and_never_copied() {
        let table = MemoryTable::new("t", &["Id"]);
        let (rejected, rebuilt) = write(&table, &limiter(10_000), 101).await;
        assert!(rejected.is_empty());
        assert_eq!(table.len(), 101);
        let mut calls = table.calls.lock().unwrap().clone();
        calls.sort_unstable();
        assert_eq!(calls, vec![1, 25, 25, 25, 25]);
        assert_eq!(rebuilt, 0, "no failure, no item built twice");
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_shrink_to_a_small_rate_limit() {
        let table = MemoryTable::new("t", &["Id"]);
        write(&table, &limiter(10), 30).await;
        assert_eq!(*table.calls.lock().unwrap(), vec![10, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn unprocessed_items_and_throttling_are_retried_until_written() {
        let table = MemoryTable::new("t", &["Id"]);
        table.throttle_next(3);
        table.unprocess_next(5);
        let (rejected, rebuilt) = write(&table, &limiter(10_000), 60).await;
        assert!(rejected.is_empty());
        assert_eq!(table.len(), 60);
        assert!(table.calls.lock().unwrap().len() >= 3 + 3 + 5);
        // A throttled call loses its items (the SDK consumed them): they are
        // rebuilt. Unprocessed items come back from the table and are not.
        assert!((3..=3 * 25).contains(&rebuilt), "rebuilt {rebuilt}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_item_is_isolated_and_the_rest_written() {
        let table = MemoryTable::new("t", &["Id"]);
        table.reject(|item| item["Id"].as_s().unwrap() == "7");
        let (rejected, _) = write(&table, &limiter(10_000), 30).await;
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, 7);
        assert!(matches!(&rejected[0].1, NotWritten::Rejected(why) if why.contains("ValidationException")));
        assert_eq!(table.len(), 29);
        assert!(table.get(&["7"]).is_none());
    }

    #[test]
    fn a_tables_write_limit_is_its_lowest_of_capacity_and_on_demand_maximum() {
        use aws_sdk_dynamodb::types::{BillingModeSummary, GlobalSecondaryIndexDescription};
        let provisioned = |wcu| ProvisionedThroughputDescription::builder().write_capacity_units(wcu).build();
        let max = |wru| OnDemandThroughput::builder().max_write_request_units(wru).build();
        let mode = |m| BillingModeSummary::builder().billing_mode(m).build();
        let table = TableDescription::builder();
        assert_eq!(write_limit(&table.clone().build()), None);
        assert_eq!(write_limit(&table.clone().provisioned_throughput(provisioned(600)).build()), Some(600));
        let with_index = table
            .clone()
            .billing_mode_summary(mode(BillingMode::Provisioned))
            .provisioned_throughput(provisioned(600))
            .global_secondary_indexes(
                GlobalSecondaryIndexDescription::builder().provisioned_throughput(provisioned(400)).build(),
            );
        assert_eq!(write_limit(&with_index.build()), Some(400), "each put writes the index too");
        let on_demand =
            table.clone().billing_mode_summary(mode(BillingMode::PayPerRequest)).provisioned_throughput(provisioned(0));
        assert_eq!(write_limit(&on_demand.clone().build()), None);
        assert_eq!(write_limit(&on_demand.on_demand_throughput(max(-1)).build()), None, "-1: no maximum");
        let capped = table.billing_mode_summary(mode(BillingMode::PayPerRequest)).on_demand_throughput(max(2500));
        assert_eq!(write_limit(&capped.build()), Some(2500));
    }
}
