//! [`StreamClient`] on Kinesis with polling GetRecords.

use async_trait::async_trait;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::primitives::DateTime as AwsDateTime;
use aws_sdk_kinesis::types::{HashKeyRange, ShardIteratorType};
use aws_sdk_kinesis::Client;
use chrono::{DateTime, Utc};

use super::{RecordBatch, Shard, StartAt, StreamClient, StreamError};
use crate::aws::{classify, describe};
use crate::processor::{HashRange, Record};

#[derive(Debug, Clone)]
pub struct KinesisStream {
    client: Client,
    stream: String,
}

impl KinesisStream {
    pub fn new(client: Client, stream: impl Into<String>) -> Self {
        Self { client, stream: stream.into() }
    }
}

fn error<E>(err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> StreamError
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    StreamError { class: classify(&err), message: describe(&err) }
}

/// Kinesis stamps arrival in milliseconds, sent as fractional seconds that the
/// SDK reads through a float (`.597` can come out as `.596999884`): round to the
/// millisecond, as the Lambda path does with its event's timestamps.
fn to_chrono(t: Option<&AwsDateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp_millis(t.secs() * 1000 + i64::from(t.subsec_nanos() + 500_000) / 1_000_000))
        .unwrap_or_else(Utc::now)
}

fn shard_of(s: &aws_sdk_kinesis::types::Shard) -> Shard {
    Shard {
        id: s.shard_id().to_owned(),
        parents: s.parent_shard_id().into_iter().chain(s.adjacent_parent_shard_id()).map(str::to_owned).collect(),
        hash_range: s.hash_key_range().and_then(hash_range),
        closed: s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some(),
    }
}

fn hash_range(range: &HashKeyRange) -> Option<HashRange> {
    Some((range.starting_hash_key().parse().ok()?, range.ending_hash_key().parse().ok()?))
}

#[async_trait]
impl StreamClient for KinesisStream {
    async fn list_shards(&self) -> Result<Vec<Shard>, StreamError> {
        let mut shards = Vec::new();
        let mut next: Option<String> = None;
        loop {
            // ListShards takes either the stream name or a next token, not both.
            let request = match next.take() {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let out = request.send().await.map_err(error)?;
            shards.extend(out.shards().iter().map(shard_of));
            match out.next_token {
                Some(token) if !token.is_empty() => next = Some(token),
                _ => return Ok(shards),
            }
        }
    }

    async fn shard_iterator(&self, shard_id: &str, start: &StartAt) -> Result<String, StreamError> {
        let request = self.client.get_shard_iterator().stream_name(&self.stream).shard_id(shard_id);
        let request = match start {
            StartAt::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            StartAt::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartAt::AtTimestamp(t) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(AwsDateTime::from_millis(t.timestamp_millis())),
            StartAt::AfterSequence(seq) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq)
            }
            StartAt::AtSequence(seq) => {
                request.shard_iterator_type(ShardIteratorType::AtSequenceNumber).starting_sequence_number(seq)
            }
        };
        let out = request.send().await.map_err(error)?;
        out.shard_iterator.ok_or_else(|| StreamError {
            class: crate::aws::ErrorClass::Transient,
            message: format!("GetShardIterator for {shard_id} returned no iterator"),
        })
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordBatch, StreamError> {
        let out = self.client.get_records().shard_iterator(iterator).limit(limit).send().await.map_err(error)?;
        let records = out
            .records
            .into_iter()
            .map(|r| Record {
                arrival: to_chrono(r.approximate_arrival_timestamp.as_ref()),
                sequence_number: r.sequence_number,
                partition_key: r.partition_key.unwrap_or_default(),
                data: r.data.into_inner(),
                sub_sequence: None,
            })
            .collect();
        let child_shards = out
            .child_shards
            .unwrap_or_default()
            .into_iter()
            .map(|c| Shard {
                hash_range: c.hash_key_range.as_ref().and_then(hash_range),
                closed: false,
                id: c.shard_id,
                parents: c.parent_shards,
            })
            .collect();
        Ok(RecordBatch {
            records,
            next_iterator: out.next_shard_iterator.filter(|i| !i.is_empty()),
            millis_behind_latest: out.millis_behind_latest,
            child_shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_is_rounded_to_kinesis_milliseconds() {
        let shown = |secs: i64, nanos: u32| {
            crate::processor::iso8601(to_chrono(Some(&AwsDateTime::from_secs_and_nanos(secs, nanos))))
        };
        assert_eq!(shown(1_767_323_045, 596_999_884), "2026-01-02T03:04:05.597Z");
        assert_eq!(shown(1_767_323_045, 597_000_000), "2026-01-02T03:04:05.597Z");
        assert_eq!(shown(1_767_323_045, 999_600_000), "2026-01-02T03:04:06.000Z");
    }
}
