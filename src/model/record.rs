//! One record of a shard, as the engine and every application see it.

use chrono::{DateTime, SecondsFormat, Utc};

use super::SequenceNumber;

/// One Kinesis record, as the worker's GetRecords or the Lambda's event gives
/// it, or one user record of a KPL aggregate (see [`crate::kpl::deaggregate_records`]).
#[derive(Debug, Clone)]
pub struct Record {
    /// The Kinesis record's (an aggregate's user records share it).
    pub sequence_number: String,
    /// The partition key the producer gave; for a user record, its own key from
    /// the aggregate.
    pub partition_key: String,
    /// The record's payload; for a user record, its own data, not the aggregate's.
    pub data: Vec<u8>,
    /// When the record reached the stream (Kinesis' `ApproximateArrivalTimestamp`,
    /// to the millisecond); a user record carries its aggregate's.
    pub arrival: DateTime<Utc>,
    /// A user record's position in its aggregate; `None` for a plain record.
    pub sub_sequence: Option<u64>,
}

impl Record {
    /// Where this record stands in its shard: (sequence number, sub-sequence
    /// number), a plain record's sub-sequence number being 0, as the KCL has it.
    pub fn position(&self) -> Option<(SequenceNumber, u64)> {
        SequenceNumber::parse(&self.sequence_number).map(|n| (n, self.sub_sequence.unwrap_or(0)))
    }
}

/// An inclusive range of 128-bit hash keys: a shard's.
pub type HashRange = (u128, u128);

/// ISO 8601 with milliseconds and `Z`, as in the reference architecture.
pub fn iso8601(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
