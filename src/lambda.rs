//! The Lambda path: a Kinesis event from the event source mapping → the shared
//! processing core → `batchItemFailures`.
//!
//! The mapping hands the function one shard's batch and, with
//! `ReportBatchItemFailures`, retries from the lowest sequence number reported.
//! So the function reports the **first** record not durably written, and only
//! that: everything before it is in the tweets or the dead-letter table. A record
//! that can never succeed is dead-lettered and never reported (that would block
//! its shard until the record ages out). Transient failures are retried with
//! backoff while the invocation has time; see [`budget`] for how much.
//!
//! The mapping does not de-aggregate KPL records; the core does, here as in
//! the worker. A failure is reported by the Kinesis record's sequence number,
//! so the retry starts at the aggregate's first user record.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::streams::KinesisEventResponse;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::time::Instant;

use crate::engine::{Durable, RecordProcessor};
use crate::kpl::deaggregate_records;
use crate::metrics as m;
use crate::model::Record;

/// Lambda's longest timeout: a deadline further away than this is not a real one.
pub const MAX_FUNCTION_TIMEOUT: Duration = Duration::from_secs(900);

/// The budget when the runtime's deadline is in the past or absurd (local
/// runtimes send a relative `600000` where Lambda sends an epoch): short enough
/// for any function timeout a user is likely to set, long enough to ride out a
/// burst of throttling.
pub const FALLBACK_BUDGET: Duration = Duration::from_secs(10);

/// How long the invocation may spend writing: the time to the deadline less a
/// safety margin (a tenth, at least 250 ms, at most 2 s) kept for answering the
/// Runtime API before Lambda would time the invocation out. Writes in flight at
/// the end of the budget are abandoned and reported unwritten, so the margin
/// only has to cover the response, not a DynamoDB attempt.
pub fn budget(deadline: SystemTime, now: SystemTime) -> Duration {
    match deadline.duration_since(now) {
        Ok(remaining) if !remaining.is_zero() && remaining <= MAX_FUNCTION_TIMEOUT => {
            let margin = (remaining / 10).clamp(Duration::from_millis(250), Duration::from_secs(2));
            remaining.saturating_sub(margin)
        }
        _ => FALLBACK_BUDGET,
    }
}

/// The shard of a record, from its `eventID` (`shardId-…:sequenceNumber`).
fn shard_of(event_id: Option<&str>) -> &str {
    event_id.and_then(|id| id.split_once(':')).map_or("unknown", |(shard, _)| shard)
}

/// The Kinesis event of the event source mapping: only what the core needs.
///
/// Not `aws_lambda_events`' `KinesisEvent`: its `approximateArrivalTimestamp`
/// reads the digits after the point as milliseconds (`…045.5` becomes 5 ms,
/// `…045.98` 98 ms), and encoders drop trailing zeros. This reads the seconds
/// as a number (see `arrival`).
#[derive(Debug, Deserialize)]
pub struct KinesisEvent {
    /// `Records`: the batch's records, in the order the mapping sent them.
    #[serde(rename = "Records")]
    pub records: Vec<EventRecord>,
}

/// One record of the event (an element of `Records`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// `eventID`: `shardId-…:sequenceNumber`. The shard is read from it; a
    /// missing or malformed one groups the record under shard `unknown`.
    #[serde(rename = "eventID")]
    pub event_id: Option<String>,
    /// `kinesis`: the Kinesis record's partition key, sequence number, data and
    /// arrival time.
    pub kinesis: KinesisData,
}

/// The `kinesis` object of an event record: the Kinesis record itself.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData {
    /// The partition key the producer put the record with.
    pub partition_key: String,
    /// The Kinesis record's sequence number; a failure is reported by it in
    /// `batchItemFailures`.
    pub sequence_number: String,
    /// Base64, as Lambda sends it.
    pub data: String,
    /// Seconds since the epoch, with a fraction.
    pub approximate_arrival_timestamp: f64,
}

/// Kinesis stamps arrival in milliseconds; the float carries noise (`…650.987`
/// is `…650.98699999` as an f64), so round to the millisecond, as the worker
/// does with GetRecords' timestamps.
fn arrival(seconds: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis((seconds * 1000.0).round() as i64).unwrap_or_default()
}

/// The event's records, grouped by shard in order of appearance (the mapping
/// sends one shard per event; nothing here relies on it). Data that is not
/// base64 (never sent by Lambda) is passed on as it is, to be dead-lettered
/// with the rest of what is not a tweet, rather than failing the whole batch.
pub fn records_by_shard(event: KinesisEvent) -> Vec<(String, Vec<Record>)> {
    let mut groups: Vec<(String, Vec<Record>)> = Vec::new();
    for r in event.records {
        let shard = shard_of(r.event_id.as_deref()).to_owned();
        let k = r.kinesis;
        let data = base64::engine::general_purpose::STANDARD.decode(&k.data).unwrap_or_else(|_| k.data.into_bytes());
        let record = Record {
            sequence_number: k.sequence_number,
            partition_key: k.partition_key,
            data,
            arrival: arrival(k.approximate_arrival_timestamp),
            sub_sequence: None,
        };
        match groups.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, records)) => records.push(record),
            None => groups.push((shard, vec![record])),
        }
    }
    groups
}

/// Processes one invocation's event until `deadline` (the Runtime API's) and
/// says where the mapping must retry from.
pub async fn handle(
    processor: &dyn RecordProcessor,
    event: KinesisEvent,
    deadline: SystemTime,
) -> KinesisEventResponse {
    let until = Instant::now() + budget(deadline, SystemTime::now());
    let mut response = KinesisEventResponse::default();
    for (shard_id, mut records) in records_by_shard(event) {
        metrics::counter!(m::RECORDS_READ).increment(records.len() as u64);
        metrics::counter!(m::BYTES_READ).increment(records.iter().map(|r| r.data.len() as u64).sum());
        // User records of an aggregate share its sequence number: reporting the
        // first unwritten one's makes the mapping retry the whole aggregate
        // (rows are keyed by tweet id, so what was written is written again).
        deaggregate_records(&mut records, &shard_id, None);
        let durable = processor.process(&shard_id, &records, Some(until)).await;
        metrics::counter!(m::BATCHES).increment(1);
        match durable {
            Durable::Before(index) if index < records.len() => {
                let record = &records[index];
                tracing::warn!(
                    shard_id,
                    records = records.len(),
                    written = index,
                    retry_from = %record.sequence_number,
                    "out of time: reporting the first record not written"
                );
                metrics::counter!(m::LAMBDA_RECORDS_RETRIED).increment((records.len() - index) as u64);
                response.add_failure(record.sequence_number.clone());
            }
            _ => tracing::info!(shard_id, records = records.len(), "batch written"),
        }
    }
    response
}

/// Reports a failed cold start to the Runtime API's `/init/error`, as Lambda
/// expects, so that the invocation fails at once with the reason instead of
/// timing out. `runtime_api` is `AWS_LAMBDA_RUNTIME_API` (`host:port`).
pub async fn report_init_error(runtime_api: &str, error_type: &str, message: &str) -> Result<(), String> {
    let url = format!("http://{runtime_api}/2018-06-01/runtime/init/error");
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message, "stackTrace": [] });
    let headers = [("Lambda-Runtime-Function-Error-Type", "Runtime.InitError"), ("Content-Type", "application/json")];
    let (status, answer) = crate::http::request(
        hyper::Method::POST,
        &url,
        &headers,
        body.to_string().into_bytes(),
        Duration::from_secs(5),
    )
    .await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{url} answered {status}: {}", answer.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::sink::MemoryTable;
    use crate::processor::Processor;
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    #[test]
    fn budget_keeps_a_margin_and_clamps_what_is_not_a_real_deadline() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(budget(now + Duration::from_secs(60), now), Duration::from_secs(58));
        assert_eq!(budget(now + Duration::from_secs(10), now), Duration::from_secs(9));
        assert_eq!(budget(now + Duration::from_secs(1), now), Duration::from_millis(750));
        assert_eq!(budget(now + Duration::from_millis(100), now), Duration::ZERO);
        // Past, now, or further than Lambda's longest timeout.
        assert_eq!(budget(now - Duration::from_secs(1), now), FALLBACK_BUDGET);
        assert_eq!(budget(now, now), FALLBACK_BUDGET);
        assert_eq!(budget(UNIX_EPOCH + Duration::from_millis(600_000), now), FALLBACK_BUDGET);
        assert_eq!(budget(now + Duration::from_secs(3600), now), FALLBACK_BUDGET);
    }

    fn event(records: &[(&str, u64, &[u8])]) -> KinesisEvent {
        let records: Vec<_> = records
            .iter()
            .map(|(shard, seq, data)| {
                serde_json::json!({
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": format!("pk-{seq}"),
                        "sequenceNumber": format!("{seq:056}"),
                        "data": base64::engine::general_purpose::STANDARD.encode(data),
                        "approximateArrivalTimestamp": 1_767_323_045.678
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": format!("{shard}:{seq:056}"),
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": "arn:aws:iam::123456789012:role/r",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/tweets"
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    fn tweet(id: u64) -> Vec<u8> {
        format!(r#"{{"id_str":"{id}","text":"t{id}"}}"#).into_bytes()
    }

    #[test]
    fn records_keep_their_bytes_arrival_and_shard() {
        let groups = records_by_shard(event(&[("shardId-1", 1, b"x"), ("shardId-2", 2, b"y"), ("shardId-1", 3, b"z")]));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, "shardId-1");
        assert_eq!(groups[0].1.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), vec![b"x".to_vec(), b"z".to_vec()]);
        assert_eq!(groups[0].1[0].sequence_number, format!("{:056}", 1));
        assert_eq!(groups[0].1[0].partition_key, "pk-1");
        assert_eq!(crate::model::iso8601(groups[0].1[0].arrival), "2026-01-02T03:04:05.678Z");
    }

    #[test]
    fn arrival_times_keep_their_milliseconds_whatever_the_digits() {
        let at = |json: &str| crate::model::iso8601(arrival(serde_json::from_str::<f64>(json).unwrap()));
        assert_eq!(at("1767323045.5"), "2026-01-02T03:04:05.500Z");
        assert_eq!(at("1767323045.98"), "2026-01-02T03:04:05.980Z");
        assert_eq!(at("1767323045.987"), "2026-01-02T03:04:05.987Z");
        assert_eq!(at("1.767323045987E9"), "2026-01-02T03:04:05.987Z");
        assert_eq!(at("1767323045"), "2026-01-02T03:04:05.000Z");
        assert_eq!(at("1767323045.596999"), "2026-01-02T03:04:05.597Z");
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_to_the_deadline_the_first_unwritten_record_is_reported() {
        let tweets = Arc::new(MemoryTable::new("tweets", &["Id"]));
        let dead = Arc::new(MemoryTable::new("dead", &["ShardId", "SequenceNumber"]));
        let p = Processor::new(tweets.clone(), dead.clone(), NonZeroU32::new(1000), Duration::from_secs(86_400));
        tweets.throttle_next(usize::MAX);
        let e = event(&[("shardId-1", 1, b"not json"), ("shardId-1", 2, &tweet(2)), ("shardId-1", 3, &tweet(3))]);
        let response = handle(&p, e, SystemTime::now() + Duration::from_secs(5)).await;
        let failures: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        assert_eq!(failures, vec![Some(format!("{:056}", 2))], "the first tweet, after the dead-lettered record");
        assert_eq!(dead.len(), 1);
        assert!(tweets.is_empty());

        // Once the table recovers, the retried batch reports nothing.
        tweets.throttle_next(0);
        let retry = event(&[("shardId-1", 2, &tweet(2)), ("shardId-1", 3, &tweet(3))]);
        let response = handle(&p, retry, SystemTime::now() + Duration::from_secs(5)).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(tweets.len(), 2);
    }

    fn aggregate(records: &[&[u8]]) -> Vec<u8> {
        let mut a = crate::kpl::Aggregator::default();
        for (i, data) in records.iter().enumerate() {
            a.add(&format!("user-{i}"), data);
        }
        a.finish()
    }

    #[tokio::test(start_paused = true)]
    async fn aggregates_are_de_aggregated_and_a_retry_names_the_kinesis_record() {
        let tweets = Arc::new(MemoryTable::new("tweets", &["Id"]));
        let dead = Arc::new(MemoryTable::new("dead", &["ShardId", "SequenceNumber"]));
        // One item a second, so that each write is one item: tweet 12 (user
        // record 2 of the aggregate at 2) alone is throttled to the deadline.
        let p = Processor::new(tweets.clone(), dead.clone(), NonZeroU32::new(1), Duration::from_secs(86_400));
        tweets.throttle_matching(|item| item["Id"].as_s().unwrap() == "12");
        let agg = aggregate(&[&tweet(10), b"garbage", &tweet(12), b"more garbage"]);
        let e = event(&[("shardId-1", 1, &tweet(1)), ("shardId-1", 2, &agg), ("shardId-1", 3, &tweet(3))]);
        let response = handle(&p, e, SystemTime::now() + Duration::from_secs(10)).await;
        let failures: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        assert_eq!(failures, vec![Some(format!("{:056}", 2))], "the aggregate's sequence number, not a user record's");
        assert!(tweets.get(&["10"]).is_some() && tweets.get(&["1"]).is_some());

        // The mapping retries from the aggregate: nothing is skipped.
        tweets.throttle_matching(|_| false);
        let retry = event(&[("shardId-1", 2, &agg), ("shardId-1", 3, &tweet(3))]);
        assert!(handle(&p, retry, SystemTime::now() + Duration::from_secs(60)).await.batch_item_failures.is_empty());
        let mut ids: Vec<String> = tweets.rows.lock().unwrap().keys().map(|k| k[0].clone()).collect();
        ids.sort();
        assert_eq!(ids, ["1", "10", "12", "3"]);
        // The aggregate's two bad user records are two dead letters, keyed apart.
        assert_eq!(dead.len(), 2);
        let seq = format!("{:056}", 2);
        for sub in [1, 3] {
            let item = dead.get(&["shardId-1", &format!("{seq}:{sub}")]).unwrap();
            assert_eq!(item["SubSequenceNumber"].as_n().unwrap(), &sub.to_string());
        }
        assert_eq!(tweets.get(&["12"]).unwrap()["SubSequenceNumber"].as_n().unwrap(), "2");
        assert!(!tweets.get(&["1"]).unwrap().contains_key("SubSequenceNumber"), "a plain record has none");
    }
}
