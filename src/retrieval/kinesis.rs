//! [`StreamClient`] (polling GetRecords) and [`Subscriber`] (SubscribeToShard)
//! on Kinesis, and the registration of the stream consumer fan-out reads for.

use async_trait::async_trait;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::primitives::DateTime as AwsDateTime;
use aws_sdk_kinesis::types::{
    ChildShard, ConsumerStatus, HashKeyRange, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use aws_sdk_kinesis::Client;
use chrono::{DateTime, Utc};
use std::time::Duration;

use super::{RecordBatch, Shard, ShardEvent, StartAt, StreamClient, StreamError, Subscriber, Subscription};
use crate::aws::{classify, classify_code, describe, ErrorClass};
use crate::model::{HashRange, Record};

/// The [`StreamClient`] on a Kinesis stream, by name: ListShards,
/// GetShardIterator and GetRecords.
#[derive(Debug, Clone)]
pub struct KinesisStream {
    client: Client,
    stream: String,
}

impl KinesisStream {
    /// The stream named `stream`, read through `client`. Nothing is called yet.
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

fn record_of(r: aws_sdk_kinesis::types::Record) -> Record {
    Record {
        arrival: to_chrono(r.approximate_arrival_timestamp.as_ref()),
        sequence_number: r.sequence_number,
        partition_key: r.partition_key.unwrap_or_default(),
        data: r.data.into_inner(),
        sub_sequence: None,
    }
}

fn child_of(c: ChildShard) -> Shard {
    Shard {
        hash_range: c.hash_key_range.as_ref().and_then(hash_range),
        closed: false,
        id: c.shard_id,
        parents: c.parent_shards,
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
        let records = out.records.into_iter().map(record_of).collect();
        let child_shards = out.child_shards.unwrap_or_default().into_iter().map(child_of).collect();
        Ok(RecordBatch {
            records,
            next_iterator: out.next_shard_iterator.filter(|i| !i.is_empty()),
            millis_behind_latest: out.millis_behind_latest,
            child_shards,
        })
    }
}

/// Subscriptions for one registered stream consumer.
#[derive(Debug, Clone)]
pub struct KinesisSubscriber {
    client: Client,
    consumer_arn: String,
}

impl KinesisSubscriber {
    /// Subscriptions for the registered stream consumer `consumer_arn` (as
    /// [`ensure_consumer`] returns it; the consumer must be ACTIVE).
    pub fn new(client: Client, consumer_arn: impl Into<String>) -> Self {
        Self { client, consumer_arn: consumer_arn.into() }
    }
}

fn starting_position(start: &StartAt) -> StartingPosition {
    let (kind, sequence, timestamp) = match start {
        StartAt::TrimHorizon => (ShardIteratorType::TrimHorizon, None, None),
        StartAt::Latest => (ShardIteratorType::Latest, None, None),
        StartAt::AtTimestamp(t) => {
            (ShardIteratorType::AtTimestamp, None, Some(AwsDateTime::from_millis(t.timestamp_millis())))
        }
        StartAt::AfterSequence(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq.clone()), None),
        StartAt::AtSequence(seq) => (ShardIteratorType::AtSequenceNumber, Some(seq.clone()), None),
    };
    StartingPosition::builder()
        .r#type(kind)
        .set_sequence_number(sequence)
        .set_timestamp(timestamp)
        .build()
        .expect("the type is set")
}

#[async_trait]
impl Subscriber for KinesisSubscriber {
    async fn subscribe(&self, shard_id: &str, start: &StartAt) -> Result<Box<dyn Subscription>, StreamError> {
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer_arn)
            .shard_id(shard_id)
            .starting_position(starting_position(start))
            .send()
            .await
            .map_err(error)?;
        Ok(Box::new(KinesisSubscription(out.event_stream)))
    }
}

struct KinesisSubscription(
    aws_sdk_kinesis::primitives::event_stream::EventReceiver<
        SubscribeToShardEventStream,
        aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
    >,
);

#[async_trait]
impl Subscription for KinesisSubscription {
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, StreamError> {
        loop {
            let event = match self.0.recv().await {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => event,
                // A kind of event this SDK does not know: not records.
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(None),
                Err(e) => return Err(StreamError { class: event_error_class(&e), message: describe(&e) }),
            };
            return Ok(Some(ShardEvent {
                records: event.records.into_iter().map(record_of).collect(),
                continuation: Some(event.continuation_sequence_number).filter(|c| !c.is_empty()),
                millis_behind_latest: Some(event.millis_behind_latest),
                child_shards: event.child_shards.unwrap_or_default().into_iter().map(child_of).collect(),
            }));
        }
    }
}

/// An error inside a subscription's stream: by its modeled kind (its metadata
/// may carry no code), else by code.
fn event_error_class(
    e: &aws_sdk_kinesis::error::SdkError<
        aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
        aws_smithy_types::event_stream::RawMessage,
    >,
) -> ErrorClass {
    use aws_sdk_kinesis::error::ProvideErrorMetadata as _;
    match e.as_service_error() {
        Some(kind) if kind.is_resource_in_use_exception() => ErrorClass::InUse,
        Some(kind) if kind.is_resource_not_found_exception() => ErrorClass::NotFound,
        Some(kind) if kind.is_kms_throttling_exception() => ErrorClass::Throttled,
        _ => classify_code(e.code(), 500),
    }
}

/// How long registering a stream consumer may take before the worker gives up.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(300);

/// The ARN of the stream's consumer `name`, registered if absent and waited
/// for until ACTIVE (as the KCL does). Workers started together may all
/// register: the losers' `ResourceInUseException` sends them to describe again.
pub async fn ensure_consumer(client: &Client, stream_arn: &str, name: &str) -> Result<String, StreamError> {
    let backoff = crate::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    loop {
        match client.describe_stream_consumer().stream_arn(stream_arn).consumer_name(name).send().await {
            Ok(out) => {
                let consumer = out.consumer_description.expect("DescribeStreamConsumer describes");
                match consumer.consumer_status {
                    ConsumerStatus::Active => return Ok(consumer.consumer_arn),
                    status => tracing::info!(
                        consumer_name = name,
                        status = status.as_str(),
                        "waiting for the stream consumer"
                    ),
                }
            }
            Err(e) if classify(&e) == ErrorClass::NotFound => {
                match client.register_stream_consumer().stream_arn(stream_arn).consumer_name(name).send().await {
                    Ok(_) => tracing::info!(consumer_name = name, stream_arn, "stream consumer registered"),
                    Err(e) if classify(&e) == ErrorClass::InUse => {}
                    Err(e) if classify(&e).is_retryable() => {
                        tracing::warn!(consumer_name = name, error = %describe(&e), "RegisterStreamConsumer failed, retrying")
                    }
                    Err(e) => return Err(error(e)),
                }
            }
            Err(e) if classify(&e).is_retryable() => {
                tracing::warn!(consumer_name = name, error = %describe(&e), "DescribeStreamConsumer failed, retrying")
            }
            Err(e) => return Err(error(e)),
        }
        if started.elapsed() > REGISTRATION_TIMEOUT {
            return Err(StreamError {
                class: ErrorClass::Transient,
                message: format!("stream consumer '{name}' not ACTIVE after {REGISTRATION_TIMEOUT:?}"),
            });
        }
        backoff.sleep(attempt).await;
        attempt += 1;
    }
}

/// Deregisters the stream's consumer `name`; `Ok(false)` if there was none.
pub async fn deregister_consumer(client: &Client, stream_arn: &str, name: &str) -> Result<bool, StreamError> {
    match client.deregister_stream_consumer().stream_arn(stream_arn).consumer_name(name).send().await {
        Ok(_) => Ok(true),
        Err(e) if classify(&e) == ErrorClass::NotFound => Ok(false),
        Err(e) => Err(error(e)),
    }
}

/// The status of the stream's consumer `name` (`ACTIVE`, `CREATING`,
/// `DELETING`), or `None` if there is none.
pub async fn consumer_status(client: &Client, stream_arn: &str, name: &str) -> Result<Option<String>, StreamError> {
    match client.describe_stream_consumer().stream_arn(stream_arn).consumer_name(name).send().await {
        Ok(out) => {
            Ok(Some(out.consumer_description.map(|c| c.consumer_status.as_str().to_owned()).unwrap_or_default()))
        }
        Err(e) if classify(&e) == ErrorClass::NotFound => Ok(None),
        Err(e) => Err(error(e)),
    }
}

/// The stream's ARN (DescribeStreamSummary).
pub async fn stream_arn(client: &Client, stream: &str) -> Result<String, StreamError> {
    let out = client.describe_stream_summary().stream_name(stream).send().await.map_err(error)?;
    Ok(out.stream_description_summary.map(|s| s.stream_arn).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_is_rounded_to_kinesis_milliseconds() {
        let shown = |secs: i64, nanos: u32| {
            crate::model::iso8601(to_chrono(Some(&AwsDateTime::from_secs_and_nanos(secs, nanos))))
        };
        assert_eq!(shown(1_767_323_045, 596_999_884), "2026-01-02T03:04:05.597Z");
        assert_eq!(shown(1_767_323_045, 597_000_000), "2026-01-02T03:04:05.597Z");
        assert_eq!(shown(1_767_323_045, 999_600_000), "2026-01-02T03:04:06.000Z");
    }
}
