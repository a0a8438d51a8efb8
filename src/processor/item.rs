//! The items written: a tweet's row and a record's dead letter, and the size
//! limits they keep to. Pure functions of a record, apart from the writing.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::Blob;
use chrono::{DateTime, Utc};

use super::reason::Reason;
use super::sink::Item;
use super::tweet::{decode, Tweet};
use crate::aws::item_size;
use crate::model::{iso8601, truncate, Record};

/// DynamoDB's item size limit, with room for attribute names and overhead.
pub const MAX_ITEM_BYTES: usize = 400 * 1024 - 4 * 1024;

/// The raw payload kept in a dead letter is cut to this many bytes, so that
/// any record, even a 1 MiB one, fits in a dead-letter item.
pub const MAX_DEAD_LETTER_DATA_BYTES: usize = 256 * 1024;

/// The tweets-table item for a record, or why it can never be one.
pub(super) fn item_for(shard_id: &str, record: &Record, stamp: &Stamp) -> Result<Item, (Reason, String)> {
    let tweet = decode(&record.data).map_err(|e| (Reason::from(&e), e.to_string()))?;
    let item = tweet_item(&tweet, shard_id, record, stamp);
    if item_size(&item) > MAX_ITEM_BYTES {
        return Err((Reason::TooLarge, format!("tweet {} is over DynamoDB's item size limit", tweet.id)));
    }
    Ok(item)
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// What every item of a batch shares, formatted once for the batch: when it
/// was processed (`ProcessedAt`) and when the table's TTL removes it
/// (`ExpirationTime`, epoch seconds).
pub struct Stamp {
    processed_at: String,
    expiration_time: String,
}

impl Stamp {
    /// The stamp for a batch processed at `now`: `ProcessedAt` is `now` (ISO 8601)
    /// and `ExpirationTime` is `now + ttl` in epoch seconds.
    pub fn new(now: DateTime<Utc>, ttl: Duration) -> Self {
        Self { processed_at: iso8601(now), expiration_time: (now + ttl).timestamp().to_string() }
    }
}

/// The tweets-table item (docs/design.md, "Tables"): keyed by `Id`, so a replay overwrites.
/// A tweet without `created_at` is stamped with the record's arrival time.
/// `ProcessedAt` is when the batch was processed: it shows the pipeline's
/// latency and the order in which shards were processed.
pub fn tweet_item(tweet: &Tweet<'_>, shard_id: &str, record: &Record, stamp: &Stamp) -> Item {
    let mut item = HashMap::with_capacity(10);
    item.insert("Id".to_owned(), s(&tweet.id));
    item.insert("Timestamp".to_owned(), s(&iso8601(tweet.created_at.unwrap_or(record.arrival))));
    item.insert("Message".to_owned(), s(&tweet.message));
    item.insert("ShardId".to_owned(), s(shard_id));
    item.insert("SequenceNumber".to_owned(), s(&record.sequence_number));
    if let Some(sub) = record.sub_sequence {
        item.insert("SubSequenceNumber".to_owned(), AttributeValue::N(sub.to_string()));
    }
    item.insert("ExpirationTime".to_owned(), AttributeValue::N(stamp.expiration_time.clone()));
    item.insert("ProcessedAt".to_owned(), s(&stamp.processed_at));
    if let Some(v) = &tweet.username {
        item.insert("Username".to_owned(), s(v));
    }
    if let Some(v) = &tweet.screen_name {
        item.insert("ScreenName".to_owned(), s(v));
    }
    if let Some(v) = &tweet.lang {
        item.insert("Lang".to_owned(), s(v));
    }
    if !tweet.hashtags.is_empty() {
        item.insert("Hashtags".to_owned(), AttributeValue::Ss(tweet.hashtags.iter().map(|h| h.to_string()).collect()));
    }
    item
}

/// The dead-letter table's sort key for a record: its sequence number, and for
/// a user record of an aggregate `:` and its sub-sequence number, so that two
/// user records of one aggregate never share a dead letter.
pub fn dead_letter_key(record: &Record) -> String {
    match record.sub_sequence {
        Some(sub) => format!("{}:{sub}", record.sequence_number),
        None => record.sequence_number.clone(),
    }
}

/// The dead-letter item: keyed by shard and [`dead_letter_key`], with the raw
/// bytes (binary, cut to [`MAX_DEAD_LETTER_DATA_BYTES`]), the reason and the
/// error.
pub fn dead_letter_item(shard_id: &str, record: &Record, reason: Reason, error: &str, now: DateTime<Utc>) -> Item {
    let kept = record.data.len().min(MAX_DEAD_LETTER_DATA_BYTES);
    let mut item = HashMap::from([
        ("ShardId".to_owned(), s(shard_id)),
        ("SequenceNumber".to_owned(), s(&dead_letter_key(record))),
        ("PartitionKey".to_owned(), s(&record.partition_key)),
        ("Data".to_owned(), AttributeValue::B(Blob::new(&record.data[..kept]))),
        ("DataBytes".to_owned(), AttributeValue::N(record.data.len().to_string())),
        ("Reason".to_owned(), s(reason.label())),
        ("Error".to_owned(), s(&truncate(error, 1024))),
        ("ArrivalTime".to_owned(), s(&iso8601(record.arrival))),
        ("DeadLetteredAt".to_owned(), s(&iso8601(now))),
    ]);
    if let Some(sub) = record.sub_sequence {
        item.insert("SubSequenceNumber".to_owned(), AttributeValue::N(sub.to_string()));
    }
    item
}
